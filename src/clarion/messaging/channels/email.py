"""The email channel: SMTP through a small pool of kept-open aiosmtplib connections.

`mime.build_mime` turns an `Outgoing` into the message a mailbox provider expects: UTF-8,
multipart/alternative with the text part first and the HTML part last (clients show the
last part they understand), a `Message-ID` derived from the delivery's message id (so a
retry carries the same id), and the caller's extra headers such as RFC 8058's
`List-Unsubscribe` / `List-Unsubscribe-Post`. With a DKIM key the message is signed
(relaxed/relaxed) over those headers, as RFC 8058 section 4 requires. Bodies go as
8-bit UTF-8 (`BODY=8BITMIME`, RFC 6152) to a relay that offers it, unless the channel
signs (RFC 6376 5.3 asks signers for 7-bit content): no quoted-printable to encode, and a
smaller message; else in 7 bits.

SMTP replies become the channel contract's outcomes:

- 5xx to RCPT or DATA -> `PermanentFailure(bounce="hard")`, except mailbox-full replies
  (552, enhanced status 5.2.2), which are soft -> `TemporaryFailure`;
- 5xx to MAIL FROM -> `PermanentFailure` without a bounce (the sender is refused, not the
  recipient);
- 4xx, refused connections, time-outs, a connection broken mid-send -> `TemporaryFailure`.

A pooled connection the server closed while idle is replaced before the message goes;
only a connection lost after the recipient was given counts as a failed send.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.errors import MessageError
from email.headerregistry import Address
from typing import Literal

import aiosmtplib

from clarion.messaging.channels.base import (
    BounceKind,
    ChannelKind,
    Outgoing,
    PermanentFailure,
    Sent,
    TemporaryFailure,
)
from clarion.messaging.channels.mime import build_mime, message_id_header

SmtpSecurity = Literal["none", "starttls", "tls"]

_SIGNED_HEADERS = ("from", "to", "subject", "date", "message-id", "mime-version", "content-type")
# A dot-atom local part at a domain of letters, digits and hyphens: read without a parser.
_SIMPLE_ADDRESS = re.compile(
    r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@([A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+)\Z"
)
_MAILBOX_FULL = 552
_AUTH_REQUIRED = 530


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A DKIM signing key: the `d=` domain, the `s=` selector and the private key (PEM)."""

    domain: str
    selector: str
    private_key: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpSettings:
    """How to reach the SMTP relay and whom messages are from.

    `security` is "tls" for implicit TLS (port 465), "starttls" to upgrade a plain
    connection (port 587; refused if the server cannot), "none" for neither. `ca_file`
    trusts an extra certificate bundle (a private relay). `envelope_from` is the
    MAIL FROM address, where bounces go (defaults to `from_address`).
    """

    host: str
    port: int
    from_address: str
    security: SmtpSecurity = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    from_name: str | None = None
    envelope_from: str | None = None
    timeout: float = 30.0
    pool_size: int = 4
    dkim: DkimKey | None = None
    ca_file: str | None = None
    helo_hostname: str | None = None

    def __post_init__(self) -> None:
        if self.pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if "@" not in self.from_address:
            raise ValueError("from_address must be an email address")

    @property
    def from_domain(self) -> str:
        """The domain part of the From address."""
        return self.from_address.rpartition("@")[2]


def recipient_address(to: str) -> Address:
    """`to` as one plain ASCII addr-spec; raises ValueError for anything else (a display
    name, several addresses, a missing domain, line breaks, non-ASCII characters)."""
    if not to.isascii():
        raise ValueError("internationalized addresses (SMTPUTF8) are not supported")
    if (simple := _SIMPLE_ADDRESS.match(to)) is not None:  # most addresses, without parsing
        return Address(username=simple[1], domain=simple[2])
    try:
        address = Address(addr_spec=to)
    except (ValueError, IndexError, MessageError) as exc:
        raise ValueError(f"not an email address: {to!r}") from exc
    if not address.username or not address.domain:
        raise ValueError(f"not an email address: {to!r}")
    return address


def dkim_sign(payload: bytes, key: DkimKey, *, extra_headers: tuple[str, ...] = ()) -> bytes:
    """`payload` (CRLF line ends) with a DKIM-Signature header prepended, covering the
    standard headers and `extra_headers` (e.g. List-Unsubscribe, List-Unsubscribe-Post)."""
    # Imported here: dkimpy brings dnspython (~0.1 s to import), for signing channels only.
    import dkim  # type: ignore[import-untyped]  # dkimpy ships no type hints

    names = list(_SIGNED_HEADERS)
    names += [name.lower() for name in extra_headers if name.lower() not in names]
    signature: bytes = dkim.sign(
        payload,
        key.selector.encode(),
        key.domain.encode(),
        key.private_key.encode(),
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[name.encode() for name in names],
    )
    return signature + payload


class EmailChannel:
    """Sends email through an SMTP relay, keeping up to `pool_size` connections open."""

    kind: ChannelKind = "email"

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(settings.pool_size)
        # What the last connection's EHLO said; assumed until one says otherwise.
        self._relay_takes_8bit = True

    async def send(self, message: Outgoing) -> Sent:
        """Deliver `message` by SMTP; the `Sent` carries the Message-ID."""
        settings = self.settings
        try:
            recipient = recipient_address(message.to).addr_spec
        except ValueError as exc:
            bounce: BounceKind | None = None if not message.to.isascii() else "hard"
            raise PermanentFailure(str(exc), bounce=bounce) from exc
        # 8-bit bodies once the relay has said it takes them, and only unsigned (RFC 6376
        # 5.3: a relay converting 8-bit content on the way would break the signature).
        eight_bit = self._relay_takes_8bit and settings.dkim is None
        payload = self._payload(message, eight_bit=eight_bit)
        sender = settings.envelope_from or settings.from_address
        async with self._slots:
            seven_bit = functools.partial(self._payload, message, eight_bit=False)
            await self._deliver(sender, recipient, _Payload(payload, eight_bit, seven_bit))
        return Sent(provider_id=message_id_header(message.message_id, settings.from_domain))

    def _payload(self, message: Outgoing, *, eight_bit: bool) -> bytes:
        settings = self.settings
        try:
            payload = build_mime(
                message,
                from_address=settings.from_address,
                from_name=settings.from_name,
                eight_bit=eight_bit,
            )
        except ValueError as exc:
            raise PermanentFailure(f"cannot build the email: {exc}") from exc
        if settings.dkim is not None:
            payload = dkim_sign(payload, settings.dkim, extra_headers=tuple(message.headers))
        return payload

    async def close(self) -> None:
        """Say QUIT on every idle connection."""
        idle, self._idle = self._idle, []
        for smtp in idle:
            await _quit(smtp)

    async def _deliver(self, sender: str, recipient: str, payload: _Payload) -> None:
        smtp = self._idle.pop() if self._idle else None
        if smtp is not None and not smtp.is_connected:
            smtp = None
        reused = smtp is not None
        if smtp is None:
            smtp = await self._connect()
        stage = "MAIL"
        try:
            try:
                await smtp.mail(sender, options=payload.mail_options(smtp))
            except (ConnectionError, aiosmtplib.SMTPResponseException) as exc:
                if not (reused and _dropped(exc)):
                    raise
                # The server closed the idle connection; nothing of the message went yet.
                smtp.close()
                smtp = await self._connect()
                await smtp.mail(sender, options=payload.mail_options(smtp))
            stage = "RCPT"
            await smtp.rcpt(recipient)
            stage = "DATA"
            await _data(smtp, payload.data)
        except aiosmtplib.SMTPResponseException as exc:
            await self._release_after_reply(smtp, exc.code)
            raise _reply_failure(exc.code, exc.message, stage=stage) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            smtp.close()
            raise TemporaryFailure(f"SMTP connection lost at {stage}: {_describe(exc)}") from exc
        except BaseException:
            smtp.close()
            raise
        self._idle.append(smtp)

    async def _release_after_reply(self, smtp: aiosmtplib.SMTP, code: int) -> None:
        """Keep a connection after a refusal when the server still talks to us."""
        if code == 421 or not smtp.is_connected:
            smtp.close()
            return
        try:
            await smtp.rset()
        except (aiosmtplib.SMTPException, OSError):
            smtp.close()
            return
        self._idle.append(smtp)

    async def _connect(self) -> aiosmtplib.SMTP:
        settings = self.settings
        smtp = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            username=settings.username,
            password=settings.password,
            local_hostname=settings.helo_hostname,
            timeout=settings.timeout,
            use_tls=settings.security == "tls",
            start_tls=settings.security == "starttls",
            cert_bundle=settings.ca_file,
        )
        try:
            await smtp.connect()
            if smtp.is_ehlo_or_helo_needed:  # no TLS or login made it greet: the extensions
                try:
                    await smtp.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await smtp.helo()  # an old server: no extensions at all
        except aiosmtplib.SMTPAuthenticationError as exc:
            smtp.close()
            raise TemporaryFailure(f"SMTP authentication refused: {exc.code}") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            smtp.close()
            raise TemporaryFailure(
                f"cannot connect to {settings.host}:{settings.port}: {_describe(exc)}"
            ) from exc
        except BaseException:
            smtp.close()  # cancelled: leave no socket behind
            raise
        self._relay_takes_8bit = smtp.supports_extension("8bitmime")
        return smtp


class _Payload:
    """A message's bytes for DATA, fitted to the connection it goes over: built with
    8-bit bodies for a relay that offered 8BITMIME, built again in 7 bits for one that
    does not (a relay's answer can change between connections)."""

    __slots__ = ("_seven_bit", "data", "eight_bit")

    def __init__(self, data: bytes, eight_bit: bool, seven_bit: Callable[[], bytes]) -> None:
        self.data, self.eight_bit, self._seven_bit = data, eight_bit, seven_bit

    def mail_options(self, smtp: aiosmtplib.SMTP) -> list[str]:
        """The MAIL FROM parameters for sending this over `smtp`, rebuilding it in 7 bits
        first if `smtp` does not take 8-bit mail."""
        if not self.eight_bit:
            return []
        if smtp.supports_extension("8bitmime"):
            return ["BODY=8BITMIME"]
        self.data, self.eight_bit = self._seven_bit(), False
        return []


async def _data(smtp: aiosmtplib.SMTP, payload: bytes) -> None:
    """DATA with `payload`, which must be in wire form: every line ends in CRLF and no CR
    or LF stands alone, as `build_mime` and DKIM signing write it. It is only dot-stuffed,
    with `bytes.replace`: `smtp.data` runs two regular expressions over the whole message
    (~160 us for a campaign's 17 KB email, a seventh of a worker's CPU per email), and
    checking the line ends again would cost a fifth of that. Raises what `smtp.data`
    raises."""
    protocol = smtp.protocol
    if protocol is None:  # not connected: `smtp.data` raises as it should
        await smtp.data(payload)
        return
    stuffed = payload.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    response = await smtp.execute_command(b"DATA")
    if response.code != aiosmtplib.SMTPStatus.start_input:
        raise aiosmtplib.SMTPDataError(response.code, response.message)
    try:
        # One sender per connection (the pool's), so no other command can be in flight.
        protocol.write(stuffed + b".\r\n")
        response = await protocol.read_response(timeout=smtp.timeout)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        smtp.close()  # as `smtp.data` does: the session is out of step
        raise
    if response.code != aiosmtplib.SMTPStatus.completed:
        raise aiosmtplib.SMTPDataError(response.code, response.message)


def _reply_failure(code: int, text: str, *, stage: str) -> TemporaryFailure | PermanentFailure:
    reason = f"SMTP {code} to {stage}: {text}"
    if code < 500:
        return TemporaryFailure(reason)
    if code == _AUTH_REQUIRED:
        return TemporaryFailure(reason)  # our credentials are missing, not the recipient
    if stage == "MAIL":
        return PermanentFailure(reason)
    if code == _MAILBOX_FULL or text.lstrip().startswith("5.2.2"):
        return TemporaryFailure(reason)
    return PermanentFailure(reason, bounce="hard")


def _dropped(exc: Exception) -> bool:
    """Whether `exc` says the server had closed the connection (or is closing it)."""
    return not isinstance(exc, aiosmtplib.SMTPResponseException) or exc.code == 421


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    try:
        if smtp.is_connected:
            await smtp.quit()
    except (aiosmtplib.SMTPException, OSError):
        pass
    finally:
        smtp.close()
