"""Numeric ids beyond 64 bits, in paths and in cursors, are refused as bad input: they never
reach the database driver (which would fail with an overflow, a 500)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from clarion.core.pagination import encode_cursor
from tests.conftest import Tenant, problem

TOO_BIG = 2**63  # one past the largest BIGINT


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", f"/api/v1/events/{TOO_BIG}", "event_id"),
        ("GET", f"/api/v1/jobs/{TOO_BIG}", "job_id"),
        ("POST", f"/api/v1/jobs/{TOO_BIG}/retry", "job_id"),
        ("DELETE", f"/api/v1/jobs/{TOO_BIG}", "job_id"),
        ("GET", f"/api/v1/tracking-plans/{TOO_BIG}", "plan_id"),
        ("DELETE", f"/api/v1/tracking-plans/{TOO_BIG}", "plan_id"),
        ("POST", f"/api/v1/profiles/{uuid.uuid4()}/merges/{TOO_BIG}/undo", "merge_id"),
        ("GET", "/api/v1/jobs/0", "job_id"),
    ],
)
async def test_ids_out_of_range_in_paths(
    client: httpx.AsyncClient, tenant: Tenant, method: str, path: str, field: str
) -> None:
    body = problem(await client.request(method, path, headers=tenant.admin), 422)
    assert field in str(body)


@pytest.mark.parametrize(
    ("path", "cursor"),
    [
        ("/api/v1/jobs", encode_cursor(TOO_BIG)),
        ("/api/v1/jobs", encode_cursor(True)),
        ("/api/v1/events", encode_cursor("2026-11-22T10:00:00+00:00", TOO_BIG)),
        ("/api/v1/tracking-plans/violations", encode_cursor("2026-11-22T10:00:00", -1)),
    ],
)
async def test_row_ids_out_of_range_in_cursors(
    client: httpx.AsyncClient, tenant: Tenant, path: str, cursor: str
) -> None:
    problem(await client.get(path, params={"cursor": cursor}, headers=tenant.admin), 400, "cursor")
