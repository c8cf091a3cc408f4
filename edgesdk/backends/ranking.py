"""The selection policy: every (backend, artifact) pair a bundle and machine allow, best first (tiers per
device class, then what was measured here, then precision preference), and why each other pair was left out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..core.errors import BackendUnavailable, ModelLoadError
from .base import Backend
from .registry import backends, get_backend

if TYPE_CHECKING:
    from ..core.bundle import Artifact, Bundle
    from ..core.hardware import HardwareProfile
    from ..core.records import Tolerance


@dataclass
class Candidate:
    """One (backend, artifact) pair the Runtime may load, in ranked order."""

    backend: Backend
    artifact: Artifact
    why: str = ""


@dataclass
class Ranking:
    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one line per excluded pair, with the reason


def rank(
    bundle: Bundle,
    tolerance: Tolerance,
    backend: str = "auto",
    precision: str = "auto",
    artifact: str | None = None,
    profile: HardwareProfile | None = None,
    measured: dict[tuple[str, str], float] | None = None,
) -> Ranking:
    """Order every (backend, artifact) pair this bundle and machine allow, best first.

    The device class decides the tiers: Jetson/NVIDIA put TensorRT first, then ONNX Runtime (CUDA or
    TensorRT providers where installed); x86 puts OpenVINO and ONNX Runtime in one tier, ordered by
    what was measured faster here; ARM boards and phones put TFLite (XNNPACK) first, then ONNX Runtime.
    Within a tier, pairs timed on this machine (at conversion, or `measured` by autotune) go fastest
    first, the rest by precision preference. precision="auto" keeps only artifacts whose recorded
    parity is within tolerance; a forced artifact or precision skips that filter: the user asked."""
    from ..core.hardware import read_profile

    profile = profile or read_profile()
    ranking = Ranking()
    pool = _artifact_pool(bundle, tolerance, precision, artifact, ranking.skipped)
    pairs = _runnable_pairs(pool, backend, ranking.skipped)
    if artifact is None and precision == "auto":
        pairs = [c for c in pairs if _parity_applies(c, profile, ranking.skipped)]
    timing = _Timing(profile, measured)
    for c in sorted(pairs, key=timing.key):
        ms, where = timing.ms(c)
        tier = f"tier {timing.device_rank(c) // 10} on {profile.device}"
        c.why = (f"{tier}; {ms:.2f} ms {where}" if ms is not None
                 else f"{tier}; not timed here, {c.backend.name} prefers {' > '.join(c.backend.precision_preference)}")
        if c.artifact.parity.arch and c.artifact.parity.arch != profile.arch:
            c.why += f"; its parity was measured on {c.artifact.parity.arch}, not here ({profile.arch})"
        ranking.candidates.append(c)
    if not ranking.candidates:
        detail = "; ".join(ranking.skipped) or "no artifact matches"
        hint = (" To run an artifact outside tolerance anyway, name it: precision='int8' or artifact='...'."
                if any("parity outside tolerance" in s or "parity not measured" in s for s in ranking.skipped) else "")
        raise BackendUnavailable(f"No backend can run any artifact of {bundle.path}: {detail}.{hint}")
    return ranking


def _artifact_pool(bundle: Bundle, tolerance: Tolerance, precision: str, artifact: str | None,
                   skipped: list[str]) -> list[Artifact]:
    """The artifacts the ranking may use: the one named, those of the precision named, or (auto) those
    whose recorded parity is within tolerance; the rest go to skipped with the reason."""
    if artifact is not None:
        return [bundle.artifact(artifact)]
    if precision != "auto":
        pool = [a for a in bundle.artifacts if a.precision == precision]
        if not pool:
            raise ModelLoadError(f"Bundle {bundle.path} has no {precision} artifact; it has "
                                 f"{', '.join(a.id for a in bundle.artifacts)}.")
        return pool
    kept = []
    for a in bundle.artifacts:
        ok, why = tolerance.accepts(a.precision, a.parity)
        if ok:
            kept.append(a)
        elif why.startswith("parity not measured"):
            skipped.append(f"{a.id}: {why}; only a forced precision or artifact runs it")
        else:
            skipped.append(f"{a.id}: parity outside tolerance, {why}")
    return kept


def _runnable_pairs(pool: list[Artifact], backend: str, skipped: list[str]) -> list[Candidate]:
    """Every (installed backend, artifact) pair where the backend runs the artifact's format."""
    names = [b.name for b in backends()] if backend == "auto" else [get_backend(backend).name]
    pairs: list[Candidate] = []
    for a in pool:
        for b in (get_backend(n) for n in names):
            if a.format not in b.formats:
                continue
            ok, why = b.available()
            if ok:
                pairs.append(Candidate(b, a))
            else:
                skipped.append(f"{a.id} on {b.name}: {why}")
    return pairs


def _parity_applies(c: Candidate, profile: HardwareProfile, skipped: list[str]) -> bool:
    """Whether a reduced-precision artifact's recorded parity speaks for this pair here. Integer kernels
    differ between architectures and backends: on an architecture other than the one parity was
    measured on, only the backend that measured it is trusted (make arm-check found ONNX QDQ INT8 on
    OpenVINO losing 2 points of top-1 on ARM where ONNX Runtime kept the x86 figure)."""
    parity = c.artifact.parity
    if c.artifact.precision == "fp32" or not parity.arch or parity.arch == profile.arch:
        return True
    if (parity.backend or "").split(" ")[0] == c.backend.name:
        return True
    skipped.append(f"{c.artifact.id} on {c.backend.name}: its {c.artifact.precision} parity was measured on "
                   f"{parity.backend} on {parity.arch}, not on {c.backend.name} on {profile.arch}")
    return False


class _Timing:
    """The ranking's sort key: tier on this device, then measured here (autotune's own figures, else
    conversion-time ones from this machine) fastest first, then precision preference."""

    def __init__(self, profile: HardwareProfile, measured: dict[tuple[str, str], float] | None):
        self.profile, self.measured = profile, measured

    def ms(self, c: Candidate) -> tuple[float | None, str]:
        if self.measured is not None:  # autotune's figures alone: never mixed with timings taken at another time
            ms = self.measured.get((c.backend.name, c.artifact.id))
            return (ms, "measured here by autotune") if ms is not None else (None, "")
        if c.artifact.measured_on != self.profile.machine_id:
            return None, ""
        return c.artifact.latency_ms.get(c.backend.name), "measured here at conversion"

    def device_rank(self, c: Candidate) -> int:
        return c.backend.device_rank.get(self.profile.device, 99)

    def key(self, c: Candidate) -> tuple[int, bool, float, int, int]:
        ms, _ = self.ms(c)
        pref = c.backend.precision_preference
        order = pref.index(c.artifact.precision) if c.artifact.precision in pref else len(pref)
        return (self.device_rank(c) // 10, ms is None, ms or 0.0, order, self.device_rank(c))
