"""``image_decode``: read a camera frame from the run and check that it is a usable image.

The value at ``source`` may be JPEG or PNG bytes, base64 text (a ``data:`` URL too), a file path,
or an H×W×3 uint8 BGR array from a camera (used as is, without a copy). ``kind: auto`` tells
them apart: bytes are bytes; a string is base64 when it is a ``data:`` URL, starts like base64
of a JPEG or PNG, or is longer than 4096 characters, and a path otherwise.

A JPEG is checked and measured here without decoding its pixels: every header segment, the
frame size and colour components, and the end-of-image marker (a truncated file fails here).
Its pixels are decoded by the first node that needs them — ``resize`` decodes at the reduced
resolution its target needs. A PNG has no reduced decode, so it is decoded here. Errors name
what was wrong: not an image, truncated, corrupt, unsupported format (GIF, TIFF, 12-bit or
arithmetic-coded JPEG…), wrong number of channels (an alpha channel, CMYK, an H×W×4 array),
zero size, too many pixels, file not found. EXIF orientation is not applied.

The output is an image (``agent.imaging.Image``); `edgefleet-agent run` prints it as
`<Image 1280×720 jpeg from node 'decode'>`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.nodes.image.common import BadImage
from agent.workflow.config_types import JsonPath
from agent.workflow.context import RunContext
from agent.workflow.errors import NodeError
from agent.workflow.node import Node, NodeSetup

if TYPE_CHECKING:
    from agent.imaging import Image


class ImageDecodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: JsonPath = Field(
        "$.image", validate_default=True, description="Where the frame is in the run's document."
    )
    kind: Literal["auto", "bytes", "base64", "path"] = Field(
        "auto", description="How to read a string or bytes value; arrays are always accepted."
    )
    max_pixels: int = Field(
        1 << 26, ge=1, description="Frames with more pixels are refused before anything is decoded."
    )


class ImageDecode(Node[ImageDecodeConfig]):
    type_name = "image_decode"
    config_model = ImageDecodeConfig
    summary = "Reads a frame (JPEG/PNG bytes, base64, file path or camera array) as an image."
    concurrent = True

    def __init__(self, config: ImageDecodeConfig, setup: NodeSetup) -> None:
        super().__init__(config, setup)
        from agent.imaging import ImageError, load_image  # NumPy and OpenCV load at compile time

        self._load = load_image
        self._image_error = ImageError
        self._origin = f"node '{setup.node_id}'"

    def run(self, ctx: RunContext) -> Image:
        where = self.config.source.text
        value = self.config.source.resolve(ctx)
        try:
            return self._load(value, self.config.kind, origin=self._origin, max_pixels=self.config.max_pixels)
        except self._image_error as exc:
            raise BadImage(f"{where}: {exc}") from exc
        except OSError as exc:  # the file exists but cannot be read
            raise NodeError(
                f"{where}: cannot read {value!r:.200}: {exc.strerror or exc}",
                retryable=not isinstance(exc, PermissionError),
            ) from exc
