"""Turning message rows into what a channel sends: for a batch, the recipients (profiles and
addresses), consent and suppression, quiet hours, the template versions, rendering with
tracked links and the open pixel, and the unsubscribe headers; each message comes out
`Prepared`: refused, deferred, failed (it cannot be rendered or has nowhere to go), or ready.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.messaging import (
    channel_config,
    context,
    feedback,
    inbox,
    policy,
    rendering,
    tracking,
)
from clarion.messaging.channels.base import Channel, ChannelKind, Outgoing
from clarion.messaging.consent import service as consent
from clarion.messaging.models import Message, MessagingChannel, TemplateVersion
from clarion.profiles import queries as profiles
from clarion.profiles.queries import ProfileView


@dataclass(frozen=True, slots=True)
class _Channels:
    """A batch's channels: those its messages name, the defaults of their kinds, and the
    channels deleted while sending messages that name none since (by message id)."""

    by_id: dict[int, MessagingChannel]
    defaults: dict[str, MessagingChannel]
    deleted: dict[uuid.UUID, int]

    def of(self, message: Message) -> MessagingChannel | None:
        """The channel the message goes through: the one it names when that is one of the
        workspace's of its kind, else (naming none) its kind's default, if any."""
        if message.channel_id is not None:
            row = self.by_id.get(message.channel_id)
            return row if row is not None and row.kind == message.channel else None
        return self.defaults.get(message.channel)

    def problem(self, message: Message) -> str | None:
        """Why the channel the message names cannot take it (not the workspace's, or of
        another kind), or was deleted while sending it (it names none since: the default
        is not what it was sent through), or None (it names none, or a fitting one)."""
        if message.channel_id is None:
            gone = self.deleted.get(message.id)
            return None if gone is None else feedback.deleted_reason(gone)
        row = self.by_id.get(message.channel_id)
        if row is None:
            return f"channel {message.channel_id} is not one of the workspace's"
        if row.kind != message.channel:
            return f"channel {row.id} sends {row.kind} messages, not {message.channel}"
        return None


@dataclass
class Prepared:
    """A message and what became of it before any provider was called."""

    message: Message
    address: str | None = None
    refusal: str | None = None
    quiet_until: datetime | None = None
    failure: str | None = None
    channel: Channel | None = None
    channel_id: int | None = None
    rate_per_second: float | None = None
    outgoing: Outgoing | None = None
    rendered: rendering.Rendered | None = None
    links: list[str] = field(default_factory=list)
    stored: dict[str, Any] | None = None  # kept on the message (view in browser)


class Composer:
    """Prepares messages for sending (one per process: it holds the channel pool)."""

    def __init__(
        self, *, channels: channel_config.ChannelPool, signer: tracking.LinkSigner, public_url: str
    ) -> None:
        self.channels = channels
        self.signer = signer
        self.public_url = public_url.rstrip("/")
        self._contents: dict[int, Any] = {}
        self._in_browser: dict[int, bool] = {}

    async def prepare(
        self, session: AsyncSession, workspace_id: int, messages: Sequence[Message], now: datetime
    ) -> list[Prepared]:
        """Each message, refused, deferred, failed or ready to send (a constant number of
        queries for the batch, whatever its size)."""
        views = await profiles.views_by_id(
            session, workspace_id=workspace_id, profile_ids=sorted({m.profile_id for m in messages})
        )
        versions = await self._versions(session, {m.template_version_id for m in messages})
        rows = await self._channels(session, workspace_id, messages)
        prepared: list[Prepared] = []
        for message in messages:
            view = views.get(message.profile_id)
            if view is None:
                prepared.append(Prepared(message, failure="the profile no longer exists"))
                continue
            problem = rows.problem(message)
            # Never sent through a channel of another kind, nor one nobody chose.
            if problem is not None:
                prepared.append(Prepared(message, failure=problem))
                continue
            # The rows stay as read (this session only reads): what is decided goes on
            # `Prepared`, and delivery writes it in its own transaction.
            address = message.address or context.address_for(
                message.channel, context.profile_context(view)
            )
            if address is None and message.channel == "webhook":
                row = rows.of(message)  # a webhook goes to its channel's URL
                address = row.settings.get("url") if row is not None else None
            prepared.append(Prepared(message, address=address))
        await self._consent(session, workspace_id, prepared)
        found = await policy.get_policy(session, workspace_id=workspace_id)
        for item in prepared:
            if item.refusal or item.failure:
                continue
            message = item.message
            view = views[message.profile_id]
            if message.category == policy.MARKETING:
                item.quiet_until = policy.quiet_until(
                    now,
                    timezone=view.profile.traits.get("timezone"),
                    policy=found,
                    channel=message.channel,
                )
                if item.quiet_until is not None:
                    continue
            await self._compose(item, view, versions, rows, now)
        return prepared

    async def _versions(
        self, session: AsyncSession, ids: set[int | None]
    ) -> dict[int, TemplateVersion]:
        wanted = [i for i in ids if i is not None]
        if not wanted:
            return {}
        rows = await session.scalars(select(TemplateVersion).where(TemplateVersion.id.in_(wanted)))
        return {row.id: row for row in rows}

    async def _channels(
        self, session: AsyncSession, workspace_id: int, messages: Sequence[Message]
    ) -> _Channels:
        wanted = {m.channel_id for m in messages if m.channel_id is not None}
        by_id: dict[int, MessagingChannel] = {}
        if wanted:
            rows = await session.scalars(
                select(MessagingChannel).where(
                    MessagingChannel.workspace_id == workspace_id, MessagingChannel.id.in_(wanted)
                )
            )
            by_id = {row.id: row for row in rows}
        defaults: dict[str, MessagingChannel] = {}
        for kind in {m.channel for m in messages if m.channel_id is None and m.channel != "inbox"}:
            default = await channel_config.default_channel(
                session, workspace_id=workspace_id, kind=kind
            )
            if default is not None:
                defaults[kind] = default
        deleted = await feedback.deleted_channels(
            session, workspace_id=workspace_id, messages=messages
        )
        return _Channels(by_id, defaults, deleted)

    async def _consent(
        self, session: AsyncSession, workspace_id: int, prepared: list[Prepared]
    ) -> None:
        groups: dict[tuple[str, str, int | None], list[Prepared]] = {}
        for item in prepared:
            if item.failure:
                continue
            message = item.message
            if not item.address:
                item.failure = f"the profile has no {message.channel} address"
                continue
            groups.setdefault((message.channel, message.category, message.topic_id), []).append(
                item
            )
        for (channel, category, topic_id), items in groups.items():
            answers = await consent.refusals(
                session,
                workspace_id=workspace_id,
                profile_ids=[i.message.profile_id for i in items],
                channel=channel,
                addresses={i.message.profile_id: i.address for i in items},
                category=category,
                topic_id=topic_id,
            )
            for item in items:
                item.refusal = answers.get(item.message.profile_id)

    async def _compose(
        self,
        item: Prepared,
        view: ProfileView,
        versions: dict[int, TemplateVersion],
        rows: _Channels,
        now: datetime,
    ) -> None:
        message = item.message
        version = versions.get(message.template_version_id or -1)
        if version is None:
            item.failure = "its template version no longer exists"
            return
        row = None
        if message.channel != "inbox":
            row = rows.of(message)
            if row is None:
                item.failure = f"no {message.channel} channel is configured"
                return
        links = self._links(message)
        recipient = context.profile_context(view)
        event = message.context.get("event")
        render_context = rendering.RenderContext(
            profile=recipient,
            message_id=str(message.id),
            now=now,
            event=rendering.EventContext(event["name"], event.get("properties") or {})
            if isinstance(event, dict) and isinstance(event.get("name"), str)
            else None,
            journey=message.context.get("journey"),
            links=links,
        )
        try:
            content = self._content(message.channel, version)
            rendered = rendering.render(cast(ChannelKind, message.channel), content, render_context)
        except rendering.RenderError as error:
            item.failure = f"the template did not render: {error}"
            return
        except ValueError as error:
            item.failure = f"the template version is unreadable: {error}"
            return
        headers: dict[str, str] = {}
        if message.channel == "email":
            html, item.links = self._track(message, rendered.html or "", links)
            rendered = dataclasses.replace(rendered, html=html)
            if self._shows_in_browser(version):
                item.stored = {"html": html}  # what its "view in browser" link shows
            if links.unsubscribe_url and message.category == policy.MARKETING:
                headers = _unsubscribe_headers(links.unsubscribe_url)
        item.rendered = rendered
        assert item.address is not None
        item.outgoing = rendered.outgoing(
            message_id=str(message.id),
            idempotency_key=message.idempotency_key,
            to=item.address,
            headers=headers,
        )
        if row is not None:
            item.channel = await self.channels.get(row)
            item.channel_id = row.id
            item.rate_per_second = row.rate_per_second

    def _content(self, channel: str, version: TemplateVersion) -> Any:
        """The version's content, read once per process (versions never change)."""
        found = self._contents.get(version.id)
        if found is None:
            if len(self._contents) >= _CONTENTS_KEPT:
                self._contents.clear()
            found = self._contents[version.id] = rendering.parse_content(
                cast(ChannelKind, channel), version.content
            )
        return found

    def _shows_in_browser(self, version: TemplateVersion) -> bool:
        """Whether the version links to "view in browser" (read once per process)."""
        found = self._in_browser.get(version.id)
        if found is None:
            if len(self._in_browser) >= _CONTENTS_KEPT:
                self._in_browser.clear()
            found = self._in_browser[version.id] = _VIEW_LINK in orjson.dumps(version.content)
        return found

    def _links(self, message: Message) -> rendering.Links:
        unsubscribe = self.signer.sign_unsubscribe(
            workspace_id=message.workspace_id,
            profile_id=message.profile_id,
            topic_id=message.topic_id,
            channel=None if message.topic_id is not None else message.channel,  # type: ignore[arg-type]
            message_id=message.id,
        )
        preferences = self.signer.sign_preferences(
            workspace_id=message.workspace_id, profile_id=message.profile_id
        )
        return rendering.Links(
            unsubscribe_url=tracking.unsubscribe_url(self.public_url, unsubscribe),
            preferences_url=tracking.preferences_url(self.public_url, preferences),
            view_in_browser_url=tracking.view_url(
                self.public_url, self.signer.sign_view(message.id)
            ),
        )

    def _track(self, message: Message, html: str, links: rendering.Links) -> tuple[str, list[str]]:
        originals: list[str] = []

        def tracked(url: str, index: int) -> str:
            originals.append(url)
            return tracking.click_url(self.public_url, self.signer.sign_click(message.id, index))

        untracked = [
            u
            for u in (links.unsubscribe_url, links.preferences_url, links.view_in_browser_url)
            if u
        ]
        html = rendering.rewrite_links(html, tracked, untracked=untracked)
        pixel = tracking.open_pixel_url(self.public_url, self.signer.sign_open(message.id))
        return rendering.add_open_pixel(html, pixel), originals

    async def deliver_inbox(self, session: AsyncSession, item: Prepared, now: datetime) -> None:
        """Put a rendered inbox message in the profile's inbox."""
        rendered = item.rendered
        assert rendered is not None
        content: dict[str, Any] = {
            "title": rendered.subject or "",
            "body": rendered.html or "",
            "action_url": rendered.action_url,
            "data": rendered.data,
        }
        await inbox.deliver_to_inbox(session, message=item.message, content=content, now=now)

    async def suppress(
        self,
        session: AsyncSession,
        workspace_id: int,
        message: Message,
        address: str,
        kind: str,
        now: datetime,
    ) -> None:
        """Put a bounced or complaining address on the suppression list."""
        await consent.suppress(
            session,
            workspace_id=workspace_id,
            channel=message.channel,
            address=address,
            reason="complaint" if kind == "complaint" else "hard_bounce",
            detail=message.reason or "",
            now=now,
        )


_VIEW_LINK = b"view_in_browser_url"
_CONTENTS_KEPT = 1_000  # template versions' parsed content kept per process


def _unsubscribe_headers(url: str) -> dict[str, str]:
    try:
        return tracking.list_unsubscribe_headers(url)
    except ValueError:  # RFC 8058 one-click needs https: none on a plain-http public URL
        return {}
