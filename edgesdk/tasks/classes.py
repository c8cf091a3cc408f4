"""Turning class scores into answers: softmax when the model gives logits, top-k with labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def top_k(scores: np.ndarray, k: int = 5, labels: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Top-k classes of one row of class scores (softmax applied first when they are logits)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        from ..core.errors import UsageError

        raise UsageError(f"top-k must be a whole number of at least 1, not {k!r}.")
    row = np.asarray(scores, np.float64).ravel()
    if not (row.min() >= 0 and abs(row.sum() - 1) < 1e-3):
        e = np.exp(row - row.max())
        row = e / e.sum()
    idx = np.argsort(-row)[:k]
    return [{"class": int(i), "label": labels[i] if labels and i < len(labels) else str(int(i)),
             "score": float(row[i])} for i in idx]
