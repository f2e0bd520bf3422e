"""The fleet demo (``edgefleet demo``): two canary rollouts on six camera stations.

1. **Fleet**: a broker, the control plane and ``agents`` stations (:mod:`controlplane.demo.fleet`).
2. **v1 everywhere**: model ``surface_inspection`` v1 (the reference), the inspection workflow
   and threshold set ``surface`` (0.535, v1's recommended threshold) are registered and assigned
   to the group ``line-1``; the story waits until every station runs them and telemetry arrives.
3. **v2 promotes**: v2 is v1 quantised to INT8 (``models/surface_inspection_v2_int8.onnx``, same
   decisions on 99.7 % of frames). Rollout: shadow on 2 stations → canary 33 % → full.
4. **v3 aborts**: v3 is the deliberately worse ``surface_inspection_v0.onnx``. Rollout: canary
   33 % → full; the defect-rate test aborts it at canary and every station goes back to v2.
5. **Summary**: every decision of both rollouts with the criteria behind it.

Steps 3–5 talk to ``/api/v1/rollouts`` (docs/rollouts.md) only. A control plane without that
API ends the story after step 2 with a message saying so.

Step sizes come from the frame rate: the camera of each station takes ``fps`` frames a second,
so a cohort of k stations inspects about ``k × fps`` parts a second. The stations' line makes
70 % of its parts defective (``defect_rate``): at the models' 50 % the worse model's extra false
rejects and missed defects nearly cancel in the reject rate (docs/demo.md has the numbers).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from controlplane.client import ApiError
from controlplane.demo.errors import DemoError, RolloutsUnavailable
from controlplane.demo.fleet import REPO, WORKFLOW_ID, DeviceView, Fleet, FleetConfig, prepare_workdir
from controlplane.demo.render import (
    decision_line,
    decisions_table,
    devices_table,
    progress_line,
    rollout_panel,
)
from controlplane.demo.rollouts import Rollouts, follow
from controlplane.demo.screen import Screen

__all__ = ["MODELS", "Outcome", "StoryOptions", "rollout_spec", "run_story"]

MODELS = {
    1: REPO / "models" / "surface_inspection_v1.onnx",
    2: REPO / "models" / "surface_inspection_v2_int8.onnx",
    3: REPO / "models" / "surface_inspection_v0.onnx",
}
MODEL_NAMES = {1: "v1 (reference)", 2: "v2 (INT8)", 3: "v3 (worse)"}
THRESHOLD_SET = "surface"
THRESHOLD = 0.535
STEP_S = 20.0
"""About how long a shadow or canary step of v2 lasts (its ``duration_s``; its ``min_samples``
is what its cohort inspects in that time at the configured frame rate)."""
V3_CANARY_SAMPLES = 400
"""Parts per cohort before v3's canary step could promote: enough that its reject-rate shift
(about −13 points at a 70 % defect rate) is caught with p < 0.01 nearly every time."""


@dataclass(frozen=True)
class StoryOptions:
    workdir: Path
    agents: int = 6
    fps: float = 4.0
    defect_rate: float = 0.7
    keep: bool = False
    controlplane: Mapping[str, Any] = field(default_factory=lambda: {"rollout_tick_s": 1.0})
    """Extra control-plane settings: the controller ticks every second (the default is 2 s)."""
    rollout_timeout_s: float = 240.0


@dataclass
class Outcome:
    """How the story ended: each rollout's final state and the step kind v3 stopped at."""

    v2_state: str | None = None
    v3_state: str | None = None
    v3_step: str | None = None
    rollouts_available: bool = True
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """v2 promoted and v3 aborted at its canary step."""
        return self.v2_state == "promoted" and self.v3_state == "aborted" and self.v3_step == "canary"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cohort_size(percent: float, agents: int) -> int:
    """Stations in a ``percent`` cohort (docs/rollouts.md: ceil, at least 1)."""
    return max(1, math.ceil(percent * agents / 100))


def rollout_spec(model_version: int, steps: list[dict[str, Any]], group: str = "line-1") -> dict[str, Any]:
    """A rollout of model ``model_version`` of the workflow to ``group`` (the rest of the bundle:
    the newest workflow version and the threshold sets the group runs)."""
    return {
        "workflow": WORKFLOW_ID,
        "target": {"group": group},
        "bundle": {"models": {WORKFLOW_ID: model_version}},
        "steps": steps,
    }


def v2_steps(agents: int, fps: float) -> list[dict[str, Any]]:
    """Shadow on 2 stations, canary 33 %, full: each cohort step ``STEP_S`` long with the parts
    its cohort inspects meanwhile as ``min_samples``."""
    shadow = min(2, agents)
    canary = cohort_size(33, agents)
    return [
        {
            "kind": "shadow",
            "devices": shadow,
            "duration_s": STEP_S,
            "min_samples": round(STEP_S * shadow * fps),
        },
        {"kind": "canary", "percent": 33, "duration_s": STEP_S, "min_samples": round(STEP_S * canary * fps)},
        {"kind": "full", "duration_s": 5},
    ]


def v3_steps() -> list[dict[str, Any]]:
    return [
        {"kind": "canary", "percent": 33, "duration_s": STEP_S, "min_samples": V3_CANARY_SAMPLES},
        {"kind": "full", "duration_s": 5},
    ]


def _step_words(step: Mapping[str, Any]) -> str:
    if "devices" in step:
        return f"{step['kind']} {step['devices']} stations"
    if "percent" in step:
        return f"{step['kind']} {step['percent']:g} %"
    return str(step["kind"])


class Story:
    """One run of the story on a started :class:`Fleet`."""

    def __init__(self, fleet: Fleet, options: StoryOptions, console: Console) -> None:
        self.fleet = fleet
        self.options = options
        self.screen = Screen(console)
        self.console = console
        self.started = time.monotonic()
        self.outcome = Outcome()
        self.models: dict[int, str] = {}
        self.names: dict[str, str] = {}
        self.history: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = []

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def mark(self, name: str) -> None:
        self.outcome.timings[name] = round(self.elapsed(), 1)

    def say(self, message: str) -> None:
        self.screen.say(Text(message))

    # ---- step 2 ---------------------------------------------------------------------------------

    def release_v1(self) -> None:
        fleet = self.fleet
        model = fleet.upload_model(MODELS[1], version=1)
        self.register_model(1, str(model["sha256"]))
        workflow = fleet.upload_workflow()
        thresholds = fleet.create_thresholds(THRESHOLD_SET, {"default": THRESHOLD})
        fleet.assign_thresholds(THRESHOLD_SET, int(thresholds["version"]))
        fleet.assign_workflow(WORKFLOW_ID, int(workflow["version"]))
        self.say(
            f"registered model v1, workflow {WORKFLOW_ID} v{workflow['version']} and threshold set "
            f"{THRESHOLD_SET} v{thresholds['version']} ({THRESHOLD}); assigned to {fleet.config.group}"
        )
        self.wait_fleet(
            f"every station running v1 (workflow v{workflow['version']})", 1, int(workflow["version"])
        )
        runs = fleet.wait_runs(fleet.config.agents * 4, timeout_s=60)
        self.mark("v1 running")
        self.say(f"telemetry flowing: {runs} inspections stored by the control plane")

    def register_model(self, version: int, sha256: str) -> None:
        self.models[version] = sha256
        self.names[sha256] = MODEL_NAMES[version]

    def wait_fleet(self, what: str, model_version: int, workflow_version: int = 1) -> list[DeviceView]:
        """Until every station runs ``model_version`` outside any rollout (after a promotion or an
        abort, once the rollout's override is gone), drawing the stations meanwhile."""
        sha = self.models[model_version]

        def draw(views: list[DeviceView]) -> None:
            done = sum(v.phase == "CONVERGED" and v.model_sha256 == sha and not v.rollout_id for v in views)
            self.screen.show(devices_table(views, self.names), f"{what}: {done}/{len(views)} stations")

        with self.screen.live():
            views = self.fleet.wait_running(
                workflow_version=workflow_version,
                model_sha256=sha,
                rollout_id="",
                timeout_s=120,
                on_poll=draw,
            )
        self.console.print(devices_table(views, self.names))
        self.say(f"{what}: done")
        return views

    # ---- steps 3 and 4 --------------------------------------------------------------------------

    def rollout(self, label: str, version: int, steps: list[dict[str, Any]]) -> dict[str, Any]:
        rollouts = Rollouts(self.fleet.api)
        spec = rollout_spec(version, steps, self.fleet.config.group)
        created = rollouts.create(spec)
        plan = " → ".join(_step_words(step) for step in steps)
        self.say(f"rollout {label} {created['id']}: model {MODEL_NAMES[version]}: {plan}")

        def update(rollout: dict[str, Any]) -> None:
            self.screen.show(rollout_panel(label, rollout), progress_line(label, rollout))

        def decided(decision: dict[str, Any]) -> None:
            self.screen.say(decision_line(label, decision))

        with self.screen.live():
            final, decisions = follow(
                rollouts,
                str(created["id"]),
                timeout_s=self.options.rollout_timeout_s,
                on_update=update,
                on_decision=decided,
            )
        self.history.append((label, final, decisions))
        self.say(
            f"rollout {label} {final['id']}: {final['state']}"
            + (f" — {final['reason']}" if final.get("reason") else "")
        )
        return final

    def run(self) -> Outcome:
        self.mark("fleet up")
        self.release_v1()
        for version in (2, 3):
            model = self.fleet.upload_model(MODELS[version], version=version)
            self.register_model(version, str(model["sha256"]))
        rollouts = Rollouts(self.fleet.api)
        if not rollouts.available():
            self.outcome.rollouts_available = False
            raise RolloutsUnavailable(
                "this control plane has no rollout API yet (/api/v1/rollouts answers 404): "
                "the fleet runs v1; the rollouts of v2 and v3 need it"
            )
        agents, fps = self.fleet.config.agents, self.fleet.config.fps
        v2 = self.rollout("v2", 2, v2_steps(agents, fps))
        self.outcome.v2_state = str(v2["state"])
        self.mark("v2 decided")
        if self.outcome.v2_state == "promoted":
            self.wait_fleet("every station on v2", 2)
        v3 = self.rollout("v3", 3, v3_steps())
        self.outcome.v3_state = str(v3["state"])
        self.outcome.v3_step = str((v3.get("step") or {}).get("kind") or "")
        self.mark("v3 decided")
        back = 2 if self.outcome.v2_state == "promoted" else 1
        self.wait_fleet(f"every station back on {MODEL_NAMES[back]}", back)
        self.mark("rolled back")
        return self.outcome

    def summary(self) -> None:
        if self.history:
            self.console.print(decisions_table(self.history))
        outcome = self.outcome
        checks = [
            ("v2 promoted", outcome.v2_state == "promoted", outcome.v2_state),
            (
                "v3 aborted at canary",
                outcome.v3_state == "aborted" and outcome.v3_step == "canary",
                f"{outcome.v3_state} at {outcome.v3_step}",
            ),
        ]
        for name, good, got in checks:
            self.console.print(
                Text.assemble(("✓ " if good else "✗ ", "green" if good else "bold red"), f"{name} ({got})")
            )
        steps = ", ".join(f"{k} at {v:.0f}s" for k, v in outcome.timings.items())
        self.console.print(f"timeline: {steps}; total {self.elapsed():.0f}s")


@contextlib.contextmanager
def _log_to(path: Path) -> Iterator[None]:
    """Send every log record (agents, control plane, uvicorn) to ``path`` instead of the screen."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()


def run_story(options: StoryOptions, console: Console | None = None) -> int:
    """Run the demo; 0 when v2 was promoted and v3 aborted at canary, else 1. With ``keep`` the
    fleet stays up afterwards until Ctrl-C."""
    if console is None:
        console = Console()
        if not console.is_terminal:  # a log or a pipe: wide enough for the decisions table
            console = Console(width=120)
    workdir = options.workdir.resolve()
    prepare_workdir(workdir)
    config = FleetConfig(
        workdir,
        agents=options.agents,
        fps=options.fps,
        defect_rate=options.defect_rate,
        controlplane=options.controlplane,
        prepare=False,
    )
    with _log_to(workdir / "demo.log"):
        fleet = Fleet(config)
        story: Story | None = None
        try:
            started = time.monotonic()
            fleet.start(on_step=lambda part: console.print(f"[dim]starting {part}…[/dim]"))
            console.print(
                f"fleet up in {time.monotonic() - started:.1f}s: control plane {fleet.url}, "
                f"{options.agents} stations at {options.fps:g} fps (log: {workdir / 'demo.log'})"
            )
            story = Story(fleet, replace(options, workdir=workdir), console)
            try:
                story.run()
            except (DemoError, ApiError):
                story.summary()  # what was decided before it stopped
                raise
            story.summary()
            if options.keep:
                _keep(fleet, console)
        except (DemoError, ApiError) as exc:
            console.print(f"[bold red]demo stopped:[/bold red] {exc}")
            if options.keep and fleet.server is not None:
                _keep(fleet, console)
            return 1
        finally:
            fleet.stop()
    return 0 if story is not None and story.outcome.ok else 1


def _keep(fleet: Fleet, console: Console) -> None:
    """Leave the fleet running until Ctrl-C, saying how to reach it."""
    token = fleet.workdir / "admin-token"
    console.print(
        f"\n[bold]--keep:[/bold] the control plane stays up at {fleet.url} with its broker and stations.\n"
        f"  .venv/bin/edgefleet login --url {fleet.url} --token - < {token}\n"
        f"  .venv/bin/edgefleet devices list\n"
        f"  .venv/bin/edgefleet rollout list; .venv/bin/edgefleet rollout explain ROLLOUT_ID\n"
        "Press Ctrl-C to stop everything."
    )
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)
