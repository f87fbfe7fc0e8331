"""The one interface every channel speaks: delivery turns a rendered message into an
`Outgoing`, hands it to the channel's `send`, and records what came back.

A channel never decides whether to send (consent, suppression, caps and quiet hours are
decided before); it only delivers, and says how it went:

- `Sent` when the provider accepted the message (its id, when it gave one);
- `TemporaryFailure` for what may work later (time-outs, 4xx SMTP replies, HTTP 429/5xx):
  delivery retries with backoff, honouring `retry_after` when the provider gave one;
- `PermanentFailure` for what never will (a 5xx SMTP reply to the recipient, HTTP 4xx):
  delivery marks the message failed, or bounced when `bounce` says so, and retries nothing.

Each message carries its idempotency key; channels pass it to providers that accept one
(an `Idempotency-Key` header, the webhook id), so a retry after a crash is not a second
message where the provider can tell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

ChannelKind = Literal["email", "sms", "push", "inbox", "webhook"]
BounceKind = Literal["hard", "soft", "complaint"]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A rendered message for one recipient, ready to hand to a provider.

    `to` is the channel's address: an email address, an E.164 phone number, a device
    registration token, an inbox profile id or a webhook URL. `subject`, `html` and `text`
    are email's parts (`text` is also the SMS body and the push body; `subject` the push
    title). `data` is structured content: the push data map or the webhook payload.
    `headers` are extra headers (email: `List-Unsubscribe`...).
    """

    message_id: str
    idempotency_key: str
    to: str
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Sent:
    """The provider took the message; `provider_id` is its id for it, for callbacks."""

    provider_id: str | None = None


class DeliveryError(Exception):
    """A send that did not go through."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TemporaryFailure(DeliveryError):
    """Worth retrying later; `retry_after` seconds when the provider said how long."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentFailure(DeliveryError):
    """Never worth retrying; `bounce` when the address itself is bad (a hard bounce) or
    the recipient complained, so the address goes on the suppression list."""

    def __init__(self, reason: str, *, bounce: BounceKind | None = None) -> None:
        super().__init__(reason)
        self.bounce = bounce


class Channel(Protocol):
    """A way to reach a customer. One instance per configured channel, shared by the
    worker's concurrent deliveries (so it may pool connections); `close` releases them."""

    kind: ChannelKind

    async def send(self, message: Outgoing) -> Sent:
        """Deliver `message`, or raise `TemporaryFailure` / `PermanentFailure`."""
        ...

    async def close(self) -> None:
        """Release connections; the channel is not used afterwards."""
        ...
