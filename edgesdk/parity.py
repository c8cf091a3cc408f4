"""How close an artifact's outputs are to the source model's, and whether that is close enough."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """What 'within tolerance' means. FP32 artifacts must match closely; reduced precisions are judged
    by top-1 agreement where outputs are class scores, else by cosine similarity."""

    fp32_max_abs: float = 1e-4
    min_top1_agreement: float = 0.97
    min_cosine: float = 0.99

    def accepts(self, precision: str, parity: dict[str, Any]) -> tuple[bool, str]:
        """(ok, reason) for an artifact's recorded parity."""
        if not parity:
            return True, "no parity recorded"
        if precision == "fp32":
            # Absolute for outputs within +-1 (scores, logits); relative to the output's magnitude beyond
            # (a detector's boxes are pixels, where float32 rounding alone is ~1e-5).
            err = parity.get("max_abs", 0.0)
            limit = self.fp32_max_abs * max(1.0, float(parity.get("reference_max_abs", 1.0)))
            return err <= limit, f"max abs error {err:.2e} (limit {limit:.1e})"
        if "top1_agreement" in parity:
            agree = parity["top1_agreement"]
            return agree >= self.min_top1_agreement, (
                f"top-1 agreement {agree:.1%} (minimum {self.min_top1_agreement:.0%})")
        cos = parity.get("cosine", 1.0)
        return cos >= self.min_cosine, f"cosine similarity {cos:.4f} (minimum {self.min_cosine})"


def is_class_scores(output: np.ndarray) -> bool:
    """A 2-D [batch, classes] output with more than one class: class scores or logits."""
    return output.ndim == 2 and output.shape[1] > 1


def compare(reference: Sequence[Sequence[np.ndarray]], candidate: Sequence[Sequence[np.ndarray]]) -> dict[str, Any]:
    """Compare per-sample output lists. Returns max/mean abs error and cosine over all outputs, plus top-1
    agreement and top-5 overlap over the first output when it holds class scores."""
    max_abs, abs_sum, count, cosines, ref_max = 0.0, 0.0, 0, [], 0.0
    top1, top5, scored = 0, 0.0, 0
    for ref_outs, cand_outs in zip(reference, candidate):
        for i, (r, c) in enumerate(zip(ref_outs, cand_outs)):
            r64, c64 = np.asarray(r, np.float64), np.asarray(c, np.float64).reshape(np.shape(r))
            diff = np.abs(r64 - c64)
            max_abs = max(max_abs, float(diff.max(initial=0.0)))
            ref_max = max(ref_max, float(np.abs(r64).max(initial=0.0)))
            abs_sum += float(diff.sum())
            count += diff.size
            denom = np.linalg.norm(r64) * np.linalg.norm(c64)
            cosines.append(float((r64.ravel() @ c64.ravel()) / denom) if denom else float(np.array_equal(r64, c64)))
            if i == 0 and is_class_scores(r64):
                for rr, cc in zip(r64, c64):
                    scored += 1
                    top1 += int(rr.argmax() == cc.argmax())
                    k = min(5, rr.size)
                    top5 += len(set(np.argsort(-rr)[:k]) & set(np.argsort(-cc)[:k])) / k
    result: dict[str, Any] = {
        "samples": len(reference),
        "max_abs": max_abs,
        "mean_abs": abs_sum / max(count, 1),
        "cosine": float(np.mean(cosines)) if cosines else 1.0,
        "reference_max_abs": ref_max,
    }
    if scored:
        result["top1_agreement"] = top1 / scored
        result["top5_overlap"] = top5 / scored
    return result
