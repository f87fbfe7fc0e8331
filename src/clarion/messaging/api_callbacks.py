"""Routes providers call back: Twilio's SMS status callbacks (`/hooks/twilio/{channel_id}`,
authenticated by Twilio's signature under the channel's auth token), and bounce or complaint
mails handed over by the operator's mail system (`/api/v1/channels/{channel_id}/bounces`,
the raw message as the body, with an admin key)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from clarion.core.bodies import read_limited
from clarion.core.deps import AppClock, RowId, WriteSession
from clarion.core.errors import FieldError, Forbidden, InvalidInput, NotFound, PayloadTooLarge
from clarion.core.routing import StrictJSONRoute
from clarion.messaging import callbacks, channel_config
from clarion.messaging.api import app_vault
from clarion.messaging.channels.sms import verify_twilio_signature
from clarion.messaging.models import MessagingChannel
from clarion.messaging.schemas import UnprocessableInput
from clarion.workspaces.auth import ManagementCaller

hooks = APIRouter(tags=["provider callbacks"], route_class=StrictJSONRoute)
router = APIRouter(prefix="/api/v1", tags=["provider callbacks"], route_class=StrictJSONRoute)
MAX_BOUNCE_BYTES = 1_000_000


@hooks.post("/hooks/twilio/{channel_id}", status_code=status.HTTP_204_NO_CONTENT)
async def twilio_status(
    channel_id: RowId, request: Request, session: WriteSession, clock: AppClock
) -> Response:
    """A Twilio status callback for a message sent through the channel; 403 unless signed
    with the channel's auth token for this very URL (as `CLARION_PUBLIC_URL` spells it)."""
    channel = await session.get(MessagingChannel, channel_id)
    if channel is None or channel.kind != "sms":
        raise NotFound(f"No SMS channel {channel_id}.")
    form = await request.form()
    params = {key: str(value) for key, value in form.items()}
    token = channel_config.stored_secrets(channel, app_vault(request)).get("auth_token", "")
    public_url = request.app.state.settings.public_url.rstrip("/")
    url = f"{public_url}{request.url.path}"
    signature = request.headers.get("x-twilio-signature", "")
    if not token or not verify_twilio_signature(url, params, signature, token):
        raise Forbidden("The request is not signed by this channel's provider.")
    try:
        await callbacks.apply_sms_status(session, channel=channel, params=params, now=clock.now())
    except ValueError as error:
        raise InvalidInput(
            "Not a status callback.", errors=[FieldError("body", str(error))]
        ) from error
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/channels/{channel_id}/bounces")
async def report_bounce(
    channel_id: RowId,
    request: Request,
    caller: ManagementCaller,
    session: WriteSession,
    clock: AppClock,
) -> dict[str, str | None]:
    """Hand over a bounce (RFC 3464) or complaint (RFC 5965) mail, raw, as received for the
    channel's sender; the status it gave its message (null: none moved, or not a report).
    422 naming `channel_id` for a channel that is not email, 400 naming `body` for an empty
    body, 413 for one over 1 MB (read no further)."""
    channel = await channel_config.get_channel_or_raise(
        session, workspace_id=caller.workspace_id, channel_id=channel_id
    )
    if channel.kind != "email":
        reason = f"channel {channel.id} sends {channel.kind} messages, not email"
        raise UnprocessableInput(
            "Bounce mails are for email channels.", errors=[FieldError("channel_id", reason)]
        )
    raw = await _bounce_mail(request)
    moved = await callbacks.apply_bounce_mail(session, channel=channel, raw=raw, now=clock.now())
    await session.commit()
    return {"status": moved}


async def _bounce_mail(request: Request) -> bytes:
    """The request's body, read only up to `MAX_BOUNCE_BYTES`: InvalidInput naming `body`
    when it is empty, PayloadTooLarge when it is longer."""
    raw = await read_limited(request, limit=MAX_BOUNCE_BYTES, too_large=_bounce_too_large)
    if not raw:
        raise InvalidInput(
            "Send the bounce mail as the body.", errors=[FieldError("body", "empty")]
        )
    return raw


def _bounce_too_large() -> PayloadTooLarge:
    return PayloadTooLarge(
        "A bounce mail is at most 1 MB.", errors=[FieldError("body", "over 1 MB")]
    )
