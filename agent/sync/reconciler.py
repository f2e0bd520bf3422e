"""Converge the device on its desired state: fetch, verify, install, apply, report.

:meth:`Reconciler.apply` takes a ``DesiredState`` (the retained one after every connection, so
often the same one again) and returns the ``ReportedState`` to publish. It is idempotent: what is
already in place is neither fetched nor installed nor compiled again, and a desired state equal to
the one last applied costs no network at all.

One apply, in order (the first failure stops it, and nothing running has changed by then):

1. check the shape: one active assignment per workflow id (plus at most one ``shadow``);
2. verify every artifact's signed manifest with the enrolled key (``agent.manifest``): signature,
   expiry, and no downgrade below the newest version this device has (models: the newest version
   in the model store; workflows and threshold sets: the newest the control plane delivered) —
   the same version again is fine, and so is an older one whose exact artifact (same sha256) the
   device already has (a rollback); the manifest must also describe the artifact it is attached
   to. An assignment with a rollout bundle is checked against its signed bundle first;
3. fetch what is missing over HTTP(S) into ``<data_dir>/sync/downloads/<sha256>.part``, resuming
   an interrupted download with ``Range`` from the part's size, and check its sha256 and size;
   install models into the model store (atomic); keep workflow graphs and threshold sets under
   ``<data_dir>/sync/artifacts/`` so a restart applies them again without the network;
4. compile each changed workflow against the model runtime and the live thresholds, with the
   model versions its assignment names (pinned, never "the newest installed"); a shadow plan with
   its bundle's own thresholds and no side effects; warm a canary up;
5. only then change what runs, between two frames of each switched workflow: threshold sets go
   into the live ``ThresholdStore`` and compiled plans are swapped in (a canary keeps the plan it
   replaces as slot A, and the health gate watches it); workflows the control plane no longer
   assigns are retired;
6. write ``<data_dir>/sync/state.json`` (generation, fingerprint, applied versions) atomically,
   then delete stored artifacts it no longer names.

The rollout half (bundles, slots, the health gate, crash loops, failed bundles that are reported
and not retried) is :class:`agent.rollout.steps.RolloutSteps`; see docs/sync.md, "Rollouts on the
device".

A failure reports ``phase=FAILED`` with the precise reason (which artifact, which check) and the
previous generation; the previous workflows keep running untouched. Network failures and HTTP
5xx / 408 / 429 are *transient*: :class:`ReconcileWorker` retries them with backoff until a newer
desired state arrives.

Network-free: the fetcher is an object with one method (:class:`Fetcher`); :class:`HttpFetcher`
is the real one. The agent side is the :class:`WorkflowHost` protocol, which ``agent.daemon.Agent``
implements.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.fsutil import atomic_write
from agent.manifest import (
    BadKey,
    BadSignature,
    DigestMismatch,
    DowngradeRefused,
    ExpiredManifest,
    MalformedManifest,
    Manifest,
    ManifestError,
    NotYetValid,
    verify_manifest,
)
from agent.rollout.bundle import Bundle
from agent.rollout.gate import HealthGate
from agent.rollout.ledger import RolloutLedger, Watch
from agent.rollout.slots import Origin, Slot, lineage_of
from agent.rollout.steps import RESTORE_ERRORS, RolloutSteps
from agent.sync.artifacts import Artifact, Artifacts, strip_label
from agent.sync.fetch import ApplyError, Fetched, Fetcher, FetchError, HttpFetcher
from agent.sync.host import WorkflowHost
from agent.sync.state import AppliedWorkflow, SyncState
from agent.sync.worker import ReconcileWorker
from agent.thresholds import ThresholdSet, ThresholdStore
from agent.workflow import CompileError, Plan
from protos import sync_pb2

if TYPE_CHECKING:
    from agent.sync.telemetry import TelemetryCollector

__all__ = [
    "AppliedWorkflow",
    "ApplyError",
    "FetchError",
    "Fetched",
    "Fetcher",
    "HttpFetcher",
    "ReconcileWorker",
    "Reconciler",
    "SyncState",
    "WorkflowHost",
]

log = logging.getLogger(__name__)

_KIND_DIRS = {"workflow": "workflows", "thresholds": "thresholds"}


# ---- verification ------------------------------------------------------------------------------

_CHECKS: tuple[tuple[type[ManifestError], str], ...] = (
    (MalformedManifest, "malformed manifest"),
    (BadSignature, "bad signature"),
    (ExpiredManifest, "expired manifest"),
    (NotYetValid, "manifest not yet valid"),
    (DowngradeRefused, "downgrade refused"),
    (DigestMismatch, "digest mismatch"),
    (BadKey, "bad key"),
)


def _check_name(exc: ManifestError) -> str:
    for kind, name in _CHECKS:
        if isinstance(exc, kind):
            return name
    return "manifest refused"


_Artifact = Artifact


def _ref_label(kind: str, ref: sync_pb2.ArtifactRef) -> str:
    name = ref.name or "?"
    return f"{kind} '{name}' version {ref.version}" if ref.version else f"{kind} '{name}'"


def _fingerprint(desired: sync_pb2.DesiredState) -> str:
    copy = sync_pb2.DesiredState()
    copy.CopyFrom(desired)
    copy.generation = 0
    copy.ClearField("issued_at")
    payload: bytes = copy.SerializeToString(deterministic=True)
    return hashlib.sha256(payload).hexdigest()


def _int_version(version: str) -> int | None:
    return int(version) if version.isdigit() else None


def _now_timestamp(message: Any) -> None:
    message.GetCurrentTime()


# ---- the reconciler ----------------------------------------------------------------------------


@dataclass
class _Prepared:
    """One assignment, verified, fetched and compiled, ready to be switched on."""

    assignment: sync_pb2.WorkflowAssignment
    workflow: _Artifact
    models: list[_Artifact]
    threshold_sets: list[tuple[_Artifact, dict[str, float]]]
    bundle: Bundle | None = None
    plan: Plan | None = None
    """None: the running plan is already this one."""

    @property
    def workflow_id(self) -> str:
        return self.workflow.manifest.name

    @property
    def shadow(self) -> bool:
        return self.assignment.role == "shadow"

    @property
    def canary(self) -> bool:
        """A candidate that becomes the active plan: warmed up, then watched by the health gate."""
        return self.assignment.role == "canary" and self.bundle is not None

    def watch(self) -> Watch:
        assert self.bundle is not None
        return Watch(self.workflow_id, self.assignment.rollout_id, self.bundle.sha256)

    def applied(self) -> AppliedWorkflow:
        return AppliedWorkflow(
            version=self.workflow.manifest.version,
            sha256=self.workflow.manifest.sha256,
            role=self.assignment.role,
            rollout_id=self.assignment.rollout_id,
            models={a.manifest.name: a.manifest.version for a in self.models},
            model_sha256={a.manifest.name: a.manifest.sha256 for a in self.models},
            thresholds={a.manifest.name: a.manifest.version for a, _ in self.threshold_sets},
            threshold_sha256={a.manifest.name: a.manifest.sha256 for a, _ in self.threshold_sets},
            bundle_sha256=self.bundle.sha256 if self.bundle is not None else "",
            gate=self.bundle.gate.to_dict() if self.bundle is not None else None,
        )

    def private_thresholds(self) -> ThresholdStore:
        """The bundle's own threshold values, for a shadow plan (never the live ones)."""
        store = ThresholdStore()
        for artifact, values in self.threshold_sets:
            store.put(artifact.manifest.name, values, artifact.manifest.version)
        return store


class Reconciler(RolloutSteps):
    """Applies desired states to a :class:`WorkflowHost`; see the module docstring."""

    def __init__(
        self,
        host: WorkflowHost,
        fetcher: Fetcher,
        public_key: Ed25519PublicKey,
        data_dir: Path,
        *,
        device_id: str,
        agent_version: str = "",
        profile: str = "",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.host = host
        self.fetcher = fetcher
        self.public_key = public_key
        self.device_id = device_id
        self.agent_version = agent_version
        self.profile = profile
        self.root = Path(data_dir) / "sync"
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = Artifacts(self.root, fetcher, lambda: self.host.model_store)
        self.state_file = self.root / "state.json"
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._switch_lock = threading.Lock()
        """Held while plans are swapped (an apply's switch, a health-gate rollback)."""
        self.state = SyncState.load(self.state_file)
        self.ledger = RolloutLedger(self.root / "rollout.json")
        self.candidates: dict[str, Plan] = {}
        """Compiled shadow plans by workflow id (each runs beside its workflow's active plan)."""
        self.last_error: ApplyError | None = None
        self.on_applying: Callable[[sync_pb2.ReportedState], object] | None = None
        """Called with an ``APPLYING`` report when an apply has real work to do."""
        self.on_changed: Callable[[sync_pb2.ReportedState], object] | None = None
        """Called with a fresh report when the device changed what runs by itself (a rollback)."""
        self.telemetry: TelemetryCollector | None = None
        """Where ``rollback`` events go (``None``: logged only)."""
        self._activated: dict[str, Plan] = {}
        self._slots: dict[str, Slot] = {}
        self._gates: dict[str, HealthGate] = {}
        self._phase: sync_pb2.ReportedState.Phase = (
            sync_pb2.ReportedState.CONVERGED
            if self.state.generation
            else sync_pb2.ReportedState.PHASE_UNSPECIFIED
        )

    def part_path(self, sha256: str) -> Path:
        """Where the download of the artifact with this sha256 is kept until it is verified."""
        return self.store.part_path(sha256)

    # ---- entry points ---------------------------------------------------------------------------

    def restore(self) -> list[str]:
        """Run again what the last apply left running (from ``state.json`` and the stored
        artifacts, re-verified), without the network. A candidate blamed for
        :data:`~agent.rollout.ledger.CRASH_LOOP_LIMIT` unclean ends in a row is quarantined
        first (slot A runs instead). Returns the problems met (also logged)."""
        problems: list[str] = []
        with self._lock:
            self._account_crash()
            for workflow_id, applied in sorted(self.state.workflows.items()):
                try:
                    self._restore_active(workflow_id, applied)
                except RESTORE_ERRORS as exc:
                    problems.append(f"workflow '{workflow_id}' version {applied.version}: {exc}")
                    self._restore_previous(workflow_id, problems)
            for workflow_id, applied in sorted(self.state.candidates.items()):
                try:
                    self._restore_shadow(workflow_id, applied)
                except RESTORE_ERRORS as exc:
                    problems.append(f"shadow workflow '{workflow_id}' version {applied.version}: {exc}")
        for problem in problems:
            log.error("sync: cannot restore %s; the next desired state will apply it again", problem)
        return problems

    def close(self) -> None:
        """The agent stops in order: no crash is blamed on a candidate at the next start."""
        self.ledger.stopped_cleanly()

    def apply(self, desired: sync_pb2.DesiredState) -> sync_pb2.ReportedState:
        """Converge on ``desired`` and return the state to report. Never raises for a bad
        desired state: the report says what was refused and why."""
        with self._lock:
            generation = desired.generation
            if generation < self.state.generation:
                log.info(
                    "sync: ignoring desired generation %d, older than the applied %d",
                    generation,
                    self.state.generation,
                )
                return self.report()
            fingerprint = _fingerprint(desired)
            if (
                generation == self.state.generation
                and fingerprint == self.state.fingerprint
                and self._phase == sync_pb2.ReportedState.CONVERGED
                and self._intact()
            ):
                self.last_error = None
                return self.report()
            self.state.attempted_generation = generation
            self._phase = sync_pb2.ReportedState.APPLYING
            if self.on_applying is not None:
                try:
                    self.on_applying(self.report())
                except Exception:
                    log.exception("sync: reporting progress failed")
            try:
                try:
                    self._converge(desired)
                except ApplyError:
                    raise
                except Exception as exc:  # a bug or a broken disk: still a precise, reported failure
                    log.exception("sync: applying generation %d failed unexpectedly", generation)
                    raise ApplyError(f"unexpected error: {type(exc).__name__}: {exc}") from exc
            except ApplyError as exc:
                self.last_error = exc
                self._phase = sync_pb2.ReportedState.FAILED
                self.state.error = str(exc)
                log.error("sync: generation %d not applied: %s", generation, exc)
                self._save()
            else:
                self.last_error = None
                self._phase = sync_pb2.ReportedState.CONVERGED
                self.state.generation = generation
                self.state.fingerprint = fingerprint
                self.state.error = ""
                log.info("sync: converged on generation %d", generation)
                self._save()
                self._prune()  # only once state.json no longer names what goes
            return self.report()

    @property
    def retry_advised(self) -> bool:
        """The last apply failed for a reason that may pass (network, HTTP 5xx)."""
        return self.last_error is not None and self.last_error.transient

    def report(self) -> sync_pb2.ReportedState:
        """The reported state now."""
        with self._lock:
            state = self.state
            report = sync_pb2.ReportedState(
                device_id=self.device_id,
                generation=state.generation,
                attempted_generation=state.attempted_generation,
                phase=self._phase,
                error=state.error if self._phase == sync_pb2.ReportedState.FAILED else "",
                agent_version=self.agent_version,
                profile=self.profile,
            )
            _now_timestamp(report.at)
            plans = self.host.plans()
            for workflow_id in sorted(set(plans) | set(self.candidates)):
                applied = state.workflows.get(workflow_id)
                status = report.workflows.add(workflow_id=workflow_id)
                plan = plans.get(workflow_id)
                if plan is not None:
                    status.active_version = plan.version
                    status.lineage.workflow_id = workflow_id
                    status.lineage.workflow_version = plan.version
                candidate = state.candidates.get(workflow_id)
                if candidate is not None:
                    status.candidate_version = candidate.version
                    status.shadow_version = candidate.version
                if applied is not None:
                    status.rollout_id = applied.rollout_id
                    status.role = applied.role
                    status.bundle_sha256 = applied.bundle_sha256
                    status.lineage.rollout_id = applied.rollout_id
                    status.lineage.cohort = applied.role
                    if applied.models:
                        model = sorted(applied.models)[0]
                        status.lineage.model_sha256 = applied.model_sha256.get(model, "")
                        status.backend = self.host.model_backend(model)
                    if applied.thresholds:
                        name = sorted(applied.thresholds)[0]
                        status.lineage.threshold_set = name
                        status.lineage.threshold_version = applied.thresholds[name]
            self.ledger.report(report)
            if self._phase == sync_pb2.ReportedState.FAILED:
                report.health.state = sync_pb2.Health.DEGRADED
                report.health.problems.append(state.error)
            else:
                report.health.state = sync_pb2.Health.OK
            return report

    # ---- converging -----------------------------------------------------------------------------

    def _intact(self) -> bool:
        """Every workflow of the applied state is running, as the plan this reconciler compiled."""
        plans = self.host.plans()
        return all(
            (plan := plans.get(workflow_id)) is not None
            and plan is self._activated.get(workflow_id)
            and plan.version == applied.version
            for workflow_id, applied in self.state.workflows.items()
        )

    def _converge(self, desired: sync_pb2.DesiredState) -> None:
        if desired.device_id and desired.device_id != self.device_id:
            raise ApplyError(f"the desired state is for device '{desired.device_id}', not '{self.device_id}'")
        self._check_shape(desired)
        self.ledger.forget_unless(
            {hashlib.sha256(a.bundle).hexdigest() for a in desired.workflows if a.bundle}
        )
        prepared: list[_Prepared] = []
        for assignment in desired.workflows:
            item = (
                self._verify_candidate(assignment)
                if assignment.bundle
                else self._verify_assignment(assignment)
            )
            if item is not None:
                prepared.append(item)
        self._check_threshold_conflicts(prepared)
        documents: dict[int, dict[str, Any]] = {}
        for item in list(prepared):  # models first: workflows compile against them
            with self._refusing(item, prepared):
                for artifact in item.models:
                    self.store.install_model(artifact)
                documents[id(item)] = self.store.workflow_document(item.workflow)
                item.threshold_sets = [(a, self.store.threshold_values(a)) for a, _ in item.threshold_sets]
        self._check_live_thresholds(prepared)
        running = self.host.plans()
        for item in list(prepared):
            with self._refusing(item, prepared):
                item.plan = self._compile(item, documents[id(item)], running)
        for item in list(prepared):
            if item.canary and item.plan is not None and not self._warmed_up(item):
                prepared.remove(item)
        self._switch(prepared, kept={a.workflow.name for a in desired.workflows if a.role != "shadow"})

    def _check_shape(self, desired: sync_pb2.DesiredState) -> None:
        seen: set[tuple[str, bool]] = set()
        for index, assignment in enumerate(desired.workflows):
            if not assignment.HasField("workflow") or not assignment.workflow.name:
                raise ApplyError(f"workflows[{index}]: the assignment has no workflow artifact")
            key = (assignment.workflow.name, assignment.role == "shadow")
            if key in seen:
                raise ApplyError(
                    f"workflow '{assignment.workflow.name}' is assigned twice"
                    + (" as shadow" if key[1] else "")
                )
            seen.add(key)

    def _verify(
        self, kind: str, ref: sync_pb2.ArtifactRef, context: str, floor: int | None, *, exact: bool
    ) -> _Artifact:
        """Verify ``ref``'s signed manifest. ``floor`` is the newest version the device has: an
        older one is a downgrade, refused unless ``exact`` (that very artifact, same sha256, is
        already on the device: going back to it is what a rollback does)."""
        label = _ref_label(kind, ref) + context
        if ref.kind and ref.kind != kind:
            raise ApplyError(f"{label}: the artifact is marked '{ref.kind}' where a {kind} belongs")
        if not ref.signed_manifest:
            raise ApplyError(f"{label}: malformed manifest: the artifact carries no signed manifest")
        try:
            manifest = verify_manifest(
                bytes(ref.signed_manifest),
                self.public_key,
                now=self._clock(),
                installed_version=None if exact else floor,
            )
        except ManifestError as exc:
            raise ApplyError(f"{label}: {_check_name(exc)}: {strip_label(str(exc))}") from exc
        mismatches = [
            f"{what} {theirs!r} (manifest: {ours!r})"
            for what, theirs, ours in (
                ("kind", kind, manifest.kind),
                ("name", ref.name, manifest.name),
                ("version", ref.version, manifest.version),
                ("sha256", ref.sha256 or manifest.sha256, manifest.sha256),
                ("size", ref.size or manifest.size, manifest.size),
            )
            if theirs != ours
        ]
        if mismatches:
            raise ApplyError(
                f"{label}: manifest mismatch: the signed manifest describes another artifact: "
                + ", ".join(mismatches)
            )
        return _Artifact(kind, ref, manifest, context)

    def _model_floor(self, name: str) -> int | None:
        versions = [v for v in map(_int_version, self.host.model_store.versions(name)) if v is not None]
        return max(versions) if versions else None

    def _verify_assignment(self, assignment: sync_pb2.WorkflowAssignment) -> _Prepared:
        ref = assignment.workflow
        state = self.state
        workflow = self._verify(
            "workflow",
            ref,
            "",
            state.accepted.get("workflow", {}).get(ref.name),
            exact=bool(ref.sha256) and state.known_sha256("workflow", ref.name, ref.version) == ref.sha256,
        )
        context = f" (workflow '{workflow.manifest.name}')"
        models = [
            self._verify(
                "model",
                m,
                context,
                self._model_floor(m.name),
                exact=bool(m.sha256) and self.store.has_model(m.name, m.version, m.sha256),
            )
            for m in assignment.models
        ]
        floors = state.accepted.get("thresholds", {})
        sets: list[tuple[_Artifact, dict[str, float]]] = [
            (
                self._verify(
                    "thresholds",
                    t,
                    context,
                    floors.get(t.name),
                    exact=bool(t.sha256) and state.known_sha256("thresholds", t.name, t.version) == t.sha256,
                ),
                {},
            )
            for t in assignment.threshold_sets
        ]
        return _Prepared(assignment, workflow, models, sets)

    def _check_threshold_conflicts(self, prepared: list[_Prepared]) -> None:
        versions: dict[str, int] = {}
        for item in prepared:
            if item.shadow:  # a shadow plan reads a private copy of its sets
                continue
            for artifact, _ in item.threshold_sets:
                name, version = artifact.manifest.name, artifact.manifest.version
                if versions.setdefault(name, version) != version:
                    raise ApplyError(
                        f"threshold set '{name}' is assigned at versions {versions[name]} and {version}"
                    )

    def _check_live_thresholds(self, prepared: list[_Prepared]) -> None:
        """Refuse to overwrite a live set above every version the control plane delivered that
        the device did not make as a local override (those follow :meth:`_put_live_thresholds`);
        going back to a delivered version is a rollback."""
        accepted = self.state.accepted.get("thresholds", {})
        for item in prepared:
            if item.shadow:
                continue
            for artifact, _ in item.threshold_sets:
                name, version = artifact.manifest.name, artifact.manifest.version
                live = self.host.thresholds.get(name)
                if (
                    live is not None
                    and live.local_base is None
                    and live.version > max(version, accepted.get(name, 0))
                ):
                    raise ApplyError(
                        f"{artifact.label}: the live set is at version {live.version} (changed on the "
                        "device); refusing to replace it with an older version"
                    )

    def _compile(self, item: _Prepared, document: dict[str, Any], running: Mapping[str, Plan]) -> Plan | None:
        applied = (self.state.candidates if item.shadow else self.state.workflows).get(item.workflow_id)
        if item.shadow:
            current = self.candidates.get(item.workflow_id)
        else:
            current = running.get(item.workflow_id)
            if current is not self._activated.get(item.workflow_id):
                current = None  # running, but not what this reconciler compiled (e.g. from the config)
        wanted = item.applied()
        if (
            current is not None
            and applied is not None
            and current.version == wanted.version
            and applied.sha256 == wanted.sha256
            and applied.model_sha256 == wanted.model_sha256
            and (not item.shadow or applied.thresholds == wanted.thresholds)
        ):
            return None  # running already: no recompile
        try:
            if item.shadow:
                return self.host.compile_document(
                    document,
                    model_versions=wanted.model_versions(),
                    thresholds=item.private_thresholds(),
                    side_effects=False,
                )
            return self.host.compile_document(document, model_versions=wanted.model_versions())
        except CompileError as exc:
            raise ApplyError(f"{item.workflow.label}: compile error: {exc}") from exc

    def _switch(self, prepared: list[_Prepared], *, kept: set[str]) -> None:
        """Everything is verified, compiled and warmed up: change what runs. ``kept``: workflows
        still assigned; one whose assignment was dropped (a failed bundle) keeps what it runs."""
        switching = [item.workflow_id for item in prepared if not item.shadow]
        with self._switch_lock, self.host.between_frames(switching):
            for item in prepared:  # slot A: what a canary replaces, before anything changes
                if not item.shadow:
                    self._keep_slot(item)
            for item in prepared:
                if item.shadow:
                    continue
                for artifact, values in item.threshold_sets:
                    self._put_live_thresholds(item.workflow_id, artifact, values)
            for item in sorted(prepared, key=lambda item: item.shadow):  # a shadow needs its service
                self._switch_item(item)
        active = {item.workflow_id: item.applied() for item in prepared if not item.shadow}
        for workflow_id in kept - set(active):
            if workflow_id in self.state.workflows:  # its bundle failed: it runs what it ran
                active[workflow_id] = self.state.workflows[workflow_id]
        shadows = {item.workflow_id: item.applied() for item in prepared if item.shadow}
        for workflow_id in sorted(set(self.state.workflows) - set(active)):
            self._drop_slot(workflow_id)
            self.host.retire_workflow(workflow_id)
            self._activated.pop(workflow_id, None)
            log.info("sync: workflow '%s' is no longer assigned", workflow_id)
        for workflow_id in set(self.candidates) - set(shadows):
            del self.candidates[workflow_id]
            self.host.run_shadow(workflow_id, None, None)
        self.state.workflows = active
        self.state.candidates = shadows
        self.state.previous = {wid: slot.applied for wid, slot in self._slots.items() if wid in active}
        for item in prepared:
            self._accept("workflow", item.workflow.manifest)
            for artifact, _ in item.threshold_sets:
                self._accept("thresholds", artifact.manifest)

    def _put_live_thresholds(self, workflow_id: str, artifact: _Artifact, values: dict[str, float]) -> None:
        """Make the control plane's threshold set live, unless a local override keeps it out.

        A local override (``SetThreshold``) stays while the control plane assigns the version it
        was made on top of, re-delivered (a new generation, a reconnection). Any other version —
        one the control plane has not delivered before, or a rollback to an older delivered one —
        replaces the override, which is logged and reported as a ``threshold_override_replaced``
        event. Called between frames, before :meth:`_accept` records this apply's versions."""
        name, version = artifact.manifest.name, artifact.manifest.version
        live = self.host.thresholds.get(name)
        if live is not None and live.local_base is not None:
            delivered = self.state.known_sha256("thresholds", name, version) is not None
            if delivered and version == live.local_base:
                log.info(
                    "sync: threshold set '%s' version %d again: the local override (live version %d) stays",
                    name,
                    version,
                    live.version,
                )
                return
            self.host.thresholds.put(name, values, version, rollback=True)
            log.warning(
                "sync: threshold set '%s': the control plane's version %d replaces the local override "
                "(live version %d, made on top of version %d): %s → %s",
                name,
                version,
                live.version,
                live.local_base,
                dict(live.values),
                values,
            )
            self._override_replaced_event(workflow_id, name, version, values, live)
            return
        if live is None or live.version != version or dict(live.values) != values:
            self.host.thresholds.put(name, values, version, rollback=True)
            log.info("sync: threshold set '%s' version %d is live", name, version)

    def _override_replaced_event(
        self, workflow_id: str, name: str, version: int, values: dict[str, float], replaced: ThresholdSet
    ) -> None:
        if self.telemetry is None:
            return
        from agent.sync.telemetry import Lineage

        self.telemetry.add_event(
            "threshold_override_replaced",
            severity="warning",
            lineage=Lineage(workflow_id, threshold_set=name, threshold_version=version),
            message=(
                f"threshold set '{name}': the control plane's version {version} replaced the local "
                f"override (version {replaced.version})"
            ),
            attributes={
                "set": name,
                "version": version,
                "values": values,
                "replaced_version": replaced.version,
                "replaced_values": dict(replaced.values),
                "override_base_version": replaced.local_base,
            },
        )

    def _switch_item(self, item: _Prepared) -> None:
        workflow_id = item.workflow_id
        origin = Origin.of(item.applied())
        if item.shadow:
            if item.plan is not None:
                self.candidates[workflow_id] = item.plan
                lineage = lineage_of(item.plan, item.private_thresholds(), origin)
                self.host.run_shadow(workflow_id, item.plan, lineage)
            return
        plan = item.plan if item.plan is not None else self._activated.get(workflow_id)
        if plan is None:
            return
        self.host.activate_plan(plan, origin)  # the same plan again: its origin only
        self._activated[workflow_id] = plan
        if item.plan is not None:
            log.info("sync: workflow '%s' version %d is running", workflow_id, plan.version)
            if item.canary:
                assert item.bundle is not None
                self._arm_gate(workflow_id, plan, item.watch(), item.bundle.gate)

    def _accept(self, kind: str, manifest: Manifest) -> None:
        names = self.state.accepted.setdefault(kind, {})
        names[manifest.name] = max(names.get(manifest.name, 0), manifest.version)
        self.state.know(kind, manifest.name, manifest.version, manifest.sha256)

    def _prune(self) -> None:
        """Forget stored workflow graphs and threshold sets that nothing applied refers to."""
        keep: set[Path] = set()
        state = self.state
        for applied in (*state.workflows.items(), *state.candidates.items(), *state.previous.items()):
            workflow_id, entry = applied
            keep.add(self.store.path("workflow", workflow_id, entry.version))
            for name, version in entry.thresholds.items():
                keep.add(self.store.path("thresholds", name, version))
        self.store.prune(keep)

    def _save(self) -> None:
        try:
            atomic_write(self.state_file, self.state.to_json())
        except OSError as exc:
            log.error("sync: cannot write %s: %s", self.state_file, exc)
