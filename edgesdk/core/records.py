"""The typed records a manifest keeps per artifact: its parity with the source, how it was quantized,
and how its tensors differ from the source's. Each serializes to the JSON the manifest schema
(manifest.schema.json) describes, leaving out what is unknown, and reads back from it."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


def _plain(record: Any) -> dict[str, Any]:
    """A record's fields as JSON values, without the unset ones (None, empty lists and dicts)."""
    out: dict[str, Any] = {}
    for f in fields(record):
        value = getattr(record, f.name)
        if hasattr(value, "to_dict"):
            value = value.to_dict()
        elif isinstance(value, list):
            value = [v.to_dict() if hasattr(v, "to_dict") else v for v in value]
        if value is not None and value != [] and value != {}:
            out[f.name] = value
    return out


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


class _Record:
    """JSON in and out for a record whose fields are plain values (or records with their own to_dict)."""

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        return cls(**_known(cls, data))


@dataclass
class OutputParity(_Record):
    """Error figures of one output over the parity samples."""

    name: str
    max_abs: float = 0.0
    mean_abs: float = 0.0
    cosine: float = 1.0
    reference_max_abs: float = 0.0


@dataclass
class DetectionMatch(_Record):
    """A detector's decoded detections matched to the source's (same class, IoU >= iou)."""

    recall: float
    precision: float
    reference_detections: int = 0
    candidate_detections: int = 0
    iou: float = 0.5


@dataclass
class Parity(_Record):
    """How close an artifact's outputs came to the source's, or why that was never measured.

    `measured` False means nobody checked the artifact (no backend for it was installed): it is never
    picked automatically. `problems` lists what broke the contract (missing outputs, wrong shapes,
    NaN); an artifact with problems is never picked either."""

    measured: bool = False
    reason: str | None = None
    samples: int = 0
    max_abs: float | None = None
    mean_abs: float | None = None
    cosine: float | None = None
    reference_max_abs: float | None = None
    outputs: list[OutputParity] = field(default_factory=list)
    top1_agreement: float | None = None
    top5_overlap: float | None = None
    detection: DetectionMatch | None = None
    problems: list[str] = field(default_factory=list)
    data: str | None = None  # where the feeds came from
    backend: str | None = None  # which backend ran the artifact for the check
    arch: str | None = None  # the CPU architecture it was measured on (int8 kernels differ between them)

    def to_dict(self) -> dict[str, Any]:
        out = _plain(self)
        out["measured"] = self.measured
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Parity:
        if not data:
            return cls(reason="no parity recorded")
        kw = _known(cls, data)
        kw["outputs"] = [OutputParity.from_dict(o) for o in data.get("outputs") or []]
        kw["detection"] = DetectionMatch.from_dict(data["detection"]) if data.get("detection") else None
        kw["problems"] = list(data.get("problems") or [])
        return cls(**kw)


def not_measured(reason: str) -> Parity:
    """The parity record of an artifact no installed backend could run."""
    return Parity(measured=False, reason=reason)


#: Where in a conversion a (target, precision) failed: its export from the source, its own conversion,
#: its check against the source, or a crash (or hang) of the backend that ran it.
FAILURE_STAGES = ("export", "convert", "parity", "crash")


@dataclass
class Failure(_Record):
    """A (target, precision) asked for that is not in the bundle, and why."""

    target: str
    precision: str
    stage: str
    reason: str
    hint: str | None = None

    @property
    def id(self) -> str:
        return f"{self.target}-{self.precision}"

    def describe(self) -> str:
        return f"{self.id} failed at {self.stage}: {self.reason}" + (f" ({self.hint})" if self.hint else "")


@dataclass
class Quantization(_Record):
    """How a reduced-precision artifact was made. The common facts are typed; what only one converter
    knows (TFLite's layer sensitivity, NNCF's overflow fix, TensorRT's build) lives in `details`."""

    method: str | None = None
    weights: str | None = None
    activations: str | None = None
    calibration: str | None = None
    calibration_samples: int | None = None
    calibration_source: str | None = None
    float_nodes: list[str] = field(default_factory=list)  # nodes or layers kept in float
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Quantization:
        data = dict(data or {})
        kw = _known(cls, data)
        kw["details"] = {**data.get("details", {}), **{k: v for k, v in data.items() if k not in kw and k != "details"}}
        kw["float_nodes"] = list(kw.get("float_nodes") or [])
        return cls(**kw)


@dataclass
class ArtifactIO(_Record):
    """How an artifact's tensors differ from the source's. `inputs`/`outputs`: per tensor, None (same
    layout) or the permutation taking a source-layout array to the artifact's (NCHW -> NHWC is
    [0, 2, 3, 1]). `input_names`/`output_names`: the artifact's own names in the source's order, where
    its converter renamed them (onnx2tf's 'output' -> 'output_0')."""

    inputs: list[list[int] | None] = field(default_factory=list)
    outputs: list[list[int] | None] = field(default_factory=list)
    input_names: list[str] | None = None
    output_names: list[str] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ArtifactIO:
        kw = _known(cls, data or {})
        for key in ("inputs", "outputs"):
            kw[key] = list(kw.get(key) or [])
        return cls(**kw)

    @property
    def permutes(self) -> bool:
        """Whether any tensor changes layout between the source and the artifact."""
        return any(p is not None for p in [*self.inputs, *self.outputs])


@dataclass(frozen=True)
class Tolerance:
    """What 'within tolerance' means. FP32 artifacts must match closely; reduced precisions are judged
    by top-1 agreement (classifiers), detection recall and precision (detectors), else by the lowest
    cosine similarity over the outputs."""

    fp32_max_abs: float = 1e-4
    # A deep graph's float32 summation order differs between runtimes (fused attention, other reductions):
    # an FP32 artifact up to fp32_noise_factor x the limit still passes when every output's cosine is at
    # least fp32_min_cosine (Optimum allows 1e-3 for Whisper; a conversion bug moves the cosine far more).
    fp32_noise_factor: float = 10.0
    fp32_min_cosine: float = 0.999999
    min_top1_agreement: float = 0.97
    min_cosine: float = 0.99
    min_detection_recall: float = 0.9
    min_detection_precision: float = 0.9

    def accepts(self, precision: str, parity: Parity) -> tuple[bool, str]:
        """(ok, reason) for an artifact's recorded parity. Parity that was never measured is not ok:
        an artifact nobody checked is never picked automatically."""
        if not parity.measured:
            return False, "parity not measured" + (f" ({parity.reason})" if parity.reason else "")
        if parity.problems:
            return False, "; ".join(parity.problems)
        if precision == "fp32":
            # Absolute for outputs within +-1 (scores, logits); relative to the output's magnitude beyond
            # (a detector's boxes are pixels, where float32 rounding alone is ~1e-5).
            err = parity.max_abs or 0.0
            limit = self.fp32_max_abs * max(1.0, float(parity.reference_max_abs or 1.0))
            cos = min([o.cosine for o in parity.outputs] or [1.0 if parity.cosine is None else parity.cosine])
            if limit < err <= self.fp32_noise_factor * limit and cos >= self.fp32_min_cosine:
                return True, (f"max abs error {err:.2e} (limit {limit:.1e}, within {self.fp32_noise_factor:g}x as "
                              f"every output's cosine is {cos:.7f}: float32 rounding in a deep graph)")
            return err <= limit, f"max abs error {err:.2e} (limit {limit:.1e})"
        if parity.detection is not None:
            det = parity.detection
            ok = det.recall >= self.min_detection_recall and det.precision >= self.min_detection_precision
            return ok, (f"detections: recall {det.recall:.1%}, precision {det.precision:.1%} vs the source's "
                        f"(minimum {self.min_detection_recall:.0%} / {self.min_detection_precision:.0%})")
        if parity.top1_agreement is not None:
            agree = parity.top1_agreement
            return agree >= self.min_top1_agreement, (
                f"top-1 agreement {agree:.1%} (minimum {self.min_top1_agreement:.0%})")
        per_output = [o.cosine for o in parity.outputs] or [1.0 if parity.cosine is None else parity.cosine]
        cos = min(per_output)
        return cos >= self.min_cosine, f"lowest output cosine similarity {cos:.4f} (minimum {self.min_cosine})"
