"""Every example workflow compiles; the brief's order_processing runs once a model node exists."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict

from agent.workflow import (
    CompileError,
    CompileOptions,
    Executor,
    JsonPath,
    Node,
    RunContext,
    builtin_registry,
    compile_workflow,
    read_document,
)
from tests.conftest import EXAMPLES

WORKFLOWS = sorted((EXAMPLES / "workflows").glob("*.*"))
OPTIONS = CompileOptions(registry=builtin_registry(), schema_dirs=(EXAMPLES / "schemas",))


@pytest.mark.parametrize("path", [p for p in WORKFLOWS if p.stem != "order_processing"], ids=lambda p: p.name)
def test_example_compiles_and_runs_its_inputs(path: Any, executor: Executor) -> None:
    plan = compile_workflow(read_document(path), OPTIONS)
    inputs = read_document(EXAMPLES / "inputs" / f"{path.stem}.json")
    results = [executor.run(plan, document) for document in inputs]
    assert any(result.ok for result in results)


class PriceTableConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_id: str
    input_mapping: dict[str, JsonPath]


class PriceTable(Node[PriceTableConfig]):
    """A stand-in for the inference runtime's model_inference: unit price × quantity."""

    type_name = "model_inference"
    config_model = PriceTableConfig
    PRICES: ClassVar[dict[str, float]] = {"P1001": 19.5}

    def run(self, ctx: RunContext) -> dict[str, float]:
        inputs = {name: path.resolve(ctx) for name, path in self.config.input_mapping.items()}
        return {"calculated_price": self.PRICES[inputs["product_id"]] * inputs["quantity"]}


def test_brief_order_processing_compiles_and_runs_with_a_model_node(executor: Executor) -> None:
    document = read_document(EXAMPLES / "workflows" / "order_processing.json")
    with pytest.raises(CompileError, match="unknown node type 'model_inference'"):
        compile_workflow(document, OPTIONS)
    registry = builtin_registry()
    registry.register(PriceTable)
    plan = compile_workflow(document, CompileOptions(registry=registry, schema_dirs=OPTIONS.schema_dirs))
    result = executor.run(plan, {"product": {"id": "P1001"}, "quantity": 3})
    assert result.ok
    assert result.outputs["price_calculator"] == {"calculated_price": 58.5}
