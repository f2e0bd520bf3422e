"""Every example workflow compiles and runs; the brief's order_processing runs on a real ONNX model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.inference.backend import BackendOptions
from agent.inference.onnxruntime_backend import OnnxRuntimeBackend
from agent.inference.runtime import ModelRuntime
from agent.inference.store import ModelStore
from agent.workflow import (
    CompileError,
    CompileOptions,
    Executor,
    builtin_registry,
    compile_workflow,
    read_document,
)
from tests.conftest import EXAMPLES

WORKFLOWS = sorted((EXAMPLES / "workflows").glob("*.*"))
OPTIONS = CompileOptions(registry=builtin_registry(), schema_dirs=(EXAMPLES / "schemas",))


@pytest.mark.parametrize(
    "path", [p for p in WORKFLOWS if (EXAMPLES / "inputs" / f"{p.stem}.json").exists()], ids=lambda p: p.name
)
def test_example_compiles_and_runs_its_inputs(path: Any, executor: Executor) -> None:
    plan = compile_workflow(read_document(path), OPTIONS)
    inputs = read_document(EXAMPLES / "inputs" / f"{path.stem}.json")
    results = [executor.run(plan, document) for document in inputs]
    assert any(result.ok for result in results)


def test_brief_order_processing_runs_end_to_end_on_the_pricing_model(
    tmp_path: Path, executor: Executor
) -> None:
    document = read_document(EXAMPLES / "workflows" / "order_processing.json")
    store = ModelStore(tmp_path / "models")
    store.install(EXAMPLES / "models" / "pricing_model_v3.onnx", "pricing_model_v3", "3")
    runtime = ModelRuntime(store, [OnnxRuntimeBackend()], BackendOptions(max_batch=1))
    options = CompileOptions(
        registry=OPTIONS.registry, schema_dirs=OPTIONS.schema_dirs, resources={"models": runtime}
    )
    plan = compile_workflow(document, options)
    result = executor.run(plan, {"product": {"id": "P1001"}, "quantity": 3})
    assert result.ok, result.error
    assert result.outputs["price_calculator"]["calculated_price"].item() == pytest.approx(58.5)
    rejected = executor.run(plan, {"product": {"id": "P1001"}, "quantity": 0})
    assert rejected.error is not None
    assert rejected.error.node == "input_validator"
    runtime.close()


def test_without_a_model_store_order_processing_says_so(tmp_path: Path) -> None:
    document = read_document(EXAMPLES / "workflows" / "order_processing.json")
    with pytest.raises(CompileError, match="no model store is configured"):
        compile_workflow(document, OPTIONS)
