"""`core.bodies.read_limited`, the body reader the tracking API and the bounce route share:
the whole body up to its limit, the caller's 413 past it, found from the declared
Content-Length before anything is read, or from the bytes as they stream in, reading no
further than the chunk that passes the limit."""

from __future__ import annotations

import pytest
from starlette.requests import Request
from starlette.types import Message

from clarion.core.bodies import read_limited
from clarion.core.errors import FieldError, PayloadTooLarge

LIMIT = 10


class Body:
    """An ASGI `receive` that hands over `chunks` one at a time and counts the calls."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)
        self.reads = 0

    async def __call__(self) -> Message:
        self.reads += 1
        chunk = self.chunks.pop(0) if self.chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}


def request(body: Body, content_length: str | None = None) -> Request:
    headers = [] if content_length is None else [(b"content-length", content_length.encode())]
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    return Request(scope, body)


def too_large() -> PayloadTooLarge:
    return PayloadTooLarge("Too big.", errors=[FieldError("body", "over 10 bytes")])


async def test_a_body_up_to_the_limit_is_read_whole_across_chunks() -> None:
    body = Body(b"abcd", b"efgh", b"ij")
    raw = await read_limited(request(body, "10"), limit=LIMIT, too_large=too_large)
    assert raw == b"abcdefghij"


async def test_an_empty_body_is_empty_bytes() -> None:
    assert await read_limited(request(Body()), limit=LIMIT, too_large=too_large) == b""


async def test_a_declared_length_past_the_limit_is_refused_before_reading() -> None:
    body = Body(b"x")
    with pytest.raises(PayloadTooLarge) as refused:
        await read_limited(request(body, "11"), limit=LIMIT, too_large=too_large)
    assert (refused.value.detail, refused.value.errors) == (
        "Too big.",
        [FieldError("body", "over 10 bytes")],
    )
    assert body.reads == 0


@pytest.mark.parametrize("declared", [None, "", "ten", "-1", "3"])
async def test_streamed_bytes_past_the_limit_are_refused_reading_no_further(
    declared: str | None,
) -> None:
    """Whatever Content-Length says (absent, not a number, or smaller than the truth)."""
    body = Body(b"x" * 6, b"x" * 5, b"never read", b"nor this")
    with pytest.raises(PayloadTooLarge):
        await read_limited(request(body, declared), limit=LIMIT, too_large=too_large)
    assert body.reads == 2
    assert body.chunks == [b"never read", b"nor this"]
