"""``edgefleet-agent``: the device's command line.

Exit codes: 0 success; 1 the graph is invalid or the run failed; 2 bad usage or an unreadable
file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.workflow import (
    CompileError,
    CompileOptions,
    Executor,
    InvalidInput,
    Plan,
    SpecError,
    builtin_registry,
    compile_workflow,
    default_registry,
    read_document,
)
from agent.workflow.result import json_default

app = typer.Typer(
    name="edgefleet-agent",
    help="Run edgefleet workflow graphs on this device.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SchemaDirs = Annotated[
    list[Path] | None,
    typer.Option(
        "--schema-dir",
        help="Directory of JSON Schemas named by data_validation nodes (repeatable). "
        "Default: schemas/ beside the graph and beside its directory.",
    ),
]


def default_schema_dirs(graph: Path) -> tuple[Path, ...]:
    """``schemas/`` next to the graph file, then next to its directory."""
    here = graph.resolve().parent
    return tuple(d for d in (here / "schemas", here.parent / "schemas") if d.is_dir())


def _err(message: str) -> None:
    typer.echo(message, err=True)


DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Agent data directory whose models/ store serves model_inference nodes."),
]


def _resources(data_dir: Path | None) -> dict[str, Any]:
    """The model runtime (ONNX Runtime on the CPU, one request at a time) and an empty
    threshold store, for one-off runs from the command line."""
    from agent.thresholds import ThresholdStore

    resources: dict[str, Any] = {"thresholds": ThresholdStore()}
    if data_dir is not None:
        from agent.inference.backend import BackendOptions
        from agent.inference.onnxruntime_backend import OnnxRuntimeBackend
        from agent.inference.runtime import ModelRuntime
        from agent.inference.store import ModelStore

        store = ModelStore(data_dir / "models")
        resources["models"] = ModelRuntime(store, [OnnxRuntimeBackend()], BackendOptions(max_batch=1))
    return resources


def load_plan(graph: Path, schema_dirs: list[Path] | None, data_dir: Path | None = None) -> Plan:
    """Read and compile ``graph``; exits with code 2 (unreadable) or 1 (invalid)."""
    try:
        document = read_document(graph)
    except SpecError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(2) from exc
    dirs = tuple(schema_dirs) if schema_dirs else default_schema_dirs(graph)
    try:
        return compile_workflow(document, CompileOptions(schema_dirs=dirs, resources=_resources(data_dir)))
    except CompileError as exc:
        _err(f"{graph}: {exc}")
        raise typer.Exit(1) from exc


@app.command()
def validate(
    graph: Annotated[Path, typer.Argument(help="Workflow graph, JSON or YAML.")],
    schema_dir: SchemaDirs = None,
    data_dir: DataDir = None,
) -> None:
    """Check a workflow graph and report every problem at once."""
    plan = load_plan(graph, schema_dir, data_dir)
    typer.echo(f"{graph}: ok — workflow '{plan.workflow_id}' v{plan.version}, {len(plan.nodes)} nodes")


@app.command()
def run(
    graph: Annotated[Path, typer.Argument(help="Workflow graph, JSON or YAML.")],
    input: Annotated[
        str, typer.Option("--input", "-i", help="Input document (JSON or YAML file, or - for stdin).")
    ],
    schema_dir: SchemaDirs = None,
    data_dir: DataDir = None,
) -> None:
    """Run a workflow once on an input document and print the run result as JSON.

    Exits 0 when the run succeeded, 1 when it failed.
    """
    plan = load_plan(graph, schema_dir, data_dir)
    try:
        document = read_document(input)
    except SpecError as exc:
        _err(f"error: input {exc}")
        raise typer.Exit(2) from exc
    with Executor() as executor:
        try:
            result = executor.run(plan, document)
        except InvalidInput as exc:
            _err(f"error: input {input}: {exc}")
            raise typer.Exit(2) from exc
    typer.echo(json.dumps(result.to_dict(), indent=2, default=json_default, ensure_ascii=False))
    raise typer.Exit(0 if result.ok else 1)


@app.command()
def nodes(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the node reference as Markdown (docs/nodes.md).")
    ] = False,
) -> None:
    """List the installed node types with their config JSON Schema."""
    if markdown:
        from agent.workflow.reference import node_reference

        typer.echo(node_reference(builtin_registry()), nl=False)
        return
    registry = default_registry()
    entries: list[dict[str, Any]] = []
    for name in registry:
        cls = registry.get(name)
        assert cls is not None
        entries.append(
            {
                "type": name,
                "summary": cls.summary,
                "origin": registry.origin(name),
                "config_schema": cls.config_model.model_json_schema(by_alias=True),
            }
        )
    if as_json:
        typer.echo(json.dumps({"nodes": entries, "load_errors": registry.load_errors}, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table("type", "summary", "config fields", "origin")
        for entry in entries:
            fields = ", ".join(entry["config_schema"].get("properties", {}))
            table.add_row(entry["type"], entry["summary"], fields, entry["origin"])
        Console().print(table)
    for line in registry.load_errors:
        _err(f"warning: {line}")


@app.command()
def profile(
    name: Annotated[
        str | None, typer.Option("--profile", help="Use this profile instead of detecting one.")
    ] = None,
    profiles_dir: Annotated[
        Path | None,
        typer.Option("--profiles-dir", help="Directory of profile YAML files. Default: device_profiles/."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Show this device's profile, why it was chosen, and its inference defaults.

    Exits 2 when the profiles directory is invalid or --profile names no profile.
    """
    from agent.profiles import DeviceFacts, ProfileError, bundled_profiles_dir, load_profiles, select_profile
    from agent.profiles.report import render_json, render_text

    try:
        profiles = load_profiles(bundled_profiles_dir(profiles_dir))
        detection = select_profile(profiles, DeviceFacts.probe(), name)
    except ProfileError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(render_json(detection), indent=2, ensure_ascii=False))
    else:
        typer.echo(render_text(detection))


@app.command("install-service")
def install_service(
    name: Annotated[
        str | None,
        typer.Option("--profile", help="Device profile whose limits the unit takes; default: detect."),
    ] = None,
    profiles_dir: Annotated[
        Path | None,
        typer.Option("--profiles-dir", help="Directory of profile YAML files. Default: device_profiles/."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Where to write the unit; default /etc/systemd/system/."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the unit; write nothing.")] = False,
    config: Annotated[Path, typer.Option("--config", help="The agent config the service runs with.")] = Path(
        "/etc/edgefleet/agent.yaml"
    ),
    exec_path: Annotated[
        Path | None,
        typer.Option("--exec", help="The edgefleet-agent executable. Default: this installation's."),
    ] = None,
    user: Annotated[
        str, typer.Option("--user", help="The unprivileged user the service runs as.")
    ] = "edgefleet",
    groups: Annotated[
        str, typer.Option("--groups", help="Supplementary groups, comma-separated (cameras, GPU).")
    ] = "video,render",
    watchdog_sec: Annotated[
        int, typer.Option("--watchdog-sec", min=1, help="WatchdogSec=: restart after this long unhealthy.")
    ] = 30,
) -> None:
    """Render the agent's systemd unit from the device profile and install it.

    Writes only the unit file (atomically, mode 0644) and creates nothing else: no user, no
    directory, no reload. It then prints what is left to do (docs/service.md). Exits 2 when the
    profile is unknown, an option is invalid or the target directory is missing; 1 when the file
    cannot be written."""
    import grp
    import os
    import pwd

    from agent.fsutil import atomic_write
    from agent.profiles import DeviceFacts, ProfileError, bundled_profiles_dir, load_profiles, select_profile
    from agent.service.unit import DEFAULT_UNIT_DIR, UNIT_NAME, UnitOptions, default_exec_path, render_unit

    try:
        profiles = load_profiles(bundled_profiles_dir(profiles_dir))
        profile = select_profile(profiles, DeviceFacts.probe(), name).profile
    except ProfileError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(2) from exc
    options = UnitOptions(
        exec_path=(exec_path or default_exec_path()).absolute(),
        config=config.absolute(),
        user=user,
        group=user,
        supplementary_groups=tuple(g.strip() for g in groups.split(",") if g.strip()),
        watchdog_sec=watchdog_sec,
    )
    try:
        text = render_unit(profile, options)
    except ValueError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(2) from exc
    warnings: list[str] = []
    if not options.exec_path.is_file():
        warnings.append(f"{options.exec_path} does not exist here; pass --exec with the agent's path")
    if options.exec_path.is_relative_to("/home") or options.exec_path.is_relative_to("/root"):
        warnings.append(
            f"{options.exec_path} is under a home directory, which ProtectHome=yes hides from the service: "
            "install edgefleet under /opt or /usr/local, or pass --exec"
        )
    for group in options.supplementary_groups:
        try:
            grp.getgrnam(group)
        except KeyError:
            warnings.append(
                f"group '{group}' does not exist on this machine: the service would not start "
                "(status 216/GROUP); pass --groups without it"
            )
    if dry_run:
        typer.echo(text, nl=False)
        for line in warnings:
            _err(f"warning: {line}")
        return
    target = output or DEFAULT_UNIT_DIR / UNIT_NAME
    if not target.parent.is_dir():
        _err(f"error: {target.parent} is not a directory (install-service creates only the unit file)")
        raise typer.Exit(2)
    try:
        atomic_write(target, text.encode())
        os.chmod(target, 0o644)
    except OSError as exc:
        _err(f"error: cannot write {target}: {exc.strerror or exc}")
        raise typer.Exit(1) from exc
    for line in warnings:
        _err(f"warning: {line}")
    limits = profile.service
    typer.echo(
        f"wrote {target} for profile {profile.name} (MemoryMax={limits.memory_max_mb}M, "
        f"CPUQuota={limits.cpu_quota_percent}%, WatchdogSec={watchdog_sec})"
    )
    steps = []
    try:
        pwd.getpwnam(user)
    except KeyError:
        steps.append(
            f"useradd --system --user-group --home-dir /var/lib/edgefleet --no-create-home "
            f"--shell /usr/sbin/nologin --groups {','.join(options.supplementary_groups)} {user}"
        )
    if not options.config.exists():
        steps.append(f"write {options.config} (docs/agent.md)")
    steps += ["systemctl daemon-reload", "systemctl enable --now edgefleet-agent"]
    if output is not None and target.resolve() != (DEFAULT_UNIT_DIR / UNIT_NAME).resolve():
        steps.insert(0, f"copy {target} to {DEFAULT_UNIT_DIR / UNIT_NAME} on the device")
    typer.echo("next, as root:\n" + "\n".join(f"  {step}" for step in steps))


@app.command()
def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="Agent config (YAML).")] = Path(
        "/etc/edgefleet/agent.yaml"
    ),
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the agent: frame sources feed the configured workflows until SIGTERM, then in-flight
    runs drain. Prints a summary per workflow (JSON) on exit."""
    import logging

    from pydantic import ValidationError

    from agent.config import DEFAULT_CONFIG, load_settings
    from agent.daemon import Agent
    from agent.inference.errors import InferenceError
    from agent.profiles import ProfileError

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # no file at the default place: the settings come from the environment alone
        settings = load_settings(None if config == DEFAULT_CONFIG and not config.exists() else config)
    except SpecError as exc:
        _err(f"error: config {exc}")
        raise typer.Exit(2) from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        _err(f"error: config {config}: {problems}")
        raise typer.Exit(2) from exc
    try:
        summary = Agent(settings).serve()
    except CompileError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(1) from exc
    except (ProfileError, InferenceError, SpecError) as exc:
        _err(f"error: {exc}")
        raise typer.Exit(2) from exc
    typer.echo(json.dumps({"device_id": settings.device_id, "workflows": summary}, indent=2))


@app.command()
def enroll(
    url: Annotated[str, typer.Option("--url", help="The control plane, e.g. https://fleet.example.com.")],
    token: Annotated[str, typer.Option("--token", help="Single-use enrollment token from the operator.")],
    device_id: Annotated[
        str | None,
        typer.Option("--device-id", help="This device's id; the control plane picks one when unset."),
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", help="key=value label for the device (repeatable).")
    ] = None,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Agent data directory; credentials.json is written there.")
    ] = Path("/var/lib/edgefleet"),
    force: Annotated[bool, typer.Option("--force", help="Replace existing credentials.")] = False,
    client_cert: Annotated[
        bool,
        typer.Option(
            "--client-cert/--no-client-cert",
            help="Make a key pair here and have the control plane sign it, for mutual TLS to the broker.",
        ),
    ] = True,
) -> None:
    """Enroll this device with a control plane and store its credentials (mode 0600).

    With ``--client-cert`` (the default) the device's MQTT key pair is made here, never leaves the
    device, and its CSR is signed by the fleet's CA at enrollment (files under ``<data dir>/mqtt/``).

    Prints the device id. Exits 1 when the control plane refuses or cannot be reached, 2 on bad
    usage or when the device is already enrolled (use --force to enroll again)."""
    import os
    import socket

    import httpx

    from agent.fsutil import atomic_write
    from agent.manifest import ManifestError, load_public_key

    labels: dict[str, str] = {}
    for item in label or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _err(f"error: --label {item!r} is not key=value")
            raise typer.Exit(2)
        labels[key] = value
    path = data_dir / "credentials.json"
    if path.exists() and not force:
        _err(f"error: {path} exists: this device is already enrolled (pass --force to enroll again)")
        raise typer.Exit(2)
    body: dict[str, Any] = {"token": token, "labels": labels, "hostname": socket.gethostname()[:255]}
    if device_id is not None:
        body["device_id"] = device_id
    key_pem = None
    if client_cert:
        from agent.sync.csr import make_key_and_csr

        key_pem, csr_pem = make_key_and_csr(device_id or "edgefleet-device")
        body["csr"] = csr_pem.decode()
    endpoint = url.rstrip("/") + "/api/v1/enroll"
    try:
        with httpx.Client(timeout=30.0) as client:
            response = client.post(endpoint, json=body)
    except httpx.HTTPError as exc:
        _err(f"error: cannot reach the control plane at {endpoint}: {exc}")
        raise typer.Exit(1) from exc
    if response.status_code != 201:
        try:
            detail = response.json().get("detail") or response.text
        except ValueError:
            detail = response.text
        _err(f"error: enrollment refused (HTTP {response.status_code}): {str(detail).strip()[:500]}")
        raise typer.Exit(1)
    try:
        data = response.json()
        credentials: dict[str, Any] = {
            "device_id": str(data["device_id"]),
            "credential": str(data["credential"]),
            "signing_public_key": str(data["signing_public_key"]),
            "signing_key_id": data.get("signing_key_id"),
            "api_url": str(data.get("api_url") or url.rstrip("/")),
        }
        load_public_key(credentials["signing_public_key"])
    except (ValueError, KeyError, TypeError, AttributeError, ManifestError) as exc:
        _err(f"error: the control plane's enrollment answer is unusable: {exc}")
        raise typer.Exit(1) from exc
    if isinstance(data.get("mqtt"), dict):
        credentials["mqtt"] = dict(data["mqtt"])
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        mqtt = credentials.get("mqtt") or {}
        if key_pem is not None and mqtt.get("client_certificate"):
            tls_dir = data_dir / "mqtt"
            tls_dir.mkdir(mode=0o700, exist_ok=True)
            for name, content in (
                ("client.key", key_pem),
                ("client.crt", mqtt.pop("client_certificate").encode()),
                ("ca.crt", (mqtt.pop("ca_certificate", None) or "").encode()),
            ):
                atomic_write(tls_dir / name, content)
                os.chmod(tls_dir / name, 0o600 if name.endswith(".key") else 0o644)
            mqtt.update(
                key_file=str(tls_dir / "client.key"),
                cert_file=str(tls_dir / "client.crt"),
                ca_file=str(tls_dir / "ca.crt"),
            )
        # atomic_write's temporary file is created with mode 0600 and renamed into place
        atomic_write(path, (json.dumps(credentials, indent=2) + "\n").encode())
        os.chmod(path, 0o600)
    except OSError as exc:
        _err(f"error: cannot write {path}: {exc}")
        raise typer.Exit(1) from exc
    typer.echo(credentials["device_id"])


model_app = typer.Typer(help="The device's model store.", no_args_is_help=True)
app.add_typer(model_app, name="model")

StoreDir = Annotated[
    Path, typer.Option("--data-dir", help="Agent data directory (the store is its models/ folder).")
]


@model_app.command("install")
def model_install(
    file: Annotated[Path, typer.Argument(help="ONNX model file.")],
    model_id: Annotated[str, typer.Option("--id", help="Model name, e.g. surface_inspection.")],
    version: Annotated[str, typer.Option("--version", help="Model version, e.g. 1 or 2.1.0.")],
    data_dir: StoreDir = Path("/var/lib/edgefleet"),
) -> None:
    """Verify and install an ONNX model into the store (atomic; versions are immutable)."""
    from agent.inference.errors import InferenceError
    from agent.inference.store import ModelStore

    try:
        record = ModelStore(data_dir / "models").install(file, model_id, version)
    except FileNotFoundError as exc:
        _err(f"error: {file}: file not found")
        raise typer.Exit(2) from exc
    except InferenceError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(1) from exc
    typer.echo(json.dumps(record.to_dict(), indent=2))


@model_app.command("list")
def model_list(data_dir: StoreDir = Path("/var/lib/edgefleet")) -> None:
    """List installed models and versions."""
    from agent.inference.store import ModelStore

    for record in ModelStore(data_dir / "models"):
        typer.echo(f"{record.model_id}\t{record.version}\t{record.sha256[:12]}\t{record.size} bytes")


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write frames, masks and labels.csv to.")],
    count: Annotated[int, typer.Option(help="Frames to write.")] = 100,
    seed: Annotated[int, typer.Option(help="Generator seed (same seed, same frames).")] = 0,
    defect_rate: Annotated[float, typer.Option(help="Share of defective parts.")] = 0.5,
) -> None:
    """Write synthetic inspection frames (textured parts with labelled defects) to a folder."""
    from agent.sources.synthetic import write_dataset

    write_dataset(out, count, seed=seed, defect_rate=defect_rate)
    typer.echo(f"{count} frames in {out} (labels.csv lists defect, material, defective)")


def _labelled(directory: Path) -> tuple[list[Path], list[bool]]:
    """Images of a labelled folder: ``labels.csv`` with columns ``file`` and ``defective``."""
    import csv

    with (directory / "labels.csv").open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    return [directory / row["file"] for row in rows], [
        row["defective"].lower() in ("1", "true") for row in rows
    ]


@model_app.command("quantize")
def model_quantize(
    model: Annotated[Path, typer.Argument(help="FP32 ONNX model.")],
    calibration: Annotated[Path, typer.Option("--calibration", help="Folder of sample images.")],
    output: Annotated[Path | None, typer.Option(help="Where to write it (default: MODEL.int8.onnx).")] = None,
    evaluate: Annotated[
        Path | None,
        typer.Option("--eval", help="Labelled folder (labels.csv: file, defective) for accuracy."),
    ] = None,
    roi: Annotated[str | None, typer.Option(help="Crop x,y,w,h before resizing, e.g. 280,0,720,720.")] = None,
    size: Annotated[int, typer.Option(help="Model input size (square).")] = 224,
    limit: Annotated[int, typer.Option(help="Calibration images to use at most.")] = 256,
    score_output: Annotated[str, typer.Option(help="Model output holding the image score.")] = "score",
    fp16: Annotated[bool, typer.Option("--fp16", help="Also write an FP16 model for GPU targets.")] = False,
) -> None:
    """Write an INT8 (static, QDQ, per-channel) model and compare it with the FP32 one."""
    from agent.inference.quantize import (
        Preprocess,
        auroc,
        convert_fp16,
        image_files,
        measure_speed,
        quantize_int8,
        scores,
    )

    box = tuple(int(v) for v in roi.split(",")) if roi else None
    if box is not None and len(box) != 4:
        _err("error: --roi takes x,y,w,h")
        raise typer.Exit(2)
    preprocess = Preprocess(size=(size, size), roi=box)
    files = image_files(calibration, limit)
    if not files:
        _err(f"error: no images under {calibration}")
        raise typer.Exit(2)
    output = output or model.with_suffix(".int8.onnx")
    quantize_int8(model, output, (preprocess(path) for path in files))
    sample = preprocess(files[0])
    report: dict[str, Any] = {
        "fp32": {"file": str(model), "bytes": model.stat().st_size},
        "int8": {"file": str(output), "bytes": output.stat().st_size},
    }
    for name, path in (("fp32", model), ("int8", output)):
        for batch in (1, 8):
            speed = measure_speed(path, sample, batch=batch)
            report[name][f"batch{batch}"] = {
                "median_ms": round(speed.median_ms, 2),
                "p99_ms": round(speed.p99_ms, 2),
                "images_per_s": round(speed.images_per_s, 1),
            }
    report["int8"]["size_ratio"] = round(output.stat().st_size / model.stat().st_size, 3)
    report["int8"]["speedup_batch8"] = round(
        report["int8"]["batch8"]["images_per_s"] / report["fp32"]["batch8"]["images_per_s"], 2
    )
    if evaluate is not None:
        paths, truth = _labelled(evaluate)
        tensors = [preprocess(path) for path in paths]
        for name, path in (("fp32", model), ("int8", output)):
            report[name]["auroc"] = round(auroc(scores(path, tensors, score_output), truth), 4)
    if fp16:
        report["fp16"] = {"file": str(convert_fp16(model, model.with_suffix(".fp16.onnx")))}
    typer.echo(json.dumps(report, indent=2))


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
