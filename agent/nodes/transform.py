"""``transform``: build a new document from paths, expressions and literals."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent.workflow.config_types import TemplateValue
from agent.workflow.context import RunContext
from agent.workflow.node import Node


class TransformConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    output: TemplateValue = Field(
        description=(
            "The document to build. Strings starting with '$' are JSONPaths, "
            "{'$expr': '...'} objects are expressions, '$$' escapes a literal '$'."
        )
    )


class Transform(Node[TransformConfig]):
    type_name = "transform"
    config_model = TransformConfig
    summary = "Builds an output document from JSONPaths, expressions and literals."

    def run(self, ctx: RunContext) -> Any:
        return self.config.output.render(ctx)
