"""Side by side on EfficientNet-Lite0, in one run: torch eager FP32, plain onnxruntime on the .onnx,
edgesdk.Runtime on the same .onnx, and the INT8 artifact through edgesdk.Runtime.

Rounds interleave the runners (this machine's speed drifts by up to 1.6x between rounds), every
runner uses the same input and the same thread count, and the ratios are taken per round.
Also measures INT8 top-1 agreement with FP32 on photos 50-99 (centre + 4 corner crops = 250 views).

    python benchmarks/compare_onnx.py [--bundle build/effnet] [--threads 2] [--rounds 7] [--json FILE]
"""

from __future__ import annotations

import sys

import numpy as np


def main() -> int:
    from common import comparison_args, effnet_setup

    args = comparison_args(__doc__)

    import onnxruntime as ort
    import torch
    from common import agreement, interleaved, print_ratios, ratio, save_json

    import edgesdk

    bundle, views, model = effnet_setup(args, ["onnx"])
    bundle_dir, x = bundle.path, views[0]
    xt = torch.from_numpy(x)

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    plain = ort.InferenceSession(str(bundle_dir / bundle.artifact("onnx-fp32").file), so,
                                 providers=["CPUExecutionProvider"])
    in_name = plain.get_inputs()[0].name
    rt32 = edgesdk.Runtime(bundle_dir, artifact="onnx-fp32", backend="onnxruntime", threads=args.threads)
    rt8 = edgesdk.Runtime(bundle_dir, artifact="onnx-int8", backend="onnxruntime", threads=args.threads)

    def torch_run():
        with torch.no_grad():
            model(xt)

    runners = {
        "torch eager FP32": torch_run,
        "onnxruntime FP32 (plain)": lambda: plain.run(None, {in_name: x}),
        "edgesdk.Runtime ONNX FP32": lambda: rt32.run(x),
        "edgesdk.Runtime ONNX INT8": lambda: rt8.run(x),
    }
    per_round = interleaved(runners, args.rounds, args.runs, args.warmup)
    p50 = {k: float(np.median(v)) for k, v in per_round.items()}
    ratios = {
        "Runtime overhead vs plain onnxruntime (FP32)":
            ratio(per_round, "edgesdk.Runtime ONNX FP32", "onnxruntime FP32 (plain)") - 1,
        "ONNX FP32 speed-up vs torch eager": ratio(per_round, "torch eager FP32", "edgesdk.Runtime ONNX FP32"),
        "INT8 speed-up vs ONNX FP32": ratio(per_round, "edgesdk.Runtime ONNX FP32", "edgesdk.Runtime ONNX INT8"),
    }

    # Accuracy of INT8 vs FP32 on held-out photos 50-99, five views each.
    with torch.no_grad():
        ref = np.concatenate([model(torch.from_numpy(v)).numpy() for v in views])
    fp32 = np.concatenate([rt32.run(v) for v in views])
    int8 = np.concatenate([rt8.run(v) for v in views])
    agree, cos = agreement(ref, int8)
    accuracy = {
        "views": len(views),
        "onnx_fp32_top1_agreement_vs_torch": agreement(ref, fp32)[0],
        "int8_top1_agreement_vs_torch_fp32": agree,
        "int8_top1_agreement_vs_onnx_fp32": agreement(fp32, int8)[0],
        "int8_mean_cosine": cos,
    }

    print(f"EfficientNet-Lite0, batch 1, {args.threads} threads, {args.rounds} interleaved rounds x {args.runs} runs")
    print(f"{'runner':32s} {'p50 ms':>8s}")
    for k in runners:
        print(f"{k:32s} {p50[k]:8.2f}")
    print_ratios(ratios)
    print(f"INT8 top-1 agreement with torch FP32 on {len(views)} views of photos 50-99: "
          f"{accuracy['int8_top1_agreement_vs_torch_fp32']:.1%} (vs ONNX FP32 "
          f"{accuracy['int8_top1_agreement_vs_onnx_fp32']:.1%}), mean cosine {accuracy['int8_mean_cosine']:.4f}")
    print(f"ONNX FP32 top-1 agreement with torch: {accuracy['onnx_fp32_top1_agreement_vs_torch']:.1%}")
    save_json(args.json_path, args, p50_ms=p50, per_round_ms=per_round, ratios=ratios, accuracy=accuracy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
