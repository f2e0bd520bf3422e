"""Shared fixtures: a fresh built-in registry per test, an executor, a compile helper."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.workflow import (
    CompileOptions,
    Executor,
    NodeRegistry,
    Plan,
    builtin_registry,
    compile_workflow,
)
from tests.workflow.testnodes import register_test_nodes

pytest_plugins = ["tests.mqtt_fixtures"]

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def _nvidia_gpu_missing() -> str | None:
    """Why no NVIDIA GPU is usable here (NVML, the driver's own library, finds none), or
    ``None`` when one is."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            count = int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # ImportError, or NVMLError: no driver
        return f"no NVIDIA GPU driver: {exc}"
    return None if count else "NVML finds no GPU"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` need an NVIDIA GPU and its driver; those that also need TensorRT or
    pycuda skip themselves with the reason (tests/inference/test_tensorrt.py)."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    reason = _nvidia_gpu_missing() if gpu_items else None
    if reason is not None:
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason=f"gpu test: {reason}"))


@pytest.fixture
def registry() -> NodeRegistry:
    """The built-in node types plus the engine tests' own (sleep, flaky, rendezvous, crash)."""
    return register_test_nodes(builtin_registry())


@pytest.fixture
def executor() -> Iterator[Executor]:
    with Executor(max_workers=4) as executor:
        yield executor


@pytest.fixture
def compile_graph(registry: NodeRegistry) -> Callable[..., Plan]:
    """Compile a graph dict with the test's registry and the example schemas."""

    def compile_(document: Any, **options: Any) -> Plan:
        options.setdefault("registry", registry)
        options.setdefault("schema_dirs", (EXAMPLES / "schemas",))
        return compile_workflow(document, CompileOptions(**options))

    return compile_
