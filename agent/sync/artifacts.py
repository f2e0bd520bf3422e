"""The device's verified artifacts: downloads, the model store, stored graphs and threshold sets.

Layout under ``<data_dir>/sync/``::

    downloads/<sha256>.part                  a download in progress (resumed with Range)
    artifacts/workflows/<name>/<version>.json a verified workflow graph
    artifacts/thresholds/<name>/<version>.json a verified threshold set

Models go into the model store (content-addressed, atomic installs). Every write here is atomic
(:func:`agent.fsutil.atomic_write`), and bytes are only kept once their sha256 and size match the
verified manifest, so a crash at any instant leaves either no file or a complete verified one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.fsutil import atomic_write
from agent.inference.store import ModelStore
from agent.manifest import DigestMismatch, Manifest, verify_artifact
from agent.sync.fetch import ApplyError, Fetcher, FetchError
from protos import sync_pb2

__all__ = ["Artifact", "Artifacts", "strip_label"]

log = logging.getLogger(__name__)

_KIND_DIRS = {"workflow": "workflows", "thresholds": "thresholds"}


def strip_label(message: str) -> str:
    """``model 'x' version 2: signature …`` → ``signature …`` (the caller names the artifact)."""
    match = re.match(r"^(?:model|workflow|thresholds|bundle) '[^']*'(?: version \d+)?: ", message)
    return message[match.end() :] if match else message


@dataclass(frozen=True)
class Artifact:
    """A verified manifest and where its bytes come from."""

    kind: str
    ref: sync_pb2.ArtifactRef
    manifest: Manifest
    context: str

    @property
    def label(self) -> str:
        return f"{self.manifest.label}{self.context}"


class Artifacts:
    """Fetches, verifies and keeps artifact bytes (see the module docstring)."""

    def __init__(self, root: Path, fetcher: Fetcher, model_store: Callable[[], ModelStore]) -> None:
        self.downloads = root / "downloads"
        self.artifacts = root / "artifacts"
        for directory in (self.downloads, self.artifacts):
            directory.mkdir(parents=True, exist_ok=True)
        self.fetcher = fetcher
        self._model_store = model_store

    def part_path(self, sha256: str) -> Path:
        """Where the download of the artifact with this sha256 is kept until it is verified."""
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.downloads / f"{sha256}.part"

    def path(self, kind: str, name: str, version: int) -> Path:
        """Where a verified workflow graph or threshold set is kept."""
        return self.artifacts / _KIND_DIRS[kind] / name / f"{version}.json"

    def download(self, artifact: Artifact) -> Path:
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
                return self.download(artifact)
            raise ApplyError(f"{artifact.label}: digest mismatch: {strip_label(str(exc))}") from exc
        return part

    def has_model(self, name: str, version: int, sha256: str) -> bool:
        """This exact model (same sha256) is installed as ``version``."""
        store = self._model_store()
        if str(version) not in store.versions(name):
            return False
        with contextlib.suppress(Exception):
            return store.resolve(name, str(version)).sha256 == sha256
        return False

    def install_model(self, artifact: Artifact) -> None:
        manifest = artifact.manifest
        store = self._model_store()
        version = str(manifest.version)
        if version in store.versions(manifest.name):
            record = store.resolve(manifest.name, version)
            if record.sha256 == manifest.sha256:
                return  # installed already: nothing to fetch
            raise ApplyError(
                f"{artifact.label}: another file is installed as this version "
                f"(sha256 {record.sha256[:12]}…, the manifest says {manifest.sha256[:12]}…)"
            )
        part = self.download(artifact)
        from agent.inference.errors import InferenceError

        try:
            store.install(part, manifest.name, version)
        except InferenceError as exc:
            raise ApplyError(f"{artifact.label}: install failed: {exc}") from exc
        finally:
            part.unlink(missing_ok=True)
        log.info("sync: installed %s", artifact.label)

    def stored_or_fetch(self, artifact: Artifact) -> bytes:
        """The bytes of a workflow or threshold set: from the store of verified artifacts, or
        fetched, verified and stored."""
        manifest = artifact.manifest
        path = self.path(artifact.kind, manifest.name, manifest.version)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            pass
        else:
            if hashlib.sha256(data).hexdigest() == manifest.sha256 and len(data) == manifest.size:
                return data
            log.warning("sync: stored %s does not match its manifest; fetching it again", artifact.label)
        part = self.download(artifact)
        data = part.read_bytes()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)
        part.unlink(missing_ok=True)
        return data

    def workflow_document(self, artifact: Artifact) -> dict[str, Any]:
        data = self.stored_or_fetch(artifact)
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

    def threshold_values(self, artifact: Artifact) -> dict[str, float]:
        data = self.stored_or_fetch(artifact)
        return threshold_values(data, artifact.label, artifact.manifest.name, artifact.manifest.version)

    def stored(self, kind: str, name: str, version: int, sha256: str | None) -> bytes:
        """A kept artifact's bytes, re-verified against ``sha256`` when given; ``ApplyError``
        when it is missing or does not match."""
        path = self.path(kind, name, version)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ApplyError(f"{kind} '{name}' version {version}: not stored: {exc}") from exc
        if sha256 and hashlib.sha256(data).hexdigest() != sha256:
            raise ApplyError(
                f"{kind} '{name}' version {version}: the stored bytes do not match sha256 {sha256}"
            )
        return data

    def prune(self, keep: Iterable[Path]) -> None:
        """Forget stored workflow graphs and threshold sets not in ``keep``."""
        kept = set(keep)
        for path in self.artifacts.glob("*/*/*.json"):
            if path not in kept:
                with contextlib.suppress(OSError):
                    path.unlink()


def threshold_values(data: bytes, label: str, name: str, version: int) -> dict[str, float]:
    """The values of a threshold-set document; ``ApplyError`` naming ``label`` when it is not one."""
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise ApplyError(f"{label}: not a JSON threshold set: {exc}") from exc
    values = document.get("values") if isinstance(document, dict) else None
    if not isinstance(values, dict) or document.get("name") != name or document.get("version") != version:
        raise ApplyError(f"{label}: not a threshold set of this name and version")
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ApplyError(f"{label}: threshold '{key}' is not a finite number: {value!r}")
    return {str(key): float(value) for key, value in values.items()}
