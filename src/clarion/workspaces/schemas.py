"""Pydantic input and output shapes for workspaces, sources and keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class KeyScope(StrEnum):
    """What a key may do: send events (write), manage (admin), or only read (read-only)."""

    WRITE = "write"
    ADMIN = "admin"
    READ_ONLY = "read-only"


Name = Field(min_length=1, max_length=200)


class WorkspaceRead(BaseModel):
    """A workspace as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    slug: str
    name: str
    created_at: datetime


class SourceCreate(BaseModel):
    """A new source; it gets a write key, returned once."""

    model_config = ConfigDict(extra="forbid")

    name: str = Name


class SourceRead(BaseModel):
    """A source as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    created_at: datetime


class KeyCreate(BaseModel):
    """A new key. Write keys belong to a source; admin and read-only keys to the workspace."""

    model_config = ConfigDict(extra="forbid")

    scope: KeyScope
    name: str = Name
    source_id: uuid.UUID | None = None


class KeyRead(BaseModel):
    """A key without its secret: only the first characters are ever shown again."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    scope: KeyScope
    name: str
    source_id: uuid.UUID | None
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyRead):
    """A key just made, with its secret: store it now, it is not shown again."""

    key: str


class SourceCreated(SourceRead):
    """A source just made, with its first write key (secret shown once)."""

    write_key: KeyCreated


class KeyPage(BaseModel):
    """A page of keys."""

    items: list[KeyRead]


class SourcePage(BaseModel):
    """A page of sources."""

    items: list[SourceRead]
