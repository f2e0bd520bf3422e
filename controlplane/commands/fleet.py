"""``edgefleet devices …`` and ``edgefleet enroll-token create``."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from controlplane.commands import output
from controlplane.commands.output import field, when
from controlplane.commands.session import (
    CONFLICT,
    PROBLEM_FOUND,
    USAGE,
    connect,
    fail,
    fail_api,
    json_output,
    parse_duration,
    parse_pairs,
)

devices_app = typer.Typer(help="The devices in the fleet.", no_args_is_help=True)
enroll_app = typer.Typer(help="Single-use tokens that enroll a device.", no_args_is_help=True)

DEVICE_COLUMNS: list[output.Column] = [
    ("ID", field("id")),
    ("STATUS", field("status")),
    ("PROFILE", field("profile")),
    ("HOSTNAME", field("hostname")),
    ("LABELS", field("labels")),
    ("LAST SEEN", lambda d: when(d.get("last_seen_at"))),
]
DEVICE_KEYS = [
    "id",
    "status",
    "profile",
    "hostname",
    "labels",
    "groups",
    "enrolled_at",
    "last_seen_at",
    "reported_at",
    "reported_state",
    "revision",
]

LabelOption = Annotated[list[str] | None, typer.Option("--label", help="key=value; repeat for several.")]
AllOption = Annotated[bool, typer.Option("--all", help="Every page, not only the first.")]
LimitOption = Annotated[int, typer.Option("--limit", min=1, max=500, help="Items per page.")]


class DeviceStatus(StrEnum):
    active = "active"
    decommissioned = "decommissioned"


@devices_app.command("list")
def list_devices(
    ctx: typer.Context,
    label: LabelOption = None,
    status: Annotated[DeviceStatus | None, typer.Option(help="Only devices in this state.")] = None,
    all_pages: AllOption = False,
    limit: LimitOption = 100,
) -> None:
    """Devices, by id; --label k=v keeps those with all the labels given."""
    labels = parse_pairs(label)
    with connect(ctx) as api:
        listing = api.list_devices(
            labels=labels, status=status.value if status else None, limit=limit, all_pages=all_pages
        )
    output.print_list(
        ctx, listing.items, DEVICE_COLUMNS, what="devices", more=listing.next_cursor is not None
    )


@devices_app.command("show")
def show_device(ctx: typer.Context, device_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """One device: labels, groups, last report."""
    with connect(ctx) as api:
        device, _etag = api.get_device(device_id)
    output.show(ctx, device, DEVICE_KEYS)


@devices_app.command("label")
def label_device(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(metavar="ID")],
    labels: Annotated[list[str] | None, typer.Argument(metavar="K=V...", help="Labels to set.")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="A label key to remove.")] = None,
) -> None:
    """Set and remove a device's labels (others are kept). Refused if the device changed meanwhile."""
    from controlplane.client import ApiError

    changes: dict[str, str | None] = dict(parse_pairs(labels))
    changes.update(dict.fromkeys(remove or []))
    if not changes:
        fail("nothing to change: give key=value labels and/or --remove KEY", USAGE)
    with connect(ctx) as api:
        _device, etag = api.get_device(device_id)
        if etag is None:
            fail(f"the control plane sent no ETag for device '{device_id}'", PROBLEM_FOUND)
        try:
            device = api.update_device_labels(device_id, changes, etag)
        except ApiError as exc:
            if exc.status == 412:
                fail(
                    f"device '{device_id}' was changed by someone else since it was read; "
                    "run the command again",
                    CONFLICT,
                )
            fail_api(exc)
    output.show(ctx, device, DEVICE_KEYS)


@devices_app.command("decommission")
def decommission_device(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(metavar="ID")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Retire a device: its credential stops working at once; its history is kept."""
    if not yes and not typer.confirm(
        f"Decommission device '{device_id}'? Its credential is revoked and cannot be restored",
        default=False,
        err=True,
    ):
        fail(f"device '{device_id}' was not decommissioned", PROBLEM_FOUND)
    with connect(ctx) as api:
        device = api.decommission_device(device_id)
    if json_output(ctx):
        output.emit_json(device)
    else:
        typer.echo(f"decommissioned device '{device_id}'")


@enroll_app.command("create")
def create_enrollment_token(
    ctx: typer.Context,
    ttl: Annotated[str | None, typer.Option(help="Lifetime, e.g. 30m, 24h, 7d (server default).")] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", help="key=value given to the device; repeatable.")
    ] = None,
    profile: Annotated[str | None, typer.Option(help="The device profile it enrolls with.")] = None,
    note: Annotated[str, typer.Option(help="A note for the audit log.")] = "",
) -> None:
    """A single-use enrollment token; only the token goes to stdout, so scripts can capture it."""
    labels = parse_pairs(label)
    ttl_s = parse_duration(ttl)
    with connect(ctx) as api:
        created = api.create_enrollment_token(ttl_s=ttl_s, labels=labels, profile=profile, note=note)
    if json_output(ctx):
        output.emit_json(created)
        return
    typer.echo(created["token"])
    typer.echo(
        f"(enrollment token {created['id']}, expires {when(created.get('expires_at'))}; shown once)",
        err=True,
    )
