"""What a message is made of, before and after rendering: the content of each channel
(Pydantic models, JSON both ways, as template versions are stored), `Localized` sets of
them, the recipient's `RenderContext` and the `Rendered` result; `pick_locale` chooses
among locales. `messaging.rendering` re-exports all of it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeAlias, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, JsonValue, model_validator

from clarion.messaging.channels.base import ChannelKind, Outgoing
from clarion.messaging.rendering_sms import SmsSegments


class _Content(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EmailContent(_Content):
    """An email: `subject` (text), `html`, an optional `text` part (derived from the html
    when absent) and an optional `preheader` (the inbox preview line)."""

    subject: str
    html: str
    text: str | None = None
    preheader: str | None = None


class SmsContent(_Content):
    """An SMS: its `body`."""

    body: str


class PushContent(_Content):
    """A push notification: `title`, `body` and `data`, whose values are templates."""

    title: str = ""
    body: str = ""
    data: dict[str, str] = {}


class InboxContent(_Content):
    """An in-app inbox message: `title` (text), `body` (HTML), an `action_url` and `data`
    (values are templates)."""

    title: str = ""
    body: str = ""
    action_url: str | None = None
    data: dict[str, str] = {}


class WebhookContent(_Content):
    """A webhook: `body` is a JSON object whose string leaves are templates. A leaf that is
    a single `{{ expression }}` keeps its value's JSON type (a number stays a number)."""

    body: JsonValue


Content: TypeAlias = EmailContent | SmsContent | PushContent | InboxContent | WebhookContent
ContentT = TypeVar("ContentT", EmailContent, SmsContent, PushContent, InboxContent, WebhookContent)
CONTENT_TYPES: dict[str, type[Content]] = {
    "email": EmailContent, "sms": SmsContent, "push": PushContent,
    "inbox": InboxContent, "webhook": WebhookContent,
}  # fmt: skip
LOCALE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")


class Localized(BaseModel, Generic[ContentT]):
    """One content per locale ("en", "fr", "fr-CA"...) and the one to use when none fits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default_locale: str
    locales: dict[str, ContentT]

    @model_validator(mode="after")
    def _default_is_present(self) -> Localized[ContentT]:
        if locale_key(self.default_locale) not in {locale_key(k) for k in self.locales}:
            raise ValueError(f"default_locale {self.default_locale!r} is not among the locales")
        return self


def parse_content(channel: ChannelKind, data: Mapping[str, Any]) -> Content | Localized[Any]:
    """Read stored JSON (a dict) back into the channel's content, localized when it has
    `locales`; raises `pydantic.ValidationError`."""
    model = CONTENT_TYPES[channel]
    if "locales" in data:
        return Localized[model].model_validate(data)  # type: ignore[valid-type]
    return model.model_validate(data)


# --- Context and result -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProfileContext:
    """The recipient as templates see it."""

    id: str | UUID
    user_id: str | None = None
    email: str | None = None
    phone: str | None = None
    traits: Mapping[str, Any] = field(default_factory=dict)
    computed: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EventContext:
    """The event that triggered the message."""

    name: str
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Links:
    """The message's service links, those known."""

    unsubscribe_url: str | None = None
    preferences_url: str | None = None
    view_in_browser_url: str | None = None


@dataclass(frozen=True, slots=True)
class RenderContext:
    """Everything one recipient's message is rendered from."""

    profile: ProfileContext
    message_id: str
    now: datetime
    event: EventContext | None = None
    journey: Mapping[str, Any] | None = None
    links: Links = Links()

    def variables(self) -> dict[str, Any]:
        """The template variables, as documented in the module docstring."""
        profile = self.profile
        links = self.links
        variables: dict[str, Any] = {
            "profile": {
                "id": str(profile.id),
                "user_id": profile.user_id,
                "email": profile.email,
                "phone": profile.phone,
                "traits": _as_dict(profile.traits),
                "computed": _as_dict(profile.computed),
            },
            "message": {"id": self.message_id},
            "links": {
                name: url
                for name, url in (
                    ("unsubscribe_url", links.unsubscribe_url),
                    ("preferences_url", links.preferences_url),
                    ("view_in_browser_url", links.view_in_browser_url),
                )
                if url is not None
            },
            "now": self.now,
        }
        if self.event is not None:
            variables["event"] = {
                "name": self.event.name,
                "properties": _as_dict(self.event.properties),
            }
        if self.journey is not None:
            variables["journey"] = _as_dict(self.journey)
        return variables


def _as_dict(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return mapping if type(mapping) is dict else dict(mapping)


@dataclass(frozen=True, slots=True)
class Rendered:
    """One recipient's message, in `Outgoing`'s terms: `subject` is the email subject or
    the push / inbox title; `html` the email html or the inbox body; `text` the email text
    part, the SMS body or the push body; `data` the push / inbox data or the webhook
    payload. `locale` is the content locale used; `sms` the SMS segment count."""

    channel: ChannelKind
    locale: str | None
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    action_url: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    sms: SmsSegments | None = None

    def outgoing(
        self, *, message_id: str, idempotency_key: str, to: str, headers: Mapping[str, str] = {}
    ) -> Outgoing:
        """This message as a channel sends it; an inbox `action_url` goes in `data`."""
        data = dict(self.data)
        if self.action_url is not None:
            data["action_url"] = self.action_url
        return Outgoing(
            message_id=message_id, idempotency_key=idempotency_key, to=to,
            subject=self.subject, html=self.html, text=self.text, data=data, headers=dict(headers),
        )  # fmt: skip


# --- Locales ------------------------------------------------------------------------------------


def locale_key(locale: str) -> str:
    """`locale` as compared: lower case, `-` for `_`."""
    return locale.replace("_", "-").lower()


def pick_locale(available: Mapping[str, Any], wanted: str | None, default: str) -> str:
    """The key of `available` that serves `wanted`: itself, else its parents ("fr-CA" ->
    "fr"), else `default`; case and `_`/`-` do not matter."""
    keys = {locale_key(key): key for key in available}
    if wanted:
        parts = locale_key(wanted).split("-")
        for size in range(len(parts), 0, -1):
            found = keys.get("-".join(parts[:size]))
            if found is not None:
                return found
    return keys.get(locale_key(default), default)
