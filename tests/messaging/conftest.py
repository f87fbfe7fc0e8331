"""Fixtures for the channel tests: real servers on loopback, never mocks.

- `tls_files`: a self-signed certificate for 127.0.0.1 / localhost and its key (PEM files).
- `smtp_sink` / `smtp_sink_with_auth` / `seven_bit_smtp_sink` (no 8BITMIME): the SMTP
  sink of `tests.messaging.smtp_sink` run as a subprocess (STARTTLS on `port`, implicit
  TLS on `tls_port`); read what it received with `sink.messages()` and count its
  connections with `sink.connections()`.
- `http_receiver`: a loopback HTTP server that records every request (`receiver.requests`)
  and answers what it is told: `receiver.reply("POST", "/path", Reply(201, json=...))`;
  replies queue up in order and the last one repeats; a `Reply` may be a function of the
  recorded request. Unconfigured paths answer 404.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from clarion.core.settings import Settings
from tests.conftest import Tenant
from tests.messaging.shop import Post, make_post
from tests.support import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class TlsFiles:
    """A certificate (also its own trust anchor) and its private key, as PEM files."""

    cert: Path
    key: Path


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A self-signed certificate valid for 127.0.0.1 and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "clarion test sink")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    files = TlsFiles(cert=directory / "cert.pem", key=directory / "key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@dataclass(frozen=True)
class ReceivedMail:
    """One message the sink accepted: its envelope and its parsed content."""

    connection: int
    mail_from: str
    rcpt_tos: list[str]
    tls: bool
    auth: str | None
    raw: bytes
    mail_options: list[str] = field(default_factory=list)

    @property
    def message(self) -> EmailMessage:
        """The message parsed with the stdlib's modern policy."""
        parsed = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass(frozen=True)
class SmtpSink:
    """A running sink: where to reach it and what it received."""

    port: int
    tls_port: int
    directory: Path
    process: subprocess.Popen[bytes]

    def messages(self) -> list[ReceivedMail]:
        """Every message accepted so far, in order of arrival."""
        received = []
        for record_path in sorted(self.directory.glob("*.json")):
            record = json.loads(record_path.read_text())
            raw = record_path.with_suffix(".eml").read_bytes()
            received.append(ReceivedMail(raw=raw, **record))
        return received

    def connections(self) -> int:
        """How many SMTP connections the sink has accepted."""
        log = self.directory / "connections.log"
        return len(log.read_text().split()) if log.exists() else 0

    def stop(self) -> None:
        """Kill the server: connections drop, new ones are refused."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def _wait_until_ready(directory: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while not (directory / "ready").exists():
        if process.poll() is not None:
            raise RuntimeError(f"the SMTP sink exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError("the SMTP sink did not start")
        time.sleep(0.02)


@contextmanager
def run_smtp_sink(
    directory: Path, tls: TlsFiles, *, auth: str | None = None, seven_bit: bool = False
) -> Iterator[SmtpSink]:
    """Run the sink as a subprocess until the block ends."""
    port, tls_port = free_port(), free_port()
    command = [sys.executable, "-m", "tests.messaging.smtp_sink", "--port", str(port)]
    command += ["--dir", str(directory), "--tls-port", str(tls_port)]
    command += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    if auth:
        command += ["--auth", auth]
    if seven_bit:
        command.append("--seven-bit")
    process = subprocess.Popen(command, cwd=REPO_ROOT, stderr=subprocess.DEVNULL)
    sink = SmtpSink(port=port, tls_port=tls_port, directory=directory, process=process)
    try:
        # Waiting on a file, not by connecting: the sink counts connections.
        _wait_until_ready(directory, process)
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def smtp_sink(tmp_path: Path, tls_files: TlsFiles) -> Iterator[SmtpSink]:
    """An SMTP sink of this test's own, with STARTTLS and implicit TLS, no AUTH."""
    with run_smtp_sink(tmp_path / "sink", tls_files) as sink:
        yield sink


@pytest.fixture
def seven_bit_smtp_sink(tmp_path: Path, tls_files: TlsFiles) -> Iterator[SmtpSink]:
    """An SMTP sink that does not offer 8BITMIME."""
    with run_smtp_sink(tmp_path / "sink", tls_files, seven_bit=True) as sink:
        yield sink


@pytest.fixture
def smtp_sink_with_auth(tmp_path: Path, tls_files: TlsFiles) -> Iterator[SmtpSink]:
    """An SMTP sink requiring AUTH as clarion / s3cret."""
    with run_smtp_sink(tmp_path / "sink", tls_files, auth="clarion:s3cret") as sink:
        yield sink


@dataclass(frozen=True)
class RecordedRequest:
    """One request the receiver got."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def form(self) -> dict[str, str]:
        """The body as a form (last value of each name)."""
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    """What the receiver answers: a status, a JSON or raw body, headers, after a delay."""

    status: int = 200
    json: Any = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


Answer = Reply | Callable[[RecordedRequest], Reply]


class HttpReceiver:
    """A loopback HTTP server recording requests and replying as configured."""

    def __init__(self) -> None:
        self.url = ""
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._answers: dict[tuple[str, str], list[Answer]] = {}

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def reply(self, method: str, path: str, *answers: Answer) -> None:
        """Answer `method path` with `answers` in turn, repeating the last one."""
        with self._lock:
            self._answers[(method, path)] = list(answers)

    def reset(self) -> None:
        """Forget requests and configured answers."""
        with self._lock:
            self._requests.clear()
            self._answers.clear()

    def _next_answer(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self._requests.append(request)
            queue = self._answers.get((request.method, request.path))
            if not queue:
                return Reply(404, json={"error": "nothing configured"})
            answer = queue.pop(0) if len(queue) > 1 else queue[0]
        return answer(request) if callable(answer) else answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        recorded = RecordedRequest(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers={name.lower(): value for name, value in request.headers.items()},
            body=await request.body(),
        )
        reply = self._next_answer(recorded)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        body = json.dumps(reply.json).encode() if reply.json is not None else reply.body
        headers = dict(reply.headers)
        if reply.json is not None:
            headers.setdefault("content-type", "application/json")
        await Response(body, status_code=reply.status, headers=headers)(scope, receive, send)


@pytest.fixture(scope="session")
def _receiver_server() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    port = free_port()
    config = uvicorn.Config(
        receiver, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the HTTP receiver did not start")
        time.sleep(0.02)
    receiver.url = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def http_receiver(_receiver_server: HttpReceiver) -> Iterator[HttpReceiver]:
    """The loopback receiver, with no requests recorded and nothing configured."""
    _receiver_server.reset()
    yield _receiver_server
    _receiver_server.reset()


@pytest.fixture
async def post(
    app: FastAPI,
    client: httpx.AsyncClient,
    tenant: Tenant,
    settings: Settings,
    smtp_sink: SmtpSink,
) -> AsyncIterator[Post]:
    """A workspace sending email through the SMTP sink (see `tests/messaging/shop.py`)."""
    async for shop in make_post(app, client, tenant, settings, smtp_sink):
        yield shop
