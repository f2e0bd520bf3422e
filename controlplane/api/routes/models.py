"""Models: streamed uploads (sha256 on the way in, ONNX metadata read without loading the file),
immutable versions, signed manifests, and downloads that resume (HTTP ``Range``)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from controlplane import audit
from controlplane.access import Principal
from controlplane.api.deps import ServicesDep, ensure_item, guard, guard_item
from controlplane.api.http import NamePath, Page, PageDep, VersionPath, label_query, paginate
from controlplane.api.problems import Problem
from controlplane.api.routes.releases import (
    SignedManifestOut,
    artifact_reader,
    ensure_reader,
    load_version,
    manifest_out,
    next_version,
    sign_release,
)
from controlplane.artifacts import BlobTooLarge, BlobWriter, DigestMismatch, NotOnnxError, read_onnx_metadata
from controlplane.store import as_utc, utcnow
from controlplane.store.schema import models

router = APIRouter(prefix="/api/v1", tags=["models"])

UPLOAD_CHUNK = 1 << 20


class LargeFileResponse(FileResponse):
    """Starlette reads 64 KiB per thread hand-off; 1 MiB reads send big models several times
    faster for the same CPU (measured in docs/benchmarks.md)."""

    chunk_size = 1 << 20


class TensorOut(BaseModel):
    name: str
    dtype: str
    shape: list[int | str | None]


class OnnxOut(BaseModel):
    ir_version: int
    opset: dict[str, int]
    producer_name: str
    producer_version: str
    graph_name: str
    inputs: list[TensorOut]
    outputs: list[TensorOut]


class ModelOut(BaseModel):
    name: str
    version: int
    sha256: str
    size: int
    onnx: OnnxOut
    labels: dict[str, str]
    description: str
    created_at: datetime
    created_by: str
    download_url: str = Field(description="Supports HTTP Range: an interrupted download resumes.")


def _model_out(base_url: str) -> Any:
    def convert(row: Mapping[Any, Any]) -> ModelOut:
        onnx = {k: v for k, v in row["onnx"].items() if k != "size"}
        return ModelOut(
            name=row["name"],
            version=row["version"],
            sha256=row["sha256"],
            size=row["size"],
            onnx=OnnxOut(**onnx),
            labels=row["labels"],
            description=row["description"],
            created_at=as_utc(row["created_at"]),
            created_by=row["created_by"],
            download_url=f"{base_url}/api/v1/models/{row['name']}/versions/{row['version']}/content",
        )

    return convert


@router.post("/models/{name}/versions", status_code=201, response_model=ModelOut)
async def upload_model(
    name: NamePath,
    request: Request,
    svc: ServicesDep,
    caller: Annotated[Principal, Depends(guard("models", "create"))],
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="Newest + 1 when unset.")] = None,
    sha256: Annotated[
        str | None,
        Query(pattern=r"^[0-9a-f]{64}$", description="Refuse the upload unless the bytes hash to this."),
    ] = None,
    description: Annotated[str, Query(max_length=1024)] = "",
    label: Annotated[list[str] | None, Query(max_length=20, description="key=value")] = None,
) -> ModelOut:
    """Upload an ONNX model as the body (``application/octet-stream``), streamed to storage.

    The sha256 is computed on the way in; a truncated body, a digest that differs from
    ``sha256``, a body over the size limit or a file that is not ONNX is refused, and nothing of
    it is kept."""
    labels = label_query(label)
    declared = request.headers.get("content-length")
    writer = svc.blobs.writer(max_bytes=svc.settings.max_model_bytes)
    with writer:
        try:
            await _stream_to(request, writer)
        except ClientDisconnect as exc:
            raise Problem(
                400, "the upload was interrupted; nothing was stored", type="upload-interrupted"
            ) from exc
        except BlobTooLarge as exc:
            raise Problem(
                413,
                f"the model is larger than the limit of {svc.settings.max_model_bytes} bytes",
                type="too-large",
            ) from exc
        if writer.size == 0:
            raise Problem(
                400, "the request body is empty: send the ONNX file as the body", type="empty-upload"
            )
        if declared is not None and declared.isdigit() and int(declared) != writer.size:
            raise Problem(
                400,
                f"received {writer.size} of {declared} bytes: truncated upload",
                type="upload-interrupted",
            )
        try:
            digest = await run_in_threadpool(writer.commit, sha256)
        except DigestMismatch as exc:
            raise Problem(422, f"query.sha256: {exc}", type="digest-mismatch") from exc
    path = svc.blobs.local_path(digest)
    try:
        meta = await run_in_threadpool(read_onnx_metadata, path) if path is not None else None
    except NotOnnxError as exc:
        await run_in_threadpool(_drop_unreferenced, svc, digest)
        reason = str(exc).replace(f"{path}: ", "")
        raise Problem(415, f"the uploaded file is {reason}", type="not-onnx") from exc
    return await run_in_threadpool(
        _register,
        svc,
        caller,
        name,
        version,
        digest,
        writer.size,
        meta.to_dict() if meta else {},
        labels,
        description,
    )


async def _stream_to(request: Request, writer: BlobWriter) -> None:
    """Write the body to ``writer``, receiving the next MiB while the previous one is hashed and
    written (one write in flight). On any error the write in flight finishes before it propagates,
    so the caller can abort the writer safely."""
    writing: asyncio.Future[None] | None = None
    buffer: list[bytes] = []
    buffered = 0
    try:
        async for chunk in request.stream():
            buffer.append(chunk)
            buffered += len(chunk)
            if buffered >= UPLOAD_CHUNK:
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(run_in_threadpool(writer.write, b"".join(buffer)))
                buffer, buffered = [], 0
        if writing is not None:
            await writing
        await run_in_threadpool(writer.write, b"".join(buffer))
    finally:
        if writing is not None and not writing.done():
            await asyncio.wait([writing])


def _drop_unreferenced(svc: Any, digest: str) -> None:
    with svc.db.read() as conn:
        used = conn.execute(sa.select(models.c.name).where(models.c.sha256 == digest).limit(1)).first()
    if used is None:
        svc.blobs.delete(digest)


def _register(
    svc: Any,
    caller: Principal,
    name: str,
    requested: int | None,
    digest: str,
    size: int,
    meta: dict[str, Any],
    labels: dict[str, str],
    description: str,
) -> ModelOut:
    try:
        with svc.db.write() as conn:
            version = next_version(conn, models, "model", name, requested)
            row = {
                "name": name,
                "version": version,
                "sha256": digest,
                "size": size,
                "onnx": meta,
                "labels": labels,
                "description": description,
                "manifest": sign_release(svc, "model", name, version, digest, size),
                "created_at": utcnow(),
                "created_by": caller.actor,
            }
            conn.execute(models.insert().values(**row))
            audit.append(
                conn,
                actor=caller.actor,
                action="model.create",
                resource=f"models/{name}/{version}",
                after={k: v for k, v in row.items() if k != "manifest"},
            )
    except Exception:
        _drop_unreferenced(svc, digest)
        raise
    out: ModelOut = _model_out(svc.settings.base_url)(row)
    return out


@router.get("/models", response_model=Page[ModelOut])
def list_models(
    svc: ServicesDep,
    _caller: Annotated[Principal, Depends(guard("models", "read"))],
    page: PageDep,
    name: Annotated[str | None, Query(max_length=128)] = None,
) -> Page[ModelOut]:
    """Every model version, by name then version."""
    query = sa.select(models)
    if name is not None:
        query = query.where(models.c.name == name)
    with svc.db.read() as conn:
        return paginate(
            conn, query, [models.c.name, models.c.version], page, _model_out(svc.settings.base_url)
        )


@router.get("/models/{name}/versions/{version}", response_model=ModelOut)
def show_model(
    name: NamePath,
    version: VersionPath,
    svc: ServicesDep,
    caller: Annotated[Principal, Depends(guard_item("models", "read"))],
) -> ModelOut:
    with svc.db.read() as conn:
        row = load_version(conn, models, "model", name, version)
    ensure_item(caller, "models", "read", row["labels"])
    out: ModelOut = _model_out(svc.settings.base_url)(row)
    return out


@router.get("/models/{name}/versions/{version}/manifest", response_model=SignedManifestOut, tags=["device"])
def model_manifest(
    name: NamePath,
    version: VersionPath,
    svc: ServicesDep,
    caller: Annotated[Principal, Depends(artifact_reader("models"))],
) -> dict[str, Any]:
    """The signed release manifest: verify it before installing the bytes."""
    with svc.db.read() as conn:
        row = load_version(conn, models, "model", name, version)
    ensure_reader(caller, "models", row["labels"])
    return manifest_out(row)


@router.get(
    "/models/{name}/versions/{version}/content",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "A byte range."}},
    tags=["device"],
)
def download_model(
    name: NamePath,
    version: VersionPath,
    svc: ServicesDep,
    caller: Annotated[Principal, Depends(artifact_reader("models"))],
) -> Response:
    """The model's bytes. Send ``Range: bytes=N-`` to resume an interrupted download."""
    with svc.db.read() as conn:
        row = load_version(conn, models, "model", name, version)
    ensure_reader(caller, "models", row["labels"])
    path = svc.blobs.local_path(row["sha256"])
    if path is None:  # pragma: no cover - only the file store exists so far
        raise Problem(501, "this artifact store cannot serve files directly")
    return LargeFileResponse(
        path,
        media_type="application/octet-stream",
        filename=f"{name}-v{version}.onnx",
        headers={"ETag": f'"{row["sha256"]}"', "Cache-Control": "private, immutable"},
    )
