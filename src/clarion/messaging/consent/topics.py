"""Subscription topics: what a customer can subscribe to on one channel ("Newsletter",
"Offers"), with the state a profile that never said anything gets, and double opt-in."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import get_args

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.errors import Conflict, FieldError, NotFound
from clarion.core.pagination import id_page
from clarion.messaging.channels.base import ChannelKind
from clarion.messaging.consent.schemas import default_state_problem, double_opt_in_problem
from clarion.messaging.models import MessageTemplate, SubscriptionTopic
from clarion.messaging.schemas import UnprocessableInput

CHANNELS: tuple[str, ...] = get_args(ChannelKind)
OPTED_IN, OPTED_OUT = "opted_in", "opted_out"


def check_choice(field: str, value: object, allowed: Sequence[str]) -> None:
    """UnprocessableInput (422) naming `field` unless `value` is one of `allowed`."""
    if value not in allowed:
        expected = f"one of {', '.join(allowed)}"
        raise UnprocessableInput(
            f"Unknown {field} {value!r}.", errors=[FieldError(field, expected)]
        )


async def create_topic(
    session: AsyncSession,
    *,
    workspace_id: int,
    name: str,
    description: str,
    channel: str,
    default_state: str | None,
    double_opt_in: bool,
    now: datetime,
) -> SubscriptionTopic:
    """A new topic (double opt-in ones default to opted_out); Conflict when the name is taken,
    UnprocessableInput naming the field for double opt-in off email or starting opted_in."""
    check_choice("channel", channel, CHANNELS)
    state = default_state or (OPTED_OUT if double_opt_in else OPTED_IN)
    _check_topic(channel, state, double_opt_in)
    topic = SubscriptionTopic(
        workspace_id=workspace_id,
        name=name,
        description=description,
        channel=channel,
        default_state=state,
        double_opt_in=double_opt_in,
        created_at=now,
    )
    session.add(topic)
    await _flush_named(session, name)
    return topic


def _check_topic(channel: str, default_state: str, double_opt_in: bool) -> None:
    """UnprocessableInput (422, as the API's validation of a new topic answers) naming the
    field a topic of `channel` cannot have as given."""
    check_choice("default_state", default_state, (OPTED_IN, OPTED_OUT))
    for field, problem in (
        ("double_opt_in", double_opt_in_problem(channel, double_opt_in)),
        ("default_state", default_state_problem(default_state, double_opt_in)),
    ):
        if problem:
            raise UnprocessableInput("The topic is not valid.", errors=[FieldError(field, problem)])


async def _flush_named(session: AsyncSession, name: str) -> None:
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as error:
        raise Conflict(
            f"A topic called {name!r} already exists.",
            errors=[FieldError("name", "is taken by another topic")],
        ) from error


async def get_topic_or_raise(
    session: AsyncSession, *, workspace_id: int, topic_id: int
) -> SubscriptionTopic:
    """The workspace's topic; NotFound (naming `topic_id`) otherwise."""
    topic = await session.scalar(
        select(SubscriptionTopic).where(
            SubscriptionTopic.workspace_id == workspace_id, SubscriptionTopic.id == topic_id
        )
    )
    if topic is None:
        raise NotFound(
            f"No topic {topic_id} in this workspace.",
            errors=[FieldError("topic_id", "no such topic here")],
        )
    return topic


async def list_topics(
    session: AsyncSession, *, workspace_id: int, limit: int, cursor: str | None
) -> tuple[Sequence[SubscriptionTopic], str | None]:
    """The workspace's topics by id, cursor-paged."""
    query = select(SubscriptionTopic).where(SubscriptionTopic.workspace_id == workspace_id)
    return await id_page(session, query, SubscriptionTopic.id, limit=limit, cursor=cursor)


async def update_topic(
    session: AsyncSession,
    *,
    workspace_id: int,
    topic_id: int,
    name: str | None,
    description: str | None,
    default_state: str | None,
    double_opt_in: bool | None,
) -> SubscriptionTopic:
    """The topic with the given fields changed, checked as `create_topic` checks them
    (UnprocessableInput naming the field, Conflict when the name is taken)."""
    topic = await get_topic_or_raise(session, workspace_id=workspace_id, topic_id=topic_id)
    new_double = topic.double_opt_in if double_opt_in is None else double_opt_in
    new_default = default_state or topic.default_state
    _check_topic(topic.channel, new_default, new_double)
    topic.double_opt_in, topic.default_state = new_double, new_default
    if description is not None:
        topic.description = description
    if name is not None:
        topic.name = name
    await _flush_named(session, topic.name)
    return topic


async def delete_topic(session: AsyncSession, *, workspace_id: int, topic_id: int) -> None:
    """Delete the topic and every say on it; Conflict naming the templates (archived ones
    aside) that use it: without it they would go to people who never opted in."""
    await get_topic_or_raise(session, workspace_id=workspace_id, topic_id=topic_id)
    users = (
        await session.execute(
            select(MessageTemplate.id, MessageTemplate.name)
            .where(
                MessageTemplate.workspace_id == workspace_id,
                MessageTemplate.topic_id == topic_id,
                MessageTemplate.archived_at.is_(None),
            )
            .order_by(MessageTemplate.id)
        )
    ).all()
    if users:
        named = ", ".join(f"{name!r} ({template_id})" for template_id, name in users)
        raise Conflict(
            f"This topic is in use by templates {named}: give them another topic (or none)"
            " or archive them first.",
            errors=[FieldError("topic_id", f"used by templates {named}")],
        )
    await session.execute(
        delete(SubscriptionTopic).where(
            SubscriptionTopic.workspace_id == workspace_id, SubscriptionTopic.id == topic_id
        )
    )
