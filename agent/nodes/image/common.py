"""What the image nodes share: their errors and reading an image from a JSONPath."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.workflow.errors import NodeError
from agent.workflow.paths import CompiledPath

if TYPE_CHECKING:
    from agent.imaging import Image


class BadImage(NodeError):
    """The image cannot be used: not an image, truncated, corrupt, unsupported, wrong channels,
    zero size, too large, or a missing file. Retrying cannot help."""


class BadRoi(NodeError):
    """A region of interest that does not fit in the image. Retrying cannot help."""


def read_image(value: Any, path: CompiledPath) -> Image:
    """The image at ``path``: an ``Image`` (from ``image_decode``, ``crop`` or ``resize``) or an
    H×W×3 uint8 BGR array, which is wrapped without a copy."""
    from agent.imaging import Image, ImageError

    if isinstance(value, Image):
        return value
    try:
        return Image.from_array(value, origin=path.text)
    except ImageError as exc:
        if type(value).__name__ != "ndarray":
            raise BadImage(
                f"{path.text}: expected an image (the output of image_decode, crop or resize) or an "
                f"H×W×3 uint8 array, got {type(value).__name__}"
            ) from exc
        raise BadImage(f"{path.text}: {exc}") from exc
