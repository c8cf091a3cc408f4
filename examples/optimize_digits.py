"""Worked example of edgesdk.optimize on real labels: scikit-learn's handwritten digits (8x8, 10 classes).

    python -m examples.optimize_digits [--json build/optimize_digits.json]

A CNN is trained, then each technique is applied and the result exported to ONNX and measured the same
way: parameters, FLOPs, ONNX file size, ONNX Runtime latency (p50, batch 1, 1 thread) and accuracy on the
held-out 597 digits. Rows: baseline; structured pruning 30/50/70% (fine-tuned); Conv+BN fused; a small
student distilled from the baseline (100 labels + 1100 unlabelled digits) next to the same student
trained on the 100 labels alone; post-training INT8 (edgesdk.convert); quantization-aware INT8."""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

import edgesdk
from edgesdk.optimize import (
    distill,
    export_qat_onnx,
    fine_tune,
    fuse_conv_bn,
    measure_cost,
    prepare_qat,
    prune_channels,
    train_qat,
)
from edgesdk.running.timing import percentiles, time_runs

X_SHAPE = (1, 1, 8, 8)


def data() -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, *X_SHAPE[1:])
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1200], order[1200:]
    return tuple(torch.from_numpy(a) for a in (x[train], y[train], x[test], y[test]))


def batches(x: torch.Tensor, y: torch.Tensor, size: int = 64):
    state = {"epoch": 0}

    def epoch():
        g = torch.Generator().manual_seed(state["epoch"])
        state["epoch"] += 1
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(perm), size):
            yield x[perm[i:i + size]], y[perm[i:i + size]]
    return epoch


def baseline_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    c = torch.nn
    return c.Sequential(c.Conv2d(1, 32, 3, padding=1, bias=False), c.BatchNorm2d(32), c.ReLU(),
                        c.Conv2d(32, 64, 3, padding=1, bias=False), c.BatchNorm2d(64), c.ReLU(),
                        c.Conv2d(64, 64, 3, padding=1, bias=False), c.BatchNorm2d(64), c.ReLU(),
                        c.AdaptiveAvgPool2d(2), c.Flatten(), c.Linear(256, 10))


def student_mlp() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))


def measure(name: str, onnx_path: Path, model: torch.nn.Module | None, xte: torch.Tensor, yte: torch.Tensor,
            precision: str = "fp32") -> dict[str, Any]:
    """Accuracy and latency of an ONNX file on ONNX Runtime; params and FLOPs of the torch model."""
    with edgesdk.Runtime(onnx_path, backend="onnxruntime", threads=1) as rt:
        correct = sum(int(rt.run(xte[i:i + 1].numpy()).argmax() == int(yte[i])) for i in range(len(xte)))
        x = xte[:1].numpy()
        lat = percentiles(time_runs(lambda: rt.run(x), 300, 30))
    prof = measure_cost(model, torch.zeros(X_SHAPE)) if model is not None else None
    return {"model": name, "precision": precision, "params": prof.params if prof else None,
            "flops": prof.flops if prof else None, "onnx_bytes": onnx_path.stat().st_size,
            "p50_ms": lat["p50"], "accuracy": correct / len(xte)}


def onnx_of(model: torch.nn.Module, folder: Path, calib: torch.Tensor | None = None) -> dict[str, Path]:
    precisions = ["fp32", "int8"] if calib is not None else ["fp32"]
    bundle = edgesdk.convert(model, torch.zeros(X_SHAPE), precisions=precisions, out=folder,
                             calib=calib.numpy() if calib is not None else None)
    return {a.precision: bundle.path / a.file for a in bundle.artifacts}


def run(epochs: int = 12, qat_epochs: int = 3, out: Path | None = None) -> list[dict[str, Any]]:
    xtr, ytr, xte, yte = data()
    work = Path(out or tempfile.mkdtemp(prefix="edgesdk-digits-"))
    rows = []
    base = fine_tune(baseline_cnn(), batches(xtr, ytr), epochs=epochs, lr=3e-3)
    files = onnx_of(base, work / "baseline", calib=xtr[:200])
    rows.append(measure("baseline CNN", files["fp32"], base, xte, yte))
    for ratio in (0.3, 0.5, 0.7):
        pruned = prune_channels(copy.deepcopy(base), torch.zeros(X_SHAPE), ratio=ratio)
        fine_tune(pruned, batches(xtr, ytr), epochs=max(2, epochs // 3), lr=1e-3)
        rows.append(measure(f"pruned {ratio:.0%} (structured, fine-tuned)",
                            onnx_of(pruned, work / f"pruned{int(ratio * 100)}")["fp32"], pruned, xte, yte))
    fused, _ = fuse_conv_bn(copy.deepcopy(base), torch.zeros(X_SHAPE))
    rows.append(measure("fused Conv+BN", onnx_of(fused, work / "fused")["fp32"], fused, xte, yte))
    partly = ytr.clone()
    partly[100:] = -1
    alone = fine_tune(student_mlp(), batches(xtr[:100], ytr[:100]), epochs=40, lr=3e-3)
    rows.append(measure("student alone (100 labels)", onnx_of(alone, work / "alone")["fp32"], alone, xte, yte))
    taught = distill(student_mlp(), base, batches(xtr, partly), epochs=40, lr=3e-3, progress=False)
    rows.append(measure("student distilled (+1100 unlabelled)", onnx_of(taught, work / "taught")["fp32"], taught,
                        xte, yte))
    rows.append(measure("PTQ INT8 (edgesdk.convert)", files["int8"], base, xte, yte, "int8"))
    prepared = train_qat(prepare_qat(copy.deepcopy(base), torch.zeros(X_SHAPE)), batches(xtr, ytr),
                         epochs=qat_epochs, lr=1e-4)
    qat_path = export_qat_onnx(prepared, torch.zeros(X_SHAPE), work / "qat.int8.onnx")
    rows.append(measure("QAT INT8", qat_path, base, xte, yte, "int8"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args(argv)
    rows = run(args.epochs)
    print(f"{'model':40s} {'prec':>5s} {'params':>8s} {'kFLOPs':>8s} {'ONNX KB':>8s} {'p50 ms':>7s} {'accuracy':>8s}")
    for r in rows:
        print(f"{r['model']:40s} {r['precision']:>5s} {r['params'] or 0:8,d} {(r['flops'] or 0) / 1e3:8.1f} "
              f"{r['onnx_bytes'] / 1e3:8.1f} {r['p50_ms']:7.4f} {r['accuracy']:8.2%}")
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
