"""An SMTP server for the email channel's tests, run as a subprocess:

    python -m tests.messaging.smtp_sink --port P --dir D
        [--tls-port P2] [--tls-cert C --tls-key K] [--auth user:pass] [--seven-bit]

It listens on 127.0.0.1:P (offering STARTTLS when given a certificate) and, with
--tls-port, on P2 with implicit TLS. Each accepted message is written to D as
`NNNN.eml` (the bytes received) and then `NNNN.json` (its envelope: connection number,
MAIL FROM, RCPT TOs, whether TLS was on, the AUTH login); each new connection adds a line
to `D/connections.log`. `D/ready` appears once the listeners are bound. With --auth,
AUTH PLAIN/LOGIN with that user and password is required before MAIL. With --seven-bit
the server does not offer 8BITMIME. The envelope also keeps MAIL FROM's parameters.

Recipients steer the replies by their local part: "bounce..." is refused with 550,
"busy..." with 451, "full..." with 552 (mailbox full); "drop..." makes the server close
the connection at RCPT; a message to "hangup..." is accepted, then the next MAIL on that
connection is answered 421 and the connection closed (a server ending an idle session).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import ssl
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

_connections = itertools.count(1)
_messages = itertools.count(1)


class SinkSMTP(SMTP):
    """aiosmtpd's server, numbering its connections and remembering whether TLS is on."""

    connection_number = 0
    tls = False
    hang_up_next = False

    async def smtp_MAIL(self, arg: str) -> None:
        if self.hang_up_next:
            # What a server does to a connection it found idle for too long.
            await self.push("421 4.4.2 sink.test Idle too long, closing connection")
            assert self.transport is not None
            self.transport.close()
            return
        await super().smtp_MAIL(arg)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # not the second call STARTTLS makes
            self.connection_number = next(_connections)
            self.tls = transport.get_extra_info("ssl_object") is not None
            handler: Sink = self.event_handler
            with (handler.directory / "connections.log").open("a") as log:
                log.write(f"{self.connection_number}\n")
        else:
            self.tls = True
        super().connection_made(transport)


class Sink:
    """The handler: answers RCPT by the local part and writes accepted messages."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def handle_RCPT(
        self,
        server: SinkSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        local = address.partition("@")[0].lower()
        if local.startswith("bounce"):
            return "550 5.1.1 No such user here"
        if local.startswith("busy"):
            return "451 4.3.0 Mailbox busy, try again later"
        if local.startswith("full"):
            return "552 5.2.2 Mailbox full"
        if local.startswith("drop"):
            assert server.transport is not None
            server.transport.close()
            return "421 4.4.2 Connection dropped"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SinkSMTP, session: Session, envelope: Envelope) -> str:
        number = next(_messages)
        content = envelope.original_content or b""
        (self.directory / f"{number:04d}.eml").write_bytes(content)
        login = session.auth_data.login.decode() if session.authenticated else None
        record = {
            "connection": server.connection_number,
            "mail_from": envelope.mail_from,
            "mail_options": envelope.mail_options,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": server.tls,
            "auth": login,
        }
        partial = self.directory / f"{number:04d}.json.part"
        partial.write_text(json.dumps(record))
        partial.rename(self.directory / f"{number:04d}.json")
        if any(rcpt.lower().startswith("hangup") for rcpt in envelope.rcpt_tos):
            server.hang_up_next = True
        return "250 2.0.0 Queued"


def _authenticator(user: str, password: str) -> Any:
    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == user.encode()
            and data.password == password.encode()
        )
        return AuthResult(success=ok, auth_data=data if ok else None)

    return authenticate


async def serve(arguments: argparse.Namespace) -> None:
    """Run the listeners until the process is killed."""
    directory = Path(arguments.dir)
    directory.mkdir(parents=True, exist_ok=True)
    handler = Sink(directory)
    context: ssl.SSLContext | None = None
    if arguments.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(arguments.tls_cert, arguments.tls_key)
    options: dict[str, Any] = {"hostname": "sink.test", "auth_require_tls": False}
    if arguments.seven_bit:
        options["decode_data"] = True  # aiosmtpd then leaves 8BITMIME out of its EHLO
    if arguments.auth:
        user, _, password = arguments.auth.partition(":")
        options.update(auth_required=True, authenticator=_authenticator(user, password))
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(
            lambda: SinkSMTP(handler, tls_context=context, **options),
            "127.0.0.1",
            arguments.port,
        )
    ]
    if arguments.tls_port:
        assert context is not None, "--tls-port needs --tls-cert and --tls-key"
        servers.append(
            await loop.create_server(
                lambda: SinkSMTP(handler, **options),
                "127.0.0.1",
                arguments.tls_port,
                ssl=context,
            )
        )
    (directory / "ready").touch()  # the listeners are bound: tests may connect
    await asyncio.gather(*(server.serve_forever() for server in servers))


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--tls-port", type=int)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--auth")
    parser.add_argument("--seven-bit", action="store_true")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
