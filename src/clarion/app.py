"""The FastAPI application: routers, error handling, OpenAPI and start-up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from sqlalchemy import text

from clarion import __version__
from clarion.campaigns import api as campaigns_api
from clarion.campaigns.service import (
    campaigns_using_channel,
    campaigns_using_segment,
    campaigns_using_template,
)
from clarion.core import heap
from clarion.core.clock import Clock, SystemClock
from clarion.core.database import Database
from clarion.core.jobs.worker import Worker
from clarion.core.problems import document_problems, install_problem_handlers, problem_response
from clarion.core.settings import Settings, get_settings
from clarion.erasers import PROFILE_ERASERS
from clarion.ingest import api as ingest_api
from clarion.ingest.plans import api as tracking_plans_api
from clarion.ingest.writer import EventWriter
from clarion.journeys import api as journeys_api
from clarion.journeys.service import (
    journeys_using_channel,
    journeys_using_segment,
    journeys_using_template,
)
from clarion.messaging import api as messaging_api
from clarion.messaging import api_callbacks, api_inbox, api_messages, api_public
from clarion.messaging.consent import api as consent_api
from clarion.messaging.consent import suppressions as consent_suppressions
from clarion.operations import api as operations_api
from clarion.pipeline import Pipeline
from clarion.profiles import api as profiles_api
from clarion.segments import api as segments_api
from clarion.segments.catalog import Catalog
from clarion.startup import prepare_database
from clarion.workspaces import api as workspaces_api
from clarion.workspaces.cache import WriteKeyCache


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
            app.state.secret_keys = settings.secret_keys()
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
    app.state.segment_users = (journeys_using_segment, campaigns_using_segment)
    app.state.profile_erasers = PROFILE_ERASERS
    app.state.address_suppressor = consent_suppressions.suppress
    app.state.channel_users = (journeys_using_channel, campaigns_using_channel)
    app.state.template_users = (journeys_using_template, campaigns_using_template)
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

    # HEAD too, as uptime checkers and load balancers often probe with it. (Not on every
    # GET route: a link scanner's HEAD on a tracking link must not count as a click.)
    @app.get("/healthz", tags=["health"])
    @app.head("/healthz", tags=["health"])
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
            document_problems(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _unavailable(reason: str) -> Response:
    return problem_response(
        status=503, code="unavailable", title="Service unavailable", detail=reason
    )
