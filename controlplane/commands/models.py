"""``edgefleet models push | list | show | pull``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from controlplane.commands import output
from controlplane.commands.output import field, when
from controlplane.commands.session import PROBLEM_FOUND, USAGE, connect, fail, json_output, parse_pairs

models_app = typer.Typer(help="ONNX models: immutable, signed versions.", no_args_is_help=True)

MODEL_COLUMNS: list[output.Column] = [
    ("NAME", field("name")),
    ("VERSION", field("version")),
    ("SIZE", field("size")),
    ("SHA256", lambda m: str(m.get("sha256", ""))[:12]),
    ("LABELS", field("labels")),
    ("CREATED", lambda m: when(m.get("created_at"))),
    ("BY", field("created_by")),
]
MODEL_KEYS = ["name", "version", "sha256", "size", "labels", "description", "created_at", "created_by"]


def _local_file(path: Path) -> int:
    """The size of a file to upload; exit 2 when there is none."""
    try:
        if not path.is_file():
            fail(f"{path}: no such file", USAGE)
        return path.stat().st_size
    except OSError as exc:
        fail(f"{path}: {exc}", USAGE)


def _tensors(tensors: list[dict[str, Any]]) -> str:
    """``image float32[batch, 3, 224, 224]``"""
    return ", ".join(
        f"{t['name']} {t['dtype']}[{', '.join('?' if d is None else str(d) for d in t['shape'])}]"
        for t in tensors
    )


@models_app.command("push")
def push(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The .onnx file.")],
    name: Annotated[str, typer.Option(help="Model name (devices and workflows refer to it).")],
    version: Annotated[int | None, typer.Option(min=1, help="Version; the newest + 1 when unset.")] = None,
    description: Annotated[str, typer.Option(help="What the model is.")] = "",
    label: Annotated[list[str] | None, typer.Option("--label", help="key=value; repeatable.")] = None,
) -> None:
    """Upload a model: its sha256 is computed here first and checked by the control plane."""
    from controlplane.client import file_sha256

    labels = parse_pairs(label)
    size = _local_file(file)
    with connect(ctx) as api, output.progress_bar() as bar:
        hashing = bar.add_task("sha256", total=size)
        digest = file_sha256(file, lambda n: bar.advance(hashing, n))
        sending = bar.add_task("upload", total=size)
        model = api.upload_model(
            name,
            file,
            sha256=digest,
            version=version,
            description=description,
            labels=labels,
            progress=lambda n: bar.advance(sending, n),
        )
    if json_output(ctx):
        output.emit_json(model)
    else:
        typer.echo(
            f"pushed model '{model['name']}' v{model['version']} ({model['size']} bytes, sha256 {digest})"
        )


@models_app.command("list")
def list_models(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="Only the versions of this model.")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="Every page, not only the first.")] = False,
) -> None:
    """Model versions, by name then version."""
    with connect(ctx) as api:
        listing = api.list_models(name, all_pages=all_pages)
    output.print_list(ctx, listing.items, MODEL_COLUMNS, what="models", more=listing.next_cursor is not None)


@models_app.command("show")
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME")],
    version: Annotated[int, typer.Argument(metavar="VERSION", min=1)],
) -> None:
    """One model version, with its ONNX inputs and outputs."""
    with connect(ctx) as api:
        model = api.get_model(name, version)
    if json_output(ctx):
        output.emit_json(model)
        return
    onnx = model.get("onnx", {})
    record = {key: model.get(key) for key in MODEL_KEYS}
    record["inputs"] = _tensors(onnx.get("inputs", []))
    record["outputs"] = _tensors(onnx.get("outputs", []))
    record["opset"] = onnx.get("opset")
    record["download_url"] = model.get("download_url")
    output.print_record(record)


@models_app.command("pull")
def pull(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME")],
    version: Annotated[int, typer.Argument(metavar="VERSION", min=1)],
    out: Annotated[
        Path | None, typer.Option("--output-file", "-o", help="Where to write it (NAME-vVERSION.onnx).")
    ] = None,
) -> None:
    """Download a model version; resumes FILE.part left by an interrupted pull, checks the sha256
    against the signed manifest, then moves the file into place."""
    from controlplane.client import DownloadCorrupt

    dest = out or Path(f"{name}-v{version}.onnx")
    if not dest.parent.is_dir():
        fail(f"{dest.parent}: no such directory", USAGE)
    resumed = 0
    with connect(ctx) as api, output.progress_bar() as bar:
        task = bar.add_task("download", total=None)

        def started(have: int, total: int) -> None:
            nonlocal resumed
            resumed = have
            bar.update(task, total=total, completed=have)

        try:
            manifest = api.download_model(
                name, version, dest, progress=lambda n: bar.advance(task, n), on_start=started
            )
        except DownloadCorrupt as exc:
            fail(str(exc), PROBLEM_FOUND)
        except OSError as exc:
            fail(f"{dest}: {exc}", USAGE)
    if json_output(ctx):
        output.emit_json(manifest)
        return
    note = f", resumed at byte {resumed}" if resumed else ""
    typer.echo(
        f"pulled model '{name}' v{version} to {dest} ({manifest['size']} bytes, sha256 verified{note})"
    )
