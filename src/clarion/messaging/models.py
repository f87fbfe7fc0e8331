"""Tables: the channels a workspace sends through, its templates and their versions,
subscription topics, each profile's consent, the suppression list, frequency caps, and every
message with the history of its statuses.

A message is a row before anything is sent: its idempotency key is unique per workspace, so
whatever asks twice for the same message (a retried job, a resumed campaign) gets the one
row, and delivery moves it through its statuses exactly once.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.database import Base, BigId, JSONDocument, UTCDateTime
from clarion.profiles import models as _profiles  # noqa: F401 - messages refer to profiles


class MessagingChannel(Base):
    """A configured way to reach customers: its kind (email, sms, push, inbox, webhook),
    provider settings (host, sender, base URL...), and its credentials (password, tokens,
    keys) encrypted with the secret key (`core/crypto.py`), never returned by the API."""

    __tablename__ = "messaging_channels"
    __table_args__ = (
        Index(None, "workspace_id", "name", unique=True),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    settings: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    credentials: Mapped[str | None] = mapped_column(Text, default=None)  # encrypted JSON
    # Sends per second the provider allows (a token bucket per channel); None: unlimited.
    rate_per_second: Mapped[float | None] = mapped_column(Float, default=None)
    # The channel of its kind that messages use when they name none.
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SubscriptionTopic(Base):
    """What a customer can subscribe to on one channel ("Newsletter", "Offers").
    `default_state` is what a profile that never said anything gets (opted_in or
    opted_out); `double_opt_in` makes an email opt-in pending until confirmed."""

    __tablename__ = "subscription_topics"
    __table_args__ = (
        Index(None, "workspace_id", "name", unique=True),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    channel: Mapped[str] = mapped_column(String(16))
    default_state: Mapped[str] = mapped_column(String(16), default="opted_in")
    double_opt_in: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Consent(Base):
    """A profile's say on one scope: a whole channel (`topic_id` None: all marketing on it)
    or one topic. `state` is opted_in, opted_out or pending (double opt-in sent, not yet
    confirmed); `source` says where it came from (api, import, unsubscribe_link, one_click,
    preferences_page, confirmation, complaint)."""

    __tablename__ = "consents"
    __table_args__ = (
        Index(None, "workspace_id", "profile_id", "scope", unique=True),
        Index(None, "profile_id"),  # the cascade of a profile's erasure
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    profile_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"))
    # "<channel>" or "<channel>:<topic id>": one row per scope, whatever the topic.
    scope: Mapped[str] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(16))
    topic_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("subscription_topics.id", ondelete="CASCADE"), default=None
    )
    state: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Suppression(Base):
    """An address nothing is sent to on a channel, not even transactional messages: a hard
    bounce, a spam complaint, a person's decision (manual), or a person erased with their
    addresses kept out (erased)."""

    __tablename__ = "suppressions"
    __table_args__ = (Index(None, "workspace_id", "channel", "address", unique=True),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(320))  # normalized: lower-case email, E.164
    reason: Mapped[str] = mapped_column(String(16))  # hard_bounce | complaint | manual | erased
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MessageTemplate(Base):
    """A named template for one channel kind; its content lives in versions, and
    `current_version` is what new messages use. `category` transactional passes marketing
    opt-outs (never suppression); `topic_id` is the subscription a marketing send needs.
    A deleted template is archived: messages keep pointing at their versions."""

    __tablename__ = "message_templates"
    __table_args__ = (
        Index(None, "workspace_id", "name", unique=True),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(16))
    category: Mapped[str] = mapped_column(String(16), default="marketing")
    topic_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("subscription_topics.id", ondelete="SET NULL"), default=None
    )
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TemplateVersion(Base):
    """One saved content of a template (`rendering.py`'s localized content as JSON); never
    changed once written."""

    __tablename__ = "template_versions"
    __table_args__ = (Index(None, "template_id", "version", unique=True),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    template_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("message_templates.id", ondelete="CASCADE")
    )
    version: Mapped[int] = mapped_column(Integer)
    content: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FrequencyCap(Base):
    """At most `max_messages` marketing messages per profile in any `period_seconds`, on one
    channel kind or (`channel` None) on all of them together."""

    __tablename__ = "frequency_caps"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    channel: Mapped[str | None] = mapped_column(String(16), default=None)
    max_messages: Mapped[int] = mapped_column(Integer)
    period_seconds: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MessagingPolicy(Base):
    """A workspace's sending rules beyond caps: quiet hours, in each profile's own time zone
    (`timezone` trait, else `default_timezone`), on the listed channel kinds. A marketing
    message due inside them waits for their end; none is dropped."""

    __tablename__ = "messaging_policies"

    workspace_id: Mapped[int] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    quiet_hours_start: Mapped[str | None] = mapped_column(String(5), default=None)  # "21:00"
    quiet_hours_end: Mapped[str | None] = mapped_column(String(5), default=None)  # "08:00"
    quiet_channels: Mapped[list[str]] = mapped_column(JSONDocument, default=list)
    default_timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Message(Base):
    """One message to one profile on one channel.

    `status` moves queued -> sent -> delivered -> opened -> clicked (and converted), or ends
    refused (consent, suppression, a cap: `reason` says which rule), failed, bounced or
    unsubscribed. `origin` / `origin_id` name what asked for it (campaign, journey, api).
    `links` are the original URLs of its tracked links, so a click token names only an
    index. Inbox messages keep their rendered `content`, with `read_at` / `archived_at`.
    """

    __tablename__ = "messages"
    __table_args__ = (
        Index(None, "workspace_id", "idempotency_key", unique=True),
        Index(None, "workspace_id", "profile_id", "created_at"),
        Index(None, "workspace_id", "origin", "origin_id"),
        Index(None, "profile_id", "sent_at"),
        Index(None, "provider_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    profile_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    channel_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("messaging_channels.id", ondelete="SET NULL"), default=None
    )
    template_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("message_templates.id", ondelete="SET NULL"), default=None
    )
    template_version_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("template_versions.id", ondelete="SET NULL"), default=None
    )
    idempotency_key: Mapped[str] = mapped_column(String(255))
    origin: Mapped[str] = mapped_column(String(16))  # campaign | journey | api | test
    origin_id: Mapped[str | None] = mapped_column(String(64), default=None)
    category: Mapped[str] = mapped_column(String(16), default="marketing")
    topic_id: Mapped[int | None] = mapped_column(BigId, default=None)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    address: Mapped[str | None] = mapped_column(String(2048), default=None)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    context: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    content: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, default=None)
    links: Mapped[list[str]] = mapped_column(JSONDocument, default=list)
    provider_id: Mapped[str | None] = mapped_column(String(255), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    send_after: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    clicked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    converted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class MessageEvent(Base):
    """One thing that happened to a message: a status change, an open or a click (with
    `machine` set when a proxy or a link scanner did it), a refusal, a deferral."""

    __tablename__ = "message_events"
    __table_args__ = (
        Index(None, "message_id", "id"),
        Index(None, "workspace_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    message_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("messages.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(16))
    machine: Mapped[bool] = mapped_column(Boolean, default=False)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
