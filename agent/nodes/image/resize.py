"""``resize``: scale an image to a model's input size.

``stretch`` scales the region to exactly ``width``×``height``; ``letterbox`` keeps its aspect
ratio, centres it and fills the margins with ``pad``. The output image maps its pixels back to
the original frame (``to_frame``), so detections can be drawn on the full-resolution frame.

``interpolation: auto`` (the default) is the fast path: a JPEG that nothing has decoded yet is
decoded at the largest reduction factor (2, 4 or 8, in the DCT domain) that leaves the region
at least as large as the target, and the rest of the scale is done with ``INTER_LINEAR`` below
a factor of 2 and ``INTER_AREA`` above it. A 720×720 region of a 1280×720 JPEG resized to
224×224 this way costs about a third of a full decode + ``INTER_AREA`` and stays within a grey
level or two of it (PSNR ≈ 48 dB on brushed steel; > 30 dB even on turning marks a few pixels
apart, where plain ``INTER_LINEAR`` falls to ~24 dB). Camera arrays and PNGs are pixels
already; for them ``auto`` only picks ``INTER_LINEAR`` or ``INTER_AREA`` by the same rule. An
explicit ``linear``, ``area``, ``nearest`` or ``cubic`` always works on the full-resolution
pixels — bit for bit what ``cv2.resize`` gives, for models whose training pipeline must be
matched exactly.

Damage that ``image_decode``'s header check cannot see, and that the decoder cannot conceal,
fails this node; the message names the node that read the frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.nodes.image.common import BadImage, read_image
from agent.workflow.config_types import JsonPath
from agent.workflow.context import RunContext
from agent.workflow.node import Node, NodeSetup

if TYPE_CHECKING:
    from agent.imaging import Image


class ResizeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: JsonPath = Field(description="The image to resize, e.g. '$.nodes.crop'.")
    width: int = Field(ge=1, le=16384, description="Output width in pixels.")
    height: int = Field(ge=1, le=16384, description="Output height in pixels.")
    mode: Literal["stretch", "letterbox"] = Field("stretch", description="Stretch, or keep the aspect ratio.")
    interpolation: Literal["auto", "linear", "area", "nearest", "cubic"] = Field(
        "auto", description="'auto': reduced JPEG decode + linear/area by scale factor (fastest)."
    )
    pad: int | list[int] = Field(114, description="Letterbox margin colour: a grey level, or [R, G, B].")

    @field_validator("pad")
    @classmethod
    def _colour(cls, pad: int | list[int]) -> int | list[int]:
        levels = [pad] if isinstance(pad, int) else pad
        if isinstance(pad, list) and len(pad) != 3:
            raise ValueError(f"a colour is a grey level or [R, G, B], got {len(levels)} values")
        if not all(0 <= level <= 255 for level in levels):
            raise ValueError(f"colour levels are 0..255, got {pad}")
        return pad


class Resize(Node[ResizeConfig]):
    type_name = "resize"
    config_model = ResizeConfig
    summary = "Resizes an image (stretch or letterbox), decoding a JPEG at the resolution it needs."
    concurrent = True

    def __init__(self, config: ResizeConfig, setup: NodeSetup) -> None:
        super().__init__(config, setup)
        from agent.imaging import ImageError, resize

        self._resize = resize
        self._image_error = ImageError
        pad = config.pad
        self._pad = (pad, pad, pad) if isinstance(pad, int) else (pad[2], pad[1], pad[0])  # B, G, R

    def run(self, ctx: RunContext) -> Image:
        config = self.config
        image = read_image(config.image.resolve(ctx), config.image)
        try:
            return self._resize(
                image,
                config.width,
                config.height,
                mode=config.mode,
                interpolation=config.interpolation,
                pad=self._pad,
            )
        except self._image_error as exc:
            raise BadImage(f"{config.image.text}: {exc}") from exc
