"""Message rendering: content models, the sandbox, validation, locales, filters, the email
steps (inlining, text part, preheader, links, pixel) and SMS segments. Pure Python."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pydantic
import pytest

from clarion.core.errors import InvalidInput
from clarion.messaging.rendering import (
    EmailContent,
    EventContext,
    InboxContent,
    Links,
    Localized,
    ProfileContext,
    PushContent,
    RenderContext,
    RenderError,
    SmsContent,
    WebhookContent,
    add_open_pixel,
    current_render_context,
    parse_content,
    pick_locale,
    register_function,
    render,
    rewrite_links,
    sms_segments,
    unregister_function,
    validate,
)
from clarion.messaging.rendering_email import jinja_spans, prepare_email, tidy_text
from clarion.messaging.rendering_env import compile_template, money
from clarion.messaging.rendering_sandbox import RenderState, render_scope

NOW = datetime(2026, 3, 14, 23, 30, tzinfo=UTC)


def make_context(
    *, event: EventContext | None = None, journey: dict[str, Any] | None = None, **traits: Any
) -> RenderContext:
    return RenderContext(
        profile=ProfileContext(
            id=uuid.UUID(int=7),
            user_id="u-7",
            email="ann@example.com",
            phone="+15550001111",
            traits=traits,
            computed={"orders": 3},
        ),
        message_id="msg-1",
        now=NOW,
        event=event,
        journey=journey,
        links=Links(
            unsubscribe_url="https://clarion.example/u/abc",
            preferences_url="https://clarion.example/p/abc",
        ),
    )


def email(html: str, subject: str = "Hello", **fields: Any) -> EmailContent:
    return EmailContent(subject=subject, html=html, **fields)


def render_html(html: str, **traits: Any) -> str:
    rendered = render("email", email(html), make_context(**traits)).html
    assert rendered is not None
    return rendered


def problem_fields(problems: list[Any]) -> list[tuple[str, int | None]]:
    return [(p.field, p.line) for p in problems]


@pytest.fixture
def registered() -> Iterator[list[str]]:
    """Names registered during a test, removed afterwards (the registry is global)."""
    names: list[str] = []
    yield names
    for name in names:
        unregister_function(name)


# --- Content models ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "content"),
    [
        ("email", EmailContent(subject="Hi", html="<p>x</p>", text="x", preheader="p")),
        ("sms", SmsContent(body="Hi {{ profile.traits.name }}")),
        ("push", PushContent(title="T", body="B", data={"deep_link": "app://x"})),
        ("inbox", InboxContent(title="T", body="<b>B</b>", action_url="https://x", data={})),
        ("webhook", WebhookContent(body={"a": [1, "{{ message.id }}", None, {"b": True}]})),
    ],
)
def test_content_round_trips_through_json(channel: Any, content: Any) -> None:
    stored = json.loads(content.model_dump_json())
    assert parse_content(channel, stored) == content
    localized = Localized[type(content)](default_locale="en", locales={"en": content})
    assert parse_content(channel, json.loads(localized.model_dump_json())) == localized


def test_localized_needs_its_default_among_the_locales() -> None:
    with pytest.raises(pydantic.ValidationError, match="default_locale"):
        Localized[SmsContent](default_locale="de", locales={"en": SmsContent(body="x")})
    # case and separator do not matter
    Localized[SmsContent](default_locale="EN_us", locales={"en-US": SmsContent(body="x")})


def test_content_is_frozen_and_rejects_unknown_fields() -> None:
    content = SmsContent(body="x")
    with pytest.raises(pydantic.ValidationError):
        content.body = "y"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        SmsContent.model_validate({"body": "x", "bogus": 1})


# --- Context, escaping, strictness ---------------------------------------------------------------


def test_the_context_holds_what_the_docstring_promises() -> None:
    source = (
        "{{ profile.id }}|{{ profile.user_id }}|{{ profile.email }}|{{ profile.phone }}|"
        "{{ profile.traits.name }}|{{ profile.computed.orders }}|{{ event.name }}|"
        "{{ event.properties.sku }}|{{ journey.step }}|{{ message.id }}|"
        "{{ links.unsubscribe_url }}|{{ links.preferences_url }}|{{ now.isoformat() }}"
    )
    context = make_context(event=EventContext("Order Completed", {"sku": "A1"}),
                           journey={"step": "welcome-2"}, name="Ann")  # fmt: skip
    assert render("sms", SmsContent(body=source), context).text == (
        f"{uuid.UUID(int=7)}|u-7|ann@example.com|+15550001111|Ann|3|Order Completed|A1|"
        "welcome-2|msg-1|https://clarion.example/u/abc|https://clarion.example/p/abc|"
        "2026-03-14T23:30:00+00:00"
    )


def test_absent_event_journey_and_unknown_links_are_undefined_not_empty() -> None:
    source = "{{ 'E' if event is defined else 'no event' }}/{{ journey is defined }}/" + (
        "{{ links.view_in_browser_url | default('none') }}"
    )
    assert render("sms", SmsContent(body=source), make_context()).text == "no event/False/none"
    with pytest.raises(RenderError, match=r"links\.view_in_browser_url is undefined"):
        render("sms", SmsContent(body="{{ links.view_in_browser_url }}"), make_context())


def test_html_escapes_a_hostile_trait_and_text_parts_do_not() -> None:
    hostile = '<script>alert("x")</script>'
    content = email("<p>Hi {{ profile.traits.name }}</p>", subject="Hi {{ profile.traits.name }}")
    rendered = render("email", content, make_context(name=hostile))
    assert rendered.html is not None and rendered.text is not None
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in rendered.html
    assert rendered.subject == f"Hi {hostile}"
    assert hostile in rendered.text
    sms = render("sms", SmsContent(body="{{ profile.traits.name }}"), make_context(name=hostile))
    assert sms.text == hostile


def test_safe_markup_and_numbers_render_as_they_are_in_html() -> None:
    html = render_html("{{ '<b>x</b>' | safe }} {{ 3 }} {{ 2.5 }} {{ profile.traits.n }}", n=7)
    assert html == "<b>x</b> 3 2.5 7"


def test_inbox_body_is_html_and_its_title_text() -> None:
    content = InboxContent(
        title="{{ profile.traits.name }}",
        body="<p>{{ profile.traits.name }}</p>",
        action_url="https://shop.example/{{ profile.user_id }}?a=1&b=2",
        data={"kind": "{{ profile.traits.name }}"},
    )
    rendered = render("inbox", content, make_context(name="A&B"))
    assert rendered.subject == "A&B"
    assert rendered.html == "<p>A&amp;B</p>"
    assert rendered.action_url == "https://shop.example/u-7?a=1&b=2"
    assert rendered.data == {"kind": "A&B"}


def test_push_renders_title_body_and_data_without_escaping() -> None:
    content = PushContent(
        title="Hi {{ profile.traits.name }}",
        body="{{ event.properties.count }} new",
        data={"deep_link": "app://orders/{{ event.properties.order_id }}?x=<1>"},
    )
    context = make_context(event=EventContext("e", {"count": 2, "order_id": "o&1"}), name="<A>")
    rendered = render("push", content, context)
    assert (rendered.subject, rendered.text) == ("Hi <A>", "2 new")
    assert rendered.data == {"deep_link": "app://orders/o&1?x=<1>"}


def test_a_missing_trait_without_default_fails_naming_field_variable_and_line() -> None:
    content = email("<p>\n\n{{ profile.traits.first_name }}</p>")
    with pytest.raises(RenderError) as caught:
        render("email", content, make_context())
    error = caught.value
    assert error.field == "content.html"
    assert error.line == 3
    assert "profile.traits.first_name is undefined" in error.message
    assert isinstance(error, InvalidInput)
    assert error.errors[0].field == "content.html"


def test_default_works_with_strict_undefined_even_down_a_missing_chain() -> None:
    body = (
        "{{ profile.traits.first_name | default('there') }}/"
        "{{ profile.traits.address.city | default('?') }}/"
        "{{ 'vip' if profile.traits.vip is defined else 'regular' }}"
    )
    assert render("sms", SmsContent(body=body), make_context()).text == "there/?/regular"
    for strict in ("{% if profile.traits.vip %}x{% endif %}", "{{ profile.traits.a.b }}"):
        with pytest.raises(RenderError, match="is undefined"):
            render("sms", SmsContent(body=strict), make_context())


def test_dict_keys_win_over_dict_methods() -> None:
    body = "{{ profile.traits.items }}/{{ profile.traits.keys }}"
    assert render("sms", SmsContent(body=body), make_context(items=3, keys="k")).text == "3/k"
    listed = "{% for k, v in profile.computed.items() %}{{ k }}={{ v }}{% endfor %}"
    assert render("sms", SmsContent(body=listed), make_context()).text == "orders=3"


def test_loop_attributes_work_and_private_ones_do_not() -> None:
    body = "{% for x in [1, 2] %}{{ loop.index }}{{ loop.missing | default('-') }}{% endfor %}"
    assert render("sms", SmsContent(body=body), make_context()).text == "1-2-"
    with pytest.raises(RenderError, match="not allowed"):
        render("sms", SmsContent(body="{% for x in [1] %}{{ loop._iterator }}{% endfor %}"),
               make_context())  # fmt: skip


def test_subject_and_title_cannot_carry_a_line_break_into_headers() -> None:
    content = email("<p>x</p>", subject="Hi {{ profile.traits.name }}")
    rendered = render("email", content, make_context(name="Ann\r\nBcc: victim@example.com"))
    assert rendered.subject == "Hi Ann Bcc: victim@example.com"


# --- The sandbox ---------------------------------------------------------------------------------


# Sizes over each guard's limit yet cheap to build, so a missing guard fails the test
# instead of exhausting the machine.
@pytest.mark.parametrize(
    "hostile",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{% for c in ''.__class__.__mro__ %}{{ c }}{% endfor %}",
        "{{ profile.__class__ }}",
        "{{ now.__class__.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ namespace.__init__ }}",
        "{{ now._private }}",
        "{{ profile.traits.update({'x': 1}) }}",
        "{{ [1].append(2) }}",
        "{{ range(20000) | list }}",
        "{% for i in range(200) %}{% for j in range(200) %}{% endfor %}{% endfor %}",
        "{{ 'x' * 200000 }}",
        "{{ [0] * 200000 }}",
        "{{ (7 ** 5000) > 1 }}",
        "{{ '{0.__class__}'.format(1) }}",
        "{{ 'x' | center(200000) }}",
        "{{ 'x'.center(200000) }}",
        "{{ 'x'.ljust(200000, '-') }}",
        "{{ '1'.zfill(200000) }}",
        "{{ ('\\t' * 10).expandtabs(20000) }}",
        "{{ ('a' * 1000).replace('', 'x' * 999) }}",
        "{{ ('a' * 1000) | replace('a', 'x' * 999) }}",
        "{{ 'x\\ny' | indent(200000) }}",
        "{{ '%05000d' % 1 }}",
        "{{ '%*d' % (5, 1) }}",
        "{{ '%.5000f' % 1 }}",
        "{{ '%05000d' | format(1) }}",
        "{{ '{:>5000}'.format('x') }}",
        "{{ '{:{w}}'.format('x', w=5) }}",
        "{{ lipsum(1) }}",
    ],
)
def test_hostile_templates_fail_as_render_errors(hostile: str) -> None:
    with pytest.raises(RenderError) as caught:
        render("sms", SmsContent(body=hostile), make_context())
    assert caught.value.field == "content.body"


def test_the_guards_leave_ordinary_formatting_alone() -> None:
    body = (
        "[{{ 'ab' | center(6) }}]|{{ 'ab'.rjust(4, '.') }}|{{ '%05.2f' % 3.14159 }}|"
        "{{ '{:>5}'.format('x') }}|{{ 'a-b' | replace('-', '+') }}|{{ 'a\nb' | indent(2) }}|"
        "{{ '100%% off in 2026: %s' % 'ok' }}|{{ 'Year: 2026 {}'.format('x') }}|{{ 7 % 3 }}|"
        "{{ '%d%%' | format(5) }}|{{ '7'.zfill(3) }}"
    )
    assert render("sms", SmsContent(body=body), make_context()).text == (
        "[  ab  ]|..ab|03.14|    x|a+b|a\n  b|100% off in 2026: ok|Year: 2026 x|1|5%|007"
    )


def test_loops_within_the_budget_still_run() -> None:
    body = "{% for i in range(3) %}{% for j in range(3) %}{{ i * j }}{% endfor %}{% endfor %}"
    assert render("sms", SmsContent(body=body), make_context()).text == "000012024"
    assert render("sms", SmsContent(body="{{ 'ab' * 3 }}{{ 2 ** 10 }}"), make_context()).text == (
        "ababab1024"
    )


def test_the_range_budget_is_per_message_not_per_process() -> None:
    content = SmsContent(body="{{ range(6000) | length }}")
    for _ in range(3):  # 18,000 items in all, 6,000 per message
        assert render("sms", content, make_context()).text == "6000"


# --- Validation ----------------------------------------------------------------------------------


def test_validation_reports_syntax_errors_with_their_field_and_line() -> None:
    content = email("<p>\n{% if x %}\n<b>{{ profile.email }</b>\n", subject="ok")
    problems = validate("email", content)
    assert problem_fields(problems) == [("content.html", 3)]
    assert "unexpected" in problems[0].message


def test_validation_names_unknown_root_variables_and_their_line() -> None:
    content = email("<p>{{ profile.email }}</p>\n<p>{{ customer.name }} {{ shop }}</p>")
    problems = validate("email", content)
    assert problem_fields(problems) == [("content.html", 2), ("content.html", 2)]
    assert "'customer'" in problems[0].message and "'shop'" in problems[1].message


def test_validation_accepts_every_context_root_and_locally_set_names() -> None:
    html = (
        "{{ profile.email }}{{ event.name }}{{ journey.x }}{{ message.id }}"
        "{{ links.unsubscribe_url }}{{ now }}{% set y = 1 %}{{ y }}"
        "{% for p in event.properties.items %}{{ p }}{% endfor %}{{ range(2) | list }}"
    )
    assert validate("email", email(html)) == []


def test_validation_catches_typos_on_fixed_shape_roots_and_private_names() -> None:
    content = SmsContent(body="{{ profile.trait.name }}\n{{ message.idd }}\n{{ now._x }}")
    problems = validate("sms", content)
    assert problem_fields(problems) == [("content.body", 1), ("content.body", 2),
                                        ("content.body", 3)]  # fmt: skip
    assert "profile has no 'trait'" in problems[0].message


def test_validation_refuses_templates_that_use_other_templates() -> None:
    body = "{% include 'a' %}\n{% import 'b' as b %}\n{% from 'c' import d %}\n{% extends 'e' %}"
    problems = validate("sms", SmsContent(body=body))
    assert problem_fields(problems) == [("content.body", line) for line in (1, 2, 3, 4)]
    assert all("other templates" in problem.message for problem in problems)
    with pytest.raises(RenderError, match=r"^content\.body"):
        render("sms", SmsContent(body="{% include 'a' %}"), make_context())


def test_registered_functions_count_as_known(registered: list[str]) -> None:
    content = SmsContent(body="{{ coupon_v1('SPRING') }}")
    assert validate("sms", content)[0].message.startswith("unknown variable")
    register_function("coupon_v1", lambda campaign: f"{campaign}-7")
    registered.append("coupon_v1")
    assert validate("sms", content) == []
    assert render("sms", content, make_context()).text == "SPRING-7"


@pytest.mark.parametrize(
    ("channel", "content", "fields"),
    [
        ("email", EmailContent(subject=" ", html=""), ["content.subject", "content.html"]),
        ("sms", SmsContent(body="  \n"), ["content.body"]),
        ("push", PushContent(title="", body=""), ["content.title"]),
        ("inbox", InboxContent(), ["content.title"]),
        ("webhook", WebhookContent(body={}), ["content.body"]),
        ("webhook", WebhookContent(body=None), ["content.body"]),
        ("webhook", WebhookContent(body=["{{ message.id }}"]), ["content.body"]),
    ],
)
def test_validation_rejects_empty_required_fields(channel: Any, content: Any, fields: Any) -> None:
    assert [p.field for p in validate(channel, content)] == fields


def test_push_with_only_a_body_is_enough() -> None:
    assert validate("push", PushContent(body="x")) == []


def test_validation_names_nested_fields_and_locales() -> None:
    push = PushContent(title="t", data={"deep_link": "app://{{ nope }}", "ok": "x"})
    assert [p.field for p in validate("push", push)] == ["content.data.deep_link"]
    hook = WebhookContent(body={"order": {"id": "{{ event.properties.id }}",
                                          "lines": ["{{ bad }}", "{% if %}"]}})  # fmt: skip
    assert [p.field for p in validate("webhook", hook)] == [
        "content.body.order.lines.0", "content.body.order.lines.1"
    ]  # fmt: skip
    localized = Localized[EmailContent](
        default_locale="en",
        locales={"en": email("<p>x</p>"), "fr": email("<p>x</p>", subject="{{ oops }}")},
    )
    assert [p.field for p in validate("email", localized)] == ["locales.fr.subject"]


def test_validation_rejects_content_of_another_channel() -> None:
    assert [p.field for p in validate("email", SmsContent(body="x"))] == ["content"]
    with pytest.raises(RenderError, match="not email content"):
        render("email", SmsContent(body="x"), make_context())


# --- Locales -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        ("fr-CA", "fr-CA"),
        ("fr_ca", "fr-CA"),
        ("FR-ch", "fr"),
        ("fr", "fr"),
        ("de-DE", "en"),
        (None, "en"),
        ("", "en"),
        ("zh-Hant-TW", "zh-Hant"),
    ],
)
def test_locale_fallback(wanted: str | None, expected: str) -> None:
    available = {"en": 1, "fr": 2, "fr-CA": 3, "zh-Hant": 4}
    assert pick_locale(available, wanted, "en") == expected


def test_render_picks_the_locale_from_the_argument_or_the_profile_trait() -> None:
    localized = Localized[SmsContent](
        default_locale="en",
        locales={
            "en": SmsContent(body="Total {{ 1250 | money('EUR') }}"),
            "fr": SmsContent(body="Total {{ 1250 | money('EUR') }}"),
        },
    )
    by_trait = render("sms", localized, make_context(locale="fr_BE"))
    assert (by_trait.locale, by_trait.text) == ("fr", "Total 12,50\u00a0€")
    by_argument = render("sms", localized, make_context(locale="fr"), locale="de")
    assert (by_argument.locale, by_argument.text) == ("en", "Total €12.50")


def test_errors_in_a_localized_content_name_the_locale() -> None:
    localized = Localized[SmsContent](
        default_locale="en",
        locales={"en": SmsContent(body="x"), "fr": SmsContent(body="{{ profile.traits.nom }}")},
    )
    with pytest.raises(RenderError) as caught:
        render("sms", localized, make_context(), locale="fr")
    assert caught.value.field == "locales.fr.body"


# --- Filters -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("units", "currency", "locale", "expected"),
    [
        (1250, "USD", None, "$12.50"),
        (5, "usd", None, "$0.05"),
        (-1250, "USD", None, "-$12.50"),
        (123456789, "USD", None, "$1,234,567.89"),
        (1250, "JPY", None, "¥1,250"),
        (1250, "KWD", None, "KWD 1.250"),
        (1250, "EUR", "fr-FR", "12,50\u00a0€"),
        (123456, "EUR", "de", "1.234,56\u00a0€"),
        (123456, "EUR", "fr", "1\u202f234,56\u00a0€"),
        (1250, "XYZ", None, "XYZ 12.50"),
        ("1250", "USD", None, "$12.50"),
        (1250.0, "USD", None, "$12.50"),
    ],
)
def test_money(units: Any, currency: str, locale: str | None, expected: str) -> None:
    assert money(units, currency, locale) == expected


def test_money_rejects_what_is_not_an_amount() -> None:
    for bad in ("12.x", None, True, [1]):
        with pytest.raises(TypeError):
            money(bad, "USD")
    with pytest.raises(RenderError, match="money"):
        render("sms", SmsContent(body="{{ profile.traits.x | money('USD') }}"),
               make_context(x="lots"))  # fmt: skip


def test_dates_follow_the_profile_timezone_unless_told_otherwise() -> None:
    body = (
        "{{ now | datetime }}/{{ now | date('%d %b') }}/"
        "{{ now | datetime('%H:%M', tz='Asia/Tokyo') }}"
    )
    assert render("sms", SmsContent(body=body), make_context(timezone="Europe/Paris")).text == (
        "2026-03-15 00:30/15 Mar/08:30"
    )
    assert render("sms", SmsContent(body=body), make_context(timezone="Not/AZone")).text == (
        "2026-03-14 23:30/14 Mar/08:30"
    )
    iso = "{{ '2026-01-02T03:04:05Z' | datetime('%H:%M') }} {{ 0 | date }}"
    assert render("sms", SmsContent(body=iso), make_context(timezone="Asia/Tokyo")).text == (
        "12:04 1970-01-01"
    )
    with render_scope(RenderState(None)):
        template = compile_template("{{ d | date('%Y/%m/%d') }}", "text")
        assert template.render(d=date(2026, 1, 2)) == "2026/01/02"


# --- Registered functions ------------------------------------------------------------------------


def test_a_registered_function_runs_once_per_message_and_sees_the_recipient(
    registered: list[str],
) -> None:
    calls: list[str] = []

    def coupon_once(campaign: str) -> str:
        profile = current_render_context().profile
        calls.append(campaign)
        return f"{campaign}-{profile.user_id}-{len(calls)}"

    register_function("coupon_once", coupon_once)
    registered.append("coupon_once")
    content = email("<p>{{ coupon_once('A') }} {{ coupon_once('A') }} {{ coupon_once('B') }}</p>")
    rendered = render("email", content, make_context())
    assert rendered.html == "<p>A-u-7-1 A-u-7-1 B-u-7-2</p>"
    assert rendered.text is not None and "A-u-7-1 A-u-7-1 B-u-7-2" in rendered.text
    assert calls == ["A", "B"]
    render("email", content, make_context())
    assert calls == ["A", "B", "A", "B"]  # a new message, new calls


def test_registering_refuses_bad_or_taken_names(registered: list[str]) -> None:
    for bad in ("profile", "range", "not valid", "for"):
        with pytest.raises(ValueError, match=r"cannot name|already exists"):
            register_function(bad, lambda: 1)
    register_function("taken_fn", lambda: 1)
    registered.append("taken_fn")
    with pytest.raises(ValueError, match="already exists"):
        register_function("taken_fn", lambda: 2)
    register_function("taken_fn", lambda: 2, replace=True)
    assert render("sms", SmsContent(body="{{ taken_fn() }}"), make_context()).text == "2"


def test_current_render_context_outside_a_render_raises() -> None:
    with pytest.raises(LookupError):
        current_render_context()


# --- The compiled-template cache ------------------------------------------------------------------


def test_rendering_the_same_version_compiles_once() -> None:
    html = f"<p>{{{{ profile.email }}}} {uuid.uuid4()}</p>"  # a source no other test has used
    content = email(html, subject=f"S {uuid.uuid4()}")
    before = compile_template.cache_info()
    for _ in range(50):
        render("email", content, make_context())
    after = compile_template.cache_info()
    # subject, html, derived text: compiled on the first render only
    assert after.misses - before.misses == 3
    assert after.hits - before.hits >= 49
    assert prepare_email(html, derive_text=True) is prepare_email(html, derive_text=True)


def test_the_cache_is_bounded() -> None:
    assert compile_template.cache_parameters()["maxsize"] is not None
    assert prepare_email.cache_parameters()["maxsize"] is not None


# --- Webhooks ------------------------------------------------------------------------------------


def test_webhook_json_stays_valid_with_quotes_and_keeps_types() -> None:
    content = WebhookContent(
        body={
            "text": 'Hello "{{ profile.traits.name }}" \\ {{ profile.traits.name }}',
            "count": "{{ profile.computed.orders }}",
            "ratio": "{{ profile.computed.orders / 2 }}",
            "flags": ["{{ profile.traits.vip is defined }}", "{{ none }}", 7, None],
            "nested": {"email": "{{- profile.email -}}", "list": "{{ [1, 'a'] }}"},
        }
    )
    rendered = render("webhook", content, make_context(name='Ann "the \\ hacker"'))
    payload = json.loads(json.dumps(rendered.data))
    assert payload == {
        "text": 'Hello "Ann "the \\ hacker"" \\ Ann "the \\ hacker"',
        "count": 3,
        "ratio": 1.5,
        "flags": [False, None, 7, None],
        "nested": {"email": "ann@example.com", "list": [1, "a"]},
    }


def test_webhook_rejects_values_json_cannot_hold() -> None:
    with pytest.raises(RenderError) as caught:
        render("webhook", WebhookContent(body={"at": {"sent": "{{ now }}"}}), make_context())
    assert caught.value.field == "content.body.at.sent"
    assert "datetime is not a JSON value" in caught.value.message
    formatted = WebhookContent(body={"sent": "{{ now | datetime('%Y-%m-%d') }}"})
    assert render("webhook", formatted, make_context()).data == {"sent": "2026-03-14"}
    with pytest.raises(RenderError, match=r"profile\.traits\.plan is undefined"):
        render("webhook", WebhookContent(body={"p": "{{ profile.traits.plan }}"}), make_context())
    with pytest.raises(RenderError, match="not a JSON number"):
        render("webhook", WebhookContent(body={"p": "{{ profile.traits.x * 10 }}"}),
               make_context(x=1e308))  # fmt: skip


# --- Email ---------------------------------------------------------------------------------------

STYLED = """<!DOCTYPE html>
<html><head>
<link rel="stylesheet" href="http://127.0.0.1:9/never-fetched.css">
<style>
  p { color: #333333; }
  .cell { padding: 4px; }
  .price { font-weight: bold; }
  @media (max-width: 600px) { .cell { padding: 0 !important; } }
</style>
</head><body>
<table>
{% for item in event.properties['items'] %}
  <tr><td class="cell">{{ item.name }}</td>
  <td class="price" style="color: {{ item.colour }}">{{ item.price | money('USD') }}</td></tr>
{% endfor %}
</table>
<p>Bye {{ profile.traits.name | default('you') }}</p>
</body></html>"""

ITEMS = EventContext("Cart", {"items": [
    {"name": "Mug", "price": 1200, "colour": "red"},
    {"name": "Cup", "price": 800, "colour": "blue"},
]})  # fmt: skip


def test_css_is_inlined_once_per_version_keeping_media_rules_and_loops() -> None:
    prepared = prepare_email(STYLED, derive_text=True)
    assert prepared.per_recipient == {}
    rendered = render("email", email(STYLED), make_context(event=ITEMS))
    html = rendered.html
    assert html is not None
    assert html.count('<td style="padding: 4px;" class="cell">') == 2
    assert '<td class="price" style="font-weight: bold;color: red">$12.00</td>' in html
    assert "color: blue" in html and "$8.00" in html
    assert '<p style="color: #333333;">Bye you</p>' in html
    assert re.search(
        r"<style>@media \(max-width: 600px\) \{ ?\.cell \{ ?padding: 0 !important;", html
    )
    assert "p { color" not in html
    assert 'href="http://127.0.0.1:9/never-fetched.css"' in html


def test_error_lines_survive_inlining() -> None:
    broken = STYLED.replace("Bye {{ profile.traits.name | default('you') }}",
                            "Bye {{ profile.traits.name }}")  # fmt: skip
    line = next(i for i, text in enumerate(broken.splitlines(), 1) if "Bye" in text)
    with pytest.raises(RenderError) as caught:
        render("email", email(broken), make_context(event=ITEMS))
    assert (caught.value.field, caught.value.line) == ("content.html", line)


@pytest.mark.parametrize(
    ("html", "reason"),
    [
        ('<style>.a { color: {{ profile.traits.c }}; }</style><p class="a">x</p>', "<style>"),
        ('<style>.red { color: red; }</style><p class="{{ profile.traits.c }}">x</p>', "class"),
        ("<style>p { color: red; }</style><p {{ 'hidden' }}>x</p>", "between"),
    ],
)
def test_templates_that_defeat_up_front_inlining_are_inlined_per_recipient(
    html: str, reason: str
) -> None:
    prepared = prepare_email(html, derive_text=True)
    assert reason in prepared.per_recipient["css"]
    rendered = render_html(html, c="red")
    assert 'style="color: red;"' in rendered
    assert "<style>" not in rendered


def test_a_template_without_styles_is_left_as_it_is() -> None:
    html = "<p class='{{ profile.traits.c }}'>x</p>"
    assert prepare_email(html, derive_text=False).per_recipient == {}
    assert render_html(html, c="a") == "<p class='a'>x</p>"


def test_the_text_part_is_derived_with_readable_links_and_no_holes() -> None:
    html = """<html><head><title>{{ profile.traits.name }}</title></head><body>
<table><tr><td align="center">
<a href="https://shop.example/?a=1&amp;b=2"><img src="logo.png"></a></td>
<td>Hi {{ profile.traits.name }} &amp; welcome</td></tr></table>
{% if profile.traits.vip is defined %}
<p>VIP only</p>
{% endif %}
<p>Shop <a href="https://shop.example/{{ profile.user_id }}">your picks</a> or
<a href="mailto:help@shop.example">write to us</a>, <a href="#top">top</a>.</p>
<p style="display:none">hidden</p>
</body></html>"""
    rendered = render("email", email(html), make_context(name="<Ann>"))
    assert rendered.text == (
        "Hi <Ann> & welcome\n\n"
        "Shop your picks (https://shop.example/u-7) or write to us (help@shop.example), top.\n"
    )
    vip = render("email", email(html), make_context(name="Ann", vip=True)).text
    assert vip is not None and "welcome\n\nVIP only\n\nShop" in vip


def test_branches_and_loops_in_the_text_part_leave_no_stray_spaces_or_lines() -> None:
    html = (
        "<p>Hi {% if profile.traits.vip is defined %} dear {% endif %} friend</p><ul>\n"
        "{% for x in event.properties['items'] %}\n<li>{{ x.name }}</li>\n{% endfor %}\n"
        "</ul><p>after</p>"
    )
    text = render("email", email(html), make_context(event=ITEMS)).text
    assert text == "Hi friend\n\n  * Mug\n  * Cup\n\nafter\n"
    vip = render("email", email(html), make_context(event=ITEMS, vip=1)).text
    assert vip is not None and vip.startswith("Hi dear friend\n")


def test_tidy_text_drops_trailing_blanks_and_extra_empty_lines() -> None:
    messy = "  a" + " " * 50 + "\nb\t\u00a0\n\n\n \n\nc \n\n"
    assert tidy_text(messy) == "a\nb\n\nc\n"


def test_a_given_text_part_is_used_as_it_is() -> None:
    content = email("<p>html</p>", text="Plain {{ profile.traits.name }} <b>", preheader="pre")
    assert render("email", content, make_context(name="&")).text == "Plain & <b>\n"


def test_text_is_derived_per_recipient_when_the_conversion_would_lose_a_set() -> None:
    html = (
        "<html><head><title>{% set greeting = 'Howdy' %}</title></head>"
        "<body><p>{{ greeting }} {{ profile.traits.name }}</p></body></html>"
    )
    assert "set greeting" in prepare_email(html, derive_text=True).per_recipient["text"]
    assert render("email", email(html), make_context(name="Ann")).text == "Howdy Ann\n"


def test_braces_that_were_not_jinja_stay_literal_in_the_text_part() -> None:
    html = "<p>&#123;&#123; profile.email &#125;&#125; and &#123;% raw %&#125;</p>"
    rendered = render("email", email(html), make_context())
    assert rendered.text == "{{ profile.email }} and {% raw %}\n"


def test_jinja_spans_respect_strings_comments_and_raw_blocks() -> None:
    source = 'a{{ "}}" }}b{% if "%}" %}c{# {{ #}d{% raw %}{{ {% endraw %}e{{ x }}'
    spans = [source[start:end] for start, end in jinja_spans(source)]
    assert spans == [
        '{{ "}}" }}',
        '{% if "%}" %}',
        "{# {{ #}",
        "{% raw %}{{ {% endraw %}",
        "{{ x }}",
    ]


def test_a_raw_block_does_not_hide_the_markup_after_it_from_inlining() -> None:
    html = "<style>p { color: red; }</style>{% raw %}{{ {% endraw %}<p>x</p>"
    assert render_html(html) == '{{ <p style="color: red;">x</p>'


def test_the_preheader_is_a_hidden_first_element_and_not_in_the_text() -> None:
    content = email(
        "<html><body class='x'><p>Body</p></body></html>",
        preheader="Just for {{ profile.traits.name }}",
    )
    rendered = render("email", content, make_context(name="<Ann>"))
    assert rendered.html is not None
    body = rendered.html.split("<body class='x'>", 1)[1]
    assert body.startswith('<div style="display:none;')
    assert body.index("Just for &lt;Ann&gt;") < body.index("<p>Body</p>")
    assert rendered.text == "Body\n"
    upper = render("email", email("<BODY><p>x</p></BODY>", preheader="Pre"), make_context()).html
    assert upper is not None and upper.startswith('<BODY><div style="display:none;')
    fragment = render("email", email("<p>x</p>", preheader="Pre"), make_context()).html
    assert (
        fragment is not None
        and fragment.startswith('<div style="display:none;')
        and "Pre" in fragment
    )


# --- Links and pixel -----------------------------------------------------------------------------


def test_rewrite_links_maps_http_links_and_skips_the_rest() -> None:
    html = (
        '<a href="https://a.example/x?p=1&amp;q=2">A</a>'
        "<a class='b' href='http://b.example/'>B</a>"
        '<a href="mailto:x@example.com">M</a><a href="tel:+1555">T</a><a href="#top">H</a>'
        '<a href="https://c.example/" data-clarion-untracked>C</a>'
        '<a href="https://clarion.example/u/abc">Unsubscribe</a>'
        '<a name="anchor">N</a><A HREF="HTTPS://D.example/">D</A>'
        "<a\nhref=https://e.example/?a=1&#38;b=2>E</a>"
    )
    seen: list[tuple[str, int]] = []

    def track(url: str, index: int) -> str:
        seen.append((url, index))
        return f"https://t.example/c/{index}?u={url}&z=1"

    out = rewrite_links(html, track, untracked={"https://clarion.example/u/abc"})
    assert seen == [("https://a.example/x?p=1&q=2", 0), ("http://b.example/", 1),
                    ("HTTPS://D.example/", 2), ("https://e.example/?a=1&b=2", 3)]  # fmt: skip
    assert '<a href="https://t.example/c/0?u=https://a.example/x?p=1&amp;q=2&amp;z=1">A</a>' in out
    assert "<a class='b' href='https://t.example/c/1?u=http://b.example/&amp;z=1'>B</a>" in out
    assert (
        '<a href="mailto:x@example.com">M</a><a href="tel:+1555">T</a><a href="#top">H</a>' in out
    )
    assert '<a href="https://c.example/">C</a>' in out
    assert '<a\nhref="https://t.example/c/3?u=https://e.example/?a=1&amp;b=2&amp;z=1">E</a>' in out
    assert '<a href="https://clarion.example/u/abc">Unsubscribe</a>' in out


def test_add_open_pixel_goes_before_the_last_body_close_or_at_the_end() -> None:
    html = add_open_pixel("<html><body><p>x</p></BODY></html>", "https://t.example/o?m=1&s=2")
    assert html.startswith('<html><body><p>x</p><img src="https://t.example/o?m=1&amp;s=2"')
    mixed = add_open_pixel("<body>x</Body>", "https://t/o")
    assert mixed.startswith('<body>x<img src="https://t/o"') and mixed.endswith("</Body>")
    assert html.endswith('style="display:block;width:1px;height:1px;border:0;"></BODY></html>')
    assert 'width="1" height="1" alt=""' in html
    assert add_open_pixel("<p>x</p>", "https://t/o").startswith('<p>x</p><img src="https://t/o"')


# --- SMS -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "encoding", "units", "segments"),
    [
        ("", "GSM-7", 0, 1),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("{" * 80, "GSM-7", 160, 1),
        ("{" * 81, "GSM-7", 162, 2),
        ("a" * 152 + "€" + "a" * 10, "GSM-7", 164, 2),
        ("a" * 152 + "€" + "a" * 152, "GSM-7", 306, 3),  # the escape pair is never split
        ("é" * 160, "GSM-7", 160, 1),
        ("ç" * 70, "UCS-2", 70, 1),
        ("ç" * 71, "UCS-2", 71, 2),
        ("a" * 66 + "😀" + "a" * 10, "UCS-2", 78, 2),
        ("😀" * 35, "UCS-2", 70, 1),
        ("😀" * 36, "UCS-2", 72, 2),
        ("a" * 66 + "😀" + "a" * 66, "UCS-2", 134, 3),  # the surrogate pair is never split
    ],
)
def test_sms_segments(body: str, encoding: str, units: int, segments: int) -> None:
    counted = sms_segments(body)
    assert (counted.encoding, counted.units, counted.segments) == (encoding, units, segments)


def test_render_reports_the_sms_segments() -> None:
    rendered = render(
        "sms", SmsContent(body="Hi {{ profile.traits.name }} 😀"), make_context(name="Ann")
    )
    assert rendered.sms is not None
    assert (rendered.sms.encoding, rendered.sms.segments) == ("UCS-2", 1)


def test_rendered_maps_onto_outgoing() -> None:
    inbox = render("inbox", InboxContent(title="T", body="B", action_url="https://x",
                                         data={"k": "v"}), make_context())  # fmt: skip
    outgoing = inbox.outgoing(message_id="m", idempotency_key="k", to="p-7")
    assert (outgoing.subject, outgoing.html, outgoing.data) == (
        "T", "B", {"k": "v", "action_url": "https://x"}
    )  # fmt: skip
    sms = render("sms", SmsContent(body="Hi"), make_context()).outgoing(
        message_id="m", idempotency_key="k", to="+1555", headers={"X": "1"}
    )
    assert (sms.text, sms.headers, sms.to) == ("Hi", {"X": "1"}, "+1555")
