"""A small typed client for the control plane's REST API (``/api/v1``), over httpx.

``edgefleet``'s operator commands use it, and so can scripts::

    with ControlPlaneClient("https://cp.example:8080", token) as api:
        for device in api.iter_pages("/api/v1/devices", {"status": "active"}):
            print(device["id"])

Every method returns the API's parsed JSON. Any 4xx/5xx answer raises :class:`ApiError` with the
problem document's ``detail`` and field ``errors``; a control plane that cannot be reached raises
:class:`Unreachable` (``status`` 0).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import httpx

from agent.fsutil import fsync_dir

__all__ = [
    "API",
    "CHUNK_SIZE",
    "ApiError",
    "ControlPlaneClient",
    "DownloadCorrupt",
    "Listing",
    "Progress",
    "Unreachable",
    "file_sha256",
]

API = "/api/v1"
CHUNK_SIZE = 1 << 20
"""Uploads and downloads move in 1 MiB pieces; a model file is never read whole into memory."""

Json = dict[str, Any]
Params = Mapping[str, str | int | list[str] | None]
Progress = Callable[[int], None]
"""Called with the number of bytes just moved."""


class Listing(NamedTuple):
    """Items of a list, and the cursor of the page after them (``None``: nothing more)."""

    items: list[Json]
    next_cursor: str | None


class ApiError(Exception):
    """The control plane answered with an error (or, for :class:`Unreachable`, not at all)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        problem: Json | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []
        self.problem = problem or {}

    @property
    def type(self) -> str:
        """The last part of the problem ``type`` (``not-found``, ``invalid-workflow`` ...)."""
        return str(self.problem.get("type", "")).rsplit("/", 1)[-1]

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            text = response.text.strip()[:200] or response.reason_phrase
            return cls(response.status_code, f"HTTP {response.status_code}: {text}")
        detail = body.get("detail")
        if not isinstance(detail, str) or not detail:
            detail = str(body.get("title") or f"HTTP {response.status_code}")
        raw_errors = body.get("errors")
        errors = [e for e in raw_errors if isinstance(e, dict)] if isinstance(raw_errors, list) else []
        return cls(response.status_code, detail, errors=errors, problem=body)


class Unreachable(ApiError):
    """No HTTP answer: connection refused, DNS, TLS or a timeout."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(0, f"cannot reach the control plane at {url}: {reason}")
        self.url = url


class DownloadCorrupt(Exception):
    """The downloaded bytes do not hash to the signed manifest's sha256 (the partial file is gone)."""


def file_sha256(path: Path, progress: Progress | None = None) -> str:
    """The hex sha256 of a file, read in :data:`CHUNK_SIZE` pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(CHUNK_SIZE):
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return digest.hexdigest()


def _file_chunks(path: Path, progress: Progress | None) -> Iterator[bytes]:
    with path.open("rb") as src:
        while chunk := src.read(CHUNK_SIZE):
            yield chunk
            if progress is not None:
                progress(len(chunk))


def _clean(params: Params | None) -> dict[str, Any]:
    return {k: v for k, v in (params or {}).items() if v is not None and v != []}


class ControlPlaneClient:
    """One operator (or device) session with the control plane. Close it, or use ``with``."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 30) -> None:
        self.url = url.rstrip("/")
        headers = {"User-Agent": "edgefleet-cli", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> ControlPlaneClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---- plumbing ----------------------------------------------------------------------------

    def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        """Send one request; raise :class:`ApiError` for a 4xx/5xx, :class:`Unreachable` for none."""
        try:
            response = self._http.request(method, path, **options)
        except httpx.TransportError as exc:
            raise Unreachable(self.url, str(exc) or type(exc).__name__) from exc
        if response.is_error:
            raise ApiError.from_response(response)
        return response

    def _json(self, method: str, path: str, **options: Any) -> Any:
        response = self.request(method, path, **options)
        return response.json() if response.content else None

    def _get(self, path: str, params: Params | None = None) -> Json:
        body: Json = self._json("GET", path, params=_clean(params))
        return body

    def _get_with_etag(self, path: str) -> tuple[Json, str | None]:
        response = self.request("GET", path)
        body: Json = response.json()
        return body, response.headers.get("etag")

    def _post(self, path: str, body: Any = None, params: Params | None = None) -> Json:
        out: Json = self._json("POST", path, json=body, params=_clean(params))
        return out

    def page(self, path: str, params: Params | None = None) -> Listing:
        """One page of a list: its items and the cursor of the next page (``None`` on the last)."""
        body = self._get(path, params)
        return Listing(list(body.get("items", [])), body.get("next_cursor"))

    def iter_pages(self, path: str, params: Params | None = None) -> Iterator[Json]:
        """Every item of a list, following ``next_cursor`` page after page."""
        query = dict(_clean(params))
        while True:
            items, cursor = self.page(path, query)
            yield from items
            if cursor is None:
                return
            query["cursor"] = cursor

    def listing(self, path: str, params: Params | None = None, *, all_pages: bool = False) -> Listing:
        """The first page of a list (up to ``limit`` in ``params``), or with ``all_pages`` every item."""
        if all_pages:
            return Listing(list(self.iter_pages(path, params)), None)
        return self.page(path, params)

    # ---- identity ----------------------------------------------------------------------------

    def whoami(self) -> Json:
        return self._get(f"{API}/whoami")

    # ---- devices and enrollment ----------------------------------------------------------------

    def list_devices(
        self,
        *,
        labels: Mapping[str, str] | None = None,
        status: str | None = None,
        limit: int = 100,
        all_pages: bool = False,
    ) -> Listing:
        params = {
            "label": [f"{k}={v}" for k, v in (labels or {}).items()],
            "status": status,
            "limit": limit,
        }
        return self.listing(f"{API}/devices", params, all_pages=all_pages)

    def get_device(self, device_id: str) -> tuple[Json, str | None]:
        """The device and its ETag (send it back as ``If-Match`` with an update)."""
        return self._get_with_etag(f"{API}/devices/{device_id}")

    def update_device_labels(self, device_id: str, labels: Mapping[str, str | None], etag: str) -> Json:
        """Merge ``labels`` (``None`` removes one). 412 when the device changed since ``etag``."""
        out: Json = self._json(
            "PATCH", f"{API}/devices/{device_id}", json={"labels": dict(labels)}, headers={"If-Match": etag}
        )
        return out

    def decommission_device(self, device_id: str) -> Json:
        return self._post(f"{API}/devices/{device_id}/decommission")

    def create_enrollment_token(
        self,
        *,
        ttl_s: int | None = None,
        labels: Mapping[str, str] | None = None,
        profile: str | None = None,
        note: str = "",
    ) -> Json:
        body = {"ttl_s": ttl_s, "labels": dict(labels or {}), "profile": profile, "note": note}
        return self._post(f"{API}/enrollment-tokens", body)

    # ---- models ------------------------------------------------------------------------------

    def upload_model(
        self,
        name: str,
        path: Path,
        *,
        sha256: str | None = None,
        version: int | None = None,
        description: str = "",
        labels: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> Json:
        """Stream ``path`` as model ``name``; the server checks the bytes hash to ``sha256``
        (computed here when not given) and refuses the upload otherwise."""
        digest = sha256 or file_sha256(path)
        params = {
            "sha256": digest,
            "version": version,
            "description": description or None,
            "label": [f"{k}={v}" for k, v in (labels or {}).items()],
        }
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(path.stat().st_size)}
        out: Json = self._json(
            "POST",
            f"{API}/models/{name}/versions",
            params=_clean(params),
            content=_file_chunks(path, progress),
            headers=headers,
        )
        return out

    def get_model(self, name: str, version: int) -> Json:
        return self._get(f"{API}/models/{name}/versions/{version}")

    def model_manifest(self, name: str, version: int) -> Json:
        """The signed release manifest: ``{"manifest": {... "sha256", "size"}, "signature", "key_id"}``."""
        return self._get(f"{API}/models/{name}/versions/{version}/manifest")

    def download_model(
        self,
        name: str,
        version: int,
        dest: Path,
        *,
        progress: Progress | None = None,
        on_start: Callable[[int, int], None] | None = None,
    ) -> Json:
        """Download a model version to ``dest``, resuming ``dest.part`` if an earlier download left
        one; verify the bytes against the signed manifest's sha256 and rename into place.

        ``on_start(already, total)`` is called once the resume point is known. Returns the
        manifest. Raises :class:`DownloadCorrupt` (and removes the partial file) on a mismatch."""
        manifest: Json = self.model_manifest(name, version)["manifest"]
        expected, total = str(manifest["sha256"]), int(manifest["size"])
        part = dest.with_name(dest.name + ".part")
        have = part.stat().st_size if part.exists() else 0
        if have > total:
            part.unlink()
            have = 0
        if on_start is not None:
            on_start(have, total)
        if have < total:
            self._fetch(f"{API}/models/{name}/versions/{version}/content", part, have, progress)
        actual = file_sha256(part)
        if actual != expected:
            part.unlink(missing_ok=True)
            raise DownloadCorrupt(
                f"model '{name}' v{version}: downloaded bytes hash to {actual}, "
                f"the signed manifest says {expected}; the partial file was removed, download again"
            )
        os.replace(part, dest)
        fsync_dir(dest.parent)
        return manifest

    def _fetch(self, path: str, part: Path, offset: int, progress: Progress | None) -> None:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            with self._http.stream("GET", path, headers=headers) as response:
                if response.status_code == 416:  # nothing past what we have: verify it as is
                    return
                if response.is_error:
                    response.read()
                    raise ApiError.from_response(response)
                mode = "ab" if response.status_code == 206 else "wb"  # 200: the server sent it all
                with part.open(mode) as out:
                    for chunk in response.iter_bytes(CHUNK_SIZE):
                        out.write(chunk)
                        if progress is not None:
                            progress(len(chunk))
                    out.flush()
                    os.fsync(out.fileno())
        except httpx.TransportError as exc:
            raise Unreachable(self.url, str(exc) or type(exc).__name__) from exc

    def list_models(self, name: str | None = None, *, limit: int = 100, all_pages: bool = False) -> Listing:
        return self.listing(f"{API}/models", {"name": name, "limit": limit}, all_pages=all_pages)

    # ---- workflows ---------------------------------------------------------------------------

    def push_workflow(self, text: str, content_type: str) -> Json:
        """Store a graph given as JSON or YAML text (``application/json`` / ``application/yaml``)."""
        out: Json = self._json(
            "POST", f"{API}/workflows", content=text.encode(), headers={"Content-Type": content_type}
        )
        return out

    def validate_workflow(self, text: str, content_type: str) -> Json:
        """Compile a graph without storing it: 422 (``errors`` by node and field) when it is wrong."""
        out: Json = self._json(
            "POST", f"{API}/workflows/validate", content=text.encode(), headers={"Content-Type": content_type}
        )
        return out

    def list_workflows(
        self, name: str | None = None, *, limit: int = 100, all_pages: bool = False
    ) -> Listing:
        return self.listing(f"{API}/workflows", {"name": name, "limit": limit}, all_pages=all_pages)

    def get_workflow(self, name: str, version: int) -> Json:
        return self._get(f"{API}/workflows/{name}/versions/{version}")

    # ---- thresholds --------------------------------------------------------------------------

    def create_threshold_set(
        self, name: str, values: Mapping[str, float], version: int | None = None
    ) -> Json:
        body: Json = {"values": dict(values)}
        if version is not None:
            body["version"] = version
        return self._post(f"{API}/thresholds/{name}/versions", body)

    def assign_thresholds(self, name: str, version: int, target_kind: str, target: str) -> Json:
        out: Json = self._json(
            "PUT", f"{API}/thresholds/{name}/assignments/{target_kind}/{target}", json={"version": version}
        )
        return out

    def list_threshold_sets(self, *, limit: int = 100, all_pages: bool = False) -> Listing:
        return self.listing(f"{API}/thresholds", {"limit": limit}, all_pages=all_pages)

    def list_threshold_assignments(self, name: str) -> list[Json]:
        return list(self.iter_pages(f"{API}/thresholds/{name}/assignments"))

    # ---- rollouts ----------------------------------------------------------------------------

    def create_rollout(self, spec: Mapping[str, Any]) -> Json:
        """Start a rollout from its spec (docs/rollouts.md); returns the rollout with its cohorts."""
        return self._post(f"{API}/rollouts", dict(spec))

    def list_rollouts(
        self,
        *,
        state: str | None = None,
        workflow: str | None = None,
        limit: int = 100,
        all_pages: bool = False,
    ) -> Listing:
        params = {"state": state, "workflow": workflow, "limit": limit}
        return self.listing(f"{API}/rollouts", params, all_pages=all_pages)

    def get_rollout(self, rollout_id: str) -> Json:
        """The rollout: spec, bundle, state, current step, cohorts, progress, latest analysis."""
        return self._get(f"{API}/rollouts/{rollout_id}")

    def rollout_decisions(self, rollout_id: str) -> list[Json]:
        """Every decision of the rollout, oldest first (every page)."""
        return list(self.iter_pages(f"{API}/rollouts/{rollout_id}/decisions"))

    def pause_rollout(self, rollout_id: str, reason: str | None = None) -> Json:
        return self._rollout_action(rollout_id, "pause", reason)

    def resume_rollout(self, rollout_id: str, reason: str | None = None) -> Json:
        return self._rollout_action(rollout_id, "resume", reason)

    def promote_rollout(self, rollout_id: str, reason: str | None = None) -> Json:
        """Promote the current step now: to the next step, or the whole rollout after the last."""
        return self._rollout_action(rollout_id, "promote", reason)

    def abort_rollout(self, rollout_id: str, reason: str) -> Json:
        """Put every device of the target back on its baseline bundle."""
        return self._rollout_action(rollout_id, "abort", reason)

    def _rollout_action(self, rollout_id: str, action: str, reason: str | None) -> Json:
        body = {"reason": reason} if reason is not None else {}
        return self._post(f"{API}/rollouts/{rollout_id}/{action}", body)

    # ---- audit -------------------------------------------------------------------------------

    def list_audit(
        self,
        *,
        actor: str | None = None,
        resource: str | None = None,
        limit: int = 100,
        all_pages: bool = False,
        newest_first: bool = False,
    ) -> Listing:
        """Entries oldest first (or newest first); ``resource`` is a prefix (``devices/cam-1``)."""
        params = {
            "actor": actor,
            "resource": resource,
            "limit": limit,
            "order": "desc" if newest_first else "asc",
        }
        return self.listing(f"{API}/audit", params, all_pages=all_pages)

    def verify_audit(self) -> Json:
        return self._get(f"{API}/audit/verify")

    # ---- tokens and policies -----------------------------------------------------------------

    def create_token(
        self,
        name: str,
        role: str,
        *,
        attributes: Mapping[str, str] | None = None,
        policies: list[str] | None = None,
        ttl_s: int | None = None,
    ) -> Json:
        body = {
            "name": name,
            "role": role,
            "attributes": dict(attributes or {}),
            "policies": policies or [],
            "ttl_s": ttl_s,
        }
        return self._post(f"{API}/tokens", body)

    def list_tokens(self, *, limit: int = 100, all_pages: bool = False) -> Listing:
        return self.listing(f"{API}/tokens", {"limit": limit}, all_pages=all_pages)

    def revoke_token(self, token_id: str) -> None:
        self.request("DELETE", f"{API}/tokens/{token_id}")

    def list_policies(self, *, limit: int = 100, all_pages: bool = False) -> Listing:
        return self.listing(f"{API}/policies", {"limit": limit}, all_pages=all_pages)

    def get_policy(self, name: str) -> tuple[Json, str | None]:
        return self._get_with_etag(f"{API}/policies/{name}")

    def put_policy(self, name: str, body: Mapping[str, Any], etag: str | None = None) -> Json:
        """Create a policy, or replace it: then ``etag`` (from :meth:`get_policy`) is required."""
        headers = {"If-Match": etag} if etag else {}
        out: Json = self._json("PUT", f"{API}/policies/{name}", json=dict(body), headers=headers)
        return out
