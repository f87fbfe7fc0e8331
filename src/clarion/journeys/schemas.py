"""Pydantic input and output shapes for journeys and their versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from clarion.journeys.models import Journey, JourneyVersion

State = Literal["draft", "live", "paused", "archived"]
GRAPH_DESCRIPTION = (
    "The journey as drawn: `nodes` (trigger, wait, condition, split, action, exit), `entry`, "
    "`entry_key`, `exit_when` and `goal`; see the journeys README. A draft may be incomplete; "
    "publishing compiles it and refuses it with every fault named."
)


class JourneyCreate(BaseModel):
    """A new journey, as a draft."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    graph: dict[str, Any] = Field(description=GRAPH_DESCRIPTION)


class JourneyUpdate(BaseModel):
    """Changes to a journey's draft; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    graph: dict[str, Any] | None = Field(default=None, description=GRAPH_DESCRIPTION)


class GraphCheck(BaseModel):
    """A graph to validate without saving it."""

    model_config = ConfigDict(extra="forbid")

    graph: dict[str, Any] = Field(description=GRAPH_DESCRIPTION)


class Fault(BaseModel):
    """One reason a graph cannot run, under its node's id (`nodes.<id>.<field>`)."""

    field: str
    message: str


class GraphChecked(BaseModel):
    """Whether a graph would publish, and every fault if not."""

    valid: bool
    errors: list[Fault]


class JourneyRead(BaseModel):
    """A journey: its draft and where it stands."""

    id: int
    name: str
    description: str
    state: State
    graph: dict[str, Any] = Field(description="The draft.")
    live_version: int | None = Field(description="The version new entries follow.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, journey: Journey) -> JourneyRead:
        """The API's view of a journey row."""
        return cls(
            id=journey.id,
            name=journey.name,
            description=journey.description,
            state=journey.state,
            graph=journey.draft,
            live_version=journey.live_version,
            created_at=journey.created_at,
            updated_at=journey.updated_at,
        )


class JourneyPage(BaseModel):
    """A page of journeys, by id."""

    items: list[JourneyRead]
    next_cursor: str | None


class VersionRead(BaseModel):
    """A published version: its graph and the plan compiled from it."""

    number: int
    graph: dict[str, Any]
    plan: dict[str, Any]
    published_at: datetime

    @classmethod
    def from_row(cls, version: JourneyVersion) -> VersionRead:
        """The API's view of a version row."""
        return cls(
            number=version.number,
            graph=version.graph,
            plan=version.plan,
            published_at=version.published_at,
        )
