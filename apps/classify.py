"""Classify images on-device with an edgesdk bundle, logging latency per stage.

    python -m apps.classify build/photos/eval/55.jpg photos/ [--model build/effnet] [--backend auto]
        [--precision auto] [--top-k 5] [--log build/classify.jsonl] [--json] [--sequential] [--exact-decode]
    python -m apps.classify --video 0          # a camera (or a video file), when OpenCV is installed

Stages: decode (read the file; a large JPEG at reduced scale unless --exact-decode), preprocess (one
resize of the crop window, then scale, normalize and lay out in one pass, in the loaded artifact's own
layout), infer (Runtime.run), postprocess (softmax, top-k, labels). Several images are pipelined:
frame N+1 decodes while frame N runs and frame N-1 is post-processed (--sequential: one at a time)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import replace
from functools import partial
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
    stream_results,
)
from edgesdk.core.images import decode_size, fit_image, load_image, to_tensor
from edgesdk.stream import Frame, run_stream

DEFAULT_MODEL = "build/effnet"  # what `make demo` builds


def classify(rt: edgesdk.Runtime, items: Iterable[tuple[str, Any]], top: int, latency: edgesdk.LatencyLog,
             pipelined: bool = True, exact_decode: bool = False) -> list[dict[str, Any]]:
    """Run every (name, image path or PIL image) through decode -> preprocess -> infer -> postprocess."""
    if rt.preprocess is None:
        raise edgesdk.InputError(f"{rt.path} has no image preprocessing in its manifest; convert it with "
                                 "--mean/--std/--resize or a calibration image folder.")
    # The tensor in the layout the artifact computes in (NHWC for TFLite): the Runtime then transposes nothing.
    pre = replace(rt.preprocess, layout=rt.native_inputs[0].layout or rt.preprocess.layout)
    reduce_to = None if exact_decode else partial(decode_size, pre)

    def decode(f: Frame) -> None:
        f.image = load_image(f.source, pre.color, reduce_to)

    def preprocess(f: Frame) -> None:
        f.x = to_tensor(fit_image(f.image, pre), pre)

    def infer(f: Frame) -> None:
        f.scores = rt.run(f.x)

    def postprocess(f: Frame) -> None:
        f.result = edgesdk.top_k(f.scores[0] if f.scores.ndim > 1 else f.scores, top, rt.labels)
        f.log["top1"] = f.result[0]["label"]

    steps = [[("decode", decode), ("preprocess", preprocess)], [("infer", infer)], [("postprocess", postprocess)]]
    return stream_results(run_stream(items, steps, latency, pipelined), "top")


def main(argv: list[str] | None = None) -> int:
    ap = app_parser("apps.classify", __doc__, DEFAULT_MODEL, "build/classify-latency.jsonl")
    add_image_inputs(ap)
    ap.add_argument("--top-k", type=positive_int, default=5)
    ap.add_argument("--exact-decode", action="store_true",
                    help="decode JPEGs at full size (the manifest's numbers exactly; slower on large images)")
    args = ap.parse_args(argv)
    if not args.inputs and not args.video:
        ap.error("give image files or folders, or --video")
    if missing_model(args.model, "Run `make demo` to build the default bundle, or pass --model."):
        return 1

    def body() -> list[dict[str, Any]]:
        paths = [] if args.video else image_paths(args.inputs)  # before the model loads: a typo fails fast
        with open_runtime(args, stream=bool(args.video) or len(paths) > 1) as rt, \
                edgesdk.LatencyLog(args.log, name=f"classify: {rt.artifact.id} on {rt.backend}") as latency:
            results = classify(rt, image_items(args, paths), args.top_k, latency, not args.sequential,
                               args.exact_decode)
            print_results(results, latency, args.json,
                          lambda r: f"{r['input']}: " + ", ".join(f"{t['label']} {t['score']:.3f}" for t in r["top"]),
                          {"model": str(args.model), "artifact": rt.artifact.id, "backend": rt.backend})
        return results
    return run_app(body)


if __name__ == "__main__":
    sys.exit(main())
