"""The public pages end customers reach from their messages: small, server-rendered HTML
with no script, every value escaped, each page naming the workspace it speaks for; and the
reading of their forms (urlencoded or multipart, as RFC 8058 one-click allows both).

Pages are never cached, never indexed, never framed, and send no referrer (their URLs
carry tokens).
"""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from html import escape
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse

from clarion.core.bodies import read_limited
from clarion.core.errors import FieldError, PayloadTooLarge
from clarion.messaging.consent.public import CHANNEL_WORDS, Preferences, Unsubscription

MAX_FORM_BYTES = 64 * 1024
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}
_STYLE = """
body{font:1rem/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1a1a1a;
background:#f6f6f4;margin:0;padding:1rem}
main{max-width:36rem;margin:2rem auto;background:#fff;padding:1.5rem 2rem;border-radius:8px;
border:1px solid #d8d8d4}
.from{color:#4a4a4a;margin:0}h1{font-size:1.5rem;margin:.25rem 0 1rem}
fieldset{border:1px solid #c8c8c4;border-radius:6px;margin:0 0 1rem;padding:.75rem 1rem}
legend{font-weight:600;padding:0 .25rem}.choice{margin:.5rem 0}.hint{color:#4a4a4a;
margin:.1rem 0 0 1.8rem;font-size:.9rem}input[type=checkbox]{width:1.1rem;height:1.1rem;
margin-right:.5rem;vertical-align:-.15rem}
button{font:inherit;padding:.6rem 1.2rem;border-radius:6px;border:1px solid #1d4ed8;
background:#1d4ed8;color:#fff;cursor:pointer}button.secondary{background:#fff;color:#1d4ed8}
button:focus-visible,a:focus-visible,input:focus-visible{outline:3px solid #f59e0b;
outline-offset:2px}a{color:#1d4ed8}
.notice{background:#ecfdf5;border:1px solid #047857;color:#064e3b;padding:.5rem .75rem;
border-radius:6px}
"""


def respond(title: str, content: str, *, workspace: str | None, status: int = 200) -> HTMLResponse:
    """A whole page: `content` (already escaped HTML) under the workspace's name."""
    heading = f'<p class="from">{escape(workspace)}</p>' if workspace else ""
    suffix = f" · {escape(workspace)}" if workspace else ""
    document = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex, nofollow">'
        f"<title>{escape(title)}{suffix}</title><style>{_STYLE}</style></head>"
        f"<body><main>{heading}<h1>{escape(title)}</h1>{content}</main></body></html>\n"
    )
    return HTMLResponse(document, status_code=status, headers=HEADERS)


def not_found() -> HTMLResponse:
    """The page for any link that is not one of ours: says nothing about why."""
    content = "<p>This link is not valid. It may have been cut short when it was copied.</p>"
    return respond("Link not found", content, workspace=None, status=404)


def _button(action: str, label: str, *, secondary: bool = False) -> str:
    style = ' class="secondary"' if secondary else ""
    return (
        f'<form method="post"><input type="hidden" name="action" value="{escape(action)}">'
        f'<button type="submit"{style}>{escape(label)}</button></form>'
    )


def _link(url: str, label: str) -> str:
    return f'<p><a href="{escape(url)}">{escape(label)}</a></p>'


def unsubscribe(target: Unsubscription, preferences_url: str) -> HTMLResponse:
    """What the link unsubscribes from, and the button that does it (GET changes nothing)."""
    content = (
        f"<p>You will stop receiving {escape(target.what)} from "
        f"{escape(target.workspace_name)}.</p>"
        + _button("unsubscribe", "Unsubscribe")
        + _link(preferences_url, "Choose what you receive instead")
    )
    return respond("Unsubscribe", content, workspace=target.workspace_name)


def unsubscribed(target: Unsubscription, preferences_url: str) -> HTMLResponse:
    """Done: the way back (undo) and the preferences page."""
    content = (
        f'<p role="status" class="notice">You are unsubscribed from {escape(target.what)}.</p>'
        + _button("undo", "Undo: subscribe me again", secondary=True)
        + _link(preferences_url, "Manage your preferences")
    )
    return respond("You are unsubscribed", content, workspace=target.workspace_name)


def resubscribed(target: Unsubscription, preferences_url: str) -> HTMLResponse:
    """Undone: subscribed again."""
    content = (
        f'<p role="status" class="notice">You are subscribed again to {escape(target.what)}.</p>'
        + _button("unsubscribe", "Unsubscribe", secondary=True)
        + _link(preferences_url, "Manage your preferences")
    )
    return respond("You are subscribed again", content, workspace=target.workspace_name)


def one_click_done(workspace_name: str) -> HTMLResponse:
    """The answer to an RFC 8058 one-click POST: 200, no redirect, no cookie."""
    content = '<p role="status">You are unsubscribed.</p>'
    return respond("You are unsubscribed", content, workspace=workspace_name)


def preferences(shown: Preferences, *, notice: str | None = None) -> HTMLResponse:
    """Every topic with a checkbox in its current state, grouped by channel, and "all
    marketing email" off; `notice` says what the last save did."""
    groups: dict[str, list[str]] = {}
    for choice in shown.topics:
        field_id = f"topic-{choice.topic_id}"
        checked = " checked" if choice.state != "opted_out" else ""
        hint = escape(choice.description)
        if choice.state == "pending":
            hint += " (waiting for you to confirm from the email we send you)"
        hint = hint.strip()
        described = f' aria-describedby="{field_id}-hint"' if hint else ""
        hint_html = f'<p class="hint" id="{field_id}-hint">{hint}</p>' if hint else ""
        groups.setdefault(choice.channel, []).append(
            f'<div class="choice"><input type="checkbox" id="{field_id}" name="topic" '
            f'value="{choice.topic_id}"{checked}{described}>'
            f'<label for="{field_id}">{escape(choice.name)}</label>{hint_html}</div>'
        )
    if shown.has_email:
        checked = " checked" if shown.all_email_off else ""
        groups.setdefault("email", []).append(
            '<div class="choice"><input type="checkbox" id="all-email" name="all_email_off" '
            f'value="1"{checked}><label for="all-email">Unsubscribe from all marketing '
            "email</label></div>"
        )
    fieldsets = "".join(
        f"<fieldset><legend>{escape(CHANNEL_WORDS[channel].capitalize())}</legend>"
        f"{''.join(items)}</fieldset>"
        for channel, items in groups.items()
    )
    status = f'<p role="status" class="notice">{escape(notice)}</p>' if notice else ""
    if not fieldsets:
        content = status + "<p>There is nothing to subscribe to here right now.</p>"
    else:
        content = (
            status
            + '<form method="post">'
            + fieldsets
            + '<button type="submit">Save my preferences</button></form>'
        )
    return respond("Your preferences", content, workspace=shown.workspace_name)


def confirm(workspace_name: str, topic_name: str) -> HTMLResponse:
    """The confirmation button of a double opt-in (GET changes nothing)."""
    content = (
        f"<p>Please confirm that you want to receive {escape(topic_name)} from "
        f"{escape(workspace_name)}.</p>" + _button("confirm", "Yes, subscribe me")
    )
    return respond("Confirm your subscription", content, workspace=workspace_name)


def confirmed(workspace_name: str, topic_name: str, preferences_url: str) -> HTMLResponse:
    """Confirmed: subscribed."""
    content = (
        f'<p role="status" class="notice">You are subscribed to {escape(topic_name)}.</p>'
        + _link(preferences_url, "Manage your preferences")
    )
    return respond("Subscription confirmed", content, workspace=workspace_name)


async def read_form(request: Request) -> dict[str, list[str]]:
    """The fields of an urlencoded or multipart form body, each with its values; empty when
    there is none or it cannot be read. PayloadTooLarge (naming `body`) past
    `MAX_FORM_BYTES`: read as empty, a preferences form would unsubscribe from everything."""
    body = await read_limited(request, limit=MAX_FORM_BYTES, too_large=_form_too_large)
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        return _multipart(content_type, body)
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


def _form_too_large() -> PayloadTooLarge:
    return PayloadTooLarge("A form is at most 64 KB.", errors=[FieldError("body", "over 64 KB")])


def _multipart(content_type: str, body: bytes) -> dict[str, list[str]]:
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    fields: dict[str, list[str]] = {}
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and part.get_filename() is None and isinstance(payload, bytes):
            fields.setdefault(name, []).append(payload.decode("utf-8", "replace"))
    return fields
