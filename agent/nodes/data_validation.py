"""``data_validation``: check a value against a JSON Schema.

The schema is named (``order_schema_v1`` → ``order_schema_v1.json``/``.yaml`` in the schema
directories) or given inline. The node passes the value through unchanged, or fails with every
violation, each with its JSONPath.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from jsonschema import FormatChecker
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for
from pydantic import BaseModel, ConfigDict, Field

from agent.workflow.config_types import JsonPath
from agent.workflow.context import RunContext
from agent.workflow.errors import NodeError
from agent.workflow.node import ConfigError, Node, NodeSetup

SCHEMA_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
SCHEMA_SUFFIXES = (".json", ".yaml", ".yml")


class ValidationFailed(NodeError):
    """The value does not match its schema; retrying cannot help."""


class DataValidationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str | dict[str, Any] = Field(
        alias="schema",
        description="Name of a schema file in the schema directories, or an inline JSON Schema.",
    )
    path: JsonPath = Field(
        "$", validate_default=True, description="The value to validate; the whole input by default."
    )


def find_schema(name: str, dirs: tuple[Path, ...]) -> Path | None:
    """The first ``<name>.json|.yaml|.yml`` in ``dirs``."""
    for directory in dirs:
        for suffix in SCHEMA_SUFFIXES:
            candidate = directory / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return None


class DataValidation(Node[DataValidationConfig]):
    type_name = "data_validation"
    config_model = DataValidationConfig
    summary = "Validates a value against a JSON Schema (named or inline) and passes it through."

    def __init__(self, config: DataValidationConfig, setup: NodeSetup) -> None:
        super().__init__(config, setup)
        schema = config.schema_
        if isinstance(schema, str):
            schema = self._load_named(schema, setup.schema_dirs)
        cls = validator_for(schema)
        try:
            cls.check_schema(schema)
        except SchemaError as exc:
            raise ConfigError("schema", f"not a valid JSON Schema: {exc.message}") from exc
        self._validator = cls(schema, format_checker=FormatChecker())

    @staticmethod
    def _load_named(name: str, dirs: tuple[Path, ...]) -> dict[str, Any]:
        import re

        if not re.match(SCHEMA_NAME, name) or ".." in name:
            raise ConfigError("schema", f"schema name {name!r} may use only letters, digits, '_', '.', '-'")
        found = find_schema(name, dirs)
        if found is None:
            searched = ", ".join(str(d) for d in dirs) or "no schema directory configured"
            raise ConfigError("schema", f"schema '{name}' not found (searched: {searched})")
        try:
            text = found.read_text(encoding="utf-8")
            loaded = json.loads(text) if found.suffix == ".json" else yaml.safe_load(text)
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError("schema", f"schema file {found} cannot be read: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError("schema", f"schema file {found} does not hold a JSON object")
        return loaded

    def run(self, ctx: RunContext) -> Any:
        value = self.config.path.resolve(ctx)
        errors = sorted(self._validator.iter_errors(value), key=lambda e: e.json_path)
        if errors:
            details = "; ".join(f"{error.json_path}: {error.message}" for error in errors[:20])
            more = f" (and {len(errors) - 20} more)" if len(errors) > 20 else ""
            raise ValidationFailed(f"{len(errors)} schema violation(s): {details}{more}")
        return value
