"""Detect objects on-device with a YOLO model (an edgesdk bundle, or a model file such as your own
yolov8n.onnx), draw the boxes, and log latency per stage.

    python -m apps.detect image.jpg folder/ [--model build/shapes] [--out build/detections] [--out-format jpg]
        [--conf 0.25] [--iou 0.45] [--labels coco.txt] [--backend auto] [--precision auto] [--json] [--sequential]
    python -m apps.detect --video 0            # a camera or a video file, when OpenCV is installed

Stages: decode (read the image), preprocess (letterbox straight into the model's float input, in the
loaded artifact's own layout), infer, postprocess (decode the YOLOv8 [1, 4+nc, N] or YOLOv5 [1, N, 5+nc]
output, class-aware NMS, boxes back to the original image), and with --out, draw (boxes on the decoded
frame, saved as JPEG unless --out-format png). Several images are pipelined: frame N+1 decodes while
frame N runs and frame N-1 is post-processed and drawn (--sequential: one at a time). Models with NMS
inside (edgesdk.tasks.yolo.embed_nms) skip the decode and NMS."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

import edgesdk
from apps.common import (
    add_image_inputs,
    app_parser,
    image_items,
    image_paths,
    missing_model,
    open_runtime,
    positive_int,
    print_results,
    run_app,
    stream_results,
)
from edgesdk.core.images import load_image
from edgesdk.stream import Frame, run_stream
from edgesdk.tasks.yolo import Letterbox, letterbox_tensor, postprocess

DEFAULT_MODEL = "build/shapes"  # what `make demo` builds from the repo's own detector
PALETTE = [(255, 56, 56), (72, 249, 10), (0, 148, 255), (255, 178, 29), (207, 210, 49), (146, 204, 23)]


class Detector:
    """A Runtime plus the pre/post-processing of a YOLO model."""

    def __init__(self, rt: edgesdk.Runtime, labels: list[str] | None = None, conf: float = 0.25,
                 iou: float = 0.45, max_det: int = 300):
        self.rt, self.conf, self.iou, self.max_det = rt, conf, iou, max_det
        spec = rt.native_inputs[0]  # the layout the artifact computes in: no transpose per frame
        shape = spec.concrete_shape()
        self.nhwc = spec.layout == "NHWC" or (len(shape) == 4 and shape[-1] == 3 and shape[1] != 3)
        self.size = (shape[1], shape[2]) if self.nhwc else (shape[2], shape[3])
        self.labels = labels or rt.labels
        self.nms_inside = [s.name for s in rt.outputs][:3] == ["det_boxes", "det_scores", "det_classes"]
        if not self.nms_inside and len(rt.outputs) != 1:
            raise edgesdk.InputError(f"{rt.path} has outputs {[s.name for s in rt.outputs]}: a YOLO detector has "
                                     "one [1, 4+nc, N] (v8) or [1, N, 5+nc] (v5) output, or det_boxes/scores/classes.")

    def preprocess(self, image: Any) -> tuple[np.ndarray, Letterbox]:
        """A PIL RGB image (or HxWx3 uint8 array) -> the model's input and the way back to the image."""
        return letterbox_tensor(image, self.size, "NHWC" if self.nhwc else "NCHW")

    def postprocess(self, outputs: list[np.ndarray], lb: Letterbox) -> dict[str, np.ndarray]:
        if self.nms_inside:
            boxes, scores, classes = outputs[:3]
            keep = scores > self.conf
            return {"boxes": lb.to_original(boxes[keep]), "scores": scores[keep], "classes": classes[keep]}
        nc = len(self.labels) if self.labels else None
        return postprocess(outputs[0], lb, num_classes=nc, conf_threshold=self.conf, iou_threshold=self.iou,
                           max_detections=self.max_det)

    def label(self, c: int) -> str:
        return self.labels[c] if self.labels and 0 <= c < len(self.labels) else str(c)


def draw(image: Any, det: dict[str, np.ndarray], detector: Detector) -> Any:
    """The boxes and labels drawn onto the decoded frame itself (a PIL image; an array is wrapped)."""
    from PIL import Image, ImageDraw

    pil = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    d = ImageDraw.Draw(pil)
    font = _font()
    for (x1, y1, x2, y2), s, c in zip(det["boxes"], det["scores"], det["classes"]):
        color = PALETTE[int(c) % len(PALETTE)]
        d.rectangle([x1, y1, x2, y2], outline=color, width=2)
        d.text((x1 + 2, max(0, y1 - 11)), f"{detector.label(int(c))} {s:.2f}", fill=color, font=font)
    return pil


@lru_cache(maxsize=1)
def _font() -> Any:
    """Pillow's default font, loaded once rather than per frame."""
    from PIL import ImageFont

    return ImageFont.load_default()


def save_image(pil: Any, out_dir: Path, name: str, fmt: str) -> Path:
    """Write out_dir/<name>.<fmt> whole or not at all (a temporary file, then a rename)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{Path(name).stem.replace('#', '_')}.{fmt}"
    tmp = path.with_name(f".{path.name}.tmp")
    pil.save(tmp, format="JPEG" if fmt == "jpg" else "PNG", **({"quality": 90} if fmt == "jpg" else {}))
    os.replace(tmp, path)
    return path


def detect_all(detector: Detector, items: Iterable[tuple[str, Any]], latency: edgesdk.LatencyLog,
               out_dir: Path | None = None, pipelined: bool = True, out_format: str = "jpg") -> list[dict[str, Any]]:
    """Every (name, image path or PIL image) through decode -> preprocess -> infer -> postprocess
    (-> draw, when out_dir is given)."""
    def decode(f: Frame) -> None:
        f.image = load_image(f.source, "RGB")

    def preprocess(f: Frame) -> None:
        f.x, f.lb = detector.preprocess(f.image)

    def infer(f: Frame) -> None:
        f.outputs = detector.rt.run_all(f.x)

    def postprocess(f: Frame) -> None:
        f.det = det = detector.postprocess(f.outputs, f.lb)
        f.result = [{"label": detector.label(int(c)), "score": round(float(s), 4),
                     "box": [round(float(v), 1) for v in b]}
                    for b, s, c in zip(det["boxes"], det["scores"], det["classes"])]
        f.log["detections"] = len(f.result)

    def draw_boxes(f: Frame) -> None:
        save_image(draw(f.image, f.det, detector), out_dir, f.name, out_format)

    last = [("postprocess", postprocess)] + ([("draw", draw_boxes)] if out_dir is not None else [])
    steps = [[("decode", decode), ("preprocess", preprocess)], [("infer", infer)], last]
    return stream_results(run_stream(items, steps, latency, pipelined), "detections")


def main(argv: list[str] | None = None) -> int:
    ap = app_parser("apps.detect", __doc__, DEFAULT_MODEL, "build/detect-latency.jsonl")
    add_image_inputs(ap)
    ap.add_argument("--labels", help="text file, one class name per line (for model files without a manifest)")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--iou", type=float, default=0.45)
    ap.add_argument("--max-det", type=positive_int, default=300)
    ap.add_argument("--out", help="folder to write images with boxes drawn")
    ap.add_argument("--out-format", choices=["jpg", "png"], default="jpg", help="format of the drawn images")
    args = ap.parse_args(argv)
    if not args.inputs and not args.video:
        ap.error("give image files or folders, or --video")
    if missing_model(args.model, "Run `make demo` to build the default detector bundle, or pass --model "
                                 "(e.g. your yolov8n.onnx)."):
        return 1
    labels = [line.strip() for line in Path(args.labels).read_text().splitlines() if line.strip()] if args.labels else None

    def line(r: dict[str, Any]) -> str:
        return f"{r['input']}: " + (", ".join(f"{d['label']} {d['score']:.2f}" for d in r["detections"]) or "nothing")

    def body() -> list[dict[str, Any]]:
        paths = [] if args.video else image_paths(args.inputs)
        with open_runtime(args, stream=bool(args.video) or len(paths) > 1) as rt, \
                edgesdk.LatencyLog(args.log, name=f"detect: {rt.artifact.id} on {rt.backend}") as latency:
            detector = Detector(rt, labels, args.conf, args.iou, args.max_det)
            results = detect_all(detector, image_items(args, paths), latency, Path(args.out) if args.out else None,
                                 not args.sequential, args.out_format)
            print_results(results, latency, args.json, line,
                          {"model": str(args.model), "artifact": rt.artifact.id, "backend": rt.backend})
        return results
    return run_app(body)


if __name__ == "__main__":
    sys.exit(main())
