"""Bounce and complaint parsing, on samples written after RFC 3464 and RFC 5965's examples."""

from __future__ import annotations

import pytest

from clarion.messaging.channels.base import Outgoing
from clarion.messaging.channels.bounces import (
    BounceReport,
    ComplaintReport,
    RecipientFailure,
    parse_report,
)
from clarion.messaging.channels.mime import build_mime, message_id_header


def crlf(text: str) -> bytes:
    """`text` with CRLF line ends, as mail arrives."""
    return text.replace("\n", "\r\n").encode()


ORIGINAL = """\
From: Clarion Shop <news@news.example.com>
To: ada@example.org
Subject: Spring sale
Date: Thu, 30 Apr 2026 09:00:00 +0000
Message-ID: <msg-0001@news.example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset="utf-8"

Hello!
"""

# RFC 3464 appendix, first example's shape: a permanent failure, the whole message returned.
HARD_BOUNCE = crlf(
    f"""\
From: Mail Delivery System <MAILER-DAEMON@mx.example.org>
To: bounces@news.example.com
Subject: Undelivered Mail Returned to Sender
Date: Thu, 30 Apr 2026 09:00:05 +0000
Message-ID: <20260430090005.ABC12@mx.example.org>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
    boundary="RAA14128.773615765/mx.example.org"

--RAA14128.773615765/mx.example.org
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.org.
I'm sorry to have to inform you that your message could not be delivered.

--RAA14128.773615765/mx.example.org
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org
X-Postfix-Queue-ID: ABC12
Arrival-Date: Thu, 30 Apr 2026 09:00:04 +0000

Final-Recipient: rfc822; ada@example.org
Original-Recipient: rfc822;ada@example.org
Action: failed
Status: 5.1.1
Remote-MTA: dns; inbound.example.org
Diagnostic-Code: smtp; 550 5.1.1 <ada@example.org>: Recipient address rejected:
    User unknown in virtual mailbox table

--RAA14128.773615765/mx.example.org
Content-Type: message/rfc822

{ORIGINAL}
--RAA14128.773615765/mx.example.org--
"""
)

# A delay warning returning only the headers, and a second recipient already delivered.
DELAYED = crlf(
    """\
From: postmaster@relay.example.net
To: bounces@news.example.com
Subject: Delivery delayed
MIME-Version: 1.0
Content-Type: multipart/report; report-type="delivery-status"; boundary="b1"

--b1
Content-Type: text/plain

Delivery to the following recipients has been delayed.

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns;relay.example.net

Final-Recipient: RFC822; grace@example.net
Action: delayed
Status: 4.4.1
Diagnostic-Code: smtp; 421 4.4.1 Connection timed out
Will-Retry-Until: Fri, 1 May 2026 09:00:00 +0000

Final-Recipient: rfc822; linus@example.net
Action: delivered
Status: 2.0.0

--b1
Content-Type: text/rfc822-headers

From: news@news.example.com
To: grace@example.net, linus@example.net
Subject: Spring sale
Message-ID:
 <msg-0002@news.example.com>

--b1--
"""
)

MAILBOX_FULL = HARD_BOUNCE.replace(b"Status: 5.1.1", b"Status: 5.2.2").replace(
    b"550 5.1.1", b"552 5.2.2"
)
DELIVERED_ONLY = DELAYED.replace(b"Action: delayed", b"Action: relayed")

# RFC 5965 appendix B.1's shape: an abuse report with the original message attached.
COMPLAINT = crlf(
    f"""\
From: <abusedesk@mailbox.example>
Date: Thu, 30 Apr 2026 10:00:00 +0000
Subject: FW: Spring sale
To: <fbl@news.example.com>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
     boundary="part1_13d.2e68ed54_boundary"

--part1_13d.2e68ed54_boundary
Content-Type: text/plain; charset="US-ASCII"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP
192.0.2.1 on Thu, 30 Apr 2026 09:00:04 +0000.

--part1_13d.2e68ed54_boundary
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <bounces@news.example.com>
Original-Rcpt-To: <ada@example.org>
Arrival-Date: Thu, 30 Apr 2026 09:00:04 +0000
Reported-Domain: news.example.com
Source-IP: 192.0.2.1

--part1_13d.2e68ed54_boundary
Content-Type: message/rfc822
Content-Disposition: inline

{ORIGINAL}
--part1_13d.2e68ed54_boundary--
"""
)

REDACTED_COMPLAINT = COMPLAINT.replace(b"Original-Rcpt-To: <ada@example.org>\r\n", b"")
NOT_SPAM = COMPLAINT.replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam")


def test_a_permanent_failure_is_a_hard_bounce_naming_the_original() -> None:
    report = parse_report(HARD_BOUNCE)

    assert isinstance(report, BounceReport)
    assert report.original_message_id == "<msg-0001@news.example.com>"
    assert report.reporting_mta == "mx.example.org"
    [failure] = report.recipients
    assert failure.recipient == "ada@example.org"
    assert (failure.kind, failure.action, failure.status) == ("hard", "failed", "5.1.1")
    assert failure.diagnostic_code is not None
    assert failure.diagnostic_code.startswith("smtp; 550 5.1.1")
    assert failure.diagnostic_code.endswith("User unknown in virtual mailbox table")


def test_a_delay_is_soft_and_delivered_recipients_are_left_out() -> None:
    report = parse_report(DELAYED)

    assert isinstance(report, BounceReport)
    assert report.recipients == (
        RecipientFailure(
            recipient="grace@example.net",
            kind="soft",
            action="delayed",
            status="4.4.1",
            diagnostic_code="smtp; 421 4.4.1 Connection timed out",
        ),
    )
    assert report.original_message_id == "<msg-0002@news.example.com>"  # folded header


def test_an_internationalized_dsn_reads_the_same() -> None:
    # RFC 6533: the same fields in message/global-delivery-status, which the stdlib
    # parser does not split into blocks itself.
    raw = HARD_BOUNCE.replace(b"message/delivery-status", b"message/global-delivery-status")
    assert raw != HARD_BOUNCE

    report = parse_report(raw)
    assert isinstance(report, BounceReport)
    assert report.reporting_mta == "mx.example.org"
    assert [(r.recipient, r.kind) for r in report.recipients] == [("ada@example.org", "hard")]


def test_a_full_mailbox_is_soft() -> None:
    report = parse_report(MAILBOX_FULL)
    assert isinstance(report, BounceReport)
    assert [(r.kind, r.status) for r in report.recipients] == [("soft", "5.2.2")]


def test_a_notification_of_success_only_is_no_bounce() -> None:
    assert parse_report(DELIVERED_ONLY) is None


def test_an_arf_abuse_report_is_a_complaint() -> None:
    report = parse_report(COMPLAINT)

    assert report == ComplaintReport(
        feedback_type="abuse",
        recipient="ada@example.org",
        original_message_id="<msg-0001@news.example.com>",
        user_agent="SomeGenerator/1.0",
    )


def test_a_redacted_complaint_falls_back_to_the_original_to() -> None:
    report = parse_report(REDACTED_COMPLAINT)
    assert isinstance(report, ComplaintReport)
    assert report.recipient == "ada@example.org"


def test_not_spam_feedback_is_no_complaint() -> None:
    assert parse_report(NOT_SPAM) is None


def test_the_bounce_of_a_channel_message_names_its_provider_id() -> None:
    sent = build_mime(
        Outgoing(message_id="m-77", idempotency_key="k", to="ada@example.org", text="Hi"),
        from_address="news@news.example.com",
    )
    assert b"Message-ID: <m-77@news.example.com>\r\n" in sent
    sent_id = message_id_header("m-77", "news.example.com")
    original = ORIGINAL.replace("<msg-0001@news.example.com>", sent_id)
    bounce = HARD_BOUNCE.replace(crlf(ORIGINAL), crlf(original))
    assert bounce != HARD_BOUNCE

    report = parse_report(bounce)
    assert isinstance(report, BounceReport)
    assert report.original_message_id == "<m-77@news.example.com>" == sent_id


def test_a_bounce_returning_the_whole_8_bit_message_is_read() -> None:
    sent = build_mime(
        Outgoing(
            message_id="m-77",
            idempotency_key="k",
            to="ada@example.org",
            text="Grüße, Zoë: €12\n",
            html="<p>Grüße — Zoë</p>",
        ),
        from_address="news@news.example.com",
        eight_bit=True,
    )
    assert b"Content-Transfer-Encoding: 8bit" in sent and not sent.isascii()
    bounce = HARD_BOUNCE.replace(crlf(ORIGINAL), sent)
    assert bounce != HARD_BOUNCE

    report = parse_report(bounce)
    assert isinstance(report, BounceReport)
    assert report.original_message_id == message_id_header("m-77", "news.example.com")
    assert [failure.recipient for failure in report.recipients] == ["ada@example.org"]


@pytest.mark.parametrize(
    "raw",
    [
        crlf(ORIGINAL),
        HARD_BOUNCE.replace(
            b"report-type=delivery-status", b"report-type=disposition-notification"
        ),
        HARD_BOUNCE.replace(b"Content-Type: message/delivery-status", b"Content-Type: text/plain"),
        b"",
        b"\x00\xff garbage \r\n\r\n\r\n--",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x",
    ],
)
def test_anything_else_is_none(raw: bytes) -> None:
    assert parse_report(raw) is None
