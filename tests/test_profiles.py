"""Device profiles: the bundled files, their schema, detection, bad files, probing, the CLI."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

import agent.profiles
from agent.cli import app
from agent.profiles import (
    DeviceFacts,
    Profile,
    ProfileError,
    ProfileLoadError,
    UnknownProfile,
    bundled_profiles_dir,
    detect,
    load_profile,
    load_profiles,
    select_profile,
)
from agent.profiles.detect import contains_words
from agent.profiles.report import render_text
from agent.profiles.schema import SCHEMA_FILE, render_schema
from tests.conftest import REPO

PROFILES_DIR = REPO / "device_profiles"
runner = CliRunner()


@pytest.fixture(scope="module")
def profiles() -> dict[str, Profile]:
    return load_profiles(PROFILES_DIR)


def facts(
    arch: str = "x86_64",
    *,
    model: str | None = None,
    gpus: tuple[str, ...] = (),
    memory_gb: float = 15.5,
    cpu_cores: int = 8,
) -> DeviceFacts:
    return DeviceFacts(arch, cpu_cores, memory_gb, device_tree_model=model, gpu_names=gpus)


# --- the bundled profiles ----------------------------------------------------------------------


def test_bundled_directory_is_found_and_every_profile_validates(profiles: dict[str, Profile]) -> None:
    assert bundled_profiles_dir() == PROFILES_DIR
    assert bundled_profiles_dir(Path("/elsewhere")) == Path("/elsewhere")
    required = {
        "jetson-orin-nano-8gb",
        "jetson-orin-nx-16gb",
        "jetson-agx-orin-64gb",
        "jetson-xavier-nx",
        "x86-cpu",
        "x86-t4",
        "x86-l4",
        "x86-nvidia-gpu",
    }
    assert required <= set(profiles)
    for name, profile in profiles.items():
        assert profile.source == PROFILES_DIR / f"{name}.yaml", "file name = profile name"
    priorities = [p.detect.priority for p in profiles.values()]
    assert priorities == sorted(priorities, reverse=True), "highest priority first"


@pytest.mark.parametrize(
    ("name", "arch", "compute", "dla", "shared"),
    [
        ("jetson-orin-nano-8gb", "aarch64", "8.7", 0, True),
        ("jetson-orin-nx-16gb", "aarch64", "8.7", 2, True),
        ("jetson-agx-orin-64gb", "aarch64", "8.7", 2, True),
        ("jetson-xavier-nx", "aarch64", "7.2", 2, True),
        ("x86-t4", "x86_64", "7.5", 0, False),
        ("x86-l4", "x86_64", "8.9", 0, False),
        ("x86-nvidia-gpu", "x86_64", "7.5", 0, False),
    ],
)
def test_gpu_profiles_carry_the_real_hardware_and_prefer_tensorrt(
    profiles: dict[str, Profile], name: str, arch: str, compute: str, dla: int, shared: bool
) -> None:
    profile = profiles[name]
    assert profile.hardware.arch == arch
    assert profile.hardware.gpu is not None
    assert profile.hardware.gpu.compute_capability == compute
    assert profile.hardware.gpu.shared_memory is shared
    assert profile.hardware.dla_cores == dla
    assert profile.inference.backends == ["tensorrt", "onnxruntime-cuda", "onnxruntime-cpu"]
    assert profile.inference.precision in {"fp16", "int8"}


def test_cpu_profile_is_the_fallback_with_onnxruntime_on_cpu(profiles: dict[str, Profile]) -> None:
    cpu = profiles["x86-cpu"]
    assert cpu.detect.fallback
    assert [p.name for p in profiles.values() if p.detect.fallback] == ["x86-cpu"]
    assert cpu.hardware.gpu is None
    assert cpu.inference.backends == ["onnxruntime-cpu"]
    # batching measured slower than concurrent single requests on 2 cores (docs/benchmarks.md)
    assert (cpu.inference.precision, cpu.inference.max_batch_size, cpu.inference.max_wait_ms) == (
        "fp32",
        1,
        0,
    )


def test_schema_file_is_current() -> None:
    on_disk = (PROFILES_DIR / SCHEMA_FILE).read_text(encoding="utf-8")
    assert on_disk == render_schema(), "regenerate it: .venv/bin/python -m agent.profiles.schema"


def test_bundled_profiles_pass_the_json_schema_and_it_rejects_unknown_fields() -> None:
    schema = json.loads((PROFILES_DIR / SCHEMA_FILE).read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted(PROFILES_DIR.glob("*.yaml")):
        validator.validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    document = yaml.safe_load((PROFILES_DIR / "x86-cpu.yaml").read_text(encoding="utf-8"))
    document["inference"]["colour"] = "red"
    assert not validator.is_valid(document)


# --- detection -----------------------------------------------------------------------------------

JETSONS = [
    ("NVIDIA Jetson Orin Nano Developer Kit", 7.4, "jetson-orin-nano-8gb"),
    ("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", 7.4, "jetson-orin-nano-8gb"),
    ("NVIDIA Jetson Orin Nano Developer Kit", 3.4, "jetson-orin-nano-4gb"),
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", 15.3, "jetson-orin-nx-16gb"),
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", 7.3, "jetson-orin-nx-8gb"),
    ("NVIDIA Jetson AGX Orin", 61.4, "jetson-agx-orin-64gb"),
    ("Jetson AGX Orin Developer Kit", 61.4, "jetson-agx-orin-64gb"),
    ("NVIDIA Jetson AGX Orin", 30.6, "jetson-agx-orin-32gb"),
    ("NVIDIA Jetson Xavier NX Developer Kit", 7.6, "jetson-xavier-nx"),
]


@pytest.mark.parametrize(("model", "memory_gb", "expected"), JETSONS)
def test_each_jetson_is_detected_from_its_device_tree_model(
    profiles: dict[str, Profile], model: str, memory_gb: float, expected: str
) -> None:
    # Jetsons with JetPack 6 have nvidia-smi too; the device tree decides.
    detection = detect(profiles, facts("aarch64", model=model, gpus=("Orin (nvgpu)",), memory_gb=memory_gb))
    assert detection.profile.name == expected
    assert detection.how == "matched"
    assert detection.reasons[0] == f"detected '{expected}': the highest-priority profile whose rule matched"
    chosen = next(r for r in detection.reasons if r.startswith(f"{expected} "))
    assert f"device-tree model '{model}' contains" in chosen


def test_detection_reasons_explain_every_rejection(profiles: dict[str, Profile]) -> None:
    detection = detect(
        profiles, facts("aarch64", model="NVIDIA Jetson Orin Nano Developer Kit", memory_gb=7.4)
    )
    text = "\n".join(detection.reasons)
    assert "jetson-orin-nx-16gb (priority 140): rejected: device-tree model" in text
    assert "lacks 'Orin NX'" in text
    assert (
        "jetson-orin-nano-4gb (priority 110): also matched, lower priority than jetson-orin-nano-8gb" in text
    )
    assert "x86-t4 (priority 50): rejected: no GPU matches 'T4' (GPUs: none)" in text
    assert "x86-cpu (priority 0): rejected: arch aarch64 is not x86_64" in text


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [
        (("Tesla T4",), "x86-t4"),
        (("NVIDIA L4",), "x86-l4"),
        (("NVIDIA A2", "Tesla T4"), "x86-t4"),
        (("Tesla T4", "NVIDIA L4"), "x86-l4"),
        (("NVIDIA L40S",), "x86-nvidia-gpu"),
        (("NVIDIA H100 80GB HBM3",), "x86-nvidia-gpu"),
        (("NVIDIA H200",), "x86-nvidia-gpu"),
        (("Tesla V100-SXM2-16GB",), "x86-cpu"),  # pre-Turing: neither named nor branded NVIDIA
        ((), "x86-cpu"),
    ],
)
def test_x86_gpus_are_detected_from_nvidia_smi_names(
    profiles: dict[str, Profile], gpus: tuple[str, ...], expected: str
) -> None:
    detection = detect(profiles, facts(gpus=gpus))
    assert detection.profile.name == expected
    rule = profiles[expected].detect.gpu_name
    if rule is not None:
        assert any(f"matches '{rule}'" in r for r in detection.reasons)


def test_an_unknown_device_falls_back_to_the_cpu_profile(profiles: dict[str, Profile]) -> None:
    detection = detect(profiles, facts("aarch64", model="Raspberry Pi 4 Model B Rev 1.4", memory_gb=3.7))
    assert detection.profile.name == "x86-cpu"
    assert detection.how == "fallback"
    assert detection.reasons[0] == "fell back to 'x86-cpu': no profile's rule matched this device"


def test_text_rules_match_whole_words_case_insensitively() -> None:
    assert contains_words("NVIDIA L4", "L4")
    assert contains_words("nvidia jetson orin nano developer kit", "Orin Nano")
    assert not contains_words("NVIDIA L40S", "L4")
    assert not contains_words("NVIDIA Jetson Orin NXT", "Orin NX")


def test_an_explicit_profile_wins_over_detection(profiles: dict[str, Profile]) -> None:
    jetson = facts("aarch64", model="NVIDIA Jetson AGX Orin", memory_gb=61.4)
    detection = select_profile(profiles, jetson, "x86-t4")
    assert detection.profile.name == "x86-t4"
    assert detection.how == "explicit"
    assert detection.reasons[:2] == [
        "chosen explicitly: 'x86-t4'",
        "detection would pick 'jetson-agx-orin-64gb'",
    ]
    assert "warning: the profile is for x86_64; this device is aarch64" in detection.reasons
    assert "warning: the profile expects a Tesla T4; no NVIDIA GPU was found" in detection.reasons
    assert select_profile(profiles, jetson, None).profile.name == "jetson-agx-orin-64gb"


def test_an_unknown_explicit_name_lists_the_known_ones(profiles: dict[str, Profile]) -> None:
    with pytest.raises(UnknownProfile) as caught:
        select_profile(profiles, facts(), "jetson-nano")
    message = str(caught.value)
    assert message.startswith("unknown profile 'jetson-nano'; known profiles: jetson-agx-orin-32gb, ")
    assert "x86-cpu" in message
    assert isinstance(caught.value, ProfileError)


def test_a_hand_built_set_without_fallback_fails_clearly(profiles: dict[str, Profile]) -> None:
    only_t4 = {"x86-t4": profiles["x86-t4"]}
    with pytest.raises(ProfileError, match=r"no profile matches this device .* none is the fallback"):
        detect(only_t4, facts())


# --- bad profile files ---------------------------------------------------------------------------


def cpu_document(**changes: Any) -> dict[str, Any]:
    """The bundled CPU profile as a dict, with ``section.field`` changes (None deletes)."""
    document: dict[str, Any] = yaml.safe_load((PROFILES_DIR / "x86-cpu.yaml").read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = document
        for part in parents:
            target = target[part]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return document


def write(directory: Path, name: str, document: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False))
    return path


def load_errors(directory: Path) -> list[str]:
    with pytest.raises(ProfileLoadError) as caught:
        load_profiles(directory)
    return [str(problem) for problem in caught.value.problems]


def test_malformed_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "ok.yaml", cpu_document())
    bad = write(tmp_path, "bad.yaml", "name: x86-broken\nhardware:\n  arch: [x86_64\n  cpu_cores: 4\n")
    [error] = load_errors(tmp_path)
    assert error.startswith(f"{bad}:4: invalid YAML:")


def test_a_wrong_field_is_named_with_its_path_and_line(tmp_path: Path) -> None:
    document = cpu_document(inference__colour="red")
    document["inference"]["backends"] = ["onnxruntime-cpu", "onnxruntime-cpu"]
    document["inference"]["precision"] = "fp8"
    bad = write(tmp_path, "x86-cpu.yaml", document)
    errors = load_errors(tmp_path)
    text = yaml.safe_dump(document, sort_keys=False).splitlines()
    line_of = {
        key: text.index(line) + 1
        for key in ("backends", "precision", "colour")
        for line in text
        if line.strip().startswith(f"{key}:")
    }
    assert (
        f"{bad}:{line_of['backends']}: inference.backends: backends must be unique; repeated: onnxruntime-cpu"
        in errors
    )
    assert any(
        e.startswith(f"{bad}:{line_of['precision']}: inference.precision: Input should be") for e in errors
    )
    assert f"{bad}:{line_of['colour']}: inference.colour: Extra inputs are not permitted" in errors


def test_a_missing_field_and_a_bad_list_item_are_named(tmp_path: Path) -> None:
    document = cpu_document(service__tasks_max=None, inference__backends=["onnxruntime-cpu", "openvino"])
    bad = write(tmp_path, "x86-cpu.yaml", document)
    errors = load_errors(tmp_path)
    assert any(
        e.startswith(f"{bad}:") and "service.tasks_max: required field is missing" in e for e in errors
    )
    assert any("inference.backends[1]: Input should be 'tensorrt'" in e for e in errors)


def test_use_dla_without_dla_cores_names_the_file_and_field(tmp_path: Path) -> None:
    document = yaml.safe_load((PROFILES_DIR / "jetson-orin-nano-8gb.yaml").read_text(encoding="utf-8"))
    document["inference"].update(use_dla=True, dla_core=0)
    write(tmp_path, "x86-cpu.yaml", cpu_document())
    bad = write(tmp_path, "jetson-orin-nano-8gb.yaml", document)
    [error] = load_errors(tmp_path)
    assert error.startswith(f"{bad}:")
    assert error.endswith("inference.use_dla: use_dla needs DLA cores; hardware.dla_cores is 0")


def test_limits_that_do_not_fit_the_hardware_are_refused(tmp_path: Path) -> None:
    document = cpu_document(service__memory_max_mb=99999, service__cpu_quota_percent=800)
    document["inference"]["backends"] = ["onnxruntime-cuda"]
    write(tmp_path, "x86-cpu.yaml", document)
    errors = "\n".join(load_errors(tmp_path))
    assert "service.memory_max_mb: exceeds hardware.memory_gb (8.0 GiB)" in errors
    assert "service.cpu_quota_percent: exceeds 4 cores (400%)" in errors
    assert "inference.backends: onnxruntime-cuda need a GPU; hardware.gpu is null" in errors


def test_duplicate_names_priorities_and_keys_are_refused(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", cpu_document())
    second = write(tmp_path, "b.yaml", cpu_document(detect__fallback=False))
    errors = load_errors(tmp_path)
    assert f"{second}:1: name: duplicate profile name 'x86-cpu', also defined in {first}" in errors
    assert any(
        e.startswith(f"{second}:") and "detect.priority: priority 0 is also used by 'x86-cpu'" in e
        for e in errors
    )

    other = tmp_path / "keys"
    write(other, "x86-cpu.yaml", cpu_document())
    twice = write(other, "twice.yaml", "name: one\nname: two\n")
    [error] = load_errors(other)
    assert error.startswith(f"{twice}:2: invalid YAML:")
    assert "duplicate key 'name'" in error


def test_a_directory_needs_exactly_one_fallback(tmp_path: Path) -> None:
    write(tmp_path, "t4.yaml", (PROFILES_DIR / "x86-t4.yaml").read_text(encoding="utf-8"))
    assert load_errors(tmp_path) == [f"{tmp_path}: no profile has detect.fallback: true; exactly one must"]
    write(tmp_path, "cpu.yaml", cpu_document())
    write(tmp_path, "cpu2.yaml", cpu_document(name="x86-cpu-2", detect__priority=1))
    [error] = load_errors(tmp_path)
    assert error.startswith(f"{tmp_path / 'cpu2.yaml'}: detect.fallback: a second fallback profile")


def test_every_bad_file_is_reported_at_once(tmp_path: Path) -> None:
    write(tmp_path, "x86-cpu.yaml", cpu_document())
    write(tmp_path, "empty.yaml", "")
    write(tmp_path, "list.yml", "- a\n- b\n")
    write(tmp_path, "notes.txt", "not a profile")
    errors = load_errors(tmp_path)
    assert errors == [
        f"{tmp_path / 'empty.yaml'}: a profile is a mapping of fields, got an empty file",
        f"{tmp_path / 'list.yml'}: a profile is a mapping of fields, got list",
    ]
    assert load_errors(tmp_path / "missing") == [f"{tmp_path / 'missing'}: not a directory"]
    (tmp_path / "none").mkdir()
    assert load_errors(tmp_path / "none") == [f"{tmp_path / 'none'}: no profile files (*.yaml)"]


def test_load_profile_reads_one_file() -> None:
    assert load_profile(PROFILES_DIR / "x86-l4.yaml").hardware.gpu is not None


# --- probing -------------------------------------------------------------------------------------


def fake_root(tmp_path: Path, model: bytes | None, cores: int = 6, mem_kb: int = 7_620_000) -> Path:
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    if model is not None:
        (root / "proc" / "device-tree").mkdir()
        (root / "proc" / "device-tree" / "model").write_bytes(model)
    cpuinfo = "".join(f"processor\t: {i}\nBogoMIPS\t: 62.50\n\n" for i in range(cores))
    (root / "proc" / "cpuinfo").write_text(cpuinfo)
    (root / "proc" / "meminfo").write_text(f"MemTotal:        {mem_kb} kB\nMemFree:  1000 kB\n")
    return root


def fake_nvidia_smi(tmp_path: Path, script: str) -> str:
    path = tmp_path / "nvidia-smi"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_probe_reads_a_jetson_from_a_fake_root(tmp_path: Path, profiles: dict[str, Profile]) -> None:
    root = fake_root(tmp_path, b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    probed = DeviceFacts.probe(root, arch="aarch64", nvidia_smi=None)
    assert probed == DeviceFacts(
        "aarch64", 6, pytest.approx(7.267, abs=0.01), "NVIDIA Jetson Orin Nano Developer Kit"
    )
    assert detect(profiles, probed).profile.name == "jetson-orin-nano-8gb"


def test_probe_without_device_tree_or_cpuinfo_uses_the_os(tmp_path: Path) -> None:
    root = tmp_path / "bare"
    root.mkdir()
    probed = DeviceFacts.probe(root, arch="AMD64", nvidia_smi=None)
    assert probed.arch == "x86_64"
    assert probed.device_tree_model is None
    assert probed.cpu_cores == (os.cpu_count() or 1)
    assert probed.memory_gb > 0  # psutil


def test_probe_reads_gpu_names_from_nvidia_smi(tmp_path: Path, profiles: dict[str, Profile]) -> None:
    smi = fake_nvidia_smi(tmp_path, 'echo "Tesla T4"; echo "Tesla T4"')
    probed = DeviceFacts.probe(fake_root(tmp_path, None, cores=8), arch="x86_64", nvidia_smi=smi)
    assert probed.gpu_names == ("Tesla T4", "Tesla T4")
    assert detect(profiles, probed).profile.name == "x86-t4"


@pytest.mark.parametrize(
    ("script", "note"),
    [
        (
            "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver'; exit 9",
            "failed (exit 9): NVIDIA-SMI has failed",
        ),
        ("sleep 10", "did not answer within 0.3 s"),
    ],
)
def test_a_failing_or_hanging_nvidia_smi_means_no_gpu(tmp_path: Path, script: str, note: str) -> None:
    smi = fake_nvidia_smi(tmp_path, script)
    probed = DeviceFacts.probe(fake_root(tmp_path, None), nvidia_smi=smi, timeout_s=0.3)
    assert probed.gpu_names == ()
    assert any(note in n for n in probed.notes), probed.notes


def test_a_missing_nvidia_smi_means_no_gpu(tmp_path: Path) -> None:
    probed = DeviceFacts.probe(fake_root(tmp_path, None), nvidia_smi=str(tmp_path / "no-such-smi"))
    assert probed.gpu_names == ()
    assert probed.notes == (f"{tmp_path / 'no-such-smi'} not found: no NVIDIA GPU driver",)


# --- the command line ----------------------------------------------------------------------------


def test_cli_prints_the_profile_detected_on_this_machine(profiles: dict[str, Profile]) -> None:
    here = DeviceFacts.probe()
    expected = detect(profiles, here).profile.name
    if here.arch == "x86_64" and not here.gpu_names:
        assert expected == "x86-cpu"
    result = runner.invoke(app, ["profile"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"profile: {expected} — ")
    assert f"detected '{expected}'" in result.output or f"fell back to '{expected}'" in result.output
    assert f"backends:       {', '.join(profiles[expected].inference.backends)}" in result.output
    assert "service limits: MemoryMax=" in result.output


def test_cli_json_and_an_explicit_profile() -> None:
    result = runner.invoke(app, ["profile", "--profile", "jetson-xavier-nx", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["profile"] == "jetson-xavier-nx"
    assert document["how"] == "explicit"
    assert document["settings"]["inference"]["backends"][0] == "tensorrt"
    assert document["settings"]["hardware"]["gpu"]["compute_capability"] == "7.2"
    assert document["source"] == str(PROFILES_DIR / "jetson-xavier-nx.yaml")


def test_cli_exits_2_on_an_unknown_name_or_a_bad_directory(tmp_path: Path) -> None:
    result = runner.invoke(app, ["profile", "--profile", "nope"])
    assert result.exit_code == 2
    assert "error: unknown profile 'nope'; known profiles: " in result.output

    document = cpu_document(inference__max_batch_size=0)
    bad = write(tmp_path, "x86-cpu.yaml", document)
    result = runner.invoke(app, ["profile", "--profiles-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "1 problem in device profiles" in result.output
    assert f"{bad}:" in result.output
    assert "inference.max_batch_size: Input should be greater than or equal to 1" in result.output


def test_text_report_shows_the_inference_defaults(profiles: dict[str, Profile]) -> None:
    detection = select_profile(
        profiles, facts("aarch64", model="NVIDIA Jetson AGX Orin", memory_gb=61.4), None
    )
    text = render_text(detection)
    assert "profile: jetson-agx-orin-64gb — NVIDIA Jetson AGX Orin 64GB" in text
    assert "  precision:      fp16" in text
    assert "  workspace_mb:   4096" in text
    assert "  dla:            off (2 available)" in text
    assert "service limits: MemoryMax=49152M MemoryHigh=40960M CPUQuota=1100% TasksMax=2048" in text


def test_public_api_is_what_all_lists() -> None:
    public = {
        n for n, v in vars(agent.profiles).items() if not n.startswith("_") and not isinstance(v, type(os))
    }
    assert public == set(agent.profiles.__all__)
