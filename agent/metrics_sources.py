"""What a Prometheus scrape reads from a running agent (:class:`agent.metrics.MetricSources`).

Every read is a snapshot of plain counters and never waits on a long lock: the models come from
the running plans' ``model_inference`` nodes, not from ``ModelRuntime.loaded()``, which waits
while the runtime builds an engine in the foreground (minutes for TensorRT). A model loaded but
used by no running plan is therefore not shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from agent.metrics import QueueStats

if TYPE_CHECKING:
    from agent.inference.runtime import ModelRuntime, ServedModel
    from agent.sync.outbox import Outbox, OutboxStats
    from agent.workflow_service import WorkflowService

__all__ = ["AgentMetricSources", "ServicesView"]


class ServicesView(Protocol):
    """The part of :class:`agent.daemon.Agent` a scrape reads."""

    runtime: ModelRuntime | None

    def workflow_services(self) -> list[WorkflowService]:
        """The running workflow services (a snapshot)."""
        ...

    def sync_outbox(self) -> Outbox | None:
        """The managed agent's outbox; ``None`` when not managed or unusable."""
        ...


class AgentMetricSources:
    """:class:`agent.metrics.MetricSources` over an agent; cheap, and never raises for a
    workflow or model that comes or goes during the scrape."""

    def __init__(self, agent: ServicesView) -> None:
        self._agent = agent

    def queues(self) -> Iterable[QueueStats]:
        stats = []
        for service in self._agent.workflow_services():
            queue = service.queue
            stats.append(QueueStats(service.plan.workflow_id, queue.depth, queue.maxsize, queue.dropped))
        return stats

    def served_models(self) -> Iterable[Mapping[str, Any]]:
        served: dict[tuple[str, str], ServedModel] = {}
        for service in self._agent.workflow_services():
            plans = [service.plan]
            shadow = service.shadow
            if shadow is not None:
                plans.append(shadow.plan)
            for plan in plans:
                for model in _plan_models(plan.nodes):
                    served.setdefault((model.record.model_id, model.record.version), model)
        return [served[key].status() for key in sorted(served)]

    def backend_fallbacks(self) -> Mapping[str, int]:
        runtime = self._agent.runtime
        return dict(runtime.fallbacks) if runtime is not None else {}

    def outbox_stats(self) -> OutboxStats | None:
        outbox = self._agent.sync_outbox()
        return outbox.stats() if outbox is not None else None


def _plan_models(nodes: Iterable[Any]) -> list[ServedModel]:
    from agent.nodes.inference import ModelInference

    return [node.impl.served for node in nodes if isinstance(node.impl, ModelInference)]
