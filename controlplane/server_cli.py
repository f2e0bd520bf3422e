"""Server-side commands: ``edgefleet serve``, ``edgefleet db upgrade|status`` and
``edgefleet admin create-token``. They read the same settings as the service
(``EDGEFLEET_…``) and work on its database directly, so they run on the control plane's host."""

from __future__ import annotations

import json
import logging
import sys
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from controlplane.settings import ControlPlaneSettings

db_app = typer.Typer(help="The control plane's database.", no_args_is_help=True)
admin_app = typer.Typer(help="Bootstrap administration on the control plane's host.", no_args_is_help=True)


def load_settings(**overrides: Any) -> ControlPlaneSettings:
    try:
        return ControlPlaneSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"])
            typer.echo(f"edgefleet: setting {field}: {error['msg']}", err=True)
        raise typer.Exit(2) from None


def configure_logging(json_lines: bool) -> None:
    from controlplane.api.observability import JsonLogFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonLogFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger("edgefleet")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (EDGEFLEET_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (EDGEFLEET_PORT).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (EDGEFLEET_WORKERS); each runs the whole app.")
    ] = None,
) -> None:
    """Run the control plane (FastAPI under uvicorn) until SIGINT/SIGTERM."""
    import os

    import uvicorn

    from controlplane.api.app import create_app

    settings = load_settings(host=host, port=port, workers=workers)
    configure_logging(settings.log_json)
    ssl = {}
    if settings.tls_cert is not None and settings.tls_key is not None:
        ssl = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}
    common = {
        "host": settings.host,
        "port": settings.port,
        "access_log": False,
        "log_config": None,
        "server_header": False,
        **ssl,
    }
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **common)  # type: ignore[arg-type]
        return
    # Several processes: migrate and create the signing key once, here, then each worker builds
    # the app from the same settings (passed through the environment) without migrating.
    from controlplane.api.app import open_services

    open_services(settings).db.dispose()
    os.environ.update(
        {
            "EDGEFLEET_HOST": settings.host,
            "EDGEFLEET_PORT": str(settings.port),
            "EDGEFLEET_MIGRATE_ON_START": "false",
        }
    )
    uvicorn.run(
        "controlplane.api.app:create_app_from_env",
        factory=True,
        workers=settings.workers,
        **common,  # type: ignore[arg-type]
    )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations (the service also does this at start unless told not to)."""
    from controlplane.store import Database, migrate

    settings = load_settings()
    db = Database(settings.resolved_database_url)
    try:
        migrate.upgrade(db)
        typer.echo(f"database at revision {migrate.status(db).current}")
    finally:
        db.dispose()


@db_app.command("status")
def db_status() -> None:
    """Say whether the database schema is current (exit 1 when it is not)."""
    from controlplane.store import Database, migrate

    settings = load_settings()
    db = Database(settings.resolved_database_url)
    try:
        state = migrate.status(db)
    finally:
        db.dispose()
    typer.echo(f"current {state.current or 'none'}, head {state.head}")
    raise typer.Exit(0 if state.up_to_date else 1)


@admin_app.command("create-token")
def create_token(
    name: Annotated[str, typer.Option(help="Who the token is for.")],
    role: Annotated[str, typer.Option(help="viewer, operator or admin.")] = "admin",
    ttl_days: Annotated[int, typer.Option(help="Lifetime in days.")] = 90,
    output: Annotated[str, typer.Option(help="text or json.")] = "text",
) -> None:
    """Issue an operator token straight in the database: how the first admin gets one."""
    from controlplane.api.problems import Problem
    from controlplane.api.routes.access import TokenCreate, create_operator_token
    from controlplane.store import Database, migrate

    settings = load_settings()
    try:
        body = TokenCreate(name=name, role=role, ttl_s=ttl_days * 86400)
    except ValidationError as exc:
        typer.echo(f"edgefleet: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}", err=True)
        raise typer.Exit(2) from None
    db = Database(settings.resolved_database_url)
    try:
        migrate.upgrade(db)
        created = create_operator_token(
            db, body, actor="local:admin", default_ttl_s=settings.operator_token_ttl_s
        )
    except Problem as exc:
        typer.echo(f"edgefleet: {exc.detail}", err=True)
        raise typer.Exit(2) from None
    finally:
        db.dispose()
    if output == "json":
        typer.echo(json.dumps(created.model_dump(mode="json")))
    else:
        typer.echo(created.token)
        typer.echo(f"(token {created.id} for {name}, role {role}; shown once)", err=True)
