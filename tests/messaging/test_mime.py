"""The email's wire bytes: what the standard library's parser and a DKIM verifier read back."""

from __future__ import annotations

import base64
import email
import email.policy
import re
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clarion.messaging.channels.base import Outgoing
from clarion.messaging.channels.mime import build_mime

FROM = "news@news.example.com"


def outgoing(**fields: Any) -> Outgoing:
    values: dict[str, Any] = {
        "message_id": "msg-1",
        "idempotency_key": "k-1",
        "to": "ada@example.org",
        "subject": "Hello",
        "text": "Hi\n",
        "html": "<p>Hi</p>\n",
    }
    return Outgoing(**(values | fields))


def parsed(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def lines(raw: bytes) -> list[bytes]:
    assert raw.endswith(b"\r\n")
    assert b"\n" not in raw.replace(b"\r\n", b""), "every line ends in CRLF"
    return raw[:-2].split(b"\r\n")


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        ("Plain ASCII, short lines.\n", "7bit"),
        ("A very long line " * 80 + "\n", "quoted-printable"),
        ("Schöne Grüße aus der Stadt: unsere Angebote = für Sie.\n" * 3, "quoted-printable"),
        ("日本語のメールです。" * 40, "base64"),
        ("trailing spaces   \nand a tab\t\nand =3D\n", "7bit"),
    ],
)
def test_each_body_round_trips_through_its_transfer_encoding(body: str, encoding: str) -> None:
    raw = build_mime(outgoing(text=body, html=f"<p>{body}</p>"), from_address=FROM)
    assert raw.isascii()
    assert all(len(line) <= 998 for line in lines(raw))
    if encoding != "7bit":
        assert all(len(line) <= 78 for line in lines(raw))
    text, html = parsed(raw).iter_parts()
    assert text["Content-Transfer-Encoding"] == encoding
    expected = body if body.endswith("\n") else body + "\n"
    assert text.get_content() == expected.replace("\n", "\r\n")
    assert html.get_content() == f"<p>{body}</p>\n".replace("\n", "\r\n")


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        ("Plain ASCII, short lines.\n", "7bit"),
        ("Schöne Grüße aus der Stadt: unsere Angebote = für Sie.\n" * 3, "8bit"),
        ("日本語のメールです。\n" * 40, "8bit"),
        ("日本語のメールです。" * 40, "base64"),  # one line of 1,200 bytes, mostly not ASCII
        # A line past 998 bytes.
        ("Grüße aus der Stadt und dem Land " * 40 + "\n", "quoted-printable"),
        ("Viele Grüße aus der Stadt\x00\n", "quoted-printable"),  # no NUL in 8bit (RFC 2045 2.8)
    ],
)
def test_an_eight_bit_relay_gets_utf_8_as_it_is(body: str, encoding: str) -> None:
    raw = build_mime(outgoing(text=body, html=f"<p>{body}</p>"), from_address=FROM, eight_bit=True)
    assert all(len(line) <= 998 for line in lines(raw))
    text, html = parsed(raw).iter_parts()
    assert text["Content-Transfer-Encoding"] == html["Content-Transfer-Encoding"] == encoding
    expected = body if body.endswith("\n") else body + "\n"
    if encoding == "8bit":
        assert expected.replace("\n", "\r\n").encode() in raw
    assert text.get_content() == expected.replace("\n", "\r\n")
    assert html.get_content() == f"<p>{body}</p>\n".replace("\n", "\r\n")


_ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)


@settings(max_examples=300, deadline=None)
@given(text=_ANY_TEXT, html=_ANY_TEXT, subject=_ANY_TEXT, eight_bit=st.booleans())
def test_every_line_ends_in_crlf_and_no_cr_or_lf_stands_alone(
    text: str, html: str, subject: str, eight_bit: bool
) -> None:
    # The SMTP DATA writer dot-stuffs without looking for bare line ends: a bare LF
    # followed by a dot could end the message early at some servers (SMTP smuggling).
    subject = subject.replace("\r", " ").replace("\n", " ")
    raw = build_mime(
        outgoing(text=text, html=html or None, subject=subject),
        from_address=FROM,
        eight_bit=eight_bit,
    )
    assert raw.endswith(b"\r\n")
    assert b"\r" not in raw.replace(b"\r\n", b"") and b"\n" not in raw.replace(b"\r\n", b"")
    assert eight_bit or raw.isascii()
    parts = list(parsed(raw).iter_parts()) if html else [parsed(raw)]
    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    expected = expected if expected.endswith("\n") else expected + "\n"
    assert parts[0].get_content() == expected.replace("\n", "\r\n")


def test_line_ends_of_any_kind_become_crlf() -> None:
    raw = build_mime(outgoing(text="one\r\ntwo\rthree\nfour", html=None), from_address=FROM)
    assert parsed(raw).get_content() == "one\r\ntwo\r\nthree\r\nfour\r\n"


def test_headers_are_ascii_encoded_words_where_needed_and_folded() -> None:
    raw = build_mime(
        outgoing(
            subject="Grüße aus Köln 🎉",
            headers={
                "List-Unsubscribe": "<https://clarion.example/u/" + "t" * 120 + ">, "
                "<mailto:unsubscribe@news.example.com>",
                "X-Campaign": "spring sale " * 12,
            },
        ),
        from_address=FROM,
        from_name="Clarion Shöp",
    )
    head = raw.split(b"\r\n\r\n")[0]
    assert head.isascii()
    message = parsed(raw)
    assert message["Subject"] == "Grüße aus Köln 🎉"
    assert message["From"].addresses[0].display_name == "Clarion Shöp"
    assert b"\r\n <mailto:unsubscribe@news.example.com>" in head  # folded at the space
    assert message["List-Unsubscribe"].startswith("<https://clarion.example/u/ttt")
    assert message["X-Campaign"] == "spring sale " * 12
    assert all(len(line) <= 78 for line in head.split(b"\r\n") if b"/u/ttt" not in line)


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\u2028\u2029"),
        min_size=1,
        max_size=200,
    ).filter(lambda subject: not subject.isascii())
)
def test_any_subject_reads_back_whole_from_lines_of_at_most_78(subject: str) -> None:
    raw = build_mime(outgoing(subject=subject), from_address=FROM)
    head = raw.split(b"\r\n\r\n")[0]
    assert head.isascii()
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))
    assert parsed(raw)["Subject"] == subject
    # RFC 2047 section 5: each encoded word holds whole characters and at most 75 bytes.
    for word in re.findall(rb"=\?utf-8\?b\?[^?]*\?=", head):
        assert len(word) <= 75
        base64.b64decode(word[10:-2]).decode()


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"subject": "Hi\r\nBcc: eve@example.org"}, "single line"),
        ({"headers": {"X-A": "b\nc"}}, "single line"),
        ({"headers": {"Bad Name": "x"}}, "not a header name"),
        ({"headers": {"Content-Type": "text/plain"}}, "written by the email channel"),
        ({"headers": {"X-Long": "x" * 1_000}}, "longer than 998"),
        ({"text": None, "html": None}, "needs a text or an HTML part"),
    ],
)
def test_malformed_messages_are_refused(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        build_mime(outgoing(**fields), from_address=FROM)


def test_a_seven_bit_body_holding_the_boundary_is_refused() -> None:
    first = build_mime(outgoing(), from_address=FROM)
    boundary = first.split(b'boundary="')[1].split(b'"')[0].decode()
    with pytest.raises(ValueError, match="boundary"):
        build_mime(outgoing(text=f"--{boundary}\n"), from_address=FROM)


def test_the_same_message_makes_the_same_bytes() -> None:
    assert (
        build_mime(outgoing(), from_address=FROM, date=None).split(b"Date:")[0]
        == (build_mime(outgoing(), from_address=FROM).split(b"Date:")[0])
    )
