"""The webhook channel: a JSON POST signed per Standard Webhooks (standardwebhooks.com).

Each request carries `webhook-id` (the delivery's idempotency key, the same on every
retry, so receivers can deduplicate), `webhook-timestamp` (unix seconds, fresh on each
attempt) and `webhook-signature`: `v1,` and the base64 HMAC-SHA256 of
`{id}.{timestamp}.{body}` keyed with the base64-decoded part of the `whsec_...` secret.
Receivers check it with any Standard Webhooks library, or with `verify_webhook`.

Outcomes: 2xx -> `Sent`; 408, 429, 5xx, time-outs and connection errors ->
`TemporaryFailure` (with the receiver's `Retry-After`); 410 Gone -> `PermanentFailure`
with a hard bounce (the endpoint is gone for good); redirects (not followed) and other
4xx -> `PermanentFailure`.

Also the HTTP helpers the SMS and push channels share (`retry_after`, `owned_client`,
`excerpt`, `json_object`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from clarion.core.clock import Clock, SystemClock
from clarion.core.outbound import PUBLIC_ONLY, Policy, RefusedAddress, http_client
from clarion.messaging.channels.base import (
    ChannelKind,
    Outgoing,
    PermanentFailure,
    Sent,
    TemporaryFailure,
)

SECRET_PREFIX = "whsec_"  # noqa: S105 -- the format's prefix, not a secret
_RETRYABLE = frozenset({408, 429})
_SIGNATURE_HEADERS = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature"})


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookSettings:
    """The signing secret ("whsec_<base64>"), the request time-out in seconds and extra
    headers sent with every request (e.g. an API key the receiver wants)."""

    secret: str = field(repr=False)
    timeout: float = 10.0
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        _secret_key(self.secret)  # refuse a malformed secret now, not at the first send


def generate_secret() -> str:
    """A new random signing secret in Standard Webhooks form ("whsec_" + 32 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _secret_key(secret: str) -> bytes:
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from exc
    if not key:
        raise ValueError("a webhook secret may not be empty")
    return key


def sign_webhook(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value ("v1,<base64>") for this id, timestamp and body."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime,
    tolerance: int = 300,
) -> bool:
    """Whether `body` and its headers were signed with `secret` no more than `tolerance`
    seconds from `now` (either way); any one of several space-separated signatures may
    match. Header names are matched without regard to case."""
    fields = {name.lower(): value for name, value in headers.items()}
    webhook_id = fields.get("webhook-id")
    stamp = fields.get("webhook-timestamp", "")
    signatures = fields.get("webhook-signature")
    if not webhook_id or not signatures or not stamp.isdigit():
        return False
    timestamp = int(stamp)
    if abs(now.timestamp() - timestamp) > tolerance:
        return False
    expected = sign_webhook(secret, webhook_id, timestamp, body).encode()
    # Compare every candidate so the time taken does not say which one matched.
    found = False
    for candidate in signatures.split():
        found |= hmac.compare_digest(candidate.encode(), expected)
    return found


def retry_after(response: httpx.Response, *, now: datetime) -> float | None:
    """The seconds a `Retry-After` header asks to wait (delta-seconds or an HTTP date)."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


def owned_client(
    client: httpx.AsyncClient | None, timeout: float, policy: Policy
) -> tuple[httpx.AsyncClient, bool]:
    """The shared client when given, else a new one that reaches only the addresses
    `policy` permits; and whether the caller must close it."""
    if client is not None:
        return client, False
    return http_client(policy, timeout=timeout), True


def excerpt(response: httpx.Response, limit: int = 200) -> str:
    """The start of a response body, for a failure's reason."""
    return " ".join(response.text[:limit].split())


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The response body when it is a JSON object, else an empty dict."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class WebhookChannel:
    """POSTs `Outgoing.data` as JSON to the URL in `Outgoing.to`, signed; the settings'
    extra headers and `Outgoing.headers` go along (never replacing the signature's)."""

    kind: ChannelKind = "webhook"

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        policy: Policy = PUBLIC_ONLY,
    ) -> None:
        self.settings = settings
        self._clock = clock or SystemClock()
        self._client, self._owns_client = owned_client(client, settings.timeout, policy)

    async def send(self, message: Outgoing) -> Sent:
        """POST the payload; `Sent.provider_id` is the `webhook-id` sent."""
        url = httpx.URL(message.to)
        if url.scheme not in ("http", "https") or not url.host:
            raise PermanentFailure(f"not an http(s) URL: {message.to!r}", bounce="hard")
        try:
            body = json.dumps(message.data, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise PermanentFailure(f"the payload is not JSON: {exc}") from exc
        timestamp = int(self._clock.now().timestamp())
        headers = {
            name: value
            for name, value in {**self.settings.headers, **message.headers}.items()
            if name.lower() not in _SIGNATURE_HEADERS
        }
        headers.update(
            {
                "content-type": "application/json",
                "webhook-id": message.idempotency_key,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign_webhook(
                    self.settings.secret, message.idempotency_key, timestamp, body
                ),
            }
        )
        try:
            response = await self._client.post(
                url, content=body, headers=headers, timeout=self.settings.timeout
            )
        except httpx.TimeoutException as exc:
            raise TemporaryFailure(f"webhook timed out: {type(exc).__name__}") from exc
        except httpx.UnsupportedProtocol as exc:
            raise PermanentFailure(f"unsupported URL: {exc}") from exc
        except RefusedAddress as exc:
            raise PermanentFailure(str(exc)) from exc
        except httpx.TransportError as exc:
            raise TemporaryFailure(f"webhook unreachable: {type(exc).__name__}: {exc}") from exc
        return self._outcome(response, message.idempotency_key)

    def _outcome(self, response: httpx.Response, webhook_id: str) -> Sent:
        status = response.status_code
        if 200 <= status < 300:
            return Sent(provider_id=webhook_id)
        reason = f"webhook answered {status}: {excerpt(response)}".rstrip(": ")
        if status in _RETRYABLE or status >= 500:
            wait = retry_after(response, now=self._clock.now())
            raise TemporaryFailure(reason, retry_after=wait)
        if status == 410:
            raise PermanentFailure(reason, bounce="hard")
        if 300 <= status < 400:
            location = response.headers.get("location", "?")
            raise PermanentFailure(f"webhook redirects to {location} (not followed)")
        raise PermanentFailure(reason)

    async def close(self) -> None:
        """Close the HTTP client if this channel made it."""
        if self._owns_client:
            await self._client.aclose()
