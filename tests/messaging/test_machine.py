"""Machine interaction detection: each rule for opens and clicks, matching and not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, ip_address, ip_network

import pytest

from clarion.messaging.machine import (
    APPLE_NETWORKS,
    HUMAN,
    MachineRules,
    Reason,
    SeenClick,
    Verdict,
    classify_click,
    classify_open,
    parse_networks,
)

DELIVERED = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LATER = DELIVERED + timedelta(hours=3)

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148"
)
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
OUTLOOK = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)"
GMAIL = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
YAHOO = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
CUBOT_PHONE = "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 Chrome/120 Mobile"
HOME_IP = "203.0.113.7"
APPLE_IP = "17.58.63.112"
GOOGLE_IP = "66.249.84.10"


def an_open(
    user_agent: str | None = IPHONE,
    ip: str | IPv4Address | None = HOME_IP,
    *,
    at: datetime = LATER,
    delivered_at: datetime | None = DELIVERED,
    method: str = "GET",
    rules: MachineRules | None = None,
) -> Verdict:
    return classify_open(
        user_agent=user_agent,
        ip=ip,
        at=at,
        delivered_at=delivered_at,
        method=method,
        rules=rules or MachineRules(),
    )


def a_click(
    user_agent: str | None = CHROME,
    ip: str | None = HOME_IP,
    *,
    at: datetime = LATER,
    delivered_at: datetime | None = DELIVERED,
    link_index: int = 0,
    other_clicks: tuple[SeenClick, ...] = (),
    honeypot_links: frozenset[int] = frozenset(),
    method: str = "GET",
    rules: MachineRules | None = None,
) -> Verdict:
    return classify_click(
        user_agent=user_agent,
        ip=ip,
        at=at,
        delivered_at=delivered_at,
        link_index=link_index,
        other_clicks=other_clicks,
        honeypot_links=honeypot_links,
        method=method,
        rules=rules or MachineRules(),
    )


def machine(reason: Reason, *, proxied: bool = False) -> Verdict:
    return Verdict(machine=True, proxied=proxied, reason=reason)


# Opens


@pytest.mark.parametrize("agent", [IPHONE, CHROME, OUTLOOK, CUBOT_PHONE])
def test_a_mail_client_opening_later_is_a_human(agent: str) -> None:
    assert an_open(agent) == HUMAN
    assert an_open(agent).reason is None


def test_an_open_without_a_delivery_time_is_judged_on_the_rest() -> None:
    assert an_open(delivered_at=None, at=DELIVERED) == HUMAN


@pytest.mark.parametrize(
    ("method", "reason"),
    [
        ("HEAD", Reason.HEAD_REQUEST),
        ("head", Reason.HEAD_REQUEST),
        ("POST", Reason.UNEXPECTED_METHOD),
    ],
)
def test_an_open_that_is_not_a_get_is_a_machine(method: str, reason: Reason) -> None:
    assert an_open(method=method) == machine(reason)
    assert an_open(method="get") == HUMAN


@pytest.mark.parametrize("agent", [None, "", "   "])
def test_an_open_without_a_user_agent_is_a_machine(agent: str | None) -> None:
    assert an_open(agent) == machine(Reason.EMPTY_USER_AGENT)


@pytest.mark.parametrize("ip", [APPLE_IP, " 17.0.0.1 ", "::ffff:17.1.2.3", "2620:149:a0c::12"])
def test_apple_privacy_protection_is_a_proxied_machine(ip: str) -> None:
    assert an_open("Mozilla/5.0", ip) == machine(Reason.APPLE_PRIVACY_PROXY, proxied=True)


def test_apple_privacy_protection_needs_the_exact_user_agent_and_an_apple_address() -> None:
    assert an_open("Mozilla/5.0", HOME_IP) == HUMAN  # not Apple's address, hours later
    assert an_open("Mozilla/5.0", None) == HUMAN
    assert an_open("Mozilla/5.0", "not an address") == HUMAN
    assert an_open(IPHONE, APPLE_IP) == HUMAN  # an Apple employee reading their mail
    assert an_open("Mozilla/5.0 (Macintosh)", APPLE_IP) == HUMAN
    assert an_open(" Mozilla/5.0 ", IPv4Address(APPLE_IP)).reason == Reason.APPLE_PRIVACY_PROXY


def test_the_full_apple_list_can_be_configured() -> None:
    egress_csv = [
        "# Apple egress ranges",
        "172.224.226.0/27,GB,GB-EN,London,",
        "",
        "2a02:26f7:b3c0::/45,US,US-CA,,",
    ]
    rules = MachineRules(apple_networks=parse_networks(egress_csv))

    assert an_open("Mozilla/5.0", "172.224.226.9", rules=rules).reason == Reason.APPLE_PRIVACY_PROXY
    assert (
        an_open("Mozilla/5.0", "2a02:26f7:b3c0::1", rules=rules).reason
        == Reason.APPLE_PRIVACY_PROXY
    )
    assert an_open("Mozilla/5.0", APPLE_IP, rules=rules) == HUMAN  # the list replaces the default
    assert an_open("Mozilla/5.0", "172.224.226.9") == HUMAN


def test_parse_networks_refuses_a_bad_cidr() -> None:
    with pytest.raises(ValueError):
        parse_networks(["17.0.0.0/33"])


def test_the_default_apple_list_holds_apples_block() -> None:
    assert ip_network("17.0.0.0/8") in APPLE_NETWORKS


@pytest.mark.parametrize(
    "agent",
    [
        "Barracuda Sentinel (EE)",
        "Mimecast URL Protect",
        "Proofpoint URL Defense",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 BingPreview/1.0b",
        "python-requests/2.32.3",
        "curl/8.5.0",
        "Go-http-client/1.1",
    ],
)
def test_an_open_by_a_scanner_is_a_machine(agent: str) -> None:
    assert an_open(agent) == machine(Reason.SCANNER_USER_AGENT)


def test_machine_networks_are_configurable() -> None:
    rules = MachineRules(machine_networks=parse_networks(["198.51.100.0/24"]))

    assert an_open(CHROME, "198.51.100.20", rules=rules) == machine(Reason.MACHINE_NETWORK)
    assert an_open(CHROME, HOME_IP, rules=rules) == HUMAN
    assert an_open(CHROME, "198.51.100.20") == HUMAN


def test_an_open_within_seconds_of_delivery_is_a_machine() -> None:
    soon = DELIVERED + timedelta(seconds=3)

    assert an_open(IPHONE, at=soon) == machine(Reason.OPEN_TOO_SOON)
    assert an_open(IPHONE, at=DELIVERED - timedelta(seconds=1)) == machine(Reason.OPEN_TOO_SOON)
    assert an_open(IPHONE, at=DELIVERED + timedelta(seconds=5)) == HUMAN
    assert an_open(IPHONE, at=soon, rules=MachineRules(min_open_delay=timedelta(0))) == HUMAN


def test_apples_prefetch_from_an_unlisted_address_is_caught_by_its_timing() -> None:
    soon = DELIVERED + timedelta(seconds=1)

    assert an_open("Mozilla/5.0", HOME_IP, at=soon) == machine(Reason.OPEN_TOO_SOON, proxied=True)


@pytest.mark.parametrize(
    ("agent", "reason"), [(GMAIL, Reason.GOOGLE_IMAGE_PROXY), (YAHOO, Reason.YAHOO_MAIL_PROXY)]
)
def test_an_image_proxy_open_is_a_proxied_human(agent: str, reason: Reason) -> None:
    verdict = an_open(agent, GOOGLE_IP)

    assert verdict == Verdict(machine=False, proxied=True, reason=reason)
    assert an_open(agent, at=DELIVERED + timedelta(seconds=1)) == machine(
        Reason.OPEN_TOO_SOON, proxied=True
    )


def test_image_proxies_are_configurable() -> None:
    rules = MachineRules(image_proxies=(("ExampleMailProxy", "example-proxy"),))

    assert an_open("ExampleMailProxy/1.0", rules=rules) == Verdict(False, True, "example-proxy")
    assert an_open(GMAIL, rules=rules) == HUMAN


# Clicks


@pytest.mark.parametrize("agent", [CHROME, IPHONE, CUBOT_PHONE])
def test_a_person_clicking_later_is_a_human(agent: str) -> None:
    assert a_click(agent) == HUMAN


@pytest.mark.parametrize(
    ("method", "reason"), [("HEAD", Reason.HEAD_REQUEST), ("OPTIONS", Reason.UNEXPECTED_METHOD)]
)
def test_a_click_that_is_not_a_get_is_a_machine(method: str, reason: Reason) -> None:
    assert a_click(method=method) == machine(reason)


@pytest.mark.parametrize(
    "agent",
    [
        "Barracuda Sentinel (EE)",
        "Mimecast",
        "Proofpoint-URL-Defense/1.0",
        "Mozilla/5.0 (compatible; BingPreview/1.0b)",
        "Symantec Web Security",
        "Cisco-Email-Security",
        "Forcepoint URL Sandbox",
        "python-requests/2.32.3",
        "curl/8.5.0",
        "Go-http-client/2.0",
        "Microsoft Office Existence Discovery",
        "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/120.0.0.0",
    ],
)
def test_a_click_by_a_scanner_is_a_machine(agent: str) -> None:
    assert a_click(agent) == machine(Reason.SCANNER_USER_AGENT)


@pytest.mark.parametrize("agent", [None, ""])
def test_a_click_without_a_user_agent_is_a_machine(agent: str | None) -> None:
    assert a_click(agent) == machine(Reason.EMPTY_USER_AGENT)


def test_scanner_user_agents_are_configurable() -> None:
    rules = MachineRules(scanner_user_agents=("AcmeGuard",))

    assert a_click("acmeguard/3", rules=rules) == machine(Reason.SCANNER_USER_AGENT)
    assert a_click("curl/8.5.0", rules=rules) == HUMAN


def test_a_click_from_a_machine_network_is_a_machine() -> None:
    rules = MachineRules(machine_networks=parse_networks(["2001:db8::/32"]))

    assert a_click(ip="2001:db8::5", rules=rules) == machine(Reason.MACHINE_NETWORK)
    assert a_click(ip=str(ip_address("2001:db9::5")), rules=rules) == HUMAN


def test_a_click_on_a_honeypot_link_is_a_machine() -> None:
    assert a_click(link_index=4, honeypot_links=frozenset({4})) == machine(Reason.HONEYPOT_LINK)
    assert a_click(link_index=3, honeypot_links=frozenset({4})) == HUMAN


def test_a_click_within_ten_seconds_of_delivery_is_a_machine() -> None:
    assert a_click(at=DELIVERED + timedelta(seconds=9)) == machine(Reason.CLICK_TOO_SOON)
    assert a_click(at=DELIVERED - timedelta(seconds=2)) == machine(Reason.CLICK_TOO_SOON)
    assert a_click(at=DELIVERED + timedelta(seconds=10)) == HUMAN
    assert a_click(at=DELIVERED, delivered_at=None) == HUMAN
    rules = MachineRules(min_click_delay=timedelta(minutes=1))
    assert a_click(at=DELIVERED + timedelta(seconds=30), rules=rules) == machine(
        Reason.CLICK_TOO_SOON
    )


def test_different_links_clicked_within_two_seconds_are_a_burst() -> None:
    earlier = (SeenClick(LATER - timedelta(seconds=1), 2),)

    assert a_click(link_index=0, other_clicks=earlier) == machine(Reason.CLICK_BURST)


def test_an_earlier_click_is_judged_a_burst_once_later_ones_are_known() -> None:
    later = (SeenClick(LATER + timedelta(milliseconds=400), 5),)

    assert a_click(link_index=0, other_clicks=later) == machine(Reason.CLICK_BURST)


def test_the_same_link_twice_or_links_far_apart_are_no_burst() -> None:
    double_click = (SeenClick(LATER - timedelta(milliseconds=300), 0),)
    far_apart = (
        SeenClick(LATER - timedelta(seconds=3), 1),
        SeenClick(LATER + timedelta(seconds=3), 2),
    )

    assert a_click(link_index=0, other_clicks=double_click) == HUMAN
    assert a_click(link_index=0, other_clicks=far_apart) == HUMAN


def test_a_larger_burst_needs_all_its_links_inside_one_window() -> None:
    rules = MachineRules(burst_links=3)
    # Each neighbour is within 2 s of this click, but not within 2 s of each other.
    spread = (
        SeenClick(LATER - timedelta(seconds=1.5), 1),
        SeenClick(LATER + timedelta(seconds=1.5), 2),
    )
    tight = (
        SeenClick(LATER - timedelta(seconds=1.5), 1),
        SeenClick(LATER + timedelta(seconds=0.5), 2),
    )
    one_other = (SeenClick(LATER - timedelta(seconds=1), 1),)

    assert a_click(link_index=0, other_clicks=spread, rules=rules) == HUMAN
    assert a_click(link_index=0, other_clicks=tight, rules=rules) == machine(Reason.CLICK_BURST)
    assert a_click(link_index=0, other_clicks=one_other, rules=rules) == HUMAN


def test_a_burst_needs_at_least_two_links() -> None:
    with pytest.raises(ValueError, match="2"):
        MachineRules(burst_links=1)


def test_rules_apply_in_their_documented_order() -> None:
    # A HEAD from a scanner on a honeypot link is reported as the HEAD request...
    assert a_click("curl/8", method="HEAD", link_index=1, honeypot_links=frozenset({1})) == machine(
        Reason.HEAD_REQUEST
    )
    # ...a honeypot click from a scanner as the honeypot...
    assert a_click("curl/8", link_index=1, honeypot_links=frozenset({1})) == machine(
        Reason.HONEYPOT_LINK
    )
    # ...and a scanner at delivery as the scanner.
    assert a_click("curl/8", at=DELIVERED) == machine(Reason.SCANNER_USER_AGENT)
    # Apple's proxy at delivery is named as Apple's proxy.
    assert an_open("Mozilla/5.0", APPLE_IP, at=DELIVERED) == machine(
        Reason.APPLE_PRIVACY_PROXY, proxied=True
    )


def test_reasons_are_plain_strings() -> None:
    verdict = a_click(method="HEAD")
    assert verdict.reason == "head-request"
    assert isinstance(verdict.reason, str)
