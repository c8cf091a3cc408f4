"""Bars that sampling error cannot cross. An agreement figure measured on n samples moves by a few samples
between CPUs (XNNPACK, oneDNN and OpenVINO take other ISA paths) and runs; a test that asserts it near its
own value flips. A test's bar for a rate sits below the 95% Wilson interval of the lowest figure measured
here, so a working recipe does not fall under it by chance and a collapsed one does; the figure itself is
reported by the benchmarks (benchmarks/compare_*.py) and the closing notes, not asserted."""

from __future__ import annotations

from edgesdk.measuring.accuracy import wilson_interval


def below_noise(bar: float, lowest_seen: float, n: int) -> float:
    """`bar`, after checking that it sits under the 95% Wilson interval of `lowest_seen` at n samples."""
    low, high = wilson_interval(round(lowest_seen * n), n)
    assert bar < low, f"bar {bar} lies inside the 95% interval [{low:.3f}, {high:.3f}] of {lowest_seen} at n={n}"
    return bar


def cosine(a, b) -> float:
    """Cosine similarity of two output arrays, flattened."""
    import numpy as np

    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


#: The tiny test CNN's logits sit within 0.001-0.02 of each other (its top-1/top-2 margins): its argmax is a
#: near-tie that INT8 rounding flips on one input in eight without anything being wrong (cosine 0.9999).
#: Its reduced precisions are judged on the logits: cosine >= 0.99 leaves 100x the 1 - cosine measured here.
TINY_MIN_COSINE = 0.99
