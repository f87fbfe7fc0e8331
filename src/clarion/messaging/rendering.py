"""Message templates: the content of each channel, checking it (`validate`) and turning it
into one recipient's message (`render`). Pure Python; no database.

    rendering            validate(), render(), and every public name below
    rendering_content    content models (Pydantic, JSON both ways), Localized, RenderContext,
                         Rendered, pick_locale()
    rendering_sandbox    the sandbox, its strict-but-chainable undefined, the guards against
                         templates that would exhaust a worker, the per-message state
    rendering_env        the html / text environments, filters, register_function(), the
                         LRU of compiled templates
    rendering_email      CSS inlining and the text part, prepared once per version; the
                         preheader, rewrite_links(), add_open_pixel()
    rendering_sms        sms_segments()

Every text field is a Jinja template. Email html and the inbox body are HTML and
autoescaped; subjects, titles, SMS, push, data values and webhook leaves are text.

The render context (`RenderContext.variables()`), the only root names a template may use
besides the registered functions and Jinja's globals (`range`, `dict`, `namespace`...):

    profile   id, user_id, email, phone, traits (dict), computed (dict)
    event     name, properties (dict)           absent unless an event triggered the message
    journey   the journey's context (dict)      absent outside a journey
    message   id
    links     unsubscribe_url, preferences_url, view_in_browser_url   (those known)
    now       the send time (aware datetime)

A missing value fails the render unless given a default: `{{ profile.traits.first_name |
default('there') }}`, `{% if event is defined %}`. Filters beyond Jinja's: `money(minor_units,
currency, locale?)` ("$12.50"; the locale defaults to the content's), `date(format?, tz?)`
and `datetime(format?, tz?)` (strftime, in the profile's `timezone` trait unless `tz`).
`register_function(name, fn)` adds a global such as `coupon()`; within one message a call
with the same arguments runs once, and `current_render_context()` gives it the recipient.

`render` picks a `Localized` content's locale from its `locale` argument, else the
profile's `locale` trait: "fr-CA" serves "fr-CA", else "fr", else the default locale. A
failure raises `RenderError` (an `InvalidInput`) naming the field, the line and the
variable or construct at fault.
"""

from __future__ import annotations

import re
from typing import Any

from jinja2 import Template, Undefined, meta, nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from pydantic import JsonValue

from clarion.messaging.channels.base import ChannelKind
from clarion.messaging.rendering_content import (
    CONTENT_TYPES,
    LOCALE_TAG,
    Content,
    EmailContent,
    EventContext,
    InboxContent,
    Links,
    Localized,
    ProfileContext,
    PushContent,
    RenderContext,
    Rendered,
    SmsContent,
    WebhookContent,
    parse_content,
    pick_locale,
)
from clarion.messaging.rendering_email import (
    add_open_pixel,
    html_to_text,
    inline_css,
    insert_preheader,
    jinja_spans,
    prepare_email,
    rewrite_links,
    tidy_text,
)
from clarion.messaging.rendering_env import (
    CONTEXT_ROOTS,
    RENDER_FAILURES,
    ROOT_ATTRIBUTES,
    Mode,
    RenderError,
    TemplateProblem,
    compile_expression,
    compile_template,
    known_names,
    money,
    parse,
    register_function,
    run,
    template_line,
    timezone_of,
    unregister_function,
    with_globals,
)
from clarion.messaging.rendering_sandbox import RenderState, current_render_context, render_scope
from clarion.messaging.rendering_sms import SmsSegments, sms_segments

__all__ = [
    "Content", "EmailContent", "EventContext", "InboxContent", "Links", "Localized",
    "ProfileContext", "PushContent", "RenderContext", "RenderError", "Rendered",
    "SmsContent", "SmsSegments", "TemplateProblem", "WebhookContent", "add_open_pixel",
    "check_template", "current_render_context", "money", "parse_content", "pick_locale",
    "register_function", "render", "rewrite_links", "sms_segments", "unregister_function",
    "validate",
]  # fmt: skip


# --- Validation -----------------------------------------------------------------------------------


def validate(channel: ChannelKind, content: Content | Localized[Any]) -> list[TemplateProblem]:
    """Every problem in `content` that would fail every render: syntax errors (with their
    line), unknown root variables or attributes, private attributes, empty required
    fields. An empty list means it can be saved."""
    if isinstance(content, Localized):
        problems = []
        for locale, item in content.locales.items():
            if not LOCALE_TAG.match(locale):
                problems.append(TemplateProblem(f"locales.{locale}", "not a locale tag"))
            problems += _validate_one(channel, item, f"locales.{locale}")
        return problems
    return _validate_one(channel, content, "content")


def _validate_one(channel: ChannelKind, content: Content, prefix: str) -> list[TemplateProblem]:
    expected = CONTENT_TYPES[channel]
    if not isinstance(content, expected):
        return [TemplateProblem(prefix, f"{type(content).__name__} is not {channel} content")]
    problems = [TemplateProblem(f"{prefix}.{name}", message) for name, message in _missing(content)]
    for name, source, mode in _fields(content):
        problems += [
            TemplateProblem(f"{prefix}.{name}", message, line)
            for line, message in check_template(source, mode)
        ]
    return problems


def _missing(content: Content) -> list[tuple[str, str]]:
    """Required fields left empty."""
    empty = "must not be empty"
    if isinstance(content, EmailContent):
        return [(name, empty) for name in ("subject", "html") if not getattr(content, name).strip()]
    if isinstance(content, SmsContent):
        return [("body", empty)] if not content.body.strip() else []
    if isinstance(content, PushContent | InboxContent):
        if not content.title.strip() and not content.body.strip():
            return [("title", "title or body must not be empty")]
        return []
    if content.body in (None, "", {}, []):
        return [("body", empty)]
    if not isinstance(content.body, dict):
        return [("body", "must be a JSON object")]
    return []


def _fields(content: Content) -> list[tuple[str, str, Mode]]:
    """The template fields of `content`: their path, source and escaping mode."""
    if isinstance(content, EmailContent):
        fields: list[tuple[str, str, Mode]] = [
            ("subject", content.subject, "text"),
            ("html", content.html, "html"),
        ]
        if content.text is not None:
            fields.append(("text", content.text, "text"))
        if content.preheader is not None:
            fields.append(("preheader", content.preheader, "html"))
        return fields
    if isinstance(content, SmsContent):
        return [("body", content.body, "text")]
    if isinstance(content, PushContent):
        fields = [("title", content.title, "text"), ("body", content.body, "text")]
        return fields + [(f"data.{key}", value, "text") for key, value in content.data.items()]
    if isinstance(content, InboxContent):
        fields = [("title", content.title, "text"), ("body", content.body, "html")]
        if content.action_url is not None:
            fields.append(("action_url", content.action_url, "text"))
        return fields + [(f"data.{key}", value, "text") for key, value in content.data.items()]
    return [(path, leaf, "text") for path, leaf in _json_leaves(content.body, "body")]


def _json_leaves(value: JsonValue, path: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in _json_leaves(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [leaf for i, item in enumerate(value) for leaf in _json_leaves(item, f"{path}.{i}")]
    return []


def check_template(source: str, mode: Mode = "text") -> list[tuple[int | None, str]]:
    """The (line, message) problems of one template source, without rendering it."""
    try:
        tree = parse(source, mode)
    except TemplateSyntaxError as exc:
        return [(exc.lineno, exc.message or "syntax error")]
    problems: list[tuple[int | None, str]] = []
    undeclared = meta.find_undeclared_variables(tree)
    for name in sorted(undeclared - known_names()):
        roots = ", ".join(sorted(CONTEXT_ROOTS))
        message = f"unknown variable {name!r}; templates can use {roots} and registered functions"
        problems.append((_first_line(tree, name), message))
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        problem = _attribute_problem(node, undeclared)
        if problem:
            problems.append((node.lineno, problem))
    for other in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        problems.append((other.lineno, "a message template cannot use other templates"))
    return problems


def _attribute_problem(node: nodes.Node, undeclared: set[str]) -> str:
    """What is wrong with one `a.b` / `a['b']`: a private name, or an attribute the
    context's fixed-shape roots do not have."""
    key = _key(node)
    if key is None:
        return ""
    if key.startswith("__") or (isinstance(node, nodes.Getattr) and key.startswith("_")):
        return f"{key!r} is private: names starting with '_' are off limits"
    parent = getattr(node, "node", None)
    if isinstance(parent, nodes.Name) and parent.name in undeclared:
        allowed = ROOT_ATTRIBUTES.get(parent.name)
        if allowed is not None and key not in allowed:
            return f"{parent.name} has no {key!r}; it has {', '.join(sorted(allowed))}"
    return ""


def _key(node: nodes.Node) -> str | None:
    """The attribute or constant item a `Getattr` / `Getitem` reads, the name a `Name` is."""
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node, nodes.Getitem):
        return _constant(node.arg)
    if isinstance(node, nodes.Name):
        return node.name
    return None


def _first_line(tree: nodes.Template, name: str) -> int | None:
    lines = [node.lineno for node in tree.find_all(nodes.Name) if node.name == name]
    return min(lines) if lines else None


def _constant(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Const) and isinstance(node.value, str):
        return node.value
    return None


# --- Rendering ------------------------------------------------------------------------------------


def render(
    channel: ChannelKind,
    content: Content | Localized[Any],
    context: RenderContext,
    *,
    locale: str | None = None,
) -> Rendered:
    """Render `content` for one recipient, in `locale` (else the profile's `locale` trait)
    or its nearest fallback; raises `RenderError` naming the field that failed and why."""
    traits = context.profile.traits
    chosen: str | None
    if isinstance(content, Localized):
        wanted = locale or traits.get("locale")
        chosen = pick_locale(content.locales, wanted if isinstance(wanted, str) else None,
                             content.default_locale)  # fmt: skip
        item, prefix = content.locales[chosen], f"locales.{chosen}"
    else:
        chosen, item, prefix = locale, content, "content"
    if not isinstance(item, CONTENT_TYPES[channel]):
        raise RenderError(prefix, f"{type(item).__name__} is not {channel} content")
    state = RenderState(
        context, locale=chosen or "en", timezone=timezone_of(traits.get("timezone"))
    )
    with render_scope(state):
        variables = with_globals(context.variables())
        if isinstance(item, EmailContent):
            return _render_email(item, variables, prefix, chosen)
        if isinstance(item, SmsContent):
            body = _render(item.body, "text", variables, f"{prefix}.body").strip()
            return Rendered("sms", chosen, text=body, sms=sms_segments(body))
        if isinstance(item, PushContent | InboxContent):
            return _render_notification(channel, item, variables, prefix, chosen)
        payload = _render_json(item.body, variables, f"{prefix}.body")
        return Rendered("webhook", chosen, data=payload if isinstance(payload, dict) else {})


def render_text(source: str, variables: dict[str, Any], *, field: str) -> str:
    """Render one text template outside a message (a journey's trait value): the same
    language and sandbox, with `variables` as its roots and no message (functions that
    need one, such as `coupon()`, fail); raises `RenderError` naming `field`."""
    with render_scope(RenderState(None)):
        return _render(source, "text", with_globals(variables), field)


def is_template(value: str) -> bool:
    """Whether a string holds template syntax (else it is used as it is)."""
    return "{{" in value or "{%" in value


def _render_email(
    item: EmailContent, variables: dict[str, Any], prefix: str, locale: str | None
) -> Rendered:
    try:
        prepared = prepare_email(item.html, derive_text=item.text is None)
    except TemplateSyntaxError as exc:
        raise RenderError(f"{prefix}.html", exc.message or "syntax error", line=exc.lineno) from exc
    subject = _one_line(_render(item.subject, "text", variables, f"{prefix}.subject"))
    html = _run(prepared.html, variables, f"{prefix}.html", item.html)
    if "css" in prepared.per_recipient:
        html = inline_css(html)
    if item.text is not None:
        text = tidy_text(_render(item.text, "text", variables, f"{prefix}.text"))
    elif prepared.text is not None:
        text = tidy_text(_run(prepared.text, variables, f"{prefix}.html", item.html))
    else:
        text = html_to_text(html)
    if item.preheader:
        preheader = _render(item.preheader, "html", variables, f"{prefix}.preheader")
        html = insert_preheader(html, preheader)
    return Rendered("email", locale, subject=subject, html=html, text=text)


def _render_notification(
    channel: ChannelKind,
    item: PushContent | InboxContent,
    variables: dict[str, Any],
    prefix: str,
    locale: str | None,
) -> Rendered:
    body_mode: Mode = "html" if isinstance(item, InboxContent) else "text"
    title = _one_line(_render(item.title, "text", variables, f"{prefix}.title"))
    body = _render(item.body, body_mode, variables, f"{prefix}.body").strip()
    data = {key: _render(value, "text", variables, f"{prefix}.data.{key}")
            for key, value in item.data.items()}  # fmt: skip
    if isinstance(item, PushContent):
        return Rendered(channel, locale, subject=title, text=body, data=data)
    action_url = None
    if item.action_url is not None:
        action_url = _render(item.action_url, "text", variables, f"{prefix}.action_url").strip()
    return Rendered(channel, locale, subject=title, html=body, action_url=action_url, data=data)


def _render(source: str, mode: Mode, variables: dict[str, Any], field: str) -> str:
    try:
        template = compile_template(source, mode)
    except TemplateSyntaxError as exc:
        raise RenderError(field, exc.message or "syntax error", line=exc.lineno) from exc
    return _run(template, variables, field, source)


def _run(template: Template, variables: dict[str, Any], field: str, source: str) -> str:
    try:
        text = run(template, variables)
    except RENDER_FAILURES as exc:
        raise _failure(field, source, exc) from exc
    return _sendable(text, field)


def _sendable(text: str, field: str) -> str:
    """`text`, unless it holds a NUL or a lone surrogate (a string literal's `\\x00` or
    `\\ud800`, say), which no message PostgreSQL keeps, nor any UTF-8 page or JSON body,
    can carry: then RenderError naming `field`."""
    if "\x00" in text:
        raise RenderError(field, "renders a NUL character (\\u0000), not text")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            code = f"\\u{ord(text[exc.start]):04x}"
            raise RenderError(field, f"renders a lone surrogate ({code}), not text") from None
    return text


def _one_line(text: str) -> str:
    """A header-safe single line: a line break in a trait must not start a new header."""
    return " ".join(text.split())


def _failure(field: str, source: str, exc: BaseException) -> RenderError:
    """A `RenderError` saying, in a template author's words, what went wrong where."""
    line = template_line(exc)
    if isinstance(exc, UndefinedError):
        path = _undefined_path(source, line, str(exc))
        message = f"{path} is undefined; give it a default: {{{{ {path} | default('') }}}}"
    elif isinstance(exc, SecurityError):
        message = f"not allowed in templates: {exc}"
    else:
        message = f"{type(exc).__name__}: {exc}"
    return RenderError(field, message, line=line)


_UNDEFINED_NAME = re.compile(r"has no (?:attribute|element) '([^']*)'|^'([^']*)' is undefined")


def _undefined_path(source: str, line: int | None, message: str) -> str:
    """The dotted path (`profile.traits.first_name`) an `UndefinedError` is about, as far
    as the template's syntax tree tells; the bare name otherwise."""
    found = _UNDEFINED_NAME.search(message)
    if found is None:
        return message
    name = found.group(1) or found.group(2)
    try:
        tree = parse(source)
    except TemplateSyntaxError:
        return name
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        if line is not None and node.lineno != line:
            continue
        if _key(node) == name and (path := _dotted(node)) is not None:
            return path
    return name


def _dotted(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        parent = _dotted(node.node)
        return None if parent is None else f"{parent}.{node.attr}"
    if isinstance(node, nodes.Getitem):
        parent, key = _dotted(node.node), _constant(node.arg)
        return None if parent is None or key is None else f"{parent}.{key}"
    return None


def _render_json(value: JsonValue, variables: dict[str, Any], path: str) -> JsonValue:
    """A webhook body with each string leaf rendered: a lone `{{ expression }}` keeps its
    value (which must be JSON), anything else becomes the rendered string."""
    if isinstance(value, dict):
        return {key: _render_json(item, variables, f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_render_json(item, variables, f"{path}.{i}") for i, item in enumerate(value)]
    if not isinstance(value, str):
        return value
    stripped = value.strip()
    if stripped.startswith("{{") and jinja_spans(stripped) == [(0, len(stripped))]:
        expression = stripped[2:-2].strip("-+").strip()
        try:
            evaluate = compile_expression(expression)
            result = evaluate(**variables)
        except TemplateSyntaxError as exc:
            raise RenderError(path, exc.message or "syntax error", line=exc.lineno) from exc
        except RENDER_FAILURES as exc:
            raise _failure(path, value, exc) from exc
        return _as_json(result, path, value)
    return _render(value, "text", variables, path)


def _as_json(value: Any, path: str, source: str) -> JsonValue:
    if isinstance(value, Undefined):
        try:
            str(value)  # raises the undefined's own error, with its name
        except RENDER_FAILURES as exc:
            raise _failure(path, source, exc) from exc
    if isinstance(value, str):
        return _sendable(str(value), path)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise RenderError(path, f"{value} is not a JSON number")
        return value
    if isinstance(value, list | tuple):
        return [_as_json(item, path, source) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: _as_json(item, path, source) for key, item in value.items()}
    kind = type(value).__name__
    raise RenderError(path, f"a {kind} is not a JSON value; format it (| datetime, | string)")
