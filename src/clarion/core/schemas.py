"""Input shapes every domain's API shares."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

# What marketers call a segment, campaign, journey, template, channel or topic: trimmed,
# never blank.
DisplayName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
