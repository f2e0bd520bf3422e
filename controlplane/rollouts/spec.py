"""The rollout spec: what ``POST /api/v1/rollouts`` takes (JSON or YAML), docs/rollouts.md.

Validation here is structural (types, ranges, which fields a step kind takes); a ``ValidationError``
names each bad field by its path. Whether the names and versions exist is checked against the
registry by ``controlplane.rollouts.create``. A validated spec is stored as
``model_dump(mode="json", exclude_none=True)`` with every default filled in, so a stored spec
reads back unchanged.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from controlplane.rollouts.analysis import AnalysisSpec

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=128)]
Version = Annotated[int, Field(ge=1, le=2**31 - 1)]
LabelKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")]
LabelValue = Annotated[str, Field(max_length=128)]

StepKind = Literal["shadow", "canary", "pause", "full"]
COHORT_STEPS = ("shadow", "canary")

DEFAULT_DURATION_S = 60.0
DEFAULT_MIN_SAMPLES = 100


class TargetSpec(BaseModel):
    """Exactly one of a group name, a label selector (every label must match) or device ids."""

    model_config = ConfigDict(extra="forbid")

    group: Name | None = None
    selector: dict[LabelKey, LabelValue] | None = Field(None, min_length=1, max_length=32)
    devices: list[Name] | None = Field(None, min_length=1, max_length=10_000)

    @model_validator(mode="after")
    def _exactly_one(self) -> TargetSpec:
        given = [name for name in ("group", "selector", "devices") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of group, selector or devices"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.devices is not None and len(set(self.devices)) != len(self.devices):
            raise ValueError("devices lists a device more than once")
        return self

    def as_dict(self) -> dict[str, object]:
        """The one key that is set: ``{"group": …}``, ``{"selector": {…}}`` or ``{"devices": […]}``."""
        return self.model_dump(mode="json", exclude_none=True)


class BundleSpec(BaseModel):
    """What the candidate runs; anything unset is resolved at creation (docs/rollouts.md)."""

    model_config = ConfigDict(extra="forbid")

    workflow_version: Version | None = None
    models: dict[Name, Version] | None = Field(None, max_length=64)
    threshold_sets: dict[Name, Version] | None = Field(None, max_length=64)


class StepSpec(BaseModel):
    """One step. ``shadow`` and ``canary`` take a cohort size (``devices`` or ``percent``) and
    default to ``duration_s`` 60 and ``min_samples`` 100; ``full`` takes no cohort size and
    defaults to 0 and 0; ``pause`` takes nothing."""

    model_config = ConfigDict(extra="forbid")

    kind: StepKind
    devices: int | None = Field(None, ge=1, le=1_000_000)
    percent: float | None = Field(None, gt=0, le=100)
    duration_s: float | None = Field(None, ge=0, le=30 * 24 * 3600)
    min_samples: int | None = Field(None, ge=0, le=10**9)

    @model_validator(mode="after")
    def _fields_for_kind(self) -> StepSpec:
        sized = [name for name in ("devices", "percent") if getattr(self, name) is not None]
        if self.kind in COHORT_STEPS:
            if len(sized) != 1:
                raise ValueError(f"a {self.kind} step takes exactly one of devices or percent")
            if self.duration_s is None:
                self.duration_s = DEFAULT_DURATION_S
            if self.min_samples is None:
                self.min_samples = DEFAULT_MIN_SAMPLES
        elif self.kind == "full":
            if sized:
                raise ValueError("a full step takes every device of the target: remove devices/percent")
            self.duration_s = self.duration_s or 0.0
            self.min_samples = self.min_samples or 0
        else:
            extra = sized + [n for n in ("duration_s", "min_samples") if getattr(self, n) is not None]
            if extra:
                raise ValueError(f"a pause step takes no {', '.join(extra)}: it waits for resume or promote")
        return self

    def describe(self) -> dict[str, object]:
        """The step as the API shows it: only the fields that apply to its kind."""
        return self.model_dump(mode="json", exclude_none=True)


class GateSpec(BaseModel):
    """The device's own health gate, signed into the bundle."""

    model_config = ConfigDict(extra="forbid")

    warmup_frames: int = Field(5, ge=0, le=100_000)
    frames: int = Field(20, ge=0, le=1_000_000)
    max_errors: int = Field(0, ge=0, le=1_000_000)
    max_latency_ms: float = Field(1000.0, gt=0, le=3_600_000)


class RolloutSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow: Name
    target: TargetSpec
    bundle: BundleSpec = Field(default_factory=BundleSpec)
    steps: list[StepSpec] = Field(min_length=1, max_length=32)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    gate: GateSpec = Field(default_factory=GateSpec)
