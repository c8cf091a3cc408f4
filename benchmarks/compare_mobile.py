"""The mobile runtimes side by side on EfficientNet-Lite0, in one run: ONNX Runtime FP32/INT8 and TFLite
FP32/INT8 (the demo bundle), ExecuTorch, MNN and NCNN FP32/INT8 (a bundle of the three, built if
missing), each through edgesdk.Runtime with the same threads and input, in interleaved rounds.
Accuracy: top-1 agreement with torch FP32 on photos 50-99 (centre + 4 corner crops = 250 views).

    python benchmarks/compare_mobile.py [--bundle build/effnet] [--mobile build/effnet-mobile] [--threads 2]

NCNN INT8 needs ncnn2table and ncnn2int8 (EDGESDK_NCNN_TOOLS or PATH); without them the row is left out
and the reason printed. x86 figures say nothing about a phone's or a Pi's ranking: run it there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

MOBILE = ("executorch", "mnn", "ncnn")


def build_mobile(folder: Path) -> list[str]:
    """The three formats' FP32 and INT8 (calibrated on photos 0-49, parity on 50-99); what was left out."""
    import torch

    import edgesdk
    from edgesdk.conversion.formats.ncnn import int8_tools
    from edgesdk.core.errors import BackendUnavailable
    from edgesdk.models import zoo

    left_out = []
    precisions = {t: ["fp32", "int8"] for t in MOBILE}
    try:
        int8_tools()
    except BackendUnavailable as exc:
        precisions["ncnn"] = ["fp32"]
        left_out.append(f"ncnn-int8: {exc}")
    if not folder.exists():
        calib, evaluation = zoo.split_photos(Path("build/photos"))
        edgesdk.convert(zoo.efficientnet_lite0(), torch.zeros(1, 3, 224, 224), targets=list(MOBILE),
                        precisions=precisions, calib=calib, validation=evaluation, out=folder)
    return left_out


def main() -> int:
    from common import accuracy_vs, comparison_args

    args = comparison_args(__doc__, runs=30, extra={"--mobile": {"default": "build/effnet-mobile"}})

    from common import ensure_effnet_bundle, eval_views, interleaved, save_json

    import edgesdk
    from edgesdk.models import zoo

    ensure_effnet_bundle(Path(args.bundle), ["onnx", "openvino", "tflite"])
    left_out = build_mobile(Path(args.mobile))
    rows = [(args.bundle, "onnxruntime", f"onnx-{p}") for p in ("fp32", "int8")]
    rows += [(args.bundle, "tflite", f"tflite-{p}") for p in ("fp32", "int8")]
    mobile = edgesdk.load_bundle(args.mobile)
    rows += [(args.mobile, a.format, a.id) for a in sorted(mobile.artifacts, key=lambda a: a.id)]
    sessions = {f"{backend} {art}": edgesdk.Runtime(b, backend=backend, artifact=art, threads=args.threads)
                for b, backend, art in rows}
    views = eval_views(mobile.preprocess)
    x = views[0]
    per_round = interleaved({k: (lambda rt=rt: rt.run(x)) for k, rt in sessions.items()}, args.rounds, args.runs,
                            args.warmup)
    p50 = {k: float(np.median(v)) for k, v in per_round.items()}
    accuracy = accuracy_vs(zoo.efficientnet_lite0(), views,
                           {k: np.concatenate([rt.run(v) for v in views]) for k, rt in sessions.items()})
    for k, rt in sessions.items():
        accuracy[k]["size_mb"] = rt.artifact.size_bytes / 1e6
    base = float(np.median(per_round["onnxruntime onnx-fp32"]))
    print(f"EfficientNet-Lite0, batch 1, {args.threads} threads, {args.rounds} interleaved rounds x {args.runs} runs; "
          f"agreement with torch FP32 on {len(views)} views of photos 50-99")
    print(f"{'runner':28s} {'p50 ms':>8s} {'vs ORT FP32':>11s} {'top-1 agree':>12s} {'cosine':>8s} {'max abs':>9s} {'MB':>6s}")
    for k in sessions:
        a = accuracy[k]
        ratio = float(np.median(np.asarray(per_round[k]) / np.asarray(per_round["onnxruntime onnx-fp32"])))
        print(f"{k:28s} {p50[k]:8.2f} {ratio:10.2f}x {a['top1_agreement']:12.1%} {a['mean_cosine']:8.4f} "
              f"{a['max_abs']:9.2e} {a['size_mb']:6.2f}")
    for line in left_out:
        print(f"left out: {line}")
    save_json(args.json_path, args, p50_ms=p50, per_round_ms=per_round, accuracy=accuracy, ort_fp32_ms=base,
              left_out=left_out)
    for rt in sessions.values():
        rt.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
