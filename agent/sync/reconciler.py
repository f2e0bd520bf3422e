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
   the same version again is fine; the manifest must also describe the artifact it is attached to;
3. fetch what is missing over HTTP(S) into ``<data_dir>/sync/downloads/<sha256>.part``, resuming
   an interrupted download with ``Range`` from the part's size, and check its sha256 and size;
   install models into the model store (atomic); keep workflow graphs and threshold sets under
   ``<data_dir>/sync/artifacts/`` so a restart applies them again without the network;
4. compile each changed workflow against the model runtime and the live thresholds;
5. only then change what runs: threshold sets go into the live ``ThresholdStore`` (the next frame
   reads them), compiled plans are swapped in between two frames, workflows the control plane no
   longer assigns are retired;
6. write ``<data_dir>/sync/state.json`` (generation, fingerprint, applied versions) atomically.

A failure reports ``phase=FAILED`` with the precise reason (which artifact, which check) and the
previous generation; the previous workflows keep running untouched. Network failures and HTTP
5xx / 408 / 429 are *transient*: :class:`ReconcileWorker` retries them with backoff until a newer
desired state arrives.

Network-free: the fetcher is an object with one method (:class:`Fetcher`); :class:`HttpFetcher`
is the real one. The agent side is the :class:`WorkflowHost` protocol, which ``agent.daemon.Agent``
implements.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.fsutil import atomic_write
from agent.inference.store import ModelStore
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
    verify_artifact,
    verify_manifest,
)
from agent.thresholds import ThresholdStore
from agent.workflow import CompileError, Plan
from protos import sync_pb2

__all__ = [
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

STATE_VERSION = 1
_CHUNK = 1 << 20
_KIND_DIRS = {"workflow": "workflows", "thresholds": "thresholds"}


# ---- errors ------------------------------------------------------------------------------------


class ApplyError(Exception):
    """A desired state cannot be applied; ``str()`` is the reason reported to the control plane.

    ``transient`` errors (network, HTTP 5xx / 408 / 429) are worth retrying as they are."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class FetchError(ApplyError):
    """A download failed; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False) -> None:
        super().__init__(message, transient=transient)
        self.status = status


# ---- fetching ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    """What one :meth:`Fetcher.fetch` did: bytes received and the offset it resumed from."""

    received: int
    resumed_from: int


class Fetcher(Protocol):
    def fetch(self, url: str, dest: Path, size: int) -> Fetched:
        """Download ``url`` into ``dest``; when ``dest`` exists, resume after its bytes.

        ``size`` is the size the manifest promises: no more is written. Raises :class:`FetchError`.
        The caller checks the digest."""
        ...


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


class HttpFetcher:
    """Downloads artifacts from the control plane with ``httpx``, resuming with ``Range``.

    Relative URLs (``/api/v1/...``) are resolved against ``control_plane_url``. The device's bearer
    credential is sent to the control plane's origin only (never to another host a URL or a
    redirect points at)."""

    def __init__(
        self,
        control_plane_url: str,
        credential: str | None,
        *,
        transport: httpx.BaseTransport | None = None,
        verify: bool | ssl.SSLContext = True,
        timeout_s: float = 30.0,
    ) -> None:
        self.base_url = control_plane_url.rstrip("/")
        self._origin = _origin(self.base_url)
        self._credential = credential
        self._cancelled = threading.Event()
        self._client = httpx.Client(
            transport=transport,
            verify=verify,
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=True,
            headers={"User-Agent": "edgefleet-agent"},
        )

    def resolve(self, url: str) -> str:
        if not url:
            raise FetchError("the artifact has no URL")
        absolute = urljoin(self.base_url + "/", url)
        if urlsplit(absolute).scheme not in ("http", "https"):
            raise FetchError(f"artifact URL {url!r} is not http(s)")
        return absolute

    def cancel(self) -> None:
        """Make downloads in progress (and later ones) stop with a transient :class:`FetchError`."""
        self._cancelled.set()

    def close(self) -> None:
        self._client.close()

    def fetch(self, url: str, dest: Path, size: int) -> Fetched:
        absolute = self.resolve(url)
        try:
            offset = dest.stat().st_size
        except FileNotFoundError:
            offset = 0
        if offset > size:
            dest.unlink()
            offset = 0
        if offset == size:
            dest.touch()
            return Fetched(0, offset)
        try:
            return self._get(absolute, dest, offset, size)
        except _RestartFromZero:
            dest.unlink(missing_ok=True)
            return self._get(absolute, dest, 0, size)
        except httpx.HTTPError as exc:
            raise FetchError(f"GET {absolute}: {type(exc).__name__}: {exc}", transient=True) from exc

    def _get(self, url: str, dest: Path, offset: int, size: int) -> Fetched:
        headers: dict[str, str] = {}
        if self._credential and _origin(url) == self._origin:
            headers["Authorization"] = f"Bearer {self._credential}"
        if offset:
            headers["Range"] = f"bytes={offset}-"
        with self._client.stream("GET", url, headers=headers) as response:
            status = response.status_code
            if offset and status == 416:
                raise _RestartFromZero
            if offset and status == 206:
                content_range = response.headers.get("content-range", "")
                if not content_range.startswith(f"bytes {offset}-"):
                    raise _RestartFromZero
                mode = "ab"
            elif status == 200:
                offset, mode = 0, "wb"
            else:
                detail = _problem_detail(response)
                raise FetchError(
                    f"GET {url}: HTTP {status} {response.reason_phrase}{': ' + detail if detail else ''}",
                    status=status,
                    transient=status >= 500 or status in (408, 429),
                )
            received = 0
            with dest.open(mode) as out:
                for chunk in response.iter_bytes(_CHUNK):
                    if self._cancelled.is_set():
                        raise FetchError(f"GET {url}: cancelled", transient=True)
                    if offset + received + len(chunk) > size:
                        raise FetchError(f"GET {url}: the server sent more than the manifest's {size} bytes")
                    out.write(chunk)
                    received += len(chunk)
                out.flush()
                os.fsync(out.fileno())
        return Fetched(received, offset)


class _RestartFromZero(Exception):
    """The partial download cannot be resumed: start again from byte 0."""


def _problem_detail(response: httpx.Response) -> str:
    try:
        body = response.read()[:2000]
        data = json.loads(body)
        detail = data.get("detail") if isinstance(data, dict) else None
        return str(detail)[:300] if detail else ""
    except (ValueError, httpx.HTTPError):
        return ""


# ---- the agent side ----------------------------------------------------------------------------


class WorkflowHost(Protocol):
    """What the reconciler needs from the agent (``agent.daemon.Agent`` implements it)."""

    thresholds: ThresholdStore

    @property
    def model_store(self) -> ModelStore: ...

    def compile_document(self, document: Mapping[str, Any]) -> Plan:
        """Compile a workflow graph against this device's runtime; raises ``CompileError``."""
        ...

    def activate_plan(self, plan: Plan) -> None:
        """Run ``plan``: swap it in between two frames, or start a new workflow."""
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


# ---- persisted state ---------------------------------------------------------------------------


@dataclass
class AppliedWorkflow:
    """One workflow as applied from the control plane."""

    version: int
    sha256: str
    role: str = ""
    rollout_id: str = ""
    models: dict[str, int] = field(default_factory=dict)
    model_sha256: dict[str, str] = field(default_factory=dict)
    thresholds: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "sha256": self.sha256,
            "role": self.role,
            "rollout_id": self.rollout_id,
            "models": self.models,
            "model_sha256": self.model_sha256,
            "thresholds": self.thresholds,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AppliedWorkflow:
        return cls(
            version=int(data["version"]),
            sha256=str(data["sha256"]),
            role=str(data.get("role", "")),
            rollout_id=str(data.get("rollout_id", "")),
            models={str(k): int(v) for k, v in data.get("models", {}).items()},
            model_sha256={str(k): str(v) for k, v in data.get("model_sha256", {}).items()},
            thresholds={str(k): int(v) for k, v in data.get("thresholds", {}).items()},
        )


@dataclass
class SyncState:
    """What ``<data_dir>/sync/state.json`` holds."""

    generation: int = 0
    """The last desired generation fully applied."""
    fingerprint: str = ""
    """sha256 of that desired state without its generation and time."""
    attempted_generation: int = 0
    error: str = ""
    workflows: dict[str, AppliedWorkflow] = field(default_factory=dict)
    """Active workflows from the control plane."""
    candidates: dict[str, AppliedWorkflow] = field(default_factory=dict)
    """Shadow workflows: prepared (verified, compiled) but not running."""
    accepted: dict[str, dict[str, int]] = field(default_factory=dict)
    """Newest version accepted per kind ("workflow", "thresholds") and name: the downgrade floor."""

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": STATE_VERSION,
                "generation": self.generation,
                "fingerprint": self.fingerprint,
                "attempted_generation": self.attempted_generation,
                "error": self.error,
                "workflows": {k: v.to_dict() for k, v in sorted(self.workflows.items())},
                "candidates": {k: v.to_dict() for k, v in sorted(self.candidates.items())},
                "accepted": self.accepted,
            },
            indent=2,
            sort_keys=True,
        ).encode()

    @classmethod
    def load(cls, path: Path) -> SyncState:
        """The state in ``path``; a fresh one when the file is missing or unreadable (logged)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                generation=int(data["generation"]),
                fingerprint=str(data["fingerprint"]),
                attempted_generation=int(data.get("attempted_generation", 0)),
                error=str(data.get("error", "")),
                workflows={k: AppliedWorkflow.from_dict(v) for k, v in data.get("workflows", {}).items()},
                candidates={k: AppliedWorkflow.from_dict(v) for k, v in data.get("candidates", {}).items()},
                accepted={
                    str(kind): {str(n): int(v) for n, v in names.items()}
                    for kind, names in data.get("accepted", {}).items()
                },
            )
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("sync state %s is unreadable (%s): starting from generation 0", path, exc)
            return cls()


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


@dataclass(frozen=True)
class _Artifact:
    """A verified manifest and where its bytes come from."""

    kind: str
    ref: sync_pb2.ArtifactRef
    manifest: Manifest
    context: str

    @property
    def label(self) -> str:
        return f"{self.manifest.label}{self.context}"


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
    plan: Plan | None = None
    """None: the running plan is already this one."""

    @property
    def workflow_id(self) -> str:
        return self.workflow.manifest.name

    @property
    def shadow(self) -> bool:
        return self.assignment.role == "shadow"

    def applied(self) -> AppliedWorkflow:
        return AppliedWorkflow(
            version=self.workflow.manifest.version,
            sha256=self.workflow.manifest.sha256,
            role=self.assignment.role,
            rollout_id=self.assignment.rollout_id,
            models={a.manifest.name: a.manifest.version for a in self.models},
            model_sha256={a.manifest.name: a.manifest.sha256 for a in self.models},
            thresholds={a.manifest.name: a.manifest.version for a, _ in self.threshold_sets},
        )


class Reconciler:
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
        self.downloads = self.root / "downloads"
        self.artifacts = self.root / "artifacts"
        self.state_file = self.root / "state.json"
        for directory in (self.root, self.downloads, self.artifacts):
            directory.mkdir(parents=True, exist_ok=True)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self.state = SyncState.load(self.state_file)
        self.candidates: dict[str, Plan] = {}
        """Compiled shadow plans by workflow id, for whoever runs shadow traffic."""
        self.last_error: ApplyError | None = None
        self.on_applying: Callable[[sync_pb2.ReportedState], object] | None = None
        """Called with an ``APPLYING`` report when an apply has real work to do."""
        self._activated: dict[str, Plan] = {}
        self._phase: sync_pb2.ReportedState.Phase = (
            sync_pb2.ReportedState.CONVERGED
            if self.state.generation
            else sync_pb2.ReportedState.PHASE_UNSPECIFIED
        )

    # ---- paths ----------------------------------------------------------------------------------

    def part_path(self, sha256: str) -> Path:
        """Where the download of the artifact with this sha256 is kept until it is verified."""
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.downloads / f"{sha256}.part"

    def _artifact_path(self, kind: str, name: str, version: int) -> Path:
        return self.artifacts / _KIND_DIRS[kind] / name / f"{version}.json"

    # ---- entry points ---------------------------------------------------------------------------

    def restore(self) -> list[str]:
        """Run again what the last apply left running (from ``state.json`` and the stored
        artifacts), without the network. Returns the problems met (also logged)."""
        problems: list[str] = []
        with self._lock:
            for workflow_id, applied in sorted(self.state.workflows.items()):
                try:
                    self._restore_thresholds(applied)
                    document = self._stored_document(workflow_id, applied)
                    plan = self.host.compile_document(document)
                    self.host.activate_plan(plan)
                    self._activated[workflow_id] = plan
                except (ApplyError, CompileError, OSError, ValueError) as exc:
                    problems.append(f"workflow '{workflow_id}' version {applied.version}: {exc}")
            for workflow_id, applied in sorted(self.state.candidates.items()):
                try:
                    document = self._stored_document(workflow_id, applied)
                    self.candidates[workflow_id] = self.host.compile_document(document)
                except (ApplyError, CompileError, OSError, ValueError) as exc:
                    problems.append(f"shadow workflow '{workflow_id}' version {applied.version}: {exc}")
        for problem in problems:
            log.error("sync: cannot restore %s; the next desired state will apply it again", problem)
        return problems

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
            else:
                self.last_error = None
                self._phase = sync_pb2.ReportedState.CONVERGED
                self.state.generation = generation
                self.state.fingerprint = fingerprint
                self.state.error = ""
                log.info("sync: converged on generation %d", generation)
            self._save()
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
                if applied is not None:
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
        prepared = [self._verify_assignment(assignment) for assignment in desired.workflows]
        self._check_threshold_conflicts(prepared)
        for item in prepared:  # models first: workflows compile against them
            for artifact in item.models:
                self._install_model(artifact)
        documents = {id(item): self._workflow_document(item.workflow) for item in prepared}
        for item in prepared:
            item.threshold_sets = [(a, self._threshold_values(a)) for a, _ in item.threshold_sets]
        self._check_live_thresholds(prepared)
        running = self.host.plans()
        for item in prepared:
            item.plan = self._compile(item, documents[id(item)], running)
        self._switch(prepared)

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

    def _verify(self, kind: str, ref: sync_pb2.ArtifactRef, context: str, floor: int | None) -> _Artifact:
        label = _ref_label(kind, ref) + context
        if ref.kind and ref.kind != kind:
            raise ApplyError(f"{label}: the artifact is marked '{ref.kind}' where a {kind} belongs")
        if not ref.signed_manifest:
            raise ApplyError(f"{label}: malformed manifest: the artifact carries no signed manifest")
        try:
            manifest = verify_manifest(
                bytes(ref.signed_manifest), self.public_key, now=self._clock(), installed_version=floor
            )
        except ManifestError as exc:
            raise ApplyError(f"{label}: {_check_name(exc)}: {_strip_label(str(exc))}") from exc
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
        workflow = self._verify("workflow", ref, "", self.state.accepted.get("workflow", {}).get(ref.name))
        context = f" (workflow '{workflow.manifest.name}')"
        models = [self._verify("model", m, context, self._model_floor(m.name)) for m in assignment.models]
        floors = self.state.accepted.get("thresholds", {})
        sets: list[tuple[_Artifact, dict[str, float]]] = [
            (self._verify("thresholds", t, context, floors.get(t.name)), {})
            for t in assignment.threshold_sets
        ]
        return _Prepared(assignment, workflow, models, sets)

    def _check_threshold_conflicts(self, prepared: list[_Prepared]) -> None:
        versions: dict[str, int] = {}
        for item in prepared:
            for artifact, _ in item.threshold_sets:
                name, version = artifact.manifest.name, artifact.manifest.version
                if versions.setdefault(name, version) != version:
                    raise ApplyError(
                        f"threshold set '{name}' is assigned at versions {versions[name]} and {version}"
                    )

    def _download(self, artifact: _Artifact) -> Path:
        """Fetch the artifact's bytes (resuming) and check them against the manifest."""
        manifest = artifact.manifest
        part = self.part_path(manifest.sha256)
        try:
            fetched = self.fetcher.fetch(artifact.ref.url, part, manifest.size)
        except FetchError as exc:
            raise FetchError(
                f"{artifact.label}: download failed: {exc}", status=exc.status, transient=exc.transient
            ) from exc
        except OSError as exc:
            raise ApplyError(f"{artifact.label}: download failed: {exc}", transient=True) from exc
        try:
            verify_artifact(manifest, part)
        except DigestMismatch as exc:
            part.unlink(missing_ok=True)
            if fetched.resumed_from:  # the kept prefix may be what is wrong: once more from byte 0
                log.warning("sync: %s: resumed download does not verify; fetching it whole", artifact.label)
                return self._download(artifact)
            raise ApplyError(f"{artifact.label}: digest mismatch: {_strip_label(str(exc))}") from exc
        return part

    def _install_model(self, artifact: _Artifact) -> None:
        manifest = artifact.manifest
        store = self.host.model_store
        version = str(manifest.version)
        if version in store.versions(manifest.name):
            record = store.resolve(manifest.name, version)
            if record.sha256 == manifest.sha256:
                return  # installed already: nothing to fetch
            raise ApplyError(
                f"{artifact.label}: another file is installed as this version "
                f"(sha256 {record.sha256[:12]}…, the manifest says {manifest.sha256[:12]}…)"
            )
        part = self._download(artifact)
        from agent.inference.errors import InferenceError

        try:
            store.install(part, manifest.name, version)
        except InferenceError as exc:
            raise ApplyError(f"{artifact.label}: install failed: {exc}") from exc
        finally:
            part.unlink(missing_ok=True)
        log.info("sync: installed %s", artifact.label)

    def _stored_or_fetch(self, artifact: _Artifact) -> bytes:
        """The bytes of a workflow or threshold set: from the store of verified artifacts, or
        fetched, verified and stored."""
        manifest = artifact.manifest
        path = self._artifact_path(artifact.kind, manifest.name, manifest.version)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            pass
        else:
            if hashlib.sha256(data).hexdigest() == manifest.sha256 and len(data) == manifest.size:
                return data
            log.warning("sync: stored %s does not match its manifest; fetching it again", artifact.label)
        part = self._download(artifact)
        data = part.read_bytes()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)
        part.unlink(missing_ok=True)
        return data

    def _workflow_document(self, artifact: _Artifact) -> dict[str, Any]:
        data = self._stored_or_fetch(artifact)
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise ApplyError(f"{artifact.label}: not a JSON workflow graph: {exc}") from exc
        graph_id = document.get("id") if isinstance(document, dict) else None
        if not isinstance(document, dict) or graph_id != artifact.manifest.name:
            raise ApplyError(
                f"{artifact.label}: the graph's id is {graph_id!r}, not '{artifact.manifest.name}'"
            )
        return document

    def _threshold_values(self, artifact: _Artifact) -> dict[str, float]:
        data = self._stored_or_fetch(artifact)
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise ApplyError(f"{artifact.label}: not a JSON threshold set: {exc}") from exc
        values = document.get("values") if isinstance(document, dict) else None
        if (
            not isinstance(values, dict)
            or document.get("name") != artifact.manifest.name
            or document.get("version") != artifact.manifest.version
        ):
            raise ApplyError(f"{artifact.label}: not a threshold set of this name and version")
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ApplyError(f"{artifact.label}: threshold '{key}' is not a finite number: {value!r}")
        return {str(key): float(value) for key, value in values.items()}

    def _check_live_thresholds(self, prepared: list[_Prepared]) -> None:
        for item in prepared:
            if item.shadow:
                continue
            for artifact, _ in item.threshold_sets:
                live = self.host.thresholds.get(artifact.manifest.name)
                if live is not None and live.version > artifact.manifest.version:
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
        ):
            return None  # running already: no recompile
        try:
            return self.host.compile_document(document)
        except CompileError as exc:
            raise ApplyError(f"{item.workflow.label}: compile error: {exc}") from exc

    def _switch(self, prepared: list[_Prepared]) -> None:
        """Everything is verified and compiled: change what runs."""
        for item in prepared:
            if item.shadow:
                continue
            for artifact, values in item.threshold_sets:
                name, version = artifact.manifest.name, artifact.manifest.version
                live = self.host.thresholds.get(name)
                if live is None or live.version != version or dict(live.values) != values:
                    self.host.thresholds.put(name, values, version)
                    log.info("sync: threshold set '%s' version %d is live", name, version)
        for item in prepared:
            if item.plan is None:
                continue
            if item.shadow:
                self.candidates[item.workflow_id] = item.plan
            else:
                self.host.activate_plan(item.plan)
                self._activated[item.workflow_id] = item.plan
                log.info("sync: workflow '%s' version %d is running", item.workflow_id, item.plan.version)
        active = {item.workflow_id: item.applied() for item in prepared if not item.shadow}
        shadows = {item.workflow_id: item.applied() for item in prepared if item.shadow}
        for workflow_id in sorted(set(self.state.workflows) - set(active)):
            self.host.retire_workflow(workflow_id)
            self._activated.pop(workflow_id, None)
            log.info("sync: workflow '%s' is no longer assigned", workflow_id)
        for workflow_id in set(self.candidates) - set(shadows):
            del self.candidates[workflow_id]
        self.state.workflows = active
        self.state.candidates = shadows
        for item in prepared:
            self._accept("workflow", item.workflow.manifest)
            for artifact, _ in item.threshold_sets:
                self._accept("thresholds", artifact.manifest)
        self._prune()

    def _accept(self, kind: str, manifest: Manifest) -> None:
        names = self.state.accepted.setdefault(kind, {})
        names[manifest.name] = max(names.get(manifest.name, 0), manifest.version)

    def _prune(self) -> None:
        """Forget stored workflow graphs and threshold sets that nothing applied refers to."""
        keep: set[Path] = set()
        for applied in (*self.state.workflows.items(), *self.state.candidates.items()):
            workflow_id, entry = applied
            keep.add(self._artifact_path("workflow", workflow_id, entry.version))
            for name, version in entry.thresholds.items():
                keep.add(self._artifact_path("thresholds", name, version))
        for path in self.artifacts.glob("*/*/*.json"):
            if path not in keep:
                with contextlib.suppress(OSError):
                    path.unlink()

    def _restore_thresholds(self, applied: AppliedWorkflow) -> None:
        for name, version in applied.thresholds.items():
            data = json.loads(self._artifact_path("thresholds", name, version).read_bytes())
            live = self.host.thresholds.get(name)
            if live is None or live.version <= version:
                self.host.thresholds.put(name, data["values"], version)

    def _stored_document(self, workflow_id: str, applied: AppliedWorkflow) -> dict[str, Any]:
        data = self._artifact_path("workflow", workflow_id, applied.version).read_bytes()
        if hashlib.sha256(data).hexdigest() != applied.sha256:
            raise ApplyError("the stored graph does not match the sha256 it was applied with")
        document: dict[str, Any] = json.loads(data)
        return document

    def _save(self) -> None:
        try:
            atomic_write(self.state_file, self.state.to_json())
        except OSError as exc:
            log.error("sync: cannot write %s: %s", self.state_file, exc)


def _strip_label(message: str) -> str:
    """``model 'x' version 2: signature …`` → ``signature …`` (the caller names the artifact)."""
    match = re.match(r"^(?:model|workflow|thresholds) '[^']*'(?: version \d+)?: ", message)
    return message[match.end() :] if match else message


# ---- the worker --------------------------------------------------------------------------------


class ReconcileWorker:
    """Applies desired states on its own thread, newest first, and publishes each report.

    :meth:`submit` only stores the state and wakes the worker, so the MQTT network thread can call
    it. States that arrive while one is being applied replace each other: only the newest is
    applied next. A transient failure (network, HTTP 5xx) is retried with jittered exponential
    backoff until it succeeds or a newer desired state arrives."""

    def __init__(
        self,
        reconciler: Reconciler,
        publish: Callable[[sync_pb2.ReportedState], object],
        *,
        retry_min_s: float = 2.0,
        retry_max_s: float = 300.0,
        rng: random.Random | None = None,
    ) -> None:
        self.reconciler = reconciler
        self.publish = publish
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self._rng = rng or random.Random()
        self._cond = threading.Condition()
        self._next: sync_pb2.DesiredState | None = None
        self._stopping = False
        self._idle = True
        self._thread = threading.Thread(target=self._run, name="edgefleet-reconcile", daemon=True)
        self.applied = 0
        """Desired states applied so far (a converged no-op included)."""

    def start(self) -> None:
        self._thread.start()

    def submit(self, desired: sync_pb2.DesiredState) -> None:
        with self._cond:
            self._next = desired
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Until nothing is queued or being applied (for tests and orderly shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._idle and self._next is None, timeout)

    def stop(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        failures = 0
        retry_at: float | None = None
        last: sync_pb2.DesiredState | None = None
        while True:
            with self._cond:
                while not self._stopping and self._next is None:
                    if retry_at is not None and time.monotonic() >= retry_at:
                        self._next, retry_at = last, None
                        break
                    self._idle = True
                    self._cond.notify_all()
                    timeout = None if retry_at is None else max(0.0, retry_at - time.monotonic())
                    self._cond.wait(timeout)
                if self._stopping:
                    self._idle = True
                    self._cond.notify_all()
                    return
                desired, self._next = self._next, None
                self._idle = False
            assert desired is not None
            if last is None or desired.generation != last.generation:
                failures = 0
            last = desired
            try:
                report = self.reconciler.apply(desired)
            except Exception:  # a bug must not end the worker: report it and carry on
                log.exception("sync: applying generation %d crashed", desired.generation)
                report = self.reconciler.report()
            self.applied += 1
            try:
                self.publish(report)
            except Exception:
                log.exception("sync: publishing the reported state failed")
            if self.reconciler.retry_advised:
                base = min(self.retry_max_s, self.retry_min_s * 2 ** min(failures, 30))
                failures += 1
                delay = self._rng.uniform(base / 2, base)
                log.info("sync: retrying generation %d in %.1f s", desired.generation, delay)
                retry_at = time.monotonic() + delay
            else:
                retry_at = None
