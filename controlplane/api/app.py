"""The control plane's FastAPI application.

``create_app(settings)`` builds it; the lifespan opens the database (migrating it when
``migrate_on_start``), loads or creates the artifact-signing key, opens the artifact store, and
starts the rollout controller's driver (``rollout_tick_s`` > 0; it ticks only while this process
leads).
Everything a request needs hangs off ``app.state.services``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel

from controlplane.api import problems
from controlplane.api.deps import Services
from controlplane.api.observability import BodyLimit, HttpMetrics, RequestObserver
from controlplane.api.problems import problem_response
from controlplane.api.routes import (
    access,
    audit,
    devices,
    models,
    rollouts,
    telemetry,
    thresholds,
    workflows,
)
from controlplane.artifacts import FileBlobStore
from controlplane.settings import ControlPlaneSettings
from controlplane.signing import SigningKey
from controlplane.store import Database, migrate

API_VERSION = "1"


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    schema_revision: str | None
    schema_head: str


def open_services(settings: ControlPlaneSettings) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    if settings.migrate_on_start:
        migrate.upgrade(db)
    return Services(
        settings=settings,
        db=db,
        blobs=FileBlobStore(settings.artifacts_dir),
        signer=SigningKey.load_or_create(settings.signing_key_path),
    )


def create_app(settings: ControlPlaneSettings | None = None) -> FastAPI:
    settings = settings or ControlPlaneSettings()

    registry = CollectorRegistry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = open_services(settings)
        if settings.mqtt_host is not None:
            from controlplane.bridge.service import Bridge

            services.bridge = Bridge(settings, services.db, registry)
            services.bridge.start()
        app.state.services = services
        services.start_rollout_driver()
        try:
            yield
        finally:
            services.stop_rollout_driver()
            dry_runner = getattr(app.state, "dry_runner", None)
            if dry_runner is not None:  # created by the first dry run
                dry_runner.close()
            if services.bridge is not None:
                services.bridge.stop()
            services.db.dispose()

    app = FastAPI(
        title="edgefleet control plane",
        version=API_VERSION,
        description="Fleet registry, signed artifacts, access control and audit for edgefleet devices.",
        lifespan=lifespan,
    )
    problems.install(app)

    @app.exception_handler(sa.exc.IntegrityError)
    async def _conflict(_request: Request, _exc: sa.exc.IntegrityError) -> Response:
        return problem_response(
            409, "a concurrent change got there first; read again and retry", type="conflict"
        )

    for module in (devices, models, workflows, thresholds, rollouts, telemetry, access, audit):
        app.include_router(module.router, responses=problems.PROBLEM_RESPONSES)

    app.state.metrics_registry = registry
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestObserver, metrics=HttpMetrics(registry))

    @app.get("/healthz", response_model=Health, tags=["health"])
    def healthz() -> Health:
        """The process is up and answering."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"description": "Not ready", "content": {problems.PROBLEM_JSON: {}}}},
        tags=["health"],
    )
    def readyz(request: Request) -> Any:
        """Ready to serve: the database answers and its schema is current."""
        svc: Services = request.app.state.services
        try:
            svc.db.ping()
            state = migrate.status(svc.db)
        except sa.exc.SQLAlchemyError as exc:
            return problem_response(503, f"database unreachable: {type(exc).__name__}", type="not-ready")
        if not state.up_to_date:
            return problem_response(
                503,
                f"database schema is at {state.current}, this release needs {state.head}: "
                "run 'edgefleet db upgrade'",
                type="not-ready",
            )
        return Readiness(
            status="ready", database=svc.db.dialect, schema_revision=state.current, schema_head=state.head
        )

    @app.get("/metrics", response_class=Response, tags=["health"])
    def metrics() -> Response:
        """Prometheus exposition."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def create_app_from_env() -> FastAPI:
    """The app of one worker process of ``edgefleet serve --workers N``: settings from the
    environment, logging as the parent configured it."""
    from controlplane.server_cli import configure_logging

    settings = ControlPlaneSettings()
    configure_logging(settings.log_json)
    return create_app(settings)
