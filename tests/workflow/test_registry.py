"""Node registries: explicit built-ins, third-party plugins through entry points, duplicates."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from agent.nodes import BUILTIN_NODES
from agent.workflow import (
    CompileError,
    CompileOptions,
    DuplicateNodeType,
    Executor,
    Node,
    NodeRegistry,
    RegistryError,
    builtin_registry,
    compile_workflow,
)
from tests.helpers import graph

PLUGIN_SOURCE = Path(__file__).resolve().parent.parent / "plugins" / "acme_nodes"


def build_wheel(directory: Path) -> Path:
    """A real wheel of the ACME plugin (module + dist-info with entry points and RECORD)."""
    files = {
        "acme_nodes.py": (PLUGIN_SOURCE / "acme_nodes.py").read_bytes(),
        "acme_nodes-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: acme-nodes\nVersion: 1.0\n",
        "acme_nodes-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: edgefleet-tests\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
        "acme_nodes-1.0.dist-info/entry_points.txt": (PLUGIN_SOURCE / "entry_points.txt").read_bytes(),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("acme_nodes-1.0.dist-info/RECORD,,")
    files["acme_nodes-1.0.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = directory / "acme_nodes-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ACME plugin installed by pip into its own site directory."""
    root = tmp_path_factory.mktemp("plugin")
    wheel = build_wheel(root)
    site = root / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    return site


def test_builtins_come_from_one_explicit_list() -> None:
    registry = builtin_registry()
    assert list(registry) == sorted(cls.type_name for cls in BUILTIN_NODES)
    assert {"cache", "condition", "data_validation", "emit", "transform", "model_inference"} <= set(registry)
    assert registry.origin("transform") == "edgefleet built-in agent.nodes.transform:Transform"


def test_duplicate_type_is_refused_naming_both_origins() -> None:
    registry = builtin_registry()

    class Impostor(Node[BaseModel]):
        type_name = "transform"
        config_model = BaseModel

    with pytest.raises(DuplicateNodeType) as caught:
        registry.register(Impostor, origin="plugin X")
    assert "plugin X" in str(caught.value)
    assert "edgefleet built-in agent.nodes.transform:Transform" in str(caught.value)
    assert registry.get("transform") is not Impostor


def test_registering_something_that_is_not_a_node_is_refused() -> None:
    registry = NodeRegistry()
    with pytest.raises(RegistryError, match="not a Node subclass"):
        registry.register(dict)  # type: ignore[arg-type]


def test_plugin_installed_through_the_entry_point_group(
    plugin_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(plugin_site))
    registry = builtin_registry()
    registry.load_entry_points()
    assert "acme_reverse" in registry
    assert "distribution acme-nodes 1.0" in registry.origin("acme_reverse")
    assert registry.get("transform") is builtin_registry().get("transform")
    errors = "\n".join(registry.load_errors)
    assert "node type 'transform' from entry point 'transform = acme_nodes:Transform'" in errors
    assert "already registered by edgefleet built-in agent.nodes.transform:Transform" in errors
    assert "'acme_bogus = acme_nodes:NotANode' (distribution acme-nodes 1.0) is not a Node subclass" in errors
    assert "acme_missing" in errors
    assert "ModuleNotFoundError" in errors

    plan = compile_workflow(
        graph([{"id": "r", "type": "acme_reverse", "config": {"value": "$.serial"}}]),
        CompileOptions(registry=registry),
    )
    with Executor() as executor:
        assert executor.run(plan, {"serial": "A-123"}).outputs["r"] == "321-A"


def test_a_refused_plugin_is_named_when_a_graph_uses_its_type(
    plugin_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(plugin_site))
    registry = builtin_registry()
    registry.load_entry_points()
    with pytest.raises(CompileError, match="its plugin was refused: entry point 'acme_missing"):
        compile_workflow(graph([{"id": "m", "type": "acme_missing"}]), CompileOptions(registry=registry))


def test_cli_lists_plugin_types_with_their_schema(plugin_site: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(plugin_site)}
    cli = Path(sys.executable).parent / "edgefleet-agent"
    done = subprocess.run([str(cli), "nodes", "--json"], env=env, capture_output=True, text=True, check=True)
    listing: dict[str, Any] = json.loads(done.stdout)
    types = {entry["type"]: entry for entry in listing["nodes"]}
    assert set(types) == {"acme_reverse"} | {cls.type_name for cls in BUILTIN_NODES}
    assert types["acme_reverse"]["config_schema"]["required"] == ["value"]
    assert types["data_validation"]["config_schema"]["properties"]["schema"]
    assert len(listing["load_errors"]) == 3
    assert "warning: node type 'transform'" in done.stderr
