"""Reading what mailbox providers send back: bounces and complaints, as email.

Two standard shapes, both multipart/report:

- RFC 3464 delivery status notifications (report-type=delivery-status): a
  message/delivery-status part with one block of per-message fields and one block per
  recipient (Final-Recipient, Action, Status, Diagnostic-Code), then the original message
  (message/rfc822) or its headers (text/rfc822-headers);
- RFC 5965 ARF feedback reports (report-type=feedback-report): a message/feedback-report
  part (Feedback-Type, User-Agent, Original-Rcpt-To...) and the original message.

`parse_report` returns a `BounceReport` (only the recipients whose delivery failed or is
delayed; status 5.x.x is a hard bounce, 4.x.x and mailbox-full 5.2.2 soft), a
`ComplaintReport`, or None for anything else, including success notifications and
"not-spam" feedback. It never raises on malformed mail. `original_message_id` is in the
`<id@domain>` form the email channel returns as `Sent.provider_id`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import policy
from email.errors import MessageError
from email.message import Message
from email.parser import BytesParser, HeaderParser
from email.utils import getaddresses
from typing import Literal

_BLOCK_SEPARATOR = re.compile(r"\r?\n[ \t]*\r?\n")
_STATUS = re.compile(r"^\s*([245])\.\d{1,3}\.\d{1,3}")
_ORIGINAL_TYPES = ("message/rfc822", "text/rfc822-headers", "message/global-headers")
_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_FAILED_ACTIONS = ("failed", "delayed")


@dataclass(frozen=True, slots=True)
class RecipientFailure:
    """One recipient a DSN reports as failed (or delayed)."""

    recipient: str
    kind: Literal["hard", "soft"]
    action: str
    status: str | None
    diagnostic_code: str | None


@dataclass(frozen=True, slots=True)
class BounceReport:
    """A delivery status notification: who failed, and the message that bounced."""

    recipients: tuple[RecipientFailure, ...]
    original_message_id: str | None
    reporting_mta: str | None


@dataclass(frozen=True, slots=True)
class ComplaintReport:
    """An ARF feedback report: a recipient marked the message as spam (or abuse, fraud...)."""

    feedback_type: str
    recipient: str | None
    original_message_id: str | None
    user_agent: str | None


def parse_report(raw: bytes) -> BounceReport | ComplaintReport | None:
    """The bounce or complaint `raw` reports, or None when it is neither (or unreadable)."""
    try:
        message = BytesParser(policy=policy.default).parsebytes(raw)
        report = _find_report(message)
        if report is None:
            return None
        report_type = str(report.get_param("report-type", "")).lower()
        if report_type == "delivery-status":
            return _delivery_status(report)
        if report_type == "feedback-report":
            return _feedback(report)
    except (MessageError, LookupError, ValueError):
        return None  # untrusted input: a report we cannot read is no report
    return None


def _find_report(message: Message) -> Message | None:
    for part in message.walk():
        if part.get_content_type() == "multipart/report":
            return part
    return None


def _children(report: Message) -> list[Message]:
    payload = report.get_payload()
    return (
        [part for part in payload if isinstance(part, Message)] if isinstance(payload, list) else []
    )


def _part(report: Message, types: tuple[str, ...]) -> Message | None:
    for part in _children(report):
        if part.get_content_type() in types:
            return part
    return None


def _field_blocks(part: Message) -> list[Message]:
    """The header-style blocks of a status part, however the parser left them."""
    payload = part.get_payload()
    blocks: list[Message] = []
    if isinstance(payload, list):
        for block in payload:
            if not isinstance(block, Message):
                continue
            blocks.append(block)
            rest = block.get_payload()  # parsed as one message: later blocks are its body
            if isinstance(rest, str) and rest.strip():
                blocks += _parse_blocks(rest)
    elif isinstance(payload, str):
        blocks = _parse_blocks(payload)
    return blocks


def _parse_blocks(text: str) -> list[Message]:
    parser = HeaderParser(policy=policy.default)
    return [parser.parsestr(block) for block in _BLOCK_SEPARATOR.split(text.strip()) if block]


def _field(block: Message, name: str) -> str | None:
    value = block.get(name)
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def _address(value: str | None) -> str | None:
    """The address in a DSN/ARF address field ("rfc822; a@b" or "<a@b>")."""
    if not value:
        return None
    _, _, address = value.rpartition(";")
    address = address.strip().strip("<>").strip()
    return address or None


def _delivery_status(report: Message) -> BounceReport | None:
    status_part = _part(report, _STATUS_TYPES)
    if status_part is None:
        return None
    blocks = _field_blocks(status_part)
    if not blocks:
        return None
    failures = []
    for block in blocks[1:]:
        failure = _recipient_failure(block)
        if failure is not None:
            failures.append(failure)
    if not failures:
        return None
    return BounceReport(
        recipients=tuple(failures),
        original_message_id=_original_message_id(report),
        reporting_mta=_address(_field(blocks[0], "Reporting-MTA")),
    )


def _recipient_failure(block: Message) -> RecipientFailure | None:
    action = (_field(block, "Action") or "").lower()
    recipient = _address(_field(block, "Original-Recipient")) or _address(
        _field(block, "Final-Recipient")
    )
    if action not in _FAILED_ACTIONS or recipient is None:
        return None
    status = _field(block, "Status")
    match = _STATUS.match(status or "")
    status_code = match.group(0).strip() if match else None
    hard = (
        action == "failed"
        and status_code is not None
        and status_code.startswith("5")
        and status_code != "5.2.2"  # mailbox full: may clear up, as the email channel says
    )
    return RecipientFailure(
        recipient=recipient,
        kind="hard" if hard else "soft",
        action=action,
        status=status_code,
        diagnostic_code=_field(block, "Diagnostic-Code"),
    )


def _feedback(report: Message) -> ComplaintReport | None:
    feedback_part = _part(report, ("message/feedback-report",))
    if feedback_part is None:
        return None
    blocks = _field_blocks(feedback_part)
    if not blocks:
        return None
    fields = blocks[0]
    feedback_type = (_field(fields, "Feedback-Type") or "").lower()
    if not feedback_type or feedback_type == "not-spam":
        return None
    recipient = _address(_field(fields, "Original-Rcpt-To"))
    if recipient is None:
        recipient = _original_recipient(report)
    return ComplaintReport(
        feedback_type=feedback_type,
        recipient=recipient,
        original_message_id=_original_message_id(report),
        user_agent=_field(fields, "User-Agent"),
    )


def _original_headers(report: Message) -> Message | None:
    part = _part(report, _ORIGINAL_TYPES)
    if part is None:
        return None
    payload = part.get_payload()
    if isinstance(payload, list):
        first = payload[0] if payload else None
        return first if isinstance(first, Message) else None
    if isinstance(payload, str):
        decoded = part.get_payload(decode=True)  # undoes a transfer encoding, if any
        text = decoded.decode("utf-8", "replace") if isinstance(decoded, bytes) else payload
        return HeaderParser(policy=policy.default).parsestr(text)
    return None


def _original_message_id(report: Message) -> str | None:
    headers = _original_headers(report)
    value = _field(headers, "Message-ID") if headers is not None else None
    if not value:
        return None
    match = re.search(r"<[^<>\s]+>", value)
    return match.group(0) if match else f"<{value.strip('<> ')}>"


def _original_recipient(report: Message) -> str | None:
    headers = _original_headers(report)
    value = _field(headers, "To") if headers is not None else None
    addresses = [address for _, address in getaddresses([value or ""]) if address]
    return addresses[0] if len(addresses) == 1 else None
