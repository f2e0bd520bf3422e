"""The image nodes (``image_decode → crop → resize → normalize``) and their fast path.

Frames are synthetic but realistic: brushed metal with machining marks, a bore, engraved text,
illumination fall-off and sensor noise, saved as quality-90 JPEGs like a line camera's. The
fast path (reduced JPEG decode) is compared with the naive pipeline (full decode, crop,
``INTER_AREA``) on pixel values and on geometry.
"""

from __future__ import annotations

import base64
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import FrozenInstanceError
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from agent.imaging import Image, load_image, plan_resize, resize
from agent.workflow import CompileError, Executor, NodeRegistry, Plan, RunResult
from tests.helpers import Compile, graph

Pixels = npt.NDArray[np.uint8]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


# --- realistic frames -------------------------------------------------------------------------


@cache
def brushed_metal(width: int = 1280, height: int = 720, seed: int = 0) -> Pixels:
    """A machined, brushed steel part under a ring light, as a line camera sees it."""
    rng = np.random.default_rng(seed)
    streaks = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 30, 0.8)
    streaks *= 16 / streaks.std()
    grain = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 1.5)
    grain *= 6 / grain.std()
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 165 - 70 * (((xx - 0.45 * width) / width) ** 2 + ((yy - 0.4 * height) / height) ** 2)
    grey = light + streaks + grain
    frame = np.clip(np.stack([grey * 0.96, grey, grey * 1.03 + 2], axis=-1), 0, 255).astype(np.uint8)
    cx, cy = width // 2, height // 2
    cv2.circle(frame, (cx, cy), height // 7, (45, 48, 50), -1, cv2.LINE_AA)  # bore
    cv2.circle(frame, (cx, cy), height // 7 + 6, (205, 210, 212), 3, cv2.LINE_AA)  # chamfer
    cv2.line(frame, (width // 10, height // 5), (width // 3, height // 4), (70, 70, 72), 2, cv2.LINE_AA)
    cv2.putText(frame, "LOT 4711-B", (width // 12, height - height // 8), cv2.FONT_HERSHEY_SIMPLEX,
                height / 400, (60, 60, 64), 3, cv2.LINE_AA)  # fmt: skip
    noisy = frame + rng.normal(0, 2.5, frame.shape)  # sensor noise
    pixels: Pixels = np.clip(noisy, 0, 255).astype(np.uint8)
    pixels.flags.writeable = False  # shared by the tests
    return pixels


@cache
def turned_surface(width: int = 1280, height: int = 720, period: float = 4.5) -> Pixels:
    """Fine turning grooves crossed by knurling: detail near the pixel pitch, where a careless
    downscale aliases."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    grooves = 40 * np.sin(2 * np.pi * (xx * np.cos(0.3) + yy * np.sin(0.3)) / period)
    knurl = 25 * np.sin(2 * np.pi * (xx * np.cos(-0.9) + yy * np.sin(-0.9)) / 5.2)
    grey = 128 + grooves + knurl + rng.normal(0, 3, (height, width))
    pixels: Pixels = np.clip(np.stack([grey, grey * 0.98, grey * 1.02], -1), 0, 255).astype(np.uint8)
    pixels.flags.writeable = False
    return pixels


def jpeg(pixels: Pixels, quality: int = 90, **flags: int) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    for name, value in flags.items():
        params += [getattr(cv2, f"IMWRITE_JPEG_{name.upper()}"), value]
    ok, encoded = cv2.imencode(".jpg", pixels, params)
    assert ok
    return encoded.tobytes()


def png(pixels: Pixels) -> bytes:
    ok, encoded = cv2.imencode(".png", pixels)
    assert ok
    return encoded.tobytes()


@cache
def frame_jpeg(width: int = 1280, height: int = 720) -> bytes:
    return jpeg(brushed_metal(width, height))


def naive(data: bytes, roi: tuple[int, int, int, int], size: tuple[int, int]) -> Pixels:
    """The reference: full decode, crop, INTER_AREA."""
    full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    x, y, w, h = roi
    out: Pixels = cv2.resize(full[y : y + h, x : x + w], size, interpolation=cv2.INTER_AREA)
    return out


def psnr(a: Pixels, b: Pixels) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255**2 / mse)


def mad(a: Pixels, b: Pixels) -> float:
    return float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def segments(data: bytes) -> dict[int, int]:
    """JPEG marker → offset of its first occurrence, up to the first scan."""
    found: dict[int, int] = {}
    pos = 2
    while True:
        marker = data[pos + 1]
        found.setdefault(marker, pos)
        if marker == 0xDA:
            return found
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]


def patched(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


# --- graphs -----------------------------------------------------------------------------------


def pipeline(
    crop: dict[str, Any] | None = None, resize: dict[str, Any] | None = None, **decode: Any
) -> dict[str, Any]:
    crop = crop if crop is not None else {"x": 280, "y": 0, "width": 720, "height": 720}
    resize = resize if resize is not None else {"width": 224, "height": 224}
    return graph(
        [
            {"id": "decode", "type": "image_decode", "config": decode},
            {"id": "crop", "type": "crop", "config": {"image": "$.nodes.decode", **crop}},
            {"id": "resize", "type": "resize", "config": {"image": "$.nodes.crop", **resize}},
            {"id": "norm", "type": "normalize", "config": {"image": "$.nodes.resize"}},
        ],
        [("decode", "crop"), ("crop", "resize"), ("resize", "norm")],
    )


@pytest.fixture
def preprocess(compile_graph: Compile) -> Plan:
    return compile_graph(pipeline())


def failure(result: RunResult) -> tuple[str, str, str]:
    assert result.error is not None, "the run should have failed"
    assert not result.error.retryable
    return result.error.node, result.error.kind, result.error.message


# --- image_decode -----------------------------------------------------------------------------


class TestDecode:
    def test_jpeg_is_measured_from_its_header_and_not_decoded(
        self, preprocess: Plan, executor: Executor
    ) -> None:
        data = frame_jpeg()
        result = executor.run(preprocess, {"image": data})
        assert result.ok, result.error
        image = result.outputs["decode"]
        assert isinstance(image, Image)
        assert (image.width, image.height, image.format) == (1280, 720, "jpeg")
        # resize decoded at 1/2 only: the full-resolution frame was never decoded
        assert image.source.decoded_factors() == (2,)
        assert repr(image) == "<Image 1280×720 jpeg from node 'decode'>"

    def test_full_resolution_pixels_are_the_decoders(self) -> None:
        data = frame_jpeg()
        pixels = load_image(data).pixels()
        np.testing.assert_array_equal(pixels, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
        assert not pixels.flags.writeable

    def test_base64_data_url_path_and_bytes_give_the_same_image(
        self, compile_graph: Compile, executor: Executor, tmp_path: Path
    ) -> None:
        data = frame_jpeg()
        (tmp_path / "frame.jpg").write_bytes(data)
        text = base64.b64encode(data).decode()
        wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))  # MIME-style
        plan = compile_graph(pipeline())
        reference = executor.run(plan, {"image": data}).outputs["norm"]
        for value in [
            text,
            f"data:image/jpeg;base64,{text}",
            str(tmp_path / "frame.jpg"),
            bytearray(data),
        ]:
            result = executor.run(plan, {"image": value})
            assert result.ok, result.error
            np.testing.assert_array_equal(result.outputs["norm"], reference)
        for kind, value in [("base64", wrapped), ("path", str(tmp_path / "frame.jpg").encode())]:
            result = executor.run(compile_graph(pipeline(kind=kind)), {"image": value})
            assert result.ok, result.error
            np.testing.assert_array_equal(result.outputs["norm"], reference)

    def test_png_is_decoded_at_once_and_losslessly(self, compile_graph: Compile, executor: Executor) -> None:
        frame = brushed_metal(640, 480)
        plan = compile_graph(graph([{"id": "decode", "type": "image_decode", "config": {"source": "$.png"}}]))
        image = executor.run(plan, {"png": png(frame)}).outputs["decode"]
        assert image.format == "png"
        np.testing.assert_array_equal(image.pixels(), frame)

    def test_camera_arrays_are_used_without_a_copy(self, preprocess: Plan, executor: Executor) -> None:
        frame = brushed_metal()
        result = executor.run(preprocess, {"image": frame})
        assert result.ok, result.error
        image = result.outputs["decode"]
        assert np.shares_memory(image.pixels(), frame)
        assert not image.pixels().flags.writeable
        expected = naive(png(frame), (280, 0, 720, 720), (224, 224))  # 3.2× → INTER_AREA
        np.testing.assert_array_equal(result.outputs["resize"].pixels(), expected)

    def test_grey_jpeg_decodes_to_three_equal_channels(self) -> None:
        grey = cv2.cvtColor(brushed_metal(320, 240), cv2.COLOR_BGR2GRAY)
        image = load_image(jpeg(grey))
        small = resize(image, 80, 60)
        assert small.pixels().shape == (60, 80, 3)
        assert np.array_equal(small.pixels()[..., 0], small.pixels()[..., 2])

    def test_exif_orientation_is_not_applied(self) -> None:
        # a phone-style "rotate 90°" tag: pixels stay as stored, so the header size holds
        ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack(">I", 0)
        exif = b"Exif\x00\x00" + b"MM\x00*" + struct.pack(">I", 8) + ifd
        data = frame_jpeg()
        tagged = data[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + data[2:]
        assert cv2.imdecode(np.frombuffer(tagged, np.uint8), cv2.IMREAD_COLOR).shape == (1280, 720, 3)
        image = load_image(tagged)
        assert image.size == (1280, 720)
        np.testing.assert_array_equal(image.pixels(), load_image(data).pixels())
        assert resize(image.crop(280, 0, 720, 720), 224, 224).pixels().shape == (224, 224, 3)

    def test_progressive_jpeg_takes_the_fast_path(self) -> None:
        data = jpeg(brushed_metal(), progressive=1)
        part = load_image(data).crop(280, 0, 720, 720)
        fast = resize(part, 224, 224).pixels()
        assert part.source.decoded_factors() == (2,)
        assert psnr(fast, naive(data, (280, 0, 720, 720), (224, 224))) > 30


def _bad_inputs(tmp: Path) -> list[tuple[str, Any, dict[str, Any], str]]:
    """(case, value, image_decode config, expected words in the message)."""
    data = frame_jpeg()
    marks = segments(data)
    sof = marks[0xC0]
    small_png = png(brushed_metal(64, 48))
    rgba = brushed_metal(64, 48)
    rgba_png = png(np.dstack([rgba, np.full(rgba.shape[:2], 255, np.uint8)]))
    idat = small_png.index(b"IDAT")
    gif = b"GIF89a" + struct.pack("<HH", 64, 48) + b"\x00" * 20
    (tmp / "notes.txt").write_text("inspection notes, not a frame\n")
    return [
        ("random bytes", np.random.default_rng(3).bytes(5000), {}, "not an image"),
        ("text file", tmp / "notes.txt", {}, "not an image"),
        ("empty", b"", {}, "empty (0 bytes)"),
        ("a dict", {"frame": 1}, {}, "got dict"),
        ("bad base64", "this is not base64!", {"kind": "base64"}, "not valid base64"),
        ("string as bytes", "frame.jpg", {"kind": "bytes"}, "expected bytes"),
        ("missing file", str(tmp / "missing.jpg"), {}, "file not found"),
        ("jpeg cut in its scan", data[: len(data) // 2], {}, "truncated JPEG: no end-of-image marker"),
        ("jpeg cut in its headers", data[: sof + 6], {}, "truncated JPEG"),
        ("jpeg signature only", data[:2], {}, "truncated"),
        ("png without IEND", small_png[:-12], {}, "truncated PNG: no IEND"),
        ("png with a damaged IDAT", patched(small_png, idat + 40, b"\x00" * 16), {}, "corrupt PNG"),
        ("png with a damaged IHDR", patched(small_png, 20, b"\x7f"), {}, "corrupt PNG"),
        ("gif", gif, {}, "unsupported format: GIF"),
        ("12-bit jpeg", patched(data, sof + 4, b"\x0c"), {}, "unsupported format: 12-bit"),
        ("arithmetic jpeg", patched(data, sof + 1, b"\xc9"), {}, "unsupported format: arithmetic-coded"),
        ("undefined Huffman table", patched(data, marks[0xDA] + 6, b"\x33"), {}, "Huffman table 3"),
        ("rgba png", rgba_png, {}, "wrong number of channels: RGBA PNG"),
        ("4-channel array", np.zeros((48, 64, 4), np.uint8), {}, "wrong number of channels"),
        ("grey array", np.zeros((48, 64), np.uint8), {}, "wrong number of channels"),
        ("float array", np.zeros((48, 64, 3), np.float32), {}, "unsupported format: float32"),
        ("zero-size array", np.zeros((0, 64, 3), np.uint8), {}, "zero size"),
        ("zero-height jpeg", patched(data, sof + 5, b"\x00\x00"), {}, "zero size"),
        ("too many pixels", data, {"max_pixels": 1280 * 719}, "image too large"),
    ]


def test_every_bad_input_fails_image_decode_saying_what_was_wrong(
    compile_graph: Compile, executor: Executor, tmp_path: Path
) -> None:
    cases = _bad_inputs(tmp_path)
    for case, value, config, words in cases:
        plan = compile_graph(pipeline(**config))
        node, kind, message = failure(executor.run(plan, {"image": value}))
        assert (node, kind) == ("decode", "BadImage"), case
        assert words in message, f"{case}: {message}"
        assert message.startswith("$.image: "), case
    assert len(cases) == 24


def test_damage_the_headers_cannot_show_fails_the_decoding_node_naming_the_reader(
    preprocess: Plan, executor: Executor
) -> None:
    # progressive scans may define Huffman tables late, so a missing one is found by the decoder
    data = jpeg(brushed_metal(), progressive=1)
    bad = patched(data, segments(data)[0xDA] + 6, b"\x30")
    node, kind, message = failure(executor.run(preprocess, {"image": bad}))
    assert (node, kind) == ("resize", "BadImage")
    assert "corrupt JPEG from node 'decode' (1280×720)" in message


# --- crop ---------------------------------------------------------------------------------------


class TestCrop:
    def test_regions_compose_and_map_back_to_the_frame(self) -> None:
        frame = brushed_metal()
        image = load_image(frame_jpeg())
        inner = image.crop(280, 0, 720, 720).crop(100, 50, 300, 200)
        assert (inner.x, inner.y, inner.width, inner.height) == (380, 50, 300, 200)
        assert inner.to_frame.apply(0, 0) == (380, 50)
        assert image.source.decoded_factors() == ()  # cropping decodes nothing
        assert mad(inner.pixels(), frame[50:250, 380:680]) < 3  # JPEG error only

    def test_fractions_of_the_frame(self, compile_graph: Compile, executor: Executor) -> None:
        crop = {"x": 0.21875, "y": 0, "width": 0.5625, "height": 1, "units": "fraction"}
        result = executor.run(compile_graph(pipeline(crop=crop)), {"image": frame_jpeg()})
        part = result.outputs["crop"]
        assert (part.x, part.y, part.width, part.height) == (280, 0, 720, 720)

    @pytest.mark.parametrize(
        ("roi", "words"),
        [
            ({"x": 1000, "y": 0, "width": 720, "height": 720}, "x + width = 1720 > 1280"),
            ({"x": 0, "y": 100, "width": 100, "height": 640}, "y + height = 740 > 720"),
        ],
    )
    def test_out_of_bounds_names_the_roi_and_the_frame(
        self, compile_graph: Compile, executor: Executor, roi: dict[str, int], words: str
    ) -> None:
        node, kind, message = failure(
            executor.run(compile_graph(pipeline(crop=roi)), {"image": frame_jpeg()})
        )
        assert (node, kind) == ("crop", "BadRoi")
        roi_text = f"ROI x={roi['x']} y={roi['y']} width={roi['width']} height={roi['height']}"
        assert roi_text in message
        assert "1280×720 image" in message
        assert words in message

    def test_config_problems_are_compile_errors(self, compile_graph: Compile) -> None:
        for crop, field in [
            ({"x": 10.5, "y": 0, "width": 100, "height": 100}, "config.x"),
            ({"x": 0.5, "y": 0, "width": 0.6, "height": 1, "units": "fraction"}, "config.width"),
            ({"x": 0, "y": 0, "width": 0, "height": 100}, "config.width"),
            ({"x": 0, "y": 0, "width": 10, "height": 10, "w": 5}, "config.w"),
        ]:
            with pytest.raises(CompileError) as caught:
                compile_graph(pipeline(crop=crop))
            assert [issue.field for issue in caught.value.issues] == [field], crop


# --- resize: the fast path ----------------------------------------------------------------------


class TestFastPath:
    def test_centre_crop_to_224_decodes_at_half_and_matches_the_naive_pipeline(self) -> None:
        data = frame_jpeg()
        part = load_image(data).crop(280, 0, 720, 720)
        plan = plan_resize(part, 224, 224)
        assert (plan.factor, plan.interpolation, plan.warp) == (2, "linear", False)
        fast = resize(part, 224, 224).pixels()
        reference = naive(data, (280, 0, 720, 720), (224, 224))
        assert mad(fast, reference) < 3
        assert psnr(fast, reference) > 30

    @pytest.mark.parametrize(
        ("size", "roi", "target", "factor", "interpolation"),
        [
            ((1920, 1080), (0, 0, 1920, 1080), (224, 224), 4, "area"),  # 2.1× left on x
            ((1920, 1080), (420, 0, 1080, 1080), (128, 128), 8, "linear"),
            ((1280, 720), (280, 0, 720, 720), (320, 320), 2, "linear"),
            ((1280, 720), (440, 160, 400, 400), (224, 224), 1, "linear"),  # 1.8×: no reduction
            ((2448, 2048), (200, 100, 2000, 1800), (640, 480), 2, "linear"),
        ],
    )
    def test_largest_factor_that_keeps_the_roi_at_least_the_target(
        self,
        size: tuple[int, int],
        roi: tuple[int, int, int, int],
        target: tuple[int, int],
        factor: int,
        interpolation: str,
    ) -> None:
        data = frame_jpeg(*size)
        part = load_image(data).crop(*roi)
        plan = plan_resize(part, *target)
        assert (plan.factor, plan.interpolation) == (factor, interpolation)
        fast = resize(part, *target).pixels()
        assert part.source.decoded_factors() == (factor,)
        reference = naive(data, roi, target)
        assert mad(fast, reference) < 3.5
        assert psnr(fast, reference) > 30

    def test_unaligned_roi_is_sampled_at_its_true_position(self) -> None:
        # a sharp mark at a known sub-pixel position: its centroid must land where the naive
        # pipeline puts it, not half a reduced pixel away
        frame = np.full((720, 1280, 3), 120, np.uint8)
        yy, xx = np.mgrid[0:720, 0:1280] + 0.5
        cx, cy = 641.3, 377.8
        blob = 100 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 5.0**2))
        frame = np.clip(frame + blob[..., None], 0, 255).astype(np.uint8)
        data = jpeg(frame, 95)
        roi = (283, 5, 711, 707)  # odd: off the 1/2 grid
        part = load_image(data).crop(*roi)
        plan = plan_resize(part, 224, 224)
        assert (plan.factor, plan.warp) == (2, True)
        fast = resize(part, 224, 224)
        reference = naive(data, roi, (224, 224))

        def centroid(pixels: Pixels) -> tuple[float, float]:
            weight = np.clip(pixels[..., 1].astype(np.float64) - 120, 0, None)
            ys, xs = np.mgrid[0 : pixels.shape[0], 0 : pixels.shape[1]] + 0.5
            return float((weight * xs).sum() / weight.sum()), float((weight * ys).sum() / weight.sum())

        fx, fy = centroid(fast.pixels())
        rx, ry = centroid(reference)
        assert abs(fx - rx) < 0.05
        assert abs(fy - ry) < 0.05  # output pixels; rounding the ROI to the grid would be ~0.3
        mapped = fast.to_frame.apply(fx, fy)
        assert abs(mapped[0] - cx) < 0.2
        assert abs(mapped[1] - cy) < 0.2
        assert psnr(fast.pixels(), reference) > 35

    @pytest.mark.parametrize("roi", [(280, 0, 720, 720), (283, 5, 711, 707), (0, 0, 1280, 720)])
    def test_fine_machining_marks_do_not_alias(self, roi: tuple[int, int, int, int]) -> None:
        data = jpeg(turned_surface())
        fast = resize(load_image(data).crop(*roi), 224, 224).pixels()
        reference = naive(data, roi, (224, 224))
        assert psnr(fast, reference) > 30
        # what shortcuts give on this surface: plain INTER_LINEAR from full resolution, and the
        # reduced decode with the region rounded to its grid
        full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        x, y, w, h = roi
        linear = cv2.resize(full[y : y + h, x : x + w], (224, 224), interpolation=cv2.INTER_LINEAR)
        assert psnr(linear, reference) < 26
        if x % 2 or y % 2:
            half = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_2)
            rounded = cv2.resize(half[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2], (224, 224))
            assert psnr(rounded, reference) < 28

    def test_unaligned_roi_needing_area_falls_back_to_an_aligned_factor(self) -> None:
        data = frame_jpeg(1920, 1080)
        part = load_image(data).crop(3, 1, 1911, 1075)  # 1911/4/224 > 2 → INTER_AREA
        plan = plan_resize(part, 224, 224)
        assert (plan.factor, plan.interpolation, plan.warp) == (1, "area", False)
        reference = naive(data, (3, 1, 1911, 1075), (224, 224))
        np.testing.assert_array_equal(resize(part, 224, 224).pixels(), reference)

    def test_an_existing_full_decode_is_reused(self) -> None:
        image = load_image(frame_jpeg())
        image.pixels()  # another branch needed full resolution
        part = image.crop(280, 0, 720, 720)
        assert plan_resize(part, 224, 224).factor == 1
        np.testing.assert_array_equal(
            resize(part, 224, 224).pixels(), naive(frame_jpeg(), (280, 0, 720, 720), (224, 224))
        )
        assert image.source.decoded_factors() == (1,)

    @pytest.mark.parametrize("interpolation", ["linear", "area", "nearest", "cubic"])
    def test_explicit_interpolation_is_bit_exact_with_cv2(self, interpolation: str) -> None:
        data = frame_jpeg()
        part = load_image(data).crop(280, 0, 720, 720)
        out = resize(part, 224, 224, interpolation=interpolation).pixels()  # type: ignore[arg-type]
        full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        flag = getattr(cv2, f"INTER_{interpolation.upper()}")
        np.testing.assert_array_equal(out, cv2.resize(full[:, 280:1000], (224, 224), interpolation=flag))

    def test_pngs_and_arrays_are_never_reduced(self) -> None:
        frame = brushed_metal()
        for image in (load_image(png(frame)), load_image(frame)):
            part = image.crop(280, 0, 720, 720)
            assert plan_resize(part, 224, 224).factor == 1
            expected = cv2.resize(frame[:, 280:1000], (224, 224), interpolation=cv2.INTER_AREA)
            np.testing.assert_array_equal(resize(part, 224, 224).pixels(), expected)
            small = image.crop(440, 160, 400, 400)  # 1.8×: INTER_LINEAR
            expected = cv2.resize(frame[160:560, 440:840], (224, 224), interpolation=cv2.INTER_LINEAR)
            np.testing.assert_array_equal(resize(small, 224, 224).pixels(), expected)


class TestLetterbox:
    def test_wide_frame_into_a_square(self, compile_graph: Compile, executor: Executor) -> None:
        data = frame_jpeg()
        config = {"width": 640, "height": 640, "mode": "letterbox", "pad": [10, 20, 30]}
        result = executor.run(compile_graph(pipeline(crop={"x": 0, "y": 0, "width": 1280, "height": 720},
                                                     resize=config)), {"image": data})  # fmt: skip
        assert result.ok, result.error
        out = result.outputs["resize"]
        pixels = out.pixels()
        assert pixels.shape == (640, 640, 3)
        assert (pixels[:140] == (30, 20, 10)).all()  # B, G, R
        assert (pixels[500:] == (30, 20, 10)).all()
        inner = pixels[140:500]
        reference = naive(data, (0, 0, 1280, 720), (640, 360))
        assert psnr(inner, reference) > 30
        assert out.to_frame.apply(0, 140) == pytest.approx((0, 0))
        assert out.to_frame.apply(640, 500) == pytest.approx((1280, 720))
        assert result.outputs["decode"].source.decoded_factors() == (2,)
        assert result.outputs["norm"].shape == (3, 640, 640)

    def test_tall_roi_is_pillarboxed_with_exact_geometry(self) -> None:
        part = load_image(frame_jpeg()).crop(500, 0, 300, 720)
        plan = plan_resize(part, 320, 320, mode="letterbox")
        assert plan.inner == (133, 320)
        assert plan.offset == (93, 0)
        out = resize(part, 320, 320, mode="letterbox", pad=(0, 0, 0))
        assert (out.pixels()[:, :93] == 0).all()
        assert (out.pixels()[:, 226:] == 0).all()
        assert out.to_frame.apply(93, 0) == pytest.approx((500, 0))
        assert out.to_frame.apply(226, 320) == pytest.approx((800, 720))


# --- normalize ----------------------------------------------------------------------------------


class TestNormalize:
    def test_imagenet_defaults_rgb_chw_float32(self, preprocess: Plan, executor: Executor) -> None:
        result = executor.run(preprocess, {"image": frame_jpeg()})
        tensor = result.outputs["norm"]
        assert tensor.shape == (3, 224, 224)
        assert tensor.dtype == np.float32
        assert not tensor.flags.writeable
        bgr = result.outputs["resize"].pixels()
        expected = ((bgr[..., ::-1] / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
        np.testing.assert_allclose(tensor, expected, atol=1e-5)

    def test_bgr_hwc_0_255_float16(self, compile_graph: Compile, executor: Executor) -> None:
        config = {"mean": [100, 110, 120], "std": [50, 60, 70], "pixel_range": "0-255",
                  "channel_order": "BGR", "layout": "HWC", "dtype": "float16"}  # fmt: skip
        nodes = [
            {"id": "decode", "type": "image_decode"},
            {"id": "norm", "type": "normalize", "config": {"image": "$.nodes.decode", **config}},
        ]
        frame = brushed_metal(320, 240)
        tensor = executor.run(compile_graph(graph(nodes, [("decode", "norm")])), {"image": frame}).outputs[
            "norm"
        ]
        assert tensor.shape == (240, 320, 3)
        assert tensor.dtype == np.float16
        expected = (frame - np.array([100, 110, 120])) / np.array([50, 60, 70])
        np.testing.assert_allclose(tensor.astype(np.float64), expected, atol=2e-3)

    def test_config_problems_are_compile_errors(self, compile_graph: Compile) -> None:
        for config, field in [
            ({"std": [0.2, 0.0, 0.2]}, "config.std[1]"),
            ({"mean": [0.5, 0.5]}, "config.mean"),
            ({"layout": "NCHW"}, "config.layout"),
        ]:
            node = {"id": "n", "type": "normalize", "config": {"image": "$.image", **config}}
            with pytest.raises(CompileError) as caught:
                compile_graph(graph([node]))
            assert [issue.field for issue in caught.value.issues] == [field], config


def test_resize_config_problems_are_compile_errors(compile_graph: Compile) -> None:
    for config, field in [
        ({"width": 0, "height": 224}, "config.width"),
        ({"width": 224, "height": 224, "pad": [1, 2]}, "config.pad"),
        ({"width": 224, "height": 224, "interpolation": "lanczos"}, "config.interpolation"),
    ]:
        with pytest.raises(CompileError) as caught:
            compile_graph(pipeline(resize=config))
        fields = {issue.field for issue in caught.value.issues}
        assert fields == {field}, config


# --- many runs at once --------------------------------------------------------------------------


def test_one_image_shared_by_many_threads_is_decoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = cv2.imdecode

    def counting(buffer: Any, flags: int) -> Any:
        calls.append(flags)
        return real(buffer, flags)

    monkeypatch.setattr(cv2, "imdecode", counting)
    part = load_image(frame_jpeg()).crop(280, 0, 720, 720)
    start = threading.Barrier(8)

    def work(_: int) -> Pixels:
        start.wait()
        return resize(part, 224, 224).pixels()

    with ThreadPoolExecutor(8) as pool:
        outputs = list(pool.map(work, range(8)))
    assert len(calls) == 1
    assert all(np.array_equal(out, outputs[0]) for out in outputs)


def test_concurrent_runs_give_the_same_tensors_as_one_at_a_time(preprocess: Plan, executor: Executor) -> None:
    frames = [jpeg(brushed_metal(1280, 720, seed)) for seed in range(4)]
    alone = [executor.run(preprocess, {"image": frame}).outputs["norm"] for frame in frames]

    def run(index: int) -> bool:
        result = executor.run(preprocess, {"image": frames[index % 4]})
        return result.ok and np.array_equal(result.outputs["norm"], alone[index % 4])

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(run, range(32)))


def test_images_and_their_pixels_are_immutable() -> None:
    image = load_image(frame_jpeg())
    with pytest.raises(FrozenInstanceError):
        image.width = 10  # type: ignore[misc]
    out = resize(image.crop(280, 0, 720, 720), 224, 224)
    for pixels in (image.pixels(), out.pixels()):
        with pytest.raises(ValueError, match="read-only"):
            pixels[0, 0] = 0
    frame = brushed_metal().copy()
    load_image(frame)
    frame[0, 0] = 1  # the caller's own array stays writable


def test_nodes_that_decode_or_compute_release_the_gil(registry: NodeRegistry) -> None:
    concurrent = {}
    for name in ("image_decode", "crop", "resize", "normalize"):
        cls = registry.get(name)
        assert cls is not None
        concurrent[name] = cls.concurrent
    # crop only records a region: a hand-off to the worker pool would cost more than it does
    assert concurrent == {"image_decode": True, "crop": False, "resize": True, "normalize": True}
