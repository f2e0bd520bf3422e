"""``edgefleet``: the operator's command line.

``edgefleet demo`` runs edgefleet end to end on one machine (see ``controlplane.demo``); it
grows into the fleet demo as the control plane lands.
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
    examples: Annotated[
        Path, typer.Option(help="Examples directory (workflows/, inputs/, agent/, models/).")
    ] = Path("examples"),
    workdir: Annotated[
        Path, typer.Option(help="Where the demo writes frames, the model store and results.")
    ] = Path(".edgefleet-demo"),
    frames: Annotated[int, typer.Option(help="Synthetic frames to inspect.")] = 200,
) -> None:
    """Run edgefleet end to end on this machine: the workflow engine on the examples, the brief's
    order_processing on its pricing model, and surface inspection of synthetic frames by the agent."""
    from controlplane.demo import run_demo

    raise typer.Exit(run_demo(examples, workdir, frames))


def main() -> None:
    app()
