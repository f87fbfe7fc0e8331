"""Importing profiles from CSV, streamed: each chunk upserted in one pass, committed whole.

The body is read as it arrives (gunzipped on the fly), split into records and upserted
`CHUNK_ROWS` rows per transaction, so a file of any length is imported in bounded memory and a
SQLite writer lock is never held for longer than one chunk. Each row is all or nothing: it is
validated whole before it is written, and should the database still refuse a row, its chunk is
rolled back and written again one savepoint per row, so only that row is rejected.

Whole-file problems (an empty file, a header without identity column, text that is not UTF-8
CSV, a body over the size limit) raise `InvalidInput` / `PayloadTooLarge` before any row is
written. Reading the stream is `csvstream.py`'s work, the CSV convention `transfer.py`'s.
This module commits per chunk: an import is a job of its own, so it takes the `Database`, not
a session.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.exc import DBAPIError, SQLAlchemyError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.clock import Clock
from clarion.core.database import Database
from clarion.core.errors import ClarionError, Conflict, FieldError, InvalidInput
from clarion.core.spreadsheets import plain_cell
from clarion.profiles import csvstream, transfer
from clarion.profiles.identity import normalize_email, normalize_phone
from clarion.profiles.service import ProfileUpsert, upsert_profile, upsert_profiles

CHUNK_ROWS = 500
MAX_IMPORT_BYTES = 100 * 1024 * 1024  # of CSV text, on the wire and once gunzipped
MAX_COLUMNS = 1000
MAX_REPORTED_ERRORS = 100
CHUNK_ATTEMPTS = 3
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock


@dataclass(frozen=True, slots=True)
class RowError:
    """A rejected row: its first line in the file, the column at fault and why."""

    line: int
    field: str
    message: str


@dataclass(slots=True)
class ImportResult:
    """What an import did; `errors` holds the first `max_errors` rejections, in file order."""

    rows: int = 0
    created: int = 0
    updated: int = 0
    rejected: int = 0
    errors: list[RowError] = field(default_factory=list)
    chunks: int = 0

    def reject(self, error: RowError, *, max_errors: int) -> None:
        """Count a rejected row, keeping its error while fewer than `max_errors` are kept."""
        self.rejected += 1
        if len(self.errors) < max_errors:
            self.errors.append(error)


Progress = Callable[[ImportResult], Awaitable[None]]


async def import_csv(
    database: Database,
    *,
    workspace_id: int,
    body: AsyncIterable[bytes],
    clock: Clock,
    gzipped: bool | None = None,
    max_bytes: int | None = MAX_IMPORT_BYTES,
    chunk_rows: int = CHUNK_ROWS,
    max_errors: int = MAX_REPORTED_ERRORS,
    on_chunk: Progress | None = None,
) -> ImportResult:
    """Upsert every valid row of a CSV stream (source `import`), committing each chunk.

    `gzipped=None` gunzips a body that starts with the gzip magic bytes. Whole-file problems
    raise before anything is written; a body found over `max_bytes` part-way raises
    PayloadTooLarge after the chunks before it were committed, and says how many.
    """
    result = ImportResult()
    records = csvstream.records(csvstream.inflate(body, gzipped=gzipped, max_bytes=max_bytes))
    header = await _header(records)
    writer = _ChunkWriter(database, workspace_id, clock)
    pending: list[_Row] = []
    try:
        async for record in records:
            result.rows += 1
            row = header.row(record)
            if isinstance(row, RowError):
                result.reject(row, max_errors=max_errors)
                continue
            pending.append(row)
            if len(pending) >= chunk_rows:
                await writer.write(pending, result, max_errors=max_errors)
                pending = []
                if on_chunk is not None:
                    await on_chunk(result)
        if pending:
            await writer.write(pending, result, max_errors=max_errors)
            if on_chunk is not None:
                await on_chunk(result)
    except InvalidInput as exc:  # the stream failed part-way: say what was kept
        if result.created or result.updated:
            kept = (
                f" The rows before it were imported (created {result.created},"
                f" updated {result.updated}); importing the whole file again is safe."
            )
            raise type(exc)(exc.detail + kept, errors=exc.errors) from exc
        raise
    return result


class UnsupportedMediaType(InvalidInput):
    """The body is not sent as something an import reads."""

    status = 415
    code = "unsupported-media-type"
    title = "Unsupported media type"


CSV_MEDIA_TYPES = frozenset({"text/csv", "application/csv"})


def body_encoding(
    *, content_type: str | None, content_encoding: str | None, content_length: str | None
) -> bool | None:
    """Check an import request's headers before its body is read; whether it is gzip
    (None: look at its first bytes). 415 for another media type, charset or encoding; 413 when
    the declared length is over the limit."""
    media, *params = (content_type or "").split(";")
    if media.strip().lower() not in CSV_MEDIA_TYPES:
        raise UnsupportedMediaType(
            "Send the CSV with `Content-Type: text/csv`.",
            errors=[FieldError("Content-Type", "must be text/csv")],
        )
    for param in params:
        name, _, value = param.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            raise UnsupportedMediaType(
                "Profiles are imported from UTF-8 text.",
                errors=[FieldError("Content-Type", "charset must be utf-8")],
            )
    encoding = (content_encoding or "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported; send gzip or nothing.",
            errors=[FieldError("Content-Encoding", "must be gzip or identity")],
        )
    if content_length and content_length.isdigit() and int(content_length) > MAX_IMPORT_BYTES:
        raise csvstream.too_large(MAX_IMPORT_BYTES)
    return True if encoding == "gzip" else None


# The header and the rows.


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    user_id: str | None
    email: str | None
    phone: str | None
    traits: dict[str, object]


def _header_problem(detail: str, field_name: str, message: str) -> InvalidInput:
    return InvalidInput(detail, errors=[FieldError(field_name, message)])


async def _header(records: AsyncIterator[csvstream.Record]) -> _Header:
    async for record in records:
        if record.cells is None:
            raise _header_problem(
                f"The header (line {record.line}) cannot be read: {record.error}. Send UTF-8"
                " CSV text (gzip only with `Content-Encoding: gzip` or as a .gz file).",
                "header",
                record.error or "unreadable",
            )
        return _Header.parse(record.cells)
    raise _header_problem("The file is empty: it needs a header line.", "body", "empty file")


@dataclass(frozen=True, slots=True)
class _Header:
    columns: list[transfer.Column]

    @classmethod
    def parse(cls, cells: list[str]) -> _Header:
        if len(cells) > MAX_COLUMNS:
            raise _header_problem(
                f"The header has {len(cells)} columns; at most {MAX_COLUMNS} are allowed.",
                "header",
                "too many columns",
            )
        columns, seen = [], set()
        for number, cell in enumerate(cells, start=1):
            if "\x00" in cell:  # PostgreSQL keeps it in no trait name (it refused the rows)
                raise _header_problem(
                    f"Header column {number} contains a NUL character.",
                    "header",
                    "contains a NUL character",
                )
            column = transfer.parse_header_cell(cell)
            if isinstance(column, str):
                raise _header_problem(f"Header column {cell!r}: {column}.", cell, column)
            if (column.role, column.name) in seen and column.role != "ignored":
                raise _header_problem(
                    f"Header column {cell!r} appears twice.", cell, "duplicate column"
                )
            seen.add((column.role, column.name))
            columns.append(column)
        if not any(c.role == "identity" for c in columns):
            raise _header_problem(
                "The header needs a user_id, email or phone column to find each profile by.",
                "header",
                "no user_id, email or phone column",
            )
        return cls(columns)

    def row(self, record: csvstream.Record) -> _Row | RowError:
        """The row a record holds, validated whole; or the first thing wrong with it."""
        if record.cells is None:
            return RowError(record.line, "row", record.error or "unreadable")
        if len(record.cells) != len(self.columns):
            return RowError(
                record.line,
                "row",
                f"{len(record.cells)} fields where the header has {len(self.columns)}",
            )
        identities: dict[str, tuple[str, str]] = {}
        traits: dict[str, object] = {}
        for column, written in zip(self.columns, record.cells, strict=True):
            cell = plain_cell(written)  # as exports guard it against spreadsheet formulas
            if "\x00" in cell:
                return RowError(record.line, column.header, "contains a NUL character")
            if column.role == "identity":
                if cell.strip():
                    identities[column.name] = (column.header, cell.strip())
            elif column.role == "trait" and (cell.strip() or (column.type == "str" and cell)):
                try:
                    traits[column.name] = transfer.parse_cell(cell, column.type)
                except transfer.CellError as exc:
                    return RowError(record.line, column.header, str(exc))
        return self._identified(record.line, identities, traits)

    def _identified(
        self, line: int, identities: dict[str, tuple[str, str]], traits: dict[str, object]
    ) -> _Row | RowError:
        if not identities:
            first = next(c.header for c in self.columns if c.role == "identity")
            return RowError(line, first, "needs a user_id, an email or a phone")
        checks = (
            ("user_id", lambda v: v if len(v) <= transfer.MAX_NAME_LENGTH else None, "too long"),
            ("email", normalize_email, "not an email address"),
            ("phone", normalize_phone, "not a phone number"),
        )
        for kind, normalize, message in checks:
            if kind in identities and normalize(identities[kind][1]) is None:
                return RowError(line, identities[kind][0], message)

        def value(kind: str) -> str | None:
            return identities[kind][1] if kind in identities else None

        return _Row(line, value("user_id"), value("email"), value("phone"), traits)


# Writing chunks.


def _transient(exc: Exception) -> bool:
    if isinstance(exc, Conflict):
        return True
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        return code in _TRANSIENT_SQLSTATES
    return False


_Outcome = tuple[uuid.UUID, datetime] | RowError


class _ChunkWriter:
    """Writes chunks of rows, one transaction each, and counts created and updated profiles.

    A profile counts as created when its `created_at` is the chunk's `now` and no earlier row
    of the import returned it: ids are kept only while the clock stands on one instant.
    """

    def __init__(self, database: Database, workspace_id: int, clock: Clock) -> None:
        self.database, self.workspace_id, self.clock = database, workspace_id, clock
        self._fresh_at: datetime | None = None
        self._fresh: set[uuid.UUID] = set()

    async def write(self, rows: list[_Row], result: ImportResult, *, max_errors: int) -> None:
        """Upsert `rows` in one transaction (savepoint per row if the database refuses one)."""
        now = self.clock.now()
        outcomes = await self._all_or_retry(rows, now)
        if now != self._fresh_at:
            self._fresh_at, self._fresh = now, set()
        for outcome in outcomes:
            if isinstance(outcome, RowError):
                result.reject(outcome, max_errors=max_errors)
            elif outcome[1] == now and outcome[0] not in self._fresh:
                self._fresh.add(outcome[0])
                result.created += 1
            else:
                result.updated += 1
        result.chunks += 1
        if any(isinstance(o, RowError) for o in outcomes):  # found after later bad lines
            result.errors.sort(key=lambda e: e.line)

    async def _all_or_retry(self, rows: list[_Row], now: datetime) -> list[_Outcome]:
        for attempt in range(CHUNK_ATTEMPTS):
            try:
                async with self.database.write_session() as session:
                    upserts = [ProfileUpsert(r.user_id, r.email, r.phone, r.traits) for r in rows]
                    outcomes: list[_Outcome] = list(
                        await upsert_profiles(
                            session,
                            workspace_id=self.workspace_id,
                            upserts=upserts,
                            now=now,
                            source="import",
                        )
                    )
                    await session.commit()
                return outcomes
            except (ClarionError, SQLAlchemyError) as exc:
                if not _transient(exc):
                    break
                if attempt == CHUNK_ATTEMPTS - 1:
                    raise
        return await self._row_by_row(rows, now)

    async def _row_by_row(self, rows: list[_Row], now: datetime) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        async with self.database.write_session() as session:
            for row in rows:
                try:
                    async with session.begin_nested():
                        outcomes.append(await self._upsert(session, row, now))
                except InvalidInput as exc:
                    where = exc.errors[0].field if exc.errors else "row"
                    outcomes.append(RowError(row.line, where, exc.detail))
                except StatementError as exc:
                    if _transient(exc):
                        raise
                    outcomes.append(RowError(row.line, "row", "the database refused this row"))
            await session.commit()
        return outcomes

    async def _upsert(self, session: AsyncSession, row: _Row, now: datetime) -> _Outcome:
        profile = await upsert_profile(
            session,
            workspace_id=self.workspace_id,
            user_id=row.user_id,
            email=row.email,
            phone=row.phone,
            traits=row.traits,
            now=now,
            source="import",
        )
        return profile.id, profile.created_at
