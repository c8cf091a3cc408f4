"""Classify images on-device with an edgesdk bundle, logging latency per stage.

    python -m apps.classify build/photos/eval/55.jpg photos/ [--model build/effnet] [--backend auto]
        [--precision auto] [--top-k 5] [--log build/classify.jsonl] [--json]
    python -m apps.classify --video 0          # a camera (or a video file), when OpenCV is installed

Stages: decode (read the file), preprocess (resize, crop, normalize as the bundle's manifest says),
infer (Runtime.run), postprocess (softmax, top-k, labels)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

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

DEFAULT_MODEL = "build/effnet"  # what `make demo` builds


def classify(rt: edgesdk.Runtime, items: Iterable[tuple[str, Any]], top: int, latency: edgesdk.LatencyLog
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
    ap = app_parser("apps.classify", __doc__, DEFAULT_MODEL, "build/classify-latency.jsonl")
    add_image_inputs(ap)
    ap.add_argument("--top-k", type=positive_int, default=5)
    args = ap.parse_args(argv)
    if not args.inputs and not args.video:
        ap.error("give image files or folders, or --video")
    if missing_model(args.model, "Run `make demo` to build the default bundle, or pass --model."):
        return 1

    def body() -> list[dict[str, Any]]:
        paths = [] if args.video else image_paths(args.inputs)  # before the model loads: a typo fails fast
        with open_runtime(args) as rt, \
                edgesdk.LatencyLog(args.log, name=f"classify: {rt.artifact.id} on {rt.backend}") as latency:
            results = classify(rt, image_items(args, paths), args.top_k, latency)
            print_results(results, latency, args.json,
                          lambda r: f"{r['input']}: " + ", ".join(f"{t['label']} {t['score']:.3f}" for t in r["top"]),
                          {"model": str(args.model), "artifact": rt.artifact.id, "backend": rt.backend})
        return results
    return run_app(body)


if __name__ == "__main__":
    sys.exit(main())
