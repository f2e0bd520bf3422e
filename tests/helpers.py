"""Builders shared by the tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agent.workflow import CompileError, Plan

Compile = Callable[..., Plan]


def issues_of(compile_: Compile, document: Any) -> list[tuple[str, str | None, str | None]]:
    """(code, node, field) of every issue the compiler reports for ``document``."""
    with pytest.raises(CompileError) as caught:
        compile_(document)
    return [(issue.code, issue.node, issue.field) for issue in caught.value.issues]


def graph(
    nodes: list[dict[str, Any]], edges: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (), **extra: Any
) -> dict[str, Any]:
    """A graph document from nodes and (source, target) pairs."""
    return {
        "id": extra.pop("id", "test"),
        "nodes": nodes,
        "edges": [{"source": s, "target": t} for s, t in edges],
        **extra,
    }


def transform(node_id: str, output: Any = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "transform",
        "config": {"output": output if output is not None else node_id},
        **extra,
    }
