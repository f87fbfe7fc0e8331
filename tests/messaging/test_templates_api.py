"""Message templates over the API: bad content is refused listing every problem with its
field and line and saves nothing; topics are checked; versions grow and old ones stay
readable; archived templates refuse new sends; previews for a real profile and a described
one, with locale fallback; the render context and addresses; `clarion templates ...`."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from clarion.core.clock import SystemClock
from clarion.core.database import Database
from clarion.core.errors import Conflict, NotFound
from clarion.messaging import templates
from clarion.messaging.context import address_for, render_context
from clarion.messaging.models import MessageTemplate, SubscriptionTopic, TemplateVersion
from clarion.messaging.rendering import EventContext, Links, ProfileContext
from clarion.profiles import service as profiles
from tests.conftest import Tenant, problem, run_cli

WELCOME = {
    "subject": "Welcome {{ profile.traits.first_name | default('friend') }}",
    "html": (
        "<html><head><style>p { color: red; }</style></head>"
        "<body><p>Hello {{ profile.traits.first_name }}, you bought "
        "{{ event.properties.item | default('nothing') }}.</p>"
        '<a href="{{ links.unsubscribe_url }}">Unsubscribe</a></body></html>'
    ),
}
BAD_LOCALES = {"default_locale": "en", "locales": {"en": {"subject": "{{ x }}", "html": "<p>"}}}
LOCALIZED = {
    "default_locale": "en",
    "locales": {
        "en": {"subject": "Hello", "html": "<p>Hello {{ profile.email }}</p>"},
        "fr": {"subject": "Bonjour", "html": "<p>Bonjour {{ profile.email }}</p>"},
    },
}


async def create(
    client: httpx.AsyncClient, tenant: Tenant, content: dict[str, Any] = WELCOME, **fields: Any
) -> Any:
    body = {"name": "Welcome", "channel": "email", "content": content, **fields}
    response = await client.post("/api/v1/templates", json=body, headers=tenant.admin)
    assert response.status_code == 201, response.text
    return response.json()


async def topic(database: Database, tenant: Tenant, channel: str = "email") -> int:
    async with database.write_session() as session:
        row = SubscriptionTopic(
            workspace_id=tenant.id, name=f"News {uuid.uuid4().hex[:6]}", channel=channel,
            default_state="opted_in", double_opt_in=False, created_at=datetime.now(UTC),
        )  # fmt: skip
        session.add(row)
        await session.commit()
        return row.id


async def counts(database: Database, tenant: Tenant) -> tuple[int, int]:
    async with database.read_session() as session:
        made = await session.scalar(
            select(func.count()).where(MessageTemplate.workspace_id == tenant.id)
        )
        versions = await session.scalar(
            select(func.count()).where(TemplateVersion.workspace_id == tenant.id)
        )
        return made or 0, versions or 0


async def make_profile(database: Database, tenant: Tenant, **fields: Any) -> uuid.UUID:
    fields.setdefault("traits", {})
    async with database.write_session() as session:
        profile = await profiles.upsert_profile(
            session, workspace_id=tenant.id, now=SystemClock().now(), **fields
        )
        await session.commit()
        return profile.id


async def test_bad_templates_are_refused_listing_every_problem_and_nothing_is_saved(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, database: Database
) -> None:
    broken = {"subject": "Hi {{ customer.name }}", "html": "<p>\n{{ profile.traits.name </p>"}
    response = await client.post(
        "/api/v1/templates",
        json={"name": "Broken", "channel": "email", "content": broken},
        headers=tenant.admin,
    )
    body = problem(response, 422)
    errors = {error["field"]: error["message"] for error in body["errors"]}
    assert set(errors) == {"content.subject", "content.html"}
    assert errors["content.subject"].startswith("line 1: unknown variable 'customer'")
    assert errors["content.html"].startswith("line 2: ")

    wrong_email_topic = await topic(database, tenant, channel="sms")
    theirs = await topic(database, other_tenant)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"channel": "fax"}, "channel"),
        ({"category": "spam"}, "category"),
        ({"name": ""}, "name"),
        ({"content": {"subject": "Hi"}}, "content.html"),
        ({"content": {**WELCOME, "footer": "x"}}, "content.footer"),
        ({"content": {"subject": " ", "html": "<p>x</p>"}}, "content.subject"),
        ({"content": {**LOCALIZED, "default_locale": "de"}}, "content"),
        ({"content": BAD_LOCALES}, "content.locales.en.subject"),
        ({"channel": "sms", "content": {"body": "{% if %}"}}, "content.body"),
        ({"topic_id": 999_999}, "topic_id"),
        ({"topic_id": theirs}, "topic_id"),
        ({"topic_id": wrong_email_topic}, "topic_id"),
    ]
    for fields, field in cases:
        body = {"name": "Bad", "channel": "email", "content": WELCOME, **fields}
        problem(await client.post("/api/v1/templates", json=body, headers=tenant.admin), 422, field)
    assert await counts(database, tenant) == (0, 0)
    listed = await client.get("/api/v1/templates", headers=tenant.admin)
    assert listed.json()["items"] == []

    check = {"channel": "email", "content": broken}
    checked = await client.post("/api/v1/templates/validate", json=check, headers=tenant.admin)
    assert {e["field"] for e in problem(checked, 422)["errors"]} == set(errors)
    good = await client.post(
        "/api/v1/templates/validate",
        json={"channel": "email", "content": WELCOME},
        headers=tenant.admin,
    )
    assert good.status_code == 200
    assert good.json()["content"] == {**WELCOME, "text": None, "preheader": None}
    assert await counts(database, tenant) == (0, 0)


async def test_bad_changes_are_refused_and_change_nothing(
    client: httpx.AsyncClient, tenant: Tenant, database: Database
) -> None:
    first = await create(client, tenant)
    await create(client, tenant, name="Other")
    url = f"/api/v1/templates/{first['id']}"
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"content": {"subject": "{{ nope }}", "html": "<p></p>"}}, 422, "content.subject"),
        ({"channel": "sms"}, 422, "channel"),
        ({"topic_id": 999_999}, 422, "topic_id"),
        ({"name": "Other"}, 409, "name"),
    ]
    for body, status, field in cases:
        problem(await client.patch(url, json=body, headers=tenant.admin), status, field)
    unchanged = (await client.get(url, headers=tenant.admin)).json()
    assert unchanged == first
    assert await counts(database, tenant) == (2, 2)
    for method, suffix in [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("GET", "/versions"),
                           ("GET", "/versions/1"), ("POST", "/preview")]:  # fmt: skip
        body = {"profile": {}} if suffix == "/preview" else {}
        response = await client.request(
            method, f"/api/v1/templates/999999{suffix}", headers=tenant.admin,
            json=body if method in ("PATCH", "POST") else None,
        )  # fmt: skip
        problem(response, 404)
    problem(await client.get(f"{url}/versions/7", headers=tenant.admin), 404)
    problem(await client.get(f"{url}/versions/0", headers=tenant.admin), 422, "version")
    problem(await client.get("/api/v1/templates/0", headers=tenant.admin), 422, "template_id")
    problem(await client.get("/api/v1/templates?cursor=x", headers=tenant.admin), 400, "cursor")


async def test_new_content_makes_a_new_version_and_old_ones_stay_readable(
    client: httpx.AsyncClient, tenant: Tenant, database: Database
) -> None:
    news = await topic(database, tenant)
    created = await create(client, tenant, topic_id=news)
    url = f"/api/v1/templates/{created['id']}"
    assert (created["current_version"], created["topic_id"]) == (1, news)
    same = await client.patch(url, json={"content": WELCOME}, headers=tenant.admin)
    assert same.json()["current_version"] == 1  # unchanged content is no new version
    second = {**WELCOME, "subject": "Welcome aboard"}
    changed = await client.patch(url, json={"content": second}, headers=tenant.admin)
    assert changed.status_code == 200, changed.text
    assert changed.json()["current_version"] == 2
    assert changed.json()["content"]["subject"] == "Welcome aboard"
    renamed = await client.patch(
        url, json={"name": "Hello", "category": "transactional", "topic_id": None},
        headers=tenant.admin,
    )  # fmt: skip
    assert (renamed.json()["current_version"], renamed.json()["name"]) == (2, "Hello")
    assert (renamed.json()["category"], renamed.json()["topic_id"]) == ("transactional", None)
    third = await client.patch(url, json={"content": LOCALIZED}, headers=tenant.admin)
    assert third.json()["current_version"] == 3

    versions = (await client.get(f"{url}/versions", headers=tenant.admin)).json()
    assert [v["version"] for v in versions["items"]] == [3, 2, 1]
    page = await client.get(f"{url}/versions", params={"limit": 2}, headers=tenant.admin)
    rest = await client.get(
        f"{url}/versions", params={"limit": 2, "cursor": page.json()["next_cursor"]},
        headers=tenant.admin,
    )  # fmt: skip
    assert [v["version"] for v in rest.json()["items"]] == [1]
    old = (await client.get(f"{url}/versions/1", headers=tenant.admin)).json()
    assert old["content"]["subject"] == WELCOME["subject"]
    assert (await client.get(url, headers=tenant.admin)).json()["content"]["locales"]["fr"]
    async with database.read_session() as session:
        template, version = await templates.current_version(
            session, workspace_id=tenant.id, template_id=created["id"]
        )
        assert (template.current_version, version.version) == (3, 3)
        assert version.content["default_locale"] == "en"
    preview_old = await client.post(
        f"{url}/preview", json={"profile": {"traits": {"first_name": "Ann"}}, "version": 1},
        headers=tenant.admin,
    )  # fmt: skip
    assert preview_old.json()["subject"] == "Welcome Ann"


async def test_an_archived_template_is_readable_but_sends_nothing_new(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, database: Database
) -> None:
    created = await create(client, tenant)
    url = f"/api/v1/templates/{created['id']}"
    assert (await client.delete(url, headers=tenant.admin)).status_code == 204
    assert (await client.delete(url, headers=tenant.admin)).status_code == 204  # once
    read = (await client.get(url, headers=tenant.admin)).json()
    assert read["archived_at"] is not None and read["content"]["subject"] == WELCOME["subject"]
    assert (await client.get("/api/v1/templates", headers=tenant.admin)).json()["items"] == []
    archived = await client.get("/api/v1/templates?archived=true", headers=tenant.admin)
    assert [t["id"] for t in archived.json()["items"]] == [created["id"]]
    problem(await client.patch(url, json={"name": "Again"}, headers=tenant.admin), 409)
    async with database.read_session() as session:
        with pytest.raises(Conflict):
            await templates.current_version(
                session, workspace_id=tenant.id, template_id=created["id"]
            )
        with pytest.raises(NotFound):
            await templates.current_version(
                session, workspace_id=other_tenant.id, template_id=created["id"]
            )
        with pytest.raises(NotFound):
            await templates.current_version(session, workspace_id=tenant.id, template_id=999_999)
    versions = await client.get(f"{url}/versions", headers=tenant.admin)
    assert [v["version"] for v in versions.json()["items"]] == [1]


async def test_preview_for_a_real_profile_inlines_css_and_derives_the_text(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, database: Database
) -> None:
    created = await create(client, tenant)
    profile_id = await make_profile(
        database, tenant, user_id="ann-1", email="Ann@Example.com", traits={"first_name": "Ann"}
    )
    url = f"/api/v1/templates/{created['id']}/preview"
    body = {
        "profile_id": str(profile_id),
        "event": {"name": "Order", "properties": {"item": "a mug"}},
    }
    response = await client.post(url, json=body, headers=tenant.admin)
    assert response.status_code == 200, response.text
    shown = response.json()
    assert (shown["channel"], shown["version"], shown["subject"]) == ("email", 1, "Welcome Ann")
    assert '<p style="color: red;">Hello Ann, you bought a mug.</p>' in shown["html"]
    assert "<style>" not in shown["html"]
    assert "Hello Ann, you bought a mug." in shown["text"]
    assert "Unsubscribe" in shown["text"]

    theirs = await make_profile(database, other_tenant, user_id="ann-1")
    stranger = {"profile_id": str(theirs)}
    problem(await client.post(url, json=stranger, headers=tenant.admin), 404, "profile_id")
    problem(await client.post(url, json={}, headers=tenant.admin), 422, "profile_id")
    both = {"profile_id": str(profile_id), "profile": {}}
    problem(await client.post(url, json=both, headers=tenant.admin), 422, "profile_id")


async def test_preview_for_a_described_profile_and_what_does_not_render(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    sms = await create(
        client, tenant, {"body": "Hi {{ profile.traits.first_name }}, {{ profile.phone }}"},
        name="Text", channel="sms",
    )  # fmt: skip
    url = f"/api/v1/templates/{sms['id']}/preview"
    described = {"phone": "+15550001111", "traits": {"first_name": "Zoë"}}
    shown = await client.post(url, json={"profile": described}, headers=tenant.admin)
    assert shown.status_code == 200, shown.text
    assert shown.json()["text"] == "Hi Zoë, +15550001111"
    assert shown.json()["sms"] == {"encoding": "UCS-2", "units": 20, "segments": 1}
    missing = await client.post(url, json={"profile": {}}, headers=tenant.admin)
    body = problem(missing, 422, "content.body")
    assert "profile.traits.first_name is undefined" in body["errors"][0]["message"]
    problem(await client.post(url, json={"profile": {}, "version": 2}, headers=tenant.admin), 404)


async def test_a_template_rendering_a_nul_or_a_lone_surrogate_is_refused_naming_the_field(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    # A string literal's escape renders text no UTF-8 (or PostgreSQL) carries: the preview's
    # answer was a 500, and an inbox send failed its delivery job at every retry.
    cases = [
        ("sms", {"body": "Hi {{ '\\ud800' }}"}, "content.body"),
        ("email", {"subject": "{{ '\\udfff' }}", "html": "<p>x</p>"}, "content.subject"),
        ("webhook", {"body": {"name": "{{ '\\ud800' }}"}}, "content.body.name"),
        ("inbox", {"title": "T {{ '\\x00' }}", "body": "B"}, "content.title"),
        ("sms", {"body": "{{ '%c' % 0 }}"}, "content.body"),
    ]
    for number, (channel, content, field) in enumerate(cases):
        made = await create(client, tenant, content, name=f"Odd {number}", channel=channel)
        url = f"/api/v1/templates/{made['id']}/preview"
        body = problem(await client.post(url, json={"profile": {}}, headers=tenant.admin), 422)
        assert body["errors"][0]["field"] == field, body
        assert "lone surrogate" in body["errors"][0]["message"] or "NUL" in str(body)


async def test_preview_falls_back_through_locales(
    client: httpx.AsyncClient, tenant: Tenant, database: Database
) -> None:
    created = await create(client, tenant, LOCALIZED)
    url = f"/api/v1/templates/{created['id']}/preview"
    profile = {"email": "zoe@example.com"}
    for locale, expected in [("fr-CA", ("fr", "Bonjour")), ("FR", ("fr", "Bonjour")),
                             ("de", ("en", "Hello")), (None, ("en", "Hello"))]:  # fmt: skip
        body = {"profile": profile, "locale": locale}
        shown = (await client.post(url, json=body, headers=tenant.admin)).json()
        assert (shown["locale"], shown["subject"]) == expected, locale
        assert f"{expected[1]} zoe@example.com" in shown["html"]
    french = await make_profile(
        database, tenant, email="zoe@example.com", traits={"locale": "fr_BE"}
    )
    shown = await client.post(url, json={"profile_id": str(french)}, headers=tenant.admin)
    assert (shown.json()["locale"], shown.json()["subject"]) == ("fr", "Bonjour")


async def test_render_context_and_addresses(
    database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    now = datetime.now(UTC)
    profile_id = await make_profile(
        database, tenant, user_id="u-7", email="Old@Example.com", phone="+1 (555) 000-1111",
        traits={"first_name": "Ann", "push_token": "fcm-token-1"},
    )  # fmt: skip
    async with database.read_session() as session:
        context = await render_context(
            session, workspace_id=tenant.id, profile_id=profile_id, message_id="m-1", now=now,
            event=EventContext("Order", {"total": 5}), journey={"step": 2},
            links=Links(unsubscribe_url="https://x.test/u"),
        )  # fmt: skip
        with pytest.raises(NotFound):
            await render_context(
                session, workspace_id=other_tenant.id, profile_id=profile_id, message_id="m",
                now=now,
            )  # fmt: skip
    profile = context.profile
    assert (profile.id, profile.user_id, profile.phone) == (profile_id, "u-7", "+15550001111")
    assert profile.email == "Old@Example.com"  # the trait, as the customer wrote it
    assert profile.traits["first_name"] == "Ann" and "first_seen_at" not in profile.traits
    assert (context.message_id, context.now, context.journey) == ("m-1", now, {"step": 2})
    assert context.event == EventContext("Order", {"total": 5})
    assert context.links.unsubscribe_url == "https://x.test/u"
    assert address_for("email", profile) == "Old@Example.com"
    assert address_for("sms", profile) == "+15550001111"
    assert address_for("push", profile) == "fcm-token-1"
    assert address_for("inbox", profile) == str(profile_id)
    assert address_for("webhook", profile) is None

    bare = ProfileContext(id="p", traits={"email": " a@b.example ", "device_token": "d-1"})
    assert address_for("email", bare) == "a@b.example"
    assert (address_for("sms", bare), address_for("push", bare)) == (None, "d-1")
    bad = ProfileContext(id="p", traits={"email": "nope", "phone": "12"})
    assert (address_for("email", bad), address_for("sms", bad), address_for("push", bad)) == (
        None, None, None,
    )  # fmt: skip


async def _count_in(url: str) -> int:
    database = Database(url)
    try:
        async with database.read_session() as session:
            return (await session.scalar(select(func.count()).select_from(TemplateVersion))) or 0
    finally:
        await database.dispose()


def test_cli_validates_applies_lists_and_shows_templates(
    clarion: CliRunner, fresh_database: Database, tmp_path: Path
) -> None:
    run_cli(clarion, "migrate")
    file = tmp_path / "welcome.json"
    file.write_text(json.dumps({"name": "Welcome", "channel": "email", "content": WELCOME}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "Bad", "channel": "sms", "content": {"body": "{{ x }}"}}))
    assert "a valid email template" in run_cli(clarion, "templates", "validate", str(file)).output
    refused = run_cli(clarion, "templates", "validate", str(bad), code=1).output
    assert "content.body: line 1: unknown variable 'x'" in refused
    run_cli(clarion, "templates", "apply", str(bad), code=1)
    assert asyncio.run(_count_in(fresh_database.url)) == 0

    created = run_cli(clarion, "templates", "apply", str(file)).output
    assert "created (version 1)" in created
    assert "unchanged (version 1)" in run_cli(clarion, "templates", "apply", str(file)).output
    file.write_text(
        json.dumps({"name": "Welcome", "channel": "email", "content": {**WELCOME, "subject": "Yo"}})
    )
    assert "updated (version 2)" in run_cli(clarion, "templates", "apply", str(file)).output
    template_id = created.split()[1]
    listed = run_cli(clarion, "templates", "list").output
    assert f"{template_id}\temail\tWelcome\tv2\tmarketing" in listed
    shown = json.loads(run_cli(clarion, "templates", "show", template_id, "--version", "1").output)
    assert (shown["version"], shown["content"]["subject"]) == (1, WELCOME["subject"])
    assert asyncio.run(_count_in(fresh_database.url)) == 2
