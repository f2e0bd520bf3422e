"""The agent as the reconciler and the rollout steps see it: :class:`WorkflowHost`, which
:class:`agent.daemon.Agent` implements."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from agent.inference.store import ModelStore
    from agent.rollout.slots import Origin
    from agent.sync.telemetry import Lineage
    from agent.thresholds import ThresholdStore
    from agent.workflow import Plan, RunResult

__all__ = ["WorkflowHost"]


class WorkflowHost(Protocol):
    """What the reconciler needs from the agent (``agent.daemon.Agent`` implements it)."""

    thresholds: ThresholdStore

    @property
    def model_store(self) -> ModelStore: ...

    def compile_document(
        self,
        document: Mapping[str, Any],
        *,
        model_versions: Mapping[str, str] | None = None,
        thresholds: ThresholdStore | None = None,
        side_effects: bool = True,
    ) -> Plan:
        """Compile a workflow graph against this device's runtime; raises ``CompileError``.

        ``model_versions`` pins the version of each model a node names without one;
        ``thresholds`` replaces the live threshold store (a shadow plan's private view);
        without ``side_effects`` the plan's ``emit`` nodes emit nothing."""
        ...

    def activate_plan(self, plan: Plan, origin: Origin | None = None) -> None:
        """Run ``plan``: swap it in between two frames, or start a new workflow. The same plan
        again only updates its origin (rollout, cohort, bundle)."""
        ...

    def retire_workflow(self, workflow_id: str) -> None:
        """Stop running a workflow that the control plane no longer assigns."""
        ...

    def plans(self) -> Mapping[str, Plan]:
        """The running plans by workflow id."""
        ...

    def model_backend(self, model_id: str) -> str:
        """The backend serving ``model_id`` (``""`` when it is not loaded)."""
        ...

    def warm_up(self, plan: Plan, frames: int) -> list[tuple[RunResult, float]]:
        """Run ``plan`` ``frames`` times on its workflow's most recent real frames, with no effect
        on anything; the results and latencies (empty when the workflow has seen no frame)."""
        ...

    def between_frames(self, workflow_ids: Iterable[str]) -> AbstractContextManager[None]:
        """While inside, no frame of these workflows runs (plans and thresholds change together)."""
        ...

    def watch_plan(
        self, workflow_id: str, plan: Plan, observer: Callable[[RunResult, float], object] | None
    ) -> None:
        """Hand every run of ``plan`` (result, seconds) to ``observer`` (``None``: stop)."""
        ...

    def run_shadow(self, workflow_id: str, plan: Plan | None, lineage: Lineage | None) -> None:
        """Run ``plan`` beside the workflow's active plan, counted under ``lineage``
        (``None``: no shadow)."""
        ...
