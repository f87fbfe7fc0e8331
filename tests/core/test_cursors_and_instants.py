"""Cursors are read by one set of decoders (`core.pagination`): whatever a client puts in
one, a listing answers 400 naming `cursor` or a page, never a 500 (times past year 9999 or
before year 1 once shifted to UTC, a uuid where a row id belongs and the other way round,
row ids past 64 bits: each reached PostgreSQL or overflowed before). Instants in queries
and bodies (`core.schemas.Instant`, `AwareInstant`) are held to the same calendar: 422
naming them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import pytest

from clarion.core.database import Database
from clarion.core.errors import InvalidInput
from clarion.core.pagination import (
    decode_time_id_cursor,
    decode_time_uuid_cursor,
    decode_uuid_cursor,
    encode_cursor,
)
from tests.conftest import Tenant, problem
from tests.messaging.test_engagement import person

SOME_UUID = str(uuid.UUID(int=1))
TIMES_OUT_OF_RANGE = ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"]
NOT_TIMES: list[object] = ["yesterday", 7, None, ["2026-01-01"]]


@pytest.mark.parametrize("moment", [*TIMES_OUT_OF_RANGE, *NOT_TIMES])
def test_times_that_are_not_or_leave_the_calendar_in_utc_are_refused(moment: object) -> None:
    with pytest.raises(InvalidInput):
        decode_time_id_cursor(encode_cursor(moment, 1))
    with pytest.raises(InvalidInput):
        decode_time_uuid_cursor(encode_cursor(moment, SOME_UUID))


def test_a_time_without_an_offset_is_utc() -> None:
    at, row_id = decode_time_id_cursor(encode_cursor("2026-11-24T10:00:00", 3))
    assert (at, row_id) == (datetime(2026, 11, 24, 10, tzinfo=UTC), 3)
    at, found = decode_time_uuid_cursor(encode_cursor("2026-11-24T12:00:00+02:00", SOME_UUID))
    assert (at, str(found)) == (datetime(2026, 11, 24, 10, tzinfo=UTC), SOME_UUID)


@pytest.mark.parametrize("value", [7, True, None, "not a uuid", [SOME_UUID]])
def test_uuid_cursors_hold_a_uuid(value: object) -> None:
    with pytest.raises(InvalidInput):
        decode_uuid_cursor(encode_cursor(value))
    with pytest.raises(InvalidInput):
        decode_time_uuid_cursor(encode_cursor("2026-11-24T10:00:00", value))


@pytest.mark.parametrize(
    "cursor",
    [
        *(encode_cursor(moment, SOME_UUID) for moment in TIMES_OUT_OF_RANGE),
        encode_cursor("2026-11-24T10:00:00", 7),  # a row id where a uuid belongs
        encode_cursor("2026-11-24T10:00:00", SOME_UUID, 1),
    ],
)
async def test_profile_listing_cursors(
    client: httpx.AsyncClient, tenant: Tenant, cursor: str
) -> None:
    for path in ("/api/v1/profiles", "/api/v1/messages"):
        response = await client.get(path, params={"cursor": cursor}, headers=tenant.admin)
        problem(response, 400, "cursor")


async def test_a_naive_time_in_a_cursor_pages_as_utc(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    cursor = encode_cursor("2026-11-24T10:00:00", SOME_UUID)
    for path in ("/api/v1/profiles", "/api/v1/messages"):
        response = await client.get(path, params={"cursor": cursor}, headers=tenant.admin)
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "cursor",
    [
        encode_cursor("2026-11-24T10:00:00", SOME_UUID),  # a uuid where a row id belongs
        encode_cursor("9999-12-31T23:59:59-05:00", 1),
        encode_cursor("2026-11-24T10:00:00", 2**63),
        encode_cursor(2**63),
        encode_cursor(True),
    ],
)
async def test_timeline_and_trait_history_cursors(
    client: httpx.AsyncClient, database: Database, tenant: Tenant, cursor: str
) -> None:
    profile_id = await person(database, tenant, f"user-{uuid.uuid4().hex[:8]}")
    for tail in ("events", "traits/history"):
        response = await client.get(
            f"/api/v1/profiles/{profile_id}/{tail}",
            params={"cursor": cursor},
            headers=tenant.admin,
        )
        problem(response, 400, "cursor")


@pytest.mark.parametrize("moment", TIMES_OUT_OF_RANGE)
@pytest.mark.parametrize(
    "path", ["/api/v1/events", "/api/v1/tracking-plans/violations"], ids=["events", "violations"]
)
@pytest.mark.parametrize("name", ["since", "until"])
async def test_times_leaving_the_calendar_in_queries_are_refused_naming_them(
    client: httpx.AsyncClient, tenant: Tenant, moment: str, path: str, name: str
) -> None:
    response = await client.get(path, params={name: moment}, headers=tenant.admin)
    body = problem(response, 422, name)
    assert "out of range once in UTC" in str(body["errors"])


@pytest.mark.parametrize("moment", TIMES_OUT_OF_RANGE)
async def test_times_leaving_the_calendar_in_bodies_are_refused_naming_them(
    client: httpx.AsyncClient, database: Database, tenant: Tenant, moment: str
) -> None:
    profile_id = await person(database, tenant, f"user-{uuid.uuid4().hex[:8]}")
    body = {"template_id": 1, "profile_id": str(profile_id), "send_after": moment}
    response = await client.post("/api/v1/messages", json=body, headers=tenant.admin)
    problem(response, 422, "send_after")
    send = {"when": "at", "at": moment}
    response = await client.post("/api/v1/campaigns/1/send", json=send, headers=tenant.admin)
    problem(response, 422, "at")
