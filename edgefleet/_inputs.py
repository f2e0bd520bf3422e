"""Run inputs as the endpoints take them: the input document as JSON text, and the frame forms
:meth:`WorkflowClient.inspect` accepts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeAlias

from edgefleet.errors import InvalidArgument
from edgefleet.results import Frame

__all__ = ["FrameLike", "input_document", "input_json"]

FrameLike: TypeAlias = bytes | tuple[int, bytes] | Frame
"""A frame for ``inspect``: encoded image bytes, ``(frame_id, bytes)``, or a :class:`Frame`."""


def input_document(input_data: Mapping[str, Any] | None, *, endpoint: str) -> dict[str, Any]:
    """``input_data`` as a plain dict; :class:`InvalidArgument` naming ``input_data`` unless it is
    a mapping with string keys."""
    if input_data is None:
        return {}
    if not isinstance(input_data, Mapping):
        raise InvalidArgument(
            f"input_data must be a mapping (a JSON object), got {type(input_data).__name__}",
            field="input_data",
            endpoint=endpoint,
        )
    document = dict(input_data)
    bad = [key for key in document if not isinstance(key, str)]
    if bad:
        raise InvalidArgument(
            f"input_data keys must be strings, got {bad[0]!r}", field="input_data", endpoint=endpoint
        )
    return document


def input_json(input_data: Mapping[str, Any] | None, *, endpoint: str) -> str:
    """``input_data`` as JSON text (empty for none); :class:`InvalidArgument` naming
    ``input_data`` when it cannot be written as JSON."""
    document = input_document(input_data, endpoint=endpoint)
    if not document:
        return ""
    try:
        return json.dumps(document, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(
            f"input_data cannot be sent as JSON: {exc}", field="input_data", endpoint=endpoint
        ) from None
