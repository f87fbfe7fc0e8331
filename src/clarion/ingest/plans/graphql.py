"""Just enough GraphQL reading to check a plan's enrichment steps when they are saved.

`read_query` finds the first operation's selection tree (aliases are the response keys) and
its variable definitions, so a mapping from a response path the query never selects, or a
required variable the step never supplies, is refused at save time instead of failing on
every event. Named fragment spreads make their level "open" (any key may appear there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(
    r"""
    (?P<skip>[\s,\ufeff]+|\#[^\n\r]*)
    |(?P<string>\"\"\"[\s\S]*?\"\"\"|"(?:\\.|[^"\\\n\r])*")
    |(?P<spread>\.\.\.)
    |(?P<punct>[!$&():=@\[\]{|}])
    |(?P<name>[_A-Za-z][_0-9A-Za-z]*)
    |(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    """,
    re.VERBOSE,
)
_OPERATIONS = ("query", "mutation", "subscription")


class QueryError(ValueError):
    """The document cannot be read as a GraphQL operation."""


@dataclass
class Selection:
    """Response keys selected at one level; `open` when a named fragment adds unknown ones."""

    fields: dict[str, Selection | None] = field(default_factory=dict)
    open: bool = False


@dataclass(frozen=True)
class Query:
    """What a GraphQL document selects and which variables it declares."""

    selection: Selection
    variables: frozenset[str]
    required: frozenset[str]  # non-null and without a default


def tokens(document: str) -> list[str]:
    """The document's tokens, strings collapsed to a placeholder."""
    result: list[str] = []
    position = 0
    while position < len(document):
        match = _TOKEN.match(document, position)
        if match is None:
            raise QueryError(f"unexpected character {document[position]!r} at {position}")
        position = match.end()
        kind = match.lastgroup
        if kind == "string":
            result.append('"')
        elif kind != "skip":
            result.append(match.group())
    return result


def read_query(document: str) -> Query:
    """The selection and variables of the document's one operation; QueryError otherwise."""
    items = tokens(document)
    found: Query | None = None
    index = 0
    try:
        while index < len(items):
            if items[index] == "fragment":
                index = _skip_to_selection(items, index)
                index = _skip_balanced(items, index, "{", "}")
                continue
            if found is not None:
                raise QueryError("the document holds more than one operation")
            found, index = _operation(items, index)
    except IndexError as exc:
        raise QueryError("the document ends too early (unbalanced braces?)") from exc
    if found is None:
        raise QueryError("the document holds no operation")
    return found


def _operation(items: list[str], index: int) -> tuple[Query, int]:
    variables: set[str] = set()
    required: set[str] = set()
    if items[index] in _OPERATIONS:
        index += 1
        if items[index] not in ("(", "{", "@"):
            index += 1  # the operation's name
        if items[index] == "(":
            end = _skip_balanced(items, index, "(", ")")
            _variables(items[index + 1 : end - 1], variables, required)
            index = end
        index = _skip_directives(items, index)
    if items[index] != "{":
        raise QueryError(f"expected '{{' but found {items[index]!r}")
    selection, index = _selection_set(items, index)
    return Query(selection, frozenset(variables), frozenset(required)), index


def _variables(items: list[str], variables: set[str], required: set[str]) -> None:
    starts = [i for i, item in enumerate(items) if item == "$"]
    for number, start in enumerate(starts):
        end = starts[number + 1] if number + 1 < len(starts) else len(items)
        name, definition = items[start + 1], items[start + 2 : end]
        variables.add(name)
        if "=" not in definition and definition and definition[-1] == "!":
            required.add(name)


def _selection_set(items: list[str], index: int) -> tuple[Selection, int]:
    selection = Selection()
    index += 1  # past "{"
    while items[index] != "}":
        if items[index] == "...":
            index = _fragment(items, index + 1, selection)
            continue
        key = items[index]
        if not _is_name(key):
            raise QueryError(f"expected a field name but found {key!r}")
        index += 1
        if items[index] == ":":
            index += 2  # the alias is the response key; skip the field's own name
        if items[index] == "(":
            index = _skip_balanced(items, index, "(", ")")
        index = _skip_directives(items, index)
        child: Selection | None = None
        if items[index] == "{":
            child, index = _selection_set(items, index)
        selection.fields[key] = _merge(selection.fields.get(key), child)
    return selection, index + 1


def _fragment(items: list[str], index: int, into: Selection) -> int:
    if items[index] == "on":
        index += 2
    elif items[index] not in ("{", "@"):
        into.open = True  # a named fragment: its keys are not checked here
        return _skip_directives(items, index + 1)
    index = _skip_directives(items, index)
    inline, index = _selection_set(items, index)
    for key, child in inline.fields.items():
        into.fields[key] = _merge(into.fields.get(key), child)
    into.open = into.open or inline.open
    return index


def _merge(old: Selection | None, new: Selection | None) -> Selection | None:
    if old is None or new is None:
        return new or old
    for key, child in new.fields.items():
        old.fields[key] = _merge(old.fields.get(key), child)
    old.open = old.open or new.open
    return old


def _skip_directives(items: list[str], index: int) -> int:
    while items[index] == "@":
        index += 2
        if items[index] == "(":
            index = _skip_balanced(items, index, "(", ")")
    return index


def _skip_to_selection(items: list[str], index: int) -> int:
    while items[index] != "{":
        index += 1
    return index


def _skip_balanced(items: list[str], index: int, opening: str, closing: str) -> int:
    depth = 0
    while True:
        if items[index] == opening:
            depth += 1
        elif items[index] == closing:
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1


def _is_name(token: str) -> bool:
    return bool(token) and (token[0].isalpha() or token[0] == "_")


def path_in_selection(selection: Selection, segments: list[str]) -> bool:
    """Whether a response path (inside `data`) can exist for this selection."""
    current: Selection | None = selection
    for segment in segments:
        if segment.isdigit():
            continue  # a list index keeps the level
        if current is None:
            return False  # a leaf has no keys
        if segment not in current.fields:
            return current.open
        current = current.fields[segment]
    return True
