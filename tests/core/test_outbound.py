"""Outbound calls to configured addresses reach public addresses only, unless allowed."""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from pydantic import ValidationError

from clarion.core.outbound import Policy, RefusedAddress, http_client, parse_networks
from clarion.core.settings import Settings


class _Counting(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def loopback() -> Iterator[tuple[str, type[_Counting]]]:
    """A plain HTTP server on 127.0.0.1 counting the requests that reach it."""
    handler = type("Handler", (_Counting,), {"hits": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("address", "permitted"),
    [
        ("93.184.215.14", True),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.9", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # the cloud metadata service
        ("100.64.0.1", False),  # shared (carrier-grade NAT)
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:10.0.0.1", False),  # IPv4 inside IPv6
        ("::ffff:93.184.215.14", True),
    ],
)
def test_only_public_addresses_are_permitted_by_default(address: str, permitted: bool) -> None:
    assert Policy().permits(ipaddress.ip_address(address)) is permitted


def test_allowed_networks_open_their_addresses_only() -> None:
    policy = Policy(parse_networks(" 10.20.0.0/16, 127.0.0.1 ,"))
    assert policy.permits(ipaddress.ip_address("10.20.5.5"))
    assert policy.permits(ipaddress.ip_address("127.0.0.1"))
    assert policy.permits(ipaddress.ip_address("::ffff:10.20.0.1"))
    assert not policy.permits(ipaddress.ip_address("10.21.0.1"))
    assert not policy.permits(ipaddress.ip_address("127.0.0.2"))


def test_a_setting_that_is_no_network_is_refused_at_start() -> None:
    with pytest.raises(
        ValidationError, match=re.escape("'10.0.0.0/33' is not an address or CIDR block")
    ):
        Settings(outbound_allowed_networks="10.0.0.0/8,10.0.0.0/33")
    allowed = Settings(outbound_allowed_networks="10.0.0.0/8").outbound_policy().allowed
    assert allowed == (ipaddress.ip_network("10.0.0.0/8"),)


async def test_a_private_address_is_refused_before_any_connection(
    loopback: tuple[str, type[_Counting]],
) -> None:
    host, handler = loopback
    port = host.rsplit(":", 1)[1]
    async with http_client(Policy(), timeout=2) as client:
        for url in (f"http://{host}/", f"http://localhost:{port}/"):
            with pytest.raises(RefusedAddress, match="not a public address"):
                await client.get(url)
    assert handler.hits == 0

    allowed = Policy(parse_networks("127.0.0.0/8,::1"))
    async with http_client(allowed, timeout=2) as client:
        response = await client.get(f"http://{host}/")
    assert (response.status_code, response.text, handler.hits) == (200, "ok", 1)


async def test_a_name_that_does_not_resolve_is_a_connection_failure() -> None:
    async with http_client(Policy(), timeout=2) as client:
        with pytest.raises(httpx.ConnectError) as failure:
            await client.get("http://no-such-host.invalid/")
    assert not isinstance(failure.value, RefusedAddress)  # it may resolve later: retried
