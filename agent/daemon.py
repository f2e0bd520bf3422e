"""The agent process: frame sources feed workflow runs until SIGTERM, then in-flight runs drain.

``Agent.start`` picks the device profile, opens the model store (installing configured model
files), loads the live thresholds, compiles every configured workflow against them (models are
loaded and sessions created here, before any frame), then starts the sources and the run
workers. ``Agent.stop`` stops the sources, lets the workers finish every queued frame and shuts
the runtime down.

With a ``sync`` section the agent is managed by a control plane (docs/sync.md): it restores what
the control plane last had it run, then connects over MQTT and reconciles every desired state.
The reconciler reaches the agent through ``compile_document``, ``activate_plan`` (a running
workflow's plan is swapped between two frames; a new workflow gets its frame sources from the
config binding that names its id, or none), ``retire_workflow`` and ``plans``.

Every results line (``results_jsonl``) carries a ``lineage`` object: the workflow version, model
sha256, threshold set and version, rollout id, cohort and bundle sha256 that produced it. The
rollout layer (``agent.rollout``) reaches the services through ``warm_up`` (a candidate runs on
the workflow's most recent real frames, with no effect), ``watch_plan`` (the health gate sees
every run of the watched plan, on the run worker, so a rollback happens between two frames) and
``run_shadow`` (a shadow plan runs each frame after the active run, on its own bounded queue).

A managed agent also keeps telemetry (docs/sync.md, "Telemetry"): every run is counted by a
:class:`agent.sync.telemetry.TelemetryCollector` under the lineage of the plan that ran it (kept
per workflow, updated when a plan is swapped and after each apply), the collector appends a
``TelemetryRecord`` per interval and a ``part_rejected`` event per reject to the outbox
(``<data_dir>/sync/outbox.db``), and an :class:`agent.sync.sender.OutboxSender` drains the outbox
to the control plane, deleting records only when the control plane acks them.

Beside its workflows the agent serves, from the moment ``Agent.start`` begins (so that probes
get an answer while models load):

- the device API (``agent.device_api``, docs/device-api.md) on ``<data_dir>/device.sock``: its
  health is NOT_SERVING until the agent runs and from the moment ``Agent.stop`` begins; every
  run, from a frame source or the API, is published on :attr:`Agent.device_events`; a
  ``SetThreshold`` override is logged and, when managed, reported to the control plane
  (``agent.sync.overrides``);
- Prometheus metrics (``agent.metrics``, docs/metrics.md) on ``metrics.host:metrics.port``.

Either failing to bind is logged as an error and the agent runs without it (the inspection line
matters more than its side doors; the health check and the scrape then show it).

``Agent.serve`` also talks to systemd (``agent.service``, docs/service.md): ``STATUS=`` while
starting, ``READY=1`` once it serves, ``WATCHDOG=1`` pings while the main loop and every run
worker are alive, ``STOPPING=1`` on SIGTERM.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from agent.config import AgentSettings, WorkflowBinding
from agent.device_api import AgentHost, DeviceServer, EventBus, OverrideLog, ServerError, ThresholdOverride
from agent.inference.backend import BackendOptions
from agent.inference.backends import make_backends
from agent.inference.runtime import ModelRuntime
from agent.inference.store import ModelStore
from agent.profiles import DeviceFacts, Profile, bundled_profiles_dir, load_profiles, select_profile
from agent.rollout.slots import Origin, lineage_of
from agent.service import Heartbeat, ServiceNotifier, Watchdog
from agent.sync.link import AgentSync
from agent.thresholds import ThresholdStore
from agent.workflow import (
    CompileOptions,
    Executor,
    Plan,
    RunResult,
    SpecError,
    compile_workflow,
    read_document,
)
from agent.workflow_service import RECENT_FRAMES, WorkflowService, WorkflowStats

if TYPE_CHECKING:
    from agent.metrics import AgentMetrics
    from agent.sync.outbox import Outbox
    from agent.sync.overrides import OverrideReporter
    from agent.sync.telemetry import Lineage, SystemProbe, TelemetryCollector

__all__ = ["RECENT_FRAMES", "Agent", "WorkflowService", "WorkflowStats"]

log = logging.getLogger(__name__)


class Agent:
    """One agent process: :meth:`start`, then :meth:`wait` (or :meth:`serve` for all of it under
    systemd), then :meth:`stop`. Implements the reconciler's ``WorkflowHost`` and the metrics'
    scrape view (``workflow_services``, ``sync_outbox``)."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.profile: Profile | None = None
        self.profile_reasons: list[str] = []
        self.thresholds = ThresholdStore()
        self.runtime: ModelRuntime | None = None
        self.executor: Executor | None = None
        self.services: list[WorkflowService] = []
        self.sync: AgentSync | None = None
        self.telemetry: TelemetryCollector | None = None
        self._results: TextIO | None = None
        self._stop = threading.Event()
        self._services_lock = threading.RLock()
        self._compile_options: CompileOptions | None = None
        self._waiting_bindings: dict[str, WorkflowBinding] = {}
        self._origins: dict[str, tuple[Plan, Origin]] = {}
        self._running = False
        self.started_at: float | None = None
        self.device_events = EventBus(settings.device_api.event_buffer)
        """Every run's decision and events, and threshold overrides (the device API's ``WatchEvents``)."""
        self.overrides = OverrideLog(settings.data_dir / "device_api" / "threshold_overrides.jsonl")
        self.device_api: DeviceServer | None = None
        self.metrics: AgentMetrics | None = None
        self.metrics_port: int | None = None
        """The port ``/metrics`` is served on (the free one picked for port 0); ``None``: not served."""
        self.notifier = ServiceNotifier(None)
        """systemd's notification socket (set by :meth:`serve`; a no-op otherwise)."""
        self.watchdog: Watchdog | None = None
        """systemd's watchdog (set by :meth:`serve`): run workers register their beats with it."""
        self.heartbeat: Heartbeat | None = None
        self._override_reporter: OverrideReporter | None = None
        self._metrics_probe: SystemProbe | None = None

    def start(self) -> None:
        """Start serving: the device API and metrics first, then profile, models, thresholds,
        workflows, sync, sources and workers. Raises (``SpecError``, ``CompileError``,
        ``ProfileError``, ``InferenceError``) when the agent cannot run; call :meth:`stop` then."""
        settings = self.settings
        self._start_device_api()
        self._start_metrics()
        profiles = load_profiles(bundled_profiles_dir(settings.profiles_dir))
        detection = select_profile(profiles, DeviceFacts.probe(), settings.profile)
        self.profile, self.profile_reasons = detection.profile, detection.reasons
        inference = detection.profile.inference
        log.info(
            "device %s: profile %s (%s)",
            settings.device_id,
            detection.profile.name,
            "; ".join(detection.reasons[:1]),
        )
        store = ModelStore(settings.data_dir / "models")
        for model in settings.models:
            store.install(model.file, model.id, model.version)
        options = BackendOptions(
            precision=inference.precision,
            max_batch=inference.max_batch_size,
            workspace_mb=inference.workspace_mb or 1024,
            use_dla=inference.use_dla,
            dla_core=inference.dla_core or 0,
            cpu_threads=inference.cpu_threads,
            cpu_spin_wait=inference.cpu_spin_wait,
            cache_dir=settings.data_dir / "engines",
        )
        self.runtime = ModelRuntime(
            store, make_backends(inference.backends), options, max_wait_ms=inference.max_wait_ms
        )
        for name, values in settings.thresholds.items():
            self.thresholds.put(name, values)
        self.executor = Executor(max_workers=max(4, sum(b.workers for b in settings.workflows) * 2))
        compile_options = CompileOptions(
            schema_dirs=tuple(settings.schema_dirs),
            resources={"models": self.runtime, "thresholds": self.thresholds},
        )
        self._compile_options = compile_options
        plans: list[tuple[Plan, WorkflowBinding]] = []
        for binding in settings.workflows:
            if binding.file is None:
                assert binding.workflow is not None  # the binding's validator checks it
                self._waiting_bindings[binding.workflow] = binding
                continue
            plan = compile_workflow(read_document(binding.file), compile_options)
            if binding.workflow is not None and binding.workflow != plan.workflow_id:
                raise SpecError(
                    f"the binding names workflow '{binding.workflow}' but the file holds "
                    f"workflow '{plan.workflow_id}'",
                    source=str(binding.file),
                )
            plans.append((plan, binding))
        if settings.results_jsonl is not None:
            settings.results_jsonl.parent.mkdir(parents=True, exist_ok=True)
            # line-buffered: each result is written when it is made, so a crash or a kill loses none
            self._results = settings.results_jsonl.open("a", encoding="utf-8", buffering=1)
        services = [self._new_service(plan, binding) for plan, binding in plans]
        with self._services_lock:
            self.services = services
        for service in services:
            lineage = self._lineage_or_none(service.plan)
            if lineage is not None:
                service.set_lineage(service.plan, lineage)
        if settings.sync is not None:
            self.sync = AgentSync.create(self, settings)
            self.telemetry = self.sync.telemetry
            for service in services:
                self._attach_telemetry(service)
            self.sync.restore()  # what the control plane had running, before any frame
            self._start_override_reports()  # filed under the restored workflows
        self.started_at = time.monotonic()
        with self._services_lock:
            self._running = True
            services = list(self.services)
        for service in services:
            service.start()
        if self.sync is not None:
            self.sync.start()

    def _new_service(self, plan: Plan, binding: WorkflowBinding) -> WorkflowService:
        """A service for ``plan``, publishing its runs on the event bus and to the metrics, its
        workers' beats registered with the watchdog."""
        assert self.executor is not None
        service = WorkflowService(
            plan, binding, self.executor, self._results, max_run_s=self.settings.watchdog.max_run_s
        )
        service.events = self.device_events
        service.metrics = self.metrics
        self._watch_workers(service)
        return service

    def _watch_workers(self, service: WorkflowService) -> None:
        watchdog = self.watchdog
        if watchdog is None:
            return
        workflow_id = service.plan.workflow_id
        for index, beat in enumerate(service.beats):
            watchdog.unregister(f"{workflow_id}.{index}")  # a workflow retired and assigned again
            watchdog.register(f"{workflow_id}.{index}", beat.check)

    def _unwatch_workers(self, service: WorkflowService) -> None:
        if self.watchdog is not None:
            for index in range(len(service.beats)):
                self.watchdog.unregister(f"{service.plan.workflow_id}.{index}")

    # ---- the device API, metrics and threshold overrides -----------------------------------------

    def _start_device_api(self) -> None:
        """Serve the device API (health NOT_SERVING until the agent runs); logged, and the agent
        runs without it, when its socket cannot be bound."""
        settings = self.settings
        if not settings.device_api.enabled or self.device_api is not None:
            return
        host = AgentHost(self, self.device_events, overrides=self.overrides, on_override=self._override_made)
        server = DeviceServer(host, settings.device_api, data_dir=settings.data_dir)
        try:
            server.start()
        except ServerError as exc:
            server.stop()
            log.error("device API not served: %s; the agent runs without it", exc)
            return
        self.device_api = server

    def _start_metrics(self) -> None:
        """Serve ``/metrics``; logged, and the agent runs without it, when the port is taken."""
        from agent.metrics import AgentMetrics
        from agent.metrics_sources import AgentMetricSources
        from agent.sync.telemetry import SystemProbe

        config = self.settings.metrics
        if not config.enabled or self.metrics is not None:
            return
        probe = SystemProbe(self.settings.data_dir)
        metrics = AgentMetrics(AgentMetricSources(self), probe=probe)
        try:
            port = metrics.serve(config.host, config.port)
        except OSError as exc:
            probe.close()
            log.error("metrics not served: %s; the agent runs without them", exc)
            return
        self.metrics, self.metrics_port, self._metrics_probe = metrics, port, probe
        log.info("metrics on http://%s:%d/metrics", config.host, port)

    def workflow_services(self) -> list[WorkflowService]:
        """The running workflow services, a snapshot."""
        with self._services_lock:
            return list(self.services)

    def sync_outbox(self) -> Outbox | None:
        """The managed agent's outbox (``None``: not managed, or the outbox is unusable)."""
        return self.sync.outbox if self.sync is not None else None

    def _override_made(self, override: ThresholdOverride) -> None:
        """``SetThreshold`` applied an override: log it; report it when managed (else it is
        reported once the agent is managed)."""
        log.warning(
            "threshold override: %s.%s = %g (was %s), set version %d, by %s from %s%s",
            override.threshold_set,
            override.key,
            override.value,
            override.previous,
            override.version,
            override.actor or "-",
            override.origin,
            f": {override.reason}" if override.reason else "",
        )
        if self._override_reporter is not None:
            self._override_reporter.report(override)

    def _start_override_reports(self) -> None:
        from agent.sync.overrides import OverrideReporter

        if self.telemetry is None:
            return
        self._override_reporter = OverrideReporter(self.overrides, self.telemetry, self._set_lineage)
        sent = self._override_reporter.report_backlog()
        if sent:
            log.info("sync: %d threshold override(s) made earlier reported to the control plane", sent)

    def _set_lineage(self, threshold_set: str, version: int) -> Lineage:
        """The lineage an event about ``threshold_set`` at ``version`` is filed under: the first
        running workflow (by id) that reads the set, else none."""
        from agent.device_api.agent_host import plan_threshold_sets
        from agent.sync.telemetry import Lineage

        for workflow_id, plan in sorted(self.plans().items()):
            if threshold_set in plan_threshold_sets(plan):
                lineage = self._lineage_or_none(plan) or Lineage(workflow_id, plan.version)
                return dataclasses.replace(lineage, threshold_set=threshold_set, threshold_version=version)
        return Lineage("", threshold_set=threshold_set, threshold_version=version)

    # ---- the reconciler's view of the agent (agent.sync.host.WorkflowHost) ---------------------

    @property
    def model_store(self) -> ModelStore:
        if self.runtime is None:
            raise RuntimeError("the agent is not started")
        return self.runtime.store

    def compile_document(
        self,
        document: Mapping[str, Any],
        *,
        model_versions: Mapping[str, str] | None = None,
        thresholds: ThresholdStore | None = None,
        side_effects: bool = True,
    ) -> Plan:
        """Compile a workflow graph against this agent's runtime and live thresholds.

        ``model_versions`` pins the model version of every ``model_inference`` node that names
        none (instead of the newest installed); ``thresholds`` replaces the live store (a shadow
        plan's private view); without ``side_effects`` its ``emit`` nodes emit nothing."""
        from agent.nodes.emit import SIDE_EFFECTS_RESOURCE
        from agent.nodes.inference import MODEL_VERSIONS_RESOURCE
        from agent.nodes.threshold import THRESHOLDS_RESOURCE

        if self._compile_options is None:
            raise RuntimeError("the agent is not started")
        options = self._compile_options
        resources = dict(options.resources or {})
        if model_versions is not None:
            resources[MODEL_VERSIONS_RESOURCE] = dict(model_versions)
        if thresholds is not None:
            resources[THRESHOLDS_RESOURCE] = thresholds
        resources[SIDE_EFFECTS_RESOURCE] = side_effects
        return compile_workflow(dict(document), dataclasses.replace(options, resources=resources))

    def plans(self) -> dict[str, Plan]:
        with self._services_lock:
            return {service.plan.workflow_id: service.plan for service in self.services}

    def service(self, workflow_id: str) -> WorkflowService | None:
        with self._services_lock:
            return next((s for s in self.services if s.plan.workflow_id == workflow_id), None)

    def activate_plan(self, plan: Plan, origin: Origin | None = None) -> None:
        """Run ``plan``: a running workflow of that id has its plan swapped between two frames; a
        new one gets a service fed by the config binding that names its id (none: no sources,
        it runs when asked, e.g. through the device API). ``origin`` says which rollout, cohort
        and bundle the plan's results belong to; the plan already running only takes it."""
        with self._services_lock:
            if origin is not None:
                self._origins[plan.workflow_id] = (plan, origin)
            else:
                self._origins.pop(plan.workflow_id, None)
            lineage = self._lineage_or_none(plan)
            service = self.service(plan.workflow_id)
            if service is not None:
                if service.plan is plan:
                    if lineage is not None:
                        service.set_lineage(plan, lineage)
                else:
                    service.replace_plan(plan, lineage)
                return
            if self.executor is None:
                raise RuntimeError("the agent is not started")
            binding = self._waiting_bindings.pop(plan.workflow_id, None) or WorkflowBinding(
                workflow=plan.workflow_id
            )
            service = self._new_service(plan, binding)
            if lineage is not None:
                service.set_lineage(plan, lineage)
            self._attach_telemetry(service, lineage)
            self.services.append(service)
            if self._running:
                service.start()

    def warm_up(self, plan: Plan, frames: int) -> list[tuple[RunResult, float]]:
        """Run ``plan`` ``frames`` times on its workflow's most recent real frames (cycling
        through them), on the calling thread: no results line, no telemetry, no event. Empty when
        the workflow has run no frame yet."""
        service = self.service(plan.workflow_id)
        recent = list(service.recent) if service is not None else []
        if not recent or self.executor is None:
            return []
        assert service is not None
        documents = [frame.document(service.binding.input_key) for frame in recent[::-1]]
        results = []
        for index in range(frames):
            started = time.perf_counter()
            result = self.executor.run(plan, documents[index % len(documents)])
            results.append((result, time.perf_counter() - started))
        return results

    @contextlib.contextmanager
    def between_frames(self, workflow_ids: Iterable[str]) -> Iterator[None]:
        """While inside, no frame of these workflows runs: the frames in flight have finished and
        the next ones wait (plans and thresholds change together)."""
        with contextlib.ExitStack() as stack:
            for workflow_id in sorted(set(workflow_ids)):
                service = self.service(workflow_id)
                if service is not None:
                    stack.enter_context(service.frame_gate.between_frames())
            yield

    def watch_plan(
        self, workflow_id: str, plan: Plan, observer: Callable[[RunResult, float], object] | None
    ) -> None:
        """Hand every run of ``plan`` to ``observer`` (the health gate); ``None``: stop."""
        service = self.service(workflow_id)
        if service is not None:
            service.watch(plan, observer)

    def run_shadow(self, workflow_id: str, plan: Plan | None, lineage: Lineage | None) -> None:
        """Run ``plan`` beside the workflow's active plan on every frame, counted under
        ``lineage`` (cohort ``shadow``); ``None``: stop the shadow."""
        from agent.rollout.shadow import ShadowRunner

        service = self.service(workflow_id)
        if service is None:
            if plan is not None:
                log.warning("shadow of '%s': the workflow does not run here; the shadow waits", workflow_id)
            return
        runner = None
        if plan is not None and lineage is not None and self.executor is not None:
            runner = ShadowRunner(plan, lineage, self.executor, telemetry=self.telemetry)
        service.set_shadow(runner)

    # ---- telemetry ------------------------------------------------------------------------------

    def lineage_for(self, plan: Plan) -> Lineage:
        """What ``plan``'s results come from: workflow version, model sha256 and threshold set from
        the plan itself (its threshold set at the live version); rollout id, cohort and bundle
        from the origin the reconciler activated it with (empty outside a rollout, and for a
        plan compiled from the config)."""
        entry = self._origins.get(plan.workflow_id)
        origin = entry[1] if entry is not None and entry[0] is plan else None
        return lineage_of(plan, self.thresholds, origin)

    def _lineage_or_none(self, plan: Plan) -> Lineage | None:
        try:
            return self.lineage_for(plan)
        except Exception:  # lineage is a stamp: it must never keep a plan from running
            log.exception("workflow %s: cannot work out the plan's lineage", plan.workflow_id)
            return None

    def _attach_telemetry(self, service: WorkflowService, lineage: Lineage | None = None) -> None:
        if self.telemetry is None:
            return
        plan = service.plan
        lineage = lineage if lineage is not None else self._lineage_or_none(plan)
        if lineage is not None:
            service.set_lineage(plan, lineage)
        service.telemetry = self.telemetry

    def refresh_lineages(self) -> None:
        """Work out every running plan's lineage again (after an apply: a new rollout id or
        threshold version does not always swap the plan)."""
        with self._services_lock:
            services = list(self.services)
        for service in services:
            plan = service.plan
            lineage = self._lineage_or_none(plan)
            if lineage is not None and lineage != service.lineage:
                service.set_lineage(plan, lineage)

    def frame_drops(self) -> list[tuple[str, int, Lineage]]:
        """``(workflow id, frames its queue dropped so far, current lineage)`` per workflow."""
        from agent.sync.telemetry import Lineage

        with self._services_lock:
            services = list(self.services)
        drops = []
        for service in services:
            plan = service.plan
            lineage = service.lineage or Lineage(plan.workflow_id, plan.version)
            drops.append((plan.workflow_id, service.queue.dropped, lineage))
        return drops

    def retire_workflow(self, workflow_id: str) -> None:
        """Stop a workflow the control plane no longer assigns. One bound to a file in the
        config keeps running the plan it has: the config still asks for it."""
        with self._services_lock:
            service = self.service(workflow_id)
            if service is None or service.binding.file is not None:
                return
            self.services.remove(service)
            if service.binding.workflow is not None and service.binding.sources:
                self._waiting_bindings[workflow_id] = service.binding
        self._unwatch_workers(service)
        service.stop()

    def model_backend(self, model_id: str) -> str:
        if self.runtime is None:
            return ""
        for served in self.runtime.loaded():
            if served.record.model_id == model_id:
                return served.backend
        return ""

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def wait(self, poll_s: float = 0.2) -> None:
        """Until a stop is requested, or every source has run out (finite sources; an agent
        managed by a control plane runs until stopped). Beats :attr:`heartbeat` on every pass
        and, every :data:`STATUS_EVERY_S` while the watchdog sees nothing wrong, sends systemd a
        status line when it changed."""
        last_status, next_status = "", time.monotonic() + STATUS_EVERY_S
        while True:
            if self.heartbeat is not None:
                self.heartbeat.beat()
            if self._stop.wait(poll_s):
                return
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + STATUS_EVERY_S
                line = self.status_line()
                healthy = self.watchdog is None or not self.watchdog.state().failing
                if healthy and line != last_status:
                    self.notifier.status(line)
                    last_status = line
            if self.sync is not None:
                continue
            services = self.workflow_services()
            if services and all(service.sources_done() for service in services):
                return

    def status_line(self) -> str:
        """One line for people (``systemctl status``): workflows, runs, rejects, drops, link."""
        services = self.workflow_services()
        runs = sum(s.stats.runs for s in services)
        rejected = sum(s.stats.decisions.get("reject", 0) for s in services)
        dropped = sum(s.queue.dropped for s in services)
        profile = self.profile.name if self.profile is not None else "?"
        line = (
            f"serving {len(services)} workflows (profile {profile}): {runs} runs, {rejected} rejected, "
            f"{dropped} frames dropped"
        )
        if self.sync is not None:
            connected = self.sync.client.connected.is_set()
            line += "; control plane " + ("connected" if connected else "not connected")
        return line

    def stop(self) -> None:
        """Stop in order: the device API (health NOT_SERVING at once), the sync link, the sources;
        every queued frame still runs; then telemetry, executor, runtime, metrics. Safe to call
        again, and after a failed :meth:`start`."""
        if self.device_api is not None:
            self.device_api.stop()
        if self.sync is not None:
            self.sync.stop()
        with self._services_lock:
            self._running = False
            services = list(self.services)
        for service in services:
            self._unwatch_workers(service)
            service.stop()
        if self.sync is not None:
            self.sync.close()  # after the last run: the final partial interval goes to the outbox
        if self.executor is not None:
            self.executor.close()
        if self.runtime is not None:
            self.runtime.close()
        if self._results is not None:
            self._results.close()
        if self.metrics is not None:
            self.metrics.close()
        if self._metrics_probe is not None:
            self._metrics_probe.close()

    def summary(self) -> list[dict[str, Any]]:
        return [service.summary() for service in list(self.services)]

    def status(self) -> dict[str, Any]:
        """The agent at a glance: its workflows' counters and, when managed, the sync link's
        (telemetry, outbox and sender counters, events suppressed by the per-interval cap)."""
        return {
            "device_id": self.settings.device_id,
            "profile": self.profile.name if self.profile else None,
            "workflows": self.summary(),
            "sync": self.sync.status() if self.sync is not None else None,
        }

    def serve(self) -> list[dict[str, Any]]:
        """Run until SIGTERM/SIGINT (or until finite sources run out); drain; return the summary.

        Under systemd (``$NOTIFY_SOCKET``): ``STATUS=starting…`` first, ``READY=1`` once every
        workflow runs, ``WATCHDOG=1`` every ``WatchdogSec/2`` while the main loop and every run
        worker are alive (``$WATCHDOG_USEC``), ``STOPPING=1`` as the drain begins, and a last
        ``STATUS=stopped``."""
        previous = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        notifier = self.notifier = ServiceNotifier.from_environ()
        watchdog = self.watchdog = Watchdog.from_environ(notifier)
        try:
            notifier.status("starting: loading models, compiling workflows")
            self.start()
            self.heartbeat = Heartbeat("main loop", max_silence_s=self.settings.watchdog.max_loop_silence_s)
            watchdog.register("main", self.heartbeat.check)
            watchdog.start()
            notifier.ready(self._ready_line())
            self.wait()
        finally:
            notifier.stopping("draining in-flight runs")
            watchdog.stop()
            try:
                self.stop()
            finally:
                notifier.status("stopped")
                notifier.close()
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        return self.summary()

    def _ready_line(self) -> str:
        profile = self.profile.name if self.profile is not None else "?"
        line = f"serving {len(self.workflow_services())} workflows (profile {profile})"
        missing = [
            name
            for name, wanted, served in (
                ("device API", self.settings.device_api.enabled, self.device_api is not None),
                ("metrics", self.settings.metrics.enabled, self.metrics is not None),
            )
            if wanted and not served
        ]
        return line + (f"; not served (see the log): {', '.join(missing)}" if missing else "")


STATUS_EVERY_S = 10.0
"""How often the main loop may update the status line systemd shows."""
