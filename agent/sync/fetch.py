"""Fetching artifacts from the control plane (resuming with ``Range``), and the reconciler's errors.

:class:`ApplyError` is why a desired state (or a part of it) cannot be applied; :class:`FetchError`
a failed download. Both say whether retrying helps (``transient``).
"""

from __future__ import annotations

import json
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import httpx

__all__ = ["ApplyError", "FetchError", "Fetched", "Fetcher", "HttpFetcher"]

_CHUNK = 1 << 20


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
