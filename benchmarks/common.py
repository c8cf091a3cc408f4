"""What the comparison scripts share: interleaved timing rounds and the held-out photo views."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.timing import interleaved_rounds


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
    from edgesdk import zoo
    from edgesdk.images import preprocess_image

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
    from edgesdk import zoo

    calib, evaluation = zoo.split_photos(Path("build/photos"))
    edgesdk.convert(zoo.efficientnet_lite0(), torch.randn(1, 3, 224, 224), targets=targets,
                    precisions=["fp32", "int8"], calib=calib, validation=evaluation, out=bundle_dir)
