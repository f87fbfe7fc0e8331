"""Routes end customers reach from their messages, without credentials: the open pixel
(`/t/o/{token}.gif`), tracked clicks (`/t/c/{token}`) and "view in browser" (`/v/{token}`).

The signed token is the only key. The pixel always answers the same 43-byte GIF, whatever
the token and even if recording fails, so a mail client never shows a broken image and a
prober learns nothing. A click redirects (302) only to the URL delivery stored for the
token's link index; a bad token, an unknown link and a missing page all get the same plain
404 page. Nothing here reads a URL from the query string.

The client address is `request.client.host`. Behind a reverse proxy, run the server with
uvicorn's `--proxy-headers --forwarded-allow-ips=<proxy address>` so that it is the
customer's (from `X-Forwarded-For`) and not the proxy's; Clarion itself trusts no
forwarding header.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from clarion.core.deps import AppClock, app_held, get_database
from clarion.core.routing import StrictJSONRoute
from clarion.core.settings import SecretKeys
from clarion.messaging import engagement
from clarion.messaging.engagement import Interaction
from clarion.messaging.tracking import (
    CLICK_PATH,
    OPEN_PIXEL_PATH,
    PIXEL_HEADERS,
    TRANSPARENT_GIF,
    VIEW_PATH,
    InvalidToken,
    LinkSigner,
)

log = logging.getLogger(__name__)
public = APIRouter(tags=["public"], route_class=StrictJSONRoute)

# The stored page runs in a sandbox: a unique origin (no access to Clarion's cookies or
# storage), no scripts, no forms; links open at the reader's click.
VIEW_HEADERS = {
    "Content-Security-Policy": (
        "sandbox allow-popups allow-popups-to-escape-sandbox "
        "allow-top-navigation-by-user-activation; default-src 'none'; img-src * data:; "
        "style-src * 'unsafe-inline'; font-src * data:"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, no-store",
}
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
NOT_FOUND_PAGE = (
    "<!doctype html><html lang=en><meta charset=utf-8>"
    "<meta name=viewport content='width=device-width,initial-scale=1'>"
    "<title>Link not found</title>"
    "<body style='font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;"
    "padding:0 1rem;color:#222'><h1>Link not found</h1>"
    "<p>This link is not valid, or what it pointed to is no longer here.</p></body></html>"
)
# `path` converters: a "token" holding a slash still gets the pixel or the HTML 404 page.
PIXEL_ROUTE = OPEN_PIXEL_PATH.replace("{token}", "{token:path}")
CLICK_ROUTE = CLICK_PATH.replace("{token}", "{token:path}")
VIEW_ROUTE = VIEW_PATH.replace("{token}", "{token:path}")
PIXEL_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"image/gif": {}}, "description": "A transparent 1x1 GIF, always."}
}

CLICK_RESPONSES: dict[int | str, dict[str, object]] = {
    404: {"content": {"text/html": {}}, "description": "No such link."}
}


def link_signer(request: Request) -> LinkSigner:
    """The application's link signer (made once, under the app's secret key)."""
    keys: SecretKeys = request.app.state.secret_keys
    return app_held(request, "link_signer", lambda: LinkSigner(keys.current, keys.previous))


def _seen(request: Request, clock: AppClock) -> Interaction:
    return Interaction(
        user_agent=request.headers.get("user-agent"),
        ip=request.client.host if request.client else None,
        method=request.method,
        at=clock.now(),
    )


def _not_found() -> HTMLResponse:
    return HTMLResponse(NOT_FOUND_PAGE, status_code=404, headers=NO_STORE)


@public.get(PIXEL_ROUTE, response_class=Response, responses=PIXEL_RESPONSES)
@public.head(PIXEL_ROUTE, response_class=Response, responses=PIXEL_RESPONSES)
async def open_pixel(token: str, request: Request, clock: AppClock) -> Response:
    """The open pixel: records an open when the token is valid; always the GIF."""
    try:
        payload = link_signer(request).verify(token, "open")
    except InvalidToken:
        payload = None
    if payload is not None:
        try:
            async with get_database(request).write_session() as session:
                await engagement.record_open(
                    session, message_id=payload.message_id, seen=_seen(request, clock)
                )
                await session.commit()
        except Exception:  # the image must show whatever happened; the cause is logged
            log.exception("recording an open of message %s failed", payload.message_id)
    return Response(TRANSPARENT_GIF, headers=PIXEL_HEADERS)


@public.get(
    CLICK_ROUTE, response_class=RedirectResponse, status_code=302, responses=CLICK_RESPONSES
)
@public.head(
    CLICK_ROUTE, response_class=RedirectResponse, status_code=302, responses=CLICK_RESPONSES
)
async def click(token: str, request: Request, clock: AppClock) -> Response:
    """A tracked link: records the click and redirects to the URL the message stored."""
    try:
        payload = link_signer(request).verify(token, "click")
    except InvalidToken:
        return _not_found()
    async with get_database(request).write_session() as session:
        url = await engagement.record_click(
            session,
            message_id=payload.message_id,
            link_index=payload.link_index,
            seen=_seen(request, clock),
        )
        await session.commit()
    if url is None:
        return _not_found()
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


@public.get(
    VIEW_ROUTE,
    response_class=HTMLResponse,
    responses={404: {"content": {"text/html": {}}, "description": "No such page."}},
)
async def view_in_browser(token: str, request: Request, clock: AppClock) -> Response:
    """The message as delivery kept it (its HTML), in a sandbox; 404 when none was kept."""
    try:
        payload = link_signer(request).verify(token, "view")
    except InvalidToken:
        return _not_found()
    async with get_database(request).write_session() as session:
        html = await engagement.record_view(
            session, message_id=payload.message_id, seen=_seen(request, clock)
        )
        await session.commit()
    if html is None:
        return _not_found()
    return HTMLResponse(html, headers=VIEW_HEADERS)
