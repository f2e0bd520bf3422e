"""The reconciler's rollout steps (docs/rollouts.md): what an apply does with a bundle, and what the
device does by itself — health-gate rollbacks and crash-loop quarantine.

:class:`RolloutSteps` is a mixin of :class:`agent.sync.reconciler.Reconciler`; it works on the
reconciler's state under the reconciler's locks.

- **Candidates.** An assignment with a bundle is verified by :func:`agent.rollout.bundle.verify_bundle`
  before anything is fetched; a bundle that fails here, or whose artifacts fail verification,
  download, install or compile, is ``REFUSED``; a canary whose warm-up runs fail is ``WARMUP``.
  A failed bundle is recorded in the :class:`~agent.rollout.ledger.RolloutLedger`, the rest of the
  desired state is applied, and the workflow keeps what it runs. A failed bundle the desired state
  still names is skipped, not retried.
- **Switch.** A canary's slot A (the replaced plan) is kept; the health gate then watches the
  canary's first runs. When it trips, the run worker that saw the failing run swaps slot A back in
  before its next frame (:meth:`RolloutSteps._gate_tripped`); the failure, ``state.json`` and a
  ``rollback`` event follow on another thread.
- **Restore.** An unclean end with a candidate watched counts a crash; at the limit the candidate is
  quarantined (``CRASH_LOOP``) and slot A runs instead. What ``state.json`` names is re-verified
  (model digests re-hashed, stored graphs and threshold sets checked) before it runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from agent.inference.errors import InferenceError
from agent.rollout.bundle import BundleError, Gate, verify_bundle
from agent.rollout.gate import HealthGate
from agent.rollout.ledger import CRASH_LOOP_LIMIT, RolloutLedger, Watch
from agent.rollout.slots import Origin, Slot, lineage_of
from agent.sync.artifacts import Artifacts, threshold_values
from agent.sync.fetch import ApplyError
from agent.sync.state import AppliedWorkflow, SyncState
from agent.thresholds import ThresholdSet, ThresholdStore
from agent.workflow import CompileError, Plan
from protos import sync_pb2

if TYPE_CHECKING:
    from datetime import datetime

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from agent.sync.host import WorkflowHost
    from agent.sync.reconciler import _Prepared
    from agent.sync.telemetry import TelemetryCollector

__all__ = ["RESTORE_ERRORS", "RolloutSteps"]

log = logging.getLogger(__name__)

RESTORE_ERRORS = (ApplyError, CompileError, InferenceError, OSError, ValueError)
"""What restoring a workflow from ``state.json`` may meet (logged and reported, never raised)."""


class RolloutSteps:
    """The rollout half of the reconciler (see the module docstring)."""

    host: WorkflowHost
    public_key: Ed25519PublicKey
    state: SyncState
    store: Artifacts
    ledger: RolloutLedger
    telemetry: TelemetryCollector | None
    on_changed: Callable[[sync_pb2.ReportedState], object] | None
    candidates: dict[str, Plan]
    _lock: threading.RLock
    _switch_lock: threading.Lock
    _activated: dict[str, Plan]
    _slots: dict[str, Slot]
    _gates: dict[str, HealthGate]
    _clock: Callable[[], datetime]

    # provided by the reconciler
    def _verify_assignment(self, assignment: sync_pb2.WorkflowAssignment) -> _Prepared:
        raise NotImplementedError

    def _save(self) -> None:
        raise NotImplementedError

    def report(self) -> sync_pb2.ReportedState:
        raise NotImplementedError

    # ---- preparing a candidate -----------------------------------------------------------------

    def _verify_candidate(self, assignment: sync_pb2.WorkflowAssignment) -> _Prepared | None:
        """The assignment with its bundle verified; ``None`` (recorded as a failure, or one
        recorded before) when the device will not run it."""
        sha256 = hashlib.sha256(assignment.bundle).hexdigest()
        watch = Watch(assignment.workflow.name, assignment.rollout_id, sha256)
        failure = self.ledger.failure(sha256)
        if failure is not None:
            log.info(
                "rollout %s: bundle %s… failed before (%s): not retried",
                watch.rollout_id,
                sha256[:12],
                failure.kind,
            )
            return None
        try:
            bundle = verify_bundle(assignment, self.public_key, now=self._clock())
        except BundleError as exc:
            self.ledger.fail(watch, "REFUSED", str(exc))
            return None
        try:
            item = self._verify_assignment(assignment)
        except ApplyError as exc:
            if exc.transient:
                raise
            self.ledger.fail(watch, "REFUSED", str(exc))
            return None
        item.bundle = bundle
        return item

    @contextmanager
    def _refusing(self, item: _Prepared, prepared: list[_Prepared]) -> Iterator[None]:
        """A failure inside refuses a bundle's assignment (and drops it from ``prepared``); other
        assignments fail the whole apply, as do transient errors (retried as they are)."""
        try:
            yield
        except ApplyError as exc:
            if item.bundle is None or exc.transient:
                raise
            self.ledger.fail(item.watch(), "REFUSED", str(exc))
            prepared.remove(item)

    def _warmed_up(self, item: _Prepared) -> bool:
        """Warm the canary's plan up on recent real frames; False (``WARMUP`` recorded) when a
        warm-up run fails. Crashes from here on are blamed on the candidate."""
        assert item.bundle is not None
        assert item.plan is not None
        watch = item.watch()
        self.ledger.start_watch(watch)
        frames = item.bundle.gate.warmup_frames
        results = self.host.warm_up(item.plan, frames) if frames else []
        if frames and not results:
            log.warning(
                "rollout %s: workflow '%s' has seen no frame yet: warming up on nothing",
                watch.rollout_id,
                item.workflow_id,
            )
        failed = [result for result, _ in results if not result.ok]
        if not failed:
            log.info(
                "rollout %s: warm-up of '%s' passed (%d frames)",
                watch.rollout_id,
                item.workflow_id,
                len(results),
            )
            return True
        first = failed[0].error
        where = f" the first at node '{first.node}': {first.message}" if first is not None else ""
        self.ledger.fail(watch, "WARMUP", f"{len(failed)} of {len(results)} warm-up runs failed;{where}")
        return False

    # ---- slots and the gate --------------------------------------------------------------------

    def _keep_slot(self, item: _Prepared) -> None:
        """Before a switch: a new canary plan keeps what runs now as slot A; anything else that
        is not a canary runs without slot A or gate."""
        workflow_id = item.workflow_id
        if not item.canary:
            self._drop_slot(workflow_id)
            return
        if item.plan is None:
            return  # the same canary again: its slot and gate stay as they are
        current = self._activated.get(workflow_id)
        applied = self.state.workflows.get(workflow_id)
        if current is None or applied is None or self.host.plans().get(workflow_id) is not current:
            self._drop_slot(workflow_id)  # nothing of ours runs: nothing to go back to
            return
        live_sets = {name: self.host.thresholds.get(name) for name in applied.thresholds}
        thresholds = {name: live for name, live in live_sets.items() if live is not None}
        self._slots[workflow_id] = Slot(current, applied, thresholds)

    def _drop_slot(self, workflow_id: str) -> None:
        self._slots.pop(workflow_id, None)
        gate = self._gates.pop(workflow_id, None)
        if gate is not None:
            plan = self._activated.get(workflow_id)
            if plan is not None:
                self.host.watch_plan(workflow_id, plan, None)

    def _arm_gate(self, workflow_id: str, plan: Plan, watch: Watch, gate: Gate) -> None:
        def trip(reason: str) -> None:
            self._gate_tripped(workflow_id, plan, watch, reason)

        def passed() -> None:
            self.host.watch_plan(workflow_id, plan, None)
            self.ledger.end_watch(watch.bundle_sha256, healthy=True)
            log.info("rollout %s: the health gate passed '%s'", watch.rollout_id, workflow_id)

        health = HealthGate(gate, on_trip=trip, on_pass=passed)
        self._gates[workflow_id] = health
        self.host.watch_plan(workflow_id, plan, health.observe)
        if health.done:
            passed()

    def _gate_tripped(self, workflow_id: str, plan: Plan, watch: Watch, reason: str) -> None:
        """On the run worker that saw the failing run: slot A runs from the next frame on."""
        with self._switch_lock, self.host.between_frames([workflow_id]):
            if self._activated.get(workflow_id) is not plan:
                return  # replaced meanwhile
            self.host.watch_plan(workflow_id, plan, None)
            slot = self._slots.get(workflow_id)
            if slot is not None:
                for name, kept in slot.thresholds.items():
                    self.host.thresholds.put(
                        name, kept.values, kept.version, rollback=True, local_base=kept.local_base
                    )
                self.host.activate_plan(slot.plan, Origin.of(slot.applied))
                self._activated[workflow_id] = slot.plan
                log.error(
                    "rollout %s: health gate tripped for '%s': %s; back on version %d",
                    watch.rollout_id,
                    workflow_id,
                    reason,
                    slot.plan.version,
                )
            else:
                log.error(
                    "rollout %s: health gate tripped for '%s': %s; nothing to go back to, it keeps running",
                    watch.rollout_id,
                    workflow_id,
                    reason,
                )
        threading.Thread(
            target=self._after_rollback,
            args=(workflow_id, plan, watch, reason, slot),
            name="edgefleet-rollback",
            daemon=True,
        ).start()

    def _after_rollback(
        self, workflow_id: str, plan: Plan, watch: Watch, reason: str, slot: Slot | None
    ) -> None:
        with self._lock:
            self.ledger.fail(watch, "HEALTH_GATE", reason)
            self._gates.pop(workflow_id, None)
            current = self.state.workflows.get(workflow_id)
            if slot is not None and current is not None and current.bundle_sha256 == watch.bundle_sha256:
                self.state.workflows[workflow_id] = slot.applied
                self.state.previous.pop(workflow_id, None)
                self._slots.pop(workflow_id, None)
                self._save()
            origin = Origin.of(current) if current is not None else Origin()
            self._rollback_event(plan, origin, watch, "HEALTH_GATE", reason)
        if self.on_changed is not None:
            try:
                self.on_changed(self.report())
            except Exception:
                log.exception("rollout: reporting the rollback failed")

    def _rollback_event(
        self, plan: Plan | None, origin: Origin, watch: Watch, kind: str, reason: str
    ) -> None:
        if self.telemetry is None:
            return
        from agent.sync.telemetry import Lineage

        if plan is not None:
            lineage = lineage_of(plan, self.host.thresholds, origin)
        else:
            lineage = Lineage(watch.workflow_id, rollout_id=watch.rollout_id, cohort=origin.cohort)
        lineage = dataclasses.replace(lineage, bundle_sha256=watch.bundle_sha256)
        self.telemetry.add_event(
            "rollback",
            severity="error",
            lineage=lineage,
            message=f"rollout {watch.rollout_id}: {kind}: {reason}",
            attributes={
                "kind": kind,
                "reason": reason,
                "rollout_id": watch.rollout_id,
                "bundle_sha256": watch.bundle_sha256,
            },
        )

    # ---- restoring -----------------------------------------------------------------------------

    def _account_crash(self) -> None:
        """Count an unclean end against the candidate that was watched; quarantine it at the limit."""
        blamed = self.ledger.started()
        if blamed is not None:
            watch, count = blamed
            if count < CRASH_LOOP_LIMIT:
                log.warning(
                    "rollout %s: the agent ended uncleanly with bundle %s… being prepared or watched "
                    "(%d of %d)",
                    watch.rollout_id,
                    watch.bundle_sha256[:12],
                    count,
                    CRASH_LOOP_LIMIT,
                )
            else:
                reason = (
                    f"the agent ended uncleanly {count} times in a row while this bundle was being "
                    "prepared or watched by the health gate: quarantined"
                )
                self.ledger.fail(watch, "CRASH_LOOP", reason)
                current = self.state.workflows.get(watch.workflow_id)
                origin = Origin.of(current) if current is not None else Origin()
                if current is not None and current.bundle_sha256 == watch.bundle_sha256:
                    previous = self.state.previous.pop(watch.workflow_id, None)
                    if previous is not None:
                        self.state.workflows[watch.workflow_id] = previous
                    else:
                        del self.state.workflows[watch.workflow_id]
                    self._save()
                self._rollback_event(None, origin, watch, "CRASH_LOOP", reason)
        watch_now = self.ledger.watch
        running = {applied.bundle_sha256 for applied in self.state.workflows.values()}
        if watch_now is not None and watch_now.bundle_sha256 not in running:
            self.ledger.end_watch(watch_now.bundle_sha256, healthy=False)

    def _verified_thresholds(self, applied: AppliedWorkflow) -> dict[str, ThresholdSet]:
        sets = {}
        for name, version in applied.thresholds.items():
            data = self.store.stored("thresholds", name, version, applied.threshold_sha256.get(name))
            label = f"threshold set '{name}' version {version}"
            sets[name] = ThresholdSet(name, version, threshold_values(data, label, name, version))
        return sets

    def _verified_document(self, workflow_id: str, applied: AppliedWorkflow) -> dict[str, object]:
        import json

        for name, version in applied.models.items():
            record = self.host.model_store.resolve(name, str(version))
            expected = applied.model_sha256.get(name, record.sha256)
            if record.sha256 != expected or not self.host.model_store.verify(record):
                raise ApplyError(
                    f"model '{name}' version {version}: the installed file does not match sha256 {expected}"
                )
        data = self.store.stored("workflow", workflow_id, applied.version, applied.sha256)
        document: dict[str, object] = json.loads(data)
        return document

    def _restore_active(self, workflow_id: str, applied: AppliedWorkflow) -> None:
        sets = self._verified_thresholds(applied)
        document = self._verified_document(workflow_id, applied)
        plan = self.host.compile_document(document, model_versions=applied.model_versions())
        previous = self.state.previous.get(workflow_id)
        slot: Slot | None = None
        if previous is not None:
            try:
                slot = Slot(
                    self.host.compile_document(
                        self._verified_document(workflow_id, previous),
                        model_versions=previous.model_versions(),
                    ),
                    previous,
                    self._verified_thresholds(previous),
                )
            except RESTORE_ERRORS as exc:
                log.error("sync: slot A of '%s' cannot be restored: %s", workflow_id, exc)
        for name, stored in sets.items():
            live = self.host.thresholds.get(name)
            if live is None or live.version <= stored.version:
                self.host.thresholds.put(name, stored.values, stored.version, rollback=True)
        self.host.activate_plan(plan, Origin.of(applied))
        self._activated[workflow_id] = plan
        if slot is not None:
            self._slots[workflow_id] = slot
        watch = self.ledger.watch
        if watch is not None and applied.bundle_sha256 == watch.bundle_sha256 and applied.gate is not None:
            self._arm_gate(workflow_id, plan, watch, Gate.from_dict(applied.gate))

    def _restore_previous(self, workflow_id: str, problems: list[str]) -> None:
        """The active plan cannot be restored: run slot A when it verifies."""
        previous = self.state.previous.pop(workflow_id, None)
        if previous is None:
            return
        try:
            self._restore_active(workflow_id, previous)
        except RESTORE_ERRORS as exc:
            problems.append(f"workflow '{workflow_id}' version {previous.version} (slot A): {exc}")
            return
        self.state.workflows[workflow_id] = previous
        self._save()
        log.warning("sync: workflow '%s' runs slot A (version %d) instead", workflow_id, previous.version)

    def _restore_shadow(self, workflow_id: str, applied: AppliedWorkflow) -> None:
        private = ThresholdStore()
        for name, stored in self._verified_thresholds(applied).items():
            private.put(name, stored.values, stored.version)
        document = self._verified_document(workflow_id, applied)
        plan = self.host.compile_document(
            document, model_versions=applied.model_versions(), thresholds=private, side_effects=False
        )
        self.candidates[workflow_id] = plan
        self.host.run_shadow(workflow_id, plan, lineage_of(plan, private, Origin.of(applied)))
