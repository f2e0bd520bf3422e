"""``emit``: hand an event to the run's event sink (and the run result).

A plan compiled with the ``side_effects`` resource set to ``False`` (a shadow candidate, which
must never act) still builds the event as the node's output, but emits nothing: no event in the
run result, nothing to the sink.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.workflow.config_types import TemplateValue
from agent.workflow.context import Event, RunContext
from agent.workflow.node import Node, NodeSetup

SIDE_EFFECTS_RESOURCE = "side_effects"
"""Compile resource: ``False`` makes ``emit`` nodes build their event without emitting it."""


class EmitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: str = Field(pattern=r"^[A-Za-z0-9_.:-]+$", description="Event type, e.g. 'part_rejected'.")
    severity: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", description="How urgent the event is."
    )
    payload: TemplateValue = Field(
        None, validate_default=True, description="Event payload (a template, like transform's output)."
    )


class Emit(Node[EmitConfig]):
    type_name = "emit"
    config_model = EmitConfig
    summary = "Emits an event (type, severity, payload) to the run's event sink."

    def __init__(self, config: EmitConfig, setup: NodeSetup) -> None:
        super().__init__(config, setup)
        self.emits = bool(setup.resources.get(SIDE_EFFECTS_RESOURCE, True))
        """False: the event is the node's output only (a plan without side effects)."""

    def run(self, ctx: RunContext) -> Event:
        event: dict[str, Any] = {
            "type": self.config.event,
            "severity": self.config.severity,
            "node": self.node_id,
            "run_id": ctx.run_id,
            "workflow": {"id": ctx.workflow_id, "version": ctx.workflow_version},
            "time": time.time(),
            "payload": self.config.payload.render(ctx),
        }
        if self.emits:
            ctx.emit(event)
        return event
