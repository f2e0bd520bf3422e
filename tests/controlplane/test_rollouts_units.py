"""Rollout pieces that need no database: the spec model, cohorts, and the signed bundle."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from datetime import timedelta

import pytest
from pydantic import ValidationError

from agent.manifest import BadSignature, load_public_key, verify_digest, verify_manifest
from controlplane.rollouts import bundle
from controlplane.rollouts.cohorts import cohorts_at, rank, ranked, step_size
from controlplane.rollouts.spec import GateSpec, RolloutSpec, StepSpec
from controlplane.signing import SigningKey

DEVICES = [f"cam-{i}" for i in range(20)]


def steps(*items: dict[str, object]) -> list[StepSpec]:
    return [StepSpec.model_validate(item) for item in items]


def test_rank_is_the_documented_hash() -> None:
    assert rank("r-3f9a1c2e7b", "cam-1") == hashlib.sha256(b"r-3f9a1c2e7b/cam-1").hexdigest()
    order = ranked("r-3f9a1c2e7b", DEVICES)
    assert order == ranked("r-3f9a1c2e7b", list(reversed(DEVICES)))  # input order does not matter
    assert sorted(order) == sorted(DEVICES)
    assert order != ranked("r-000000000a", DEVICES)  # another rollout, another order


@pytest.mark.parametrize(
    ("step", "count", "size"),
    [
        ({"kind": "canary", "devices": 3}, 20, 3),
        ({"kind": "canary", "devices": 30}, 20, 20),
        ({"kind": "canary", "percent": 33}, 20, math.ceil(33 * 20 / 100)),
        ({"kind": "canary", "percent": 0.1}, 20, 1),
        ({"kind": "shadow", "percent": 100}, 7, 7),
        ({"kind": "full"}, 7, 7),
        ({"kind": "canary", "devices": 2}, 0, 0),
    ],
)
def test_step_sizes(step: dict[str, object], count: int, size: int) -> None:
    assert step_size(StepSpec.model_validate(step), count) == size


def test_cohorts_are_deterministic_and_nested() -> None:
    plan = steps(
        {"kind": "shadow", "devices": 2},
        {"kind": "canary", "percent": 25},
        {"kind": "canary", "devices": 1},  # smaller than before: still contains the earlier cohort
        {"kind": "pause"},
        {"kind": "full"},
    )
    order = ranked("r-0123456789", DEVICES)
    at = [cohorts_at("r-0123456789", DEVICES, plan, index) for index in range(len(plan))]
    assert at[0] == cohorts_at("r-0123456789", list(reversed(DEVICES)), plan, 0)
    assert (at[0].kind, at[0].shadow, at[0].canary) == ("shadow", tuple(order[:2]), ())
    assert at[0].baseline == tuple(order[2:])
    assert at[1].canary == tuple(order[:5])
    assert at[1].shadow == tuple(order[:2])  # the earlier shadow cohort, for status
    assert at[2].canary == tuple(order[:5])
    assert at[3] == at[2]  # a pause keeps the step before it
    assert (at[4].kind, at[4].canary, at[4].baseline) == ("full", tuple(order), ())
    assert at[0].placement(order[0]) == "shadow"
    assert at[0].placement(order[5]) == "baseline"
    assert at[1].placement(order[4]) == "canary"
    assert at[1].placement("cam-99") is None
    for earlier, later in itertools.pairwise(at):
        assert set(earlier.candidate) <= set(later.candidate)


def test_a_leading_pause_keeps_everyone_on_the_baseline() -> None:
    cohorts = cohorts_at("r-0123456789", DEVICES, steps({"kind": "pause"}, {"kind": "full"}), 0)
    assert cohorts.kind == "none"
    assert {cohorts.placement(d) for d in DEVICES} == {"baseline"}


def test_spec_defaults_are_filled_in() -> None:
    spec = RolloutSpec.model_validate(
        {
            "workflow": "surface_inspection",
            "target": {"selector": {"line": "1"}},
            "steps": [{"kind": "canary", "percent": 33}, {"kind": "pause"}, {"kind": "full"}],
        }
    )
    dumped = spec.model_dump(mode="json", exclude_none=True)
    assert dumped["steps"][0] == {
        "kind": "canary",
        "percent": 33.0,
        "duration_s": 60.0,
        "min_samples": 100,
    }
    assert spec.steps[2].describe() == {"kind": "full", "duration_s": 0.0, "min_samples": 0}
    assert spec.steps[1].describe() == {"kind": "pause"}
    assert dumped["gate"] == {"warmup_frames": 5, "frames": 20, "max_errors": 0, "max_latency_ms": 1000.0}
    assert dumped["analysis"]["defect_rate"] == {"max_shift": 0.05, "significance": 0.01}
    assert RolloutSpec.model_validate(dumped) == spec  # a stored spec reads back unchanged
    assert spec.target.as_dict() == {"selector": {"line": "1"}}


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({}, "exactly one of group, selector or devices"),
        ({"group": "a", "selector": {"x": "1"}}, "(got group, selector)"),
        ({"devices": ["cam-1", "cam-1"]}, "more than once"),
    ],
)
def test_targets_name_exactly_one_kind(target: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RolloutSpec.model_validate({"workflow": "w", "target": target, "steps": [{"kind": "full"}]})
    [error] = caught.value.errors()
    assert error["loc"] == ("target",)
    assert message in error["msg"]


def test_the_bundle_is_canonical_and_signed() -> None:
    key = SigningKey.generate()
    document = bundle.build(
        "r-3f9a1c2e7b",
        {"name": "surface_inspection", "version": 4, "sha256": "a" * 64},
        [
            {"name": "z-model", "version": 1, "sha256": "b" * 64},
            {"name": "a-model", "version": 2, "sha256": "c" * 64},
        ],
        [{"name": "surface", "version": 3, "sha256": "d" * 64}],
        GateSpec(),
    )
    signed = bundle.sign(document, key, lifetime=timedelta(days=30))
    assert signed.data == json.dumps(document, sort_keys=True, separators=(",", ":")).encode("ascii")
    assert [m["name"] for m in json.loads(signed.data)["models"]] == ["a-model", "z-model"]
    assert json.loads(signed.data)["gate"]["max_latency_ms"] == 1000.0
    manifest = verify_manifest(signed.manifest, load_public_key(key.public_key_pem()))
    assert (manifest.kind, manifest.name, manifest.version) == ("bundle", "r-3f9a1c2e7b", 1)
    verify_digest(manifest, hashlib.sha256(signed.data).hexdigest(), len(signed.data))
    assert signed.sha256 == manifest.sha256
    with pytest.raises(BadSignature):
        verify_manifest(signed.manifest, load_public_key(SigningKey.generate().public_key_pem()))
