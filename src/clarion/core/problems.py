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

from clarion.core.errors import ClarionError, FieldError, Unauthorized

PROBLEM_TYPE_BASE = "urn:clarion:problem:"
MEDIA_TYPE = "application/problem+json"

log = logging.getLogger(__name__)


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
        return problem_response(
            status=exc.status_code,
            code=code,
            title=str(exc.detail),
            detail=str(exc.detail),
            headers=exc.headers,
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
