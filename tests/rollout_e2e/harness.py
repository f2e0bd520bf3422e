"""What the end-to-end rollout tests do with their shared fleet (``conftest.py``).

:class:`E2E` wraps a started :class:`controlplane.demo.fleet.Fleet` of 20 agents: uploading a
candidate, building a rollout spec, creating it over REST and following it to its end, reading
what each device reports, and leaving the fleet settled for the next test.
:meth:`E2E.expect_caught` runs a bad bundle's rollout and checks what every bad bundle must
satisfy (docs/rollouts.md and the issue): aborted by the controller at its canary step on the
named criterion, the candidate sent to no device outside the canary cohort (as recorded on the
broker by :class:`tests.rollout_e2e.recorder.FleetRecorder`), and every canary device back on its
baseline within :data:`BACK_ON_BASELINE_S` of the abort decision.

The fleet's registry: model ``surface_inspection`` version 1 is the deliberately worse
``surface_inspection_v0.onnx``, uploaded and never assigned (the rollback attack offers it);
version 2 is the reference model, what the fleet runs at first. Every test uploads its candidate
as the newest version, so the tests can run in any order or alone.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from controlplane.demo.fleet import REPO, WORKFLOW_ID, Fleet
from controlplane.demo.rollouts import FINAL_STATES, Rollouts, follow
from controlplane.signing import SigningKey, make_manifest
from controlplane.store.schema import models
from protos import sync_pb2
from tests.rollout_e2e.recorder import Desired, FleetRecorder, Reported

__all__ = [
    "AGENTS",
    "BACK_ON_BASELINE_S",
    "DEFECT_RATE",
    "E2E",
    "FPS",
    "TELEMETRY_S",
    "Caught",
    "Json",
    "Running",
    "corrupt_blob",
    "files_holding",
    "forge_manifest",
    "parse_time",
    "release_baseline",
]

Json = dict[str, Any]

AGENTS = 20
FPS = 1.0
"""Frames per second of each camera. 20 agents at 1 fps, the control plane and the broker use
about 0.9 of the machine's 2 cores (measured), leaving room for the candidates' extra compute."""
TELEMETRY_S = 2.0
"""Telemetry interval of each agent. Every record is a write on the control plane's SQLite; at
1 s a loaded machine could let the bridge fall behind and the devices' resends pile up."""
DEFECT_RATE = 0.05
"""Share of defective parts on the line. A rare-defect line keeps the reject rate's variance low,
so a +10 point shift is significant after ~100 parts per cohort instead of ~400 at 50 %."""
THRESHOLD_SET = "surface"
THRESHOLD = 0.535
BACK_ON_BASELINE_S = 60.0
"""The issue's bound: every canary device back on its baseline this soon after the abort."""
POLL_S = 0.5
"""Between two polls of the REST API: each request authenticates with a database write, and the
control plane shares the 2 cores with the 20 agents."""
WORST_MODEL = REPO / "models" / "surface_inspection_v0.onnx"
REFERENCE_MODEL = REPO / "models" / "surface_inspection_v1.onnx"


@dataclass(frozen=True)
class Running:
    """What a device reports for the workflow: phase, the generation it reached, the rollout its
    active assignment belongs to, and the lineage of what it runs."""

    phase: str
    generation: int
    rollout_id: str
    model_sha256: str
    threshold_version: int

    @classmethod
    def of(cls, device: Json) -> Running:
        reported = device.get("reported_state") or {}
        status = next((w for w in reported.get("workflows", []) if w.get("workflow_id") == WORKFLOW_ID), {})
        lineage = status.get("lineage", {})
        return cls(
            phase=str(reported.get("phase", "")),
            generation=int(reported.get("generation", 0)),
            rollout_id=str(status.get("rollout_id", "")),
            model_sha256=str(lineage.get("model_sha256", "")),
            threshold_version=int(lineage.get("threshold_version", 0)),
        )

    def runs_as(self, baseline: Running) -> bool:
        """Converged outside any rollout on ``baseline``'s model and threshold set."""
        return (
            self.phase == "CONVERGED"
            and not self.rollout_id
            and (self.model_sha256, self.threshold_version)
            == (baseline.model_sha256, baseline.threshold_version)
        )


@dataclass(frozen=True)
class Caught:
    """A bad bundle's aborted rollout, as :meth:`E2E.expect_caught` checked it."""

    rollout: Json
    abort: Json
    """The abort decision."""
    criterion: Json
    """The abort decision's failed criterion the test expected."""
    cohort: list[str]
    back_after_s: dict[str, float]
    """Per canary device: seconds from the abort decision until it reported its baseline again."""
    reported: list[Reported]
    """Every reported state any device sent while the rollout was followed."""

    def failures(self) -> list[tuple[str, sync_pb2.RolloutFailure]]:
        """``(device, failure)`` for every rollout failure of this rollout any device reported."""
        return [
            (r.device_id, failure)
            for r in self.reported
            for failure in r.state.rollout_failures
            if failure.rollout_id == self.rollout["id"]
        ]


class E2E:
    """The shared fleet and the operator's calls the tests make on it."""

    def __init__(self, fleet: Fleet, work: Path) -> None:
        self.fleet = fleet
        self.work = work

    @property
    def rollouts(self) -> Rollouts:
        """The rollout API through the fleet's current client (a restart replaces it)."""
        return Rollouts(self.fleet.api)

    # ---- registry and rollouts -----------------------------------------------------------------

    def upload_model(self, path: Path) -> Json:
        """Upload ``path`` as the newest version of the workflow's model."""
        return self.fleet.upload_model(path)

    def new_thresholds(self, threshold: float) -> int:
        """A new version of threshold set ``surface``; its version."""
        return int(self.fleet.create_thresholds(THRESHOLD_SET, {"default": threshold})["version"])

    def running_model(self) -> Json:
        """The registry entry of the model every device runs now (they must agree)."""
        shas = {Running.of(d).model_sha256 for d in self._devices()}
        assert len(shas) == 1, f"the fleet runs several models: {shas}"
        (sha,) = shas
        listing = self.fleet.api.list_models(WORKFLOW_ID, all_pages=True)
        matches = [m for m in listing.items if m["sha256"] == sha]
        assert matches, f"no registered model has sha256 {sha}"
        return max(matches, key=lambda m: int(m["version"]))

    def create(self, spec: Mapping[str, Any]) -> Json:
        return self.rollouts.create(spec)

    def get(self, rollout_id: str) -> Json:
        return self.rollouts.get(rollout_id)

    def follow(self, rollout_id: str, timeout_s: float = 240.0) -> tuple[Json, list[Json]]:
        """Poll the rollout until it is promoted or aborted; the rollout and its decisions."""
        return follow(self.rollouts, rollout_id, timeout_s=timeout_s, poll_s=POLL_S)

    # ---- devices -------------------------------------------------------------------------------

    def _devices(self) -> list[Json]:
        return list(
            self.fleet.api.list_devices(labels={"line": self.fleet.config.line}, all_pages=True).items
        )

    def running(self) -> dict[str, Running]:
        """What each device reports (one ``GET /api/v1/devices``)."""
        return {str(d["id"]): Running.of(d) for d in self._devices()}

    def data_dir(self, device_id: str) -> Path:
        return self.fleet.workdir / "agents" / device_id

    def wait_settled(self, timeout_s: float = 180.0) -> dict[str, Running]:
        """Until every device is converged outside any rollout, all on the same model and
        threshold set."""
        deadline = time.monotonic() + timeout_s
        while True:
            running = self.running()
            lineages = {(r.model_sha256, r.threshold_version) for r in running.values()}
            if (
                len(running) == AGENTS
                and len(lineages) == 1
                and all(r.phase == "CONVERGED" and not r.rollout_id for r in running.values())
            ):
                return running
            if time.monotonic() > deadline:
                raise AssertionError(f"the fleet did not settle within {timeout_s:.0f}s: {running}")
            time.sleep(POLL_S)

    def abort_active(self) -> list[str]:
        """Abort every rollout still running or paused (a failed test's); their ids."""
        api = self.fleet.api
        active = [r for r in api.list_rollouts(all_pages=True).items if r["state"] not in FINAL_STATES]
        for rollout in active:
            api.abort_rollout(rollout["id"], "end-to-end test cleanup")
        return [str(r["id"]) for r in active]

    def assert_not_stored(self, rollout: Json, devices: Collection[str]) -> None:
        """None of ``devices`` holds a file of the candidate's models that the fleet did not run
        before (the bundle's models other than the baseline's)."""
        running = {r.model_sha256 for r in self.running().values()}
        candidate = {str(m["sha256"]) for m in rollout["bundle"]["models"]} - running
        for device in sorted(devices):
            held = files_holding(self.data_dir(device), candidate)
            assert not held, f"{device}, outside the cohort, holds the candidate's model: {held}"

    # ---- a bad bundle from creation to rollback -------------------------------------------------

    @contextmanager
    def recording(self) -> Iterator[FleetRecorder]:
        assert self.fleet.broker is not None
        with FleetRecorder(self.fleet.broker) as recorder:
            yield recorder

    def expect_caught(self, spec: Mapping[str, Any], criterion: str, timeout_s: float = 240.0) -> Caught:
        """Run a bad bundle's rollout and check what every bad bundle must satisfy (module
        docstring); returns what the test checks further."""
        baseline = self.wait_settled()
        with self.recording() as recorder:
            created = self.create(spec)
            rollout_id = str(created["id"])
            rollout, decisions = self.follow(rollout_id, timeout_s)
            assert rollout["state"] == "aborted", f"{rollout_id} ended {rollout['state']}: {decisions}"
            assert [d["action"] for d in decisions] == ["start", "abort"], decisions  # never promoted
            abort = decisions[-1]
            assert (abort["actor"], abort["step"]) == ("controller", "canary"), abort
            failed = [c for c in abort["criteria"] if c["status"] == "fail"]
            named = [c for c in failed if c["name"] == criterion]
            assert named, f"{rollout_id} aborted on {[c['name'] for c in failed]}, not {criterion}: {abort}"
            cohort = sorted(rollout["cohorts"]["canary"])
            assert len(cohort) == 4, cohort  # 20 % of 20
            back = back_on_baseline(self, recorder, rollout_id, cohort, baseline, abort)
            assert_contained(recorder, rollout, cohort)
            self.assert_not_stored(rollout, set(self.fleet.device_ids) - set(cohort))
            reported = recorder.reported()
        return Caught(rollout, abort, named[0], cohort, back, reported)


def canary_spec(
    *,
    model: int | None = None,
    thresholds: int | None = None,
    min_samples: int,
    duration_s: float,
    analysis: Mapping[str, Any] | None = None,
    gate: Mapping[str, Any] | None = None,
) -> Json:
    """A rollout to the whole line: canary on 20 % (4 devices), then full."""
    bundle: Json = {}
    if model is not None:
        bundle["models"] = {WORKFLOW_ID: model}
    if thresholds is not None:
        bundle["threshold_sets"] = {THRESHOLD_SET: thresholds}
    return {
        "workflow": WORKFLOW_ID,
        "target": {"group": "line-1"},
        "bundle": bundle,
        "steps": [
            {"kind": "canary", "percent": 20, "duration_s": duration_s, "min_samples": min_samples},
            {"kind": "full"},
        ],
        "analysis": dict(analysis or {}),
        "gate": dict(gate or {}),
    }


# ---- checks ----------------------------------------------------------------------------------


def _refs(assignment: sync_pb2.WorkflowAssignment) -> set[tuple[str, str, int]]:
    return {("model", m.name, m.version) for m in assignment.models} | {
        ("thresholds", t.name, t.version) for t in assignment.threshold_sets
    }


def candidate_only(rollout: Json, before: Collection[Desired]) -> set[tuple[str, str, int]]:
    """The bundle's model and threshold-set versions that no device was assigned before the
    rollout (from the retained desired states the recorder got at subscription)."""
    bundle = rollout["bundle"]
    wanted = {("model", m["name"], int(m["version"])) for m in bundle["models"]} | {
        ("thresholds", t["name"], int(t["version"])) for t in bundle["threshold_sets"]
    }
    assigned = {ref for d in before for a in d.state.workflows for ref in _refs(a)}
    return wanted - assigned


def receivers(recorder: FleetRecorder, rollout: Json) -> set[str]:
    """Devices sent the rollout's candidate at any time: an assignment of the rollout in role
    ``canary`` or ``shadow``, carrying its bundle, or naming an artifact only the candidate has."""
    desired = recorder.desired()
    only = candidate_only(rollout, [d for d in desired if d.retained])
    got = set()
    for d in desired:
        for a in d.state.workflows:
            if (
                (a.rollout_id == rollout["id"] and a.role in ("canary", "shadow"))
                or (a.bundle and hashlib.sha256(a.bundle).hexdigest() == rollout["bundle_sha256"])
                or (_refs(a) & only)
            ):
                got.add(d.device_id)
    return got


def assert_contained(recorder: FleetRecorder, rollout: Json, cohort: Collection[str]) -> None:
    """No device outside ``cohort`` was ever sent the candidate; and the recorder did see the
    rollout reach every device (each one's desired state named the rollout), so the check is not
    vacuous."""
    outside = receivers(recorder, rollout) - set(cohort)
    assert not outside, (
        f"devices outside the cohort {sorted(cohort)} received the candidate: {sorted(outside)}"
    )
    told = {
        d.device_id
        for d in recorder.desired()
        if any(a.rollout_id == rollout["id"] for a in d.state.workflows)
    }
    assert len(told) == AGENTS, f"the recorder saw the rollout reach only {sorted(told)}"


def parse_time(at: str) -> datetime:
    """An ISO time of the API (``…Z``) as an aware datetime."""
    parsed = datetime.fromisoformat(at.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def back_on_baseline(
    e2e: E2E,
    recorder: FleetRecorder,
    rollout_id: str,
    cohort: Collection[str],
    baseline: Mapping[str, Running],
    abort: Json,
) -> dict[str, float]:
    """Seconds from the abort decision until each cohort device reports (``GET
    /api/v1/devices``, the devices' reported states) that it applied the desired state the abort
    published and runs its baseline again. Polls until :data:`BACK_ON_BASELINE_S` after the
    decision, plus a margin so a late device is measured rather than timed out."""
    decided = parse_time(str(abort["at"]))

    def after_abort(state: sync_pb2.DesiredState) -> bool:
        return all(a.rollout_id != rollout_id for a in state.workflows)

    generation = {device: recorder.wait_desired(device, after_abort).state.generation for device in cohort}
    back: dict[str, float] = {}
    deadline = time.monotonic() + BACK_ON_BASELINE_S + 30
    while len(back) < len(cohort) and time.monotonic() < deadline:
        running = e2e.running()
        seen = datetime.now(UTC)
        for device in sorted(set(cohort) - set(back)):
            if running[device].generation >= generation[device] and running[device].runs_as(baseline[device]):
                back[device] = (seen - decided).total_seconds()
        time.sleep(POLL_S)
    missing = sorted(set(cohort) - set(back))
    assert not missing, f"not back on the baseline: {e2e.running()}"
    late = {d: s for d, s in back.items() if s > BACK_ON_BASELINE_S}
    assert not late, f"back on the baseline later than {BACK_ON_BASELINE_S:.0f}s after the abort: {late}"
    return back


def files_holding(directory: Path, sha256s: Collection[str]) -> list[Path]:
    """Files under ``directory`` whose content hashes to one of ``sha256s``."""
    wanted = set(sha256s)
    return [
        path
        for path in sorted(directory.rglob("*"))
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() in wanted
    ]


# ---- tampering with the control plane's store ------------------------------------------------


def corrupt_blob(fleet: Fleet, sha256: str) -> str:
    """Flip bytes in the middle of the stored model blob (same size); the corrupt bytes' sha256."""
    assert fleet.server is not None
    path = fleet.server.services.blobs.local_path(sha256)
    assert path is not None, "the blob store keeps no local files"
    assert path.exists(), f"no blob for {sha256}"
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    mode = path.stat().st_mode
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    path.chmod(mode)
    return hashlib.sha256(data).hexdigest()


def forge_manifest(fleet: Fleet, model: Json) -> None:
    """Replace the stored signed manifest of ``model`` (a registry entry) in the control plane's
    database with the same manifest signed by another ed25519 key."""
    assert fleet.server is not None
    manifest = make_manifest(
        "model", model["name"], int(model["version"]), model["sha256"], int(model["size"])
    )
    forged = json.loads(SigningKey.generate().sign(manifest).to_json())
    with fleet.server.services.db.write() as conn:
        updated = conn.execute(
            sa.update(models)
            .where(models.c.name == model["name"], models.c.version == int(model["version"]))
            .values(manifest=forged)
        )
        assert updated.rowcount == 1


def release_baseline(fleet: Fleet) -> None:
    """The fleet's registry and its first assignment (module docstring): model version 1 (the
    worse v0, never assigned), version 2 (the reference), the workflow recording version 2, and
    threshold set ``surface`` v1 at 0.535; every device running them."""
    fleet.upload_model(WORST_MODEL, version=1)
    reference = fleet.upload_model(REFERENCE_MODEL, version=2)
    workflow = fleet.upload_workflow()
    assert workflow["models"] == [{"name": WORKFLOW_ID, "version": 2}], workflow
    thresholds = fleet.create_thresholds(THRESHOLD_SET, {"default": THRESHOLD})
    fleet.assign_thresholds(THRESHOLD_SET, int(thresholds["version"]))
    fleet.assign_workflow(WORKFLOW_ID, int(workflow["version"]))
    fleet.wait_running(
        workflow_version=int(workflow["version"]), model_sha256=reference["sha256"], timeout_s=120
    )
