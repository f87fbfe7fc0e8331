"""HTTP to addresses that workspaces configure (webhook URLs, SMS and push endpoints,
enrichment calls): never to the private side of the network unless the operator allows it.

A workspace admin who may set a webhook URL must not be able to make Clarion call its own
network: the cloud metadata service (169.254.169.254), the database's host, an admin panel
on localhost. So a connection is refused when the address it would open is not a public
one (private, loopback, link-local, shared, reserved, multicast; IPv4 inside IPv6 too),
unless that address is in `CLARION_OUTBOUND_ALLOWED_NETWORKS` (CIDR blocks, for an
operator whose own services sit there). The check is made on the addresses the connection
is opened to, after resolving the name once, so a DNS answer that changes between a check
and the connection (rebinding) cannot slip past it. Redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import anyio
import httpcore
import httpx

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedAddress(httpx.ConnectError):
    """The host resolves only to addresses outbound calls may not reach: retrying is vain."""


def parse_networks(text: str) -> tuple[Network, ...]:
    """The CIDR blocks of a comma-separated list (an address alone is its own block);
    ValueError naming the first that is not one."""
    networks = []
    for part in (piece.strip() for piece in text.split(",")):
        if part:
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError as error:
                raise ValueError(f"{part!r} is not an address or CIDR block") from error
    return tuple(networks)


@dataclass(frozen=True, slots=True)
class Policy:
    """Which addresses outbound calls may open: public ones, and those in `allowed`."""

    allowed: tuple[Network, ...] = ()

    def permits(self, address: Address) -> bool:
        """Whether a connection to `address` may be opened."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.allowed):
            return True
        return address.is_global and not address.is_multicast


PUBLIC_ONLY = Policy()
"""The policy with no network allowed beyond the public ones: the default everywhere."""


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to addresses the policy permits (TLS still checks the
    certificate against the host name: httpcore passes it apart from the address)."""

    def __init__(self, policy: Policy, inner: httpcore.AsyncNetworkBackend) -> None:
        self._policy = policy
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError as error:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from error
        except OSError as error:
            raise httpcore.ConnectError(f"cannot resolve {host}: {error}") from error
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in found))
        permitted = [address for address in addresses if self._policy.permits(address)]
        if not permitted:
            shown = ", ".join(str(address) for address in addresses) or "nothing"
            raise RefusedAddress(
                f"{host} resolves to {shown}: not a public address, and not in "
                "CLARION_OUTBOUND_ALLOWED_NETWORKS"
            )
        failure: Exception | None = None
        for address in permitted:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as error:  # the next address may answer
                failure = error
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedAddress(f"outbound calls do not open local sockets ({path})")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def http_client(
    policy: Policy, *, timeout: float = 5.0, limits: httpx.Limits | None = None
) -> httpx.AsyncClient:
    """An HTTP client that connects only where `policy` permits and follows no redirect."""
    transport = httpx.AsyncHTTPTransport(limits=limits or httpx.Limits())
    # httpx takes no network backend, but its connection pool does (httpcore 1.x); the
    # tests prove the guard holds, so a change there cannot go unnoticed.
    pool = transport._pool
    pool._network_backend = _GuardedBackend(policy, pool._network_backend)
    return httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False)
