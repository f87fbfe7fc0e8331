"""Bulk import of consents (from another tool, a CSV turned JSON): each valid item is
applied like a say through the API (source "import"); each invalid one is reported by its
index and field, and changes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.errors import ClarionError, FieldError
from clarion.core.problems import validation_field_errors
from clarion.messaging.consent import service
from clarion.messaging.consent.schemas import ConsentImportItem
from clarion.messaging.models import SubscriptionTopic
from clarion.profiles import queries as profiles
from clarion.profiles.identity import EMAIL, USER_ID

MAX_ITEMS = 1000


@dataclass(frozen=True, slots=True)
class ImportResult:
    """How many items were applied, and why each other one was not (by index)."""

    applied: int
    errors: list[FieldError]


async def import_consents(
    session: AsyncSession, *, workspace_id: int, items: Sequence[Any], now: datetime
) -> ImportResult:
    """Apply each valid item in order (a later item on the same scope wins); the profile is
    found by user_id, else by email, the topic by id or name. Flushes only."""
    topics = (
        await session.scalars(
            select(SubscriptionTopic).where(SubscriptionTopic.workspace_id == workspace_id)
        )
    ).all()
    by_key: dict[int | str, SubscriptionTopic] = {t.id: t for t in topics}
    by_key.update({t.name: t for t in topics})
    applied, errors = 0, []
    for index, raw in enumerate(items):
        try:
            item = ConsentImportItem.model_validate(raw)
        except ValidationError as error:
            errors += [replace(e, index=index) for e in validation_field_errors(error.errors())]
            continue
        try:
            problem = await _apply(session, workspace_id, item, by_key, now)
        except ClarionError as error:  # a malformed email, say: reported, nothing written
            errors += [replace(e, index=index) for e in error.errors]
            continue
        if problem is not None:
            errors.append(replace(problem, index=index))
        else:
            applied += 1
    return ImportResult(applied, errors)


async def _apply(
    session: AsyncSession,
    workspace_id: int,
    item: ConsentImportItem,
    topics: dict[int | str, SubscriptionTopic],
    now: datetime,
) -> FieldError | None:
    """Set the item's consent, or say which field stops it."""
    if item.user_id is not None:
        field, kind, value = "user_id", USER_ID, item.user_id
    elif item.email is not None:
        field, kind, value = "email", EMAIL, item.email
    else:
        return FieldError("user_id", "give a user_id or an email")
    profile = await profiles.get_by_identity(
        session, workspace_id=workspace_id, kind=kind, value=value
    )
    if profile is None:
        return FieldError(field, f"no profile has this {field}")
    topic = None
    if item.topic is not None:
        topic = topics.get(item.topic)
        if topic is None:
            return FieldError("topic", "no such topic here")
        if topic.channel != item.channel:
            return FieldError("topic", f"is a topic of {topic.channel}, not {item.channel}")
    await service.set_consent(
        session,
        workspace_id=workspace_id,
        profile_id=profile.id,
        channel=item.channel,
        topic_id=topic.id if topic else None,
        state=item.state,
        source="import",
        now=now,
    )
    return None
