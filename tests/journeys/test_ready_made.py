"""The ready-made journeys: each compiles, is made through the API from the workspace's own
templates (and segment), and runs end to end, mail arriving at the real SMTP sink."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from clarion.journeys.compiler import References, compile_journey
from clarion.journeys.ready_made import READY_MADE, ready_made_graph
from tests.conftest import problem
from tests.messaging.shop import Post


@pytest.mark.parametrize("kind", sorted(READY_MADE))
def test_every_ready_made_journey_compiles(kind: str) -> None:
    made = READY_MADE[kind]
    ids = list(range(1, made.templates + 1))
    graph = ready_made_graph(
        kind,
        template_ids=ids,
        segment_id=9 if made.needs_segment else None,
        days_before=3 if made.takes_days_before else None,
    )
    known = References(segments=frozenset({9}), templates=dict.fromkeys(ids, "email"))
    plan = compile_journey(graph, known)
    assert plan.start == "start"


async def _email_template(post: Post, name: str) -> int:
    made = await post.client.post(
        "/api/v1/templates",
        json={"name": name, "channel": "email",
              "content": {"subject": name, "html": f"<p>{name}</p>"}},
        headers=post.tenant.admin,
    )  # fmt: skip
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


async def _live(post: Post, body: dict[str, Any]) -> int:
    made = await post.client.post(
        "/api/v1/journeys/ready-made", json=body, headers=post.tenant.admin
    )
    assert made.status_code == 201, made.text
    journey = made.json()["id"]
    published = await post.client.post(
        f"/api/v1/journeys/{journey}/publish", headers=post.tenant.admin
    )
    assert published.status_code == 200, published.text
    return int(journey)


async def _track(post: Post, *messages: dict[str, Any]) -> None:
    for number, message in enumerate(messages):
        message.setdefault(
            "messageId", f"{message.get('event', 'identify')}-{number}-{id(message)}"
        )
    sent = await post.client.post(
        "/v1/batch", json={"batch": list(messages)}, auth=post.tenant.writer
    )
    assert sent.status_code == 200, sent.text
    await post.worker.drain()


async def _later(post: Post, delta: timedelta) -> None:
    post.clock.advance(delta)
    await post.worker.drain()


def subjects(post: Post, to: str) -> list[str]:
    return [str(m.message["Subject"]) for m in post.sink.messages() if m.rcpt_tos == [to]]


async def test_the_ready_made_list_and_bad_requests(post: Post) -> None:
    listed = await post.client.get("/api/v1/journeys/ready-made", headers=post.tenant.admin)
    assert [r["kind"] for r in listed.json()] == list(READY_MADE)
    url = "/api/v1/journeys/ready-made"
    admin = post.tenant.admin
    problem(
        await post.client.post(url, json={"kind": "nope", "template_ids": []}, headers=admin),
        400,
        "kind",
    )
    problem(
        await post.client.post(url, json={"kind": "welcome", "template_ids": [1]}, headers=admin),
        400,
        "template_ids",
    )
    problem(
        await post.client.post(
            url, json={"kind": "win_back", "template_ids": [1, 2]}, headers=admin
        ),
        400,
        "segment_id",
    )
    # A draft naming templates the workspace lacks is refused, naming the template, and
    # nothing is saved.
    refused = await post.client.post(
        url, json={"kind": "birthday", "template_ids": [999_999]}, headers=admin
    )
    problem(refused, 400, "template_ids.0")
    assert (await post.client.get("/api/v1/journeys", headers=admin)).json()["items"] == []


async def test_abandoned_cart_end_to_end(post: Post) -> None:
    first = await _email_template(post, "Forgot something?")
    second = await _email_template(post, "Still there")
    await _live(post, {"kind": "abandoned_cart", "template_ids": [first, second]})
    await post.profile("cart-ann", email="ann@example.org")
    checkout = {"type": "track", "event": "Checkout Started", "userId": "cart-ann"}
    await _track(post, checkout | {"properties": {"cart_id": "c1"}})
    await _later(post, timedelta(minutes=30))
    await _track(post, checkout | {"properties": {"cart_id": "c2"}})
    await _track(post, {"type": "track", "event": "Order Completed", "userId": "cart-ann",
                        "properties": {"cart_id": "c2"}})  # fmt: skip
    await _later(post, timedelta(minutes=31))  # c1's hour is over; c2 was bought
    assert subjects(post, "ann@example.org") == ["Forgot something?"]
    await _later(post, timedelta(hours=23))
    assert subjects(post, "ann@example.org") == ["Forgot something?", "Still there"]


async def test_welcome_series_end_to_end_ends_on_the_first_order(post: Post) -> None:
    ids = [await _email_template(post, f"Welcome {n}") for n in (0, 2, 7)]
    await _live(post, {"kind": "welcome", "template_ids": ids})
    await post.profile("new-bo", email="bo@example.org")
    await _track(post, {"type": "track", "event": "Signed Up", "userId": "new-bo"})
    assert subjects(post, "bo@example.org") == ["Welcome 0"]
    await _later(post, timedelta(days=2, seconds=1))
    assert subjects(post, "bo@example.org") == ["Welcome 0", "Welcome 2"]
    await _track(post, {"type": "track", "event": "Order Completed", "userId": "new-bo"})
    await _later(post, timedelta(days=6))
    assert subjects(post, "bo@example.org") == ["Welcome 0", "Welcome 2"]


async def test_birthday_and_win_back_end_to_end(post: Post) -> None:
    promotion = await _email_template(post, "Happy birthday soon")
    now = post.clock.now()
    nine = now.replace(hour=9, minute=0, second=0, microsecond=0)  # UTC: no time zone trait
    if nine <= now:
        nine += timedelta(days=1)
    birthday = (nine.date() + timedelta(days=3)).replace(year=1988).isoformat()
    await post.profile("bday-cy", email="cy@example.org", birthday=birthday)
    await _live(post, {"kind": "birthday", "template_ids": [promotion], "days_before": 3})
    assert subjects(post, "cy@example.org") == []
    await _later(post, nine - now)
    assert subjects(post, "cy@example.org") == ["Happy birthday soon"]

    offer = await _email_template(post, "We miss you")
    reminder = await _email_template(post, "Last chance")
    lapsed = {"type": "trait", "trait": "lapsed", "operator": "eq", "value": True}
    segment = await post.client.post(
        "/api/v1/segments", json={"name": "Lapsed", "rule": lapsed}, headers=post.tenant.admin
    )
    assert segment.status_code == 201, segment.text
    await post.worker.drain()  # its baseline
    await _live(post, {"kind": "win_back", "template_ids": [offer, reminder],
                       "segment_id": segment.json()["id"]})  # fmt: skip
    await post.profile("gone-di", email="di@example.org", lapsed=True)
    await post.worker.drain()  # Segment Entered, then the journey
    assert subjects(post, "di@example.org") == ["We miss you"]
    await _later(post, timedelta(days=7, seconds=1))
    assert subjects(post, "di@example.org") == ["We miss you", "Last chance"]
