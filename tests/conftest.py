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


def _gpu_missing() -> str | None:
    """Why the ``gpu`` tests cannot run here, or ``None`` when they can."""
    try:
        import pycuda.driver as cuda
        import tensorrt  # noqa: F401

        cuda.init()
        if cuda.Device.count() == 0:
            return "no CUDA device"
    except Exception as exc:  # ImportError, or a CUDA driver error
        return f"no NVIDIA GPU stack: {exc}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if "gpu" in item.keywords]
    reason = _gpu_missing() if gpu_items else None
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
