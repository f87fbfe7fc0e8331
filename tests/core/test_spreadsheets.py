"""CSV cells no spreadsheet runs as formulas, read back exactly."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from clarion.core.spreadsheets import guarded_cell, plain_cell


def test_formulas_are_quoted_and_numbers_are_not() -> None:
    assert guarded_cell('=HYPERLINK("http://evil.example","click")').startswith("'=")
    assert guarded_cell("@SUM(A1)") == "'@SUM(A1)"
    assert guarded_cell("-2+3+cmd|' /C calc'!A0") == "'-2+3+cmd|' /C calc'!A0"
    assert guarded_cell("\t=1") == "'\t=1"
    assert guarded_cell("'=1") == "''=1"
    for harmless in ("-5", "+33 6 12 34 56 78", "+1 (415) 555-0100", "ada", "", "'quoted", "a=b"):
        assert guarded_cell(harmless) == harmless


@given(st.text(alphabet=st.sampled_from("'=+-@\t\r1 a(")))
def test_what_is_guarded_reads_back_the_same(text: str) -> None:
    assert plain_cell(guarded_cell(text)) == text
