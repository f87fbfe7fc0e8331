"""The route class of every admin API router: JSON bodies read strictly, with orjson.

FastAPI reads a JSON body with Python's `json` module, which takes `NaN`, `Infinity`,
`-Infinity`, `1e400` (read as infinity), integers of any size and any nesting. No JSON
column keeps those: orjson writes a non-finite float as `null` and refuses an integer past
64 bits or nesting past 254 levels (Clarion keeps `core.documents.MAX_JSON_DEPTH`).
Clarion keeps the signed 64-bit integers SQLite and PostgreSQL's bigint hold (as segment
rules do). `StrictJSONRoute` reads bodies with `loads` instead, which refuses the rest;
FastAPI answers a refused body as it answers malformed JSON (422 naming `body`, with line
and column; see `core.problems`).

    router = APIRouter(prefix="/api/v1", tags=["things"], route_class=StrictJSONRoute)

Routes without a body model (the tracking API reads its raw bytes with msgspec) keep
FastAPI's own handler and pay nothing; so do routes that read `request.json()` themselves,
which should call `loads` on `await request.body()` instead.

The same goes for query strings: PostgreSQL keeps no NUL in text, so a query parameter a
route reads whose value holds one (`%00`) is refused as FastAPI refuses any other bad
parameter (422 naming it), before the route runs; SQLite would have let it through.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from clarion.core.documents import INT64_MAX, INT64_MIN, MAX_JSON_DEPTH, FaultKind

# The shortest numeral past 64 bits (-9223372036854775809) has 19 digits; a body with no run
# of 19 digits holds none, which one C pass (~0.75 ns a byte) tells.
_DIGIT_RUN = b"0" * 19
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
# In valid JSON a token starting at `"` is a whole string and one starting at `-` or a digit
# a whole number, so scanning for these two never lands inside either.
# A JSON \u0000 escape: its backslash is not itself escaped (an even run of them before it).
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|(-?[0-9]+)(\.[0-9]+)?([eE][+-]?[0-9]+)?')
# Strings (skipped whole) and the brackets that open and close lists and objects.
_NESTING = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[{]|[\]}]')
_NUL_IN_QUERY = b"%00"
NUL_MESSAGE = "contains a NUL character (\\u0000), which PostgreSQL keeps in no text"


def loads(body: bytes) -> Any:
    """The JSON document `body` holds; raises `json.JSONDecodeError` (position included) on
    malformed JSON, NaN and infinities, a number past a double's range, an integer past 64
    bits, a NUL character, or lists and objects nested deeper than `MAX_JSON_DEPTH`."""
    if body.startswith(codecs.BOM_UTF8):  # Python's reader took one; RFC 8259 allows it
        body = body[len(codecs.BOM_UTF8) :]
    document = orjson.loads(body)  # orjson.JSONDecodeError is a json.JSONDecodeError
    if b"\\u0000" in body and (nul := _NUL_ESCAPE.search(body)):
        message = "a NUL character (\\u0000), which PostgreSQL keeps in no text"
        before = body[: nul.end() - 6].decode()
        raise json.JSONDecodeError(message, body.decode(), len(before))
    if _DIGIT_RUN in body.translate(_DIGITS_AS_ZEROS):
        _refuse_wide_integers(body.decode())  # orjson read it: valid UTF-8
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH:  # else it cannot nest deeper
        _refuse_deep_nesting(body)
    return document


def _refuse_deep_nesting(body: bytes) -> None:
    """Raise where a list or object opens deeper than `MAX_JSON_DEPTH` levels."""
    depth = 0
    for token in _NESTING.finditer(body):
        bracket = token.group()
        if bracket in (b"[", b"{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                text = body.decode()  # orjson read it: valid UTF-8
                at = len(body[: token.start()].decode())
                raise json.JSONDecodeError(FaultKind.TOO_DEEP.value, text, at)
        elif bracket in (b"]", b"}"):
            depth -= 1


def _refuse_wide_integers(text: str) -> None:
    """Raise at the first integer outside 64 bits (orjson reads those as rounded floats)."""
    for token in _TOKEN.finditer(text):
        digits, fraction, exponent = token.groups()
        if digits is None or fraction or exponent or len(digits) < 19:
            continue
        if not INT64_MIN <= int(digits) <= INT64_MAX:
            message = "integer beyond 64 bits (JSON columns keep -2^63 to 2^63-1)"
            raise json.JSONDecodeError(message, text, token.start())


class StrictJSONRequest(Request):
    """A request whose `json()` is `loads`: FastAPI reads JSON bodies through it."""

    async def json(self) -> Any:
        """The body's JSON document, read once; raises `json.JSONDecodeError`."""
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """An `APIRoute` that reads its JSON body with `loads` and refuses a NUL in the query
    parameters it reads; pass it as an `APIRouter`'s `route_class`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, given a `StrictJSONRequest` where the route takes a body, and
        after the query check where it reads query parameters."""
        handler = super().get_route_handler()
        names = _query_names(self.dependant)
        if self.body_field is None and not names:  # nothing to do per request
            return handler

        async def strict_handler(request: Request) -> Response:
            if names and _NUL_IN_QUERY in request.scope["query_string"]:
                _refuse_nul(request, names)
            if self.body_field is not None:
                request = StrictJSONRequest(request.scope, request.receive)
            return await handler(request)

        return strict_handler


def _query_names(dependant: Dependant) -> list[str]:
    """The query parameters a route reads, its dependencies' included."""
    names = [field.alias for field in dependant.query_params]
    for dependency in dependant.dependencies:
        names += _query_names(dependency)
    return list(dict.fromkeys(names))


def _refuse_nul(request: Request, names: list[str]) -> None:
    """RequestValidationError naming each of `names` whose value holds a NUL."""
    errors = [
        {"type": "string_nul", "loc": ("query", name), "msg": NUL_MESSAGE, "input": value}
        for name in names
        for value in request.query_params.getlist(name)
        if "\x00" in value
    ]
    if errors:
        raise RequestValidationError(errors)
