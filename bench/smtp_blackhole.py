"""A discarding SMTP sink for the messaging benchmark: aiosmtpd on uvloop, nothing kept.

    .venv/bin/python bench/smtp_blackhole.py --port P

It listens on 127.0.0.1:P, accepts every message and throws it away, counting: messages
accepted, distinct recipients, distinct `Message-ID`s (found by a byte search of the
headers, nothing parsed) and when the first and the last message came. It writes
`ready` on stdout once listening; then each line on stdin is a command answered by one
JSON line on stdout: `status` (the counts), `reset` (the counts, then zeroed). It stops
at the end of stdin or on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson
import uvloop
from aiosmtpd.smtp import SMTP, Envelope, Session

HEADER_SPAN = 8_192  # bytes searched for the Message-ID: the headers come first
MESSAGE_ID = b"\r\nMessage-ID: "


class Discard:
    """An aiosmtpd handler that counts what it accepts and keeps none of it."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything counted so far."""
        self.accepted = 0
        self.recipients: set[str] = set()
        self.message_ids: set[bytes] = set()
        self.without_id = 0
        self.first: float | None = None
        self.last: float | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Count the message; always `250`."""
        now = time.time()
        if self.first is None:
            self.first = now
        self.last = now
        self.accepted += 1
        self.recipients.update(envelope.rcpt_tos)
        content = envelope.original_content or b""
        start = content.find(MESSAGE_ID, 0, HEADER_SPAN)
        if start < 0:
            self.without_id += 1
        else:
            start += len(MESSAGE_ID)
            self.message_ids.add(content[start : content.find(b"\r\n", start)])
        return "250 2.0.0 OK discarded"

    def status(self) -> dict[str, Any]:
        """The counts, and the accept rate between the first and the last message."""
        window = (self.last - self.first) if self.first and self.last else 0.0
        return {
            "accepted": self.accepted,
            "distinct_recipients": len(self.recipients),
            "distinct_message_ids": len(self.message_ids),
            "without_message_id": self.without_id,
            "first": self.first,
            "last": self.last,
            "per_s": round((self.accepted - 1) / window, 1) if window > 0 else 0.0,
        }


async def serve(port: int) -> None:
    """Listen on `port` and answer commands from stdin until it ends or SIGTERM."""
    loop = asyncio.get_running_loop()
    handler = Discard()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="blackhole.bench", ident="blackhole", decode_data=False),
        "127.0.0.1",
        port,
        backlog=256,
    )
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    stopped = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)

    def answer(document: dict[str, Any]) -> None:
        sys.stdout.write(orjson.dumps(document).decode() + "\n")
        sys.stdout.flush()

    async def commands() -> None:
        while line := await reader.readline():
            command = line.decode().strip()
            if command == "status":
                answer(handler.status())
            elif command == "reset":
                answer(handler.status())
                handler.reset()
            else:
                answer({"error": f"unknown command {command!r}"})
        stopped.set()

    sys.stdout.write("ready\n")
    sys.stdout.flush()
    reading = asyncio.create_task(commands())
    await stopped.wait()
    reading.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reading
    server.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sink until stdin ends or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd logs every connection
    uvloop.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
