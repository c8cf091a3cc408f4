"""The project's own small YOLO-style detector, trained on generated scenes (no COCO-trained YOLO
weights can be installed here). Its export has the YOLOv8 layout [1, 4+nc, N]: boxes (cx, cy, w, h) in
input pixels, then per-class probabilities, so the same decoding serves a user's own yolov8n.onnx.

    python -m apps.shapes_detector train [--out apps/weights/shapes_yolo.pt] [--epochs 12]
    edgesdk convert --factory apps.shapes_detector:shapes_yolo -o build/shapes ...

Scenes: gradient and textured backgrounds with distractor strokes, 1-5 objects of three classes
(circle, square, triangle) in random colours and sizes, with exact boxes."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = ["circle", "square", "triangle"]
SIZE = 256  # input height and width
STRIDES = (8, 16)
WEIGHTS = Path(__file__).parent / "weights" / "shapes_yolo.pt"
log = logging.getLogger("apps.shapes_detector")


# -- scenes ---------------------------------------------------------------------------------------

def make_scene(rng: np.random.Generator, size: int = SIZE, max_objects: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(HxWx3 uint8 image, [K, 5] boxes as class, x1, y1, x2, y2 in pixels)."""
    from PIL import Image, ImageDraw

    yy, xx = np.mgrid[0:size, 0:size] / size
    a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy + 1) / 2
    bg = a * (1 - t[..., None]) + b * t[..., None]
    bg += rng.normal(0, rng.uniform(0.0, 0.06), bg.shape)  # sensor-like noise
    img = Image.fromarray((np.clip(bg, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(0, 6)):  # distractors: thin strokes that are not objects
        pts = [tuple(rng.uniform(0, size, 2)) for _ in range(2)]
        draw.line(pts, fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=int(rng.integers(1, 3)))
    boxes: list[list[float]] = []
    for _ in range(rng.integers(1, max_objects + 1)):
        for _attempt in range(10):
            s = float(rng.uniform(16, 96))
            x1, y1 = rng.uniform(0, size - s, 2)
            box = [x1, y1, x1 + s, y1 + s]
            if all(_iou(box, o[1:]) < 0.2 for o in boxes):
                break
        else:
            continue
        cls = int(rng.integers(0, len(CLASSES)))
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        x1, y1, x2, y2 = box
        if cls == 0:
            draw.ellipse(box, fill=color)
        elif cls == 1:
            draw.rectangle(box, fill=color)
        else:
            draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=color)
        boxes.append([cls, x1, y1, x2, y2])
    return np.asarray(img), np.asarray(boxes, np.float32).reshape(-1, 5)


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-9)


def to_input(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> [1, 3, H, W] float32 in [0, 1] (the model's preprocessing: Preprocess mean 0, std 1)."""
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


# -- the model ------------------------------------------------------------------------------------

def _build():
    import torch
    from torch import nn

    def conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class Residual(nn.Module):
        def __init__(self, c: int):
            super().__init__()
            self.body = nn.Sequential(conv(c, c), conv(c, c))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.body(x)

    class ShapesYOLO(nn.Module):
        """Backbone to stride 16, a small FPN, anchor-free heads at strides 8 and 16 that predict box
        side distances and class logits per cell; the decoded output is YOLOv8's [1, 4+nc, N]."""

        def __init__(self, num_classes: int = len(CLASSES)):
            super().__init__()
            self.nc = num_classes
            self.stem = nn.Sequential(conv(3, 16, 2), conv(16, 32, 2), Residual(32))
            self.p3 = nn.Sequential(conv(32, 64, 2), Residual(64))
            self.p4 = nn.Sequential(conv(64, 96, 2), Residual(96))
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.fuse3 = conv(96 + 64, 64)
            self.heads = nn.ModuleList([
                nn.ModuleDict({"box": nn.Sequential(conv(c, 48), nn.Conv2d(48, 4, 1)),
                               "cls": nn.Sequential(conv(c, 48), nn.Conv2d(48, num_classes, 1))})
                for c in (64, 96)])
            for head in self.heads:  # start with low class probabilities (focal-loss style prior)
                nn.init.constant_(head["cls"][-1].bias, -4.0)
            self.input_shape = (1, 3, SIZE, SIZE)

        def raw(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
            f = self.stem(x)
            p3 = self.p3(f)
            p4 = self.p4(p3)
            p3 = self.fuse3(torch.cat([p3, self.up(p4)], 1))
            return [(h["box"](p), h["cls"](p)) for h, p in zip(self.heads, (p3, p4))]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([_decode_level(box, cls, stride) for (box, cls), stride in zip(self.raw(x), STRIDES)], 2)

    return ShapesYOLO


def _decode_level(box, cls, stride: int):
    """One head's [B, 4+nc, h*w] YOLOv8-layout output: cell-centred boxes from side distances, class probabilities."""
    import torch
    from torch import nn

    _, _, h, w = box.shape
    gy, gx = torch.meshgrid(torch.arange(h, dtype=box.dtype), torch.arange(w, dtype=box.dtype), indexing="ij")
    cx, cy = (gx + 0.5) * stride, (gy + 0.5) * stride
    d = nn.functional.softplus(box) * stride  # left, top, right, bottom distances
    x1, y1, x2, y2 = cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]
    xywh = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], 1).flatten(2)
    return torch.cat([xywh, torch.sigmoid(cls).flatten(2)], 1)


def shapes_yolo(weights: str | Path | None = None):
    """The trained detector (weights from the repo, loaded with weights_only=True), with its metadata."""
    import torch

    from edgesdk import Preprocess

    model = _build()()
    path = Path(weights) if weights else WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"No detector weights at {path}: train them with `python -m apps.shapes_detector train`.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.eval()
    model.edgesdk_metadata = {
        "labels": list(CLASSES), "task": "detection",
        "preprocess": Preprocess(size=(SIZE, SIZE), resize=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
    }
    return model


# -- training -------------------------------------------------------------------------------------

def _targets(boxes: np.ndarray, grids: list[tuple[int, int, int]], nc: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cell: class targets [N, nc] and box targets [N, 4] (x1, y1, x2, y2; NaN where negative).
    A box is assigned to the level its size suits (<= 64 px: stride 8) and to the cells whose centre
    lies inside the box's central region (radius 1.5 strides around its centre)."""
    n = sum(h * w for h, w, _ in grids)
    cls_t = np.zeros((n, nc), np.float32)
    box_t = np.full((n, 4), np.nan, np.float32)
    offset = 0
    for level, (h, w, stride) in enumerate(grids):
        cy, cx = (np.mgrid[0:h, 0:w] + 0.5) * stride
        cx, cy = cx.ravel(), cy.ravel()
        for c, x1, y1, x2, y2 in boxes:
            side = max(x2 - x1, y2 - y1)
            if (side <= 64) != (level == 0):
                continue
            bx, by = (x1 + x2) / 2, (y1 + y2) / 2
            r = 1.5 * stride
            inside = (cx > x1) & (cx < x2) & (cy > y1) & (cy < y2) & (abs(cx - bx) < r) & (abs(cy - by) < r)
            if not inside.any():
                inside = (abs(cx - bx) <= stride / 2) & (abs(cy - by) <= stride / 2)
            idx = np.nonzero(inside)[0] + offset
            cls_t[idx, int(c)] = 1.0
            box_t[idx] = (x1, y1, x2, y2)
        offset += h * w
    return cls_t, box_t


def train(out: Path = WEIGHTS, epochs: int = 12, steps: int = 120, batch: int = 24, seed: int = 0) -> Path:
    """Train the detector on generated scenes (about 10 minutes on 2 cores) and save fp16 weights to out."""
    import torch
    from rich.progress import Progress

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = _build()()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps, pct_start=0.15)
    t0 = time.time()
    with Progress() as progress:
        task = progress.add_task("training", total=epochs * steps)
        for epoch in range(epochs):
            model.train()
            running = 0.0
            for _ in range(steps):
                loss = _loss(model, [make_scene(rng) for _ in range(batch)])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                running += float(loss)
                progress.advance(task)
            log.warning("epoch %d/%d loss %.3f (%.0f s)", epoch + 1, epochs, running / steps, time.time() - t0)
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, out)
    return out


def _loss(model, scenes: list) -> Any:
    """Class BCE plus 2 x GIoU over the cells assigned to an object, per object."""
    import torch
    from torch import nn

    grids = [(SIZE // s, SIZE // s, s) for s in STRIDES]
    x = torch.from_numpy(np.concatenate([to_input(img) for img, _ in scenes]))
    targets = [_targets(b, grids, len(CLASSES)) for _, b in scenes]
    cls_t = torch.from_numpy(np.stack([t[0] for t in targets]))
    box_t = torch.from_numpy(np.stack([t[1] for t in targets]))
    raw = model.raw(x)
    cls_logits = torch.cat([c.flatten(2) for _, c in raw], 2).transpose(1, 2)  # [B, N, nc]
    pred = model_boxes(raw)  # [B, N, 4] xyxy
    pos = ~torch.isnan(box_t[..., 0])
    n_pos = max(int(pos.sum()), 1)
    loss_cls = nn.BCEWithLogitsLoss(reduction="sum")(cls_logits, cls_t) / n_pos
    loss_box = giou_loss(pred[pos], box_t[pos]).sum() / n_pos
    return loss_cls + 2.0 * loss_box


def model_boxes(raw):
    """Decoded xyxy boxes [B, N, 4] from the heads' raw outputs (the forward pass's decoding)."""
    import torch
    from torch import nn

    outs = []
    for (box, _), stride in zip(raw, STRIDES):
        b, _, h, w = box.shape
        gy, gx = torch.meshgrid(torch.arange(h, dtype=box.dtype), torch.arange(w, dtype=box.dtype), indexing="ij")
        cx, cy = (gx + 0.5) * stride, (gy + 0.5) * stride
        d = nn.functional.softplus(box) * stride
        outs.append(torch.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], -1).flatten(1, 2))
    return torch.cat(outs, 1)


def giou_loss(a, b):
    import torch

    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = iw * ih
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    iou = inter / union.clamp(min=1e-6)
    cw = torch.maximum(a[:, 2], b[:, 2]) - torch.minimum(a[:, 0], b[:, 0])
    ch = torch.maximum(a[:, 3], b[:, 3]) - torch.minimum(a[:, 1], b[:, 1])
    hull = (cw * ch).clamp(min=1e-6)
    return 1 - (iou - (hull - union) / hull)


def _yolo_lines(boxes: np.ndarray, width: int, height: int) -> str:
    """[K, 5] (class, x1, y1, x2, y2) pixels as YOLO label lines."""
    return "".join(f"{int(c)} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} {(x2 - x1) / width:.6f} "
                   f"{(y2 - y1) / height:.6f}\n" for c, x1, y1, x2, y2 in boxes)


def write_scenes(folder: Path, count: int, seed: int) -> Path:
    """count generated scenes as PNG files, their boxes in boxes.json and in YOLO label files
    (labels/sceneNNN.txt: class cx cy w h, normalized), and calib.npy (the model inputs)."""
    import json

    from PIL import Image

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    boxes, inputs = {}, []
    for i in range(count):
        img, b = make_scene(rng)
        Image.fromarray(img).save(folder / "images" / f"scene{i:03d}.png")
        boxes[f"scene{i:03d}.png"] = [[CLASSES[int(c)], *map(float, xyxy)] for c, *xyxy in b]
        (folder / "labels" / f"scene{i:03d}.txt").write_text(_yolo_lines(b, img.shape[1], img.shape[0]))
        inputs.append(to_input(img))
    (folder / "boxes.json").write_text(json.dumps(boxes, indent=1))
    np.save(folder / "calib.npy", np.concatenate(inputs))
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m apps.shapes_detector")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sc = sub.add_parser("scenes", help="write generated scenes (PNG + boxes.json + calib.npy) to a folder")
    sc.add_argument("folder")
    sc.add_argument("--count", type=int, default=64)
    sc.add_argument("--seed", type=int, default=777)
    t = sub.add_parser("train", help="train on generated scenes and save fp16 weights")
    t.add_argument("--out", default=str(WEIGHTS))
    t.add_argument("--epochs", type=int, default=12)
    t.add_argument("--steps", type=int, default=120)
    t.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.cmd == "scenes":
        print(write_scenes(Path(args.folder), args.count, args.seed))
        return 0
    path = train(Path(args.out), args.epochs, args.steps, seed=args.seed)
    print(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

