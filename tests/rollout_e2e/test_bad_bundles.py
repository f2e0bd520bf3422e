"""Bad bundles on a 20-agent fleet (real Mosquitto, control plane and agents): each is caught at
its first non-shadow step, a canary on 20 % of the line (4 devices), reaches no device outside
that cohort, and every canary device is back on its baseline within 60 s of the abort decision
(:meth:`tests.rollout_e2e.harness.E2E.expect_caught` checks those for every case).

The candidates: (a) a model 3× slower per run, (b) threshold sets rejecting ~10 points more
parts, (c) a model that fails every run, (d) a model with NaN outputs, (e) a corrupt artifact,
(f) a model whose manifest is signed by another key, (g) an older model version than the one
running, never installed on the devices (a rollback attack). (c) and (d) are rolled back by the
device's own health gate; (e)–(g) are refused on the device before anything is installed.
"""

from __future__ import annotations

from collections.abc import Collection

import pytest

from controlplane.demo.fleet import WORKFLOW_ID
from protos import sync_pb2
from tests.rollout.models import failing_model, nan_model
from tests.rollout_e2e.harness import (
    E2E,
    Caught,
    Json,
    canary_spec,
    corrupt_blob,
    files_holding,
    forge_manifest,
)
from tests.rollout_e2e.models import reference_variant, slow_model, slowdown

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

Kind = sync_pb2.RolloutFailure

FAILS_FAST = {"min_samples": 100, "duration_s": 600}
"""A canary step that cannot promote before its devices report a failure: the controller's
``unhealthy_devices`` (no sample minimum) must be what ends it."""

LOOSE_THRESHOLD = 0.015
"""Rejects ~11 points more of this line's parts than the reference threshold 0.535 does (measured
on the fleet, 850–1,100 parts each: 0.535 → 4.4–5 %, 0.03 → 11.1 %, 0.02 → 14.2 %, 0.01 →
18.8 %). The reject rate read at an early abort comes out higher: the controller stops at the first
look where the shift is significant, which favours looks where chance added to it."""


def assert_device_failures(caught: Caught, kind: int, reason: str) -> None:
    """Only canary devices reported a failure of the rollout, at least one, each of ``kind`` with
    ``reason`` in its message."""
    failures = caught.failures()
    assert failures, "no device reported a rollout failure"
    for device, failure in failures:
        assert device in caught.cohort, f"{device} is not in the cohort but reported {failure}"
        assert failure.kind == kind, failure
        assert reason in failure.reason, failure


def assert_never_installed(e2e: E2E, model: Json, shas: Collection[str]) -> None:
    """No device's data directory (model store, downloads, artifacts) holds a file with any of
    ``shas``, and none has the model version installed."""
    for device in e2e.fleet.device_ids:
        root = e2e.data_dir(device)
        assert not files_holding(root, shas), f"{device} holds the bad artifact"
        record = root / "models" / "models" / WORKFLOW_ID / f"{model['version']}.json"
        assert not record.exists(), f"{device} installed model version {model['version']}"


def test_a_model_3x_slower_is_aborted_at_canary_on_its_p99_latency(e2e: E2E) -> None:
    """(a) The candidate gives the reference model's outputs with ~35× its compute: its runs' p99
    latency comes out ~3× the baseline's (2.3–3.5 measured). The devices' health gate is told to
    allow slow runs, so the controller's analysis must catch it: the p99 latency ratio of canary
    against baseline runs (default limit 1.5) aborts the canary."""
    path = slow_model(e2e.work / "slow.onnx")
    reference_ms, slow_ms, same_outputs = slowdown(path, runs=5)
    assert same_outputs
    assert slow_ms > 10 * reference_ms, (reference_ms, slow_ms)
    model = e2e.upload_model(path)
    caught = e2e.expect_caught(
        canary_spec(
            model=int(model["version"]),
            min_samples=120,
            duration_s=0,
            gate={"max_latency_ms": 60_000},
        ),
        "p99_latency_ratio",
    )
    assert float(caught.criterion["value"]) > 1.5, caught.criterion
    assert not caught.failures(), "the devices ran the slow model without a failure of their own"


def test_thresholds_rejecting_10_points_more_parts_are_aborted_at_canary_on_the_defect_rate(
    e2e: E2E,
) -> None:
    """(b) The candidate keeps the running model and ships a threshold-set version that rejects
    ~11 points more parts; the defect-rate shift (default limits: over 5 points with p < 0.01, or
    p < 0.001 at an early look) aborts the canary."""
    model = e2e.running_model()
    loose = e2e.new_thresholds(LOOSE_THRESHOLD)
    caught = e2e.expect_caught(
        canary_spec(model=int(model["version"]), thresholds=loose, min_samples=300, duration_s=0),
        "defect_rate_shift",
    )
    assert float(caught.criterion["value"]) > 5.0, caught.criterion  # points, upwards


def test_a_model_that_fails_every_run_is_rolled_back_by_the_health_gate_and_aborted(e2e: E2E) -> None:
    """(c) Every run of the candidate fails. Without a warm-up (``warmup_frames: 0``) the canary
    devices switch to it; their health gate trips on the first failed run, puts the baseline back
    between two frames and reports ``HEALTH_GATE``; the controller aborts on
    ``unhealthy_devices``."""
    model = e2e.upload_model(failing_model(e2e.work / "fails.onnx"))
    caught = e2e.expect_caught(
        canary_spec(model=int(model["version"]), gate={"warmup_frames": 0}, **FAILS_FAST), "unhealthy_devices"
    )
    assert_device_failures(caught, Kind.HEALTH_GATE, "failed run(s)")


def test_a_model_with_nan_outputs_is_rolled_back_by_the_health_gate_and_aborted(e2e: E2E) -> None:
    """(d) The candidate's outputs are NaN: the inference node fails those runs, the health gate
    rolls the canary devices back (``HEALTH_GATE``) and the controller aborts."""
    model = e2e.upload_model(nan_model(e2e.work / "nan.onnx"))
    caught = e2e.expect_caught(
        canary_spec(model=int(model["version"]), gate={"warmup_frames": 0}, **FAILS_FAST), "unhealthy_devices"
    )
    assert_device_failures(caught, Kind.HEALTH_GATE, "NaN or Inf")


def test_a_corrupt_artifact_is_refused_on_the_device_before_install(e2e: E2E) -> None:
    """(e) The candidate model's blob in the control plane's store is corrupted after upload (same
    size, other bytes): the canary devices download it, find the digest wrong, delete it and
    report ``REFUSED``; no device ever holds either the good or the corrupt bytes."""
    model = e2e.upload_model(reference_variant(e2e.work / "corrupt.onnx", "corrupt"))
    corrupt = corrupt_blob(e2e.fleet, str(model["sha256"]))
    caught = e2e.expect_caught(canary_spec(model=int(model["version"]), **FAILS_FAST), "unhealthy_devices")
    assert_device_failures(caught, Kind.REFUSED, "digest mismatch")
    assert_never_installed(e2e, model, {str(model["sha256"]), corrupt})


def test_a_model_signed_by_another_key_is_refused_on_the_device_before_install(e2e: E2E) -> None:
    """(f) The candidate model's stored manifest is replaced, in the control plane's database, by
    the same manifest signed with a key the devices do not trust: refused (``bad signature``)
    before anything is downloaded."""
    model = e2e.upload_model(reference_variant(e2e.work / "forged.onnx", "forged"))
    forge_manifest(e2e.fleet, model)
    caught = e2e.expect_caught(canary_spec(model=int(model["version"]), **FAILS_FAST), "unhealthy_devices")
    assert_device_failures(caught, Kind.REFUSED, "bad signature")
    assert_never_installed(e2e, model, {str(model["sha256"])})


def test_an_older_model_version_than_the_running_one_is_refused_as_a_rollback_attack(e2e: E2E) -> None:
    """(g) The candidate is model version 1, older than the version every device runs and never
    installed on any of them (the deliberately worse v0): a validly signed downgrade, refused
    before install (``downgrade refused``). Going back to an older version is allowed only to an
    artifact already in the device's store (docs/rollouts.md, "Downgrades")."""
    running = e2e.running_model()
    old = e2e.fleet.api.get_model(WORKFLOW_ID, 1)
    assert int(old["version"]) < int(running["version"])
    assert old["sha256"] != running["sha256"]
    caught = e2e.expect_caught(canary_spec(model=1, **FAILS_FAST), "unhealthy_devices")
    assert_device_failures(caught, Kind.REFUSED, "downgrade refused")
    assert_never_installed(e2e, old, {str(old["sha256"])})
