"""What a backend is: the Session it opens and the Backend base class (its declarations, and the checks
every backend's open() makes before loading), with the thread-count check they share."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..core.errors import EdgeSDKError, ModelLoadError, UsageError, first_line
from ..core.options import Option, validate
from ..core.registry import Plugin
from ..core.specs import TensorSpec


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

#: What the Runtime passes to every backend's open() besides threads: not per-backend options.
RUNTIME_SETTINGS = (
    Option("precision", "str", None, "The artifact's precision (OpenVINO runs an fp32 IR in f32 unless it is bf16)."),
    Option("mode", "str", "latency", "latency or throughput (OpenVINO's performance hint).",
           choices=("latency", "throughput")),
)


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
    # Hardware it needs that a CI machine lacks ("an NVIDIA GPU host with TensorRT"): where it is unavailable,
    # the tests skip it (naming this), where any other backend being unavailable fails the run.
    needs_hardware: str = ""
    # Options a caller may pass to open() (Runtime(..., device="GPU")), declared so that a misspelled or
    # foreign one is a UsageError naming those that exist, not ignored.
    open_options: tuple[Option, ...] = ()

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
        """A session of the model file at path. What every backend needs is checked here (its libraries, a
        non-empty file); a library's own exception on a file it cannot load (MNN's TypeError on a truncated
        .mnn) becomes a ModelLoadError carrying the library's reason, so open() raises EdgeSDKError only."""
        options = validate(options, (*RUNTIME_SETTINGS, *self.open_options), UsageError, f"{self.name} option")
        self.require()
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"Model file not found: {path}")
        if path.stat().st_size == 0:
            raise ModelLoadError(f"{path} is empty; re-convert the model.")
        try:
            return self.load(path, threads, **options)
        except EdgeSDKError:
            raise
        except Exception as exc:  # noqa: BLE001 - turned into the one error a caller handles
            raise ModelLoadError(f"{self.name} cannot load {path}: {type(exc).__name__}: {first_line(exc)}. The file "
                                 "may be truncated or corrupt, or made for another version; re-convert it.") from exc

    def load(self, path: Path, threads: int | None = None, **options: Any) -> Session:
        """Open a session of a file open() has checked. options holds every RUNTIME_SETTINGS and declared
        open_options entry, validated, with its default where not given."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """Facts for `edgesdk doctor`: version and devices or providers."""
        ok, detail = self.available()
        return {"available": ok, "version" if ok else "reason": detail}


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
