"""Runtime: the one class users hold. It loads a bundle (or a single model file), picks the best
(backend, artifact) pair for this machine, falls back when one fails to load, and checks inputs."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import (
    Backend,
    Ranking,
    Session,
    check_open_options,
    check_threads,
    fixed_axes,
    format_of_file,
    native_specs,
    open_artifact,
    rank,
)
from ..core.bundle import Artifact, Bundle, load_bundle, verify_artifact
from ..core.errors import EdgeSDKError, InputError, ModelLoadError, UsageError, first_line
from ..core.hardware import HardwareProfile, read_profile
from ..core.records import Tolerance
from ..core.specs import TensorSpec, check_array

log = logging.getLogger(__name__)

Inputs = np.ndarray | Sequence[np.ndarray] | dict[str, np.ndarray] | str | Sequence[str]


class Runtime:
    """Run a converted model with the best backend available here.

    >>> rt = Runtime("build/effnet")          # a bundle folder, or a single .onnx file
    >>> logits = rt.run(x)                     # float32 in the source model's layout
    >>> rt.backend, rt.artifact.id             # what was picked
    """

    def __init__(
        self,
        path: str | os.PathLike,
        backend: str = "auto",
        precision: str = "auto",
        threads: int | None = None,
        artifact: str | None = None,
        tolerance: Tolerance = Tolerance(),
        mode: str = "latency",
        autotune: bool = False,
        hardware: HardwareProfile | str | os.PathLike | None = None,
        allow_nonfinite: bool = False,
        **backend_options: Any,
    ):
        """autotune=True times the top candidates here for a few runs and caches the winner per
        (bundle, machine) in the cache folder; the next load reads it. hardware is a HardwareProfile or
        a root folder to read one from (tests present other devices this way); default: this machine.
        allow_nonfinite=True lets NaN/Inf inputs through (they are an InputError by default)."""
        if mode not in ("latency", "throughput"):
            raise UsageError(f"mode must be 'latency' or 'throughput', not {mode!r}.")
        check_open_options(backend, backend_options)
        self.threads = check_threads(threads)
        self.mode = mode
        self.allow_nonfinite = allow_nonfinite
        self.nonfinite_outputs = 0  # calls whose outputs held NaN or Inf (warned about once)
        self.last_latencies_s: list[float] = []
        self._load_model(path)
        if not self.verified:
            artifact = artifact or self.bundle.artifacts[0].file
        self.profile = hardware if isinstance(hardware, HardwareProfile) else read_profile(hardware or "/")
        self._rank(tolerance, backend, precision, artifact, autotune)
        self._open_first(backend_options)
        # The bundle's specs are the contract; a single file takes them from the session.
        self.inputs: list[TensorSpec] = self.bundle.inputs or self._session.inputs
        self.outputs: list[TensorSpec] = self.bundle.outputs or self._session.outputs
        self._input_names = [s.name for s in self.inputs]
        #: The inputs as the loaded artifact computes them (NHWC inside a TFLite file made from an NCHW
        #: model): run() takes arrays in either layout, and one already in this layout is not transposed.
        self.native_inputs: list[TensorSpec] = native_specs(self._session, self.inputs)
        self._checks = list(zip(self.inputs, (n if n != s else None for s, n in zip(self.inputs, self.native_inputs))))
        #: Inputs whose named (dynamic) axes the loaded artifact fixes: {source axis: size} (TFLite, MNN, NCNN).
        self._fixed = [(s, axes) for s, axes in zip(self.inputs, fixed_axes(self._session, self.inputs)) if axes]
        self._tokenizer: Any = None

    def _load_model(self, path: Any) -> None:
        """self.bundle from a bundle folder (verified against its manifest) or a bare model file (not)."""
        if not isinstance(path, (str, os.PathLike)):
            raise UsageError(f"Runtime needs the path of a bundle folder or a model file, not {type(path).__name__}.")
        self.path = Path(path)
        if self.path.is_dir():
            self.bundle: Bundle = load_bundle(self.path)
            self.verified = True
        elif self.path.is_file():
            self.bundle = _single_file_bundle(self.path)
            self.verified = False
            _warn_once_per_file(self.path, "%s is a bare model file: edgesdk cannot check its bytes (no manifest "
                                "with a sha256) nor its accuracy. Convert it into a bundle with `edgesdk convert` to "
                                "have both verified.", self.path)
        else:
            raise ModelLoadError(f"No model at {self.path}: give a bundle folder or a model file.")

    def _rank(self, tolerance: Tolerance, backend: str, precision: str, artifact: str | None, autotune: bool) -> None:
        """self.ranking: the policy's order here, re-ranked by autotune's own timings when asked."""
        self.ranking: Ranking = rank(self.bundle, tolerance, backend, precision, artifact, self.profile)
        self.autotune: dict[str, Any] | None = None
        if autotune and self.bundle.inputs:
            from .autotune import autotune as run_autotune

            self.autotune = run_autotune(self.bundle, self.ranking, self.profile, self.threads,
                                         key_extra=f"{backend}|{precision}|{artifact}|{tolerance}|{self.mode}")
            measured = {(k.split("|")[1], k.split("|")[0]): v for k, v in self.autotune["ms"].items()}
            self.ranking = rank(self.bundle, tolerance, backend, precision, artifact, self.profile, measured)
        self.skipped: list[str] = list(self.ranking.skipped)

    def _open_first(self, backend_options: dict[str, Any]) -> None:
        """Open the best-ranked candidate that loads; any failure is recorded and the next one tried."""
        self._session: Session | None = None
        for cand in self.ranking.candidates:
            try:
                model_path = verify_artifact(self.bundle, cand.artifact) if self.verified else self.path
                own = {o.name for o in cand.backend.open_options}  # with backend="auto", others' go to others
                self._session = open_artifact(cand.backend, model_path, self.bundle.inputs, self.bundle.outputs,
                                              cand.artifact.io, self.threads, precision=cand.artifact.precision,
                                              mode=self.mode, **{k: v for k, v in backend_options.items() if k in own})
            except Exception as exc:  # noqa: BLE001 - any failure to load a candidate: record it, try the next
                why = str(exc) if isinstance(exc, EdgeSDKError) else f"{exc.__class__.__name__}: {first_line(exc)}"
                log.warning("Could not load %s on %s (%s); trying the next candidate.", cand.artifact.file,
                            cand.backend.name, why)
                self.skipped.append(f"{cand.artifact.id} on {cand.backend.name}: failed to load: {why}")
                continue
            self._backend: Backend = cand.backend
            self.artifact: Artifact = cand.artifact
            break
        if self._session is None:
            raise ModelLoadError(f"No candidate could be loaded from {self.path}:\n  " + "\n  ".join(self.skipped))
        # _feeds() checks every input against the specs: the session need not check them again.
        self._call = getattr(self._session, "run_unchecked", self._session.run)
        if self.skipped:
            log.info("Runtime uses %s on %s; passed over: %s", self.artifact.id, self.backend, "; ".join(self.skipped))

    # -- what was picked ----------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self._backend.name

    @property
    def labels(self) -> list[str] | None:
        return self.bundle.labels

    @property
    def preprocess(self):  # -> Preprocess | None
        return self.bundle.preprocess

    @property
    def execution_precision(self) -> str:
        """The precision the backend really computes in (e.g. OpenVINO's bf16 vs f32), where it says;
        otherwise the artifact's precision."""
        reported = getattr(self._session, "execution_precision", None)
        return str(reported) if reported else self.artifact.precision

    @property
    def tokenizer(self):  # -> edgesdk.tasks.text.Tokenizer | None
        """The bundle's tokenizer (checked against its sha256), or None for a model without one."""
        record = self.bundle.meta.get("tokenizer") if self.verified else None
        if record and self._tokenizer is None:
            from ..core.bundle import inside, sha256_of
            from ..tasks.text import Tokenizer

            path = inside(self.bundle.path, record["file"])
            if not path.is_file() or sha256_of(path) != record["sha256"]:
                raise ModelLoadError(f"The tokenizer {path} is missing or corrupt (its sha256 does not match the "
                                     "manifest); re-convert or re-copy the bundle.")
            self._tokenizer = Tokenizer(path, record)
        return self._tokenizer

    def tokenize(self, texts: str | Sequence[str]) -> dict[str, np.ndarray]:
        """Token inputs for a text or a batch of texts, padded to the loaded artifact's length where it
        takes one length only (MNN, NCNN, a fixed TFLite), else to the longest text."""
        tokenizer = self.tokenizer
        if tokenizer is None:
            raise InputError(f"{self.path} has no tokenizer: convert with tokenizer=... (--tokenizer) to run text, "
                             "or give token ids as arrays.")
        return tokenizer(texts, length=self._fixed_length())

    def _fixed_length(self) -> int | None:
        """The sequence length the loaded artifact is fixed at, where the bundle's is dynamic."""
        from ..backends import inner_session

        for outer, spec in zip(self.inputs, inner_session(self._session).inputs if self._session else []):
            if len(outer.shape) > 1 and not isinstance(outer.shape[1], int) and len(spec.shape) > 1 \
                    and isinstance(spec.shape[1], int):
                return spec.shape[1]
        return None

    def explain(self) -> str:
        """The ranking of candidates and the reasons others were passed over."""
        providers = getattr(self._session, "providers", None)
        lines = [f"Running {self.artifact.id} ({self.artifact.file}) on {self.backend}"
                 + (f" [{', '.join(providers)}]" if providers else "")
                 + f", executing in {self.execution_precision}, {self.mode} mode.",
                 f"Machine: {self.profile.summary()}."]
        if self.autotune:
            lines.append(f"Autotune ({'cached' if self.autotune['cached'] else 'measured now'}): " + ", ".join(
                f"{k.replace('|', ' on ', 1)} {v:.2f} ms" for k, v in sorted(self.autotune["ms"].items(),
                                                                          key=lambda kv: kv[1])))
        lines += [f"  {i + 1}. {c.artifact.id} on {c.backend.name}: {c.why}"
                  for i, c in enumerate(self.ranking.candidates)]
        lines += [f"  skipped: {s}" for s in self.skipped]
        return "\n".join(lines)

    # -- running ------------------------------------------------------------------------------------
    def run(self, inputs: Inputs) -> np.ndarray | list[np.ndarray]:
        """Run one batch. Takes an array (one input), a list in input order, or a dict by input name.
        Returns the output array, or a list of arrays for a model with several outputs."""
        outs = self.run_all(inputs)
        return outs[0] if len(outs) == 1 else outs

    def run_all(self, inputs: Inputs) -> list[np.ndarray]:
        """Like run(), always returning a list of outputs."""
        if self._session is None:
            raise EdgeSDKError("This Runtime is closed.")
        return self._check_outputs(self._call(self._feeds(inputs)))

    def _check_outputs(self, outputs: list[np.ndarray]) -> list[np.ndarray]:
        """Say so (once) when outputs hold NaN or Inf: what corrupted weights in a bare file look like."""
        for o in outputs:
            if o.dtype.kind == "f" and not np.isfinite(o).all():
                break
        else:
            return outputs
        self.nonfinite_outputs += 1
        if self.nonfinite_outputs == 1:
            log.warning("%s on %s returned NaN or infinite outputs. The model file may be corrupt%s, or the "
                        "model overflows on these inputs.", self.artifact.id, self.backend,
                        "" if self.verified else " (a bare file is not checked against a manifest)")
        return outputs

    def run_many(self, batches: Sequence[Inputs]) -> list[list[np.ndarray]]:
        """Run many independent batches; returns each one's outputs, in order. Backends with an
        asynchronous path (OpenVINO's infer-request pool) overlap them, which pays in mode="throughput".
        Each request's latency in seconds is left in `last_latencies_s`."""
        if self._session is None:
            raise EdgeSDKError("This Runtime is closed.")
        feeds_list = [self._feeds(b) for b in batches]
        run_many = getattr(self._session, "run_many", None)
        if run_many is not None:
            outputs, self.last_latencies_s = run_many(feeds_list)
            return [self._check_outputs(o) for o in outputs]
        outputs, self.last_latencies_s = [], []
        for feeds in feeds_list:
            t0 = time.perf_counter()
            outputs.append(self._check_outputs(self._call(feeds)))
            self.last_latencies_s.append(time.perf_counter() - t0)
        return outputs

    def run_dict(self, inputs: Inputs, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Outputs by name (the names conversion gave them: "output0", "logits", "feats.1"); only those
        asked for, in that order, when outputs is given."""
        names = [s.name for s in self.outputs]
        unknown = [o for o in outputs or () if o not in names]
        if unknown:
            raise InputError(f"This model has no output named {unknown}; its outputs are {names}.")
        by_name = dict(zip(names, self.run_all(inputs)))
        return {o: by_name[o] for o in outputs} if outputs else by_name

    def _feeds(self, inputs: Inputs) -> dict[str, np.ndarray]:
        # The common calls kept short (a tiny model's whole run is tens of microseconds): one array, or
        # a dict of arrays by exactly the input names.
        if type(inputs) is np.ndarray and len(self._checks) == 1:
            spec, native = self._checks[0]
            check_array(spec, inputs, self.allow_nonfinite, native)
            feeds = {spec.name: inputs}
            if self._fixed:
                self._check_fixed(feeds)
            return feeds
        if type(inputs) is dict and len(inputs) == len(self._checks):
            for spec, native in self._checks:
                arr = inputs.get(spec.name)
                if type(arr) is not np.ndarray:
                    break  # a missing name or a non-array: the general path below says what is wrong
                check_array(spec, arr, self.allow_nonfinite, native)
            else:
                if self._fixed:
                    self._check_fixed(inputs)
                return inputs
        arrays = self._arrays(inputs)
        feeds = {}
        for (spec, native), arr in zip(self._checks, arrays):
            if not isinstance(arr, np.ndarray):
                try:
                    arr = np.asarray(arr.detach().cpu().numpy() if hasattr(arr, "detach") else arr)
                except (TypeError, ValueError) as exc:
                    raise InputError(f"Input '{spec.name}' is not an array ({first_line(exc)}).") from None
            check_array(spec, arr, self.allow_nonfinite, native)
            feeds[spec.name] = arr
        if self._fixed:
            self._check_fixed(feeds)
        return feeds

    def _check_fixed(self, feeds: dict[str, np.ndarray]) -> None:
        """InputError naming the axis, for an input whose size along an axis the artifact fixed differs."""
        for spec, axes in self._fixed:
            arr = feeds[spec.name]
            wrong = [i for i, size in axes.items() if spec.accepts_shape(arr.shape) and arr.shape[i] != size]
            if wrong:
                takes = [axes.get(i, d) for i, d in enumerate(spec.shape)]
                named = " and ".join(f"axis {i} ({spec.shape[i]})" for i in wrong)
                raise InputError(
                    f"Input '{spec.name}' has shape {list(arr.shape)}; this {self.artifact.format} artifact takes "
                    f"{takes}: its {named} {'is' if len(wrong) == 1 else 'are'} fixed. Pad or split the input to "
                    "that size, or use an artifact that keeps the axis dynamic (ONNX, OpenVINO).")

    def _arrays(self, inputs: Inputs) -> list[Any]:
        """The inputs as a list in the model's input order, from any form run() takes."""
        if isinstance(inputs, str) or (isinstance(inputs, (list, tuple)) and inputs and
                                       all(isinstance(t, str) for t in inputs)):
            inputs = self.tokenize(inputs)  # type: ignore[arg-type]
        if isinstance(inputs, dict):
            unknown = [k for k in inputs if k not in self._input_names]
            missing = [n for n in self._input_names if n not in inputs]
            if unknown or missing:
                raise InputError(f"Input names {sorted(inputs)} do not match the model's inputs "
                                 f"{self._input_names}" + (f" (unknown: {unknown})" if unknown else "") +
                                 (f" (missing: {missing})" if missing else "") + ".")
            return [inputs[n] for n in self._input_names]
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != len(self.inputs):
                raise InputError(f"Got {len(inputs)} inputs; the model takes {len(self.inputs)}: {self._input_names}.")
            return list(inputs)
        if len(self.inputs) != 1:
            raise InputError(f"The model takes {len(self.inputs)} inputs {self._input_names}: pass a list or a "
                             "dict by name.")
        return [inputs]

    # -- lifetime -----------------------------------------------------------------------------------
    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
            self._call = _closed  # the bound run method held the session (and its model) alive after close
            release_freed_memory()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Runtime({str(self.path)!r}, backend={self.backend!r}, artifact={self.artifact.id!r})"


def release_freed_memory() -> None:
    """Hand the heap a closed session freed back to the OS (glibc's malloc_trim). Without it, Runtimes
    created and closed from several threads left RSS at its high-water mark (ONNX Runtime, 8 threads x
    50 cycles: 142 -> 319 MB, a plateau rather than a leak): too much on a 1-2 GB device."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): nothing to do
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


def _closed(feeds: Any) -> list[np.ndarray]:
    raise EdgeSDKError("This Runtime is closed.")

#: Bare files already announced as unverifiable in this process (an app opens the same wake word model often).
_announced_bare: set[str] = set()


def _warn_once_per_file(path: Path, message: str, *args: Any) -> None:
    """log.warning the first time for a file in this process, log.info after."""
    key = str(path.resolve())
    level = logging.INFO if key in _announced_bare else logging.WARNING
    _announced_bare.add(key)
    log.log(level, message, *args)


def _single_file_bundle(path: Path) -> Bundle:
    """A one-artifact bundle for a bare model file; its specs come from the loaded session."""
    fmt = format_of_file(path)
    art = Artifact(file=path.name, format=fmt, precision="unknown")
    return Bundle(path=path.parent, inputs=[], outputs=[], artifacts=[art])
