"""Canary rollouts (docs/rollouts.md): create from a spec (JSON or YAML), list, show with cohorts,
progress and the latest analysis, every decision, and the operator's pause / resume / promote /
abort. Reading needs ``workflows`` read; everything else ``workflows`` update (a rollout ends in
a workflow assignment, like ``PUT …/assignments``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from agent.workflow import SpecError, parse_document
from controlplane.access import Principal
from controlplane.api.deps import Services, ServicesDep, guard
from controlplane.api.http import NAME_PATTERN, Page, PageDep, encode_cursor, etag, paginate
from controlplane.api.problems import Problem, field_path
from controlplane.rollouts import store
from controlplane.rollouts.create import create_rollout
from controlplane.rollouts.errors import RolloutConflict, RolloutError, RolloutNotFound, SpecInvalid
from controlplane.rollouts.observe import progress
from controlplane.rollouts.plan import active_rollout
from controlplane.rollouts.spec import RolloutSpec, StepSpec
from controlplane.store import as_utc, utcnow
from controlplane.store.schema import rollout_decisions, rollouts

router = APIRouter(prefix="/api/v1", tags=["rollouts"])

RolloutId = Annotated[str, PathParam(pattern=store.ID_PATTERN, description="r- and 10 hex digits.")]
State = Literal["running", "paused", "promoted", "aborted"]
ReadGuard = Annotated[Principal, Depends(guard("workflows", "read"))]
ActGuard = Annotated[Principal, Depends(guard("workflows", "update"))]

SPEC_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": RolloutSpec.model_json_schema(ref_template="#/components/schemas/{model}")
            },
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


class RolloutSummary(BaseModel):
    id: str
    workflow: str
    state: State
    target: dict[str, Any]
    bundle: dict[str, Any]
    step_index: int
    step: dict[str, Any]
    step_started_at: datetime
    paused_reason: str | None
    created_at: datetime
    created_by: str
    updated_at: datetime
    finished_at: datetime | None
    reason: str | None


class RolloutOut(RolloutSummary):
    spec: dict[str, Any]
    bundle_sha256: str
    cohorts: dict[str, list[str]] = Field(description="shadow, canary and baseline device ids.")
    progress: dict[str, int]
    analysis: dict[str, Any] | None = Field(description="The latest analysis of the current step.")


class DecisionOut(BaseModel):
    seq: int
    at: datetime
    step_index: int
    step: str
    action: str
    actor: str
    reason: str
    criteria: list[dict[str, Any]]


class ActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=2048, description="Required for abort.")


def _summary_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    steps = row["spec"]["steps"]
    return {
        "id": row["id"],
        "workflow": row["workflow"],
        "state": row["state"],
        "target": row["target"],
        "bundle": row["bundle"],
        "step_index": row["step_index"],
        "step": StepSpec.model_validate(steps[row["step_index"]]).describe(),
        "step_started_at": as_utc(row["step_started_at"]),
        "paused_reason": row["paused_reason"],
        "created_at": as_utc(row["created_at"]),
        "created_by": row["created_by"],
        "updated_at": as_utc(row["updated_at"]),
        "finished_at": as_utc(row["finished_at"]),
        "reason": row["reason"],
    }


def _out(svc: Services, row: Mapping[str, Any]) -> RolloutOut:
    with svc.db.read() as conn:
        active = active_rollout(conn, row)
        status = progress(conn, row, active.cohorts)
    return RolloutOut(
        **_summary_fields(row),
        spec=row["spec"],
        bundle_sha256=row["bundle_sha256"],
        cohorts=active.cohorts.as_dict(),
        progress=status,
        analysis=row["analysis"],
    )


def _problem(exc: RolloutError) -> Problem:
    if isinstance(exc, SpecInvalid):
        return Problem(422, f"invalid rollout: {exc}", type="validation", errors=exc.errors)
    if isinstance(exc, RolloutNotFound):
        return Problem(404, str(exc), type="not-found")
    if isinstance(exc, RolloutConflict):
        return Problem(409, str(exc), type="conflict")
    return Problem(400, str(exc), type="rollout")


async def _read_spec(request: Request) -> RolloutSpec:
    body = await request.body()
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    fmt: Literal["json", "yaml"] = "yaml" if "yaml" in media else "json"
    try:
        document = parse_document(body.decode("utf-8"), source="body", fmt=fmt)
    except UnicodeDecodeError as exc:
        raise Problem(
            400, f"body: not UTF-8 text ({exc.reason} at byte {exc.start})", type="bad-document"
        ) from exc
    except SpecError as exc:
        raise Problem(
            400, f"not valid {fmt.upper()}: {exc}", type="bad-document", line=exc.line, column=exc.column
        ) from exc
    if not isinstance(document, dict):
        raise Problem(
            422, "body: a rollout spec is an object (workflow, target, steps, …)", type="validation"
        )
    try:
        return RolloutSpec.model_validate(document)
    except ValidationError as exc:
        errors = [{"field": field_path(("body", *e["loc"])), "message": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        raise Problem(422, f"invalid rollout spec: {summary}", type="validation", errors=errors) from exc


@router.post("/rollouts", status_code=201, response_model=RolloutOut, openapi_extra=SPEC_BODY)
async def create(request: Request, svc: ServicesDep, caller: ActGuard, response: Response) -> RolloutOut:
    """Start a rollout: the spec is checked against the registry (422 by field), a target that
    shares a device with an active rollout of the workflow is refused (409), the bundle is signed,
    and the target's desired states are recomputed and published."""
    spec = await _read_spec(request)

    def run() -> RolloutOut:
        try:
            with svc.db.write() as conn:
                created = create_rollout(
                    conn,
                    spec,
                    actor=caller.actor,
                    signer=svc.signer,
                    manifest_lifetime=timedelta(days=svc.settings.manifest_lifetime_days),
                    now=utcnow(),
                )
                changed = svc.refresh_desired(conn, created.devices)
        except RolloutError as exc:
            raise _problem(exc) from exc
        svc.publish_desired(changed)
        return _out(svc, created.row)

    out = await run_in_threadpool(run)
    response.headers["Location"] = f"/api/v1/rollouts/{out.id}"
    return out


def _list_item(row: Mapping[str, Any]) -> RolloutSummary:
    return RolloutSummary(**_summary_fields(row))


@router.get("/rollouts", response_model=Page[RolloutSummary])
def list_rollouts(
    svc: ServicesDep,
    _caller: ReadGuard,
    page: PageDep,
    state: State | None = None,
    workflow: Annotated[str | None, Query(pattern=NAME_PATTERN, max_length=128)] = None,
) -> Page[RolloutSummary]:
    """Newest first."""
    query = sa.select(rollouts)
    if state is not None:
        query = query.where(rollouts.c.state == state)
    if workflow is not None:
        query = query.where(rollouts.c.workflow == workflow)
    after = page.after()
    if after is not None:
        if len(after) != 2 or not all(isinstance(v, str) for v in after):
            raise Problem(400, "query.cursor: not a cursor for this list", type="bad-cursor")
        try:
            created = datetime.fromisoformat(after[0])
        except ValueError as exc:
            raise Problem(400, "query.cursor: not a cursor for this list", type="bad-cursor") from exc
        query = query.where(sa.tuple_(rollouts.c.created_at, rollouts.c.id) < sa.tuple_(created, after[1]))
    query = query.order_by(rollouts.c.created_at.desc(), rollouts.c.id.desc()).limit(page.limit + 1)
    with svc.db.read() as conn:
        rows = conn.execute(query).mappings().all()
    items = [_list_item(dict(row)) for row in rows[: page.limit]]
    cursor = None
    if len(rows) > page.limit:
        last = rows[page.limit - 1]
        cursor = encode_cursor([as_utc(last["created_at"]).isoformat(), last["id"]])  # type: ignore[union-attr]
    return Page(items=items, next_cursor=cursor)


@router.get("/rollouts/{rollout_id}", response_model=RolloutOut)
def show_rollout(
    rollout_id: RolloutId, svc: ServicesDep, _caller: ReadGuard, response: Response
) -> RolloutOut:
    """The rollout: spec, resolved bundle, state, current step, cohorts, progress, latest analysis."""
    try:
        with svc.db.read() as conn:
            row = store.load(conn, rollout_id)
    except RolloutError as exc:
        raise _problem(exc) from exc
    response.headers["ETag"] = etag(row["revision"])
    return _out(svc, row)


def _decision_out(row: Mapping[str, Any]) -> DecisionOut:
    return DecisionOut(**{**row, "at": as_utc(row["at"])})


@router.get("/rollouts/{rollout_id}/decisions", response_model=Page[DecisionOut])
def list_decisions(
    rollout_id: RolloutId, svc: ServicesDep, _caller: ReadGuard, page: PageDep
) -> Page[DecisionOut]:
    """Every decision, oldest first, with the criteria behind it (what ``rollout explain`` prints)."""
    with svc.db.read() as conn:
        try:
            store.load(conn, rollout_id)
        except RolloutError as exc:
            raise _problem(exc) from exc
        query = sa.select(rollout_decisions).where(rollout_decisions.c.rollout_id == rollout_id)
        return paginate(conn, query, [rollout_decisions.c.seq], page, _decision_out)


def _act(
    svc: Services,
    request: Request,
    rollout_id: str,
    action: Literal["pause", "resume", "promote", "abort"],
    body: ActionIn | None,
    caller: Principal,
    response: Response,
) -> RolloutOut:
    wanted = request.headers.get("if-match")
    try:
        if wanted is not None:
            with svc.db.read() as conn:
                current = store.load(conn, rollout_id)["revision"]
            tags = {tag.strip().removeprefix("W/") for tag in wanted.split(",")}
            if "*" not in tags and etag(current) not in tags:
                raise Problem(
                    412,
                    f"the rollout changed since you read it (now {etag(current)}); read it again and retry",
                    type="precondition-failed",
                    headers={"ETag": etag(current)},
                )
        row = svc.rollout_controller().act(
            rollout_id, action, actor=caller.actor, reason=body.reason if body is not None else None
        )
    except RolloutError as exc:
        raise _problem(exc) from exc
    response.headers["ETag"] = etag(row["revision"])
    return _out(svc, row)


@router.post("/rollouts/{rollout_id}/pause", response_model=RolloutOut)
def pause(
    rollout_id: RolloutId,
    request: Request,
    svc: ServicesDep,
    caller: ActGuard,
    response: Response,
    body: ActionIn | None = None,
) -> RolloutOut:
    """Stop a running rollout where it is (its devices keep what they run); 409 unless running."""
    return _act(svc, request, rollout_id, "pause", body, caller, response)


@router.post("/rollouts/{rollout_id}/resume", response_model=RolloutOut)
def resume(
    rollout_id: RolloutId,
    request: Request,
    svc: ServicesDep,
    caller: ActGuard,
    response: Response,
    body: ActionIn | None = None,
) -> RolloutOut:
    """Run a paused rollout again; on a pause step this approves it and moves to the next step.
    409 unless paused."""
    return _act(svc, request, rollout_id, "resume", body, caller, response)


@router.post("/rollouts/{rollout_id}/promote", response_model=RolloutOut)
def promote(
    rollout_id: RolloutId,
    request: Request,
    svc: ServicesDep,
    caller: ActGuard,
    response: Response,
    body: ActionIn | None = None,
) -> RolloutOut:
    """Go to the next step now, without waiting for the analysis; after the last step the rollout
    is promoted and the candidate assigned to the target. 409 unless running or paused."""
    return _act(svc, request, rollout_id, "promote", body, caller, response)


@router.post("/rollouts/{rollout_id}/abort", response_model=RolloutOut)
def abort(
    rollout_id: RolloutId,
    request: Request,
    svc: ServicesDep,
    caller: ActGuard,
    response: Response,
    body: ActionIn | None = None,
) -> RolloutOut:
    """Stop the rollout and put every device of the target back on its baseline; ``reason`` is
    required (422 without). 409 unless running or paused."""
    return _act(svc, request, rollout_id, "abort", body, caller, response)
