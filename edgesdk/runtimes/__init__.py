"""The backend registry and the selection policy.

Each module in this package defines one backend and exposes it as BACKEND; the registry finds them by
scanning the package, so adding a backend means adding a file. Heavy libraries are imported only when
a backend is used, so listing backends costs nothing."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import BackendUnavailable, EdgeSDKError, ModelLoadError, UsageError, first_line
from ..records import ArtifactIO
from ..registry import Plugin, discover
from ..specs import TensorSpec

if TYPE_CHECKING:
    from ..bundle import Artifact, Bundle
    from ..hardware import HardwareProfile
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
    #   run_unchecked(feeds) -- run() without checking feeds against the specs, for a caller that did.
    #   run_many(feeds_list) -> (outputs per batch, latency per batch in s) -- an asynchronous path.


#: Comma-separated backend names: when set, only these are used on this machine (a device whose copy
#: of a runtime is known to be broken, or a fleet worker that should offer only some).
ALLOW_ENV = "EDGESDK_BACKENDS"


class Backend(Plugin):
    """Base class of a backend: say what it loads, whether it is installed (Plugin), and open sessions."""

    formats: tuple[str, ...] = ()  # artifact formats it runs
    suffixes: dict[str, str] = {}  # file suffix -> format, for single model files
    # Order of preference among precisions when no latency was measured on this machine.
    precision_preference: tuple[str, ...] = ("int8", "fp32", "fp16")
    # Where this backend stands on each device class (see hardware.DEVICE_CLASSES); lower goes first.
    # Backends in the same tier (rank // 10) are ordered by what was measured on this machine, then by
    # precision preference, then by rank. A device class not listed puts the backend last.
    device_rank: dict[str, int] = {}
    # Formats whose ONNX files this backend can check for accuracy at conversion when their own backend
    # is missing (ONNX Runtime checks TensorRT's QDQ ONNX). Never used to run them.
    checks_formats: tuple[str, ...] = ()
    # Whether it is the reference implementation of its formats: the one that runs a source model given
    # in that format (an .onnx file) to give the outputs every artifact is checked against.
    reference: bool = False
    # Whether it runs any batch size on an artifact converted with dynamic_batch=True. A backend that
    # does not refuses a batch other than the artifact's with an InputError (the conformance suite checks both).
    dynamic_batch: bool = False
    # Whether it also keeps other dynamic axes (a sequence length): artifacts of a backend that does not
    # are fixed at the example's shape.
    dynamic_shapes: bool = False
    # Cases of tests/test_backend_conformance.py this backend cannot pass, each with the reason: a new
    # backend passes the suite or says here what it skips and why.
    conformance_skips: dict[str, str] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every backend's open() raises EdgeSDKError only: a library's own exception on a file it cannot
        load (MNN's TypeError on a truncated .mnn) becomes a ModelLoadError carrying the library's reason."""
        super().__init_subclass__(**kwargs)
        if "open" in cls.__dict__:
            cls.open = _load_errors_as_model_load_error(cls.__dict__["open"])

    def describe(self) -> str:
        return f"Backend '{self.name}'"

    def available(self) -> tuple[bool, str]:
        """(True, version) or (False, why not): installed, and not left out by $EDGESDK_BACKENDS."""
        allowed = os.environ.get(ALLOW_ENV, "").strip()
        if allowed and self.name not in {n.strip() for n in allowed.split(",")}:
            return False, f"left out by {ALLOW_ENV}={allowed}"
        return self.installed()

    def installed(self) -> tuple[bool, str]:
        """Whether its libraries import here; a backend with more to check (a GPU) overrides it."""
        return Plugin.available(self)

    def open(self, path: Path, threads: int | None = None, **options: Any) -> Session:
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """Facts for `edgesdk doctor`: version and devices or providers."""
        ok, detail = self.available()
        return {"available": ok, "version" if ok else "reason": detail}


def _load_errors_as_model_load_error(open_fn: Any) -> Any:
    import functools

    @functools.wraps(open_fn)
    def open_checked(self: Backend, path: Path, *args: Any, **kwargs: Any) -> Any:
        try:
            return open_fn(self, path, *args, **kwargs)
        except EdgeSDKError:
            raise
        except Exception as exc:  # noqa: BLE001 - turned into the one error a caller handles
            raise ModelLoadError(f"{self.name} cannot load {path}: {type(exc).__name__}: {first_line(exc)}. The file "
                                 "may be truncated or corrupt, or made for another version; re-convert it.") from exc

    return open_checked


@lru_cache(maxsize=1)
def _registry() -> dict[str, Backend]:

    return discover(__name__, __path__, "BACKEND", Backend)


def backends() -> list[Backend]:
    return list(_registry().values())


def get_backend(name: str) -> Backend:
    try:
        return _registry()[name]
    except KeyError:
        raise BackendUnavailable(f"Unknown backend '{name}'. Known backends: {', '.join(_registry())}.") from None


def max_threads() -> int:
    """The most intra-op threads edgesdk lets a backend start: a million threads hangs ONNX Runtime."""
    return max(64, 4 * (os.cpu_count() or 1))


def check_threads(threads: Any) -> int | None:
    """threads as given (None: the backend's own choice), or UsageError when it is no sensible count."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or not 1 <= threads <= max_threads():
        raise UsageError(f"threads must be a whole number from 1 to {max_threads()} (or None for the backend's "
                         f"choice), not {threads!r}.")
    return int(threads)


def format_of_file(path: str | os.PathLike) -> str:
    """The artifact format of a single model file, from its suffix."""
    suffix = Path(path).suffix.lower()
    for b in backends():
        if suffix in b.suffixes:
            return b.suffixes[suffix]
    known = sorted({s for b in backends() for s in b.suffixes})
    raise ModelLoadError(f"Cannot tell which runtime loads '{Path(path).name}': known model file types are "
                         f"{', '.join(known)}, or a bundle folder made by `edgesdk convert`.")


class AdaptedSession:
    """A backend session seen in the source model's terms: the source's input and output names, order
    and layout. A TFLite artifact made from a torch model is NHWC inside; its users still feed NCHW."""

    def __init__(self, session: Session, inputs: list[TensorSpec], outputs: list[TensorSpec], io: ArtifactIO):
        self._session = session
        self._inner_run = getattr(session, "run_unchecked", session.run)
        self.inputs, self.outputs = inputs, outputs
        self._in_perm = list(io.inputs or [None] * len(inputs))
        self._out_inverse = [None if p is None else list(np.argsort(p)) for p in io.outputs or [None] * len(outputs)]
        self._in_names = inner_names(session.inputs, inputs, io.input_names, aliases(session, "input"))
        by_name = {s.name: s.dtype for s in session.inputs}
        self._in_dtypes = [by_name.get(n, s.dtype) for n, s in zip(self._in_names, inputs)]
        inner_out = [s.name for s in session.outputs]
        self._out_order = [inner_out.index(n) for n in inner_names(session.outputs, outputs, io.output_names,
                                                                    aliases(session, "output"))]

    def _inner_feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The artifact's feeds: its names and dtypes, transposed into its layout unless already in it."""
        inner = {}
        for spec, name, dtype, perm in zip(self.inputs, self._in_names, self._in_dtypes, self._in_perm):
            a = _narrowed(feeds[spec.name], dtype)
            if perm is not None and spec.accepts_shape(a.shape):
                a = np.ascontiguousarray(a.transpose(perm))
            inner[name] = a
        return inner

    def _outer_outputs(self, outs: list[np.ndarray]) -> list[np.ndarray]:
        ordered = [outs[i] for i in self._out_order]
        return [o.transpose(p) if p is not None else o for o, p in zip(ordered, self._out_inverse)]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._outer_outputs(self._session.run(self._inner_feeds(feeds)))

    def run_unchecked(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """run() for feeds the caller has checked against the specs (the Runtime does)."""
        return self._outer_outputs(self._inner_run(self._inner_feeds(feeds)))

    def close(self) -> None:
        self._session.close()

    def __getattr__(self, name: str) -> Any:  # execution_precision, config, run_many, ...
        attr = getattr(self._session, name)
        if name == "run_many":
            def run_many(feeds_list: list[dict[str, np.ndarray]]) -> tuple[list[list[np.ndarray]], list[float]]:
                outs, latencies = attr([self._inner_feeds(f) for f in feeds_list])
                return [self._outer_outputs(o) for o in outs], latencies
            return run_many
        return attr


def native_specs(session: Session, inputs: list[TensorSpec]) -> list[TensorSpec]:
    """The inputs in the layout the session's artifact computes in (its permutation of the source's)."""
    if not isinstance(session, AdaptedSession):
        return list(inputs)
    return [s if p is None else s.permuted(p) for s, p in zip(inputs, session._in_perm)]  # noqa: SLF001


def fixed_axes(session: Session, inputs: list[TensorSpec]) -> list[dict[int, int]]:
    """Per source input, the axes the source names (a dynamic batch or sequence) that the loaded artifact
    fixes, with their size: {source axis: size}. Empty where the artifact keeps them dynamic."""
    inner = inner_session(session)
    perms = session._in_perm if isinstance(session, AdaptedSession) else [None] * len(inputs)  # noqa: SLF001
    by_name = {s.name: s for s in inner.inputs}
    names = session._in_names if isinstance(session, AdaptedSession) else [s.name for s in inputs]  # noqa: SLF001
    found = []
    for spec, name, perm in zip(inputs, names, perms):
        mine = by_name.get(name)
        axes: dict[int, int] = {}
        if mine is not None and len(mine.shape) == len(spec.shape):
            for j, size in enumerate(mine.shape):
                i = perm[j] if perm is not None else j
                if isinstance(spec.shape[i], str) and isinstance(size, int):
                    axes[i] = size
        found.append(axes)
    return found


def inner_session(session: Session) -> Session:
    """The backend's own session under an AdaptedSession (its specs are the artifact's: fixed lengths,
    NHWC), or the session itself."""
    return session._session if isinstance(session, AdaptedSession) else session  # noqa: SLF001


def _narrowed(array: np.ndarray, dtype: str) -> np.ndarray:
    """int64 token ids for a runtime that took them as int32 (MNN): cast, refusing values that do not fit."""
    if array.dtype == np.int64 and dtype == "int32":
        if array.size and (array.max() > np.iinfo(np.int32).max or array.min() < np.iinfo(np.int32).min):
            from ..errors import InputError

            raise InputError("Integer inputs beyond the int32 range: this runtime takes them as int32.")
        return array.astype(np.int32)
    return array


def aliases(session: Session, what: str) -> list[set[str]]:
    """Every name each of a session's inputs (what="input") or outputs answers to: its spec's name, plus
    the other names a backend knows it by (an OpenVINO tensor may be both '/ReduceMean_output_0' and
    'speech_prob'), from the session's optional `input_aliases` / `output_aliases`."""
    specs = session.inputs if what == "input" else session.outputs
    extra = getattr(session, f"{what}_aliases", None) or [set() for _ in specs]
    return [{s.name, *a} for s, a in zip(specs, extra)]


def _by_alias(inner: list[TensorSpec], source: list[TensorSpec], names: list[set[str]]) -> list[str] | None:
    """The inner names matching the source's, one each, in the source's order; None if any is missing."""
    found = []
    for spec in source:
        matches = [i for i, known in enumerate(names) if spec.name in known]
        if len(matches) != 1:
            return None
        found.append(inner[matches[0]].name)
    return found if len(set(found)) == len(found) else None


def inner_names(inner: list[TensorSpec], source: list[TensorSpec], declared: list[str] | None,
                names: list[set[str]] | None = None) -> list[str]:
    """The artifact's tensor names, in the source's order: the source's own names where the artifact
    kept them (as a name or an alias), else the names its converter declared (onnx2tf renames 'output'
    to 'output_0'), else by position (a bare file, or a bundle from before names were declared)."""
    matched = _by_alias(inner, source, names or [{s.name} for s in inner]) if len(inner) == len(source) else None
    if matched is not None:
        return matched
    own = [s.name for s in inner]
    if declared and sorted(declared) == sorted(own):
        return list(declared)
    return own


def io_problems(session: Session, inputs: list[TensorSpec], outputs: list[TensorSpec],
                io: ArtifactIO) -> list[str]:
    """What breaks the I/O contract between an artifact's session and its source: a different count
    of inputs or outputs, or names that are neither the source's nor the ones its converter declared."""
    problems = []
    for what, inner, source, declared in (("input", session.inputs, inputs, io.input_names),
                                          ("output", session.outputs, outputs, io.output_names)):
        names = sorted(s.name for s in inner)
        if len(inner) != len(source):
            problems.append(f"{len(inner)} {what}(s) {names} where the source has {len(source)} "
                            f"{[s.name for s in source]}")
        elif _by_alias(inner, source, aliases(session, what)) is None and names != sorted(declared or []):
            problems.append(f"{what} names {names} match neither the source's {[s.name for s in source]} nor "
                            f"those its converter declared ({declared or 'none'})")
    return problems


def adapt(session: Session, inputs: list[TensorSpec], outputs: list[TensorSpec], io: ArtifactIO) -> Session:
    """The session as the source model's specs describe it; the session itself when nothing differs."""
    if not inputs or not outputs:  # a bare model file: its own specs are the contract
        return session
    if len(session.inputs) != len(inputs) or len(session.outputs) != len(outputs):
        raise ModelLoadError(f"The artifact does not fit its bundle's manifest: "
                             f"{'; '.join(io_problems(session, inputs, outputs, io))}. Re-convert the model.")
    same_names = ([s.name for s in session.inputs] == [s.name for s in inputs] and
                  [s.name for s in session.outputs] == [s.name for s in outputs])
    narrowed = any(s.dtype == "int64" and i.dtype == "int32" for s, i in zip(inputs, session.inputs))
    if same_names and not io.permutes and not narrowed:
        return session
    return AdaptedSession(session, inputs, outputs, io)


#: How long a child process may take to load a model file it probes.
PROBE_TIMEOUT_S = 300


def load_in_child(code: str, path: Path, what: str) -> None:
    """Run `code` (which loads sys.argv[1]) in a child process: for runtimes that can crash the process
    on a bad file (TFLite's older interpreters, ExecuTorch), a crash there is a ModelLoadError here."""
    import subprocess
    import sys

    from ..errors import first_line

    try:
        result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                                timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ModelLoadError(f"{path} did not load in {PROBE_TIMEOUT_S} s in a child process ({what}); it may be "
                             "corrupt or far too large for this device.") from None
    except OSError as exc:
        raise ModelLoadError(f"Could not start a child process to check {path}: {first_line(exc)}") from None
    if result.returncode != 0:
        why = f"signal {-result.returncode}" if result.returncode < 0 else (
            (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1])
        raise ModelLoadError(f"{path} cannot be loaded by {what} ({why}); it may be truncated or corrupt, or use "
                             "an operator this runtime lacks. Re-convert it.")


def open_reference(path: Path) -> Session:
    """A session of a source model file on the reference backend of its format (ONNX Runtime for .onnx)."""
    fmt = format_of_file(path)
    for b in backends():
        if b.reference and fmt in b.formats:
            b.require()
            return b.open(Path(path))
    raise BackendUnavailable(f"No backend is the reference for {fmt} models, so {path} cannot be run as a source.")


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
    from ..hardware import read_profile

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
