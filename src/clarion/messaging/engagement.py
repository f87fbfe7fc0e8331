"""Opens, clicks and "view in browser" visits: recorded for every fetch, counted once, and
told apart from machines.

Every fetch of a message's open pixel, tracked link or view page is a `message_events` row
(`opened`, `clicked`, `viewed`) carrying the verdict of `machine.py` (`machine`, `reason`,
`proxied`) and what the request showed (user agent, client network, method, and for a
click the link). The verdict reads the full client address; the row keeps its network only
(`masked_ip`: IPv4 to /24, IPv6 to /48, as analytics tools anonymize addresses), which tells
a mail proxy's or a scanner's network apart without pointing at a household. Only people
move a message forward:

- the first human open sets `opened_at` and moves `sent` / `delivered` to `opened`;
- the first human click sets `clicked_at` (and `opened_at` if no open was seen: images
  were off) and moves `sent` / `delivered` / `opened` to `clicked`.

"First" is decided by the database, not by reading first: a conditional
`UPDATE messages ... WHERE opened_at IS NULL RETURNING id` (the same for `clicked_at`)
returns the row to exactly one of any number of concurrent transactions, on SQLite (one
writer at a time) and on PostgreSQL (the loser waits on the row lock, re-checks the
condition and updates nothing). The winner emits the channel's event into the ingestion
stream in the same transaction, with a messageId derived from the message (and link), so
even a retried transaction stores it once:

    opens   `OPEN_EVENTS`   once per message            messageId clarion:message:<id>:opened
    clicks  `CLICK_EVENTS`  once per message and link   messageId clarion:message:<id>:clicked:<i>

Event properties are the message's (`feedback.properties_of`: message_id, channel,
template_id, template_version_id, origin, origin_id), plus `link_url` and `link_index` for
clicks. Machine opens and clicks are recorded and emit nothing.

Timing rules (`open-too-soon`, `click-too-soon`) count from `delivered_at`, or `sent_at` for
channels that never report delivery. The click target is only ever the URL delivery stored
at `links[i]` (and only http(s)): a click token names an index, never a URL, so tracking is
no open redirect.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from clarion.ingest.internal import InternalEvent, emit_events
from clarion.messaging.feedback import properties_of
from clarion.messaging.machine import (
    DEFAULT_RULES,
    MachineRules,
    SeenClick,
    Verdict,
    classify_click,
    classify_open,
)
from clarion.messaging.models import Message, MessageEvent
from clarion.profiles import queries as profiles

# The ingestion event a first human open / click emits, per channel; a channel not listed
# emits none (SMS and webhooks are never "opened"; an inbox message is, when the customer's
# app marks it read). Names follow Segment's email and mobile specs where they have one.
OPEN_EVENTS: dict[str, str] = {
    "email": "Email Opened",
    "inbox": "In-App Message Opened",
}
CLICK_EVENTS: dict[str, str] = {
    "email": "Email Link Clicked",
    "sms": "SMS Link Clicked",
    "push": "Push Notification Tapped",
    "inbox": "In-App Message Clicked",
}
# Statuses a first open / click moves forward; later or final statuses stay as they are.
_OPENABLE = ("sent", "delivered")
_CLICKABLE = ("sent", "delivered", "opened")
_MAX_USER_AGENT = 512


@dataclass(frozen=True, slots=True)
class Interaction:
    """What a tracking endpoint saw: the user agent, the client address, the HTTP method
    and when."""

    user_agent: str | None
    ip: str | None
    method: str
    at: datetime


def masked_ip(ip: str | None) -> str | None:
    """The network of a client address, its host part zeroed (IPv4 to /24, IPv6 to /48);
    None for no address or one that does not parse."""
    try:
        address: IPv4Address | IPv6Address = ip_address((ip or "").strip())
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # an IPv4 client behind a dual-stack socket
    prefix = 24 if address.version == 4 else 48
    return str(ip_network(f"{address}/{prefix}", strict=False).network_address)


def _detail(seen: Interaction, verdict: Verdict, **extra: Any) -> dict[str, Any]:
    return {
        **extra,
        "reason": verdict.reason,
        "proxied": verdict.proxied,
        "user_agent": (seen.user_agent or "")[:_MAX_USER_AGENT],
        "ip": masked_ip(seen.ip),
        "method": seen.method,
    }


def _left_at(message: Message) -> datetime | None:
    return message.delivered_at or message.sent_at


async def record_open(
    session: AsyncSession,
    *,
    message_id: uuid.UUID,
    seen: Interaction,
    rules: MachineRules = DEFAULT_RULES,
) -> Verdict | None:
    """Record a fetch of the message's open pixel and judge it; None when there is no such
    message. A first human open marks the message opened and emits its event (once, see
    the module's docstring). Flushes only."""
    message = await session.get(Message, message_id)
    if message is None:
        return None
    verdict = classify_open(
        user_agent=seen.user_agent,
        ip=seen.ip,
        at=seen.at,
        delivered_at=_left_at(message),
        method=seen.method,
        rules=rules,
    )
    session.add(_event(message, "opened", verdict.machine, _detail(seen, verdict), seen.at))
    if not verdict.machine:
        await mark_opened(session, message=message, now=seen.at)
    await session.flush()
    return verdict


async def record_click(
    session: AsyncSession,
    *,
    message_id: uuid.UUID,
    link_index: int,
    seen: Interaction,
    rules: MachineRules = DEFAULT_RULES,
) -> str | None:
    """Record a click on the message's `link_index`-th tracked link and judge it; the URL
    delivery stored for that link, to redirect to, or None when there is no such message,
    link or http(s) URL. A first human click marks the message clicked (and opened), and
    each link's first human click emits the channel's click event. Flushes only."""
    message = await session.get(Message, message_id)
    if message is None or not 0 <= link_index < len(message.links or []):
        return None
    url = message.links[link_index]
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        return None
    verdict = classify_click(
        user_agent=seen.user_agent,
        ip=seen.ip,
        at=seen.at,
        delivered_at=_left_at(message),
        link_index=link_index,
        other_clicks=await _clicks(session, message.id),
        method=seen.method,
        rules=rules,
    )
    detail = _detail(seen, verdict, link_index=link_index, url=url)
    session.add(_event(message, "clicked", verdict.machine, detail, seen.at))
    if not verdict.machine:
        await mark_opened(session, message=message, now=seen.at)
        await _claim(
            session,
            message.id,
            Message.clicked_at,
            clicked_at=seen.at,
            status=case((Message.status.in_(_CLICKABLE), "clicked"), else_=Message.status),
        )
        name = CLICK_EVENTS.get(message.channel)
        if name is not None:
            await _emit(
                session,
                message,
                name=name,
                key=f"clarion:message:{message.id}:clicked:{link_index}",
                extra={"link_url": url, "link_index": link_index},
                now=seen.at,
            )
    await session.flush()
    return url


async def record_view(
    session: AsyncSession,
    *,
    message_id: uuid.UUID,
    seen: Interaction,
    rules: MachineRules = DEFAULT_RULES,
) -> str | None:
    """The HTML delivery kept for the message's "view in browser" page (`content["html"]`),
    after recording the visit (judged as a click on a link of its own would be: the view
    link is in the message, so scanners follow it); None when the message or its HTML is
    not there. Delivery decides what to keep. A view changes no status and emits nothing:
    the page's own open pixel counts the open. Flushes only."""
    message = await session.get(Message, message_id)
    html = (message.content or {}).get("html") if message is not None else None
    if message is None or not isinstance(html, str):
        return None
    verdict = classify_click(
        user_agent=seen.user_agent,
        ip=seen.ip,
        at=seen.at,
        delivered_at=_left_at(message),
        link_index=-1,  # not a tracked link: no burst or honeypot rule applies
        method=seen.method,
        rules=rules,
    )
    session.add(_event(message, "viewed", verdict.machine, _detail(seen, verdict), seen.at))
    await session.flush()
    return html


async def mark_opened(session: AsyncSession, *, message: Message, now: datetime) -> bool:
    """Mark the message opened by a person at `now` unless it already was: whether this
    call did (then its open event is emitted). Safe under concurrent calls: exactly one
    wins. `message`'s loaded attributes are not refreshed."""
    won = await _claim(
        session,
        message.id,
        Message.opened_at,
        opened_at=now,
        status=case((Message.status.in_(_OPENABLE), "opened"), else_=Message.status),
    )
    name = OPEN_EVENTS.get(message.channel)
    if won and name is not None:
        await _emit(
            session, message, name=name, key=f"clarion:message:{message.id}:opened", now=now
        )
    return won


async def _claim(
    session: AsyncSession,
    message_id: uuid.UUID,
    column: InstrumentedAttribute[datetime | None],
    **values: Any,
) -> bool:
    """Set `values` on the message if `column` is still null; whether this call did."""
    statement = (
        update(Message)
        .where(Message.id == message_id, column.is_(None))
        .values(updated_at=values[column.key], **values)
        .returning(Message.id)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(statement)).first() is not None


async def _clicks(session: AsyncSession, message_id: uuid.UUID) -> list[SeenClick]:
    rows = await session.execute(
        select(MessageEvent.at, MessageEvent.detail).where(
            MessageEvent.message_id == message_id, MessageEvent.kind == "clicked"
        )
    )
    return [
        SeenClick(at, detail["link_index"])
        for at, detail in rows
        if isinstance(detail, dict) and isinstance(detail.get("link_index"), int)
    ]


def _event(
    message: Message, kind: str, machine: bool, detail: dict[str, Any], at: datetime
) -> MessageEvent:
    return MessageEvent(
        workspace_id=message.workspace_id,
        message_id=message.id,
        kind=kind,
        machine=machine,
        detail=detail,
        at=at,
    )


async def _emit(
    session: AsyncSession,
    message: Message,
    *,
    name: str,
    key: str,
    now: datetime,
    extra: dict[str, Any] | None = None,
) -> None:
    """Emit `name` about the message's profile (as its canonical profile's user id, else
    its anonymous id); a profile with neither gets no event."""
    profile = await profiles.get_profile_or_raise(
        session, workspace_id=message.workspace_id, profile_id=message.profile_id
    )
    senders = await profiles.sender_ids(
        session, workspace_id=message.workspace_id, profile_ids=[profile.id]
    )
    user_id, anonymous_id = senders.get(profile.id, (None, None))
    event = InternalEvent(
        workspace_id=message.workspace_id,
        message_id=key,
        name=name,
        user_id=user_id,
        anonymous_id=None if user_id else anonymous_id,
        timestamp=now,
        properties={**properties_of(message), **(extra or {})},
    )
    await emit_events(session, [event], now=now)
