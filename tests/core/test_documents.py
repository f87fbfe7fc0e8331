"""What a JSON column keeps as it is (`core.documents.json_fault`): the first fault in the
order the text reads, the edges of each rule, documents deeper than recursion goes, and
what it accepts read back the same from both databases."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import literal, select
from sqlalchemy.exc import DBAPIError

from clarion.core.database import Database, JSONDocument
from clarion.core.documents import (
    INT64_MAX,
    INT64_MIN,
    MAX_JSON_DEPTH,
    FaultKind,
    JsonFault,
    json_fault,
)


def reference(value: Any, depth: int = 1) -> JsonFault | None:
    """The rules written the plain way (recursion, code points, not encoding), to check
    the stack-driven `json_fault` against."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if -(2**63) <= value < 2**63 else JsonFault(FaultKind.BEYOND_64_BITS, value)
    if isinstance(value, float):
        return None if value - value == 0 else JsonFault(FaultKind.NOT_FINITE, value)
    if isinstance(value, str):
        if "\0" in value:
            return JsonFault(FaultKind.NUL, value)
        if any(0xD800 <= ord(char) <= 0xDFFF for char in value):
            return JsonFault(FaultKind.NOT_UNICODE, value)
        return None
    if not isinstance(value, list | dict):
        return JsonFault(FaultKind.NOT_JSON, value)
    if depth > 128:
        return JsonFault(FaultKind.TOO_DEEP, value)
    if isinstance(value, dict) and not all(isinstance(key, str) for key in value):
        return JsonFault(FaultKind.KEY_NOT_TEXT, value)
    parts = [p for pair in value.items() for p in pair] if isinstance(value, dict) else value
    for part in parts:
        if (fault := reference(part, depth + 1)) is not None:
            return fault
    return None


def same(found: JsonFault | None, expected: JsonFault | None) -> bool:
    """The same kind of fault, in the very same part of the document."""
    if found is None or expected is None:
        return found is expected
    return found.kind is expected.kind and found.part is expected.part


# Text that may hold NUL and lone surrogates, among plain and astral characters.
TEXT = st.text(alphabet=st.sampled_from(["a", "é", "😀", "\x00", "\ud800", "\udfff", " "]))
KEPT_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\0"))
INTEGERS = st.one_of(
    st.integers(min_value=INT64_MIN - 3, max_value=INT64_MIN + 3),
    st.integers(min_value=INT64_MAX - 3, max_value=INT64_MAX + 3),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
)
ANY_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    INTEGERS,
    st.floats(),
    TEXT,
    st.sampled_from([(), b"x", Decimal(1), {1}, 1j]),
)
ANY_KEY = st.one_of(TEXT, TEXT, st.integers(), st.none(), st.tuples())
ANY = st.recursive(
    ANY_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_KEY, inner, max_size=4),
    max_leaves=20,
)
KEPT = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | KEPT_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEPT_TEXT, inner, max_size=4),
    max_leaves=30,
)


@given(ANY)
def test_the_first_fault_in_the_text_is_named(document: Any) -> None:
    assert same(json_fault(document), reference(document))


@given(KEPT)
def test_what_it_keeps_reads_back_the_same(document: Any) -> None:
    assert json_fault(document) is None
    assert orjson.loads(orjson.dumps(document)) == document
    assert json.loads(json.dumps(document, allow_nan=False)) == document


@given(
    st.integers(min_value=1, max_value=MAX_JSON_DEPTH + 3),
    st.lists(st.booleans(), min_size=MAX_JSON_DEPTH + 3, max_size=MAX_JSON_DEPTH + 3),
)
def test_documents_nest_at_most_the_limit(levels: int, as_object: list[bool]) -> None:
    document: Any = "leaf"
    for level in range(levels):
        document = {"k": document} if as_object[level] else [document]
    fault = json_fault(document)
    if levels <= MAX_JSON_DEPTH:
        assert fault is None
        orjson.dumps({"traits": {"value": document}})  # orjson writes it, around a value
    else:
        assert fault is not None and fault.kind is FaultKind.TOO_DEEP
        assert same(fault, reference(document))


@pytest.mark.parametrize(
    ("document", "kind"),
    [
        (INT64_MAX, None),
        (INT64_MIN, None),
        (INT64_MAX + 1, FaultKind.BEYOND_64_BITS),
        (INT64_MIN - 1, FaultKind.BEYOND_64_BITS),
        ([True, False, None, 0.5, -0.0, ""], None),
        (math.inf, FaultKind.NOT_FINITE),
        ({"a": [math.nan]}, FaultKind.NOT_FINITE),
        ("a\x00b", FaultKind.NUL),
        ({"\x00": 1}, FaultKind.NUL),  # keys are text like any other
        ("\ud83d", FaultKind.NOT_UNICODE),
        ("\ud83d\ude00", FaultKind.NOT_UNICODE),  # a pair spelled as two code points
        ("😀", None),
        ({1: "a"}, FaultKind.KEY_NOT_TEXT),
        ((1, 2), FaultKind.NOT_JSON),
        ([{"a": b"bytes"}], FaultKind.NOT_JSON),
    ],
)
def test_each_rule_at_its_edge(document: Any, kind: FaultKind | None) -> None:
    fault = json_fault(document)
    assert (None if fault is None else fault.kind) is kind


def test_the_fault_named_is_the_first_one_written() -> None:
    document = {"a": [1, 2**64], "b": "\x00", "c": math.inf}
    assert json_fault(document) == JsonFault(FaultKind.BEYOND_64_BITS, 2**64)
    assert json_fault([math.inf, 2**64]) == JsonFault(FaultKind.NOT_FINITE, math.inf)
    # A key that is not text is the object's fault, named before its members'.
    keyed = {"a": 2**64, 1: "b"}
    assert json_fault(keyed) == JsonFault(FaultKind.KEY_NOT_TEXT, keyed)


def test_a_document_deeper_than_recursion_goes_is_answered() -> None:
    document: Any = 2**64
    for _ in range(100_000):
        document = [document]
    fault = json_fault(document)
    assert fault is not None and fault.kind is FaultKind.TOO_DEEP


async def test_both_databases_keep_what_it_accepts(database: Database) -> None:
    deepest: Any = [INT64_MIN, INT64_MAX, -1.5e308, "é😀"]
    for _ in range(MAX_JSON_DEPTH - 2):  # the object around them is the last level
        deepest = [deepest]
    kept = {"edges": deepest, "": None, "\u2028": True}
    assert json_fault(kept) is None
    async with database.read_session() as session:
        assert await session.scalar(select(literal(kept, JSONDocument))) == kept


async def test_postgresql_refuses_a_nul_in_json(database: Database) -> None:
    """Why NUL is a fault: SQLite keeps it, PostgreSQL's JSON cannot."""
    async with database.read_session() as session:
        if session.get_bind().dialect.name != "postgresql":
            assert await session.scalar(select(literal({"a": "\x00"}, JSONDocument))) == {
                "a": "\x00"
            }
            return
        with pytest.raises(DBAPIError, match="0000"):
            await session.scalar(select(literal({"a": "\x00"}, JSONDocument)))
