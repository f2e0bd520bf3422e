"""The control-plane transport: dry runs over its REST API
(``POST /api/v1/workflows/{name}/runs[?version=N]``), over httpx. httpx errors and problem
responses do not leave this module: each becomes an :class:`~edgefleet.errors.EdgefleetError`."""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from edgefleet import errors
from edgefleet._inputs import input_document
from edgefleet.endpoint import Endpoint
from edgefleet.results import WorkflowResult

__all__ = ["ControlPlaneTransport", "problem_error"]

API = "/api/v1"
USER_AGENT = "edgefleet-sdk"

_STATUS_ERRORS: Mapping[int, type[errors.EdgefleetError]] = {
    400: errors.InvalidArgument,
    401: errors.Unauthenticated,
    403: errors.PermissionDenied,
    404: errors.NotFound,
    408: errors.DeadlineExceeded,
    409: errors.FailedPrecondition,
    412: errors.FailedPrecondition,
    413: errors.ResourceExhausted,
    415: errors.InvalidArgument,
    422: errors.InvalidArgument,
    428: errors.FailedPrecondition,
    429: errors.ResourceExhausted,
    502: errors.Unavailable,
    503: errors.Unavailable,
    504: errors.DeadlineExceeded,
}
"""HTTP statuses → SDK errors; any other 5xx is a ServerError, any other 4xx the base class."""


def _api_field(name: str) -> str:
    """A problem's field path as the SDK's argument: without the request part, and the run input
    named ``input_data`` (``body.input.x`` → ``input_data.x``)."""
    for prefix in ("body.", "query.", "path."):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    if name == "input" or name.startswith(("input.", "input[")):
        name = "input_data" + name[len("input") :]
    return name


def problem_error(response: httpx.Response, *, endpoint: str, what: str) -> errors.EdgefleetError:
    """The SDK error for a 4xx/5xx ``response`` to ``what``: an RFC 9457 problem document's
    ``detail`` (and, for validation problems, the first field of ``errors``), or the body's first
    line when it is not a problem document."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    field = ""
    if isinstance(body, dict):
        detail = body.get("detail")
        if not isinstance(detail, str) or not detail:
            detail = str(body.get("title") or response.reason_phrase)
        listed = body.get("errors")
        if isinstance(listed, list):
            first = next((e for e in listed if isinstance(e, dict)), None)
            if first is not None:
                field = _api_field(str(first.get("field") or first.get("loc") or ""))
    else:
        detail = (
            response.text.strip().splitlines()[0][:200] if response.text.strip() else response.reason_phrase
        )
    cls = _STATUS_ERRORS.get(status, errors.ServerError if status >= 500 else errors.EdgefleetError)
    code = f"HTTP {status}"
    message = f"{what}: {detail}"
    if cls is errors.InvalidArgument:
        return errors.InvalidArgument(message, field=field, endpoint=endpoint, code=code)
    return cls(message, endpoint=endpoint, code=code)


class ControlPlaneTransport:
    """One HTTP connection pool to one control plane; thread-safe."""

    def __init__(
        self,
        endpoint: Endpoint,
        api_key: str | None,
        *,
        root_certificates: bytes | None,
        timeout: float | None,
    ) -> None:
        self.endpoint = endpoint
        self.where = endpoint.describe()
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json, application/problem+json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        verify: ssl.SSLContext | bool = True
        if root_certificates is not None:
            verify = ssl.create_default_context(cadata=root_certificates.decode("ascii"))
        self._http = httpx.Client(base_url=endpoint.target, headers=headers, timeout=timeout, verify=verify)

    def execute_workflow(
        self,
        workflow_id: str,
        input_data: Mapping[str, Any] | None,
        *,
        image: bytes | None,
        image_key: str | None,
        version: int | None,
        timeout: float | None,
    ) -> WorkflowResult:
        """A dry run: ``image`` goes into the input document base64-encoded under ``image_key``
        (default ``image``), which is how the control plane's ``image_decode`` nodes take it."""
        document = input_document(input_data, endpoint=self.where)
        if image is not None:
            document[image_key or "image"] = base64.b64encode(image).decode("ascii")
        what = f"dry run of workflow '{workflow_id}'" + (f" version {version}" if version else "")
        try:
            body = json.dumps({"input": document}, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise errors.InvalidArgument(
                f"input_data cannot be sent as JSON: {exc}", field="input_data", endpoint=self.where
            ) from None
        path = f"{API}/workflows/{quote(workflow_id, safe='')}/runs"
        params = {"version": version} if version is not None else None
        try:
            response = self._http.post(
                path,
                content=body,
                headers={"Content-Type": "application/json"},
                params=params,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException as exc:
            raise errors.DeadlineExceeded(f"{what}: no answer in time ({exc})", endpoint=self.where) from exc
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise errors.Unavailable(f"{what}: cannot reach it: {reason}", endpoint=self.where) from exc
        if response.is_error:
            raise problem_error(response, endpoint=self.where, what=what)
        try:
            raw = response.json()
        except ValueError as exc:
            raise errors.ServerError(f"{what}: the answer is not JSON", endpoint=self.where) from exc
        if not isinstance(raw, dict):
            raise errors.ServerError(f"{what}: the answer is not a run result", endpoint=self.where)
        return WorkflowResult.from_dict(raw)

    def close(self) -> None:
        self._http.close()
