"""The device API's view of a running :class:`agent.daemon.Agent` (read-only use of its public
attributes: ``plans``, ``service``, ``executor``, ``runtime``, ``thresholds``, ``settings``,
``profile``, ``started_at``).

A run through the API executes the workflow's current plan on the caller's thread, on the
agent's executor (so its parallel nodes share the agent's bounded pool), is counted in the
workflow's stats, its metrics and, on a managed agent, its telemetry, and is published on the
event bus.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.device_api.cancel import CancellablePlans, CancelToken, RunTokens
from agent.device_api.errors import InvalidArgument, NotFound, NotReady
from agent.device_api.events import THRESHOLD_OVERRIDE, EventBus
from agent.device_api.host import (
    EngineBuild,
    Health,
    ModelInfo,
    QueueDepth,
    StatusSnapshot,
    WorkflowInfo,
)
from agent.device_api.overrides import OverrideLog, ThresholdOverride
from agent.workflow import InvalidInput, Plan, RunResult

if TYPE_CHECKING:
    from agent.daemon import Agent, WorkflowService

log = logging.getLogger(__name__)

ORIGIN = "device_api"
"""The ``origin`` of runs made through the device API, in events and telemetry."""


def plan_models(plan: Plan) -> tuple[str, ...]:
    """The model ids the plan's inference nodes use, sorted."""
    from agent.nodes.inference import ModelInference

    return tuple(sorted({n.impl.config.model_id for n in plan.nodes if isinstance(n.impl, ModelInference)}))


def plan_threshold_sets(plan: Plan) -> tuple[str, ...]:
    """The live threshold sets the plan's threshold nodes read, sorted."""
    from agent.nodes.threshold import Threshold

    return tuple(
        sorted(
            {
                n.impl.config.threshold_set
                for n in plan.nodes
                if isinstance(n.impl, Threshold) and n.impl.config.threshold_set
            }
        )
    )


class AgentHost:
    """:class:`agent.device_api.host.DeviceHost` on top of an :class:`~agent.daemon.Agent`.

    ``on_override`` is called (on the caller's thread, after the override is recorded) with each
    threshold override, e.g. to report it to the control plane; if it raises, the error is logged
    and the override stands."""

    def __init__(
        self,
        agent: Agent,
        events: EventBus | None = None,
        *,
        overrides: OverrideLog | None = None,
        on_override: Callable[[ThresholdOverride], None] | None = None,
    ) -> None:
        self._agent = agent
        self._events = events or EventBus()
        self.overrides = overrides or OverrideLog(
            agent.settings.data_dir / "device_api" / "threshold_overrides.jsonl"
        )
        self.on_override = on_override
        self._tokens = RunTokens()
        self._plans = CancellablePlans(self._tokens)
        self._run_prefix = f"api-{os.urandom(4).hex()}-"
        self._run_counter = itertools.count()
        self._override_lock = threading.Lock()

    @property
    def events(self) -> EventBus:
        return self._events

    # ---- reading --------------------------------------------------------------------------------

    def health(self) -> tuple[Health, tuple[str, ...]]:
        agent = self._agent
        if agent.started_at is None or agent.executor is None:
            return "starting", ("the agent is starting: loading models and compiling workflows",)
        return "serving", ()

    def _service(self, workflow_id: str) -> WorkflowService:
        service = self._agent.service(workflow_id)
        if service is not None:
            return service
        if self._agent.executor is None:
            raise NotReady("the agent is not started")
        known = ", ".join(sorted(self._agent.plans())) or "none"
        raise NotFound("workflow_id", f"no workflow '{workflow_id}' on this device (it runs: {known})")

    def input_key(self, workflow_id: str) -> str:
        return self._service(workflow_id).binding.input_key

    def workflows(self) -> list[WorkflowInfo]:
        infos = []
        for workflow_id, plan in sorted(self._agent.plans().items()):
            service = self._agent.service(workflow_id)
            infos.append(
                WorkflowInfo(
                    workflow_id=workflow_id,
                    version=plan.version,
                    nodes=len(plan.nodes),
                    input_key=service.binding.input_key if service is not None else "image",
                    models=plan_models(plan),
                    threshold_sets=plan_threshold_sets(plan),
                    runs=service.stats.runs if service is not None else 0,
                    failed=service.stats.failed if service is not None else 0,
                )
            )
        return infos

    def models(self) -> list[ModelInfo]:
        runtime = self._agent.runtime
        if runtime is None:
            return []
        infos = []
        for served in runtime.loaded():
            record = served.record
            builds = tuple(EngineBuild(b.backend, b.state, b.error or "") for b in served.builds)
            infos.append(ModelInfo(record.model_id, record.version, record.sha256, served.backend, builds))
        return sorted(infos, key=lambda m: (m.model_id, m.version))

    def status(self) -> StatusSnapshot:
        agent = self._agent
        health, reasons = self.health()
        queues = []
        for workflow_id in sorted(agent.plans()):
            service = agent.service(workflow_id)
            if service is not None:
                queue = service.queue
                queues.append(QueueDepth(workflow_id, queue.depth, queue.maxsize, queue.dropped))
        models = self.models()
        profile = agent.profile
        return StatusSnapshot(
            device_id=agent.settings.device_id,
            agent_version=__version__,
            health=health,
            health_reasons=reasons,
            profile=profile.name if profile is not None else "",
            backends=tuple(sorted({m.backend for m in models})),
            backend_order=tuple(profile.inference.backends) if profile is not None else (),
            uptime_s=time.monotonic() - agent.started_at if agent.started_at is not None else 0.0,
            queues=tuple(queues),
            workflows=tuple(self.workflows()),
            models=tuple(models),
        )

    # ---- running --------------------------------------------------------------------------------

    def run(
        self, workflow_id: str, document: dict[str, Any], *, cancel: CancelToken | None = None
    ) -> RunResult:
        service = self._service(workflow_id)
        executor = self._agent.executor
        if executor is None:
            raise NotReady("the agent is not started")
        plan, lineage = service.plan, service.lineage
        run_id = f"{self._run_prefix}{next(self._run_counter):012x}"
        runnable = plan
        if cancel is not None:
            runnable = self._plans.get(plan)
            self._tokens.add(run_id, cancel)
        started = perf_counter()
        try:
            result = executor.run(runnable, document, run_id=run_id)
        except InvalidInput as exc:
            raise InvalidArgument("input_json", str(exc)) from exc
        except RuntimeError as exc:  # the executor is closed: the agent is stopping
            raise NotReady(f"the agent is stopping: {exc}") from exc
        finally:
            if cancel is not None:
                self._tokens.remove(run_id)
        seconds = perf_counter() - started
        service.stats.record(result, seconds)
        if service.telemetry is not None:
            image = document.get(service.binding.input_key)
            service.report_run(result, plan, lineage, seconds, image=image, facts={"source": ORIGIN})
        if service.events is not self._events:  # a bus of its own, not the agent's
            self._events.publish_run(result, origin=ORIGIN)
        service.count_run(plan, result, seconds, origin=ORIGIN)  # the agent's bus and metrics
        return result

    # ---- thresholds -----------------------------------------------------------------------------

    def threshold_sets(self) -> set[str]:
        """Threshold sets that exist or that a running workflow reads."""
        names = set(self._agent.thresholds.snapshot())
        for plan in self._agent.plans().values():
            names.update(plan_threshold_sets(plan))
        return names

    def set_threshold(
        self, threshold_set: str, key: str, value: float, *, origin: str, actor: str = "", reason: str = ""
    ) -> tuple[ThresholdOverride, Mapping[str, float]]:
        if not threshold_set:
            raise InvalidArgument("threshold_set", "must not be empty")
        if not key:
            raise InvalidArgument("key", "must not be empty (a class label, or 'default')")
        if not math.isfinite(value):
            raise InvalidArgument("value", f"must be a finite number, got {value}")
        if threshold_set not in self.threshold_sets():
            known = ", ".join(sorted(self.threshold_sets())) or "none"
            raise NotFound(
                "threshold_set", f"no threshold set '{threshold_set}' on this device (known: {known})"
            )
        store = self._agent.thresholds
        with self._override_lock:
            current = store.get(threshold_set)
            previous = current.values.get(key) if current is not None else None
            try:
                updated = store.set_one(threshold_set, key, value)
            except ValueError as exc:
                raise InvalidArgument("value", str(exc)) from exc
            override = ThresholdOverride(
                id=uuid.uuid4().hex,
                time=time.time(),
                threshold_set=threshold_set,
                key=key,
                value=float(value),
                previous=previous,
                version=updated.version,
                origin=origin,
                actor=actor,
                reason=reason,
            )
            self.overrides.append(override)
        self._events.publish(THRESHOLD_OVERRIDE, payload=override.to_dict())
        if self.on_override is not None:
            try:
                self.on_override(override)
            except Exception:
                log.exception("device API: reporting threshold override %s failed", override.id)
        return override, dict(updated.values)
