"""The backend registry and the selection policy.

Each module in this package defines one backend and exposes it as BACKEND; the registry finds them by
scanning the package, so adding a backend means adding a file. Heavy libraries are imported only when
a backend is used, so listing backends costs nothing."""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import BackendUnavailable, ModelLoadError
from ..specs import TensorSpec

if TYPE_CHECKING:
    from ..bundle import Artifact, Bundle
    from ..parity import Tolerance

log = logging.getLogger(__name__)


class Session(Protocol):
    """A loaded model on one backend: the smallest surface every backend implements."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...

    def close(self) -> None: ...

    # Optional, found with getattr:
    #   execution_precision: str  -- what the backend really computes in, where it can tell (OpenVINO).
    #   run_many(feeds_list) -> (outputs per batch, latency per batch in s) -- an asynchronous path.


class Backend:
    """Base class of a backend: say what it loads, whether it is installed, and open sessions."""

    name: str = ""
    formats: tuple[str, ...] = ()  # artifact formats it runs
    suffixes: dict[str, str] = {}  # file suffix -> format, for single model files
    module: str = ""  # the Python module it needs
    extra: str = ""  # the pip extra that installs it
    # Order of preference among precisions when no latency was measured on this machine.
    precision_preference: tuple[str, ...] = ("int8", "fp32", "fp16")
    priority: int = 50  # tie-break between backends when nothing was measured; lower goes first

    def available(self) -> tuple[bool, str]:
        """(True, version) or (False, why not)."""
        try:
            mod = importlib.import_module(self.module)
        except ImportError as exc:
            return False, f"'{self.module}' is not installed ({exc}); pip install 'edgesdk[{self.extra}]'"
        return True, getattr(mod, "__version__", "?")

    def require(self) -> None:
        ok, why = self.available()
        if not ok:
            raise BackendUnavailable(f"Backend '{self.name}' is unavailable: {why}")

    def open(self, path: Path, threads: int | None = None, **options: Any) -> Session:
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """Facts for `edgesdk doctor`: version and devices or providers."""
        ok, detail = self.available()
        return {"available": ok, "version" if ok else "reason": detail}


@lru_cache(maxsize=1)
def _registry() -> dict[str, Backend]:
    from ..registry import discover

    return discover(__name__, __path__, "BACKEND", Backend)


def backends() -> list[Backend]:
    return list(_registry().values())


def get_backend(name: str) -> Backend:
    try:
        return _registry()[name]
    except KeyError:
        raise BackendUnavailable(f"Unknown backend '{name}'. Known backends: {', '.join(_registry())}.") from None


def format_of_file(path: str | os.PathLike) -> str:
    """The artifact format of a single model file, from its suffix."""
    suffix = Path(path).suffix.lower()
    for b in backends():
        if suffix in b.suffixes:
            return b.suffixes[suffix]
    known = sorted({s for b in backends() for s in b.suffixes})
    raise ModelLoadError(f"Cannot tell which runtime loads '{Path(path).name}': known model file types are "
                         f"{', '.join(known)}, or a bundle folder made by `edgesdk convert`.")


def open_session(backend: str, path: Path, threads: int | None = None, **options: Any) -> Session:
    b = get_backend(backend)
    b.require()
    return b.open(Path(path), threads=threads, **options)


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
    machine_id: str | None = None,
) -> Ranking:
    """Order every (backend, artifact) pair this bundle and machine allow, best first.

    precision="auto" keeps only artifacts whose recorded parity is within tolerance, then orders the
    pairs timed on this machine (at conversion) fastest first, then the others by each backend's
    precision preference. A forced artifact or precision skips the parity filter: the user asked for it."""
    ranking = Ranking()
    pool = list(bundle.artifacts)
    if artifact is not None:
        pool = [bundle.artifact(artifact)]
    elif precision != "auto":
        pool = [a for a in pool if a.precision == precision]
        if not pool:
            raise ModelLoadError(f"Bundle {bundle.path} has no {precision} artifact; it has "
                                 f"{', '.join(a.id for a in bundle.artifacts)}.")
    else:
        kept = []
        for a in pool:
            ok, why = tolerance.accepts(a.precision, a.parity)
            if ok:
                kept.append(a)
            else:
                ranking.skipped.append(f"{a.id}: parity outside tolerance, {why}")
        pool = kept
    names = [b.name for b in backends()] if backend == "auto" else [get_backend(backend).name]
    pairs: list[Candidate] = []
    for a in pool:
        for name in names:
            b = get_backend(name)
            if a.format not in b.formats:
                continue
            ok, why = b.available()
            if not ok:
                ranking.skipped.append(f"{a.id} on {b.name}: {why}")
                continue
            pairs.append(Candidate(b, a))
    def measured_ms(c: Candidate) -> float | None:
        if c.artifact.measured_on != machine_id:
            return None
        return c.artifact.latency_ms.get(c.backend.name)

    def key(c: Candidate) -> tuple[int, float, int, int]:
        ms = measured_ms(c)
        pref = c.backend.precision_preference
        order = pref.index(c.artifact.precision) if c.artifact.precision in pref else len(pref)
        # Pairs timed on this machine first, fastest first; then the rest by preference.
        return (ms is None, ms or 0.0, order, c.backend.priority)

    for c in sorted(pairs, key=key):
        ms = measured_ms(c)
        c.why = (f"{ms:.2f} ms measured here at conversion" if ms is not None
                 else f"not timed here; {c.backend.name} prefers {' > '.join(c.backend.precision_preference)}")
        ranking.candidates.append(c)
    if not ranking.candidates:
        detail = "; ".join(ranking.skipped) or "no artifact matches"
        raise BackendUnavailable(f"No backend can run any artifact of {bundle.path}: {detail}")
    return ranking
