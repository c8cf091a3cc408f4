"""Classify images on-device with an edgesdk bundle, logging latency per stage.

    python -m apps.classify build/photos/eval/55.jpg photos/ [--model build/effnet] [--backend auto]
        [--precision auto] [--top-k 5] [--log build/classify.jsonl] [--json]
    python -m apps.classify --video 0          # a camera (or a video file), when OpenCV is installed

Stages: decode (read the file), preprocess (resize, crop, normalize as the bundle's manifest says),
infer (Runtime.run), postprocess (softmax, top-k, labels)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import edgesdk
from edgesdk.images import list_images, load_image

DEFAULT_MODEL = "build/effnet"  # what `make demo` builds
log = logging.getLogger("apps.classify")


def image_paths(inputs: list[str]) -> list[Path]:
    """Every image to classify; a folder without images is an error (a typo, not an empty result)."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise edgesdk.InputError(f"Folder {p} holds no images (.jpg, .png, ...): nothing to classify.")
            paths += found
        else:
            paths.append(p)  # a missing or unreadable file is reported by decode, per image
    return paths


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def frames(source: str) -> Iterator[tuple[str, Any]]:
    """Frames of a camera index or a video file, as RGB PIL images (needs OpenCV)."""
    try:
        import cv2
    except ImportError:
        raise edgesdk.BackendUnavailable("--video needs OpenCV: pip install opencv-python-headless") from None
    from PIL import Image

    cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not cap.isOpened():
        raise edgesdk.InputError(f"Cannot open camera or video '{source}'.")
    index = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield f"{source}#{index}", Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        cap.release()


def classify(rt: edgesdk.Runtime, items: Iterator[tuple[str, Any]], top: int, latency: edgesdk.LatencyLog
             ) -> list[dict[str, Any]]:
    """Run every (name, image path or PIL image) through decode -> preprocess -> infer -> postprocess."""
    if rt.preprocess is None:
        raise edgesdk.InputError(f"{rt.path} has no image preprocessing in its manifest; convert it with "
                                 "--mean/--std/--resize or a calibration image folder.")
    results = []
    for name, item in items:
        with latency.sample(input=name) as record:
            try:
                with latency.stage("decode"):
                    image = load_image(item, rt.preprocess.color)
            except edgesdk.InputError as exc:
                record["error"] = str(exc)
                results.append({"input": name, "error": str(exc)})
                continue
            with latency.stage("preprocess"):
                x = rt.preprocess(image)
            with latency.stage("infer"):
                scores = rt.run(x)
            with latency.stage("postprocess"):
                best = edgesdk.top_k(scores[0] if scores.ndim > 1 else scores, top, rt.labels)
            record["top1"] = best[0]["label"]
            results.append({"input": name, "top": best})
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m apps.classify", description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="*", help="image files or folders")
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"bundle folder or model file (default {DEFAULT_MODEL})")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--artifact", help="one artifact of the bundle, e.g. tflite-int8")
    ap.add_argument("--threads", type=positive_int)
    ap.add_argument("--top-k", type=positive_int, default=5)
    ap.add_argument("--video", help="camera index or video file (needs OpenCV)")
    ap.add_argument("--log", default="build/classify-latency.jsonl", help="JSONL file with every sample's timings")
    ap.add_argument("--json", action="store_true", help="print results as JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if not args.inputs and not args.video:
        ap.error("give image files or folders, or --video")
    if not Path(args.model).exists():
        print(f"error: no model at {args.model}. Run `make demo` to build the default bundle, or pass --model.",
              file=sys.stderr)
        return 1
    try:
        paths = [] if args.video else image_paths(args.inputs)  # before the model loads: a typo fails fast
        with edgesdk.Runtime(args.model, backend=args.backend, precision=args.precision, artifact=args.artifact,
                             threads=args.threads) as rt, \
                edgesdk.LatencyLog(args.log, name=f"classify: {rt.artifact.id} on {rt.backend}") as latency:
            if args.video:
                items: Iterator[tuple[str, Any]] = frames(args.video)
            else:
                items = ((str(p), p) for p in paths)
            results = classify(rt, items, args.top_k, latency)
            if args.json:
                print(json.dumps({"model": str(args.model), "artifact": rt.artifact.id, "backend": rt.backend,
                                  "results": results, "latency": latency.summary()}, indent=2))
            else:
                print(f"{rt.artifact.id} on {rt.backend}")
                for r in results:
                    if "error" in r:
                        print(f"{r['input']}: error: {r['error']}")
                    else:
                        print(f"{r['input']}: " + ", ".join(f"{t['label']} {t['score']:.3f}" for t in r["top"]))
                print(latency.table())
    except edgesdk.EdgeSDKError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0 if all("error" not in r for r in results) else 2


if __name__ == "__main__":
    sys.exit(main())
