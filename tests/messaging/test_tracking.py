"""Signed link tokens, their URLs, the List-Unsubscribe pair and the open pixel."""

from __future__ import annotations

import base64
import itertools
import re
import uuid
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clarion.core.errors import NotFound
from clarion.messaging.channels.base import ChannelKind
from clarion.messaging.tracking import (
    CHANNEL_CODES,
    MAX_INT,
    PIXEL_HEADERS,
    TRANSPARENT_GIF,
    ClickPayload,
    ConfirmPayload,
    InvalidToken,
    LinkSigner,
    OpenPayload,
    Payload,
    PreferencesPayload,
    TokenKind,
    UnsubscribePayload,
    ViewPayload,
    _unpack,
    click_url,
    confirm_url,
    list_unsubscribe_headers,
    open_pixel_url,
    preferences_url,
    unsubscribe_url,
    view_url,
)

KEY = "k" * 16 + "the-current-secret"
OLD_KEY = "o" * 16 + "the-previous-secret"
KINDS: tuple[TokenKind, ...] = get_args(TokenKind)
MESSAGE = uuid.UUID("0190f5b2-7c1e-7a3b-8d4e-2f6a1b9c0d11")
PROFILE = uuid.UUID("5d6f0c1e-3b2a-4c8d-9e7f-a1b2c3d4e5f6")

signer = LinkSigner(KEY)

ids = st.integers(min_value=0, max_value=MAX_INT)
uuids = st.uuids()
channels = st.sampled_from(get_args(ChannelKind))


@st.composite
def unsubscribes(draw: st.DrawFn) -> UnsubscribePayload:
    scope = draw(st.sampled_from(["all", "topic", "channel"]))
    return UnsubscribePayload(
        workspace_id=draw(ids),
        profile_id=draw(uuids),
        topic_id=draw(ids) if scope == "topic" else None,
        channel=draw(channels) if scope == "channel" else None,
        message_id=draw(st.none() | uuids),
    )


payloads: st.SearchStrategy[Payload] = st.one_of(
    st.builds(OpenPayload, uuids),
    st.builds(ClickPayload, uuids, ids),
    unsubscribes(),
    st.builds(PreferencesPayload, ids, uuids),
    st.builds(ViewPayload, uuids),
    st.builds(ConfirmPayload, ids, uuids, ids),
)


def one_of_each() -> list[Payload]:
    return [
        OpenPayload(MESSAGE),
        ClickPayload(MESSAGE, 3),
        UnsubscribePayload(7, PROFILE, topic_id=12, message_id=MESSAGE),
        PreferencesPayload(7, PROFILE),
        ViewPayload(MESSAGE),
        ConfirmPayload(7, PROFILE, 12),
    ]


# Round trips


@given(payloads)
def test_every_kind_of_payload_comes_back_from_its_token(payload: Payload) -> None:
    token = signer.sign(payload)

    assert signer.verify(token, payload.kind) == payload
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert len(token) < 100


def test_the_sign_helpers_make_the_payloads_they_name() -> None:
    assert signer.verify(signer.sign_open(MESSAGE), "open") == OpenPayload(MESSAGE)
    assert signer.verify(signer.sign_click(MESSAGE, 4), "click") == ClickPayload(MESSAGE, 4)
    assert signer.verify(signer.sign_view(MESSAGE), "view") == ViewPayload(MESSAGE)
    assert signer.verify(
        signer.sign_preferences(workspace_id=7, profile_id=PROFILE), "preferences"
    ) == PreferencesPayload(7, PROFILE)
    token = signer.sign_unsubscribe(workspace_id=7, profile_id=PROFILE, channel="sms")
    assert signer.verify(token, "unsubscribe") == UnsubscribePayload(7, PROFILE, channel="sms")
    token = signer.sign_confirm(workspace_id=7, profile_id=PROFILE, topic_id=12)
    assert signer.verify(token, "confirm") == ConfirmPayload(7, PROFILE, 12)


def test_a_preferences_token_with_its_kind_byte_rewritten_is_no_confirmation() -> None:
    # A confirmation carries a preferences payload and a topic: the kind's own keys keep
    # a preferences link (forwarded, say) from ever confirming a subscription.
    token = signer.sign_preferences(workspace_id=7, profile_id=PROFILE)
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[1] = 6  # the confirm kind code
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(InvalidToken):
        signer.verify(forged, "confirm")


def test_the_longest_token_stays_well_under_100_characters() -> None:
    biggest = UnsubscribePayload(MAX_INT, PROFILE, topic_id=MAX_INT, message_id=MESSAGE)
    assert len(signer.sign(biggest)) <= 92
    assert len(signer.sign(ClickPayload(MESSAGE, 12))) <= 48


def test_signing_is_deterministic() -> None:
    assert signer.sign_click(MESSAGE, 1) == LinkSigner(KEY).sign_click(MESSAGE, 1)


def test_every_channel_has_a_wire_code() -> None:
    assert set(CHANNEL_CODES) == set(get_args(ChannelKind))
    assert len(set(CHANNEL_CODES.values())) == len(CHANNEL_CODES)


def test_payloads_refuse_values_a_token_cannot_carry() -> None:
    with pytest.raises(ValueError, match="not both"):
        UnsubscribePayload(1, PROFILE, topic_id=2, channel="email")
    with pytest.raises(ValueError):
        ClickPayload(MESSAGE, -1)
    with pytest.raises(ValueError):
        PreferencesPayload(MAX_INT + 1, PROFILE)
    with pytest.raises(ValueError):
        ClickPayload(MESSAGE, True)
    with pytest.raises(TypeError):
        OpenPayload(str(MESSAGE))  # type: ignore[arg-type]


# Forgery


def test_changing_any_character_of_any_token_invalidates_it() -> None:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for payload in one_of_each():
        token = signer.sign(payload)
        for position, original in enumerate(token):
            for replacement in alphabet:
                if replacement == original:
                    continue
                forged = token[:position] + replacement + token[position + 1 :]
                with pytest.raises(InvalidToken):
                    signer.verify(forged, payload.kind)


def test_flipping_any_bit_of_the_decoded_token_invalidates_it() -> None:
    for payload in one_of_each():
        raw = base64.urlsafe_b64decode(signer.sign(payload) + "==")
        for index in range(len(raw)):
            for bit in range(8):
                forged = bytearray(raw)
                forged[index] ^= 1 << bit
                token = base64.urlsafe_b64encode(forged).rstrip(b"=").decode()
                with pytest.raises(InvalidToken):
                    signer.verify(token, payload.kind)


def test_a_token_is_refused_as_any_other_kind() -> None:
    for payload in one_of_each():
        token = signer.sign(payload)
        for kind in KINDS:
            if kind != payload.kind:
                with pytest.raises(InvalidToken):
                    signer.verify(token, kind)


def test_a_click_token_with_its_kind_byte_rewritten_is_no_unsubscribe_token() -> None:
    raw = bytearray(base64.urlsafe_b64decode(signer.sign_click(MESSAGE, 1) + "=="))
    raw[1] = 3  # the unsubscribe kind code
    token = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    with pytest.raises(InvalidToken):
        signer.verify(token, "unsubscribe")


def test_a_token_with_a_future_version_is_refused() -> None:
    raw = bytearray(base64.urlsafe_b64decode(signer.sign_open(MESSAGE) + "=="))
    raw[0] = 2
    with pytest.raises(InvalidToken):
        signer.verify(base64.urlsafe_b64encode(raw).rstrip(b"=").decode(), "open")


def test_a_truncated_or_extended_token_is_refused() -> None:
    token = signer.sign_unsubscribe(workspace_id=1, profile_id=PROFILE, message_id=MESSAGE)
    for length in range(len(token)):
        with pytest.raises(InvalidToken):
            signer.verify(token[:length], "unsubscribe")
    for suffix in ("A", "AA", "AAAA", token):
        with pytest.raises(InvalidToken):
            signer.verify(token + suffix, "unsubscribe")


def test_tokens_of_another_key_are_refused() -> None:
    other = LinkSigner("a-different-secret-of-the-same-length")
    for payload in one_of_each():
        with pytest.raises(InvalidToken):
            signer.verify(other.sign(payload), payload.kind)


def test_after_rotation_old_links_still_work_and_new_ones_use_the_new_key() -> None:
    old = LinkSigner(OLD_KEY)
    rotated = LinkSigner(KEY, previous_keys=[OLD_KEY])

    for payload in one_of_each():
        assert rotated.verify(old.sign(payload), payload.kind) == payload
        assert rotated.sign(payload) == signer.sign(payload)
        with pytest.raises(InvalidToken):
            old.verify(rotated.sign(payload), payload.kind)


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "A",
        "AAAA",
        "A" * 46,
        "A" * 10_000,
        "é" * 40,
        "AQJ\u00e9" + "A" * 40,
        "AQJ AAAA" + "A" * 40,
        "AQJ/AAAA+" + "A" * 40,
        "AQJ\nAAAA" + "A" * 40,
        "../../etc/passwd",
        "%41%42",
    ],
)
def test_junk_is_an_invalid_token(junk: str) -> None:
    for kind in KINDS:
        with pytest.raises(InvalidToken):
            signer.verify(junk, kind)


def test_padding_and_other_spellings_of_a_valid_token_are_refused() -> None:
    token = signer.sign_click(MESSAGE, 1)
    assert len(token) % 4  # else padding would add nothing
    padded = token + "=" * (-len(token) % 4)
    assert base64.urlsafe_b64decode(padded)  # the padded form decodes fine...

    for variant in (padded, token + "=", " " + token, token + "\n", token.upper()):
        with pytest.raises(InvalidToken):  # ...but only the canonical spelling is a token
            signer.verify(variant, "click")


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("click", MESSAGE.bytes + b"\x81\x00"),  # a varint with a needless zero byte
        ("click", MESSAGE.bytes + b"\xff" * 9 + b"\x7f"),  # past 2**63-1
        ("click", MESSAGE.bytes + b"\x01\x00"),  # a byte past the end
        ("open", MESSAGE.bytes[:15]),  # a short uuid
        ("confirm", b"\x01" + PROFILE.bytes),  # no topic
        ("unsubscribe", b"\x01" + PROFILE.bytes + b"\x08"),  # an unknown flag
        ("unsubscribe", b"\x01" + PROFILE.bytes + b"\x02\x09"),  # an unknown channel
        ("unsubscribe", b"\x01" + PROFILE.bytes + b"\x03\x01\x01"),  # topic and channel
    ],
)
def test_fields_no_signer_writes_are_refused_even_under_a_good_tag(
    kind: TokenKind, fields: bytes
) -> None:
    with pytest.raises(InvalidToken):
        _unpack(kind, fields)


def test_a_non_string_is_an_invalid_token() -> None:
    with pytest.raises(InvalidToken):
        signer.verify(signer.sign_open(MESSAGE).encode(), "open")  # type: ignore[call-overload]


def test_invalid_token_says_nothing_and_is_a_not_found() -> None:
    failures = []
    for token in ("", "AAAA" * 10, signer.sign_click(MESSAGE, 1)):
        with pytest.raises(InvalidToken) as caught:
            signer.verify(token, "unsubscribe")
        failures.append(caught.value)

    assert {str(error) for error in failures} == {"No such link."}
    assert all(isinstance(error, NotFound) and error.status == 404 for error in failures)


def test_an_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="kind"):
        signer.verify(signer.sign_open(MESSAGE), "bounce")  # type: ignore[call-overload]


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="16"):
        LinkSigner("short")
    with pytest.raises(ValueError, match="16"):
        LinkSigner(KEY, previous_keys=[""])


# Enumeration


def test_consecutive_message_ids_give_unrelated_looking_tokens() -> None:
    tokens = [signer.sign_open(uuid.UUID(int=MESSAGE.int + step)) for step in range(64)]
    raw = [base64.urlsafe_b64decode(token + "==")[2:] for token in tokens]  # past the header

    for first, second in itertools.pairwise(raw):
        differing_bits = sum(bin(a ^ b).count("1") for a, b in zip(first, second, strict=True))
        # Unrelated 32-byte strings differ in 128 bits on average; neighbours would in ~1.
        assert 80 < differing_bits < 176
    # No shared prefix beyond the version and kind characters.
    assert len({token[:4] for token in tokens}) > 32


def test_the_token_does_not_show_the_ids_it_carries() -> None:
    payload = UnsubscribePayload(7, PROFILE, message_id=MESSAGE)
    raw = base64.urlsafe_b64decode(signer.sign(payload) + "==")

    assert PROFILE.bytes not in raw
    assert MESSAGE.bytes not in raw
    assert PROFILE.bytes[:4] not in raw


# URLs and headers


def test_urls_use_the_documented_paths() -> None:
    token = signer.sign_open(MESSAGE)
    base = "https://mail.example.com"

    assert open_pixel_url(base, token) == f"{base}/t/o/{token}.gif"
    assert click_url(base, token) == f"{base}/t/c/{token}"
    assert unsubscribe_url(base, token) == f"{base}/u/{token}"
    assert preferences_url(base, token) == f"{base}/p/{token}"
    assert view_url(base, token) == f"{base}/v/{token}"
    assert confirm_url(base, token) == f"{base}/c/{token}"


def test_a_base_url_may_have_a_path_and_a_trailing_slash() -> None:
    assert click_url("https://example.com/clarion/", "abc") == "https://example.com/clarion/t/c/abc"
    assert click_url("http://127.0.0.1:8000", "abc") == "http://127.0.0.1:8000/t/c/abc"


@pytest.mark.parametrize(
    "base",
    ["example.com", "ftp://example.com", "https://example.com/?a=1", "https://ex ample.com", ""],
)
def test_a_base_url_must_be_plain_http(base: str) -> None:
    with pytest.raises(ValueError, match="base URL"):
        click_url(base, "abc")


def test_a_url_refuses_what_is_not_a_token() -> None:
    with pytest.raises(ValueError, match="token"):
        click_url("https://example.com", "../admin")


def test_list_unsubscribe_headers_follow_rfc_8058() -> None:
    url = unsubscribe_url(
        "https://mail.example.com", signer.sign_unsubscribe(workspace_id=1, profile_id=PROFILE)
    )

    assert list_unsubscribe_headers(url) == {
        "List-Unsubscribe": f"<{url}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert list_unsubscribe_headers(url, mailto="unsubscribe@example.com") == {
        "List-Unsubscribe": f"<{url}>, <mailto:unsubscribe@example.com>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    with_subject = list_unsubscribe_headers(url, mailto="mailto:u@example.com?subject=stop")
    assert with_subject["List-Unsubscribe"] == f"<{url}>, <mailto:u@example.com?subject=stop>"


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/u/abc",
        "example.com/u/abc",
        "https://example.com/u/a>b",
        "https://x/\r\n",
    ],
)
def test_list_unsubscribe_needs_a_clean_https_url(url: str) -> None:
    with pytest.raises(ValueError, match="https"):
        list_unsubscribe_headers(url)


@pytest.mark.parametrize("mailto", ["nobody", "a@b.com>, <https://evil", "a@b.com\r\nBcc: x"])
def test_list_unsubscribe_refuses_a_bad_mailto(mailto: str) -> None:
    with pytest.raises(ValueError, match="mailto"):
        list_unsubscribe_headers("https://example.com/u/abc", mailto=mailto)


# The pixel


def lzw_codes(data: bytes, width: int) -> list[int]:
    """The first codes of a GIF LZW stream, read while the code width stays fixed."""
    bits = int.from_bytes(data, "little")
    return [(bits >> (width * i)) & ((1 << width) - 1) for i in range(len(data) * 8 // width)]


def test_the_pixel_is_a_43_byte_transparent_1x1_gif89a() -> None:
    gif = TRANSPARENT_GIF
    assert len(gif) == 43
    assert gif[:6] == b"GIF89a"
    assert int.from_bytes(gif[6:8], "little") == 1
    assert int.from_bytes(gif[8:10], "little") == 1
    packed = gif[10]
    assert packed & 0x80  # a global colour table...
    palette_size = 2 ** ((packed & 0x07) + 1)
    at = 13 + 3 * palette_size  # ...of this many colours, after the screen descriptor
    assert gif[at : at + 3] == b"\x21\xf9\x04"  # graphic control extension
    assert gif[at + 3] & 0x01  # with a transparent colour
    transparent = gif[at + 6]
    at += 8
    assert gif[at] == 0x2C  # image descriptor
    assert gif[at + 5 : at + 9] == b"\x01\x00\x01\x00"  # 1x1
    assert gif[at + 9] == 0  # no local colour table
    at += 10
    min_code_size, block_size = gif[at], gif[at + 1]
    block = gif[at + 2 : at + 2 + block_size]
    clear, end = 1 << min_code_size, (1 << min_code_size) + 1
    codes = lzw_codes(block, min_code_size + 1)
    assert codes[:3] == [clear, transparent, end]  # the one pixel is the transparent colour
    assert gif[at + 2 + block_size :] == b"\x00\x3b"  # block terminator, trailer


def test_the_pixel_is_never_cached() -> None:
    assert PIXEL_HEADERS["Content-Type"] == "image/gif"
    assert "no-store" in PIXEL_HEADERS["Cache-Control"]


def test_tokens_keep_their_spelling_for_good() -> None:
    # Emails already sent carry these: a change to how tokens are made must not move them.
    signer = LinkSigner("a-fixed-key-for-known-answers-0123456789")
    message = uuid.UUID("12345678-1234-5678-1234-567812345678")
    profile = uuid.UUID("87654321-4321-8765-4321-876543218765")
    assert signer.sign_click(message, 3) == "AQLIMy7dpf8TjydEb1iXwHZ5wcCU_XqNMSfg_5CDOV9eUuk"
    assert signer.sign_open(message) == "AQFThieqV7o9LFMOzsfDvYmornYpXPvl4ks6vJM-ZP4l8g"
    unsubscribe = signer.sign_unsubscribe(  # past one key stream block
        workspace_id=7, profile_id=profile, topic_id=12, message_id=message
    )
    assert unsubscribe == (
        "AQPFVPuJkgzhLzGFcD0tMet-DvgLpAoa3XRVbjrhfHsKKDKbla_eInDdffNSqZEjRz355Tw"
    )
