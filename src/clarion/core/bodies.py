"""Reading a request's raw body under a size limit, for routes that take bytes, not a model.

Each caller says what "too large" means to its clients (the detail and the field message of
its 413), so the helper takes the error to raise rather than writing one of its own:

    raw = await read_limited(request, limit=MAX_BYTES, too_large=lambda: PayloadTooLarge(...))
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

from clarion.core.errors import PayloadTooLarge


async def read_limited(
    request: Request, *, limit: int, too_large: Callable[[], PayloadTooLarge]
) -> bytes:
    """The request's body, at most `limit` bytes; raises `too_large()` as soon as the declared
    Content-Length or the bytes read so far pass `limit`, reading no further."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)
