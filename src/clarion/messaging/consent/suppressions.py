"""The suppression list: addresses nothing is sent to on a channel, transactional messages
included. Delivery calls `suppress` on hard bounces and complaints; a complaint also opts
the address's profile out of marketing on that channel (source "complaint"). An erasure
asked to keep the person out (`profiles.erasure.KeepOut`) suppresses their addresses with
reason "erased"; "manual" is an admin's decision."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import get_args

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.errors import FieldError, NotFound
from clarion.core.pagination import id_page
from clarion.messaging.consent.consents import normalize_address, set_consent
from clarion.messaging.consent.schemas import SuppressionReason
from clarion.messaging.consent.topics import CHANNELS, OPTED_OUT, check_choice
from clarion.messaging.models import Suppression
from clarion.messaging.schemas import UnprocessableInput
from clarion.profiles import queries as profiles

REASONS: tuple[str, ...] = get_args(SuppressionReason)
MAX_ADDRESS = 320
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_PHONE = re.compile(r"\+?[0-9]{6,20}")
# The identity an address of a channel is, to find the profile a complaint is about.
_IDENTITY_OF_CHANNEL = {"email": "email", "sms": "phone"}


def address_problem(channel: str, address: str) -> str | None:
    """Why `address` cannot go on the channel's suppression list (it cannot be one of the
    channel's: an email without @, a phone number that is not digits, too long, anything
    but printable ASCII, which no channel sends to), or None when it can."""
    normalized = normalize_address(channel, address)
    shape = {"email": _EMAIL, "sms": _PHONE}.get(channel)
    if (
        not normalized
        or len(normalized) > MAX_ADDRESS
        or (shape is not None and not shape.fullmatch(normalized))
    ):
        return f"not a valid {channel} address"
    if not (normalized.isascii() and normalized.isprintable()):
        return f"not a valid {channel} address (printable ASCII only, as sends need)"
    return None


def checked_address(channel: str, address: str) -> str:
    """The normalized address; UnprocessableInput (422) naming `address` when it cannot be
    one of the channel (see `address_problem`)."""
    check_choice("channel", channel, CHANNELS)
    problem = address_problem(channel, address)
    if problem is not None:
        raise UnprocessableInput(
            "Not an address of this channel.", errors=[FieldError("address", problem)]
        )
    return normalize_address(channel, address)


async def suppress(
    session: AsyncSession,
    *,
    workspace_id: int,
    channel: str,
    address: str,
    reason: str,
    detail: str,
    now: datetime,
) -> bool:
    """Put the address on the channel's suppression list; True when it was not on it (an
    address already there keeps its first reason). A complaint also opts the profile owning
    the address out of marketing on the channel, every time (idempotent)."""
    check_choice("reason", reason, REASONS)
    normalized = checked_address(channel, address)
    insert = postgres_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    added = await session.scalar(
        insert(Suppression)
        .values(
            workspace_id=workspace_id,
            channel=channel,
            address=normalized,
            reason=reason,
            detail=detail,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["workspace_id", "channel", "address"])
        .returning(Suppression.id)
    )
    kind = _IDENTITY_OF_CHANNEL.get(channel)
    if reason == "complaint" and kind is not None:
        owner = await profiles.get_by_identity(
            session, workspace_id=workspace_id, kind=kind, value=normalized
        )
        if owner is not None:
            await set_consent(
                session,
                workspace_id=workspace_id,
                profile_id=owner.id,
                channel=channel,
                state=OPTED_OUT,
                source="complaint",
                now=now,
            )
    return added is not None


async def unsuppress(
    session: AsyncSession, *, workspace_id: int, channel: str, address: str
) -> bool:
    """Take the address off the channel's suppression list; True when it was on it. Opt-outs
    a complaint made stay."""
    check_choice("channel", channel, CHANNELS)
    removed = await session.scalar(
        delete(Suppression)
        .where(
            Suppression.workspace_id == workspace_id,
            Suppression.channel == channel,
            Suppression.address == normalize_address(channel, address),
        )
        .returning(Suppression.id)
    )
    return removed is not None


async def get_suppression(
    session: AsyncSession, *, workspace_id: int, channel: str, address: str
) -> Suppression | None:
    """The suppression of the address on the channel, if any."""
    return await session.scalar(
        select(Suppression).where(
            Suppression.workspace_id == workspace_id,
            Suppression.channel == channel,
            Suppression.address == normalize_address(channel, address),
        )
    )


async def list_suppressions(
    session: AsyncSession,
    *,
    workspace_id: int,
    channel: str | None,
    reason: str | None = None,
    limit: int,
    cursor: str | None,
) -> tuple[Sequence[Suppression], str | None]:
    """The workspace's suppressions (of one channel, of one reason), newest first,
    cursor-paged."""
    query = select(Suppression).where(Suppression.workspace_id == workspace_id)
    if channel is not None:
        query = query.where(Suppression.channel == channel)
    if reason is not None:
        query = query.where(Suppression.reason == reason)
    return await id_page(
        session, query, Suppression.id, limit=limit, cursor=cursor, newest_first=True
    )


async def delete_suppression(
    session: AsyncSession, *, workspace_id: int, suppression_id: int
) -> None:
    """Take one suppression off the list; NotFound when the workspace has no such one."""
    removed = await session.scalar(
        delete(Suppression)
        .where(Suppression.workspace_id == workspace_id, Suppression.id == suppression_id)
        .returning(Suppression.id)
    )
    if removed is None:
        raise NotFound(f"No suppression {suppression_id} in this workspace.")
