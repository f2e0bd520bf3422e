"""Loading graphs: the design brief's examples unchanged, and malformed files located."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.workflow import SpecError, parse_document, read_document
from tests.conftest import EXAMPLES

BRIEF_ORDER_PROCESSING = {
    "id": "order_processing",
    "version": 3,
    "nodes": [
        {"id": "input_validator", "type": "data_validation", "config": {"schema": "order_schema_v1"}},
        {
            "id": "price_calculator",
            "type": "model_inference",
            "config": {
                "model_id": "pricing_model_v3",
                "input_mapping": {"product_id": "$.product.id", "quantity": "$.quantity"},
            },
        },
    ],
    "edges": [{"source": "input_validator", "target": "price_calculator"}],
}

BRIEF_CONDITIONS_YAML = """
conditions:
  - when: "$.order.amount > 1000"
    then: "apply_premium_service"
  - when: "$.customer.type == 'VIP'"
    then: "skip_payment_validation"
  - else: "standard_processing"
"""


def test_order_processing_example_is_the_brief_graph_unchanged() -> None:
    assert read_document(EXAMPLES / "workflows" / "order_processing.json") == BRIEF_ORDER_PROCESSING


def test_order_routing_example_carries_the_brief_conditions_unchanged() -> None:
    document = read_document(EXAMPLES / "workflows" / "order_routing.yaml")
    route = next(node for node in document["nodes"] if node["id"] == "route")
    assert (
        route["config"]["conditions"]
        == parse_document(BRIEF_CONDITIONS_YAML, source="brief.yaml")["conditions"]
    )


def test_yaml_and_json_spellings_load_to_the_same_graph(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "order_processing.yaml"
    path.write_text(yaml.safe_dump(BRIEF_ORDER_PROCESSING))
    assert read_document(path) == BRIEF_ORDER_PROCESSING


@pytest.mark.parametrize(
    ("name", "text", "line", "column"),
    [
        ("broken.json", '{"id": "x",\n  "nodes": [\n    {"id": "a" "type": "t"}\n  ]}', 3, 16),
        ("trailing.json", '{"id": "x",}', 1, 12),
        ("broken.yaml", "id: x\nnodes:\n  - id: a\n   type: t\n", 4, 4),
        ("tabs.yaml", "id: x\nnodes:\n\t- id: a\n", 3, 1),
    ],
)
def test_malformed_files_report_line_and_column(
    tmp_path: Path, name: str, text: str, line: int, column: int
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SpecError) as caught:
        read_document(path)
    assert (caught.value.line, caught.value.column) == (line, column)
    assert str(caught.value).startswith(f"{path}:{line}:{column}: ")


def test_duplicate_json_keys_are_refused() -> None:
    with pytest.raises(SpecError, match="duplicate key 'id'"):
        parse_document('{"id": "a", "id": "b", "nodes": []}', source="dup.json")


def test_missing_and_binary_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="file not found"):
        read_document(tmp_path / "nope.json")
    binary = tmp_path / "frame.json"
    binary.write_bytes(b"\xff\xd8\xff\xe0JFIF")
    with pytest.raises(SpecError, match="cannot read"):
        read_document(binary)


def test_json_numbers_and_unicode_survive_loading() -> None:
    document = parse_document(json.dumps({"id": "ü", "v": 1e-3}), source="x.json")
    assert document == {"id": "ü", "v": 0.001}


@pytest.mark.parametrize(("name", "text"), [("deep.json", "[" * 100_000), ("deep.yaml", "[" * 100_000)])
def test_absurd_nesting_is_a_clear_error(name: str, text: str) -> None:
    with pytest.raises(SpecError):
        parse_document(text, source=name)
