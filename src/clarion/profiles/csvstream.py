"""Reading a CSV byte stream as it arrives: gunzipped on the fly, split into records that keep
the line each starts on, with quoted fields spanning lines, in bounded memory.

Nothing here knows profiles: `imports.py` reads the header and rows out of these records.
"""

from __future__ import annotations

import codecs
import csv
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from dataclasses import dataclass

from clarion.core.errors import FieldError, InvalidInput, PayloadTooLarge

MAX_ROW_BYTES = 1024 * 1024
_INFLATE_STEP = 256 * 1024
_GZIP_MAGIC = b"\x1f\x8b"


def too_large(limit: int) -> PayloadTooLarge:
    """The 413 for a CSV over `limit` bytes."""
    size = f"{limit // (1024 * 1024)} MB" if limit >= 1024 * 1024 else f"{limit} bytes"
    return PayloadTooLarge(
        f"The CSV is larger than {size}; split it into smaller files.",
        errors=[FieldError("body", f"larger than {size}")],
    )


def bad_gzip() -> InvalidInput:
    """The 400 for a body marked gzip that is not a whole gzip stream."""
    return InvalidInput(
        "The body is marked gzip but is not a complete gzip stream.",
        errors=[FieldError("body", "invalid gzip stream")],
    )


async def inflate(
    body: AsyncIterable[bytes], *, gzipped: bool | None, max_bytes: int | None
) -> AsyncIterator[bytes]:
    """The body's bytes, gunzipped when asked (or, for None, when it starts as gzip does)."""
    inflater: zlib._Decompress | None = None
    size = wire = 0
    first = True
    async for chunk in body:
        if not chunk:
            continue
        wire += len(chunk)
        if max_bytes is not None and wire > max_bytes:
            raise too_large(max_bytes)
        if first:
            first = False
            if gzipped or (gzipped is None and chunk.startswith(_GZIP_MAGIC)):
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        if inflater is None:
            yield chunk
            continue
        pending = chunk
        while pending:
            try:
                data = inflater.decompress(pending, _INFLATE_STEP)
            except zlib.error as exc:
                raise bad_gzip() from exc
            pending = inflater.unconsumed_tail
            if inflater.eof and inflater.unused_data:  # concatenated gzip members
                pending, inflater = inflater.unused_data, zlib.decompressobj(16 + zlib.MAX_WBITS)
            size += len(data)
            if max_bytes is not None and size > max_bytes:
                raise too_large(max_bytes)
            if data:
                yield data
    if gzipped and inflater is None:
        raise bad_gzip()
    if inflater is not None and not inflater.eof:
        raise bad_gzip()


@dataclass(frozen=True, slots=True)
class Record:
    """One CSV record: its first line and its cells, or why it could not be read."""

    line: int
    cells: list[str] | None
    error: str | None = None


class RecordReader:
    """Splits bytes into CSV records, keeping line numbers; quoted fields may span lines.

    Lines are grouped until their quotes balance, then parsed strictly; a group that never
    balances is parsed at `MAX_ROW_BYTES`, where an unclosed quote is reported on its line.
    """

    def __init__(self) -> None:
        self.delimiter: str | None = None
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._overlong = False
        self._line = 0  # lines seen
        self._group: list[str] = []
        self._group_size = 0
        self._quotes = 0
        self._bad: set[int] = set()  # lines of the group that were not UTF-8

    def feed(self, data: bytes) -> Iterator[Record]:
        """The records completed by `data`."""
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            self._partial.append(data[start : end + 1])
            yield from self._take_line()
            start = end + 1
        if start < len(data):
            self._partial_size += len(data) - start
            if self._partial_size > MAX_ROW_BYTES:  # keep no more than a row's worth
                self._partial, self._overlong = [], True
            else:
                self._partial.append(data[start:])

    def close(self) -> Iterator[Record]:
        """The records left at the end of the stream."""
        if self._partial or self._overlong:
            yield from self._take_line()
        if self._group:
            yield from self._parse()

    def _take_line(self) -> Iterator[Record]:
        raw = b"".join(self._partial)
        self._partial, self._partial_size = [], 0
        self._line += 1
        if self._overlong:
            self._overlong = False
            if self._group:
                self._line -= 1
                yield from self._parse()
                self._line += 1
            yield Record(self._line, None, f"a line is longer than {MAX_ROW_BYTES} bytes")
            return
        if self._line == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", "replace")
            self._bad.add(self._line)
        if self.delimiter is None and text.strip():
            self.delimiter = _sniff(text)
        self._group.append(text)
        self._group_size += len(raw)
        self._quotes += text.count('"')
        if self._quotes % 2 == 0 or self._group_size > MAX_ROW_BYTES:
            yield from self._parse()

    def _parse(self) -> Iterator[Record]:
        lines, first = self._group, self._line - len(self._group) + 1
        while lines:
            reader = csv.reader(lines, delimiter=self.delimiter or ",", strict=True)
            done = 0
            try:
                for cells in reader:
                    line, done = first + done, reader.line_num
                    if any(cell.strip() for cell in cells):  # blank lines are skipped
                        yield self._record(line, first + done - 1, cells)
                lines = []
            except csv.Error as exc:
                line = first + done
                yield Record(line, None, _csv_message(str(exc)))
                consumed = max(reader.line_num, done + 1)
                lines, first = lines[consumed:], first + consumed
        self._group, self._group_size, self._quotes = [], 0, 0
        self._bad.clear()

    def _record(self, line: int, last: int, cells: list[str]) -> Record:
        if any(number in self._bad for number in range(line, last + 1)):
            return Record(line, None, "not UTF-8 text")
        return Record(line, cells)


def _sniff(header: str) -> str:
    """The delimiter of a header line: comma, semicolon (spreadsheets in many locales) or tab."""
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _csv_message(error: str) -> str:
    if "unexpected end of data" in error:
        return "a quoted field is never closed"
    if "field larger than field limit" in error:
        return "a field is too long (or a quoted field is never closed)"
    return f"malformed CSV: {error}"


async def records(data: AsyncIterator[bytes]) -> AsyncIterator[Record]:
    """The CSV records of a byte stream, blank lines skipped."""
    reader = RecordReader()
    async for chunk in data:
        for record in reader.feed(chunk):
            yield record
    for record in reader.close():
        yield record
