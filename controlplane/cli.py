"""``edgefleet``: the operator's command line.

``edgefleet demo`` runs a whole fleet on one machine and rolls out two models through it (see
``controlplane.demo``); ``edgefleet demo --local`` runs the engine and one station without a
control plane.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from controlplane import server_cli
from controlplane.broker.cli import broker_config
from controlplane.commands import admin as admin_commands
from controlplane.commands import artifacts, fleet, models, rollouts, session

app = typer.Typer(
    name="edgefleet",
    help="Operate an edgefleet fleet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


app.command()(server_cli.serve)
app.add_typer(server_cli.db_app, name="db")
app.add_typer(server_cli.admin_app, name="admin")

app.command()(session.login)
app.command()(session.logout)
app.command()(session.whoami)
app.add_typer(fleet.devices_app, name="devices")
app.add_typer(fleet.enroll_app, name="enroll-token")
app.add_typer(models.models_app, name="models")
app.add_typer(artifacts.workflows_app, name="workflows")
app.add_typer(artifacts.thresholds_app, name="thresholds")
app.add_typer(rollouts.rollout_app, name="rollout")
app.add_typer(admin_commands.audit_app, name="audit")
app.add_typer(admin_commands.tokens_app, name="tokens")
app.add_typer(admin_commands.policies_app, name="policies")
app.command("broker-config")(broker_config)


@app.callback()
def _root(
    ctx: typer.Context,
    url: session.UrlOption = None,
    token: session.TokenOption = None,
    output: session.OutputOption = session.OutputFormat.table,
) -> None:
    """Operate an edgefleet fleet."""
    ctx.obj = session.Globals(url=url, token=token, output=output)


@app.command()
def demo(
    agents: Annotated[int, typer.Option(min=1, max=20, help="Camera stations (agents) in the fleet.")] = 6,
    fps: Annotated[
        float, typer.Option(min=0.5, max=30, help="Frames per second of each station's camera.")
    ] = 4.0,
    defect_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of defective parts on the stations' line.")
    ] = 0.7,
    keep: Annotated[
        bool,
        typer.Option("--keep", help="Leave the control plane, broker and stations running until Ctrl-C."),
    ] = False,
    workdir: Annotated[
        Path, typer.Option(help="Work directory; the fleet demo uses WORKDIR/fleet, wiped at every run.")
    ] = Path(".edgefleet-demo"),
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="Instead: the workflow engine on the examples, the brief's order_processing and one "
            "inspection station, with no control plane (WORKDIR/local).",
        ),
    ] = False,
    examples: Annotated[Path, typer.Option(help="--local: examples directory.")] = Path("examples"),
    frames: Annotated[int, typer.Option(help="--local: synthetic frames to inspect.")] = 200,
) -> None:
    """Run an edgefleet fleet on this machine: a control plane, a Mosquitto broker and AGENTS camera
    stations; model v1 everywhere, then a canary rollout of v2 (promoted) and one of v3 (aborted at
    canary, rolled back). Exits 0 only when v2 was promoted and v3 aborted."""
    if local:
        from controlplane.demo.station import run_demo

        raise typer.Exit(run_demo(examples, workdir / "local", frames))
    from controlplane.demo.story import StoryOptions, run_story

    options = StoryOptions(workdir / "fleet", agents=agents, fps=fps, defect_rate=defect_rate, keep=keep)
    try:
        code = run_story(options)
    except KeyboardInterrupt:
        typer.echo("edgefleet demo: interrupted; everything it started is stopped", err=True)
        raise typer.Exit(130) from None
    raise typer.Exit(code)


def main() -> None:
    app()
