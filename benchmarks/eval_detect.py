"""mAP@0.5 and mAP@0.5:0.95 (pycocotools, COCO's own evaluation) of every artifact of a detector bundle
on a held-out set of generated scenes, in one table with latency.

    python benchmarks/eval_detect.py [--bundle build/shapes] [--images 300] [--threads 2] [--json FILE]

The scenes come from apps.shapes_detector.make_scene with a seed the training never used. Detection
runs the app's own pipeline (letterbox, the artifact through edgesdk.Runtime, decode, NMS) with
COCO-evaluation thresholds (conf 0.001, IoU 0.6, 100 detections)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def coco_map(truth: list[np.ndarray], predictions: list[dict[str, np.ndarray]], num_classes: int) -> dict[str, float]:
    """{"map50", "map50_95"} over images; truth[i] is [K, 5] (class, x1, y1, x2, y2)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, detections = [], [], []
    for i, (gt, pred) in enumerate(zip(truth, predictions)):
        images.append({"id": i, "width": 256, "height": 256})
        for c, x1, y1, x2, y2 in gt:
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(c),
                                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                                "area": float((x2 - x1) * (y2 - y1)), "iscrowd": 0})
        for (x1, y1, x2, y2), s, c in zip(pred["boxes"], pred["scores"], pred["classes"]):
            detections.append({"image_id": i, "category_id": int(c), "score": float(s),
                               "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": annotations,
                        "categories": [{"id": c} for c in range(num_classes)]}
        coco.createIndex()
        if not detections:
            return {"map50": 0.0, "map50_95": 0.0}
        evaluator = COCOeval(coco, coco.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {"map50_95": float(evaluator.stats[0]), "map50": float(evaluator.stats[1])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="build/shapes")
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args()

    import edgesdk
    from apps.detect import Detector
    from apps.shapes_detector import CLASSES, make_scene
    from edgesdk.backends import backends
    from edgesdk.running.timing import percentiles, time_runs

    rng = np.random.default_rng(args.seed)
    scenes = [make_scene(rng) for _ in range(args.images)]
    truth = [b for _, b in scenes]
    bundle = edgesdk.load_bundle(args.bundle)
    rows = []
    for art in bundle.artifacts:
        for backend in [b.name for b in backends() if art.format in b.formats and b.available()[0]]:
            with edgesdk.Runtime(args.bundle, artifact=art.id, backend=backend, threads=args.threads) as rt:
                det = Detector(rt, conf=0.001, iou=0.6, max_det=100)
                preds = []
                for image, _ in scenes:
                    x, lb = det.preprocess(image)
                    preds.append(det.postprocess(rt.run_all(x), lb))
                x, _ = det.preprocess(scenes[0][0])
                lat = percentiles(time_runs(lambda rt=rt, x=x: rt.run_all(x), 100, 10))
            m = coco_map(truth, preds, len(CLASSES))
            rows.append({"artifact": art.id, "backend": backend, **m, "p50_ms": lat["p50"],
                         "size_mb": art.size_bytes / 1e6})
            sys.stderr.write(f"{art.id} on {backend}: mAP50 {m['map50']:.3f} mAP50-95 {m['map50_95']:.3f}\n")
    fp32 = {r["backend"]: r for r in rows if r["artifact"].endswith("fp32")}
    print(f"{args.bundle}: {args.images} held-out generated scenes (seed {args.seed}), threads {args.threads or 'default'}")
    print(f"{'artifact':16s} {'backend':12s} {'mAP50':>7s} {'mAP50-95':>9s} {'drop':>7s} {'p50 ms':>7s} {'MB':>6s}")
    for r in rows:
        ref = fp32.get(r["backend"]) or next(iter(fp32.values()), r)
        drop = (ref["map50_95"] - r["map50_95"]) * 100
        print(f"{r['artifact']:16s} {r['backend']:12s} {r['map50']:7.3f} {r['map50_95']:9.3f} {drop:+6.2f}p "
              f"{r['p50_ms']:7.2f} {r['size_mb']:6.2f}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
