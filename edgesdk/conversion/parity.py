"""How close an artifact's outputs are to the source model's, and whether that is close enough.

The judgement is task-aware: a classifier keeps its top-1 answer, a detector keeps its detections
(decoded and matched to the source's at IoU >= 0.5 with the same class: a cosine over raw YOLO outputs
is dominated by box pixels and stays near 1 with every class score zeroed), any other model keeps every
output's cosine. Whatever the task, a non-finite output, a missing output or one of another shape or
name is a problem, and every problem found is reported together."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.records import DetectionMatch, OutputParity, Parity, Tolerance, not_measured

__all__ = ["TASKS", "Tolerance", "compare", "is_class_scores", "match_detections", "not_measured"]

#: Tasks the parity check knows; anything else is judged on every output's cosine.
TASKS = ("classification", "detection", "other")
DETECTION_IOU = 0.5
DETECTION_CONF = 0.25


def is_class_scores(output: np.ndarray) -> bool:
    """A 2-D [batch, classes] output with more than one class: class scores or logits."""
    return output.ndim == 2 and output.shape[1] > 1


def _cosine(r: np.ndarray, c: np.ndarray) -> float:
    denom = np.linalg.norm(r) * np.linalg.norm(c)
    return float((r.ravel() @ c.ravel()) / denom) if denom else float(np.array_equal(r, c))


class _OutputStats:
    """Running error figures of one output over the samples."""

    def __init__(self, name: str):
        self.name, self.max_abs, self.abs_sum, self.count, self.ref_max = name, 0.0, 0.0, 0, 0.0
        self.cosines: list[float] = []
        self.nonfinite = 0

    def add(self, r: np.ndarray, c: np.ndarray) -> None:
        finite = np.isfinite(c)
        self.nonfinite += int(c.size - np.count_nonzero(finite))
        c = np.where(finite, c, 0.0)
        diff = np.abs(r - c)
        self.max_abs = max(self.max_abs, float(diff.max(initial=0.0)))
        self.ref_max = max(self.ref_max, float(np.abs(r).max(initial=0.0)))
        self.abs_sum += float(diff.sum())
        self.count += diff.size
        self.cosines.append(_cosine(r, c))

    def record(self) -> OutputParity:
        return OutputParity(self.name, self.max_abs, self.abs_sum / max(self.count, 1),
                            float(np.mean(self.cosines)) if self.cosines else 1.0, self.ref_max)


def compare(reference: Sequence[Sequence[np.ndarray]], candidate: Sequence[Sequence[np.ndarray]],
            names: Sequence[str] | None = None, task: str | None = None,
            num_classes: int | None = None) -> Parity:
    """Compare per-sample output lists. Returns overall and per-output max/mean abs error and cosine,
    top-1 agreement and top-5 overlap over the first output when it holds class scores, detection
    recall/precision for task="detection", and `problems`: every count, shape or non-finite mismatch."""
    n_out = len(reference[0]) if len(reference) else 0
    names = list(names) if names else [f"output {i}" for i in range(n_out)]
    stats = [_OutputStats(n) for n in names[:n_out]]
    problems: list[str] = []
    if len(candidate) != len(reference):
        problems.append(f"{len(candidate)} result(s) for {len(reference)} samples")
    misshapen: set[int] = set()  # outputs already reported with a wrong shape: the others are still checked
    for ref_outs, cand_outs in zip(reference, candidate):
        if len(cand_outs) != len(ref_outs):
            problems.append(f"{len(cand_outs)} output(s) where the source has {len(ref_outs)}")
            break
        for i, (st, r, c) in enumerate(zip(stats, ref_outs, cand_outs)):
            r64, c64 = np.asarray(r, np.float64), np.asarray(c, np.float64)
            if r64.shape != c64.shape:
                if i not in misshapen:
                    misshapen.add(i)
                    problems.append(f"output '{st.name}' has shape {list(c64.shape)}; the source's is "
                                    f"{list(r64.shape)}")
                continue
            st.add(r64, c64)
    problems += [f"output '{st.name}' has {st.nonfinite} NaN or infinite values" for st in stats if st.nonfinite]
    result = _result(reference, stats, problems)
    if problems or not stats:
        return result
    first_ref = [np.asarray(outs[0], np.float64) for outs in reference]
    first_cand = [np.asarray(outs[0], np.float64) for outs in candidate]
    if task == "detection" and first_ref[0].ndim == 3:
        result.detection = match_detections(first_ref, first_cand, num_classes)
    elif task in (None, "classification") and is_class_scores(first_ref[0]):
        result.top1_agreement, result.top5_overlap = _agreement(first_ref, first_cand)
    return result


def _result(reference: Sequence[Any], stats: list[_OutputStats], problems: list[str]) -> Parity:
    per_output = [st.record() for st in stats]
    cosines = [c for st in stats for c in st.cosines]
    return Parity(
        measured=True,
        samples=len(reference),
        max_abs=max((o.max_abs for o in per_output), default=0.0),
        mean_abs=sum(st.abs_sum for st in stats) / max(sum(st.count for st in stats), 1),
        cosine=float(np.mean(cosines)) if cosines else 1.0,
        reference_max_abs=max((o.reference_max_abs for o in per_output), default=0.0),
        outputs=per_output,
        problems=problems,
    )


def _agreement(reference: list[np.ndarray], candidate: list[np.ndarray]) -> tuple[float | None, float | None]:
    """(top-1 agreement, mean top-5 overlap) over every sample's class scores; None when there are none."""
    top1, top5, scored = 0, 0.0, 0
    for r, c in zip(reference, candidate):
        for rr, cc in zip(r, c):
            scored += 1
            top1 += int(rr.argmax() == cc.argmax())
            k = min(5, rr.size)
            top5 += len(set(np.argsort(-rr)[:k]) & set(np.argsort(-cc)[:k])) / k
    return (top1 / scored, top5 / scored) if scored else (None, None)


def match_detections(reference: list[np.ndarray], candidate: list[np.ndarray],
                     num_classes: int | None = None) -> DetectionMatch:
    """Decode both sides' raw YOLO outputs (edgesdk.tasks.yolo), then match each candidate detection to an
    unmatched source detection of the same class at IoU >= 0.5, best score first. Recall: the share of
    the source's detections found; precision: the share of the candidate's that match one."""
    from ..tasks.yolo import iou, postprocess

    found = ref_total = cand_total = 0
    for r, c in zip(reference, candidate):
        for i in range(r.shape[0]):
            ref = postprocess(r[i:i + 1], num_classes=num_classes, conf_threshold=DETECTION_CONF)
            cand = postprocess(c[i:i + 1], num_classes=num_classes, conf_threshold=DETECTION_CONF)
            ref_total += len(ref["boxes"])
            cand_total += len(cand["boxes"])
            free = np.ones(len(ref["boxes"]), bool)
            for box, cls in zip(cand["boxes"], cand["classes"]):  # postprocess returns best first
                same = free & (ref["classes"] == cls)
                if not same.any():
                    continue
                overlaps = np.where(same, iou(box, ref["boxes"]), -1.0)
                j = int(overlaps.argmax())
                if overlaps[j] >= DETECTION_IOU:
                    free[j] = False
                    found += 1
    return DetectionMatch(recall=found / ref_total if ref_total else float(cand_total == 0),
                          precision=found / cand_total if cand_total else float(ref_total == 0),
                          reference_detections=ref_total, candidate_detections=cand_total, iou=DETECTION_IOU)
