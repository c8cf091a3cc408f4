"""What the comparison scripts share: their command line, interleaved timing rounds, the held-out photo
views, agreement figures, and how ratios and results are printed and saved."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.running.timing import interleaved_rounds


def interleaved(runners: dict[str, Callable[[], Any]], rounds: int, runs: int, warmup: int) -> dict[str, list[float]]:
    """Median ms of each runner per round. Rounds rotate the order so no runner always goes first; this
    machine's speed drifts by up to 1.6x between rounds, so compare runners within a round."""
    def report(r: int, per_round: dict[str, list[float]]) -> None:
        sys.stderr.write(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {v[-1]:.2f}" for n, v in per_round.items()) + "\n")

    return interleaved_rounds(runners, rounds, runs, warmup, report)


def ratio(per_round: dict[str, list[float]], slow: str, fast: str) -> float:
    """Median over rounds of slow/fast: how many times faster `fast` is."""
    return float(np.median(np.asarray(per_round[slow]) / np.asarray(per_round[fast])))


def eval_views(preprocess: Any) -> list[np.ndarray]:
    """Photos 50-99 (never used for calibration), centre + 4 corner crops: 250 inputs."""
    from edgesdk.core.images import preprocess_image
    from edgesdk.models import zoo

    photos = zoo.sample_photos()
    return [preprocess_image(p, preprocess, crop=c) for p in photos[50:] for c in ("c", "tl", "tr", "bl", "br")]


def agreement(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement, mean cosine) of got's logits with ref's."""
    cos = np.sum(ref * got, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    return float((ref.argmax(1) == got.argmax(1)).mean()), float(cos.mean())


def ensure_effnet_bundle(bundle_dir: Path, targets: list[str]) -> None:
    """Build the EfficientNet-Lite0 bundle `make demo` builds, if it is not there."""
    if bundle_dir.exists():
        return
    import torch

    import edgesdk
    from edgesdk.models import zoo

    calib, evaluation = zoo.split_photos(Path("build/photos"))
    edgesdk.convert(zoo.efficientnet_lite0(), torch.randn(1, 3, 224, 224), targets=targets,
                    precisions=["fp32", "int8"], calib=calib, validation=evaluation, out=bundle_dir)


def comparison_args(doc: str, bundle: str = "build/effnet", runs: int = 40,
                    extra: dict[str, dict[str, Any]] | None = None) -> argparse.Namespace:
    """The options every comparison takes (--bundle, --threads, --rounds, --runs, --warmup, --json), plus
    its own (extra: flag -> add_argument keywords)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--bundle", default=bundle)
    for flag, kwargs in (extra or {}).items():
        ap.add_argument(flag, **kwargs)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=runs)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", dest="json_path")
    return ap.parse_args()


def print_ratios(ratios: dict[str, float]) -> None:
    """'x vs y: 1.23x', or '+4.5%' for an overhead."""
    for k, v in ratios.items():
        print(f"{k}: {v:+.1%}" if "overhead" in k else f"{k}: {v:.2f}x")


def save_json(path: str | None, args: argparse.Namespace, **figures: Any) -> None:
    """The figures (and the thread count they were taken with) as JSON at path, when one is given."""
    if path:
        Path(path).write_text(json.dumps({**figures, "threads": args.threads}, indent=2))


def effnet_setup(args: argparse.Namespace, targets: list[str] | None = None) -> tuple[Any, list[np.ndarray], Any]:
    """What each EfficientNet-Lite0 comparison starts from: its bundle (built first when targets are
    given and it is missing), the 250 held-out views, and torch's model with args.threads threads."""
    import torch

    import edgesdk
    from edgesdk.models import zoo

    if targets:
        ensure_effnet_bundle(Path(args.bundle), targets)
    bundle = edgesdk.load_bundle(args.bundle)
    torch.set_num_threads(args.threads)
    return bundle, eval_views(bundle.preprocess), zoo.efficientnet_lite0()


def accuracy_vs(model: Any, views: list[np.ndarray], outputs: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Each runner's top-1 agreement, mean cosine and max abs error against torch's logits on the views."""
    import torch

    with torch.no_grad():
        ref = np.concatenate([model(torch.from_numpy(v)).numpy() for v in views])
    figures = {}
    for name, out in outputs.items():
        agree, cos = agreement(ref, out)
        figures[name] = {"top1_agreement": agree, "mean_cosine": cos, "max_abs": float(np.abs(out - ref).max())}
    return figures
