"""What a journey's trait action may set (`compiler.trait_value_fault`): each value the
databases cannot keep as it is, named in the journey's own words."""

from __future__ import annotations

import math
from typing import Any

import pytest

from clarion.journeys.compiler import trait_value_fault

DEEP: Any = "leaf"
for _ in range(129):
    DEEP = [DEEP]


@pytest.mark.parametrize(
    ("value", "fault"),
    [
        ({"plan": ["pro", 2**63 - 1, -(2**63), 1.5, None, True]}, None),
        (2**63, "holds a number beyond 64 bits"),
        ([math.nan], "holds a number that is not finite"),
        ({"a": "b\x00"}, "holds a NUL character"),
        (["\udc80"], "holds text that is not valid Unicode"),
        (DEEP, "is nested more than 128 levels deep"),
        ({1: "one"}, "has a key that is not text"),
        ({"when": {1, 2}}, "is not JSON (set)"),
        # The first fault as the value reads, whatever follows it.
        ([2**64, math.inf, "\x00"], "holds a number beyond 64 bits"),
    ],
)
def test_a_value_the_databases_cannot_keep_is_refused(value: Any, fault: str | None) -> None:
    assert trait_value_fault("score", value) == fault
