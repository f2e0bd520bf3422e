"""Which devices of a target take part in a step: deterministic, nested cohorts.

Every target device gets the rank ``sha256(rollout_id + "/" + device_id)``; a step taking N
devices (or ``ceil(percent × count / 100)``, at least 1, at most the target) takes the first N
in rank order. A step's cohort is never smaller than an earlier shadow or canary step's, so a
later cohort always contains the earlier ones, whatever sizes the spec gives. Nothing here reads
the database: the same inputs give the same cohorts in every process.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal, cast

from controlplane.rollouts.spec import COHORT_STEPS, StepSpec

Placement = Literal["baseline", "shadow", "canary"]
"""What a target device runs: the baseline alone, the baseline with the candidate in shadow, or
the candidate (role ``canary``)."""

EffectiveKind = Literal["none", "shadow", "canary", "full"]


def rank(rollout_id: str, device_id: str) -> str:
    return hashlib.sha256(f"{rollout_id}/{device_id}".encode()).hexdigest()


def ranked(rollout_id: str, device_ids: Collection[str]) -> list[str]:
    """``device_ids`` in cohort order (ties, impossible in practice, by id)."""
    return sorted(set(device_ids), key=lambda device: (rank(rollout_id, device), device))


def step_size(step: StepSpec, count: int) -> int:
    """How many of ``count`` target devices ``step`` takes on its own (0 for an empty target)."""
    if count == 0:
        return 0
    if step.kind == "full":
        return count
    if step.devices is not None:
        wanted = step.devices
    elif step.percent is not None:
        wanted = math.ceil(step.percent * count / 100)
    else:
        wanted = 0
    return min(count, max(1, wanted))


def effective_index(steps: Sequence[StepSpec], step_index: int) -> int | None:
    """The step whose placement applies at ``step_index``: itself, or for a pause the last step
    before it that is not a pause (None: nothing before it, everyone stays on the baseline)."""
    for index in range(min(step_index, len(steps) - 1), -1, -1):
        if steps[index].kind != "pause":
            return index
    return None


def _size_through(steps: Sequence[StepSpec], last: int, count: int) -> int:
    return max((step_size(s, count) for s in steps[: last + 1] if s.kind in COHORT_STEPS), default=0)


@dataclass(frozen=True)
class Cohorts:
    """The cohorts of one rollout at one step.

    ``kind`` is the effective step kind; ``shadow`` lists the devices of the latest shadow step
    so far (also after it, for status); ``canary`` the devices running the candidate; ``baseline``
    every other target device (those not running the candidate, actively or in shadow, in this
    step)."""

    kind: EffectiveKind
    devices: tuple[str, ...]
    shadow: tuple[str, ...]
    canary: tuple[str, ...]
    baseline: tuple[str, ...]

    @property
    def candidate(self) -> tuple[str, ...]:
        """The devices running the candidate in this step: the analysed (and watched) cohort."""
        return self.shadow if self.kind == "shadow" else self.canary

    def placement(self, device_id: str) -> Placement | None:
        """What ``device_id`` runs in this step; None when it is not in the target."""
        if device_id not in self.devices:
            return None
        if self.kind == "shadow":
            return "shadow" if device_id in self.shadow else "baseline"
        if self.kind in ("canary", "full"):
            return "canary" if device_id in self.canary else "baseline"
        return "baseline"

    def as_dict(self) -> dict[str, list[str]]:
        return {"shadow": list(self.shadow), "canary": list(self.canary), "baseline": list(self.baseline)}


def cohorts_at(
    rollout_id: str, device_ids: Collection[str], steps: Sequence[StepSpec], step_index: int
) -> Cohorts:
    """The cohorts of the target ``device_ids`` at ``step_index`` (see :class:`Cohorts`)."""
    order = ranked(rollout_id, device_ids)
    count = len(order)
    current = effective_index(steps, step_index)
    kind = cast(EffectiveKind, "none" if current is None else steps[current].kind)
    last_shadow = max(
        (
            i
            for i, s in enumerate(steps[: (current if current is not None else -1) + 1])
            if s.kind == "shadow"
        ),
        default=None,
    )
    shadow = tuple(order[: _size_through(steps, last_shadow, count)]) if last_shadow is not None else ()
    canary: tuple[str, ...] = ()
    if kind == "full":
        canary = tuple(order)
    elif kind == "canary" and current is not None:
        canary = tuple(order[: _size_through(steps, current, count)])
    running = set(shadow if kind == "shadow" else canary)
    baseline = tuple(device for device in order if device not in running)
    return Cohorts(kind=kind, devices=tuple(order), shadow=shadow, canary=canary, baseline=baseline)
