"""Detect objects on-device with a YOLO model (an edgesdk bundle, or a model file such as your own
yolov8n.onnx), draw the boxes, and log latency per stage.

    python -m apps.detect image.jpg folder/ [--model build/shapes] [--out build/detections]
        [--conf 0.25] [--iou 0.45] [--labels coco.txt] [--backend auto] [--precision auto] [--json]
    python -m apps.detect --video 0            # a camera or a video file, when OpenCV is installed

Stages: decode (read the image), preprocess (letterbox to the model input, /255), infer, postprocess
(decode the YOLOv8 [1, 4+nc, N] or YOLOv5 [1, N, 5+nc] output, class-aware NMS, boxes back to the
original image), draw. Models with NMS inside (edgesdk.yolo.embed_nms) skip the decode and NMS."""

from __future__ import annotations

import sys
from collections.abc import Iterable
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
)
from edgesdk.images import load_image
from edgesdk.yolo import letterbox, postprocess

DEFAULT_MODEL = "build/shapes"  # what `make demo` builds from the repo's own detector
PALETTE = [(255, 56, 56), (72, 249, 10), (0, 148, 255), (255, 178, 29), (207, 210, 49), (146, 204, 23)]


class Detector:
    """A Runtime plus the pre/post-processing of a YOLO model."""

    def __init__(self, rt: edgesdk.Runtime, labels: list[str] | None = None, conf: float = 0.25,
                 iou: float = 0.45, max_det: int = 300):
        self.rt, self.conf, self.iou, self.max_det = rt, conf, iou, max_det
        spec = rt.inputs[0]
        shape = spec.concrete_shape()
        self.nhwc = spec.layout == "NHWC" or (len(shape) == 4 and shape[-1] == 3 and shape[1] != 3)
        self.size = (shape[1], shape[2]) if self.nhwc else (shape[2], shape[3])
        self.labels = labels or rt.labels
        self.nms_inside = [s.name for s in rt.outputs][:3] == ["det_boxes", "det_scores", "det_classes"]
        if not self.nms_inside and len(rt.outputs) != 1:
            raise edgesdk.InputError(f"{rt.path} has outputs {[s.name for s in rt.outputs]}: a YOLO detector has "
                                     "one [1, 4+nc, N] (v8) or [1, N, 5+nc] (v5) output, or det_boxes/scores/classes.")

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Any]:
        canvas, lb = letterbox(image, self.size)
        x = canvas.astype(np.float32) / 255.0
        x = x[None] if self.nhwc else x.transpose(2, 0, 1)[None]
        return np.ascontiguousarray(x), lb

    def postprocess(self, outputs: list[np.ndarray], lb: Any) -> dict[str, np.ndarray]:
        if self.nms_inside:
            boxes, scores, classes = outputs[:3]
            keep = scores > self.conf
            return {"boxes": lb.to_original(boxes[keep]), "scores": scores[keep], "classes": classes[keep]}
        nc = len(self.labels) if self.labels else None
        return postprocess(outputs[0], lb, num_classes=nc, conf_threshold=self.conf, iou_threshold=self.iou,
                           max_detections=self.max_det)

    def label(self, c: int) -> str:
        return self.labels[c] if self.labels and 0 <= c < len(self.labels) else str(c)


def draw(image: np.ndarray, det: dict[str, np.ndarray], detector: Detector) -> Any:
    from PIL import Image, ImageDraw

    pil = Image.fromarray(image)
    d = ImageDraw.Draw(pil)
    for (x1, y1, x2, y2), s, c in zip(det["boxes"], det["scores"], det["classes"]):
        color = PALETTE[int(c) % len(PALETTE)]
        d.rectangle([x1, y1, x2, y2], outline=color, width=2)
        d.text((x1 + 2, max(0, y1 - 11)), f"{detector.label(int(c))} {s:.2f}", fill=color)
    return pil


def detect_all(detector: Detector, items: Iterable[tuple[str, Any]], latency: edgesdk.LatencyLog,
               out_dir: Path | None = None) -> list[dict[str, Any]]:
    results = []
    for name, item in items:
        with latency.sample(input=name) as record:
            try:
                with latency.stage("decode"):
                    image = np.asarray(load_image(item, "RGB"))
            except edgesdk.InputError as exc:
                record["error"] = str(exc)
                results.append({"input": name, "error": str(exc)})
                continue
            with latency.stage("preprocess"):
                x, lb = detector.preprocess(image)
            with latency.stage("infer"):
                outputs = detector.rt.run_all(x)
            with latency.stage("postprocess"):
                det = detector.postprocess(outputs, lb)
            if out_dir is not None:
                with latency.stage("draw"):
                    out_dir.mkdir(parents=True, exist_ok=True)
                    draw(image, det, detector).save(out_dir / (Path(name).stem.replace("#", "_") + ".png"))
            found = [{"label": detector.label(int(c)), "score": round(float(s), 4),
                      "box": [round(float(v), 1) for v in b]}
                     for b, s, c in zip(det["boxes"], det["scores"], det["classes"])]
            record["detections"] = len(found)
            results.append({"input": name, "detections": found})
    return results


def main(argv: list[str] | None = None) -> int:
    ap = app_parser("apps.detect", __doc__, DEFAULT_MODEL, "build/detect-latency.jsonl")
    add_image_inputs(ap)
    ap.add_argument("--labels", help="text file, one class name per line (for model files without a manifest)")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--iou", type=float, default=0.45)
    ap.add_argument("--max-det", type=positive_int, default=300)
    ap.add_argument("--out", help="folder to write images with boxes drawn")
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
        with open_runtime(args) as rt, \
                edgesdk.LatencyLog(args.log, name=f"detect: {rt.artifact.id} on {rt.backend}") as latency:
            detector = Detector(rt, labels, args.conf, args.iou, args.max_det)
            results = detect_all(detector, image_items(args, paths), latency, Path(args.out) if args.out else None)
            print_results(results, latency, args.json, line,
                          {"model": str(args.model), "artifact": rt.artifact.id, "backend": rt.backend})
        return results
    return run_app(body)


if __name__ == "__main__":
    sys.exit(main())
