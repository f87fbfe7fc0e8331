"""Clarion's one exception tree; `core.problems` maps it to RFC 9457 problem+json.

    ClarionError                      500 (a bug or an unavailable dependency)
     ├── InvalidInput                 400  a field is wrong; `errors` names each one
     │    └── PayloadTooLarge         413  a body or message over its size limit
     ├── Unauthorized                 401  no credentials, or unknown / revoked ones
     ├── Forbidden                    403  valid credentials without the needed scope
     ├── NotFound                     404  no such thing in the caller's workspace
     └── Conflict                     409  the change collides with existing state

Services raise these; routers never build HTTP errors by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    """One field at fault: a JSON-pointer-like dotted path and what is wrong with it."""

    field: str
    message: str
    index: int | None = None


class ClarionError(Exception):
    """Base of every error Clarion raises on purpose."""

    status: int = 500
    code: str = "internal-error"
    title: str = "Internal error"

    def __init__(self, detail: str, *, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class InvalidInput(ClarionError):
    """The request is malformed or a field holds a wrong value."""

    status = 400
    code = "invalid-input"
    title = "Invalid input"


class PayloadTooLarge(InvalidInput):
    """A body or a single message exceeds its size limit."""

    status = 413
    code = "payload-too-large"
    title = "Payload too large"


class Unauthorized(ClarionError):
    """Credentials are missing, unknown or revoked."""

    status = 401
    code = "unauthorized"
    title = "Unauthorized"

    def __init__(self, detail: str, *, scheme: str = "Bearer") -> None:
        super().__init__(detail)
        self.scheme = scheme


class Forbidden(ClarionError):
    """Credentials are valid but lack the scope the operation needs."""

    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(ClarionError):
    """The thing does not exist in the caller's workspace."""

    status = 404
    code = "not-found"
    title = "Not found"


class Conflict(ClarionError):
    """The change collides with existing state."""

    status = 409
    code = "conflict"
    title = "Conflict"


def require_state(
    noun: str,
    state: str,
    action: str,
    allowed: Mapping[str, frozenset[str]],
    done: Mapping[str, str],
) -> None:
    """Conflict naming `state` unless a `noun` in `state` allows `action` (`allowed` holds
    the states each action may start from, `done` its past participle)."""
    if state not in allowed[action]:
        starts = ", ".join(sorted(allowed[action]))
        article = "An" if state[:1] in "aeiou" else "A"
        raise Conflict(
            f"{article} {state} {noun} cannot be {done[action]} (only {starts}).",
            errors=[FieldError("state", f"is {state}")],
        )
