"""FastAPI dependencies every router shares: the database sessions and the clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Request
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.clock import Clock
from clarion.core.database import MAX_ROW_ID, Database


def get_database(request: Request) -> Database:
    """The process's database, set up by the application's lifespan."""
    database: Database = request.app.state.database
    return database


T = TypeVar("T")


def app_held(request: Request, name: str, make: Callable[[], T]) -> T:
    """The application's one `name` (a vault, a signer, a cache), made on first use."""
    held: Any = getattr(request.app.state, name, None)
    if held is None:
        held = make()
        setattr(request.app.state, name, held)
    result: T = held
    return result


def get_clock(request: Request) -> Clock:
    """The application's clock."""
    clock: Clock = request.app.state.clock
    return clock


async def read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A read-only session for the request."""
    async with get_database(request).read_session() as session:
        yield session


async def write_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A writing session for the request; the route commits."""
    async with get_database(request).write_session() as session:
        yield session


AppClock = Annotated[Clock, Depends(get_clock)]
ReadSession = Annotated[AsyncSession, Depends(read_session)]
WriteSession = Annotated[AsyncSession, Depends(write_session)]
# A numeric id in a path: out of the 64-bit range it is a 422 naming it, never a driver error.
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
