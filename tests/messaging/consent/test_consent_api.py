"""Topics, consent, suppressions and the consent import over the management API: what they
store, the events a change emits, and bad input refused naming the field, changing nothing."""

from __future__ import annotations

import uuid

from clarion.core.settings import Settings
from tests.conftest import problem
from tests.messaging.consent.conftest import Shop


async def test_topics_are_created_read_listed_changed_and_deleted(shop: Shop) -> None:
    admin = shop.tenant.admin
    created = await shop.client.post(
        "/api/v1/topics",
        json={"name": "News", "description": "Once a week", "channel": "email"},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    news = created.json()
    assert (news["default_state"], news["double_opt_in"]) == ("opted_in", False)
    confirmed = await shop.topic("Digest", double_opt_in=True)
    texts = await shop.topic("Texts", channel="sms", default_state="opted_out")

    first = await shop.client.get("/api/v1/topics", params={"limit": 2}, headers=admin)
    rest = await shop.client.get(
        "/api/v1/topics", params={"cursor": first.json()["next_cursor"]}, headers=admin
    )
    listed = first.json()["items"] + rest.json()["items"]
    assert [t["id"] for t in listed] == [news["id"], confirmed, texts]
    assert listed[1]["default_state"] == "opted_out"  # double opt-in starts opted out
    assert rest.json()["next_cursor"] is None

    changed = await shop.client.patch(
        f"/api/v1/topics/{news['id']}",
        json={"name": "Weekly news", "default_state": "opted_out"},
        headers=admin,
    )
    assert changed.status_code == 200, changed.text
    read = await shop.client.get(f"/api/v1/topics/{news['id']}", headers=admin)
    assert (read.json()["name"], read.json()["default_state"]) == ("Weekly news", "opted_out")
    assert read.json()["description"] == "Once a week"

    deleted = await shop.client.delete(f"/api/v1/topics/{news['id']}", headers=admin)
    assert deleted.status_code == 204
    problem(await shop.client.get(f"/api/v1/topics/{news['id']}", headers=admin), 404)
    problem(await shop.client.delete(f"/api/v1/topics/{news['id']}", headers=admin), 404)


async def test_bad_topics_are_refused_naming_the_field_and_nothing_is_saved(shop: Shop) -> None:
    admin = shop.tenant.admin
    texts = await shop.topic("Texts", channel="sms")
    cases = [
        ({"name": "X", "channel": "sms", "double_opt_in": True}, 422, "double_opt_in"),
        (
            {"name": "X", "channel": "email", "double_opt_in": True, "default_state": "opted_in"},
            422,
            "default_state",
        ),
        ({"name": "X", "channel": "fax"}, 422, "channel"),
        ({"name": "", "channel": "email"}, 422, "name"),
        ({"name": "   ", "channel": "email"}, 422, "name"),
        ({"name": "\t\r\n", "channel": "email"}, 422, "name"),
        ({"name": "X", "channel": "email", "default_state": "maybe"}, 422, "default_state"),
        ({"name": "Texts", "channel": "email"}, 409, "name"),
    ]
    for body, status, field in cases:
        problem(await shop.client.post("/api/v1/topics", json=body, headers=admin), status, field)
    url = f"/api/v1/topics/{texts}"
    problem(
        await shop.client.patch(url, json={"double_opt_in": True}, headers=admin),
        422,
        "double_opt_in",
    )
    problem(await shop.client.patch(url, json={"channel": "email"}, headers=admin), 422, "channel")
    problem(await shop.client.patch(url, json={"name": "  "}, headers=admin), 422, "name")
    digest = await shop.topic("Digest", double_opt_in=True)
    refused = await shop.client.patch(
        f"/api/v1/topics/{digest}", json={"default_state": "opted_in"}, headers=admin
    )
    problem(refused, 422, "default_state")
    listed = (await shop.client.get("/api/v1/topics", headers=admin)).json()["items"]
    assert [(t["name"], t["channel"], t["double_opt_in"], t["default_state"]) for t in listed] == [
        ("Texts", "sms", False, "opted_in"),
        ("Digest", "email", True, "opted_out"),
    ]
    # A read-only key reads but never writes.
    assert (await shop.client.get(url, headers=shop.tenant.reader)).status_code == 200
    problem(await shop.client.delete(url, headers=shop.tenant.reader), 403)


async def test_a_change_of_consent_emits_one_event_even_when_set_twice(shop: Shop) -> None:
    news = await shop.topic("News")
    reader = await shop.person("reader", email="reader@example.com")

    await shop.say(reader, "email", "opted_out", news)
    await shop.say(reader, "email", "opted_out", news)
    [unsubscribed] = await shop.events("Unsubscribed")
    assert unsubscribed.user_id == "reader"
    assert unsubscribed.properties == {
        "channel": "email",
        "topic_id": news,
        "topic_name": "News",
        "source": "api",
    }
    assert await shop.events("Subscribed") == []

    await shop.say(reader, "email", "opted_in", news)
    await shop.say(reader, "email", "opted_in", news)
    [subscribed] = await shop.events("Subscribed")
    assert subscribed.properties["topic_id"] == news

    await shop.say(reader, "email", "opted_out")  # the whole channel
    await shop.say(reader, "email", "opted_out", news)  # and the topic again: a new change
    unsubscribed_events = await shop.events("Unsubscribed")
    assert [
        (e.properties["topic_id"], e.properties["topic_name"]) for e in unsubscribed_events
    ] == [
        (news, "News"),
        (None, None),
        (news, "News"),
    ]
    assert len({e.message_id for e in unsubscribed_events}) == 3
    assert await shop.states(reader) == {
        "email": ("opted_out", "api"),
        f"email:{news}": ("opted_out", "api"),
    }


async def test_bad_consent_is_refused_naming_the_field_and_nothing_is_saved(
    shop: Shop, other_shop: Shop
) -> None:
    admin = shop.tenant.admin
    texts = await shop.topic("Texts", channel="sms")
    theirs = await other_shop.topic("Theirs")
    reader = await shop.person("reader", email="reader@example.com")
    before = await shop.counts()
    url = f"/api/v1/profiles/{reader}/consent"
    cases = [
        ({"channel": "email", "state": "maybe"}, 422, "state"),
        ({"channel": "fax", "state": "opted_in"}, 422, "channel"),
        ({"channel": "email", "state": "pending"}, 422, "state"),  # only a confirmation link
        ({"channel": "email", "topic_id": 0, "state": "opted_in"}, 422, "topic_id"),
        ({"channel": "email", "topic_id": texts, "state": "opted_in"}, 422, "topic_id"),
        ({"channel": "email", "topic_id": theirs, "state": "opted_in"}, 404, "topic_id"),
        ({"channel": "email", "state": "opted_in", "source": "x"}, 422, "source"),
    ]
    for body, status, field in cases:
        problem(await shop.client.put(url, json=body, headers=admin), status, field)
    nobody = f"/api/v1/profiles/{uuid.uuid4()}/consent"
    problem(
        await shop.client.put(
            nobody, json={"channel": "email", "state": "opted_out"}, headers=admin
        ),
        404,
    )
    problem(await shop.client.get(nobody, headers=admin), 404)
    assert await shop.counts() == before
    assert await shop.states(reader) == {}


async def test_a_double_opt_in_is_started_over_the_api(shop: Shop, settings: Settings) -> None:
    digest = await shop.topic("Digest", double_opt_in=True)
    news = await shop.topic("News")
    reader = await shop.person("reader", email="reader@example.com")
    url = f"/api/v1/profiles/{reader}/consent/opt-in"

    started = await shop.client.post(url, json={"topic_id": digest}, headers=shop.tenant.admin)
    assert started.status_code == 201, started.text
    assert started.json()["confirmation_url"].startswith(f"{settings.public_url}/c/")
    assert await shop.states(reader) == {f"email:{digest}": ("pending", "api")}
    assert await shop.events("Subscribed") == []  # not before it is confirmed

    refused = await shop.client.post(url, json={"topic_id": news}, headers=shop.tenant.admin)
    problem(refused, 422, "topic_id")
    assert await shop.states(reader) == {f"email:{digest}": ("pending", "api")}


async def test_suppressions_are_added_once_listed_and_removed(shop: Shop) -> None:
    admin = shop.tenant.admin
    body = {"channel": "email", "address": " Bounced@Example.com ", "reason": "hard_bounce"}
    added = await shop.client.post("/api/v1/suppressions", json=body, headers=admin)
    assert added.status_code == 201, added.text
    assert (added.json()["address"], added.json()["reason"]) == (
        "bounced@example.com",
        "hard_bounce",
    )
    again = await shop.client.post(
        "/api/v1/suppressions", json={**body, "reason": "manual"}, headers=admin
    )
    assert again.status_code == 200
    assert again.json() == added.json()
    texted = {"channel": "sms", "address": "+44 20 7946 0000"}
    assert (
        await shop.client.post("/api/v1/suppressions", json=texted, headers=admin)
    ).status_code == 201

    listed = (await shop.client.get("/api/v1/suppressions", headers=admin)).json()
    assert [(s["channel"], s["address"], s["reason"]) for s in listed["items"]] == [
        ("sms", "+442079460000", "manual"),
        ("email", "bounced@example.com", "hard_bounce"),
    ]
    email_only = await shop.client.get(
        "/api/v1/suppressions", params={"channel": "email"}, headers=admin
    )
    assert [s["id"] for s in email_only.json()["items"]] == [added.json()["id"]]

    url = f"/api/v1/suppressions/{added.json()['id']}"
    assert (await shop.client.delete(url, headers=admin)).status_code == 204
    problem(await shop.client.delete(url, headers=admin), 404)
    left = (await shop.client.get("/api/v1/suppressions", headers=admin)).json()["items"]
    assert [s["channel"] for s in left] == ["sms"]


async def test_suppressions_are_listed_by_reason_erased_included(shop: Shop) -> None:
    """`erased` is a reason like the others (a profile erased with `suppress=true` gives
    it): an admin may give it by hand, as any other, and the list filters by reason."""
    admin = shop.tenant.admin
    made = {}
    for address, reason in [
        ("gone@example.com", "erased"),
        ("bounced@example.com", "hard_bounce"),
        ("asked@example.com", "manual"),
    ]:
        body = {"channel": "email", "address": address, "reason": reason}
        added = await shop.client.post("/api/v1/suppressions", json=body, headers=admin)
        assert added.status_code == 201, added.text
        assert added.json()["reason"] == reason
        made[reason] = added.json()["id"]
    for reason, expected in [("erased", [made["erased"]]), ("manual", [made["manual"]])]:
        listed = await shop.client.get(
            "/api/v1/suppressions", params={"reason": reason}, headers=admin
        )
        assert [s["id"] for s in listed.json()["items"]] == expected, reason
    both = await shop.client.get(
        "/api/v1/suppressions", params={"reason": "erased", "channel": "sms"}, headers=admin
    )
    assert both.json()["items"] == []
    everything = (await shop.client.get("/api/v1/suppressions", headers=admin)).json()
    assert [s["reason"] for s in everything["items"]] == ["manual", "hard_bounce", "erased"]
    problem(
        await shop.client.get("/api/v1/suppressions", params={"reason": "bored"}, headers=admin),
        422,
        "reason",
    )


async def test_bad_suppressions_are_refused_naming_the_field(shop: Shop) -> None:
    admin = shop.tenant.admin
    before = await shop.counts()
    cases = [
        ({"channel": "email", "address": "not-an-email"}, 422, "address"),
        ({"channel": "sms", "address": "call me"}, 422, "address"),
        ({"channel": "email", "address": ""}, 422, "address"),
        ({"channel": "email", "address": "a@example.com", "reason": "bored"}, 422, "reason"),
        ({"channel": "fax", "address": "a@example.com"}, 422, "channel"),
        # Addresses no send could go to (sends take printable ASCII): they were listed.
        ({"channel": "email", "address": "a@b.co\u200b"}, 422, "address"),
        ({"channel": "email", "address": "\u00e9@example.com"}, 422, "address"),
        ({"channel": "push", "address": "t\u00f6ken"}, 422, "address"),
    ]
    for body, status, field in cases:
        problem(
            await shop.client.post("/api/v1/suppressions", json=body, headers=admin), status, field
        )
    problem(
        await shop.client.get("/api/v1/suppressions", params={"cursor": "x"}, headers=admin),
        400,
        "cursor",
    )
    assert await shop.counts() == before


async def test_an_import_applies_valid_items_and_reports_the_others_by_index(shop: Shop) -> None:
    news = await shop.topic("News")
    await shop.topic("Texts", channel="sms")
    ann = await shop.person("ann", email="ann@example.com")
    bob = await shop.person("bob", email="bob@example.com")
    items = [
        {"user_id": "ann", "channel": "email", "topic": news, "state": "opted_out"},
        {"email": "BOB@example.com", "channel": "email", "topic": "News", "state": "opted_out"},
        {"email": "bob@example.com", "channel": "sms", "state": "opted_out"},
        {"user_id": "nobody", "channel": "email", "state": "opted_out"},
        {"user_id": "ann", "channel": "email", "topic": "Nope", "state": "opted_in"},
        {"user_id": "ann", "channel": "email", "topic": "Texts", "state": "opted_in"},
        {"channel": "email", "state": "opted_in"},
        {"user_id": "ann", "channel": "email", "state": "later"},
        {"email": "not-an-email", "channel": "email", "state": "opted_in"},
        "junk",
        {"user_id": "ann", "channel": "email", "topic": True, "state": "opted_in"},
    ]
    response = await shop.client.post(
        "/api/v1/consents/import", json=items, headers=shop.tenant.admin
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["applied"] == 3
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (3, "user_id"),
        (4, "topic"),
        (5, "topic"),
        (6, "user_id"),
        (7, "state"),
        (8, "email"),
        (9, "body"),
        (10, "topic"),  # true is no topic id (pydantic's lax mode read it as 1)
    ]
    assert await shop.states(ann) == {f"email:{news}": ("opted_out", "import")}
    assert await shop.states(bob) == {
        f"email:{news}": ("opted_out", "import"),
        "sms": ("opted_out", "import"),
    }
    assert len(await shop.events("Unsubscribed")) == 3

    too_many = [items[0]] * 1001
    problem(
        await shop.client.post("/api/v1/consents/import", json=too_many, headers=shop.tenant.admin),
        422,
    )
