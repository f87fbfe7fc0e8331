"""The email channel against a real SMTP server (the sink subprocess)."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from clarion.messaging.channels.base import Outgoing, PermanentFailure, TemporaryFailure
from clarion.messaging.channels.email import DkimKey, EmailChannel, SmtpSettings
from clarion.messaging.channels.mime import build_mime, message_id_header
from tests.messaging.conftest import SmtpSink, TlsFiles
from tests.support import free_port

UNSUBSCRIBE = {
    "List-Unsubscribe": "<https://clarion.example/u/abc123>, <mailto:unsub@news.example.com>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
}


def outgoing(to: str = "ada@example.org", **fields: Any) -> Outgoing:
    """A message with both parts, unless `fields` say otherwise."""
    values: dict[str, Any] = {
        "message_id": "msg-0001",
        "idempotency_key": "idem-0001",
        "to": to,
        "subject": "Hello",
        "text": "Plain body\n",
        "html": "<p>HTML body</p>\n",
    }
    values.update(fields)
    return Outgoing(**values)


def settings_for(sink: SmtpSink, **overrides: Any) -> SmtpSettings:
    """Plain SMTP to the sink from news@news.example.com."""
    base = SmtpSettings(
        host="127.0.0.1",
        port=sink.port,
        security="none",
        from_address="news@news.example.com",
        from_name="Clarion Shop",
        timeout=5,
        helo_hostname="localhost",
    )
    return replace(base, **overrides)


@pytest.fixture
async def channels() -> AsyncIterator[Callable[[SmtpSettings], EmailChannel]]:
    """Makes channels and closes them all after the test."""
    made: list[EmailChannel] = []

    def make(settings: SmtpSettings) -> EmailChannel:
        channel = EmailChannel(settings)
        made.append(channel)
        return channel

    yield make
    for channel in made:
        await channel.close()


@pytest.fixture(scope="module")
def dkim_key() -> tuple[DkimKey, bytes]:
    """A DKIM key for news.example.com (selector s1) and its DNS TXT record."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    return DkimKey(domain="news.example.com", selector="s1", private_key=pem), record


def dns_for(record: bytes) -> Callable[..., bytes | None]:
    """A DNS lookup that knows only s1._domainkey.news.example.com."""

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"s1._domainkey.news.example.com." else None

    return lookup


async def test_text_and_html_go_as_multipart_alternative_text_first(
    smtp_sink: SmtpSink, channels: Callable[[SmtpSettings], EmailChannel]
) -> None:
    channel = channels(settings_for(smtp_sink))
    subject = "Grüße aus Köln 🎉"
    sent = await channel.send(
        outgoing(subject=subject, text="Schöne Grüße\n", html="<p>Schöne Grüße</p>\n")
    )

    [mail] = smtp_sink.messages()
    assert mail.mail_from == "news@news.example.com"
    assert mail.rcpt_tos == ["ada@example.org"]
    head = mail.raw.split(b"\r\n\r\n")[0]
    assert head.isascii()  # encoded words; the bodies go 8-bit (the sink offers 8BITMIME)
    message = mail.message
    assert message["Subject"] == subject
    assert message["From"].addresses[0].display_name == "Clarion Shop"
    assert message["From"].addresses[0].addr_spec == "news@news.example.com"
    assert message["To"] == "ada@example.org"
    assert parsedate_to_datetime(message["Date"]).tzinfo is not None
    assert message["Message-ID"] == "<msg-0001@news.example.com>" == sent.provider_id
    assert message["MIME-Version"] == "1.0"
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert all(part.get_content_charset() == "utf-8" for part in parts)
    # On the wire lines end in CRLF.
    assert parts[0].get_content() == "Schöne Grüße\r\n"
    assert parts[1].get_content() == "<p>Schöne Grüße</p>\r\n"


async def test_lines_starting_with_a_dot_arrive_whole(
    smtp_sink: SmtpSink, channels: Callable[[SmtpSettings], EmailChannel]
) -> None:
    # A lone "." ends DATA: unless every line starting with a dot is stuffed, the message
    # arrives cut and the rest is read as commands.
    text = ".first\n.\n..two\nmiddle .x\n.\n"
    channel = channels(settings_for(smtp_sink))
    await channel.send(outgoing(text=text, html=None))
    await channel.send(outgoing(message_id="msg-0002", text="after\n", html=None))

    first, second = smtp_sink.messages()
    assert first.message.get_content() == text.replace("\n", "\r\n")
    assert second.message.get_content() == "after\r\n"


GREETING = "Schöne Grüße, Zoë: 20 % off = €12\n"


async def test_bodies_go_8bit_to_a_relay_that_offers_8bitmime(
    smtp_sink: SmtpSink, channels: Callable[[SmtpSettings], EmailChannel]
) -> None:
    channel = channels(settings_for(smtp_sink))
    await channel.send(outgoing(text=GREETING, html=f"<p>{GREETING}</p>"))
    await channel.send(outgoing(message_id="msg-0002", text="ASCII only\n"))

    first, second = smtp_sink.messages()
    assert first.mail_options == ["BODY=8BITMIME"]
    text, html = first.message.iter_parts()
    assert text["Content-Transfer-Encoding"] == html["Content-Transfer-Encoding"] == "8bit"
    assert GREETING.replace("\n", "\r\n").encode() in first.raw  # the UTF-8 as it is
    assert text.get_content() == GREETING.replace("\n", "\r\n")
    assert html.get_content() == f"<p>{GREETING}</p>\n".replace("\n", "\r\n")
    assert second.mail_options == ["BODY=8BITMIME"]  # allowed, though all of it is ASCII
    assert {part["Content-Transfer-Encoding"] for part in second.message.iter_parts()} == {"7bit"}


async def test_bodies_go_in_7_bits_to_a_relay_without_8bitmime(
    seven_bit_smtp_sink: SmtpSink, channels: Callable[[SmtpSettings], EmailChannel]
) -> None:
    channel = channels(settings_for(seven_bit_smtp_sink))
    for number in range(3):  # the first built 8-bit (assumed), built again in 7 bits
        await channel.send(outgoing(message_id=f"msg-{number}", text=GREETING, html=None))

    received = seven_bit_smtp_sink.messages()
    assert len(received) == 3
    for mail in received:
        assert mail.raw.isascii()
        assert mail.mail_options == []
        assert mail.message["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
        assert mail.message.get_content() == GREETING.replace("\n", "\r\n")


async def test_a_signing_channel_sends_7_bits_even_to_a_relay_taking_8(
    smtp_sink: SmtpSink,
    channels: Callable[[SmtpSettings], EmailChannel],
    dkim_key: tuple[DkimKey, bytes],
) -> None:
    # RFC 6376 5.3: a relay converting 8-bit content on the way would break the signature.
    key, record = dkim_key
    channel = channels(settings_for(smtp_sink, dkim=key))
    await channel.send(outgoing(text=GREETING, html=f"<p>{GREETING}</p>"))

    [mail] = smtp_sink.messages()
    assert mail.raw.isascii() and mail.mail_options == []
    assert dkim.verify(mail.raw, dnsfunc=dns_for(record))
    assert mail.message.get_body(("plain",)).get_content() == GREETING.replace("\n", "\r\n")


@pytest.mark.parametrize(
    ("fields", "content_type", "body"),
    [
        ({"html": None}, "text/plain", "Plain body\n"),
        ({"text": None}, "text/html", "<p>HTML body</p>\n"),
    ],
)
def test_one_part_is_sent_alone(fields: dict[str, Any], content_type: str, body: str) -> None:
    raw = build_mime(outgoing(**fields), from_address="news@news.example.com")
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert not message.is_multipart()
    assert message.get_content_type() == content_type
    assert message.get_content() == body.replace("\n", "\r\n")


def test_message_id_is_stable_and_always_valid() -> None:
    assert message_id_header("msg-0001", "news.example.com") == "<msg-0001@news.example.com>"
    odd = message_id_header("a b<c>", "news.example.com")
    assert odd == message_id_header("a b<c>", "news.example.com")
    assert odd.startswith("<") and odd.endswith("@news.example.com>")
    assert " " not in odd and odd.count("<") == 1


@pytest.mark.parametrize(
    ("to", "bounce"),
    [
        ("Ada <ada@example.org>", "hard"),
        ("ada@example.org, eve@example.org", "hard"),
        ("ada@example.org\r\nBcc: eve@example.org", "hard"),
        ("no-domain@", "hard"),
        ("ada", "hard"),
        ("ädä@example.org", None),
    ],
)
async def test_a_malformed_recipient_fails_permanently_and_sends_nothing(
    smtp_sink: SmtpSink,
    channels: Callable[[SmtpSettings], EmailChannel],
    to: str,
    bounce: str | None,
) -> None:
    channel = channels(settings_for(smtp_sink))
    with pytest.raises(PermanentFailure) as failure:
        await channel.send(outgoing(to=to))
    assert failure.value.bounce == bounce
    assert smtp_sink.messages() == []


@pytest.mark.parametrize(
    "fields",
    [
        {"text": None, "html": None},
        {"headers": {"From": "someone@else.example"}},
        {"headers": {"X-Campaign": "spring\r\nBcc: victim@example.org"}},
    ],
)
async def test_an_unbuildable_message_fails_permanently_without_a_bounce(
    smtp_sink: SmtpSink,
    channels: Callable[[SmtpSettings], EmailChannel],
    fields: dict[str, Any],
) -> None:
    channel = channels(settings_for(smtp_sink))
    with pytest.raises(PermanentFailure) as failure:
        await channel.send(outgoing(**fields))
    assert failure.value.bounce is None
    assert smtp_sink.messages() == []


async def test_rfc8058_headers_are_sent_and_covered_by_a_valid_dkim_signature(
    smtp_sink: SmtpSink,
    channels: Callable[[SmtpSettings], EmailChannel],
    dkim_key: tuple[DkimKey, bytes],
) -> None:
    key, record = dkim_key
    channel = channels(settings_for(smtp_sink, dkim=key))
    await channel.send(outgoing(headers=UNSUBSCRIBE))

    [mail] = smtp_sink.messages()
    message = mail.message
    # Folded at the comma, never as encoded words (RFC 2369 headers cannot hold them).
    assert message["List-Unsubscribe"].strip() == UNSUBSCRIBE["List-Unsubscribe"]
    assert b"=?utf-8?" not in mail.raw.split(b"\r\n\r\n")[0]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    signature = dkim.util.parse_tag_value(
        message["DKIM-Signature"].encode().replace(b"\r\n", b"").replace(b"\n", b"")
    )
    assert signature[b"d"] == b"news.example.com" and signature[b"s"] == b"s1"
    signed = {name.strip().lower() for name in signature[b"h"].split(b":")}
    required = {b"from", b"to", b"subject", b"date", b"message-id"}
    assert required | {b"list-unsubscribe", b"list-unsubscribe-post"} <= signed
    assert dkim.verify(mail.raw, dnsfunc=dns_for(record))

    tampered = mail.raw.replace(b"List-Unsubscribe=One-Click", b"List-Unsubscribe=Two-Click")
    assert tampered != mail.raw
    assert not dkim.verify(tampered, dnsfunc=dns_for(record))


async def test_starttls_and_implicit_tls_encrypt_and_plain_does_not(
    smtp_sink: SmtpSink, tls_files: TlsFiles, channels: Callable[[SmtpSettings], EmailChannel]
) -> None:
    ca = str(tls_files.cert)
    await channels(settings_for(smtp_sink)).send(outgoing())
    await channels(settings_for(smtp_sink, security="starttls", ca_file=ca)).send(outgoing())
    tls = settings_for(smtp_sink, security="tls", port=smtp_sink.tls_port, ca_file=ca)
    await channels(tls).send(outgoing())

    assert [mail.tls for mail in smtp_sink.messages()] == [False, True, True]


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_an_untrusted_certificate_is_a_temporary_failure(
    smtp_sink: SmtpSink, channels: Callable[[SmtpSettings], EmailChannel], security: str
) -> None:
    port = smtp_sink.tls_port if security == "tls" else smtp_sink.port
    channel = channels(settings_for(smtp_sink, security=security, port=port))
    with pytest.raises(TemporaryFailure):
        await channel.send(outgoing())
    assert smtp_sink.messages() == []


async def test_auth_logs_in_and_bad_or_missing_credentials_are_temporary(
    smtp_sink_with_auth: SmtpSink,
    tls_files: TlsFiles,
    channels: Callable[[SmtpSettings], EmailChannel],
) -> None:
    sink = smtp_sink_with_auth
    base = settings_for(sink, security="starttls", ca_file=str(tls_files.cert))
    await channels(replace(base, username="clarion", password="s3cret")).send(outgoing())
    with pytest.raises(TemporaryFailure):
        await channels(replace(base, username="clarion", password="wrong")).send(outgoing())
    with pytest.raises(TemporaryFailure):
        await channels(base).send(outgoing())

    [mail] = sink.messages()
    assert mail.auth == "clarion" and mail.tls


def test_settings_repr_hides_the_password_and_the_dkim_key(
    dkim_key: tuple[DkimKey, bytes],
) -> None:
    key, _ = dkim_key
    settings = SmtpSettings(
        host="smtp.example.com",
        port=587,
        from_address="news@news.example.com",
        username="clarion",
        password="hunter2-secret",
        dkim=key,
    )
    text = repr(settings)
    assert "hunter2-secret" not in text and "PRIVATE KEY" not in text
    assert "smtp.example.com" in text and "s1" in text


async def test_sends_reuse_one_smtp_session(
    smtp_sink: SmtpSink, channels: Callable[[SmtpSettings], EmailChannel]
) -> None:
    channel = channels(settings_for(smtp_sink))
    for number in range(5):
        await channel.send(outgoing(to=f"user{number}@example.org", message_id=f"m{number}"))

    assert smtp_sink.connections() == 1
    assert len(smtp_sink.messages()) == 5


async def test_concurrent_sends_share_at_most_pool_size_connections(
    smtp_sink: SmtpSink, channels: Callable[[SmtpSettings], EmailChannel]
) -> None:
    channel = channels(settings_for(smtp_sink, pool_size=3))
    sent = await asyncio.gather(
        *(
            channel.send(outgoing(to=f"user{number}@example.org", message_id=f"m{number}"))
            for number in range(12)
        )
    )

    assert len({result.provider_id for result in sent}) == 12
    mails = smtp_sink.messages()
    assert sorted(mail.rcpt_tos[0] for mail in mails) == sorted(
        f"user{number}@example.org" for number in range(12)
    )
    assert smtp_sink.connections() == 3
    assert {mail.connection for mail in mails} == {1, 2, 3}


@pytest.mark.parametrize(
    ("to", "failure", "code"),
    [
        ("bounce-me@example.org", PermanentFailure, "550"),
        ("busy@example.org", TemporaryFailure, "451"),
        ("full@example.org", TemporaryFailure, "552"),
    ],
)
async def test_recipient_refusals_are_classified_and_the_connection_kept(
    smtp_sink: SmtpSink,
    channels: Callable[[SmtpSettings], EmailChannel],
    to: str,
    failure: type[Exception],
    code: str,
) -> None:
    channel = channels(settings_for(smtp_sink))
    with pytest.raises(failure) as raised:
        await channel.send(outgoing(to=to))
    assert code in str(raised.value)
    if isinstance(raised.value, PermanentFailure):
        assert raised.value.bounce == "hard"
    await channel.send(outgoing())

    assert [mail.rcpt_tos for mail in smtp_sink.messages()] == [["ada@example.org"]]
    assert smtp_sink.connections() == 1


async def test_a_dropped_idle_connection_is_replaced_transparently(
    smtp_sink: SmtpSink, channels: Callable[[SmtpSettings], EmailChannel]
) -> None:
    channel = channels(settings_for(smtp_sink))
    await channel.send(outgoing(to="hangup@example.org"))
    await channel.send(outgoing())  # MAIL on the pooled connection: 421, closed

    assert [mail.connection for mail in smtp_sink.messages()] == [1, 2]


async def test_a_connection_broken_mid_send_is_a_temporary_failure(
    smtp_sink: SmtpSink, channels: Callable[[SmtpSettings], EmailChannel]
) -> None:
    channel = channels(settings_for(smtp_sink))
    with pytest.raises(TemporaryFailure):
        await channel.send(outgoing(to="drop@example.org"))
    await channel.send(outgoing())

    assert [mail.rcpt_tos for mail in smtp_sink.messages()] == [["ada@example.org"]]


async def test_a_server_that_is_down_is_a_temporary_failure(
    channels: Callable[[SmtpSettings], EmailChannel],
) -> None:
    settings = SmtpSettings(
        host="127.0.0.1",
        port=free_port(),
        security="none",
        from_address="news@news.example.com",
        timeout=2,
        helo_hostname="localhost",
    )
    with pytest.raises(TemporaryFailure):
        await channels(settings).send(outgoing())


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


async def test_a_server_that_never_answers_times_out_as_temporary(
    silent_server: int, channels: Callable[[SmtpSettings], EmailChannel]
) -> None:
    settings = SmtpSettings(
        host="127.0.0.1",
        port=silent_server,
        security="none",
        from_address="news@news.example.com",
        timeout=0.5,
        helo_hostname="localhost",
    )
    with pytest.raises(TemporaryFailure):
        await channels(settings).send(outgoing())


async def test_a_server_killed_under_a_pooled_connection_is_a_temporary_failure(
    smtp_sink: SmtpSink, channels: Callable[[SmtpSettings], EmailChannel]
) -> None:
    channel = channels(settings_for(smtp_sink))
    await channel.send(outgoing())
    smtp_sink.stop()
    with pytest.raises(TemporaryFailure):
        await channel.send(outgoing())
