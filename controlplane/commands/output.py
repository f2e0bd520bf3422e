"""How the operator commands print: rich tables for people, the API's JSON for scripts
(``--output json``: one document; a list is one JSON array of every item fetched), and progress
bars on stderr. rich is imported only when something is drawn."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

from controlplane.commands.session import json_output

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

Column = tuple[str, Callable[[Mapping[str, Any]], Any]]
"""A table column: its header, and how to get the cell from an item."""


def emit_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


def text(value: Any) -> str:
    """A cell: ``-`` for nothing, ``k=v, …`` for a mapping, ``a, b`` for a list."""
    if value is None or value == "" or value == {} or value == []:
        return "-"
    if isinstance(value, Mapping):
        if all(isinstance(v, str | int | float | bool) or v is None for v in value.values()):
            return ", ".join(f"{k}={v}" for k, v in value.items())
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return ", ".join(text(v) for v in value)
    return str(value)


def when(value: Any) -> str:
    """An API timestamp to the second, ``-`` when unset."""
    return "-" if not value else str(value).replace("T", " ")[:19]


def field(key: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda item: item.get(key)


def console() -> Console:
    """stdout; when it is not a terminal (a pipe, a file) 160 columns unless COLUMNS says otherwise."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160
    return console


def print_table(columns: Sequence[Column], items: Sequence[Mapping[str, Any]], *, title: str = "") -> None:
    from rich.table import Table

    table = Table(title=title or None, show_edge=False, header_style="bold")
    for index, (header, _) in enumerate(columns):
        table.add_column(header, overflow="fold", no_wrap=index == 0)  # ids stay whole: copy them
    for item in items:
        table.add_row(*(text(get(item)) for _, get in columns))
    console().print(table)


def print_record(document: Mapping[str, Any], keys: Sequence[str] | None = None) -> None:
    """One resource as ``key  value`` lines."""
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key in keys or list(document):
        if key in document:
            grid.add_row(key, text(document[key]))
    console().print(grid)


def print_list(
    ctx: typer.Context,
    items: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    what: str,
    more: bool = False,
) -> None:
    """A list as a table (or JSON); with ``more``, say on stderr that pages were left unfetched."""
    if json_output(ctx):
        emit_json(list(items))
    elif not items:
        typer.echo(f"no {what}", err=True)
    else:
        print_table(columns, items)
    if more:
        typer.echo(f"(more {what} on the control plane: --all lists every page)", err=True)


def show(ctx: typer.Context, document: Mapping[str, Any], keys: Sequence[str] | None = None) -> None:
    if json_output(ctx):
        emit_json(document)
    else:
        print_record(document, keys)


@contextmanager
def progress_bar() -> Iterator[Progress]:
    """Bytes, rate and time left, drawn on stderr when it is a terminal (not in logs or pipes)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    with bar:
        yield bar
