"""Workspaces, sources and API keys: creation, listing, revocation and authentication.

Secrets are random, shown once, and stored as SHA-256 digests: they carry 192 bits of
entropy, so a fast digest is as safe as a slow password hash and lets every request look
its key up by index.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.errors import Conflict, FieldError, InvalidInput, NotFound, Unauthorized
from clarion.workspaces.models import ApiKey, Source, Workspace
from clarion.workspaces.schemas import KeyScope

DEFAULT_WORKSPACE_SLUG = "default"
DEFAULT_SOURCE_NAME = "Default source"
KEY_PREFIXES = {KeyScope.WRITE: "clw_", KeyScope.ADMIN: "cla_", KeyScope.READ_ONLY: "clr_"}
SHOWN_PREFIX_LENGTH = 8


def hash_key(secret: str) -> str:
    """The digest under which a key's secret is stored and looked up."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(scope: KeyScope) -> str:
    """A fresh random secret for a key of `scope`, recognisable by its prefix."""
    return KEY_PREFIXES[scope] + secrets.token_urlsafe(24)


# Workspaces


async def create_workspace(
    session: AsyncSession, *, slug: str, name: str, now: datetime
) -> Workspace:
    """A new workspace; Conflict when the slug is taken."""
    if await get_workspace_by_slug(session, slug=slug) is not None:
        raise Conflict(f"A workspace with slug {slug!r} already exists.")
    workspace = Workspace(slug=slug, name=name, created_at=now)
    session.add(workspace)
    await session.flush()
    return workspace


async def get_workspace_by_slug(session: AsyncSession, *, slug: str) -> Workspace | None:
    """The workspace with `slug`, if any."""
    return await session.scalar(select(Workspace).where(Workspace.slug == slug))


async def get_workspace_by_slug_or_raise(session: AsyncSession, *, slug: str) -> Workspace:
    """The workspace with `slug`; NotFound otherwise."""
    workspace = await get_workspace_by_slug(session, slug=slug)
    if workspace is None:
        raise NotFound(f"No workspace with slug {slug!r}.")
    return workspace


async def get_workspace(session: AsyncSession, *, workspace_id: int) -> Workspace:
    """The workspace with `workspace_id` (it exists: keys point at it)."""
    workspace = await session.get(Workspace, workspace_id)
    if workspace is None:
        raise NotFound(f"No workspace {workspace_id}.")
    return workspace


async def list_workspaces(session: AsyncSession) -> Sequence[Workspace]:
    """Every workspace, oldest first."""
    return (await session.scalars(select(Workspace).order_by(Workspace.id))).all()


async def ensure_default_workspace(session: AsyncSession, *, now: datetime) -> Workspace:
    """The default workspace, created when missing."""
    workspace = await get_workspace_by_slug(session, slug=DEFAULT_WORKSPACE_SLUG)
    if workspace is None:
        workspace = await create_workspace(
            session, slug=DEFAULT_WORKSPACE_SLUG, name="Default workspace", now=now
        )
    return workspace


# Sources


async def create_source(
    session: AsyncSession, *, workspace_id: int, name: str, now: datetime
) -> Source:
    """A new source in the workspace; Conflict when the name is taken there."""
    if await get_source_by_name(session, workspace_id=workspace_id, name=name) is not None:
        raise Conflict(
            f"A source named {name!r} already exists.",
            errors=[FieldError("name", "already taken in this workspace")],
        )
    source = Source(id=uuid.uuid4(), workspace_id=workspace_id, name=name, created_at=now)
    session.add(source)
    await session.flush()
    return source


async def get_source_by_name(
    session: AsyncSession, *, workspace_id: int, name: str
) -> Source | None:
    """The workspace's source called `name`, if any."""
    return await session.scalar(
        select(Source).where(Source.workspace_id == workspace_id, Source.name == name)
    )


async def get_source_or_raise(
    session: AsyncSession, *, workspace_id: int, source_id: uuid.UUID
) -> Source:
    """The workspace's source `source_id`; NotFound when it is absent or another's."""
    source = await session.scalar(
        select(Source).where(Source.workspace_id == workspace_id, Source.id == source_id)
    )
    if source is None:
        raise NotFound(f"No source {source_id} in this workspace.")
    return source


async def list_sources(session: AsyncSession, *, workspace_id: int) -> Sequence[Source]:
    """The workspace's sources, oldest first."""
    query = select(Source).where(Source.workspace_id == workspace_id).order_by(Source.created_at)
    return (await session.scalars(query)).all()


# Keys


async def create_key(
    session: AsyncSession,
    *,
    workspace_id: int,
    scope: KeyScope,
    name: str,
    now: datetime,
    source_id: uuid.UUID | None = None,
    secret: str | None = None,
) -> tuple[ApiKey, str]:
    """A new key and its secret (returned only here). Write keys need a source of the workspace."""
    if scope is KeyScope.WRITE:
        if source_id is None:
            raise InvalidInput(
                "A write key belongs to a source.",
                errors=[FieldError("source_id", "required for a write key")],
            )
        await get_source_or_raise(session, workspace_id=workspace_id, source_id=source_id)
    elif source_id is not None:
        raise InvalidInput(
            "Only write keys belong to a source.",
            errors=[FieldError("source_id", f"must be empty for a {scope.value} key")],
        )
    secret = secret or new_secret(scope)
    digest = hash_key(secret)
    if await session.scalar(select(ApiKey.id).where(ApiKey.key_hash == digest)) is not None:
        raise Conflict("A key with this secret already exists.")
    key = ApiKey(
        id=uuid.uuid4(),
        workspace_id=workspace_id,
        source_id=source_id,
        scope=scope.value,
        name=name,
        key_hash=digest,
        key_prefix=secret[:SHOWN_PREFIX_LENGTH],
        created_at=now,
    )
    session.add(key)
    await session.flush()
    return key, secret


async def list_keys(session: AsyncSession, *, workspace_id: int) -> Sequence[ApiKey]:
    """The workspace's keys, revoked ones included, oldest first."""
    query = select(ApiKey).where(ApiKey.workspace_id == workspace_id).order_by(ApiKey.created_at)
    return (await session.scalars(query)).all()


async def get_key_or_raise(
    session: AsyncSession, *, workspace_id: int, key_id: uuid.UUID
) -> ApiKey:
    """The workspace's key `key_id`; NotFound when it is absent or another's."""
    key = await session.scalar(
        select(ApiKey).where(ApiKey.workspace_id == workspace_id, ApiKey.id == key_id)
    )
    if key is None:
        raise NotFound(f"No key {key_id} in this workspace.")
    return key


async def revoke_key(
    session: AsyncSession, *, workspace_id: int, key_id: uuid.UUID, now: datetime
) -> ApiKey:
    """The key, revoked from now on; revoking twice keeps the first time."""
    key = await get_key_or_raise(session, workspace_id=workspace_id, key_id=key_id)
    if key.revoked_at is None:
        key.revoked_at = now
        await session.flush()
    return key


async def authenticate(
    session: AsyncSession, *, secret: str, scopes: frozenset[KeyScope]
) -> ApiKey:
    """The live key with this secret and one of `scopes`; Unauthorized otherwise."""
    key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(secret)))
    if key is None or KeyScope(key.scope) not in scopes:
        raise Unauthorized("Unknown key.")
    if key.revoked_at is not None:
        raise Unauthorized("This key has been revoked.")
    return key


async def bootstrap(
    session: AsyncSession,
    *,
    now: datetime,
    write_key: str | None,
    admin_token: str | None,
) -> tuple[Workspace, list[tuple[ApiKey, str]]]:
    """Make sure the default workspace exists and holds the configured bootstrap keys.

    Idempotent: a key already present (even revoked, which stays revoked) is left alone.
    On a brand-new workspace with no bootstrap keys configured, one admin key and one write
    key are generated so a first run is usable; they are returned with their secrets.
    """
    workspace = await ensure_default_workspace(session, now=now)
    created: list[tuple[ApiKey, str]] = []
    if write_key is None and admin_token is None:
        if await list_keys(session, workspace_id=workspace.id):
            return workspace, created
        wanted: list[tuple[KeyScope, str | None]] = [(KeyScope.WRITE, None), (KeyScope.ADMIN, None)]
    else:
        configured = [(KeyScope.WRITE, write_key), (KeyScope.ADMIN, admin_token)]
        wanted = [(scope, secret) for scope, secret in configured if secret is not None]
    for scope, secret in wanted:
        if secret is not None:
            existing = await session.scalar(
                select(ApiKey).where(ApiKey.key_hash == hash_key(secret))
            )
            if existing is not None:
                if existing.workspace_id != workspace.id or existing.scope != scope.value:
                    raise Conflict(
                        f"The bootstrap {scope.value} key is already used by another key."
                    )
                continue
        source_id = None
        if scope is KeyScope.WRITE:
            source = await get_source_by_name(
                session, workspace_id=workspace.id, name=DEFAULT_SOURCE_NAME
            ) or await create_source(
                session, workspace_id=workspace.id, name=DEFAULT_SOURCE_NAME, now=now
            )
            source_id = source.id
        created.append(
            await create_key(
                session,
                workspace_id=workspace.id,
                scope=scope,
                name=f"Bootstrap {scope.value} key",
                now=now,
                source_id=source_id,
                secret=secret,
            )
        )
    return workspace, created
