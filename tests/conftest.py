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

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


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
