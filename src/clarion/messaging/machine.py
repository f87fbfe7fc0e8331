"""Telling people from machines: is an open or a click someone reading, or a proxy or a
security scanner fetching on their behalf?

Pure functions over what the tracking endpoint saw (user agent, IP address, HTTP method,
when) and what already happened to the message (its delivery time, its other clicks).
Each returns a `Verdict`: `machine`, `proxied` (the IP address and user agent are a
proxy's, not the reader's) and a `reason`, one of `Reason`, saying which rule decided.

Opens, first rule that matches wins:

1. `head-request` / `unexpected-method`: anything but GET fetches no image to show;
2. `empty-user-agent`: no mail client sends none;
3. `apple-privacy-proxy` (proxied): Apple Mail Privacy Protection prefetches every image
   at delivery, whether or not the message is read. Its requests carry exactly
   `Mozilla/5.0` from Apple's addresses; `APPLE_NETWORKS` is a representative list
   (17.0.0.0/8 and Apple's IPv6 blocks): load the full one with `parse_networks`, e.g.
   from Apple's published egress-ip-ranges.csv, into `MachineRules.apple_networks`;
4. `scanner-user-agent`: a security gateway or an HTTP library (`SCANNER_USER_AGENTS`);
5. `machine-network`: an address in `MachineRules.machine_networks` (none by default);
6. `open-too-soon`: within `min_open_delay` (5 s) of delivery nobody has read the message
   yet; this also catches Apple's prefetch from addresses missing from the list, and such
   an open keeps `proxied` when its user agent is a proxy's;
7. `google-image-proxy`, `yahoo-mail-proxy` (human, proxied): Gmail and Yahoo fetch images
   through their proxies when the reader opens the message, so the open is real but the
   address and user agent are the proxy's (`MachineRules.image_proxies`);
8. otherwise a human, not proxied, with no reason.

Clicks, first rule that matches wins:

1. `head-request` / `unexpected-method`: link checkers probe with HEAD;
2. `honeypot-link`: a link no person can see (the caller says which indexes are hidden);
3. `empty-user-agent`, `scanner-user-agent`, `machine-network`: as for opens (Microsoft
   Safe Links announces itself as BingPreview);
4. `click-too-soon`: within `min_click_delay` (10 s) of delivery, scanners follow links
   before the message reaches the inbox;
5. `click-burst`: `burst_links` (2) or more different links of the message clicked within
   one `burst_window` (2 s): a scanner following every link, not a person;
6. otherwise a human.

A burst is judged around the click being classified using all the message's other clicks,
earlier or later, so a caller may re-judge an earlier click once later ones arrive.
All datetimes passed in must be alike (timezone-aware, ideally).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import TypeAlias

IPAddress: TypeAlias = IPv4Address | IPv6Address
IPNetwork: TypeAlias = IPv4Network | IPv6Network


class Reason(StrEnum):
    """Why a verdict was reached; stable strings, fit for storing and counting."""

    HEAD_REQUEST = "head-request"
    UNEXPECTED_METHOD = "unexpected-method"
    EMPTY_USER_AGENT = "empty-user-agent"
    APPLE_PRIVACY_PROXY = "apple-privacy-proxy"
    SCANNER_USER_AGENT = "scanner-user-agent"
    MACHINE_NETWORK = "machine-network"
    OPEN_TOO_SOON = "open-too-soon"
    GOOGLE_IMAGE_PROXY = "google-image-proxy"
    YAHOO_MAIL_PROXY = "yahoo-mail-proxy"
    HONEYPOT_LINK = "honeypot-link"
    CLICK_TOO_SOON = "click-too-soon"
    CLICK_BURST = "click-burst"


def parse_networks(lines: Iterable[str]) -> tuple[IPNetwork, ...]:
    """The networks in `lines`, one CIDR first on each (CSV rows such as Apple's egress
    list work); blank lines and `#` comments are skipped, a bad CIDR raises ValueError."""
    networks: list[IPNetwork] = []
    for line in lines:
        cidr = line.split(",", 1)[0].strip()
        if cidr and not cidr.startswith("#"):
            networks.append(ip_network(cidr, strict=False))
    return tuple(networks)


APPLE_USER_AGENT = "Mozilla/5.0"
APPLE_NETWORKS = parse_networks(["17.0.0.0/8", "2620:149::/32", "2a01:b740::/32"])
# Substrings of the user agents of image proxies that fetch when the reader opens.
IMAGE_PROXIES: tuple[tuple[str, str], ...] = (
    ("GoogleImageProxy", Reason.GOOGLE_IMAGE_PROXY),
    ("YahooMailProxy", Reason.YAHOO_MAIL_PROXY),
)
# Lowercase substrings of security gateways' and HTTP libraries' user agents. Kept
# specific: a bare "bot" would also match phone models such as "CUBOT".
SCANNER_USER_AGENTS: tuple[str, ...] = (
    "barracuda",
    "mimecast",
    "proofpoint",
    "bingpreview",
    "symantec",
    "cisco",
    "forcepoint",
    "trendmicro",
    "existence discovery",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "curl/",
    "wget/",
    "go-http-client",
    "java/",
    "libwww-perl",
    "headlesschrome",
    "phantomjs",
)


@dataclass(frozen=True, slots=True)
class MachineRules:
    """The thresholds and lists the rules use; the defaults suit most senders."""

    apple_user_agent: str = APPLE_USER_AGENT
    apple_networks: tuple[IPNetwork, ...] = APPLE_NETWORKS
    image_proxies: tuple[tuple[str, str], ...] = IMAGE_PROXIES
    scanner_user_agents: tuple[str, ...] = SCANNER_USER_AGENTS
    machine_networks: tuple[IPNetwork, ...] = ()
    min_open_delay: timedelta = timedelta(seconds=5)
    min_click_delay: timedelta = timedelta(seconds=10)
    burst_window: timedelta = timedelta(seconds=2)
    burst_links: int = 2

    def __post_init__(self) -> None:
        if self.burst_links < 2:
            raise ValueError("a burst needs at least 2 different links")


DEFAULT_RULES = MachineRules()


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether an interaction was a machine's, whether it came through a proxy, and why."""

    machine: bool
    proxied: bool = False
    reason: str | None = None


HUMAN = Verdict(machine=False)


@dataclass(frozen=True, slots=True)
class SeenClick:
    """A click already recorded on the message: when, and on which link."""

    at: datetime
    link_index: int


def _address(ip: str | IPAddress | None) -> IPAddress | None:
    if ip is None or isinstance(ip, IPv4Address | IPv6Address):
        address = ip
    else:
        try:
            address = ip_address(ip.strip())
        except ValueError:
            return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _in(address: IPAddress | None, networks: tuple[IPNetwork, ...]) -> bool:
    return address is not None and any(address in network for network in networks)


def _method_verdict(method: str) -> Verdict | None:
    method = method.upper()
    if method == "HEAD":
        return Verdict(machine=True, reason=Reason.HEAD_REQUEST)
    if method != "GET":
        return Verdict(machine=True, reason=Reason.UNEXPECTED_METHOD)
    return None


def _agent_verdict(agent: str, address: IPAddress | None, rules: MachineRules) -> Verdict | None:
    if not agent:
        return Verdict(machine=True, reason=Reason.EMPTY_USER_AGENT)
    lowered = agent.lower()
    if any(scanner.lower() in lowered for scanner in rules.scanner_user_agents):
        return Verdict(machine=True, reason=Reason.SCANNER_USER_AGENT)
    if _in(address, rules.machine_networks):
        return Verdict(machine=True, reason=Reason.MACHINE_NETWORK)
    return None


def _too_soon(at: datetime, delivered_at: datetime | None, delay: timedelta) -> bool:
    # A time before delivery is clock skew between processes, and counts as at delivery.
    return delivered_at is not None and at - delivered_at < delay


def classify_open(
    *,
    user_agent: str | None,
    ip: str | IPAddress | None,
    at: datetime,
    delivered_at: datetime | None,
    method: str = "GET",
    rules: MachineRules = DEFAULT_RULES,
) -> Verdict:
    """Whether an open-pixel fetch was a person opening the message (see the module's rules)."""
    if verdict := _method_verdict(method):
        return verdict
    agent = (user_agent or "").strip()
    address = _address(ip)
    if agent and agent == rules.apple_user_agent and _in(address, rules.apple_networks):
        return Verdict(machine=True, proxied=True, reason=Reason.APPLE_PRIVACY_PROXY)
    if verdict := _agent_verdict(agent, address, rules):
        return verdict
    proxy = next((reason for marker, reason in rules.image_proxies if marker in agent), None)
    if _too_soon(at, delivered_at, rules.min_open_delay):
        proxied = proxy is not None or agent == rules.apple_user_agent
        return Verdict(machine=True, proxied=proxied, reason=Reason.OPEN_TOO_SOON)
    if proxy is not None:
        return Verdict(machine=False, proxied=True, reason=proxy)
    return HUMAN


def _in_burst(
    at: datetime, link_index: int, others: Iterable[SeenClick], rules: MachineRules
) -> bool:
    """Whether some window of `burst_window` holding this click holds enough distinct links."""
    near = [
        click
        for click in others
        if abs(click.at - at) <= rules.burst_window and click.link_index != link_index
    ]
    if len({click.link_index for click in near}) + 1 < rules.burst_links:
        return False
    # Try each window that starts at a click at or before this one and still holds it.
    for start in [at, *(click.at for click in near if click.at <= at)]:
        end = start + rules.burst_window
        links = {click.link_index for click in near if start <= click.at <= end}
        if len(links) + 1 >= rules.burst_links:
            return True
    return False


def classify_click(
    *,
    user_agent: str | None,
    ip: str | IPAddress | None,
    at: datetime,
    delivered_at: datetime | None,
    link_index: int,
    other_clicks: Iterable[SeenClick] = (),
    honeypot_links: Collection[int] = frozenset(),
    method: str = "GET",
    rules: MachineRules = DEFAULT_RULES,
) -> Verdict:
    """Whether a tracked click was a person following the link (see the module's rules)."""
    if verdict := _method_verdict(method):
        return verdict
    if link_index in honeypot_links:
        return Verdict(machine=True, reason=Reason.HONEYPOT_LINK)
    if verdict := _agent_verdict((user_agent or "").strip(), _address(ip), rules):
        return verdict
    if _too_soon(at, delivered_at, rules.min_click_delay):
        return Verdict(machine=True, reason=Reason.CLICK_TOO_SOON)
    if _in_burst(at, link_index, other_clicks, rules):
        return Verdict(machine=True, reason=Reason.CLICK_BURST)
    return HUMAN
