"""Numeric ids beyond 64 bits, in paths and in cursors, are refused as bad input: they never
reach the database driver (which would fail with an overflow, a 500)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import FastAPI

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


async def test_a_row_id_out_of_range_in_a_query_is_refused_naming_it(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.get(
        "/api/v1/journeys/alerts", params={"journey_id": TOO_BIG}, headers=tenant.admin
    )
    problem(response, 422, "journey_id")


def test_every_integer_parameter_has_a_ceiling(app: FastAPI) -> None:
    # One without a maximum reaches the driver past 64 bits: a 500 on PostgreSQL.
    unbounded = [
        f"{method.upper()} {path} {parameter['name']}"
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
        for parameter in operation.get("parameters", [])
        for schema in [parameter["schema"], *parameter["schema"].get("anyOf", [])]
        if schema.get("type") == "integer" and "maximum" not in schema
    ]
    assert unbounded == []
