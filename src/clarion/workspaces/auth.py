"""Who is calling the management API: the admin or read-only key behind the request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from clarion.core.deps import get_database
from clarion.core.errors import Forbidden, Unauthorized
from clarion.workspaces import service
from clarion.workspaces.cache import WriteKeyCache
from clarion.workspaces.schemas import KeyScope

MANAGEMENT_SCOPES = frozenset({KeyScope.ADMIN, KeyScope.READ_ONLY})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_bearer = HTTPBearer(auto_error=False, description="An admin or read-only API key.")


@dataclass(frozen=True, slots=True)
class Caller:
    """The workspace a management request acts in, and the key's scope."""

    workspace_id: int
    scope: KeyScope


async def management_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The caller of a management route; read-only keys may only read."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Send an admin or read-only key as `Authorization: Bearer <key>`.")
    async with get_database(request).read_session() as session:
        key = await service.authenticate(
            session, secret=credentials.credentials, scopes=MANAGEMENT_SCOPES
        )
    scope = KeyScope(key.scope)
    if scope is KeyScope.READ_ONLY and request.method not in SAFE_METHODS:
        raise Forbidden("This key is read-only; an admin key is needed to make changes.")
    return Caller(workspace_id=key.workspace_id, scope=scope)


ManagementCaller = Annotated[Caller, Depends(management_caller)]


def write_key_cache(request: Request) -> WriteKeyCache:
    """The application's cache of valid write keys."""
    cache: WriteKeyCache = request.app.state.write_keys
    return cache


WriteKeys = Annotated[WriteKeyCache, Depends(write_key_cache)]
