"""Ready-made journeys: the graphs marketers start from, filled in with their own templates
(and segment), saved as drafts to review and publish.

- `abandoned_cart`: checkout started and no order for that cart within an hour: an email;
  24 hours after the checkout, a second one; an order for the cart ends the run. Keyed by
  `cart_id`, so each cart has its run. Goal: an order within 3 days.
- `birthday`: `days_before` days before the profile's `birthday` trait, at 09:00 in its
  time zone, every year: a promotion.
- `welcome`: on sign-up, an email on day 0, day 2 and day 7; the first order ends it.
- `win_back`: entering a segment (say, no order in 90 days): an email, and a reminder a week
  later; an order ends it. Goal: an order within 30 days.

`ready_made_draft` checks the templates and segment are the workspace's (live templates,
existing segment), naming `template_ids.<n>` or `segment_id`; a field the kind does not use
(`segment_id` but for win-back, `days_before` but for the birthday) is refused naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.errors import FieldError, InvalidInput
from clarion.journeys import service

HOUR = 3600
DAY = 24 * HOUR


@dataclass(frozen=True, slots=True)
class ReadyMade:
    """A ready-made journey: what it does, how many templates it sends, whether it needs a
    segment, and how its graph is made."""

    name: str
    description: str
    templates: int
    needs_segment: bool
    make: Callable[[list[int], int | None, int], dict[str, Any]]
    takes_days_before: bool = False


def _send(node_id: str, template_id: int, next_id: str) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "action",
        "actions": [{"kind": "send", "template_id": template_id}],
        "next": next_id,
    }


def _wait(node_id: str, seconds: int, next_id: str) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "wait",
        "wait": {"kind": "duration", "seconds": seconds},
        "next": next_id,
    }


def _trigger(trigger: dict[str, Any], next_id: str) -> dict[str, Any]:
    return {"id": "start", "type": "trigger", "trigger": trigger, "next": next_id}


_EXIT = {"id": "done", "type": "exit"}


def _abandoned_cart(templates: list[int], _: int | None, __: int) -> dict[str, Any]:
    first, second = templates
    return {
        "entry": {"frequency": "every_time", "max_active": 5},
        "entry_key": "properties.cart_id",
        "exit_when": [{"event": "Order Completed", "same_key": True}],
        "goal": {"event": "Order Completed", "within_days": 3},
        "nodes": [
            _trigger({"kind": "event", "event": "Checkout Started"}, "hour"),
            {
                "id": "hour",
                "type": "wait",
                "wait": {
                    "kind": "until_event",
                    "event": "Order Completed",
                    "same_key": True,
                    "timeout_seconds": HOUR,
                },
                "next": "done",
                "timeout_next": "first_email",
            },
            _send("first_email", first, "day"),
            _wait("day", DAY - HOUR, "second_email"),
            _send("second_email", second, "done"),
            _EXIT,
        ],
    }


def _birthday(templates: list[int], _: int | None, days_before: int) -> dict[str, Any]:
    [promotion] = templates
    return {
        "entry": {"frequency": "once"},
        "goal": {"event": "Order Completed", "within_days": max(days_before, 1) + 7},
        "nodes": [
            _trigger(
                {
                    "kind": "date",
                    "trait": "birthday",
                    "offset_days": -days_before,
                    "local_time": "09:00",
                    "yearly": True,
                },
                "promotion",
            ),
            _send("promotion", promotion, "done"),
            _EXIT,
        ],
    }


def _welcome(templates: list[int], _: int | None, __: int) -> dict[str, Any]:
    day0, day2, day7 = templates
    return {
        "entry": {"frequency": "once"},
        "exit_when": [{"event": "Order Completed"}],
        "goal": {"event": "Order Completed", "within_days": 14},
        "nodes": [
            _trigger({"kind": "event", "event": "Signed Up"}, "day_0"),
            _send("day_0", day0, "wait_2"),
            _wait("wait_2", 2 * DAY, "day_2"),
            _send("day_2", day2, "wait_7"),
            _wait("wait_7", 5 * DAY, "day_7"),
            _send("day_7", day7, "done"),
            _EXIT,
        ],
    }


def _win_back(templates: list[int], segment_id: int | None, _: int) -> dict[str, Any]:
    offer, reminder = templates
    assert segment_id is not None
    return {
        "entry": {"frequency": "once_per_period", "period_days": 90},
        "exit_when": [{"event": "Order Completed"}],
        "goal": {"event": "Order Completed", "within_days": 30},
        "nodes": [
            _trigger({"kind": "segment_entered", "segment_id": segment_id}, "offer"),
            _send("offer", offer, "week"),
            _wait("week", 7 * DAY, "reminder"),
            _send("reminder", reminder, "done"),
            _EXIT,
        ],
    }


READY_MADE: dict[str, ReadyMade] = {
    "abandoned_cart": ReadyMade(
        "Abandoned cart",
        "Checkout started and no order for that cart within an hour: an email; a second "
        "24 hours after the checkout; an order for the cart ends it.",
        2,
        False,
        _abandoned_cart,
    ),
    "birthday": ReadyMade(
        "Birthday promotion",
        "days_before days before the birthday trait, at 09:00 local time, every year.",
        1,
        False,
        _birthday,
        takes_days_before=True,
    ),
    "welcome": ReadyMade(
        "Welcome series",
        "On sign-up: emails on day 0, day 2 and day 7; the first order ends it.",
        3,
        False,
        _welcome,
    ),
    "win_back": ReadyMade(
        "Win-back",
        "On entering a segment (say, no order in 90 days): an offer, and a reminder a week "
        "later; an order ends it.",
        2,
        True,
        _win_back,
    ),
}


def ready_made_graph(
    kind: str, *, template_ids: list[int], segment_id: int | None, days_before: int | None
) -> dict[str, Any]:
    """The graph of a ready-made journey; InvalidInput naming `kind`, `template_ids`,
    `segment_id` or `days_before` when they do not fit it (whether the templates and
    segment exist: `ready_made_draft`)."""
    found = READY_MADE.get(kind)
    if found is None:
        raise InvalidInput(
            f"No ready-made journey {kind!r}.",
            errors=[FieldError("kind", f"must be one of {', '.join(sorted(READY_MADE))}")],
        )
    if len(template_ids) != found.templates:
        raise InvalidInput(
            f"{found.name} sends {found.templates} template(s).",
            errors=[FieldError("template_ids", f"needs {found.templates}")],
        )
    if found.needs_segment and segment_id is None:
        raise InvalidInput(
            f"{found.name} starts when profiles enter a segment.",
            errors=[FieldError("segment_id", "required")],
        )
    if not found.needs_segment and segment_id is not None:
        raise InvalidInput(
            f"{found.name} does not start from a segment.",
            errors=[FieldError("segment_id", f"{kind} takes none")],
        )
    if not found.takes_days_before and days_before is not None:
        raise InvalidInput(
            f"{found.name} is not a date journey.",
            errors=[FieldError("days_before", f"{kind} takes none")],
        )
    return found.make(template_ids, segment_id, days_before or 0)


async def ready_made_draft(
    session: AsyncSession,
    *,
    workspace_id: int,
    kind: str,
    template_ids: list[int],
    segment_id: int | None,
    days_before: int | None,
) -> dict[str, Any]:
    """The graph of a ready-made journey with the workspace's own templates (and segment);
    InvalidInput as `ready_made_graph`, and naming `template_ids.<n>` (no such live
    template) or `segment_id` (no such segment)."""
    graph = ready_made_graph(
        kind, template_ids=template_ids, segment_id=segment_id, days_before=days_before
    )
    known = await service.references(session, workspace_id=workspace_id)
    errors = [
        FieldError(f"template_ids.{index}", "no such template (or archived)")
        for index, template_id in enumerate(template_ids)
        if template_id not in known.templates
    ]
    if segment_id is not None and segment_id not in known.segments:
        errors.append(FieldError("segment_id", "no such segment"))
    if errors:
        raise InvalidInput("The ready-made journey names what the workspace lacks.", errors=errors)
    return graph
