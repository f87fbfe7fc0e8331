"""Addresses a caller gives for a message (`address` instead of the profile's own), checked
for the template's channel kind before anything is saved, so that a message is never
queued for somewhere its channel cannot send, nor for an address a bounce could not put on
the suppression list.

- email: one plain ASCII addr-spec, as the SMTP channel sends it (no display name, no
  line breaks, no second address; internationalized addresses are not supported);
- sms: a phone number, digits with an optional leading + (spaces, dashes, dots and
  parentheses dropped), kept as profiles' phones are: + and its digits;
- push: a device registration token, printable ASCII without spaces;
- webhook: an absolute http(s) URL;
- inbox: none (an in-app message goes to the profile's own inbox).
"""

from __future__ import annotations

import httpx

from clarion.core.errors import InvalidInput
from clarion.messaging.channels.email import recipient_address
from clarion.messaging.consent.suppressions import MAX_ADDRESS, address_problem, checked_address
from clarion.profiles.identity import normalize_phone


def sendable_address(kind: str, address: str) -> str:
    """`address` as a message of `kind` goes to it (an email's addr-spec, a phone as +
    and its digits, trimmed); ValueError saying what is wrong when the channel cannot send
    to it or it could not be suppressed after a bounce."""
    given = address.strip()
    if kind == "email":
        return _email(given)
    if kind == "sms":
        return _phone(given)
    if kind == "push":
        return _token(given)
    if kind == "webhook":
        return _url(given)
    if kind == "inbox":
        raise ValueError("an in-app message goes to the profile's own inbox: give no address")
    raise ValueError(f"no {kind} channel can take an address")


def _email(given: str) -> str:
    if not given.isascii():
        raise ValueError("has non-ASCII characters: the email channel cannot send to it")
    try:
        spec = recipient_address(given).addr_spec
    except ValueError as error:
        raise ValueError("not an email address (one address, nothing else)") from error
    problem = address_problem("email", spec)
    if problem is not None:
        raise ValueError(problem)
    return spec


def _phone(given: str) -> str:
    try:
        digits = checked_address("sms", given)
    except InvalidInput as error:
        raise ValueError("not a phone number (+ and 6 to 20 digits)") from error
    phone = normalize_phone(digits)
    if phone is None or phone.startswith("+0"):
        raise ValueError("not a phone number in international form (+ and the country code)")
    return phone


def _token(given: str) -> str:
    if not given or not given.isascii() or not given.isprintable() or " " in given:
        raise ValueError("not a device token (printable ASCII, no spaces)")
    if len(given) > MAX_ADDRESS:
        raise ValueError(f"not a device token (at most {MAX_ADDRESS} characters)")
    return given


def _url(given: str) -> str:
    if not given.isascii() or not given.isprintable() or " " in given:
        raise ValueError("not a URL (printable ASCII, no spaces)")
    try:
        url = httpx.URL(given)
    except httpx.InvalidURL as error:
        raise ValueError(f"not a URL: {error}") from error
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("not an http:// or https:// URL")
    return given
