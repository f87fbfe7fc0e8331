"""Public routes (no credentials): the unsubscribe page and RFC 8058 one-click unsubscribe
(`/u/{token}`), the preferences page (`/p/{token}`) and double opt-in confirmation
(`/c/{token}`).

The workspace, profile and topic come only from the signed token. A GET never changes
anything (mail scanners follow links); a POST does. Any link that is not one of ours, or
names something that is gone, gets the same HTML 404 page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import HTMLResponse

from clarion.core.deps import AppClock, ReadSession, WriteSession
from clarion.core.errors import NotFound
from clarion.core.routing import StrictJSONRoute
from clarion.messaging import feedback
from clarion.messaging.consent import pages
from clarion.messaging.consent import public as flows
from clarion.messaging.consent.service import Links
from clarion.messaging.tracking import UnsubscribePayload

public = APIRouter(tags=["public"], route_class=StrictJSONRoute)
ONE_CLICK = ("List-Unsubscribe", "One-Click")


def get_links(request: Request) -> Links:
    """The application's consent links, made once per application from its secret key."""
    state = request.app.state
    links: Links | None = getattr(state, "consent_links", None)
    if links is None:
        links = Links.from_settings(state.settings, state.secret_keys)
        state.consent_links = links
    return links


AppLinks = Annotated[Links, Depends(get_links)]


async def _or_not_found(page: Callable[[], Awaitable[HTMLResponse]]) -> HTMLResponse:
    try:
        return await page()
    except NotFound:  # a bad token, or a profile or topic gone: one answer for all
        return pages.not_found()


async def _unsubscription(
    session: AsyncSession, token: str, links: Links
) -> tuple[UnsubscribePayload, flows.Unsubscription, str]:
    payload = links.signer.verify(token, "unsubscribe")
    target = await flows.describe_unsubscribe(
        session,
        workspace_id=payload.workspace_id,
        profile_id=payload.profile_id,
        topic_id=payload.topic_id,
        channel=payload.channel,
        message_id=payload.message_id,
    )
    url = links.preferences(workspace_id=payload.workspace_id, profile_id=target.profile_id)
    return payload, target, url


@public.get("/u/{token}", response_class=HTMLResponse)
async def unsubscribe_page(token: str, session: ReadSession, links: AppLinks) -> HTMLResponse:
    """What the link unsubscribes from, and a button; changes nothing."""

    async def page() -> HTMLResponse:
        _, target, preferences_url = await _unsubscription(session, token, links)
        return pages.unsubscribe(target, preferences_url)

    return await _or_not_found(page)


@public.post("/u/{token}", response_class=HTMLResponse)
async def unsubscribe(
    token: str, request: Request, session: WriteSession, clock: AppClock, links: AppLinks
) -> HTMLResponse:
    """Unsubscribe: `List-Unsubscribe=One-Click` (RFC 8058) answers 200 with no redirect
    and no cookie; the page's button answers a confirmation with an undo button, which
    subscribes again."""

    async def page() -> HTMLResponse:
        payload, target, preferences_url = await _unsubscription(session, token, links)
        form = await pages.read_form(request)
        one_click = ONE_CLICK[1] in form.get(ONE_CLICK[0], [])
        undo = not one_click and "undo" in form.get("action", [])
        source = "one_click" if one_click else "unsubscribe_link"
        await flows.set_unsubscription(
            session,
            workspace_id=payload.workspace_id,
            unsubscription=target,
            subscribed=undo,
            source=source,
            now=clock.now(),
        )
        if not undo and payload.message_id is not None:  # the message it came from
            await feedback.mark_unsubscribed(
                session,
                workspace_id=payload.workspace_id,
                message_id=payload.message_id,
                now=clock.now(),
            )
        await session.commit()
        if one_click:
            return pages.one_click_done(target.workspace_name)
        if undo:
            return pages.resubscribed(target, preferences_url)
        return pages.unsubscribed(target, preferences_url)

    return await _or_not_found(page)


@public.get("/p/{token}", response_class=HTMLResponse)
async def preferences_page(token: str, session: ReadSession, links: AppLinks) -> HTMLResponse:
    """The profile's topics with their state, and "all marketing email" off."""

    async def page() -> HTMLResponse:
        payload = links.signer.verify(token, "preferences")
        shown = await flows.get_preferences(
            session, workspace_id=payload.workspace_id, profile_id=payload.profile_id
        )
        return pages.preferences(shown)

    return await _or_not_found(page)


@public.post("/p/{token}", response_class=HTMLResponse)
async def save_preferences(
    token: str, request: Request, session: WriteSession, clock: AppClock, links: AppLinks
) -> HTMLResponse:
    """Save the form (source "preferences_page") and show the page again, saying so."""

    async def page() -> HTMLResponse:
        payload = links.signer.verify(token, "preferences")
        form = await pages.read_form(request)
        subscribed = {int(value) for value in form.get("topic", []) if _topic_id(value)}
        before = await flows.get_preferences(
            session, workspace_id=payload.workspace_id, profile_id=payload.profile_id
        )
        shown = await flows.save_preferences(
            session,
            workspace_id=payload.workspace_id,
            profile_id=payload.profile_id,
            subscribed=subscribed,
            all_email_off=bool(form.get("all_email_off")),
            now=clock.now(),
            links=links,
        )
        await session.commit()
        was_pending = {c.topic_id for c in before.topics if c.state == "pending"}
        waiting = [
            c.name for c in shown.topics if c.state == "pending" and c.topic_id not in was_pending
        ]
        notice = "Your preferences are saved."
        if waiting:
            notice += f" Confirm {', '.join(waiting)} from the email we send you."
        return pages.preferences(shown, notice=notice)

    return await _or_not_found(page)


@public.get("/c/{token}", response_class=HTMLResponse)
async def confirm_page(token: str, session: ReadSession, links: AppLinks) -> HTMLResponse:
    """The double opt-in confirmation button; changes nothing."""

    async def page() -> HTMLResponse:
        payload = links.signer.verify(token, "confirm")
        workspace_name, topic = await flows.describe_confirmation(
            session,
            workspace_id=payload.workspace_id,
            profile_id=payload.profile_id,
            topic_id=payload.topic_id,
        )
        return pages.confirm(workspace_name, topic.name)

    return await _or_not_found(page)


@public.post("/c/{token}", response_class=HTMLResponse)
async def confirm(
    token: str, session: WriteSession, clock: AppClock, links: AppLinks
) -> HTMLResponse:
    """Confirm the double opt-in: opted in (source "confirmation")."""

    async def page() -> HTMLResponse:
        payload = links.signer.verify(token, "confirm")
        workspace_name, topic = await flows.describe_confirmation(
            session,
            workspace_id=payload.workspace_id,
            profile_id=payload.profile_id,
            topic_id=payload.topic_id,
        )
        await flows.confirm(
            session,
            workspace_id=payload.workspace_id,
            profile_id=payload.profile_id,
            topic_id=topic.id,
            now=clock.now(),
        )
        await session.commit()
        url = links.preferences(workspace_id=payload.workspace_id, profile_id=payload.profile_id)
        return pages.confirmed(workspace_name, topic.name, url)

    return await _or_not_found(page)


def _topic_id(value: str) -> bool:
    """Whether a form's `topic` value can be a topic id: ASCII digits ("²" is a digit too,
    which int() refuses), no more than a row id holds. Others are no topic of ours."""
    return value.isascii() and value.isdigit() and len(value) <= 19
