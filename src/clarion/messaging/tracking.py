"""Signed links for end customers: the open pixel, click tracking, one-click unsubscribe
(RFC 8058), the preferences page, "view in browser" and double opt-in confirmation.

A token names what a link is about (a message, a link index, a profile) and nothing else:
a click token names (message, link index), never the target URL, which delivery keeps in
the database, so click tracking can never be an open redirect. Tokens cannot be forged,
enumerated or swapped between purposes:

    token  = base64url-no-padding(version | kind | sealed | tag)
    tag    = HMAC-SHA256(mac_key[kind], version | kind | fields)[:16]
    sealed = fields XOR HMAC-SHA256(enc_key[kind], tag | counter)...

Both keys are derived from the app's secret with HKDF-SHA256, one pair per kind, so a
click token replayed as an unsubscribe token fails its tag even before its kind byte is
read. Sealing the fields with a keystream drawn from the tag (SIV-style deterministic
encryption) hides message and profile ids: consecutive ids give unrelated-looking tokens,
and a forwarded link reveals no id. Fields are packed as uuids in 16 bytes and integers as
unsigned LEB128 varints; the longest token (an unsubscribe link naming a topic and a
message) stays under 100 characters.

Tokens do not expire (emails are opened months later). Rotating the secret keeps old links
working: `LinkSigner(new, previous_keys=[old])` signs with the new key and accepts both (the
app passes `CLARION_PREVIOUS_SECRET_KEYS` as `previous_keys`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, Literal, TypeAlias, overload
from uuid import UUID

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from clarion.core.errors import NotFound
from clarion.messaging.channels.base import ChannelKind

TokenKind = Literal["open", "click", "unsubscribe", "preferences", "view", "confirm"]

VERSION = 1
TAG_BYTES = 16
_BLOCK_BYTES = 32  # one HMAC-SHA256 output: a key stream block
MIN_KEY_CHARS = 16
MAX_TOKEN_CHARS = 128
MAX_INT = 2**63 - 1

# Wire codes: never renumber, or every link already sent breaks.
_KIND_CODES: dict[TokenKind, int] = {
    "open": 1,
    "click": 2,
    "unsubscribe": 3,
    "preferences": 4,
    "view": 5,
    "confirm": 6,
}
CHANNEL_CODES: dict[ChannelKind, int] = {"email": 1, "sms": 2, "push": 3, "inbox": 4, "webhook": 5}
_CHANNELS_BY_CODE = {code: channel for channel, code in CHANNEL_CODES.items()}

# Unsubscribe flags: what follows the profile id.
_HEADERS = {kind: bytes((VERSION, code)) for kind, code in _KIND_CODES.items()}
_HAS_TOPIC = 0x01
_HAS_CHANNEL = 0x02
_HAS_MESSAGE = 0x04

_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+")


class InvalidToken(NotFound):
    """A link token that is not one of ours, or not of the expected kind.

    Deliberately says nothing about why: a wrong tag, kind, version or length all read
    the same, and map to 404 like any unknown link.
    """

    def __init__(self) -> None:
        super().__init__("No such link.")


def _check_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise ValueError(f"{name} must be an integer from 0 to 2**63-1, not {value!r}")


def _check_uuid(name: str, value: UUID) -> None:
    if not isinstance(value, UUID):
        raise TypeError(f"{name} must be a uuid.UUID, not {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class OpenPayload:
    """An open pixel: the message whose HTML loaded it."""

    kind: ClassVar[TokenKind] = "open"
    message_id: UUID

    def __post_init__(self) -> None:
        _check_uuid("message_id", self.message_id)


@dataclass(frozen=True, slots=True)
class ClickPayload:
    """A tracked click: the message and the index of the link in its stored link list."""

    kind: ClassVar[TokenKind] = "click"
    message_id: UUID
    link_index: int

    def __post_init__(self) -> None:
        _check_uuid("message_id", self.message_id)
        _check_int("link_index", self.link_index)


@dataclass(frozen=True, slots=True)
class UnsubscribePayload:
    """An unsubscribe: the profile, and what from.

    Neither `topic_id` nor `channel`: everything (the workspace's marketing messages);
    a topic id: that topic; a channel: that channel. `message_id`, when given, names the
    message the link came in, for attribution.
    """

    kind: ClassVar[TokenKind] = "unsubscribe"
    workspace_id: int
    profile_id: UUID
    topic_id: int | None = None
    channel: ChannelKind | None = None
    message_id: UUID | None = None

    def __post_init__(self) -> None:
        _check_int("workspace_id", self.workspace_id)
        _check_uuid("profile_id", self.profile_id)
        if self.topic_id is not None and self.channel is not None:
            raise ValueError("an unsubscribe link names a topic or a channel, not both")
        if self.topic_id is not None:
            _check_int("topic_id", self.topic_id)
        if self.channel is not None and self.channel not in CHANNEL_CODES:
            raise ValueError(f"unknown channel {self.channel!r}")
        if self.message_id is not None:
            _check_uuid("message_id", self.message_id)


@dataclass(frozen=True, slots=True)
class PreferencesPayload:
    """The preferences page of one profile."""

    kind: ClassVar[TokenKind] = "preferences"
    workspace_id: int
    profile_id: UUID

    def __post_init__(self) -> None:
        _check_int("workspace_id", self.workspace_id)
        _check_uuid("profile_id", self.profile_id)


@dataclass(frozen=True, slots=True)
class ViewPayload:
    """A message's "view in browser" page."""

    kind: ClassVar[TokenKind] = "view"
    message_id: UUID

    def __post_init__(self) -> None:
        _check_uuid("message_id", self.message_id)


@dataclass(frozen=True, slots=True)
class ConfirmPayload:
    """A double opt-in confirmation: the profile and the topic it asked to subscribe to."""

    kind: ClassVar[TokenKind] = "confirm"
    workspace_id: int
    profile_id: UUID
    topic_id: int

    def __post_init__(self) -> None:
        _check_int("workspace_id", self.workspace_id)
        _check_uuid("profile_id", self.profile_id)
        _check_int("topic_id", self.topic_id)


Payload: TypeAlias = (
    OpenPayload
    | ClickPayload
    | UnsubscribePayload
    | PreferencesPayload
    | ViewPayload
    | ConfirmPayload
)


def _put_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


class _Reader:
    """Strict reading of packed fields; any surprise is an InvalidToken."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def byte(self) -> int:
        if self.at >= len(self.data):
            raise InvalidToken
        self.at += 1
        return self.data[self.at - 1]

    def uuid(self) -> UUID:
        end = self.at + 16
        if end > len(self.data):
            raise InvalidToken
        value = UUID(bytes=self.data[self.at : end])
        self.at = end
        return value

    def varint(self) -> int:
        value = shift = 0
        while True:
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        # A non-minimal encoding or a value out of range is not one we wrote.
        if (byte == 0 and shift > 7) or value > MAX_INT:
            raise InvalidToken
        return value

    def end(self) -> None:
        if self.at != len(self.data):
            raise InvalidToken


def _pack(payload: Payload) -> bytes:
    out = bytearray()
    match payload:
        case OpenPayload() | ViewPayload():
            out += payload.message_id.bytes
        case ClickPayload():
            out += payload.message_id.bytes
            _put_varint(out, payload.link_index)
        case UnsubscribePayload():
            _put_varint(out, payload.workspace_id)
            out += payload.profile_id.bytes
            flags = (
                (_HAS_TOPIC if payload.topic_id is not None else 0)
                | (_HAS_CHANNEL if payload.channel is not None else 0)
                | (_HAS_MESSAGE if payload.message_id is not None else 0)
            )
            out.append(flags)
            if payload.topic_id is not None:
                _put_varint(out, payload.topic_id)
            if payload.channel is not None:
                out.append(CHANNEL_CODES[payload.channel])
            if payload.message_id is not None:
                out += payload.message_id.bytes
        case PreferencesPayload():
            _put_varint(out, payload.workspace_id)
            out += payload.profile_id.bytes
        case ConfirmPayload():
            _put_varint(out, payload.workspace_id)
            out += payload.profile_id.bytes
            _put_varint(out, payload.topic_id)
    return bytes(out)


def _unpack(kind: TokenKind, fields: bytes) -> Payload:
    read = _Reader(fields)
    payload: Payload
    if kind == "open":
        payload = OpenPayload(read.uuid())
    elif kind == "view":
        payload = ViewPayload(read.uuid())
    elif kind == "click":
        payload = ClickPayload(read.uuid(), read.varint())
    elif kind == "preferences":
        payload = PreferencesPayload(read.varint(), read.uuid())
    elif kind == "confirm":
        payload = ConfirmPayload(read.varint(), read.uuid(), read.varint())
    else:
        workspace_id, profile_id, flags = read.varint(), read.uuid(), read.byte()
        if flags & ~(_HAS_TOPIC | _HAS_CHANNEL | _HAS_MESSAGE):
            raise InvalidToken
        topic_id = read.varint() if flags & _HAS_TOPIC else None
        channel = None
        if flags & _HAS_CHANNEL:
            channel = _CHANNELS_BY_CODE.get(read.byte())
            if channel is None:
                raise InvalidToken
        message_id = read.uuid() if flags & _HAS_MESSAGE else None
        try:
            payload = UnsubscribePayload(workspace_id, profile_id, topic_id, channel, message_id)
        except ValueError:
            raise InvalidToken from None
    read.end()
    return payload


class _Keys:
    """One token kind's two keys, as HMAC-SHA256 states keyed once (copies are cheaper
    than keying anew, and a campaign signs a few dozen tokens per email)."""

    __slots__ = ("_enc", "_mac")

    def __init__(self, *, mac: bytes, enc: bytes) -> None:
        self._mac = hmac.new(mac, digestmod=hashlib.sha256)
        self._enc = hmac.new(enc, digestmod=hashlib.sha256)

    def tag(self, data: bytes) -> bytes:
        """The authentication tag of `data`."""
        state = self._mac.copy()
        state.update(data)
        return state.digest()[:TAG_BYTES]

    def keystream(self, tag: bytes, length: int) -> bytes:
        """`length` bytes of key stream for the token with this tag."""
        if length <= _BLOCK_BYTES:  # nearly every token: one block, without the loop
            state = self._enc.copy()
            state.update(tag + b"\x00")
            return state.digest()[:length]
        blocks = []
        for counter in range((length + 31) // 32):
            state = self._enc.copy()
            state.update(tag + bytes((counter,)))
            blocks.append(state.digest())
        return b"".join(blocks)[:length]


def _derive(secret: str) -> dict[TokenKind, _Keys]:
    keys: dict[TokenKind, _Keys] = {}
    for kind in _KIND_CODES:
        material = HKDF(
            algorithm=hashes.SHA256(),
            length=64,
            salt=b"clarion links",
            info=f"clarion/links/v{VERSION}/{kind}".encode(),
        ).derive(secret.encode())
        keys[kind] = _Keys(mac=material[:32], enc=material[32:])
    return keys


def _xor(data: bytes, stream: bytes) -> bytes:
    if len(data) != len(stream):
        raise ValueError("the data and its key stream differ in length")
    mixed = int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")
    return mixed.to_bytes(len(data), "big")


def _decode(token: object) -> bytes:
    if (
        not isinstance(token, str)
        or not 0 < len(token) <= MAX_TOKEN_CHARS
        or not _TOKEN_SHAPE.fullmatch(token)
    ):
        raise InvalidToken
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken from None
    # Unused trailing bits must be zero: one token, one spelling.
    if _encode(raw) != token:
        raise InvalidToken
    return raw


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class LinkSigner:
    """Signs and verifies link tokens with the app's secret (and, for rotation, old ones)."""

    def __init__(self, current_key: str, previous_keys: Iterable[str] = ()) -> None:
        all_keys = [current_key, *previous_keys]
        for key in all_keys:
            if len(key) < MIN_KEY_CHARS:
                raise ValueError(f"a link signing key needs at least {MIN_KEY_CHARS} characters")
        self._keys = [_derive(key) for key in all_keys]

    def sign(self, payload: Payload) -> str:
        """A URL-safe token for `payload`; the same payload always gives the same token."""
        return self._seal(payload.kind, _pack(payload))

    def _seal(self, kind: TokenKind, fields: bytes) -> str:
        keys = self._keys[0][kind]
        header = _HEADERS[kind]
        tag = keys.tag(header + fields)
        sealed = _xor(fields, keys.keystream(tag, len(fields)))
        return _encode(header + sealed + tag)

    def sign_open(self, message_id: UUID) -> str:
        """The open pixel token of a message."""
        return self.sign(OpenPayload(message_id))

    def sign_click(self, message_id: UUID, link_index: int) -> str:
        """The click token of the `link_index`-th tracked link of a message."""
        if type(link_index) is int and 0 <= link_index < 0x80 and isinstance(message_id, UUID):
            # The usual case, packed without building the payload.
            return self._seal("click", message_id.bytes + bytes((link_index,)))
        return self.sign(ClickPayload(message_id, link_index))

    def sign_unsubscribe(
        self,
        *,
        workspace_id: int,
        profile_id: UUID,
        topic_id: int | None = None,
        channel: ChannelKind | None = None,
        message_id: UUID | None = None,
    ) -> str:
        """The unsubscribe token of a profile: from everything, one topic or one channel."""
        return self.sign(
            UnsubscribePayload(workspace_id, profile_id, topic_id, channel, message_id)
        )

    def sign_preferences(self, *, workspace_id: int, profile_id: UUID) -> str:
        """The preferences page token of a profile."""
        return self.sign(PreferencesPayload(workspace_id, profile_id))

    def sign_view(self, message_id: UUID) -> str:
        """The "view in browser" token of a message."""
        return self.sign(ViewPayload(message_id))

    def sign_confirm(self, *, workspace_id: int, profile_id: UUID, topic_id: int) -> str:
        """The double opt-in confirmation token of a profile for one topic."""
        return self.sign(ConfirmPayload(workspace_id, profile_id, topic_id))

    @overload
    def verify(self, token: str, expected_kind: Literal["open"]) -> OpenPayload: ...
    @overload
    def verify(self, token: str, expected_kind: Literal["click"]) -> ClickPayload: ...
    @overload
    def verify(self, token: str, expected_kind: Literal["unsubscribe"]) -> UnsubscribePayload: ...
    @overload
    def verify(self, token: str, expected_kind: Literal["preferences"]) -> PreferencesPayload: ...
    @overload
    def verify(self, token: str, expected_kind: Literal["view"]) -> ViewPayload: ...
    @overload
    def verify(self, token: str, expected_kind: Literal["confirm"]) -> ConfirmPayload: ...
    @overload
    def verify(self, token: str, expected_kind: TokenKind) -> Payload: ...

    def verify(self, token: str, expected_kind: TokenKind) -> Payload:
        """The payload of a token this signer (or a previous key) made for `expected_kind`.

        Raises `InvalidToken`, and only that, for anything else.
        """
        if expected_kind not in _KIND_CODES:
            raise ValueError(f"unknown token kind {expected_kind!r}")
        raw = _decode(token)
        if len(raw) < 2 + TAG_BYTES:
            raise InvalidToken
        header, sealed, tag = raw[:2], raw[2:-TAG_BYTES], raw[-TAG_BYTES:]
        if header != bytes((VERSION, _KIND_CODES[expected_kind])):
            raise InvalidToken
        for key_set in self._keys:
            keys = key_set[expected_kind]
            fields = _xor(sealed, keys.keystream(tag, len(sealed)))
            expected = keys.tag(header + fields)
            if hmac.compare_digest(expected, tag):
                return _unpack(expected_kind, fields)
        raise InvalidToken


# Public endpoints, relative to the public base URL. Fixed: they are in every email sent.
OPEN_PIXEL_PATH = "/t/o/{token}.gif"
CLICK_PATH = "/t/c/{token}"
UNSUBSCRIBE_PATH = "/u/{token}"
PREFERENCES_PATH = "/p/{token}"
VIEW_PATH = "/v/{token}"
CONFIRM_PATH = "/c/{token}"

_BASE_URL_SHAPE = re.compile(r"https?://[^\s/?#<>,\"]+(/[^\s?#<>,\"]*)?")


def _url(base_url: str, path: str, token: str) -> str:
    if not _TOKEN_SHAPE.fullmatch(token):
        raise ValueError("not a link token")
    return _base(base_url) + path.format(token=token)


@lru_cache(maxsize=16)
def _base(base_url: str) -> str:
    """The base URL checked, without its trailing slash (a process has one or two: an
    email's two dozen links check it once)."""
    if not _BASE_URL_SHAPE.fullmatch(base_url):
        raise ValueError(f"not an http(s) base URL without query or fragment: {base_url!r}")
    return base_url.rstrip("/")


def open_pixel_url(base_url: str, token: str) -> str:
    """The open pixel's URL: `{base_url}/t/o/{token}.gif`."""
    return _url(base_url, OPEN_PIXEL_PATH, token)


def click_url(base_url: str, token: str) -> str:
    """A tracked link's URL: `{base_url}/t/c/{token}`, redirecting to the stored target."""
    return _url(base_url, CLICK_PATH, token)


def unsubscribe_url(base_url: str, token: str) -> str:
    """The unsubscribe URL: `{base_url}/u/{token}`, a page on GET, one-click on POST."""
    return _url(base_url, UNSUBSCRIBE_PATH, token)


def preferences_url(base_url: str, token: str) -> str:
    """The preferences page's URL: `{base_url}/p/{token}`."""
    return _url(base_url, PREFERENCES_PATH, token)


def view_url(base_url: str, token: str) -> str:
    """The "view in browser" URL: `{base_url}/v/{token}`."""
    return _url(base_url, VIEW_PATH, token)


def confirm_url(base_url: str, token: str) -> str:
    """The double opt-in confirmation URL: `{base_url}/c/{token}`, a page on GET, confirming
    on POST."""
    return _url(base_url, CONFIRM_PATH, token)


_HEADER_UNSAFE = re.compile(r"[\s<>,\"]")


def list_unsubscribe_headers(url: str, *, mailto: str | None = None) -> dict[str, str]:
    """The RFC 8058 one-click pair: `List-Unsubscribe` and `List-Unsubscribe-Post`.

    `url` must be https (RFC 8058 requires one HTTPS URI); it comes first, in angle
    brackets, then the optional `mailto` (an address or a `mailto:` URI). The endpoint
    must unsubscribe on a POST of `List-Unsubscribe=One-Click` with no cookie or
    redirect, and the DKIM signature must cover both headers.
    """
    if not url.startswith("https://") or _HEADER_UNSAFE.search(url):
        raise ValueError(f"List-Unsubscribe needs an https URL, got {url!r}")
    targets = [f"<{url}>"]
    if mailto is not None:
        uri = mailto if mailto.lower().startswith("mailto:") else f"mailto:{mailto}"
        if "@" not in uri or _HEADER_UNSAFE.search(uri):
            raise ValueError(f"not a mailto address: {mailto!r}")
        targets.append(f"<{uri}>")
    return {
        "List-Unsubscribe": ", ".join(targets),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


# A 1x1 transparent GIF89a (43 bytes): header, a 1x1 screen with a 2-colour palette
# (black, white), a graphic control extension making colour 0 transparent, a 1x1 image,
# its LZW data (clear, pixel 0, end) and the trailer.
TRANSPARENT_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
    b"\x21\xf9\x04\x01\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00"
    b"\x02\x02\x44\x01\x00\x3b"
)
# Headers for the pixel's answer: never cached, so each open reaches us.
PIXEL_HEADERS = {
    "Content-Type": "image/gif",
    "Cache-Control": "no-store, no-cache, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}
