"""Which channel a campaign sends through, and the checks on it.

A campaign that names a channel (`channel_id`) sends through it, and it must be one of the
workspace's channels of the template's kind; one that names none sends through the
workspace's default channel of the kind (the inbox needs none). Defining or editing a
campaign checks what it names (`check_channel`, 422); sending it and editing it while
scheduled check that there is a channel to send through (`require_sending_channel`, 409);
its launch checks again and stops the campaign when there is none (`sending_problem`).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.errors import Conflict, FieldError, NotFound
from clarion.messaging import channel_config
from clarion.messaging.schemas import UnprocessableInput


async def check_channel(
    session: AsyncSession, workspace_id: int, channel_id: int | None, kind: str
) -> None:
    """UnprocessableInput naming `channel_id` unless it is None or a channel of the
    workspace of `kind`."""
    if channel_id is None:
        return
    problem = await channel_config.unfit_channel(
        session, workspace_id=workspace_id, channel_id=channel_id, kind=kind
    )
    if problem is not None:
        raise UnprocessableInput(
            f"The campaign cannot send through channel {channel_id}: {problem}.",
            errors=[FieldError("channel_id", problem)],
        )


async def sending_problem(
    session: AsyncSession, *, workspace_id: int, channel_id: int | None, kind: str
) -> str | None:
    """Why a campaign of `kind` naming `channel_id` has no channel to send through now
    ("channel 3 was deleted"), or None when it has one."""
    if channel_id is not None:
        try:
            row = await channel_config.get_channel_or_raise(
                session, workspace_id=workspace_id, channel_id=channel_id
            )
        except NotFound:
            return f"channel {channel_id} was deleted"  # creation checked that it was there
        if row.kind != kind:
            return f"channel {channel_id} is a {row.kind} channel, not {kind}"
        return None
    if kind == "inbox":
        return None
    if await channel_config.default_channel(session, workspace_id=workspace_id, kind=kind) is None:
        return f"the workspace has no default {kind} channel"
    return None


async def require_sending_channel(
    session: AsyncSession, *, workspace_id: int, channel_id: int | None, kind: str
) -> None:
    """Conflict naming `channel_id` unless a campaign of `kind` naming `channel_id` has a
    channel to send through (see `sending_problem`)."""
    problem = await sending_problem(
        session, workspace_id=workspace_id, channel_id=channel_id, kind=kind
    )
    if problem is not None:
        raise Conflict(
            f"The campaign has no {kind} channel to send through: {problem};"
            " configure one or name one.",
            errors=[FieldError("channel_id", problem)],
        )
