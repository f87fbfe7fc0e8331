"""The FastAPI application: routers, error handling, OpenAPI and start-up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from sqlalchemy import text

from clarion import __version__
from clarion.campaigns import api as campaigns_api
from clarion.core import heap, migrations
from clarion.core.clock import Clock, SystemClock
from clarion.core.database import Database
from clarion.core.jobs.worker import Worker
from clarion.core.problems import install_problem_handlers, problem_response
from clarion.core.settings import Settings, get_settings
from clarion.ingest import api as ingest_api
from clarion.ingest.plans import api as tracking_plans_api
from clarion.ingest.plans import secrets as plan_secrets
from clarion.ingest.plans.cache import announce_change
from clarion.ingest.writer import EventWriter
from clarion.journeys import api as journeys_api
from clarion.messaging import api as messaging_api
from clarion.messaging import api_callbacks, api_inbox, api_messages, api_public
from clarion.messaging.consent import api as consent_api
from clarion.operations import api as operations_api
from clarion.pipeline import Pipeline
from clarion.profiles import api as profiles_api
from clarion.segments import api as segments_api
from clarion.segments.catalog import Catalog
from clarion.workspaces import api as workspaces_api
from clarion.workspaces import service as workspaces
from clarion.workspaces.cache import WriteKeyCache

log = logging.getLogger("clarion")


class SchemaBehind(RuntimeError):
    """The database holds data but an older schema: `clarion migrate` must run first."""


async def prepare_database(database: Database, settings: Settings, clock: Clock) -> None:
    """Migrate an empty database, refuse an outdated one, apply the bootstrap keys, and
    give SQLite's planner fresh statistics."""
    current = await migrations.current_revision(database)
    if current is None:
        log.info("empty database: creating the schema")
        await migrations.upgrade(database)
    elif current != migrations.head_revision():
        raise SchemaBehind(
            f"The database schema is at {current}, this Clarion needs "
            f"{migrations.head_revision()}: run `clarion migrate` first."
        )
    await bootstrap_keys(database, settings, clock)
    await seal_enrichment_headers(database, settings)
    await database.refresh_statistics()


async def seal_enrichment_headers(database: Database, settings: Settings) -> None:
    """Seal the enrichment header values that plans saved before sealing still hold."""
    headers = plan_secrets.HeaderVault(settings.resolved_secret_key())
    async with database.read_session() as session:
        plans = await plan_secrets.plans_to_seal(session, headers)
    if not plans:
        return  # the usual start: nothing to write, so no write transaction either
    async with database.write_session() as session:
        changed = await plan_secrets.seal_plans(session, plans)
        await session.commit()
    for workspace_id in sorted(changed):
        log.info("tracking plans of workspace %s: enrichment header values sealed", workspace_id)
        await announce_change(settings, workspace_id)


async def bootstrap_keys(database: Database, settings: Settings, clock: Clock) -> None:
    """Give the default workspace its configured keys, or first keys on a first run."""
    write_key = settings.bootstrap_write_key
    admin_token = settings.bootstrap_admin_token
    async with database.write_session() as session:
        _, created = await workspaces.bootstrap(
            session,
            now=clock.now(),
            write_key=write_key.get_secret_value() if write_key else None,
            admin_token=admin_token.get_secret_value() if admin_token else None,
        )
        await session.commit()
    configured = write_key is not None or admin_token is not None
    for key, secret in created:
        if configured:
            log.info("bootstrap %s key %s is in place", key.scope, key.key_prefix)
        else:
            # First run with nothing configured: the operator needs these once.
            log.warning("first run: %s key (shown once, store it now): %s", key.scope, secret)


def create_app(
    settings: Settings | None = None, *, clock: Clock | None = None, run_worker: bool = True
) -> FastAPI:
    """The Clarion web application, ready to serve once its lifespan has started; with
    `run_worker`, it also runs a worker for durable jobs in the same process."""
    settings = settings or get_settings()
    app_clock = clock or SystemClock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(
            settings.database_url,
            pool_size=settings.database_pool_size,
            sqlite_synchronous=settings.sqlite_synchronous,
        )
        try:
            app.state.secret_key = settings.resolved_secret_key()
            await prepare_database(database, settings, app_clock)
        except BaseException:
            await database.dispose()
            raise
        app.state.database = database
        app.state.event_writer = EventWriter(database)
        checkpoints = asyncio.create_task(database.checkpoint_continuously())
        statistics = asyncio.create_task(database.keep_statistics_fresh())
        pipeline = Pipeline(database, settings, app_clock)
        app.state.pipeline = pipeline
        worker = None
        if run_worker:
            jobs = Worker(
                database,
                pipeline.registry(),
                clock=app_clock,
                concurrency=settings.worker_concurrency,
            )
            worker = asyncio.create_task(jobs.run(), name="clarion-worker")
        heap.settle()
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            if worker is not None:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
            for upkeep in (checkpoints, statistics):
                upkeep.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await upkeep  # it may hold a connection: let it give it back
            await pipeline.close()
            await app.state.event_writer.close()
            await database.dispose()

    app = FastAPI(
        title="Clarion",
        version=__version__,
        summary="Self-hosted personalized marketing: events, profiles, segments, journeys.",
        lifespan=lifespan,
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url="/api/redoc",
    )
    app.state.settings = settings
    app.state.clock = app_clock
    app.state.ready = False
    app.state.write_keys = WriteKeyCache()
    app.state.segment_catalog = Catalog()
    install_problem_handlers(app)
    app.include_router(ingest_api.tracking)
    app.include_router(ingest_api.events)
    app.include_router(tracking_plans_api.router)
    app.include_router(workspaces_api.router)
    app.include_router(operations_api.router)
    app.include_router(profiles_api.router)
    app.include_router(segments_api.router)
    app.include_router(campaigns_api.router)
    app.include_router(journeys_api.router)
    app.include_router(messaging_api.router)
    app.include_router(api_messages.router)
    app.include_router(api_callbacks.hooks)
    app.include_router(api_callbacks.router)
    app.include_router(consent_api.router)
    app.include_router(consent_api.public)
    app.include_router(api_public.public)
    app.include_router(api_inbox.inbox)
    app.include_router(api_inbox.router)
    app.add_middleware(api_inbox.InboxCors)  # CORS for /inbox/v1 only

    @app.get("/healthz", tags=["health"], include_in_schema=True)
    async def healthz(request: Request) -> Response:
        """200 once the server accepts work and its database answers; 503 otherwise."""
        if not request.app.state.ready:
            return _unavailable("starting up")
        try:
            async with request.app.state.database.read_session() as session:
                await session.execute(text("SELECT 1"))
        except Exception as exc:  # any database failure means "not ready", and says why
            return _unavailable(f"database unreachable: {type(exc).__name__}")
        return Response(b'{"status":"ok"}', media_type="application/json")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).update(ingest_api.openapi_schemas())
            components.setdefault("securitySchemes", {})["writeKey"] = {
                "type": "http",
                "scheme": "basic",
                "description": "The source's write key as user name, empty password.",
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _unavailable(reason: str) -> Response:
    return problem_response(
        status=503, code="unavailable", title="Service unavailable", detail=reason
    )
