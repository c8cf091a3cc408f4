"""Timing, in one leaf module (numpy only): runs after warm-up, percentiles, and interleaved rounds.
bench, convert, autotune and the benchmark scripts all time with these, so their figures compare."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)


def time_runs(fn: Callable[[], Any], runs: int, warmup: int) -> list[float]:
    """Seconds per call of fn, for `runs` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def percentiles(times_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean/min in milliseconds."""
    ms = np.asarray(times_s) * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean()), "min": float(ms.min())}


def interleaved_rounds(runners: dict[K, Callable[[], Any]], rounds: int, runs: int, warmup: int,
                       on_round: Callable[[int, dict[K, list[float]]], None] | None = None) -> dict[K, list[float]]:
    """Median ms of each runner per round. Rounds rotate the order so no runner always goes first: a
    machine whose speed drifts (up to 1.6x between rounds here) is compared within a round, not across."""
    blocks = {k: (lambda fn=fn: float(np.median(time_runs(fn, runs, warmup))) * 1e3) for k, fn in runners.items()}
    return interleaved_blocks(blocks, rounds, on_round)


def interleaved_blocks(blocks: dict[K, Callable[[], float | None]], rounds: int,
                       on_round: Callable[[int, dict[K, list[float]]], None] | None = None) -> dict[K, list[float]]:
    """interleaved_rounds for callables that time a whole block themselves (in a child process, say) and
    return its median ms, or None when the block could not be timed (that key is then left out)."""
    names = list(blocks)
    per_round: dict[K, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        shift = r % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            ms = blocks[name]()
            if ms is None:
                names.remove(name)
                continue
            per_round[name].append(ms)
        if on_round is not None:
            on_round(r, per_round)
    return per_round
