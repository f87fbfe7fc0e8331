"""A channel's configuration per kind: its settings and its secrets as Pydantic models, read
through one discriminated union on `kind` (`ChannelConfig`), and `parse_channel_config`,
which names every field at fault as the caller wrote it (`settings.base_url`,
`secrets.dkim_private_key`) and checks what spans fields (DKIM needs a domain, a selector and
a key; an SMS channel exactly one sender).

Base URLs are http(s) only; private keys must load (RSA, unencrypted PEM); the webhook
secret has the Standard Webhooks form. Nothing here touches the database.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)
from pydantic import AfterValidator, Field, TypeAdapter, ValidationError, field_validator

from clarion.core.errors import FieldError
from clarion.messaging.channels.base import ChannelKind
from clarion.messaging.channels.email import SmtpSecurity, recipient_address
from clarion.messaging.channels.webhook import WebhookSettings
from clarion.messaging.schemas import Strict, UnprocessableInput, field_errors

_HOSTNAME = r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$"
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")
_RESERVED_HEADERS = frozenset(
    {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length"}
)
SERVICE_ACCOUNT_FIELDS = ("project_id", "client_email", "private_key", "token_uri")


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or value != value.strip():
        raise ValueError("must be an http:// or https:// URL")
    return value


def _email(value: str) -> str:
    recipient_address(value)  # raises ValueError saying what is wrong
    return value


def _one_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("must be a single line")
    return value


def _rsa_pem(value: str) -> str:
    try:
        key = load_pem_private_key(value.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError("is not an unencrypted PEM private key") from exc
    if not isinstance(key, RSAPrivateKey):
        raise ValueError("must be an RSA private key")
    return value


HttpUrl = Annotated[str, Field(max_length=2048), AfterValidator(_http_url)]
EmailAddress = Annotated[str, Field(max_length=320), AfterValidator(_email)]
OneLine = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_one_line)]
RsaPem = Annotated[str, Field(max_length=20_000), AfterValidator(_rsa_pem)]
Token = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_one_line)]
Sid = Annotated[str, Field(pattern=r"^[A-Za-z0-9]{2,64}$")]
Timeout = Annotated[float, Field(gt=0, le=300, strict=True)]


class EmailSettings(Strict):
    """An SMTP relay and the sender. `security`: starttls (port 587), tls (465) or none."""

    host: str = Field(min_length=1, max_length=253, pattern=_HOSTNAME)
    port: int = Field(default=587, ge=1, le=65535, strict=True)
    security: SmtpSecurity = "starttls"
    username: Token | None = None
    from_address: EmailAddress
    from_name: OneLine | None = None
    envelope_from: EmailAddress | None = Field(
        default=None, description="MAIL FROM, where bounces go; the From address by default."
    )
    pool_size: int = Field(default=4, ge=1, le=50, strict=True)
    timeout: Timeout = 30.0
    helo_hostname: str | None = Field(default=None, max_length=253, pattern=_HOSTNAME)
    dkim_domain: str | None = Field(default=None, max_length=253, pattern=_HOSTNAME)
    dkim_selector: str | None = Field(default=None, max_length=63, pattern=r"^[A-Za-z0-9._-]+$")


class EmailSecrets(Strict):
    """The SMTP password and the DKIM private key (RSA, PEM)."""

    password: Token | None = None
    dkim_private_key: RsaPem | None = None


class EmailConfig(Strict):
    """An email channel's configuration."""

    kind: Literal["email"]
    settings: EmailSettings
    secrets: EmailSecrets = EmailSecrets()

    def problems(self) -> list[FieldError]:
        """What is wrong between fields: DKIM needs a domain, a selector and a key."""
        found = []
        settings, secrets = self.settings, self.secrets
        if (settings.dkim_domain is None) != (settings.dkim_selector is None):
            found.append(FieldError("settings.dkim_selector", "give both dkim_domain and it"))
        if settings.dkim_domain is not None and secrets.dkim_private_key is None:
            found.append(FieldError("secrets.dkim_private_key", "required to sign with DKIM"))
        if secrets.dkim_private_key is not None and settings.dkim_domain is None:
            found.append(FieldError("settings.dkim_domain", "required with a DKIM key"))
        if settings.username is not None and secrets.password is None:
            found.append(FieldError("secrets.password", "required with a username"))
        return found


class SmsSettings(Strict):
    """A Twilio account and the sender: exactly one of `from_number` (E.164) and
    `messaging_service_sid`."""

    base_url: HttpUrl = "https://api.twilio.com"
    account_sid: Sid
    from_number: str | None = Field(default=None, pattern=r"^\+[1-9][0-9]{5,14}$")
    messaging_service_sid: Sid | None = None
    status_callback_url: HttpUrl | None = None
    timeout: Timeout = 10.0


class SmsSecrets(Strict):
    """The Twilio auth token."""

    auth_token: Token | None = None


class SmsConfig(Strict):
    """An SMS channel's configuration."""

    kind: Literal["sms"]
    settings: SmsSettings
    secrets: SmsSecrets = SmsSecrets()

    def problems(self) -> list[FieldError]:
        """What is wrong between fields: one sender, and the auth token."""
        found = []
        settings = self.settings
        if (settings.from_number is None) == (settings.messaging_service_sid is None):
            found.append(
                FieldError(
                    "settings.from_number", "give exactly one of it and messaging_service_sid"
                )
            )
        if self.secrets.auth_token is None:
            found.append(FieldError("secrets.auth_token", "required"))
        return found


class PushSettings(Strict):
    """Where Firebase Cloud Messaging is."""

    base_url: HttpUrl = "https://fcm.googleapis.com"
    timeout: Timeout = 10.0


class PushSecrets(Strict):
    """The Firebase service account: its JSON key file, as an object or as text."""

    service_account: dict[str, Any] | None = None

    @field_validator("service_account", mode="before")
    @classmethod
    def _account(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError("is not a JSON object") from exc
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError("is not a JSON object")
        missing = [name for name in SERVICE_ACCOUNT_FIELDS if not isinstance(value.get(name), str)]
        if missing or not all(value[name] for name in SERVICE_ACCOUNT_FIELDS):
            named = missing or [name for name in SERVICE_ACCOUNT_FIELDS if not value[name]]
            raise ValueError(f"lacks {', '.join(named)}")
        _http_url(value["token_uri"])
        _rsa_pem(value["private_key"])
        return value


class PushConfig(Strict):
    """A push channel's configuration."""

    kind: Literal["push"]
    settings: PushSettings = PushSettings()
    secrets: PushSecrets = PushSecrets()

    def problems(self) -> list[FieldError]:
        """What is missing: the service account."""
        if self.secrets.service_account is None:
            return [FieldError("secrets.service_account", "required")]
        return []


class WebhookSettingsIn(Strict):
    """Where messages go unless a message names its own URL, the request time-out and extra
    headers sent with every request."""

    url: HttpUrl | None = None
    timeout: Timeout = 10.0
    headers: dict[str, str] = Field(default_factory=dict, max_length=20)

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.match(name) or name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"{name!r} cannot be an extra header")
            _one_line(text)
        return value


class WebhookSecrets(Strict):
    """The Standard Webhooks signing secret ("whsec_" and base64); generated when absent."""

    secret: str | None = Field(default=None, max_length=200)

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None:
            WebhookSettings(secret=value)  # raises ValueError naming the expected form
        return value


class WebhookConfig(Strict):
    """A webhook channel's configuration."""

    kind: Literal["webhook"]
    settings: WebhookSettingsIn = WebhookSettingsIn()
    secrets: WebhookSecrets = WebhookSecrets()

    def problems(self) -> list[FieldError]:
        """Nothing to check between fields."""
        return []


class InboxSettings(Strict):
    """The in-app inbox has no settings."""


class InboxSecrets(Strict):
    """The in-app inbox has no secrets."""


class InboxConfig(Strict):
    """An inbox channel's configuration (none)."""

    kind: Literal["inbox"]
    settings: InboxSettings = InboxSettings()
    secrets: InboxSecrets = InboxSecrets()

    def problems(self) -> list[FieldError]:
        """Nothing to check."""
        return []


ChannelConfig = Annotated[
    EmailConfig | SmsConfig | PushConfig | WebhookConfig | InboxConfig,
    Field(discriminator="kind"),
]
_CONFIG: TypeAdapter[ChannelConfig] = TypeAdapter(ChannelConfig)


def parse_channel_config(
    kind: ChannelKind, settings: dict[str, Any], secrets: dict[str, Any]
) -> ChannelConfig:
    """The kind's settings and secrets, checked field by field and between fields;
    `UnprocessableInput` naming every field at fault (`settings.port`, `secrets.password`)."""
    try:
        config = _CONFIG.validate_python({"kind": kind, "settings": settings, "secrets": secrets})
    except ValidationError as error:
        # The first part of each location is the union's tag (the kind); callers never wrote it.
        errors = field_errors(error, skip=1)
        raise UnprocessableInput(f"The {kind} channel is not valid.", errors=errors) from error
    problems = config.problems()
    if problems:
        raise UnprocessableInput(f"The {kind} channel is not valid.", errors=problems)
    return config


def fingerprint(name: str, value: Any) -> str | None:
    """A stored secret's fingerprint, which does not give it away: the last 4 characters of
    a token, the SHA-256 of a private key's public half, nothing for a password."""
    if name == "dkim_private_key":
        return _key_fingerprint(value)
    if name == "service_account" and isinstance(value, dict):
        return f"{value.get('client_email')} {_key_fingerprint(value.get('private_key'))}"
    if name in ("auth_token", "secret") and isinstance(value, str) and len(value) >= 16:
        return "…" + value[-4:]
    return None


def _key_fingerprint(pem: Any) -> str | None:
    try:
        key = load_pem_private_key(str(pem).encode(), password=None)
    except (ValueError, TypeError):
        return None
    public = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(public).hexdigest()[:16]
