"""Messaging's API shapes: channels as the API shows them (never a secret), templates and
their versions, validation and preview; and the 422 error their content checks raise.

A channel's body names its kind and carries `settings` and `secrets` as plain objects; they
are read per kind by `channel_settings.parse_channel_config`, so that each error names its
field as the caller wrote it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clarion.core.database import MAX_ROW_ID
from clarion.core.errors import FieldError, InvalidInput
from clarion.core.schemas import DisplayName
from clarion.messaging.channels.base import ChannelKind
from clarion.messaging.models import MessagingChannel

Category = Literal["marketing", "transactional"]


class UnprocessableInput(InvalidInput):
    """A well-formed body whose content is wrong (a template, a channel's settings): 422,
    like Pydantic's own validation errors, each field at fault named."""

    status = 422


def field_errors(error: ValidationError, prefix: str = "", *, skip: int = 0) -> list[FieldError]:
    """Pydantic's errors as FieldErrors: locations after the first `skip` parts, dotted,
    after `prefix`."""
    found = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"][skip:])
        field = ".".join(part for part in (prefix, path) if part) or "body"
        found.append(FieldError(field, item["msg"]))
    return found


class Strict(BaseModel):
    """An input model: unknown fields are refused (422 naming them)."""

    model_config = ConfigDict(extra="forbid")


# --- Channels over the API -------------------------------------------------------------------

SETTINGS_DOC = (
    "The kind's settings. email: host, port, security (starttls|tls|none), username, "
    "from_address, from_name, envelope_from, pool_size, timeout, helo_hostname, dkim_domain, "
    "dkim_selector. sms: base_url, account_sid, from_number or messaging_service_sid, "
    "status_callback_url, timeout. push: base_url, timeout. webhook: url, timeout, headers. "
    "inbox: none."
)
SECRETS_DOC = (
    "The kind's secrets, stored encrypted and never returned. email: password, "
    "dkim_private_key (RSA PEM). sms: auth_token. push: service_account (the JSON key file). "
    "webhook: secret (whsec_...; when absent one is generated and shown once, in "
    "`generated_secret`). inbox: none."
)


class ChannelCreate(Strict):
    """A new channel."""

    name: DisplayName
    kind: ChannelKind
    settings: dict[str, Any] = Field(default_factory=dict, description=SETTINGS_DOC)
    secrets: dict[str, Any] = Field(default_factory=dict, description=SECRETS_DOC)
    rate_per_second: float | None = Field(default=None, gt=0, le=1_000_000, strict=True)
    is_default: bool | None = Field(
        default=None, description="The kind's default channel; left out: when it is the first."
    )


class ChannelUpdate(Strict):
    """Changes to a channel; fields left out stay as they are."""

    name: DisplayName | None = None
    settings: dict[str, Any] | None = Field(
        default=None, description="Merged onto the current settings; a null value unsets one."
    )
    secrets: dict[str, Any] | None = Field(
        default=None, description="Each one given replaces the stored one; null removes it."
    )
    rate_per_second: float | None = Field(default=None, gt=0, le=1_000_000, strict=True)
    is_default: bool | None = None


class SecretState(BaseModel):
    """A stored secret, shown only by a fingerprint (when the kind of secret has one)."""

    set: bool = True
    fingerprint: str | None = None


class ChannelRead(BaseModel):
    """A channel as the API shows it: never a secret."""

    id: int
    name: str
    kind: ChannelKind
    settings: dict[str, Any]
    credentials_set: bool
    credentials_readable: bool = Field(
        description="False when the stored secrets cannot be read with the current secret key."
    )
    secrets: dict[str, SecretState]
    rate_per_second: float | None
    is_default: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(
        cls, row: MessagingChannel, fingerprints: dict[str, str | None] | None
    ) -> ChannelRead:
        """The channel `row`, its secrets shown by `fingerprints` (None: unreadable)."""
        return cls(
            id=row.id,
            name=row.name,
            kind=row.kind,
            settings=row.settings,
            credentials_set=row.credentials is not None,
            credentials_readable=fingerprints is not None,
            secrets={
                name: SecretState(fingerprint=fingerprint)
                for name, fingerprint in (fingerprints or {}).items()
            },
            rate_per_second=row.rate_per_second,
            is_default=row.is_default,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class ChannelSaved(ChannelRead):
    """A channel as the answer that created or changed it shows it: with the webhook
    signing secret Clarion generated for it, when it did."""

    generated_secret: str | None = Field(
        default=None,
        description=(
            "The webhook signing secret (whsec_...) generated because none was given: shown "
            "here once, like an API key, and never again (reads show its fingerprint). "
            "Store it now: receivers need it to verify signatures. Absent otherwise."
        ),
    )


class ChannelPage(BaseModel):
    """A page of channels."""

    items: list[ChannelRead]
    next_cursor: str | None


class ChannelTest(Strict):
    """A test message: to whom, by the channel's kind: an email, a phone number, a device
    token, a URL; for an inbox channel, a profile of the workspace by its profile id or
    its user id."""

    to: str = Field(min_length=1, max_length=2048)
    subject: str = Field(default="Clarion test message", max_length=200, pattern=r"^[^\r\n]+$")
    text: str = Field(default="This is a test message from Clarion.", min_length=1, max_length=1600)


class ChannelTestResult(BaseModel):
    """The provider took the test message."""

    channel_id: int
    provider_id: str | None


# --- Templates -------------------------------------------------------------------------------

CONTENT_DOC = (
    "The channel's content (email: subject, html, text, preheader; sms: body; push: title, "
    "body, data; inbox: title, body, action_url, data; webhook: body), or "
    '{"default_locale": "en", "locales": {"en": {...}, "fr": {...}}}.'
)
TopicId = Annotated[int, Field(ge=1, le=MAX_ROW_ID, strict=True)]


class TemplateCreate(Strict):
    """A new template and its first version."""

    name: DisplayName
    channel: ChannelKind
    category: Category = "marketing"
    topic_id: TopicId | None = None
    content: dict[str, Any] = Field(description=CONTENT_DOC)


class TemplateUpdate(Strict):
    """Changes to a template; new content makes a new version. Fields left out stay."""

    name: DisplayName | None = None
    category: Category | None = None
    topic_id: TopicId | None = Field(default=None, description="null removes the topic.")
    content: dict[str, Any] | None = Field(default=None, description=CONTENT_DOC)


class TemplateCheck(Strict):
    """Content to validate without saving it."""

    channel: ChannelKind
    content: dict[str, Any] = Field(description=CONTENT_DOC)


class TemplateChecked(BaseModel):
    """Valid content, in the form it would be stored."""

    channel: ChannelKind
    content: dict[str, Any]


class TemplateRead(BaseModel):
    """A template; its content is its current version's."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    channel: ChannelKind
    category: Category
    topic_id: int | None
    current_version: int
    archived_at: datetime | None
    created_at: datetime
    updated_at: datetime


class TemplateDetail(TemplateRead):
    """A template with its current version's content."""

    content: dict[str, Any]


class TemplatePage(BaseModel):
    """A page of templates."""

    items: list[TemplateRead]
    next_cursor: str | None


class VersionRead(BaseModel):
    """One saved content of a template."""

    model_config = ConfigDict(from_attributes=True)

    template_id: int
    version: int
    content: dict[str, Any]
    created_at: datetime


class VersionPage(BaseModel):
    """A page of a template's versions, newest first."""

    items: list[VersionRead]
    next_cursor: str | None


class DescribedProfile(Strict):
    """A recipient made up for a preview."""

    id: str = Field(default="preview", max_length=200)
    user_id: str | None = Field(default=None, max_length=255)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=32)
    traits: dict[str, Any] = Field(default_factory=dict)
    computed: dict[str, Any] = Field(default_factory=dict)


class EventIn(Strict):
    """The event a message is a reaction to."""

    name: DisplayName
    properties: dict[str, Any] = Field(default_factory=dict)


class PreviewRequest(Strict):
    """Whom to render a template for: a real profile (`profile_id`) or a described one
    (`profile`), with an optional triggering event, journey context, locale and version."""

    profile_id: uuid.UUID | None = None
    profile: DescribedProfile | None = None
    event: EventIn | None = None
    journey: dict[str, Any] | None = None
    locale: str | None = Field(default=None, max_length=35)
    version: int | None = Field(default=None, ge=1, le=2**31 - 1, strict=True)


class SmsSegmentsRead(BaseModel):
    """How an SMS body is sent: its encoding, length in that encoding and segments."""

    encoding: str
    units: int
    segments: int


class PreviewRead(BaseModel):
    """A template rendered for one recipient: `subject` is the email subject or push / inbox
    title, `html` the email html (CSS inlined) or inbox body, `text` the email text part,
    SMS body or push body, `data` the push / inbox data or the webhook payload."""

    template_id: int
    version: int
    channel: ChannelKind
    locale: str | None
    subject: str | None
    html: str | None
    text: str | None
    action_url: str | None
    data: dict[str, Any]
    sms: SmsSegmentsRead | None
