"""The public pages over HTTP: RFC 8058 one-click unsubscribe, the unsubscribe page and its
undo, the preferences page (a double opt-in ticked there mails its confirmation), double
opt-in confirmation; GETs that change nothing, and links that are not ours (tampered, of
another kind, key or workspace) answering one 404 page."""

from __future__ import annotations

import html
import re
import uuid
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI

from clarion.messaging.consent import pages
from clarion.messaging.consent.service import Links
from clarion.messaging.tracking import LinkSigner
from tests.conftest import problem
from tests.messaging.consent.conftest import Shop, app_links
from tests.messaging.shop import Post

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def path(url: str) -> str:
    """The path of a link the app signed (its base is the configured public URL)."""
    match = re.search(r"/[upc]/[A-Za-z0-9_-]+$", url)
    assert match, url
    return match.group(0)


def assert_page(response: httpx.Response, status: int = 200) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "set-cookie" not in response.headers
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    return response.text


def unsubscribe_path(shop: Shop, profile_id: uuid.UUID, **scope: Any) -> str:
    return path(shop.links.unsubscribe(workspace_id=shop.tenant.id, profile_id=profile_id, **scope))


async def test_one_click_unsubscribe_follows_rfc_8058(shop: Shop) -> None:
    news = await shop.topic("News")
    reader = await shop.person("reader", email="reader@example.com")
    url = unsubscribe_path(shop, reader, topic_id=news)

    response = await shop.client.post(url, content=b"List-Unsubscribe=One-Click", headers=FORM)
    assert_page(response)
    assert "location" not in response.headers
    assert await shop.states(reader) == {f"email:{news}": ("opted_out", "one_click")}
    [event] = await shop.events("Unsubscribed")
    assert event.properties == {
        "channel": "email",
        "topic_id": news,
        "topic_name": "News",
        "source": "one_click",
    }
    again = await shop.client.post(url, content=b"List-Unsubscribe=One-Click", headers=FORM)
    assert_page(again)
    assert len(await shop.events("Unsubscribed")) == 1


async def test_one_click_also_comes_as_multipart(shop: Shop) -> None:
    reader = await shop.person("reader", email="reader@example.com")
    url = unsubscribe_path(shop, reader, channel="email")
    boundary = "----clarion-test"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        f"One-Click\r\n--{boundary}--\r\n"
    ).encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    response = await shop.client.post(url, content=body, headers=headers)
    assert_page(response)
    assert "location" not in response.headers
    assert await shop.states(reader) == {"email": ("opted_out", "one_click")}


async def test_a_get_never_changes_anything(shop: Shop) -> None:
    news = await shop.topic("News")
    digest = await shop.topic("Digest", double_opt_in=True)
    reader = await shop.person("reader", email="reader@example.com")
    before = await shop.counts()
    links = [
        unsubscribe_path(shop, reader, topic_id=news),
        unsubscribe_path(shop, reader, channel="email"),
        unsubscribe_path(shop, reader),
        path(shop.links.preferences(workspace_id=shop.tenant.id, profile_id=reader)),
        path(shop.links.confirm(workspace_id=shop.tenant.id, profile_id=reader, topic_id=digest)),
    ]
    for url in links:
        for _ in range(2):
            page = assert_page(await shop.client.get(url))
            assert shop.tenant.slug in page  # the workspace's name
            assert '<form method="post">' in page
    assert await shop.counts() == before


async def test_the_page_unsubscribes_and_undo_subscribes_again(shop: Shop) -> None:
    news = await shop.topic("<script>alert(1)</script>")
    reader = await shop.person("reader", email="reader@example.com")
    url = unsubscribe_path(shop, reader, topic_id=news)

    page = assert_page(await shop.client.get(url))
    assert "<script>" not in page
    assert html.escape("<script>alert(1)</script>") in page

    done = assert_page(await shop.client.post(url, data={"action": "unsubscribe"}))
    assert "You are unsubscribed" in done and 'value="undo"' in done
    assert await shop.states(reader) == {f"email:{news}": ("opted_out", "unsubscribe_link")}
    [preferences] = re.findall(r'href="([^"]+)"', done)
    assert_page(await shop.client.get(path(html.unescape(preferences))))

    undone = assert_page(await shop.client.post(url, data={"action": "undo"}))
    assert "subscribed again" in undone
    assert await shop.states(reader) == {f"email:{news}": ("opted_in", "unsubscribe_link")}
    assert [len(await shop.events(name)) for name in ("Unsubscribed", "Subscribed")] == [1, 1]


async def test_a_link_naming_nothing_unsubscribes_from_all_marketing(shop: Shop) -> None:
    reader = await shop.person("reader", email="reader@example.com")
    response = await shop.client.post(
        unsubscribe_path(shop, reader), content=b"List-Unsubscribe=One-Click", headers=FORM
    )
    assert_page(response)
    assert await shop.states(reader) == dict.fromkeys(
        ("email", "sms", "push", "inbox", "webhook"), ("opted_out", "one_click")
    )


def tampered(token_path: str) -> list[str]:
    prefix, token = token_path[:3], token_path[3:]
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    return [prefix + flipped, prefix + token[:-2], prefix + token + "A", prefix + "junk"]


async def test_links_that_are_not_ours_answer_404_and_change_nothing(shop: Shop) -> None:
    news = await shop.topic("News")
    digest = await shop.topic("Digest", double_opt_in=True)
    reader = await shop.person("reader", email="reader@example.com")
    good = {
        "/u/": unsubscribe_path(shop, reader, topic_id=news),
        "/p/": path(shop.links.preferences(workspace_id=shop.tenant.id, profile_id=reader)),
        "/c/": path(
            shop.links.confirm(workspace_id=shop.tenant.id, profile_id=reader, topic_id=digest)
        ),
    }
    bad = [url for token_path in good.values() for url in tampered(token_path)]
    # A good token of one kind under another kind's path.
    bad += [good["/p/"].replace("/p/", "/u/"), good["/u/"].replace("/u/", "/c/")]
    bad += [good["/c/"].replace("/c/", "/p/")]
    # Signed with another key.
    stranger = Links(LinkSigner("another-secret-key-entirely"), "https://example.com")
    bad.append(path(stranger.unsubscribe(workspace_id=shop.tenant.id, profile_id=reader)))
    # Signed with our key, naming a profile or a topic that does not exist.
    bad.append(unsubscribe_path(shop, uuid.uuid4()))
    bad.append(unsubscribe_path(shop, reader, topic_id=10**12))
    before = await shop.counts()
    for url in bad:
        for method in ("GET", "POST"):
            response = await shop.client.request(
                method, url, content=b"List-Unsubscribe=One-Click", headers=FORM
            )
            page = assert_page(response, 404)
            assert shop.tenant.slug not in page and "Link not found" in page
    assert await shop.counts() == before
    assert await shop.states(reader) == {}


async def test_a_token_of_one_workspace_never_touches_another(shop: Shop, other_shop: Shop) -> None:
    theirs = await other_shop.topic("Theirs")
    their_reader = await other_shop.person("their-reader", email="r@example.com")
    await shop.person("our-reader", email="r@example.com")
    our_topic = await shop.topic("Ours")
    before = await other_shop.counts()
    # Our workspace's id with their profile or topic: nothing of theirs is found.
    crossed = [
        unsubscribe_path(shop, their_reader),
        unsubscribe_path(shop, their_reader, topic_id=theirs),
        path(shop.links.preferences(workspace_id=shop.tenant.id, profile_id=their_reader)),
        path(
            shop.links.confirm(
                workspace_id=shop.tenant.id, profile_id=their_reader, topic_id=our_topic
            )
        ),
    ]
    for url in crossed:
        for method in ("GET", "POST"):
            response = await shop.client.request(
                method,
                url,
                content=b"List-Unsubscribe=One-Click&topic=" + str(theirs).encode(),
                headers=FORM,
            )
            assert_page(response, 404)
    assert await other_shop.counts() == before
    assert await other_shop.states(their_reader) == {}
    # Their own link still works for them, and only for them.
    own = unsubscribe_path(other_shop, their_reader, topic_id=theirs)
    assert_page(await shop.client.post(own, content=b"List-Unsubscribe=One-Click", headers=FORM))
    assert await other_shop.states(their_reader) == {f"email:{theirs}": ("opted_out", "one_click")}
    assert await shop.counts() == (0, 0, 0)


def checked(page: str) -> dict[str, bool]:
    """Each checkbox's label with whether it is checked."""
    boxes = re.findall(r'<input type="checkbox" id="([^"]+)"([^>]*)>', page)
    labels = dict(re.findall(r'<label for="([^"]+)">([^<]+)</label>', page))
    return {html.unescape(labels[box]): " checked" in rest for box, rest in boxes}


async def test_the_preferences_page_round_trip(shop: Shop, other_shop: Shop) -> None:
    news = await shop.topic("News", description="Every Monday")
    offers = await shop.topic("Offers", default_state="opted_out")
    digest = await shop.topic("Digest", double_opt_in=True)
    await shop.topic("Texts", channel="sms")  # the profile has no phone: not shown
    alerts = await shop.topic("Alerts", channel="push")
    theirs = await other_shop.topic("Theirs", default_state="opted_out")
    reader = await shop.person("reader", email="reader@example.com")
    url = path(shop.links.preferences(workspace_id=shop.tenant.id, profile_id=reader))

    page = assert_page(await shop.client.get(url))
    assert checked(page) == {
        "Digest": False,
        "News": True,
        "Offers": False,
        "Unsubscribe from all marketing email": False,
        "Alerts": True,
    }
    assert "Every Monday" in page and "Texts" not in page

    form = [("topic", str(offers)), ("topic", str(digest)), ("topic", str(alerts))]
    form += [
        ("topic", str(theirs)),
        ("topic", "not-a-number"),
        ("topic", "²"),
        ("topic", "9" * 5000),
    ]
    saved = assert_page(await shop.client.post(url, content=urlencode(form), headers=FORM))
    assert "Your preferences are saved." in saved and "Confirm Digest" in saved
    assert checked(saved) == {
        "Digest": True,  # pending, shown as asked for
        "News": False,
        "Offers": True,
        "Unsubscribe from all marketing email": False,
        "Alerts": True,
    }
    assert await shop.states(reader) == {
        f"email:{news}": ("opted_out", "preferences_page"),
        f"email:{offers}": ("opted_in", "preferences_page"),
        f"email:{digest}": ("pending", "preferences_page"),
    }
    assert await other_shop.counts() == (0, 0, 0)

    everything_off = [*form[:3], ("all_email_off", "1")]
    page = assert_page(await shop.client.post(url, content=urlencode(everything_off), headers=FORM))
    assert checked(page)["Unsubscribe from all marketing email"] is True
    assert (await shop.states(reader))["email"] == ("opted_out", "preferences_page")

    assert_page(await shop.client.post(url, content=urlencode(form[:3]), headers=FORM))
    assert (await shop.states(reader))["email"] == ("opted_in", "preferences_page")
    assert len(await shop.states(reader)) == 4


async def test_double_opt_in_round_trip(shop: Shop) -> None:
    digest = await shop.topic("Digest", double_opt_in=True)
    reader = await shop.person("reader", email="reader@example.com")
    started = await shop.client.post(
        f"/api/v1/profiles/{reader}/consent/opt-in",
        json={"topic_id": digest},
        headers=shop.tenant.admin,
    )
    url = path(started.json()["confirmation_url"])

    page = assert_page(await shop.client.get(url))
    assert "Digest" in page and "Yes, subscribe me" in page
    assert await shop.states(reader) == {f"email:{digest}": ("pending", "api")}

    done = assert_page(await shop.client.post(url, data={"action": "confirm"}))
    assert "You are subscribed to Digest" in done
    assert await shop.states(reader) == {f"email:{digest}": ("opted_in", "confirmation")}
    assert_page(await shop.client.post(url, data={"action": "confirm"}))
    [event] = await shop.events("Subscribed")
    assert event.properties["source"] == "confirmation"

    # Asking again once confirmed keeps the confirmation.
    again = await shop.client.post(
        f"/api/v1/profiles/{reader}/consent/opt-in",
        json={"topic_id": digest},
        headers=shop.tenant.admin,
    )
    assert again.status_code == 201
    assert await shop.states(reader) == {f"email:{digest}": ("opted_in", "confirmation")}


async def test_the_preferences_page_mails_the_double_opt_in_confirmation(
    app: FastAPI, post: Post
) -> None:
    """Ticking a double opt-in topic on the page sends the confirmation email the API's
    opt-in sends; following its link confirms (the profile stayed pending for ever)."""
    gil = await post.profile("gil", email="gil@example.org", first_name="Gil")
    made = await post.client.post(
        "/api/v1/topics",
        json={"name": "Weekly digest", "channel": "email", "double_opt_in": True},
        headers=post.tenant.admin,
    )
    assert made.status_code == 201, made.text
    digest = made.json()["id"]
    links = app_links(app)
    url = path(links.preferences(workspace_id=post.tenant.id, profile_id=gil))
    form = urlencode([("topic", str(digest))])

    saved = assert_page(await post.client.post(url, content=form, headers=FORM))
    assert "Confirm Weekly digest from the email we send you." in saved
    await post.worker.drain()
    [mail] = post.sink.messages()
    assert mail.rcpt_tos == ["gil@example.org"]
    assert mail.message["Subject"] == "Please confirm: Weekly digest"
    body = next(p for p in mail.message.walk() if p.get_content_type() == "text/html")
    link = re.search(r"/c/[A-Za-z0-9_-]+", body.get_content())
    assert link, body.get_content()
    listed = await post.client.get(
        "/api/v1/messages", params={"profile_id": str(gil)}, headers=post.tenant.admin
    )
    [message] = listed.json()["items"]
    assert (message["origin_id"], message["category"]) == (f"topic:{digest}", "transactional")

    # Saving the page again while pending sends nothing more.
    assert_page(await post.client.post(url, content=form, headers=FORM))
    await post.worker.drain()
    assert len(post.sink.messages()) == 1

    assert_page(await post.client.post(link.group(0), data={"action": "confirm"}))
    says = await post.client.get(f"/api/v1/profiles/{gil}/consent", headers=post.tenant.admin)
    assert [(c["topic_id"], c["state"], c["source"]) for c in says.json()] == [
        (digest, "opted_in", "confirmation")
    ]


async def test_a_preferences_form_over_the_limit_is_refused_and_changes_nothing(
    shop: Shop,
) -> None:
    await shop.topic("News")
    reader = await shop.person("reader", email="reader@example.com")
    url = path(shop.links.preferences(workspace_id=shop.tenant.id, profile_id=reader))
    padding = [("note", "x" * pages.MAX_FORM_BYTES)]  # read as empty, it would opt out of all
    response = await shop.client.post(url, content=urlencode(padding), headers=FORM)
    assert problem(response, 413)["errors"] == [{"field": "body", "message": "over 64 KB"}]
    assert await shop.states(reader) == {}
