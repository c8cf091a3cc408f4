"""Accuracy on labelled data, the figure users decide on: top-1/top-5 with a 95% interval for a
classifier (an image folder with one sub-folder per class, or a CSV of file,label), mAP for a YOLO
detector (images/ + labels/ in the YOLO label format). Device-side: numpy and Pillow only, so a fleet
worker with the runtimes extra measures it on its own kernels."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UsageError
from ..core.images import Preprocess, is_image_path, list_images
from ..core.specs import TensorSpec

#: COCO's IoU thresholds (mAP50-95) and its 101 recall points.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)
MAX_DETECTIONS = 100


@dataclass
class LabelledSet:
    """Images and their truth. kind "classes": label is a class name or index; kind "yolo": label is
    an array [K, 5] of (class, cx, cy, w, h) normalized to the image, as YOLO label files hold them."""

    kind: str
    root: Path
    items: list[tuple[str, Any]] = field(default_factory=list)  # (path relative to root, label)
    source: str = ""

    def __len__(self) -> int:
        return len(self.items)

    def to_payload(self) -> dict[str, Any]:
        """The set as plain data (file bytes included), to ship to a node that does not see this disk."""
        names = [f"{i:06d}/{Path(rel).name}" for i, (rel, _) in enumerate(self.items)]  # a CSV may name absolute paths
        files = {name: (self.root / rel).read_bytes() for name, (rel, _) in zip(names, self.items)}
        items = [(name, lab.tolist() if isinstance(lab, np.ndarray) else lab) for name, (_, lab) in zip(names, self.items)]
        return {"kind": self.kind, "items": items, "files": files, "source": self.source}

    @classmethod
    def from_payload(cls, payload: dict[str, Any], dest: Path) -> LabelledSet:
        """Write a payload's files under dest (names checked to stay inside it) and return the set."""
        from ..core.bundle import inside

        for rel, data in payload["files"].items():
            path = inside(dest, rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        items = [(rel, np.asarray(lab, np.float32).reshape(-1, 5) if payload["kind"] == "yolo" else lab)
                 for rel, lab in payload["items"]]
        return cls(payload["kind"], dest, items, payload.get("source", ""))


def load_labelled(path: str | os.PathLike) -> LabelledSet | None:
    """The labelled set at path, or None when path holds no labels (a flat image folder, a .npy)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return _from_csv(path)
    if not path.is_dir():
        return None
    if (path / "images").is_dir() and (path / "labels").is_dir():
        return _from_yolo(path)
    classes = sorted(d for d in path.iterdir() if d.is_dir() and list_images(d))
    if classes and not list_images(path):
        items = [(str(f.relative_to(path)), d.name) for d in classes for f in list_images(d)]
        return LabelledSet("classes", path, items, f"{len(items)} images in {len(classes)} class folders of {path}")
    return None


def _from_csv(path: Path) -> LabelledSet:
    """file,label rows (a header row naming 'label' is skipped); files relative to the CSV's folder."""
    try:
        rows = [r for r in csv.reader(path.read_text().splitlines()) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"Cannot read the labels CSV {path}: {exc}. Expected rows of file,label.") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] in (["file", "label"], ["path", "label"], ["image", "label"]):
        rows = rows[1:]
    bad = [i + 1 for i, r in enumerate(rows) if len(r) != 2 or not is_image_path(r[0].strip())]
    if bad or not rows:
        raise UsageError(f"{path}: expected rows of file,label with an image file first; rows {bad[:5] or 'none'} "
                         "are not.")
    items = [(r[0].strip(), r[1].strip()) for r in rows]
    missing = [f for f, _ in items if not (path.parent / f).is_file()]
    if missing:
        raise UsageError(f"{path} names {len(missing)} files that are not there (first: {missing[0]}), relative to "
                         f"{path.parent}.")
    return LabelledSet("classes", path.parent, items, f"{len(items)} images listed in {path}")


def _from_yolo(path: Path) -> LabelledSet:
    """images/NAME.ext with labels/NAME.txt of 'class cx cy w h' lines (no file: no objects)."""
    items = []
    for image in list_images(path / "images"):
        label = path / "labels" / f"{image.stem}.txt"
        rows = []
        if label.is_file():
            for n, line in enumerate(label.read_text().splitlines(), 1):
                if line.strip():
                    try:
                        rows.append([float(v) for v in line.split()[:5]])
                    except ValueError:
                        raise UsageError(f"{label}:{n}: expected 'class cx cy w h', got {line!r}.") from None
        boxes = np.asarray(rows, np.float32).reshape(-1, 5)
        items.append((str(image.relative_to(path)), boxes))
    if not items:
        raise UsageError(f"No images in {path / 'images'}.")
    return LabelledSet("yolo", path, items, f"{len(items)} images with YOLO labels in {path}")


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% for z=1.96): honest at small n and near 0 or 1."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def class_index(label: Any, names: list[str] | None) -> int:
    """A label (class name, or index as text) as the model's class index."""
    text = str(label).strip()
    if names:
        lowered = [n.lower() for n in names]
        if text.lower() in lowered:
            return lowered.index(text.lower())
    if text.isdigit():
        return int(text)
    known = f"one of {len(names)} class names such as {names[:3]}" if names else "a class index"
    raise UsageError(f"Label {text!r} is not {known}: name the folder or CSV label after the model's classes.")


Run = Callable[[np.ndarray], list[np.ndarray]]


def classification_accuracy(run: Run, data: LabelledSet, pre: Preprocess, names: list[str] | None) -> dict[str, Any]:
    """top-1/top-5 accuracy with 95% Wilson intervals over every image of data."""
    from ..core.images import preprocess_image

    truth = [class_index(label, names) for _, label in data.items]
    top1 = top5 = 0
    for (rel, _), want in zip(data.items, truth):
        scores = np.asarray(run(preprocess_image(data.root / rel, pre))[0], np.float64).reshape(-1)
        order = np.argsort(-scores)[:5]
        top1 += int(order[0] == want)
        top5 += int(want in order)
    n = len(truth)
    return {"metric": "top1", "top1": top1 / n, "top5": top5 / n, "samples": n,
            "top1_ci95": list(wilson_interval(top1, n)), "top5_ci95": list(wilson_interval(top5, n))}


def detection_accuracy(run: Run, data: LabelledSet, spec: TensorSpec, num_classes: int | None) -> dict[str, Any]:
    """COCO-style mAP50 and mAP50-95 of a YOLO detector (letterbox in, decode + NMS out)."""
    from ..core.images import load_image
    from ..tasks.yolo import letterbox_tensor, postprocess

    shape = spec.concrete_shape()
    nhwc = spec.layout == "NHWC" or shape[-1] == 3
    size = (shape[1], shape[2]) if nhwc else (shape[2], shape[3])
    truths, preds = [], []
    for rel, boxes in data.items:
        image = load_image(data.root / rel, "RGB")
        x, lb = letterbox_tensor(image, size, "NHWC" if nhwc else "NCHW")
        preds.append(postprocess(run(x)[0], lb, num_classes=num_classes, conf_threshold=0.001, iou_threshold=0.6,
                                 max_detections=MAX_DETECTIONS))
        truths.append(yolo_to_xyxy(boxes, *image.size))
    return {"metric": "map50_95", **mean_average_precision(truths, preds), "samples": len(truths)}


def yolo_to_xyxy(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """[K, 5] (class, cx, cy, w, h) normalized -> [K, 5] (class, x1, y1, x2, y2) in pixels."""
    c, cx, cy, w, h = (boxes[:, i] for i in range(5))
    return np.stack([c, (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], 1)


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)


def mean_average_precision(truths: list[np.ndarray], preds: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """{"map50", "map50_95"}: COCO's evaluation (greedy matching by score, 101-point interpolated AP,
    averaged over the classes that have truth boxes, at most MAX_DETECTIONS per image)."""
    classes = sorted({int(c) for t in truths for c in t[:, 0]})
    if not classes:
        return {"map50": 0.0, "map50_95": 0.0}
    ap = np.array([[_average_precision(truths, preds, c, thr) for thr in IOU_THRESHOLDS] for c in classes])
    return {"map50": float(ap[:, 0].mean()), "map50_95": float(ap.mean())}


def _average_precision(truths: list[np.ndarray], preds: list[dict[str, np.ndarray]], cls: int, thr: float) -> float:
    scored: list[tuple[float, bool]] = []
    total = 0
    for truth, pred in zip(truths, preds):
        gt = truth[truth[:, 0] == cls, 1:]
        total += len(gt)
        keep = np.argsort(-pred["scores"], kind="stable")
        keep = keep[pred["classes"][keep] == cls][:MAX_DETECTIONS]
        boxes, scores = pred["boxes"][keep], pred["scores"][keep]
        ious = _iou_matrix(boxes, gt) if len(gt) and len(boxes) else np.zeros((len(boxes), len(gt)))
        taken = np.zeros(len(gt), bool)
        for i in range(len(boxes)):
            cand = np.where(~taken & (ious[i] >= thr - 1e-10))[0] if len(gt) else []
            hit = len(cand) > 0
            if hit:
                taken[cand[np.argmax(ious[i, cand])]] = True
            scored.append((float(scores[i]), hit))
    if total == 0 or not scored:
        return 0.0
    scored.sort(key=lambda s: -s[0])
    hits = np.array([h for _, h in scored], np.float64)
    tp, fp = np.cumsum(hits), np.cumsum(1 - hits)
    recall, precision = tp / total, tp / (tp + fp)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the envelope
    idx = np.searchsorted(recall, _RECALL_POINTS, side="left")
    return float(np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0).mean())


def evaluate(run: Run, data: LabelledSet, task: str | None, pre: Preprocess | None, inputs: list[TensorSpec],
             labels: list[str] | None) -> dict[str, Any]:
    """The accuracy figures that fit the data: top-1/top-5 for class labels, mAP for YOLO labels."""
    if data.kind == "yolo":
        return detection_accuracy(run, data, inputs[0], len(labels) if labels else None)
    if pre is None:
        raise UsageError("Class-labelled images need the bundle's image preprocessing (its manifest has none): "
                         "convert with --mean/--std/--resize or a model that carries them.")
    return classification_accuracy(run, data, pre, labels)
