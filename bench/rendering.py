"""Rendering benchmark: how many personalised emails per second one process renders.

It renders a realistic HTML email (an 8 KB template: a <style> block with an @media
rule, a loop over 4 products, money and date filters, conditionals, a preheader) for N
generated profiles (20,000 by default), each with its own traits and products, and measures
per recipient:

- `renders_per_s`: the bare Jinja render of the html field, nothing else;
- `with_inlining_per_s`: the html with its CSS inlined. Clarion inlines once per template
  version, on the template source (`rendering_email.prepare_email`), so this is a render of
  the prepared template;
- `with_text_part_per_s`: the whole email as delivery gets it: `render()` (subject, inlined
  html, preheader, plain-text part from the text template derived once per version), then
  click-tracking `rewrite_links` and `add_open_pixel`; `cpu_us.render_email` is `render()`
  alone.

For comparison, `naive` measures on a sample what inlining (`css_inline`) and deriving the
text (`inscriptis`) cost when done for each recipient on the rendered HTML, and
`prepare_ms` what preparing the version once costs. The target: delivery must reach
>= 1,000 emails/s with two workers on 2 cores, so the whole email must cost well under
0.5 ms (>= 2,000/s in one process).

Exactly one JSON line goes to stdout; progress goes to stderr.

    .venv/bin/python bench/rendering.py [--profiles N] [--sample M] [--seed S]
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import machine
from clarion.messaging.rendering import (
    EmailContent,
    EventContext,
    Links,
    ProfileContext,
    RenderContext,
    add_open_pixel,
    render,
    rewrite_links,
    validate,
)
from clarion.messaging.rendering_email import html_to_text, inline_css, prepare_email
from clarion.messaging.rendering_env import compile_template, run, timezone_of, with_globals
from clarion.messaging.rendering_sandbox import RenderState, render_scope

log = logging.getLogger("bench.rendering")

TARGET_EMAIL_US = 500.0

SUBJECT = (
    "{{ profile.traits.first_name | default('Hi') }}, "
    "{{ event.properties.products | length }} picks are back"
)
PREHEADER = (
    "Back in stock for you{% if profile.traits.tier == 'gold' %}, with free shipping{% endif %}."
)
TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ profile.traits.first_name | default('Friend') }}, picked for you</title>
<style>
  body { margin: 0; padding: 0; background-color: #f4f4f7; font-family: Helvetica, Arial, sans-serif; color: #333333; }
  .wrapper { width: 100%; background-color: #f4f4f7; padding: 24px 0; }
  .container { width: 600px; margin: 0 auto; background-color: #ffffff; border-radius: 8px; }
  .nav { padding: 10px 24px; font-size: 13px; text-align: center; background-color: #111827; }
  .nav a { color: #ffffff; text-decoration: none; padding: 0 8px; }
  .header { padding: 24px; text-align: center; border-bottom: 1px solid #eeeeee; }
  .header img { width: 140px; height: auto; }
  .hero { padding: 32px 24px 16px 24px; }
  .hero h1 { font-size: 26px; line-height: 32px; margin: 0 0 12px 0; color: #111111; }
  .hero p { font-size: 16px; line-height: 24px; margin: 0; }
  .products { padding: 8px 24px; }
  .product { padding: 12px 0; border-bottom: 1px solid #f0f0f0; }
  .product img { width: 120px; height: 120px; border-radius: 4px; }
  .product .name { font-size: 16px; font-weight: bold; color: #111111; text-decoration: none; }
  .product .price { font-size: 15px; color: #0a7c2f; font-weight: bold; }
  .product .was { font-size: 13px; color: #999999; text-decoration: line-through; }
  .product .stock { margin: 4px 0 0 0; font-size: 12px; color: #c0392b; }
  .badge { display: inline-block; padding: 2px 8px; font-size: 11px; background-color: #ffe8a3; color: #7a5a00; border-radius: 10px; }
  .cta { display: inline-block; padding: 12px 28px; background-color: #1f6feb; color: #ffffff; text-decoration: none; border-radius: 6px; font-weight: bold; }
  .loyalty { padding: 16px 24px; background-color: #f9fafb; font-size: 14px; }
  .categories td { padding: 8px; text-align: center; font-size: 13px; }
  .categories a { color: #1f6feb; text-decoration: none; }
  .footer { padding: 24px; font-size: 12px; color: #888888; text-align: center; line-height: 18px; }
  .footer a { color: #888888; text-decoration: underline; }
  .social img { width: 24px; height: 24px; margin: 0 4px; }
  @media only screen and (max-width: 620px) {
    .container { width: 100% !important; border-radius: 0 !important; }
    .product img { width: 80px !important; height: 80px !important; }
    .hero h1 { font-size: 22px !important; line-height: 28px !important; }
    .categories td { display: block !important; width: 100% !important; }
  }
</style>
</head>
<body>
<table role="presentation" class="wrapper" width="100%" cellpadding="0" cellspacing="0">
<tr><td align="center">
<table role="presentation" class="container" cellpadding="0" cellspacing="0">
  <tr><td class="nav">
    <a href="https://shop.example.com/new?utm_source=email&amp;utm_campaign=back_in_stock">New in</a>
    <a href="https://shop.example.com/sale?utm_source=email&amp;utm_campaign=back_in_stock">Sale</a>
    <a href="https://shop.example.com/account?utm_source=email">My account</a>
  </td></tr>
  <tr><td class="header">
    <a href="https://shop.example.com/?utm_source=email"><img src="https://cdn.example.com/logo.png" alt="Example Shop"></a>
  </td></tr>
  <tr><td class="hero">
    <h1>Hi {{ profile.traits.first_name | default('there') }}, these are back in stock</h1>
    <p>
    {% if profile.computed.orders_count | default(0) > 0 %}
      Thanks for your {{ profile.computed.orders_count }} order{{ 's' if profile.computed.orders_count != 1 }} with us.
      We picked these because you bought {{ profile.computed.last_category | default('something great') }} last time.
    {% else %}
      Welcome! Here are a few favourites other shoppers love.
    {% endif %}
    </p>
  </td></tr>
  <tr><td class="products">
    <table role="presentation" width="100%" cellpadding="0" cellspacing="0">
    {% for product in event.properties.products %}
      <tr><td class="product">
        <table role="presentation" width="100%" cellpadding="0" cellspacing="0"><tr>
          <td width="130" valign="top">
            <a href="{{ product.url }}?utm_source=email&amp;utm_campaign=back_in_stock&amp;pos={{ loop.index }}"><img src="{{ product.image_url }}" alt="{{ product.name }}"></a>
          </td>
          <td valign="top">
            <a class="name" href="{{ product.url }}?utm_source=email&amp;pos={{ loop.index }}">{{ product.name }}</a><br>
            {% if product.compare_at and product.compare_at > product.price %}
              <span class="badge">Save {{ ((1 - product.price / product.compare_at) * 100) | round | int }}%</span><br>
              <span class="price">{{ product.price | money(product.currency) }}</span>
              <span class="was">{{ product.compare_at | money(product.currency) }}</span>
            {% else %}
              <span class="price">{{ product.price | money(product.currency) }}</span>
            {% endif %}
            <p style="margin: 6px 0 0 0; font-size: 14px; line-height: 20px;">{{ product.description | truncate(120) }}</p>
            {% if product.stock < 5 %}<p class="stock">Only {{ product.stock }} left</p>{% endif %}
          </td>
        </tr></table>
      </td></tr>
    {% endfor %}
    </table>
  </td></tr>
  <tr><td align="center" style="padding: 16px 24px 28px 24px;">
    <a class="cta" href="https://shop.example.com/cart?utm_source=email&amp;utm_campaign=back_in_stock">See everything new</a>
  </td></tr>
  {% if profile.traits.loyalty_points is defined and profile.traits.loyalty_points > 0 %}
  <tr><td class="loyalty">
    You have <strong>{{ profile.traits.loyalty_points }}</strong> points, worth {{ (profile.traits.loyalty_points * 5) | money('USD') }} on your next order.
    {% if profile.traits.tier == 'gold' %}As a Gold member, shipping is always free.{% endif %}
  </td></tr>
  {% endif %}
  <tr><td>
    <table role="presentation" class="categories" width="100%" cellpadding="0" cellspacing="0"><tr>
      <td><a href="https://shop.example.com/c/kitchen?utm_source=email">Kitchen</a></td>
      <td><a href="https://shop.example.com/c/living?utm_source=email">Living</a></td>
      <td><a href="https://shop.example.com/c/garden?utm_source=email">Garden</a></td>
      <td><a href="https://shop.example.com/c/gifts?utm_source=email">Gifts</a></td>
    </tr></table>
  </td></tr>
  <tr><td class="footer">
    <p class="social">
      <a href="https://instagram.com/exampleshop"><img src="https://cdn.example.com/ig.png" alt="Instagram"></a>
      <a href="https://facebook.com/exampleshop"><img src="https://cdn.example.com/fb.png" alt="Facebook"></a>
      <a href="https://pinterest.com/exampleshop"><img src="https://cdn.example.com/pin.png" alt="Pinterest"></a>
    </p>
    <p style="margin: 0 0 12px 0;">Prices and availability are correct at the time of sending and may change.
    Discounts apply to the items shown while stocks last, cannot be combined with other offers and exclude gift cards.
    Free shipping for Gold members applies to standard delivery within the contiguous United States.
    Points are worth $0.05 each, expire 12 months after they were earned and have no cash value.</p>
    <p style="margin: 0 0 12px 0;">Questions about an order? Reply to this email or call us on 1-800-555-0199,
    Monday to Friday, 9am to 6pm Pacific. Returns are free within 30 days of delivery.</p>
    Example Shop, 1 Market Street, San Francisco, CA 94105<br>
    You are receiving this because you signed up at example.com as {{ profile.email }}.<br>
    Sent {{ now | date('%B %d, %Y') }}.<br>
    <a href="{{ links.preferences_url }}">Email preferences</a> &middot;
    <a href="{{ links.unsubscribe_url }}">Unsubscribe</a> &middot;
    <a href="{{ links.view_in_browser_url }}">View in browser</a> &middot;
    <a href="mailto:help@example.com">Contact us</a>
  </td></tr>
</table>
</td></tr>
</table>
</body>
</html>
"""  # noqa: E501 - an email template, written as email templates are

FIRST_NAMES = ("Ann", "Bob", "Chloé", "Dmitri", "Émile", "Fatima", "Grace", "Hiro", "Ines", "Jon")
CATEGORIES = ("mugs", "lamps", "rugs", "planters", "candles")
CURRENCIES = ("USD", "USD", "EUR", "GBP", "JPY")
TIMEZONES = ("America/New_York", "Europe/Paris", "Asia/Tokyo", "Not/AZone", None)


def make_contexts(count: int, seed: int) -> list[RenderContext]:
    """`count` recipients, each with its own traits, history and four products."""
    rng = random.Random(seed)
    now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    contexts = []
    for number in range(count):
        traits: dict[str, Any] = {"tier": rng.choice(("gold", "silver", "none"))}
        if rng.random() < 0.9:
            traits["first_name"] = rng.choice(FIRST_NAMES) + ("<b>" if number % 97 == 0 else "")
        if rng.random() < 0.6:
            traits["loyalty_points"] = rng.randrange(0, 5_000)
        if (zone := rng.choice(TIMEZONES)) is not None:
            traits["timezone"] = zone
        computed = {"orders_count": rng.randrange(0, 12), "last_category": rng.choice(CATEGORIES)}
        currency = rng.choice(CURRENCIES)
        products = []
        for slot in range(4):
            price = rng.randrange(500, 40_000)
            products.append(
                {
                    "url": f"https://shop.example.com/p/{rng.randrange(10**6)}",
                    "image_url": f"https://cdn.example.com/p/{slot}-{rng.randrange(10**6)}.jpg",
                    "name": f"{rng.choice(CATEGORIES).title()} No. {rng.randrange(100)} & co",
                    "price": price,
                    "compare_at": price + rng.randrange(0, 5_000) if rng.random() < 0.5 else None,
                    "currency": currency,
                    "description": "Hand-made, "
                    + "lovely and durable " * rng.randrange(2, 10)
                    + '"quoted"',
                    "stock": rng.randrange(0, 30),
                }
            )
        message_id = f"msg-{number}"
        contexts.append(
            RenderContext(
                profile=ProfileContext(
                    id=f"p-{number}",
                    user_id=f"user-{number}",
                    email=f"user{number}@example.com",
                    traits=traits,
                    computed=computed,
                ),
                message_id=message_id,
                now=now + timedelta(seconds=number),
                event=EventContext("Back In Stock", {"products": products}),
                links=Links(
                    unsubscribe_url=f"https://clarion.example/u/{message_id}",
                    preferences_url=f"https://clarion.example/p/{message_id}",
                    view_in_browser_url=f"https://clarion.example/v/{message_id}",
                ),
            )
        )
    return contexts


@dataclass(frozen=True, slots=True)
class Rate:
    """Recipients per second of wall-clock time, and CPU microseconds per recipient (the
    figure to trust on a machine others are using)."""

    per_s: float
    cpu_us: float


def measure(
    label: str, contexts: Sequence[RenderContext], step: Callable[[RenderContext], Any]
) -> Rate:
    """Run `step` for each context once (after one warm-up)."""
    step(contexts[0])
    wall, cpu = time.perf_counter(), time.process_time()
    for context in contexts:
        step(context)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rate = Rate(len(contexts) / wall, cpu / len(contexts) * 1e6)
    log.info("%s: %.0f/s, %.1f µs CPU each", label, rate.per_s, rate.cpu_us)
    return rate


def tracker(message_id: str) -> Callable[[str, int], str]:
    """A click-tracking `map_url` for one message: the link's number under the message's id
    (what the URL becomes is click tracking's business; this keeps its cost out)."""
    return lambda url, index: f"https://t.clarion.example/c/{message_id}/{index}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--profiles", type=int, default=20_000, help="recipients (20,000)")
    parser.add_argument("--sample", type=int, default=1_000, help="recipients for naive (1,000)")
    parser.add_argument("--seed", type=int, default=20261123, help="random seed of the profiles")
    args = parser.parse_args(argv)
    if args.profiles <= 0 or args.sample <= 0:
        parser.error("--profiles and --sample must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print one JSON line on stdout."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    started = time.monotonic()
    content = EmailContent(subject=SUBJECT, html=TEMPLATE, preheader=PREHEADER)
    problems = validate("email", content)
    if problems:
        log.error("the bench template is invalid: %s", problems)
        return 1
    contexts = make_contexts(args.profiles, args.seed)
    sample = contexts[: args.sample]

    compile_template.cache_clear()
    prepare_email.cache_clear()
    prepare_started = time.perf_counter()
    prepared = prepare_email(TEMPLATE, derive_text=True)
    prepare_ms = (time.perf_counter() - prepare_started) * 1000
    if prepared.per_recipient:
        log.error("the bench template was not prepared up front: %s", prepared.per_recipient)
        return 1
    bare_template = compile_template(TEMPLATE, "html")

    def html_with(template: Any, context: RenderContext) -> str:
        state = RenderState(context, timezone=timezone_of(context.profile.traits.get("timezone")))
        with render_scope(state):
            return run(template, with_globals(context.variables()))

    def whole_email(context: RenderContext) -> str:
        rendered = render("email", content, context)
        assert rendered.html is not None and rendered.text is not None
        html = rewrite_links(
            rendered.html,
            tracker(context.message_id),
            untracked={context.links.unsubscribe_url or ""},
        )
        return add_open_pixel(html, f"https://t.clarion.example/o/{context.message_id}.gif")

    def naive_email(context: RenderContext) -> str:
        html = inline_css(html_with(bare_template, context))
        assert html_to_text(html)
        html = rewrite_links(
            html, tracker(context.message_id), untracked={context.links.unsubscribe_url or ""}
        )
        return add_open_pixel(html, f"https://t.clarion.example/o/{context.message_id}.gif")

    log.info(
        "%d profiles, template %d bytes, prepared in %.1f ms",
        len(contexts),
        len(TEMPLATE),
        prepare_ms,
    )
    bare = measure("bare render", contexts, lambda c: html_with(bare_template, c))
    inlined = measure(
        "render, CSS inlined up front", contexts, lambda c: html_with(prepared.html, c)
    )
    email = measure("render()", contexts, lambda c: render("email", content, c))
    whole = measure("whole email", contexts, whole_email)
    naive_inlined = measure(
        "naive: render + css_inline", sample, lambda c: inline_css(html_with(bare_template, c))
    )
    naive_whole = measure("naive: + inscriptis text, links", sample, naive_email)
    report: dict[str, Any] = {
        "bench": "rendering",
        "machine": machine(),
        "profiles": len(contexts),
        "template_bytes": len(TEMPLATE),
        "email_bytes": len(whole_email(contexts[1])),
        "prepare_ms": round(prepare_ms, 1),
        "renders_per_s": round(bare.per_s),
        "with_inlining_per_s": round(inlined.per_s),
        "with_text_part_per_s": round(whole.per_s),
        "cpu_us": {
            "render": round(bare.cpu_us, 1),
            "with_inlining": round(inlined.cpu_us, 1),
            "render_email": round(email.cpu_us, 1),
            "whole_email": round(whole.cpu_us, 1),
        },
        "naive": {
            "sample": len(sample),
            "with_inlining_per_s": round(naive_inlined.per_s),
            "with_text_part_per_s": round(naive_whole.per_s),
            "cpu_us": {
                "with_inlining": round(naive_inlined.cpu_us, 1),
                "whole_email": round(naive_whole.cpu_us, 1),
            },
        },
        "targets_met": {"whole_email_under_500_us_cpu": whole.cpu_us < TARGET_EMAIL_US},
        "seconds": round(time.monotonic() - started, 1),
    }
    sys.stdout.write(orjson.dumps(report).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
