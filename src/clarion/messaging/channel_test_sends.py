"""Test sends: one message through a configured channel's real adapter, on request, to check
its settings. Its `to` is checked first, as a single send's `address` is: an address the
kind can send to, or, for an in-app inbox, a profile of the workspace (its id or user id).
Nothing is recorded for a provider's test: a test message is no message row and has no
history. An inbox has no provider: its test message is put in the profile's inbox
(`inbox.deliver_test`), so that the app shows it.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.crypto import Vault
from clarion.core.errors import ClarionError, FieldError
from clarion.core.outbound import Policy
from clarion.messaging import addresses, inbox, messages
from clarion.messaging.channel_config import build_channel
from clarion.messaging.channels.base import DeliveryError, Outgoing, Sent, TemporaryFailure
from clarion.messaging.models import MessagingChannel
from clarion.messaging.schemas import UnprocessableInput


class ProviderError(ClarionError):
    """The provider did not take a message sent on request (a test send); `detail` is its
    reason, as the channel reported it."""

    status = 502
    code = "provider-error"
    title = "The provider did not take the message"


async def recipient_for_test(
    session: AsyncSession, *, workspace_id: int, kind: str, to: str
) -> str:
    """`to` as a test message of `kind` goes to it: checked as a single send's `address` is
    (`addresses.sendable_address`), or for an inbox the id of the workspace's profile it
    names by id or user id; UnprocessableInput naming `to` otherwise."""
    if kind == "inbox":
        profile_id = await _inbox_owner(session, workspace_id, to)
        if profile_id is None:
            reason = "no profile of this workspace has this id or user id"
            raise UnprocessableInput(
                f"Not a recipient for an inbox channel: {reason}.",
                errors=[FieldError("to", reason)],
            )
        return str(profile_id)
    try:
        return addresses.sendable_address(kind, to)
    except ValueError as error:
        raise UnprocessableInput(
            f"Not an address for a {kind} channel: {error}.", errors=[FieldError("to", str(error))]
        ) from error


async def _inbox_owner(session: AsyncSession, workspace_id: int, to: str) -> uuid.UUID | None:
    """The (canonical) profile `to` names: a profile id, else a user id; None when none."""
    try:
        profile_id: uuid.UUID | None = uuid.UUID(to)
    except ValueError:
        profile_id = None
    # A user id may look like a UUID too: `to` is tried as one either way.
    return await messages.get_recipient_id(
        session, workspace_id=workspace_id, profile_id=profile_id, user_id=to
    )


async def deliver_inbox_test(
    session: AsyncSession,
    row: MessagingChannel,
    *,
    profile_id: str,
    subject: str,
    text: str,
    now: datetime,
) -> Sent:
    """Put a test message of the inbox channel in the profile's inbox (`to` as
    `recipient_for_test` gave it), in the caller's transaction; its message id is the
    provider id."""
    message_id = await inbox.deliver_test(
        session,
        workspace_id=row.workspace_id,
        channel_id=row.id,
        profile_id=uuid.UUID(profile_id),
        title=subject,
        text_body=text,
        now=now,
    )
    return Sent(provider_id=str(message_id))


async def send_test(
    row: MessagingChannel, vault: Vault, policy: Policy, *, to: str, subject: str, text: str
) -> Sent:
    """Send a test message through the channel's real adapter (built for this send and
    closed after) to `to`, as `recipient_for_test` gave it; ProviderError (502) carrying the
    provider's reason when the send fails."""
    adapter = build_channel(row, vault, policy)
    message_id = f"test-{uuid.uuid4().hex}"
    outgoing = Outgoing(
        message_id=message_id,
        idempotency_key=message_id,
        to=to,
        subject=subject,
        html=None,
        text=text,
        data={"type": "clarion.test", "title": subject, "body": text},
    )
    try:
        return await adapter.send(outgoing)
    except DeliveryError as error:
        kind = "temporary" if isinstance(error, TemporaryFailure) else "permanent"
        raise ProviderError(f"{error.reason} ({kind} failure)") from error
    finally:
        await adapter.close()
