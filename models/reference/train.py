"""Train a reference surface-inspection model on generated frames and export it to ONNX.

    .venv-train/bin/python models/reference/train.py --out models/surface_inspection_v1.onnx

The network (``net.py``) is a small fully convolutional net that predicts, for each 8×8 cell
of the 224×224 input, the probability that the cell holds a defect (``anomaly_map``, 28×28);
the image score is an affine function of the map's highest logit, through a sigmoid
(``score``). It is trained on 128×128 windows of generated frames (half of the defective
frames' windows placed on the defect) against the generator's masks, with a cell loss and an
image loss; then the score's scale and bias are fitted on whole frames. BatchNorm is folded
into the convolutions at export (opset 17; Conv, Relu, AveragePool, Resize, Sub, Concat,
Add, ReduceMax, Mul, Sigmoid — ops that ONNX Runtime quantises to INT8 statically and TensorRT
builds without plugins).

Training is reproducible: the same arguments, thread count and library versions give the same
weights. ``--device cuda`` is for quick experiments only; the committed models are trained on
the CPU. PyTorch is needed here only; the exported model runs with ONNX Runtime.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

try:
    from models.reference import dataset, evaluate
    from models.reference.net import InspectionNet, fold_batchnorm
except ModuleNotFoundError:  # run as a script from models/reference/
    import dataset  # type: ignore[no-redef,import-not-found]
    import evaluate  # type: ignore[no-redef,import-not-found]
    from net import InspectionNet, fold_batchnorm  # type: ignore[no-redef,import-not-found]

from agent.sources.synthetic import MATERIALS, PART_ROI

# Training arguments recorded in the model's metadata (those that change the weights).
RECORDED = (
    "version",
    "count",
    "data_seed",
    "materials",
    "seed",
    "steps",
    "batch",
    "crop",
    "focus",
    "image_weight",
    "lr",
    "weight_decay",
    "pos_weight",
    "threads",
)


def batches(
    data: dataset.TrainingSet, batch: int, crop: int, focus: float, rng: np.random.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Endless (image, cell target, label) batches of ``crop``×``crop`` windows of the training
    frames, on the 8-pixel cell grid. A defective frame's window holds a defect cell with
    probability ``focus``; each batch is in one of the 8 rotations and flips of the square."""
    cells = crop // 8
    limit = evaluate.MAP_SIZE - cells
    mean = torch.from_numpy(evaluate.MEAN).view(1, 3, 1, 1)
    std = torch.from_numpy(evaluate.STD).view(1, 3, 1, 1)
    while True:
        images = np.empty((batch, crop, crop, 3), np.uint8)
        targets = np.empty((batch, cells, cells), np.uint8)
        for j, i in enumerate(rng.integers(0, len(data.defective), batch)):
            r0, c0 = (int(v) for v in rng.integers(0, limit + 1, 2))
            if data.defective[i] and rng.random() < focus:
                hot = np.argwhere(data.targets[i])
                r, c = hot[rng.integers(len(hot))]
                r0 = int(np.clip(r - rng.integers(cells), 0, limit))
                c0 = int(np.clip(c - rng.integers(cells), 0, limit))
            images[j] = data.crops[i, r0 * 8 : r0 * 8 + crop, c0 * 8 : c0 * 8 + crop]
            targets[j] = data.targets[i, r0 : r0 + cells, c0 : c0 + cells]
        rgb = torch.from_numpy(np.ascontiguousarray(images[..., ::-1]))
        image = (rgb.permute(0, 3, 1, 2).float() / 255 - mean) / std
        target = torch.from_numpy(targets).float().unsqueeze(1)
        k = int(rng.integers(8))
        image, target = torch.rot90(image, k % 4, (2, 3)), torch.rot90(target, k % 4, (2, 3))
        if k >= 4:
            image, target = image.flip(3), target.flip(3)
        label = target.amax(dim=(2, 3))
        yield image.contiguous(), target.contiguous(), label


def full_frames(data: dataset.TrainingSet, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(image, label) batches of whole training frames, in order."""
    mean = torch.from_numpy(evaluate.MEAN).view(1, 3, 1, 1)
    std = torch.from_numpy(evaluate.STD).view(1, 3, 1, 1)
    for start in range(0, len(data.defective), batch):
        rgb = torch.from_numpy(np.ascontiguousarray(data.crops[start : start + batch][..., ::-1]))
        label = torch.from_numpy(data.defective[start : start + batch]).float().unsqueeze(1)
        yield (rgb.permute(0, 3, 1, 2).float() / 255 - mean) / std, label


def calibrate(model: InspectionNet, data: dataset.TrainingSet, device: torch.device) -> None:
    """Fit the score's scale and bias (logistic regression of the label on the map's peak
    logit) on whole frames, so that ``score`` is a calibrated probability for a whole part."""
    model.eval()
    peaks, labels = [], []
    with torch.no_grad():
        for image, label in full_frames(data, 64):
            cells, _ = model.logits(image.to(device))
            peaks.append(cells.amax(dim=(2, 3)).cpu())
            labels.append(label)
    peak, label = torch.cat(peaks), torch.cat(labels)
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([params], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        logit = peak.double() * params[0] + params[1]
        loss = nn.functional.binary_cross_entropy_with_logits(logit, label.double())
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        model.score_scale.fill_(float(params[0]))
        model.score_bias.fill_(float(params[1]))


def train(args: argparse.Namespace) -> InspectionNet:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    device = torch.device(args.device)
    started = time.perf_counter()
    data = load_or_build(args.count, args.data_seed, tuple(args.materials), args.cache, args.workers)
    print(f"data: {len(data.defective)} frames in {time.perf_counter() - started:.0f} s", flush=True)
    model = InspectionNet().to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    total = args.steps
    warmup = max(1, min(100, total // 10))

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_at)
    pos_weight = torch.tensor([args.pos_weight], device=device)
    model.train()
    feed = batches(data, args.batch, args.crop, args.focus, rng)
    for step in range(1, total + 1):
        image, target, label = (t.to(device) for t in next(feed))
        cells, score = model.logits(image)
        cell_loss = nn.functional.binary_cross_entropy_with_logits(cells, target, pos_weight=pos_weight)
        image_loss = nn.functional.binary_cross_entropy_with_logits(score, label)
        loss = cell_loss + args.image_weight * image_loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        scheduler.step()
        if step % 100 == 0 or step == total:
            print(
                f"step {step}/{total} cell {cell_loss.item():.4f} image {image_loss.item():.4f} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    calibrate(model, data, device)
    return model.cpu().eval()


def load_or_build(
    count: int, seed: int, materials: tuple[str, ...], cache: Path | None, workers: int
) -> dataset.TrainingSet:
    if cache is None:
        return dataset.build(count, seed, materials=materials, workers=workers)
    path = cache / f"train-{seed}-{count}-{'-'.join(materials)}.npz"
    if path.exists():
        with np.load(path) as z:
            return dataset.TrainingSet(**{k: z[k] for k in z.files})
    data = dataset.build(count, seed, materials=materials, workers=workers)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data.__dict__)
    return data


def export(model: InspectionNet, out: Path, metadata: dict[str, str]) -> None:
    """Write ``model`` with BatchNorm folded as ONNX (opset 17, dynamic batch axis ``batch``)."""
    folded = fold_batchnorm(copy.deepcopy(model))
    example = torch.randn(
        2, 3, evaluate.INPUT_SIZE, evaluate.INPUT_SIZE, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        reference = model(example)
        check = folded(example)
    for a, b in zip(reference, check, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    tmp = out.with_name(f".{out.name}.tmp")
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated; it needs no onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            folded,
            (example,),
            str(tmp),
            dynamo=False,
            opset_version=17,
            input_names=["image"],
            output_names=["anomaly_map", "score"],
            dynamic_axes={"image": {0: "batch"}, "anomaly_map": {0: "batch"}, "score": {0: "batch"}},
        )
    proto = onnx.load(str(tmp))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    tmp.replace(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--version", default="1", help="recorded in the model's metadata")
    parser.add_argument("--count", type=int, default=6000, help="training frames")
    parser.add_argument("--data-seed", type=int, default=2024, help="SurfaceGenerator seed of the frames")
    parser.add_argument("--materials", nargs="+", default=list(MATERIALS), choices=MATERIALS)
    parser.add_argument("--seed", type=int, default=0, help="weights init and batch order")
    parser.add_argument("--steps", type=int, default=1800)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--crop", type=int, default=128, help="training window side, a multiple of 8")
    parser.add_argument("--focus", type=float, default=0.5, help="share of windows put on a defect")
    parser.add_argument("--image-weight", type=float, default=0.5, help="weight of the image loss")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--pos-weight", type=float, default=3.0, help="weight of defect cells")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (results depend on it)")
    parser.add_argument("--workers", type=int, default=2, help="processes generating frames")
    parser.add_argument("--device", default="cpu", help="cpu (the committed models) or cuda")
    parser.add_argument("--val-count", type=int, default=400)
    parser.add_argument("--val-seed", type=int, default=77)
    parser.add_argument("--cache", type=Path, help="keep generated training frames here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = train(args)
    trained = time.perf_counter() - started
    metadata = {
        "edgefleet.model": "surface_inspection",
        "edgefleet.version": args.version,
        "edgefleet.preprocess": json.dumps(
            {
                "roi": list(PART_ROI),
                "size": [evaluate.INPUT_SIZE, evaluate.INPUT_SIZE],
                "interpolation": "linear",
                "color": "RGB",
                "scale": 1 / 255,
                "mean": [round(float(v), 3) for v in evaluate.MEAN],
                "std": [round(float(v), 3) for v in evaluate.STD],
                "layout": "NCHW",
            }
        ),
        "edgefleet.training": json.dumps({k: str(v) for k, v in vars(args).items() if k in RECORDED}),
    }
    export(model, args.out, metadata)
    val = evaluate.held_out(args.val_count, args.val_seed)
    scores = evaluate.run_model(args.out, val.crops)
    report = evaluate.metrics(scores, val)
    report["train_seconds"] = round(trained)
    report["sha256"] = hashlib.sha256(args.out.read_bytes()).hexdigest()
    report["bytes"] = args.out.stat().st_size
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
