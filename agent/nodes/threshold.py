"""``threshold``: accept or reject from a score and live, per-class thresholds.

Thresholds come from a named set in the agent's live configuration (``threshold_set``), which
the control plane and the device API change at run time; the node reads the set on every run,
so a change applies to the next frame with nothing reloaded. ``thresholds`` in the config are
the fallback when the set has no value (or no set is named). Per-class values are looked up by
the class at ``label`` (e.g. ``$.nodes.classify.label``), then ``default``.

A score at or above the threshold rejects (``reject_when: above``, for defect scores); use
``below`` for quality scores. The output names the threshold and the set version that decided,
so every decision can be traced to its configuration.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.thresholds import ThresholdStore
from agent.workflow.config_types import JsonPath
from agent.workflow.context import RunContext
from agent.workflow.errors import NodeError
from agent.workflow.node import ConfigError, Node, NodeSetup

THRESHOLDS_RESOURCE = "thresholds"


class ThresholdConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    score: JsonPath = Field(description="The score to compare (a number).")
    label: JsonPath | None = Field(None, description="Class whose threshold applies; `default` when unset.")
    threshold_set: str | None = Field(None, description="Name of the live threshold set to read.")
    thresholds: dict[str, float] = Field(default_factory=dict, description="Fallback thresholds by class.")
    reject_when: Literal["above", "below"] = Field(
        "above", description="Which side of the threshold rejects."
    )

    @field_validator("thresholds")
    @classmethod
    def _finite(cls, values: dict[str, float]) -> dict[str, float]:
        for key, value in values.items():
            if not math.isfinite(value):
                raise ValueError(f"threshold '{key}' must be finite")
        return values


class Threshold(Node[ThresholdConfig]):
    type_name = "threshold"
    config_model = ThresholdConfig
    summary = "Accept / reject from a score and live per-class thresholds (changeable at run time)."

    def __init__(self, config: ThresholdConfig, setup: NodeSetup) -> None:
        super().__init__(config, setup)
        self._store: ThresholdStore | None = setup.resources.get(THRESHOLDS_RESOURCE)
        if config.threshold_set is not None and self._store is None:
            raise ConfigError("threshold_set", "no live threshold store on this host")
        if config.threshold_set is None and not config.thresholds:
            raise ConfigError("thresholds", "give thresholds or a threshold_set to read them from")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        config = self.config
        raw = config.score.resolve(ctx)
        try:
            score = float(raw.reshape(-1)[0]) if hasattr(raw, "reshape") else float(raw)
        except (TypeError, ValueError, IndexError) as exc:
            raise NodeError(f"score at {config.score.text} is not a number: {raw!r}") from exc
        if not math.isfinite(score):
            raise NodeError(f"score at {config.score.text} is {score}")
        label = None if config.label is None else str(config.label.resolve(ctx))
        live = (
            self._store.get(config.threshold_set)
            if self._store is not None and config.threshold_set
            else None
        )
        value = live.for_class(label) if live is not None else None
        source = (
            {"name": live.name, "version": live.version} if value is not None and live is not None else None
        )
        if value is None:
            value = config.thresholds.get(label) if label is not None else None
            if value is None:
                value = config.thresholds.get("default")
        if value is None:
            raise NodeError(
                f"no threshold for class {label!r} (set {config.threshold_set!r} and the config have none)"
            )
        reject = score >= value if config.reject_when == "above" else score <= value
        return {
            "decision": "reject" if reject else "accept",
            "score": score,
            "threshold": value,
            "class": label,
            "threshold_set": source,
        }
