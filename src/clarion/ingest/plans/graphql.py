"""Reading a plan's GraphQL enrichment query when it is saved (with graphql-core's parser).

`read_query` finds the one operation's selection tree (aliases are the response keys) and
its variable definitions, so a mapping from a response path the query never selects, or a
required variable the step never supplies, is refused at save time instead of failing on
every event. Fragments defined in the document are followed; a spread of a fragment the
document does not define makes its level "open" (any key may appear there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLSyntaxError,
    InlineFragmentNode,
    NonNullTypeNode,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
)


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


def read_query(document: str) -> Query:
    """The selection and variables of the document's one operation; QueryError otherwise."""
    try:
        parsed: DocumentNode = parse(document, no_location=True)
    except GraphQLSyntaxError as exc:
        raise QueryError(exc.message) from exc
    operations = [d for d in parsed.definitions if isinstance(d, OperationDefinitionNode)]
    if not operations:
        raise QueryError("the document holds no operation")
    if len(operations) > 1:
        raise QueryError("the document holds more than one operation")
    [operation] = operations
    fragments = {
        d.name.value: d for d in parsed.definitions if isinstance(d, FragmentDefinitionNode)
    }
    variables, required = set(), set()
    for definition in operation.variable_definitions or ():
        name = definition.variable.name.value
        variables.add(name)
        if isinstance(definition.type, NonNullTypeNode) and definition.default_value is None:
            required.add(name)
    selection = _selection(operation.selection_set, fragments, frozenset())
    return Query(selection, frozenset(variables), frozenset(required))


def _selection(
    node: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    following: frozenset[str],
) -> Selection:
    selection = Selection()
    for item in node.selections:
        if isinstance(item, FieldNode):
            key = (item.alias or item.name).value
            child = (
                _selection(item.selection_set, fragments, following) if item.selection_set else None
            )
            selection.fields[key] = _merge(selection.fields.get(key), child)
        elif isinstance(item, InlineFragmentNode):
            _merge(selection, _selection(item.selection_set, fragments, following))
        elif isinstance(item, FragmentSpreadNode):
            name = item.name.value
            if name in fragments and name not in following:
                spread = fragments[name].selection_set
                _merge(selection, _selection(spread, fragments, following | {name}))
            else:
                selection.open = True  # not defined here: its keys cannot be checked
    return selection


def _merge(old: Selection | None, new: Selection | None) -> Selection | None:
    if old is None or new is None:
        return new or old
    for key, child in new.fields.items():
        old.fields[key] = _merge(old.fields.get(key), child)
    old.open = old.open or new.open
    return old


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
