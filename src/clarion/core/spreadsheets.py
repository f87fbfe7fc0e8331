"""Cells of the CSV files Clarion writes, safe to open in a spreadsheet.

Customers choose their own ids and traits, so a cell may start with `=`, `+`, `-`, `@`, a tab
or a carriage return, which spreadsheets read as a formula (OWASP "CSV injection"). Such a
cell is written with a leading `'`, which spreadsheets show as text, unless it holds only
digits and number punctuation (`-5`, `+33 6 12 34 56 78`), which no spreadsheet can run.
Cells that already start with quotes before such a character get one more, so `plain_cell`
gives back exactly what `guarded_cell` was given.
"""

from __future__ import annotations

import re

_FORMULA = re.compile(r"'*[=+\-@\t\r]")
_QUOTED_FORMULA = re.compile(r"'+[=+\-@\t\r]")
_NUMBER_LIKE = re.compile(r"[0-9+\-\s().,/]*")


def guarded_cell(text: str) -> str:
    """The text as a cell no spreadsheet runs as a formula."""
    if _FORMULA.match(text) and not _NUMBER_LIKE.fullmatch(text):
        return "'" + text
    return text


def plain_cell(text: str) -> str:
    """The text `guarded_cell` was given, from the cell it wrote."""
    return text[1:] if _QUOTED_FORMULA.match(text) else text
