"""TFLite side by side on EfficientNet-Lite0, in one run: torch eager FP32, ONNX Runtime FP32, the plain
LiteRT interpreter on the FP32 .tflite (NHWC input), and edgesdk.Runtime on the TFLite FP32, INT8
(selective, the default) and full-INT8 (int8 I/O) artifacts with NCHW input. XNNPACK, same threads and
input for every runner, interleaved rounds. Accuracy: top-1 agreement with torch FP32 on photos 50-99
(centre + 4 corner crops = 250 views).

    python benchmarks/compare_tflite.py [--bundle build/effnet-tfl] [--full build/effnet-tfl-full] [--threads 2]

Both bundles are built if missing (the second with tflite_int8="full").
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main() -> int:
    from common import accuracy_vs, comparison_args, effnet_setup

    args = comparison_args(__doc__, bundle="build/effnet-tfl", extra={"--full": {"default": "build/effnet-tfl-full"}})

    import torch
    from ai_edge_litert.interpreter import Interpreter
    from common import interleaved, print_ratios, ratio, save_json

    import edgesdk
    from edgesdk.models import zoo

    bundle_dir, full_dir = Path(args.bundle), Path(args.full)
    calib, evaluation = zoo.split_photos(Path("build/photos"))
    for folder, targets, options in ((bundle_dir, ["onnx", "tflite"], {}), (full_dir, ["tflite"], {"tflite_int8": "full"})):
        if not folder.exists():
            edgesdk.convert(zoo.efficientnet_lite0(), torch.zeros(1, 3, 224, 224), targets=targets,
                            precisions=["fp32", "int8"] if folder == bundle_dir else ["int8"], calib=calib,
                            validation=evaluation, out=folder, options=options)
    bundle, views, model = effnet_setup(args)
    x = views[0]
    xt = torch.from_numpy(x)

    plain = Interpreter(model_path=str(bundle_dir / "model.tflite"), num_threads=args.threads)
    plain.allocate_tensors()
    detail = plain.get_input_details()[0]
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))

    def plain_run() -> None:
        plain.set_tensor(detail["index"], x_nhwc)
        plain.invoke()
        plain.get_tensor(plain.get_output_details()[0]["index"])

    sessions = {
        "ONNX Runtime FP32": edgesdk.Runtime(bundle_dir, artifact="onnx-fp32", backend="onnxruntime",
                                             threads=args.threads),
        "Runtime TFLite FP32": edgesdk.Runtime(bundle_dir, artifact="tflite-fp32", threads=args.threads),
        "Runtime TFLite INT8 (selective)": edgesdk.Runtime(bundle_dir, artifact="tflite-int8", threads=args.threads),
        "Runtime TFLite INT8 (full, int8 I/O)": edgesdk.Runtime(full_dir, artifact="tflite-int8", threads=args.threads),
    }

    def torch_run() -> None:
        with torch.no_grad():
            model(xt)

    runners = {"torch eager FP32": torch_run, "plain LiteRT FP32 (NHWC in)": plain_run}
    runners.update({k: (lambda rt=rt: rt.run(x)) for k, rt in sessions.items()})
    per_round = interleaved(runners, args.rounds, args.runs, args.warmup)
    p50 = {k: float(np.median(v)) for k, v in per_round.items()}
    ratios = {
        "Runtime overhead vs plain LiteRT (FP32, incl. NCHW->NHWC)":
            ratio(per_round, "Runtime TFLite FP32", "plain LiteRT FP32 (NHWC in)") - 1,
        "TFLite FP32 vs torch eager": ratio(per_round, "torch eager FP32", "Runtime TFLite FP32"),
        "TFLite INT8 (selective) vs TFLite FP32": ratio(per_round, "Runtime TFLite FP32", "Runtime TFLite INT8 (selective)"),
        "TFLite INT8 (full) vs TFLite FP32": ratio(per_round, "Runtime TFLite FP32", "Runtime TFLite INT8 (full, int8 I/O)"),
    }
    accuracy = accuracy_vs(model, views, {k: np.concatenate([rt.run(v) for v in views]) for k, rt in sessions.items()})

    print(f"EfficientNet-Lite0, batch 1, {args.threads} threads (XNNPACK), {args.rounds} interleaved rounds x "
          f"{args.runs} runs; agreement with torch FP32 on {len(views)} views of photos 50-99")
    print(f"{'runner':40s} {'p50 ms':>8s} {'top-1 agree':>12s} {'cosine':>8s} {'max abs':>9s}")
    for k in runners:
        acc = accuracy.get(k)
        tail = (f" {acc['top1_agreement']:12.1%} {acc['mean_cosine']:8.4f} {acc['max_abs']:9.2e}" if acc else "")
        print(f"{k:40s} {p50[k]:8.2f}{tail}")
    print_ratios(ratios)
    save_json(args.json_path, args, p50_ms=p50, per_round_ms=per_round, ratios=ratios, accuracy=accuracy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
