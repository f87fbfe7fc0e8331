"""RFC 9457 problem+json responses for every error the HTTP API returns.

Besides the RFC's members, each problem carries `code` and `message`: the Segment and
RudderStack SDKs read those two from error bodies and retry forever when they are missing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from clarion.core.errors import ClarionError, FieldError, Unauthorized

PROBLEM_TYPE_BASE = "urn:clarion:problem:"
MEDIA_TYPE = "application/problem+json"

log = logging.getLogger(__name__)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def problem_response(
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
    instance: str | None = None,
) -> Response:
    """A problem+json response; `errors` lists each field at fault."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "message": detail,
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = [_field_error(error) for error in errors]
    return Response(orjson.dumps(body), status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _field_error(error: FieldError) -> dict[str, Any]:
    item: dict[str, Any] = {"field": error.field, "message": error.message}
    if error.index is not None:
        item["index"] = error.index
    return item


def validation_field_errors(errors: Any, body: Any = None) -> list[FieldError]:
    """Pydantic / FastAPI validation errors as FieldErrors, locations joined with dots; a
    body that is not JSON (`body` is its text) as `body`, naming where reading it stopped."""
    result = []
    for error in errors:
        if _unreadable_body(error):
            result.append(FieldError("body", _json_error(error, body)))
            continue
        loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path")]
        result.append(FieldError(".".join(loc) or "body", str(error.get("msg", "invalid"))))
    return result


def _unreadable_body(error: Mapping[str, Any]) -> bool:
    """FastAPI's error for a body its JSON reader refused: located at `("body", offset)`."""
    loc = error.get("loc", ())
    return (
        error.get("type") == "json_invalid"
        and len(loc) == 2
        and loc[0] == "body"
        and isinstance(loc[1], int)
    )


def _json_error(error: Mapping[str, Any], body: Any) -> str:
    """The JSON reader's reason, and the line and column where it stopped."""
    reason = str(error.get("ctx", {}).get("error") or error.get("msg", "invalid"))
    offset: int = error["loc"][1]
    if not isinstance(body, str):
        return f"{reason} at character {offset}"
    line = body.count("\n", 0, offset) + 1
    column = offset - body.rfind("\n", 0, offset)
    return f"{reason} at line {line}, column {column}"


def install_problem_handlers(app: FastAPI) -> None:
    """Route Clarion errors, request validation and plain HTTP errors to problem+json."""

    async def clarion_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ClarionError)
        if exc.status >= 500:
            log.error("request failed: %s", exc.detail, exc_info=exc)
        headers = None
        if isinstance(exc, Unauthorized):
            realm = 'realm="clarion"'
            headers = {"WWW-Authenticate": f"{exc.scheme} {realm}"}
        return problem_response(
            status=exc.status,
            code=exc.code,
            title=exc.title,
            detail=exc.detail,
            errors=exc.errors,
            headers=headers,
            instance=request.url.path,
        )

    async def request_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        raw = exc.errors()
        errors = validation_field_errors(raw, exc.body)
        if raw and _unreadable_body(raw[0]):  # then FastAPI's only error
            detail = f"The body is not valid JSON: {errors[0].message}."
        else:
            detail = f"Invalid value for: {', '.join(error.field for error in errors)}."
        return problem_response(
            status=422,
            code="invalid-input",
            title="Invalid input",
            detail=detail,
            errors=errors,
            instance=request.url.path,
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        headers = exc.headers
        if exc.status_code == 405:
            # Starlette names the methods of the first route matching the path only; a path
            # served by several (GET and POST on a page) has them all (RFC 9110 15.5.6).
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return problem_response(
            status=exc.status_code,
            code=code,
            title=str(exc.detail),
            detail=str(exc.detail),
            headers=headers,
            instance=request.url.path,
        )

    async def unexpected_error(request: Request, exc: Exception) -> Response:
        # The cause goes to the log with its traceback; the caller learns only that the
        # request failed and was not acknowledged, so SDKs retry it.
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response(
            status=500,
            code="internal-error",
            title="Internal error",
            detail="The request failed on the server and was not applied; retry it.",
            instance=request.url.path,
        )

    app.add_exception_handler(ClarionError, clarion_error)
    app.add_exception_handler(Exception, unexpected_error)
    app.add_exception_handler(RequestValidationError, request_validation)
    app.add_exception_handler(StarletteHTTPException, http_error)


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": (
        "An RFC 9457 problem: what went wrong (`type`, `title`, `detail`) and, for bad "
        "input, each field at fault (`errors`)."
    ),
    "required": ["type", "title", "status", "detail", "code", "message"],
    "properties": {
        "type": {"type": "string", "description": f"`{PROBLEM_TYPE_BASE}` and `code`."},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "invalid-input, not-found, conflict, ..."},
        "message": {"type": "string", "description": "The same as `detail`."},
        "instance": {"type": "string", "description": "The request's path."},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/ProblemField"}},
    },
}
PROBLEM_FIELD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "ProblemField",
    "required": ["field", "message"],
    "properties": {
        "field": {"type": "string", "description": "The field, dotted (`rule.conditions.0`)."},
        "message": {"type": "string"},
        "index": {"type": "integer", "description": "The item of a batch, when one is at fault."},
    },
}
_PROBLEM_CONTENT = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
# Pages end customers open (HTML, never problem+json), by their OpenAPI tag.
_PAGE_TAGS = frozenset({"public"})


def allowed_methods(request: Request) -> list[str]:
    """The methods the app's routes serve at the request's path."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    ]


def document_problems(schema: dict[str, Any]) -> None:
    """Make an OpenAPI document say what errors look like: a 422 (which FastAPI documents
    in a shape of its own) is a `Problem` in problem+json, and so is every other 4xx but
    those of the pages end customers open (HTML)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    components["ProblemField"] = PROBLEM_FIELD_SCHEMA
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = {
                    "description": "Invalid input: `errors` names each field at fault.",
                    "content": _PROBLEM_CONTENT,
                }
            if not _PAGE_TAGS.intersection(operation.get("tags", ())):
                responses.setdefault(
                    "4XX", {"description": "A problem (RFC 9457).", "content": _PROBLEM_CONTENT}
                )
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, now unused
        components.pop(name, None)
