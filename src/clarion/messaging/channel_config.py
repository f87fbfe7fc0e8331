"""Configured channels: a workspace's ways to reach customers, with their provider settings
and their secrets sealed by the `Vault` (never returned by the API), the adapters built from
them, and a per-process pool of those adapters (test sends: `channel_test_sends.py`).

Rules: names are unique per workspace; at most one channel per kind is the default (making
one the default clears the others; the first channel of a kind becomes it unless told
otherwise); an update without secrets keeps the stored ones; a webhook channel without a
secret gets one generated, which the answer that saved it shows once (`generated`). A
channel that campaigns or journeys still send through cannot be deleted (`ChannelUsers`),
nor a kind's default while other channels of its kind are left to choose from; one deleted
fails the messages still queued to go through it, and those it was sending fail when
retried: they never go through another channel instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.crypto import UnreadableSecret, Vault
from clarion.core.database import hold_rows
from clarion.core.errors import Conflict, FieldError, NotFound
from clarion.core.outbound import PUBLIC_ONLY, Policy
from clarion.core.pagination import id_page
from clarion.messaging import feedback
from clarion.messaging.channel_settings import (
    ChannelConfig,
    EmailConfig,
    PushConfig,
    SmsConfig,
    WebhookConfig,
    fingerprint,
    parse_channel_config,
)
from clarion.messaging.channels.base import Channel, ChannelKind, Outgoing, Sent
from clarion.messaging.channels.email import DkimKey, EmailChannel, SmtpSettings
from clarion.messaging.channels.push import FcmSettings, PushChannel
from clarion.messaging.channels.sms import SmsChannel, TwilioSettings
from clarion.messaging.channels.webhook import WebhookChannel, WebhookSettings, generate_secret
from clarion.messaging.models import MessagingChannel
from clarion.messaging.schemas import UnprocessableInput

_UNSET: Any = object()


class InboxChannel:
    """The in-app inbox: delivery keeps the rendered content on the message row, which is
    what the inbox shows, so sending has nothing left to do."""

    kind: ChannelKind = "inbox"

    async def send(self, message: Outgoing) -> Sent:
        """Accept `message`; its id is the provider id."""
        return Sent(provider_id=message.message_id)

    async def close(self) -> None:
        """Nothing to release."""


# --- Configuration ----------------------------------------------------------------------------


async def _checked(
    kind: ChannelKind,
    settings: dict[str, Any],
    secrets: dict[str, Any],
    generated: dict[str, str] | None = None,
) -> ChannelConfig:
    """The checked configuration, with a webhook secret generated when none is given (and
    added to `generated`)."""
    config = parse_channel_config(kind, settings, secrets)
    if isinstance(config, WebhookConfig) and config.secrets.secret is None:
        secret = generate_secret()
        config = parse_channel_config(kind, settings, {**secrets, "secret": secret})
        if generated is not None:
            generated["secret"] = secret
    try:
        # What the adapters refuse is refused now, not at the first send; the adapter
        # sends nothing here, so the strictest policy will do.
        adapter = build_adapter(config, PUBLIC_ONLY)
    except ValueError as error:
        raise UnprocessableInput(
            f"The {kind} channel is not valid.", errors=[FieldError("settings", str(error))]
        ) from error
    await adapter.close()
    return config


def _store(row: MessagingChannel, config: ChannelConfig, vault: Vault) -> None:
    row.settings = config.settings.model_dump(mode="json")
    secrets = config.secrets.model_dump(mode="json", exclude_none=True)
    row.credentials = vault.seal(secrets) if secrets else None


async def create_channel(
    session: AsyncSession,
    *,
    workspace_id: int,
    vault: Vault,
    name: str,
    kind: ChannelKind,
    settings: dict[str, Any],
    secrets: dict[str, Any],
    rate_per_second: float | None,
    is_default: bool | None,
    now: datetime,
    generated: dict[str, str] | None = None,
) -> MessagingChannel:
    """A new channel with its secrets sealed (a webhook's generated when none is given, and
    added to `generated` for the caller to show once); UnprocessableInput naming each field
    at fault, Conflict when the name is taken. Flushes only."""
    config = await _checked(kind, settings, secrets, generated)
    if is_default is None:
        is_default = await default_channel(session, workspace_id=workspace_id, kind=kind) is None
    row = MessagingChannel(
        workspace_id=workspace_id,
        name=name,
        kind=kind,
        rate_per_second=rate_per_second,
        is_default=False,
        created_at=now,
        updated_at=now,
    )
    _store(row, config, vault)
    session.add(row)
    await _flush_named(session, name)
    if is_default:
        await _make_default(session, row)
    return row


async def update_channel(
    session: AsyncSession,
    *,
    workspace_id: int,
    channel_id: int,
    vault: Vault,
    now: datetime,
    name: str | None = None,
    settings: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
    rate_per_second: float | None = _UNSET,
    is_default: bool | None = None,
    generated: dict[str, str] | None = None,
) -> MessagingChannel:
    """The channel with the given fields changed: `settings` merged onto the stored ones,
    each given secret replacing the stored one (None removing it: a webhook's is then
    generated anew and added to `generated`, as `create_channel` does), the others kept;
    `rate_per_second` left out stays, None lifts the limit. Flushes only."""
    row = await get_channel_or_raise(session, workspace_id=workspace_id, channel_id=channel_id)
    if settings is not None or secrets is not None:
        merged_settings = _merged(row.settings, settings or {})
        merged_secrets = _merged(stored_secrets(row, vault), secrets or {})
        kind: ChannelKind = row.kind  # type: ignore[assignment]  # written from ChannelKind only
        _store(row, await _checked(kind, merged_settings, merged_secrets, generated), vault)
    if name is not None:
        row.name = name
    if rate_per_second is not _UNSET:
        row.rate_per_second = rate_per_second
    if is_default is False:
        row.is_default = False
    row.updated_at = now
    await _flush_named(session, row.name)
    if is_default:
        await _make_default(session, row)
    return row


def _merged(stored: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = {**stored, **changes}
    return {key: value for key, value in merged.items() if value is not None}


def stored_secrets(row: MessagingChannel, vault: Vault) -> dict[str, Any]:
    """The channel's secrets in clear; Conflict when this secret key cannot read them."""
    if row.credentials is None:
        return {}
    try:
        return vault.open(row.credentials)
    except UnreadableSecret as error:
        raise Conflict(
            f"Channel {row.id}'s secrets cannot be read with this secret key; set them again.",
            errors=[FieldError("secrets", "unreadable")],
        ) from error


async def credentials_to_reseal(session: AsyncSession, vault: Vault) -> dict[int, tuple[str, str]]:
    """Every workspace's channels whose secrets a previous secret key sealed: channel id ->
    (stored, sealed again under the current key). Reads only; secrets no key can read are
    left for their owners to set again (`stored_secrets` says so)."""
    rows = await session.execute(
        select(MessagingChannel.id, MessagingChannel.credentials).where(
            MessagingChannel.credentials.is_not(None)
        )
    )
    found: dict[int, tuple[str, str]] = {}
    for channel_id, stored in rows.all():
        if stored is None:
            continue
        try:
            resealed = vault.reseal(stored)
        except UnreadableSecret:
            continue
        if resealed is not None:
            found[channel_id] = (stored, resealed)
    return found


async def reseal_credentials(session: AsyncSession, resealed: dict[int, tuple[str, str]]) -> int:
    """Store what `credentials_to_reseal` found, each only if it is still what was read
    (secrets saved meanwhile stay); how many were stored. Flushes, never commits."""
    stored = 0
    for channel_id, (before, after) in resealed.items():
        result = await session.execute(
            update(MessagingChannel)
            .where(MessagingChannel.id == channel_id, MessagingChannel.credentials == before)
            .values(credentials=after)
            .execution_options(synchronize_session=False)
        )
        stored += result.rowcount  # type: ignore[attr-defined]
    return stored


async def _make_default(session: AsyncSession, row: MessagingChannel) -> None:
    await session.execute(
        update(MessagingChannel)
        .where(
            MessagingChannel.workspace_id == row.workspace_id,
            MessagingChannel.kind == row.kind,
            MessagingChannel.id != row.id,
            MessagingChannel.is_default.is_(True),
        )
        .values(is_default=False)
        .execution_options(synchronize_session="fetch")
    )
    row.is_default = True
    await session.flush()


async def _flush_named(session: AsyncSession, name: str) -> None:
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as error:
        raise Conflict(
            f"A channel called {name!r} already exists.",
            errors=[FieldError("name", "is taken by another channel")],
        ) from error


async def get_channel_or_raise(
    session: AsyncSession, *, workspace_id: int, channel_id: int, lock: bool = False
) -> MessagingChannel:
    """The workspace's channel (with `lock`, row-locked on PostgreSQL); NotFound otherwise."""
    query = select(MessagingChannel).where(
        MessagingChannel.workspace_id == workspace_id, MessagingChannel.id == channel_id
    )
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = await session.scalar(query)
    if row is None:
        raise NotFound(f"No channel {channel_id} in this workspace.")
    return row


async def unfit_channel(
    session: AsyncSession, *, workspace_id: int, channel_id: int, kind: str
) -> str | None:
    """Why channel `channel_id` cannot send the workspace's `kind` messages ("no channel 3
    here", "channel 3 sends sms messages, not email"), or None when it can."""
    row = await session.scalar(
        select(MessagingChannel).where(
            MessagingChannel.workspace_id == workspace_id, MessagingChannel.id == channel_id
        )
    )
    if row is None:
        return f"no channel {channel_id} here"
    if row.kind != kind:
        return f"channel {channel_id} sends {row.kind} messages, not {kind}"
    return None


async def list_channels(
    session: AsyncSession,
    *,
    workspace_id: int,
    kind: ChannelKind | None = None,
    limit: int,
    cursor: str | None,
) -> tuple[Sequence[MessagingChannel], str | None]:
    """The workspace's channels (of one kind when given) by id, cursor-paged."""
    query = select(MessagingChannel).where(MessagingChannel.workspace_id == workspace_id)
    if kind is not None:
        query = query.where(MessagingChannel.kind == kind)
    return await id_page(session, query, MessagingChannel.id, limit=limit, cursor=cursor)


async def channel_kinds(session: AsyncSession, *, workspace_id: int) -> dict[int, str]:
    """The kind of each of the workspace's channels, by channel id."""
    rows = await session.execute(
        select(MessagingChannel.id, MessagingChannel.kind).where(
            MessagingChannel.workspace_id == workspace_id
        )
    )
    return {int(channel_id): str(kind) for channel_id, kind in rows}


async def hold_channels(
    session: AsyncSession, *, workspace_id: int, channel_ids: Iterable[int]
) -> None:
    """Hold the workspace's channels among `channel_ids` against their deletion until the
    transaction ends (`core.database.hold_rows`): what starts using one takes this before it
    checks it."""
    await hold_rows(session, MessagingChannel, workspace_id=workspace_id, ids=channel_ids)


# What outside messaging still sends through a channel (campaigns yet to send, live
# journeys), as the names a marketer knows them by: ["campaign 3 (Spring sale)"]. Domains
# downstream of messaging provide these; `app.py` passes them in.
ChannelUsers = Callable[[AsyncSession, int, int], Awaitable[list[str]]]


async def delete_channel(
    session: AsyncSession,
    *,
    workspace_id: int,
    channel_id: int,
    now: datetime,
    users: Sequence[ChannelUsers] = (),
) -> None:
    """Delete the channel; Conflict while any of `users` still sends through it, or while
    it is its kind's default and other channels of the kind are left (naming them: one of
    them is to be made the default first). Messages sent through it keep their history
    (without their channel); those still queued to go through it fail ("channel 3 was
    deleted"), and those it is sending fail if they are retried: sent through another
    channel instead, they would come from a sender nobody chose. Flushes only."""
    # Locked first, on PostgreSQL: a message being queued through the channel holds it
    # until its transaction ends, so the messages failed below include it, and one queued
    # after waits for this delete and then fails on its foreign key instead. So does what
    # is starting to send through it (`hold_channels`): the check below sees that use, and
    # one starting after waits for this delete and then finds the channel gone.
    row = await get_channel_or_raise(
        session, workspace_id=workspace_id, channel_id=channel_id, lock=True
    )
    needing = [name for find in users for name in await find(session, workspace_id, channel_id)]
    if needing:
        raise Conflict(f"This channel is in use by {', '.join(needing)}.")
    if row.is_default:
        await _refuse_leaving_no_default(session, row)
    await feedback.fail_through_deleted(
        session, workspace_id=workspace_id, channel_id=channel_id, now=now
    )
    await session.delete(row)
    await session.flush()


async def _refuse_leaving_no_default(session: AsyncSession, row: MessagingChannel) -> None:
    """Conflict naming the other channels of the default `row`'s kind, if any: deleting it
    would leave what names no channel (API sends, campaigns and journey steps) without
    one, where the marketer has one to choose. The kind's only channel may go."""
    others = await session.execute(
        select(MessagingChannel.id, MessagingChannel.name)
        .where(
            MessagingChannel.workspace_id == row.workspace_id,
            MessagingChannel.kind == row.kind,
            MessagingChannel.id != row.id,
        )
        .order_by(MessagingChannel.id)
    )
    named = [f"channel {other_id} ({name})" for other_id, name in others]
    if named:
        raise Conflict(
            f"Channel {row.id} is the default {row.kind} channel: make another {row.kind} "
            f"channel the default first ({', '.join(named)}).",
            errors=[FieldError("is_default", "the kind's default; make another one it first")],
        )


async def default_channel(
    session: AsyncSession, *, workspace_id: int, kind: ChannelKind | str
) -> MessagingChannel | None:
    """The workspace's default channel of `kind`, or None when it has none."""
    row: MessagingChannel | None = await session.scalar(
        select(MessagingChannel)
        .where(
            MessagingChannel.workspace_id == workspace_id,
            MessagingChannel.kind == kind,
            MessagingChannel.is_default.is_(True),
        )
        .order_by(MessagingChannel.id)
        .limit(1)
    )
    return row


def secret_fingerprints(row: MessagingChannel, vault: Vault) -> dict[str, str | None] | None:
    """Each stored secret's name and a fingerprint that does not give it away (the last 4
    characters of a token, the SHA-256 of a private key's public half, nothing for a
    password); None when this secret key cannot read them."""
    if row.credentials is None:
        return {}
    try:
        secrets = vault.open(row.credentials)
    except UnreadableSecret:
        return None
    return {name: fingerprint(name, value) for name, value in secrets.items()}


# --- Adapters ---------------------------------------------------------------------------------


def build_adapter(config: ChannelConfig, policy: Policy) -> Channel:
    """The channel adapter a checked configuration describes, its HTTP calls reaching only
    the addresses `policy` permits; ValueError when the adapter refuses it."""
    if isinstance(config, EmailConfig):
        s, secrets = config.settings, config.secrets
        dkim = None
        if s.dkim_domain and s.dkim_selector and secrets.dkim_private_key:
            dkim = DkimKey(s.dkim_domain, s.dkim_selector, secrets.dkim_private_key)
        return EmailChannel(
            SmtpSettings(
                host=s.host, port=s.port, from_address=s.from_address, security=s.security,
                username=s.username, password=secrets.password, from_name=s.from_name,
                envelope_from=s.envelope_from, timeout=s.timeout, pool_size=s.pool_size,
                dkim=dkim, helo_hostname=s.helo_hostname,
            )
        )  # fmt: skip
    if isinstance(config, SmsConfig):
        sms = config.settings
        return SmsChannel(
            TwilioSettings(
                account_sid=sms.account_sid, auth_token=config.secrets.auth_token or "",
                from_number=sms.from_number, messaging_service_sid=sms.messaging_service_sid,
                status_callback_url=sms.status_callback_url, base_url=sms.base_url,
                timeout=sms.timeout,
            ),
            policy=policy,
        )  # fmt: skip
    if isinstance(config, PushConfig):
        account = config.secrets.service_account or {}
        return PushChannel(
            FcmSettings(
                service_account=account,
                base_url=config.settings.base_url,
                timeout=config.settings.timeout,
            ),
            policy=policy,
        )
    if isinstance(config, WebhookConfig):
        return WebhookChannel(
            WebhookSettings(
                secret=config.secrets.secret or "",
                timeout=config.settings.timeout,
                headers=dict(config.settings.headers),
            ),
            policy=policy,
        )
    return InboxChannel()


def build_channel(row: MessagingChannel, vault: Vault, policy: Policy) -> Channel:
    """The adapter for a stored channel, its secrets unsealed, calling only where `policy`
    permits; Conflict when its secrets cannot be read or no longer make a valid
    configuration (the channel must be set up again)."""
    kind: ChannelKind = row.kind  # type: ignore[assignment]  # written from ChannelKind only
    secrets = stored_secrets(row, vault)
    try:
        return build_adapter(parse_channel_config(kind, dict(row.settings), secrets), policy)
    except (UnprocessableInput, ValueError) as error:
        raise Conflict(f"Channel {row.id} is not usable: {error}") from error


class ChannelPool:
    """One adapter per configured channel for this process, so connections are reused
    across sends. An adapter is rebuilt when its channel changed (`updated_at`), and the
    replaced one closed. Their HTTP calls reach only the addresses `policy` permits."""

    def __init__(self, vault: Vault, policy: Policy) -> None:
        self._vault = vault
        self._policy = policy
        self._adapters: dict[int, tuple[datetime, Channel]] = {}
        self._lock = asyncio.Lock()

    async def get(self, row: MessagingChannel) -> Channel:
        """The adapter for `row` as it is now; built on first use or after a change."""
        held = self._adapters.get(row.id)
        if held is not None and held[0] == row.updated_at:
            return held[1]
        async with self._lock:
            held = self._adapters.get(row.id)
            if held is not None and held[0] == row.updated_at:
                return held[1]
            adapter = build_channel(row, self._vault, self._policy)
            self._adapters[row.id] = (row.updated_at, adapter)
        if held is not None:
            await held[1].close()
        return adapter

    async def close(self) -> None:
        """Close every adapter; the pool may be used again afterwards."""
        async with self._lock:
            adapters, self._adapters = self._adapters, {}
        for _, adapter in adapters.values():
            await adapter.close()
