"""Deleting a subscription topic: refused while a template uses it (those templates would
then go to people who never opted in), and the unsubscribe links already sent for it keep
working, unsubscribing from the marketing of their message's channel."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI

from tests.conftest import problem
from tests.messaging.consent.conftest import Shop, app_links
from tests.messaging.consent.test_public_pages import FORM, assert_page, path
from tests.messaging.shop import PUBLIC, Post


async def _template(shop: Shop, name: str, topic_id: int | None, **fields: Any) -> int:
    body = {
        "name": name,
        "channel": "email",
        "topic_id": topic_id,
        "content": {"subject": "News", "html": "<p>News</p>"},
        **fields,
    }
    made = await shop.client.post("/api/v1/templates", json=body, headers=shop.tenant.admin)
    assert made.status_code == 201, made.text
    template_id: int = made.json()["id"]
    return template_id


async def test_a_topic_a_template_uses_cannot_be_deleted(shop: Shop) -> None:
    admin = shop.tenant.admin
    news = await shop.topic("News")
    reader = await shop.person("reader", email="reader@example.com")
    await shop.say(reader, "email", "opted_out", news)
    weekly = await _template(shop, "Weekly", news)
    monthly = await _template(shop, "Monthly", news)
    old = await _template(shop, "Old", news)
    archived = await shop.client.delete(f"/api/v1/templates/{old}", headers=admin)
    assert archived.status_code == 204
    before = await shop.counts()

    refused = problem(await shop.client.delete(f"/api/v1/topics/{news}", headers=admin), 409)
    assert "'Weekly'" in refused["detail"] and "'Monthly'" in refused["detail"]
    assert "'Old'" not in refused["detail"]  # archived: it sends nothing any more
    assert (await shop.client.get(f"/api/v1/topics/{news}", headers=admin)).status_code == 200
    for template_id in (weekly, monthly):
        read = await shop.client.get(f"/api/v1/templates/{template_id}", headers=admin)
        assert read.json()["topic_id"] == news
    assert await shop.counts() == before
    assert await shop.states(reader) == {f"email:{news}": ("opted_out", "api")}

    for template_id in (weekly, monthly):
        moved = await shop.client.patch(
            f"/api/v1/templates/{template_id}", json={"topic_id": None}, headers=admin
        )
        assert moved.status_code == 200, moved.text
    assert (await shop.client.delete(f"/api/v1/topics/{news}", headers=admin)).status_code == 204
    assert await shop.states(reader) == {}


async def test_an_unsubscribe_link_of_a_deleted_topic_unsubscribes_from_its_channel(
    app: FastAPI, post: Post
) -> None:
    admin = post.tenant.admin
    made = await post.client.post(
        "/api/v1/topics", json={"name": "News", "channel": "email"}, headers=admin
    )
    news = made.json()["id"]
    used = await post.client.patch(
        f"/api/v1/templates/{post.template_id}", json={"topic_id": news}, headers=admin
    )
    assert used.status_code == 200, used.text
    kim = await post.profile("kim", email="kim@example.org")
    [first] = await post.queue(post.request(kim, "news-1:kim", topic_id=news))
    await post.worker.drain()
    [mail] = post.sink.messages()
    link = path(mail.message["List-Unsubscribe"].strip("<>").removeprefix(PUBLIC))

    problem(await post.client.delete(f"/api/v1/topics/{news}", headers=admin), 409)
    await post.client.patch(
        f"/api/v1/templates/{post.template_id}", json={"topic_id": None}, headers=admin
    )
    assert (await post.client.delete(f"/api/v1/topics/{news}", headers=admin)).status_code == 204

    page = assert_page(await post.client.get(link))
    assert "all marketing emails" in page
    gone = await post.client.post(link, content=b"List-Unsubscribe=One-Click", headers=FORM)
    assert_page(gone)
    says = await post.client.get(f"/api/v1/profiles/{kim}/consent", headers=admin)
    assert [(c["scope"], c["state"], c["source"]) for c in says.json()] == [
        ("email", "opted_out", "one_click")
    ]
    assert (await post.message(first)).status == "unsubscribed"
    [second] = await post.queue(post.request(kim, "news-2:kim"))
    await post.worker.drain()
    refused = await post.message(second)
    assert (refused.status, refused.reason) == ("refused", "opted_out:email")

    # A link naming the gone topic but no message of it still finds nothing: which
    # workspace's topic it was cannot be told.
    links = app_links(app)
    unknown = [
        links.unsubscribe(workspace_id=post.tenant.id, profile_id=kim, topic_id=news),
        links.unsubscribe(
            workspace_id=post.tenant.id, profile_id=kim, topic_id=news, message_id=uuid.uuid4()
        ),
        links.unsubscribe(
            workspace_id=post.tenant.id, profile_id=kim, topic_id=news + 1, message_id=first
        ),
    ]
    for url in unknown:
        assert_page(await post.client.get(path(url)), 404)
