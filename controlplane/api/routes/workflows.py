"""Workflows: graphs uploaded as JSON or YAML, checked by the agent's compiler against the
models the control plane holds, stored as immutable signed versions."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from agent.workflow import CompileError, SpecError, parse_document
from agent.workflow.result import json_default
from controlplane import audit
from controlplane.access import Principal
from controlplane.api.deps import Services, ServicesDep, guard
from controlplane.api.http import NAME_PATTERN, NamePath, Page, PageDep, VersionPath, paginate
from controlplane.api.problems import Problem
from controlplane.api.routes.assignments import (
    AssignmentIn,
    AssignmentOut,
    TargetKind,
    assign,
    assignment_out,
)
from controlplane.api.routes.releases import (
    SignedManifestOut,
    VersionRef,
    artifact_reader,
    load_version,
    manifest_out,
    next_version,
    sign_release,
)
from controlplane.audit import canonical_json
from controlplane.catalog import check_workflow
from controlplane.dryrun import DryRunError, DryRunner
from controlplane.store import as_utc, utcnow
from controlplane.store.schema import workflow_assignments, workflows

router = APIRouter(prefix="/api/v1", tags=["workflows"])

GRAPH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


class WorkflowOut(BaseModel):
    name: str
    version: int
    sha256: str
    size: int
    models: list[VersionRef]
    nodes: int
    created_at: datetime
    created_by: str


class WorkflowDocumentOut(WorkflowOut):
    document: dict[str, Any]


class ValidationOut(BaseModel):
    valid: bool = True
    name: str
    version: int
    nodes: int
    models: list[VersionRef] = Field(description="Model versions the graph would run.")


def _out(row: Mapping[Any, Any]) -> WorkflowOut:
    return WorkflowOut(
        name=row["name"],
        version=row["version"],
        sha256=row["sha256"],
        size=row["size"],
        models=[VersionRef(**m) for m in row["models"]],
        nodes=len(row["document"].get("nodes", [])),
        created_at=as_utc(row["created_at"]),
        created_by=row["created_by"],
    )


async def _read_graph(request: Request) -> Any:
    body = await request.body()
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    fmt: Literal["json", "yaml"] = "yaml" if "yaml" in media else "json"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Problem(
            400, f"body: not UTF-8 text ({exc.reason} at byte {exc.start})", type="bad-document"
        ) from exc
    try:
        document = parse_document(text, source="body", fmt=fmt)
    except SpecError as exc:
        raise Problem(
            400, f"not valid {fmt.upper()}: {exc}", type="bad-document", line=exc.line, column=exc.column
        ) from exc
    if not isinstance(document, dict):
        raise Problem(
            422, "body: a workflow graph is an object with 'id', 'nodes' and 'edges'", type="invalid-workflow"
        )
    return document


def _check(svc: Services, conn: Connection, document: dict[str, Any]) -> tuple[int, dict[str, int]]:
    try:
        plan, used = check_workflow(document, conn, tuple(svc.settings.schema_dirs))
    except CompileError as exc:
        raise Problem(
            422,
            f"workflow '{exc.workflow_id or '?'}' has {len(exc.issues)} problem(s): "
            + "; ".join(str(issue) for issue in exc.issues[:5]),
            type="invalid-workflow",
            errors=[issue.to_dict() for issue in exc.issues],
        ) from exc
    return len(plan.nodes), used


@router.post("/workflows/validate", response_model=ValidationOut, openapi_extra=GRAPH_BODY)
async def validate_workflow(
    request: Request,
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(guard("workflows", "read"))],
) -> ValidationOut:
    """Compile a graph without storing it: every problem, by node and field."""
    document = await _read_graph(request)

    def check() -> ValidationOut:
        with svc.db.read() as conn:
            nodes, used = _check(svc, conn, document)
        return ValidationOut(
            name=document["id"],
            version=int(document.get("version", 1)),
            nodes=nodes,
            models=[VersionRef(name=n, version=v) for n, v in sorted(used.items())],
        )

    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(check)


@router.post("/workflows", status_code=201, response_model=WorkflowOut, openapi_extra=GRAPH_BODY)
async def upload_workflow(
    request: Request,
    svc: ServicesDep,
    caller: Annotated[Principal, Depends(guard("workflows", "create"))],
) -> WorkflowOut:
    """Store a new workflow version. The graph's ``version`` is kept if newer than every stored
    one (else 409); without one it becomes the newest + 1."""
    document = await _read_graph(request)

    def store() -> WorkflowOut:
        with svc.db.write() as conn:
            _nodes, used = _check(svc, conn, document)
            name = document["id"]
            version = next_version(conn, workflows, "workflow", name, document.get("version"))
            stored = {**document, "version": version}
            content = canonical_json(stored)
            digest = hashlib.sha256(content).hexdigest()
            row = {
                "name": name,
                "version": version,
                "document": stored,
                "sha256": digest,
                "size": len(content),
                "models": [{"name": n, "version": v} for n, v in sorted(used.items())],
                "manifest": sign_release(svc, "workflow", name, version, digest, len(content)),
                "created_at": utcnow(),
                "created_by": caller.actor,
            }
            conn.execute(workflows.insert().values(**row))
            audit.append(
                conn,
                actor=caller.actor,
                action="workflow.create",
                resource=f"workflows/{name}/{version}",
                after=stored,
            )
        return _out(row)

    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(store)


@router.get("/workflows", response_model=Page[WorkflowOut])
def list_workflows(
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(guard("workflows", "read"))],
    page: PageDep,
    name: Annotated[str | None, Query(max_length=128)] = None,
) -> Page[WorkflowOut]:
    query = sa.select(workflows)
    if name is not None:
        query = query.where(workflows.c.name == name)
    with svc.db.read() as conn:
        return paginate(conn, query, [workflows.c.name, workflows.c.version], page, _out)


@router.get("/workflows/{name}/versions/{version}", response_model=WorkflowDocumentOut)
def show_workflow(
    name: NamePath,
    version: VersionPath,
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(guard("workflows", "read"))],
) -> WorkflowDocumentOut:
    with svc.db.read() as conn:
        row = load_version(conn, workflows, "workflow", name, version)
    return WorkflowDocumentOut(**_out(row).model_dump(), document=row["document"])


@router.get(
    "/workflows/{name}/versions/{version}/manifest", response_model=SignedManifestOut, tags=["device"]
)
def workflow_manifest(
    name: NamePath,
    version: VersionPath,
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(artifact_reader("workflows"))],
) -> dict[str, Any]:
    with svc.db.read() as conn:
        return manifest_out(load_version(conn, workflows, "workflow", name, version))


@router.get(
    "/workflows/{name}/versions/{version}/content",
    responses={200: {"content": {"application/json": {}}}},
    tags=["device"],
)
def workflow_content(
    name: NamePath,
    version: VersionPath,
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(artifact_reader("workflows"))],
) -> Response:
    """The graph exactly as signed (canonical JSON): its sha256 is the manifest's."""
    with svc.db.read() as conn:
        row = load_version(conn, workflows, "workflow", name, version)
    return Response(
        canonical_json(row["document"]), media_type="application/json", headers={"ETag": f'"{row["sha256"]}"'}
    )


@router.put("/workflows/{name}/assignments/{target_kind}/{target}", response_model=AssignmentOut)
def assign_workflow(
    name: NamePath,
    target_kind: TargetKind,
    target: Annotated[str, PathParam(pattern=NAME_PATTERN, max_length=128)],
    body: AssignmentIn,
    svc: ServicesDep,
    caller: Annotated[Principal, Depends(guard("workflows", "update"))],
) -> AssignmentOut:
    """Run ``version`` of workflow ``name`` on a group or a device (with the models it uses and
    the threshold sets assigned there): their desired state changes and is published."""
    return assign(
        svc,
        assignments=workflow_assignments,
        versions=workflows,
        kind="workflow",
        name=name,
        target_kind=target_kind,
        target=target,
        version=body.version,
        caller=caller,
    )


@router.get("/workflows/{name}/assignments", response_model=Page[AssignmentOut])
def list_workflow_assignments(
    name: NamePath,
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(guard("workflows", "read"))],
    page: PageDep,
) -> Page[AssignmentOut]:
    query = sa.select(workflow_assignments).where(workflow_assignments.c.name == name)
    keys = [workflow_assignments.c.target_kind, workflow_assignments.c.target]
    with svc.db.read() as conn:
        return paginate(conn, query, keys, page, assignment_out)


class DryRunIn(BaseModel):
    input: Any = Field(description="The run's input document, as a device would receive it.")


def _dry_runner(svc: Services, request: Request) -> DryRunner:
    """The app's dry runner, created on the first dry run (onnxruntime loads only then)."""
    runner: DryRunner | None = getattr(request.app.state, "dry_runner", None)
    if runner is None:
        runner = request.app.state.dry_runner = DryRunner(
            svc.settings.data_dir, svc.blobs, tuple(svc.settings.schema_dirs)
        )
    return runner


@router.post("/workflows/{name}/runs", responses={200: {"content": {"application/json": {}}}})
def dry_run_workflow(
    name: NamePath,
    body: DryRunIn,
    request: Request,
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(guard("workflows", "create"))],
    version: Annotated[int | None, Query(ge=1, description="Default: the newest version.")] = None,
) -> Response:
    """Run a stored workflow version once on ``input``, here on the control plane (CPU, the
    model versions recorded with it, the newest threshold sets): the run result a device would
    produce, to try a workflow before any rollout. Nothing is stored or sent to devices."""
    runner = _dry_runner(svc, request)
    with svc.db.read() as conn:
        if version is None:
            version = conn.execute(
                sa.select(sa.func.max(workflows.c.version)).where(workflows.c.name == name)
            ).scalar()
            if version is None:
                raise Problem(404, f"workflow '{name}' does not exist", type="not-found")
        row = load_version(conn, workflows, "workflow", name, version)
        try:
            result = runner.run(conn, row, body.input)
        except DryRunError as exc:
            raise Problem(409, str(exc), type="dry-run-unavailable") from exc
    return Response(json.dumps(result.to_dict(), default=json_default), media_type="application/json")
