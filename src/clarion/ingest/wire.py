"""Reading a tracking request off the wire: size limits, gzip, JSON and the write key."""

from __future__ import annotations

import base64
import binascii
import zlib

import msgspec
from starlette.requests import Request

from clarion.core.bodies import read_limited
from clarion.core.errors import FieldError, InvalidInput, PayloadTooLarge, Unauthorized

_GZIP_WINDOW = 16 + zlib.MAX_WBITS
_GZIP_MAGIC = b"\x1f\x8b"


class UnsupportedEncoding(InvalidInput):
    """The body's Content-Encoding is neither gzip nor identity."""

    status = 415
    code = "unsupported-encoding"
    title = "Unsupported content encoding"


async def read_body(request: Request, *, limit: int) -> bytes:
    """The request's body, decompressed, refusing anything over `limit` bytes."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise UnsupportedEncoding(
            f"Content-Encoding {encoding!r} is not supported; send gzip or nothing.",
            errors=[FieldError("Content-Encoding", "must be gzip or identity")],
        )
    raw = await read_limited(request, limit=limit, too_large=lambda: _too_large(limit))
    return _gunzip(raw, limit=limit) if encoding == "gzip" else raw


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The body is larger than {limit // 1024} KB.",
        errors=[FieldError("body", f"larger than {limit // 1024} KB")],
    )


def _gunzip(raw: bytes, *, limit: int) -> bytes:
    """Decompress every member (RFC 1952 lets a stream hold several in a row, as some SDKs
    and proxies send), at most `limit` bytes in all, so a small bomb cannot fill memory."""
    parts: list[bytes] = []
    size = 0
    while True:
        inflater = zlib.decompressobj(_GZIP_WINDOW)
        try:
            part = inflater.decompress(raw, limit + 1 - size)
        except zlib.error as exc:
            raise _bad_gzip() from exc
        size += len(part)
        if size > limit:
            raise _too_large(limit)
        if not inflater.eof:
            raise _bad_gzip()
        parts.append(part)
        raw = inflater.unused_data
        if not raw:
            return b"".join(parts)
        if not raw.startswith(_GZIP_MAGIC):
            raise InvalidInput(
                "The body holds bytes after its gzip stream that start no gzip member.",
                errors=[FieldError("body", "data after the gzip stream")],
            )


def _bad_gzip() -> InvalidInput:
    return InvalidInput(
        "The body is marked gzip but is not a complete gzip stream.",
        errors=[FieldError("body", "invalid gzip stream")],
    )


def basic_auth_user(request: Request) -> str | None:
    """The user name of the request's Basic credentials, or None when it sends none."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "basic":
        raise Unauthorized("Use HTTP Basic auth with the write key as user name.", scheme="Basic")
    try:
        user = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")[0]
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise Unauthorized("Malformed Basic credentials.", scheme="Basic") from exc
    return user or None


def body_write_key(fields: dict[str, msgspec.Raw]) -> str:
    """The body's `writeKey`; Unauthorized when there is none."""
    raw = fields.get("writeKey")
    key = msgspec.json.decode(raw) if raw else None
    if isinstance(key, str) and key:
        return key
    raise Unauthorized(
        "Send the source's write key as the Basic auth user name or as `writeKey`.",
        scheme="Basic",
    )
