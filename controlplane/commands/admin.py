"""``edgefleet audit …``, ``edgefleet tokens …`` and ``edgefleet policies …``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from controlplane.commands import output
from controlplane.commands.output import field, when
from controlplane.commands.session import (
    CONFLICT,
    PROBLEM_FOUND,
    USAGE,
    connect,
    fail,
    json_output,
    parse_duration,
    parse_pairs,
    read_text,
)

audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
tokens_app = typer.Typer(help="Operator API tokens (admin).", no_args_is_help=True)
policies_app = typer.Typer(help="Attribute-based access policies (admin).", no_args_is_help=True)

AllOption = Annotated[bool, typer.Option("--all", help="Every page, not only the first.")]

AUDIT_COLUMNS: list[output.Column] = [
    ("SEQ", field("seq")),
    ("AT", lambda e: when(e.get("at"))),
    ("ACTOR", field("actor")),
    ("ACTION", field("action")),
    ("RESOURCE", field("resource")),
]
TOKEN_COLUMNS: list[output.Column] = [
    ("ID", field("id")),
    ("NAME", field("name")),
    ("ROLE", field("role")),
    ("ATTRIBUTES", field("attributes")),
    ("POLICIES", field("policies")),
    ("EXPIRES", lambda t: when(t.get("expires_at"))),
    ("REVOKED", lambda t: when(t.get("revoked_at"))),
]
POLICY_COLUMNS: list[output.Column] = [
    ("NAME", field("name")),
    ("REVISION", field("revision")),
    ("PERMISSIONS", lambda p: ", ".join(_permission(x) for x in p.get("permissions", []))),
    ("DESCRIPTION", field("description")),
]


def _permission(spec: dict[str, Any]) -> str:
    conditions = len(spec.get("conditions") or [])
    suffix = f" ({conditions} condition(s))" if conditions else ""
    return f"{spec.get('resource')}:{'/'.join(spec.get('actions', []))}{suffix}"


class Role(StrEnum):
    viewer = "viewer"
    operator = "operator"
    admin = "admin"


# ---- audit -----------------------------------------------------------------------------------


@audit_app.command("list")
def list_audit(
    ctx: typer.Context,
    actor: Annotated[
        str | None, typer.Option(help="Only entries by this actor, e.g. operator:alice.")
    ] = None,
    resource: Annotated[str | None, typer.Option(help="Only resources starting with this.")] = None,
    all_pages: AllOption = False,
    oldest_first: Annotated[bool, typer.Option("--oldest-first", help="Oldest entries first.")] = False,
) -> None:
    """Audit entries, newest first (``--oldest-first`` to reverse)."""
    with connect(ctx) as api:
        listing = api.list_audit(
            actor=actor, resource=resource, all_pages=all_pages, newest_first=not oldest_first
        )
    output.print_list(
        ctx, listing.items, AUDIT_COLUMNS, what="audit entries", more=listing.next_cursor is not None
    )


@audit_app.command("verify")
def verify_audit(ctx: typer.Context) -> None:
    """Recompute the audit log's hash chain. Exit 1, naming each problem, when it was tampered with."""
    with connect(ctx) as api:
        report = api.verify_audit()
    if json_output(ctx):
        output.emit_json(report)
    elif report.get("ok"):
        typer.echo(f"ok — {report['entries']} audit entries, hash chain intact")
    else:
        typer.echo(f"NOT OK — {report['entries']} audit entries, {len(report['problems'])} problem(s):")
        for problem in report["problems"]:
            typer.echo(f"  - {problem}")
    if not report.get("ok"):
        raise typer.Exit(PROBLEM_FOUND)


# ---- tokens ----------------------------------------------------------------------------------


@tokens_app.command("create")
def create_token(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="Who the token is for (shows in the audit log).")],
    role: Annotated[Role, typer.Option(help="What it may do.")],
    attr: Annotated[list[str] | None, typer.Option("--attr", help="key=value attribute; repeatable.")] = None,
    policy: Annotated[
        list[str] | None, typer.Option("--policy", help="A policy to attach; repeatable.")
    ] = None,
    ttl: Annotated[str | None, typer.Option(help="Lifetime, e.g. 90d (server default).")] = None,
) -> None:
    """Issue an operator API token; only the token goes to stdout (it is shown once)."""
    attributes = parse_pairs(attr, "attribute")
    ttl_s = parse_duration(ttl)
    with connect(ctx) as api:
        created = api.create_token(
            name, role.value, attributes=attributes, policies=policy or [], ttl_s=ttl_s
        )
    if json_output(ctx):
        output.emit_json(created)
        return
    typer.echo(created["token"])
    typer.echo(
        f"(token {created['id']} for {name}, role {role.value}, "
        f"expires {when(created.get('expires_at'))}; shown once)",
        err=True,
    )


@tokens_app.command("list")
def list_tokens(ctx: typer.Context, all_pages: AllOption = False) -> None:
    """Operator tokens (never their secrets)."""
    with connect(ctx) as api:
        listing = api.list_tokens(all_pages=all_pages)
    output.print_list(ctx, listing.items, TOKEN_COLUMNS, what="tokens", more=listing.next_cursor is not None)


@tokens_app.command("revoke")
def revoke_token(ctx: typer.Context, token_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Revoke an operator token at once."""
    with connect(ctx) as api:
        api.revoke_token(token_id)
    if json_output(ctx):
        output.emit_json({"id": token_id, "revoked": True})
    else:
        typer.echo(f"revoked token {token_id}")


# ---- policies --------------------------------------------------------------------------------


def _policy_document(path: Path) -> dict[str, Any]:
    import yaml

    try:
        document = yaml.safe_load(read_text(path))
    except yaml.YAMLError as exc:
        fail(f"{path}: not valid YAML: {exc}".replace("\n", " "), USAGE)
    if not isinstance(document, dict):
        fail(f"{path}: a policy is a mapping with 'permissions' (and an optional 'description')", USAGE)
    return document


@policies_app.command("put")
def put_policy(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME")],
    file: Annotated[Path, typer.Argument(metavar="FILE.yaml")],
) -> None:
    """Create policy NAME from a YAML file, or replace it (refused if it changed meanwhile)."""
    from controlplane.client import ApiError

    document = _policy_document(file)
    with connect(ctx) as api:
        try:
            _current, etag = api.get_policy(name)
        except ApiError as exc:
            if exc.status != 404:
                raise
            etag = None
        try:
            policy = api.put_policy(name, document, etag)
        except ApiError as exc:
            if exc.status not in (412, 428):
                raise
            fail(f"policy '{name}' was changed by someone else meanwhile; run the command again", CONFLICT)
    if json_output(ctx):
        output.emit_json(policy)
    else:
        typer.echo(f"policy '{name}' stored (revision {policy['revision']})")


@policies_app.command("list")
def list_policies(ctx: typer.Context, all_pages: AllOption = False) -> None:
    """Access policies."""
    with connect(ctx) as api:
        listing = api.list_policies(all_pages=all_pages)
    output.print_list(
        ctx, listing.items, POLICY_COLUMNS, what="policies", more=listing.next_cursor is not None
    )
