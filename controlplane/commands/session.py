"""Where the operator commands get their control plane and token, how they fail, and the exit
codes scripts rely on.

Credentials come from, in order: ``--url`` / ``--token`` (or ``EDGEFLEET_URL`` /
``EDGEFLEET_TOKEN``), then the file ``edgefleet login`` writes,
``$XDG_CONFIG_HOME/edgefleet/credentials.json`` (``~/.config/edgefleet/`` by default, mode 0600).
The stored token is only sent to the URL it was stored for.

Only the standard library and typer are imported here at module level: ``edgefleet`` starts
fast, and httpx loads when a command talks to the control plane.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from controlplane.client import ApiError, ControlPlaneClient

OK = 0
PROBLEM_FOUND = 1
USAGE = 2
NOT_LOGGED_IN = 3
FORBIDDEN = 4
NOT_FOUND = 5
CONFLICT = 6
REJECTED = 7
UNREACHABLE = 8


def exit_code_for(status: int) -> int:
    """The exit code for an HTTP status (0: no answer at all)."""
    if status == 0 or status >= 500:
        return UNREACHABLE
    if status == 401:
        return NOT_LOGGED_IN
    if status == 403:
        return FORBIDDEN
    if status == 404:
        return NOT_FOUND
    if status in (409, 412, 428):
        return CONFLICT
    return REJECTED


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


@dataclass(frozen=True)
class Globals:
    """The global options (``edgefleet --url … --token … --output …``)."""

    url: str | None = None
    token: str | None = None
    output: OutputFormat = OutputFormat.table


UrlOption = Annotated[
    str | None,
    typer.Option("--url", envvar="EDGEFLEET_URL", help="Control plane URL (overrides the stored login)."),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="EDGEFLEET_TOKEN", help="Operator API token (overrides the stored login)."
    ),
]
OutputOption = Annotated[OutputFormat, typer.Option("--output", help="table for people, json for scripts.")]


def globals_of(ctx: typer.Context) -> Globals:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Globals) else Globals()


def json_output(ctx: typer.Context) -> bool:
    return globals_of(ctx).output is OutputFormat.json


# ---- failing ---------------------------------------------------------------------------------


def fail(message: str, code: int, details: Iterable[str] = ()) -> NoReturn:
    """Print ``edgefleet: <message>`` (and any details, one per line) to stderr and exit."""
    typer.echo(f"edgefleet: {message}", err=True)
    for line in details:
        typer.echo(f"  {line}", err=True)
    raise typer.Exit(code)


def describe_error(error: Mapping[str, Any]) -> str:
    """One field error: ``node 'infer', config.model_id: … [code]`` or ``body.labels: …``."""
    where = []
    if error.get("node"):
        where.append(f"node '{error['node']}'")
    if error.get("field"):
        where.append(str(error["field"]))
    text = str(error.get("message", ""))
    if error.get("code"):
        text += f" [{error['code']}]"
    return f"{', '.join(where)}: {text}" if where else text


def fail_api(exc: ApiError, code: int | None = None) -> NoReturn:
    """``edgefleet: <detail>`` and the field errors. With field errors the detail's summary is
    enough (the API repeats the first few errors after it: ``invalid request: a; b``)."""
    detail = exc.detail
    if exc.errors and ": " in detail:
        detail = detail.split(": ", 1)[0]
    if exc.status == 401:
        detail += " (run 'edgefleet login' with a valid operator token)"
    fail(detail, code if code is not None else exit_code_for(exc.status), map(describe_error, exc.errors))


# ---- credentials -------------------------------------------------------------------------------


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "edgefleet"


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


@dataclass(frozen=True)
class Credentials:
    url: str
    token: str


def load_credentials() -> Credentials | None:
    path = credentials_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        fail(f"cannot read {path}: {exc}; run 'edgefleet login' again", NOT_LOGGED_IN)
    if not isinstance(data, dict) or not isinstance(data.get("url"), str) or not data.get("token"):
        fail(f"{path} is not an edgefleet credentials file; run 'edgefleet login' again", NOT_LOGGED_IN)
    return Credentials(url=data["url"], token=str(data["token"]))


def save_credentials(creds: Credentials) -> Path:
    """Write the credentials file atomically; it is mode 0600 from the moment it exists."""
    from agent.fsutil import atomic_write

    path = credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = json.dumps({"url": creds.url, "token": creds.token}, indent=2) + "\n"
    atomic_write(path, data.encode())  # a mkstemp file: created 0600, renamed into place
    return path


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def resolve(ctx: typer.Context) -> Credentials:
    """The control plane and token this command uses; exit 3 when there are none."""
    opts = globals_of(ctx)
    stored = load_credentials()
    url = opts.url or (stored.url if stored else None)
    token = opts.token
    if token is None and stored is not None and url is not None and _same_url(url, stored.url):
        token = stored.token
    if not url or not token:
        fail(
            "not logged in: run 'edgefleet login --url URL', or set EDGEFLEET_URL and EDGEFLEET_TOKEN",
            NOT_LOGGED_IN,
        )
    return Credentials(url=url.rstrip("/"), token=token)


@contextmanager
def connect(ctx: typer.Context) -> Iterator[ControlPlaneClient]:
    """A client for the resolved control plane; an API error ends the command with its exit code."""
    from controlplane.client import ApiError, ControlPlaneClient

    creds = resolve(ctx)
    try:
        with ControlPlaneClient(creds.url, creds.token) as api:
            yield api
    except ApiError as exc:
        fail_api(exc)


# ---- parsing command-line values ---------------------------------------------------------------


def parse_pairs(items: Iterable[str] | None, what: str = "label") -> dict[str, str]:
    """``k=v`` arguments as a dict; exit 2 on anything else."""
    pairs: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"{what} '{item}' is not key=value", USAGE)
        pairs[key.strip()] = value
    return pairs


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str | None, option: str = "--ttl") -> int | None:
    """``90d``, ``24h``, ``30m``, ``3600s`` or plain seconds; exit 2 on anything else."""
    if text is None:
        return None
    match = _DURATION.match(text.lower())
    if match is None:
        fail(f"{option} '{text}' is not a duration such as 30m, 24h, 90d", USAGE)
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def read_text(path: Path) -> str:
    """A local file as UTF-8 text; exit 2 when it is missing or unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        fail(f"{path}: no such file", USAGE)
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{path}: cannot read it: {exc}", USAGE)


# ---- login, logout, whoami ---------------------------------------------------------------------


def _read_token(token: str | None) -> str:
    if token == "-":
        token = sys.stdin.read()
    elif token is None:
        token = typer.prompt("Token", hide_input=True)
    token = token.strip()
    if not token:
        fail("no token given", USAGE)
    return token


def login(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option("--url", help="The control plane, e.g. https://cp:8080.")] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="Operator API token; '-' reads it from stdin; prompted when unset."),
    ] = None,
) -> None:
    """Check an operator token against the control plane and store it for later commands."""
    from controlplane.client import ApiError, ControlPlaneClient

    url = url or globals_of(ctx).url
    if not url:
        fail("give the control plane's URL: edgefleet login --url https://HOST:PORT", USAGE)
    url = url.rstrip("/")
    secret = _read_token(token)
    try:
        with ControlPlaneClient(url, secret) as api:
            me = api.whoami()
    except ApiError as exc:
        fail_api(exc)
    if me.get("kind") != "operator":
        fail("that is a device credential; log in with an operator API token", NOT_LOGGED_IN)
    path = save_credentials(Credentials(url=url, token=secret))
    if json_output(ctx):
        typer.echo(json.dumps(me, indent=2))
    else:
        typer.echo(f"logged in to {url} as {me['name']} (role {me.get('role')}); credentials in {path}")


def logout() -> None:
    """Forget the stored credentials."""
    path = credentials_path()
    try:
        path.unlink()
    except FileNotFoundError:
        typer.echo("not logged in", err=True)
        return
    typer.echo(f"logged out; removed {path}")


def whoami(ctx: typer.Context) -> None:
    """Who the control plane sees behind the token in use."""
    with connect(ctx) as api:
        me = api.whoami()
        url = api.url
    if json_output(ctx):
        typer.echo(json.dumps(me, indent=2))
        return
    attributes = ", ".join(f"{k}={v}" for k, v in sorted(me.get("attributes", {}).items()))
    typer.echo(f"{me['name']} ({me['kind']}, role {me.get('role')}, token {me['token_id']}) at {url}")
    if attributes:
        typer.echo(f"attributes: {attributes}")
