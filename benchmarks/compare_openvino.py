"""OpenVINO side by side on EfficientNet-Lite0, in one run: torch eager FP32, ONNX Runtime FP32, OpenVINO
FP32 IR in f32 (what edgesdk runs), the same IR with OpenVINO's default bf16 execution, and the INT8 IR
(nncf) next to ONNX Runtime's INT8. Interleaved rounds, same input and threads for every runner.
Accuracy: top-1 agreement with torch FP32 on photos 50-99 (centre + 4 corner crops = 250 views).

    python benchmarks/compare_openvino.py [--bundle build/effnet] [--threads 2] [--rounds 7] [--json FILE]
"""

from __future__ import annotations

import sys

import numpy as np


def main() -> int:
    from common import comparison_args, effnet_setup

    args = comparison_args(__doc__)

    import torch
    from common import agreement, interleaved, print_ratios, ratio, save_json

    import edgesdk
    from edgesdk.backends import get_backend

    bundle, views, model = effnet_setup(args, ["onnx", "openvino"])
    bundle_dir, x = bundle.path, views[0]
    xt = torch.from_numpy(x)

    sessions = {
        "ONNX Runtime FP32": edgesdk.Runtime(bundle_dir, artifact="onnx-fp32", backend="onnxruntime",
                                             threads=args.threads),
        "OpenVINO FP32 (f32)": edgesdk.Runtime(bundle_dir, artifact="openvino-fp32", threads=args.threads),
        "ONNX Runtime INT8": edgesdk.Runtime(bundle_dir, artifact="onnx-int8", backend="onnxruntime",
                                             threads=args.threads),
        "OpenVINO INT8": edgesdk.Runtime(bundle_dir, artifact="openvino-int8", threads=args.threads),
    }
    # OpenVINO's own default on this CPU: the FP32 IR executed in bf16 (edgesdk's opt-in "bf16" precision).
    ir = bundle_dir / bundle.artifact("openvino-fp32").file
    bf16 = get_backend("openvino").open(ir, threads=args.threads, precision="bf16")
    name = bf16.inputs[0].name

    def torch_run():
        with torch.no_grad():
            model(xt)

    runners = {"torch eager FP32": torch_run}
    runners.update({k: (lambda rt=rt: rt.run(x)) for k, rt in sessions.items()})
    runners[f"OpenVINO FP32 IR ({bf16.execution_precision})"] = lambda: bf16.run({name: x})
    per_round = interleaved(runners, args.rounds, args.runs, args.warmup)
    p50 = {k: float(np.median(v)) for k, v in per_round.items()}
    bf16_name = list(runners)[-1]
    ratios = {
        "OpenVINO FP32 vs torch eager": ratio(per_round, "torch eager FP32", "OpenVINO FP32 (f32)"),
        "OpenVINO FP32 vs ONNX Runtime FP32": ratio(per_round, "ONNX Runtime FP32", "OpenVINO FP32 (f32)"),
        "OpenVINO INT8 vs OpenVINO FP32": ratio(per_round, "OpenVINO FP32 (f32)", "OpenVINO INT8"),
        "OpenVINO INT8 vs ONNX Runtime INT8": ratio(per_round, "ONNX Runtime INT8", "OpenVINO INT8"),
        f"{bf16_name} vs OpenVINO FP32 (f32)": ratio(per_round, "OpenVINO FP32 (f32)", bf16_name),
    }

    with torch.no_grad():
        ref = np.concatenate([model(torch.from_numpy(v)).numpy() for v in views])
    outputs = {k: np.concatenate([rt.run(v) for v in views]) for k, rt in sessions.items()}
    outputs[bf16_name] = np.concatenate([bf16.run({name: v})[0] for v in views])
    accuracy = {k: dict(zip(("top1_agreement", "mean_cosine"), agreement(ref, out))) for k, out in outputs.items()}
    max_abs = float(np.abs(outputs["OpenVINO FP32 (f32)"] - ref).max())

    print(f"EfficientNet-Lite0, batch 1, {args.threads} threads, {args.rounds} interleaved rounds x {args.runs} runs; "
          f"agreement with torch FP32 on {len(views)} views of photos 50-99")
    print(f"{'runner':34s} {'p50 ms':>8s} {'top-1 agree':>12s} {'cosine':>8s}")
    for k in runners:
        acc = accuracy.get(k)
        tail = f" {acc['top1_agreement']:12.1%} {acc['mean_cosine']:8.4f}" if acc else f" {'100% (ref)':>12s}"
        print(f"{k:34s} {p50[k]:8.2f}{tail}")
    print_ratios(ratios)
    print(f"OpenVINO FP32 (f32) max abs error vs torch over the 250 views: {max_abs:.2e}")
    save_json(args.json_path, args, p50_ms=p50, per_round_ms=per_round, ratios=ratios, accuracy=accuracy,
              fp32_max_abs=max_abs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
