"""The SMS channel: Twilio's Messages API, and the status callbacks Twilio sends back.

A send is `POST {base_url}/2010-04-01/Accounts/{sid}/Messages.json`, form-encoded (`To`,
`From` or `MessagingServiceSid`, `Body`, `StatusCallback`), with HTTP basic auth
sid:token and the idempotency key in `I-Twilio-Idempotency-Token`.

Outcomes: 2xx -> `Sent` with Twilio's message SID; 429, 5xx, time-outs, connection errors
and 401 (our credentials, fixable) -> `TemporaryFailure`, honouring `Retry-After`; other
4xx -> `PermanentFailure` naming Twilio's error code: 21211 (invalid number) and 21614
(not a mobile number) are hard bounces, 21610 (the recipient replied STOP) a complaint.

Status callbacks are form posts signed with `X-Twilio-Signature`: check them with
`verify_twilio_signature` before trusting `parse_status_callback`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args
from urllib.parse import urlsplit, urlunsplit

import httpx

from clarion.core.clock import Clock, SystemClock
from clarion.core.outbound import PUBLIC_ONLY, Policy, RefusedAddress
from clarion.messaging.channels.base import (
    BounceKind,
    ChannelKind,
    Outgoing,
    PermanentFailure,
    Sent,
    TemporaryFailure,
)
from clarion.messaging.channels.webhook import excerpt, json_object, owned_client, retry_after

SmsStatusKind = Literal[
    "accepted",
    "scheduled",
    "canceled",
    "queued",
    "sending",
    "sent",
    "failed",
    "delivered",
    "undelivered",
    "receiving",
    "received",
    "read",
]
_STATUSES: frozenset[str] = frozenset(get_args(SmsStatusKind))
_FINAL: frozenset[str] = frozenset({"canceled", "failed", "delivered", "undelivered", "read"})

# Twilio error codes (twilio.com/docs/api/errors) that say something about the number.
_HARD_BOUNCE_CODES = frozenset(
    {
        21211,  # invalid 'To' number
        21614,  # 'To' is not a mobile number
        30005,  # unknown destination handset
        30006,  # landline or unreachable carrier
    }
)
_COMPLAINT_CODES = frozenset({21610})  # the recipient replied STOP
_DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True, slots=True, kw_only=True)
class TwilioSettings:
    """A Twilio account and the sender: exactly one of `from_number` (E.164) and
    `messaging_service_sid`. `status_callback_url` is where Twilio posts delivery updates."""

    account_sid: str
    auth_token: str = field(repr=False)
    from_number: str | None = None
    messaging_service_sid: str | None = None
    status_callback_url: str | None = None
    base_url: str = "https://api.twilio.com"
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if (self.from_number is None) == (self.messaging_service_sid is None):
            raise ValueError("set exactly one of from_number and messaging_service_sid")


@dataclass(frozen=True, slots=True)
class SmsStatus:
    """A status callback: which message, where it stands, and Twilio's error code if any."""

    message_sid: str
    status: SmsStatusKind
    error_code: int | None = None
    to: str | None = None

    @property
    def final(self) -> bool:
        """Whether no further callback will change this message's status."""
        return self.status in _FINAL

    @property
    def bounce(self) -> BounceKind | None:
        """What the failure says about the number: a hard bounce, a complaint, or nothing."""
        if self.status not in ("failed", "undelivered") or self.error_code is None:
            return None
        return sms_bounce(self.error_code)


def sms_bounce(error_code: int) -> BounceKind | None:
    """The bounce a Twilio error code stands for, if it says the number is bad or opted out."""
    if error_code in _HARD_BOUNCE_CODES:
        return "hard"
    if error_code in _COMPLAINT_CODES:
        return "complaint"
    return None


def parse_status_callback(params: Mapping[str, str]) -> SmsStatus:
    """The status in a callback's form fields; raises ValueError when they are not one."""
    sid = params.get("MessageSid") or params.get("SmsSid")
    status = params.get("MessageStatus") or params.get("SmsStatus")
    if not sid:
        raise ValueError("a status callback names its MessageSid")
    if status not in _STATUSES:
        raise ValueError(f"unknown message status {status!r}")
    code = params.get("ErrorCode") or None
    if code is not None and not code.isdigit():
        raise ValueError(f"ErrorCode is not a number: {code!r}")
    return SmsStatus(
        message_sid=sid,
        status=status,  # type: ignore[arg-type]  # checked against the Literal above
        error_code=int(code) if code is not None else None,
        to=params.get("To"),
    )


def twilio_signature(
    url: str, params: Mapping[str, str] | Iterable[tuple[str, str]], auth_token: str
) -> str:
    """The X-Twilio-Signature Twilio computes for a POST of `params` to `url`: base64
    HMAC-SHA1 of the URL followed by each distinct name+value pair, sorted."""
    pairs = params.items() if isinstance(params, Mapping) else params
    signed = url + "".join(name + value for name, value in sorted(set(pairs)))
    digest = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def verify_twilio_signature(
    url: str,
    params: Mapping[str, str] | Iterable[tuple[str, str]],
    signature: str,
    auth_token: str,
) -> bool:
    """Whether `signature` is Twilio's for this URL and these POST params. Compared in
    constant time; the URL is tried as given, then with or without its default port
    (Twilio signs the URL as it was configured)."""
    pairs = list(params.items() if isinstance(params, Mapping) else params)
    given = signature.encode()
    found = False
    for candidate in _url_variants(url):
        found |= hmac.compare_digest(twilio_signature(candidate, pairs, auth_token).encode(), given)
    return found


def _url_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname or ""
    if default is None or not host or parts.port not in (None, default):
        return [url]
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    with_port = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}"))
    without_port = urlunsplit(parts._replace(netloc=f"{prefix}{host}"))
    return [url, with_port if parts.port is None else without_port]


class SmsChannel:
    """Sends SMS through Twilio's Messages API."""

    kind: ChannelKind = "sms"

    def __init__(
        self,
        settings: TwilioSettings,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        policy: Policy = PUBLIC_ONLY,
    ) -> None:
        self.settings = settings
        self._clock = clock or SystemClock()
        self._client, self._owns_client = owned_client(client, settings.timeout, policy)
        base = settings.base_url.rstrip("/")
        self._url = f"{base}/2010-04-01/Accounts/{settings.account_sid}/Messages.json"

    async def send(self, message: Outgoing) -> Sent:
        """Ask Twilio to send `message.text` to `message.to`; `Sent` carries the SID."""
        if not message.text:
            raise PermanentFailure("an SMS needs a text body")
        settings = self.settings
        form = {"To": message.to, "Body": message.text}
        if settings.from_number is not None:
            form["From"] = settings.from_number
        if settings.messaging_service_sid is not None:
            form["MessagingServiceSid"] = settings.messaging_service_sid
        if settings.status_callback_url is not None:
            form["StatusCallback"] = settings.status_callback_url
        try:
            response = await self._client.post(
                self._url,
                data=form,
                auth=(settings.account_sid, settings.auth_token),
                headers={"I-Twilio-Idempotency-Token": message.idempotency_key},
                timeout=settings.timeout,
            )
        except httpx.TimeoutException as exc:
            raise TemporaryFailure(f"Twilio timed out: {type(exc).__name__}") from exc
        except RefusedAddress as exc:
            raise PermanentFailure(str(exc)) from exc
        except httpx.TransportError as exc:
            raise TemporaryFailure(f"Twilio unreachable: {type(exc).__name__}: {exc}") from exc
        return self._outcome(response)

    def _outcome(self, response: httpx.Response) -> Sent:
        status = response.status_code
        body = json_object(response)
        if 200 <= status < 300:
            sid = body.get("sid")
            return Sent(provider_id=sid if isinstance(sid, str) else None)
        code = body.get("code")
        detail = body.get("message") or excerpt(response)
        reason = f"Twilio {status}, error {code}: {detail}"
        if status in (401, 429) or status >= 500:
            wait = retry_after(response, now=self._clock.now())
            raise TemporaryFailure(reason, retry_after=wait)
        bounce = sms_bounce(code) if isinstance(code, int) else None
        raise PermanentFailure(reason, bounce=bounce)

    async def close(self) -> None:
        """Close the HTTP client if this channel made it."""
        if self._owns_client:
            await self._client.aclose()
