"""MNN backend: .mnn files on MNN's CPU backend through its Express module API.

Traps it guards against (each has a test):
- `Var.read()` returns a numpy view of memory the result owns: outputs are copied while the result is
  still referenced (reading them later gave values of 1e18-1e28).
- A module keeps its tensors between calls: each thread borrows a clone of its own (clones share weights).
- `import MNN` prints the CPU's features on stdout: it is imported with stdout silenced.
- A corrupt file raises SystemError from the binding: a ModelLoadError here.
MNN computes in fp16 only when asked for low precision; that is asked only for an fp16 artifact, and
only ARM cores with fp16 arithmetic do it (`execution_precision` says which happened)."""

from __future__ import annotations

import logging
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import InferenceError, InputError, ModelLoadError, first_line
from ..core.hardware import read_profile
from ..core.specs import TensorSpec, check_feeds, guess_layout
from ..core.stdio import quiet_stdout
from .base import Backend
from .pool import PooledSession, WorkerPool

log = logging.getLogger(__name__)

_DTYPES = {"float": "float32", "double": "float64", "int": "int32", "int64": "int64", "uint8": "uint8", "int8": "int8"}


@lru_cache(maxsize=1)
def _mnn() -> Any:
    with quiet_stdout():
        import MNN
    return MNN


def _spec(name: str, var: Any) -> TensorSpec:
    shape = tuple(int(d) if int(d) >= 0 else None for d in var.shape)
    dtype = _DTYPES.get(str(var.dtype).split(".")[-1], "float32")
    return TensorSpec(name, shape, dtype, guess_layout(shape))


def read_specs(path: Path, runtime: Any = None) -> tuple[list[TensorSpec], list[TensorSpec], Any]:
    """(input specs, output specs, the module loaded on `runtime`) of a .mnn file; ModelLoadError if it
    does not load. One load serves both: the module runs with the names and order its info declares."""
    mnn = _mnn()
    try:
        with quiet_stdout():  # "MNN use high precision" and the like, on stdout
            module = mnn.nn.load_module_from_file(str(path), [], [], runtime_manager=runtime)
            info = module.get_info()
            variables = mnn.expr.load_as_dict(str(path))
    except (SystemError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"MNN cannot load {path}: {first_line(exc)}. The file may be truncated or corrupt; "
                             "re-convert it.") from None
    missing = [n for n in (*info["inputNames"], *info["outputNames"]) if n not in variables]
    if not info["inputNames"] or not info["outputNames"] or missing:
        raise ModelLoadError(f"{path} declares no usable inputs and outputs (missing {missing}); re-convert it.")
    return ([_spec(n, variables[n]) for n in info["inputNames"]],
            [_spec(n, variables[n]) for n in info["outputNames"]], module)


class MNNSession(PooledSession):
    """An MNN Express module behind the Session protocol; each call runs on a clone of its own."""

    def __init__(self, path: Path, threads: int | None, precision: str):
        mnn = _mnn()
        self.execution_precision = "fp16" if precision == "fp16" and "fp16" in read_profile().flags else "fp32"
        config = {"backend": "CPU", "numThread": int(threads or os.cpu_count() or 1),
                  "precision": "low" if self.execution_precision == "fp16" else "high"}
        with quiet_stdout():
            runtime = mnn.nn.create_runtime_manager((config,))
        self.inputs, self.outputs, first = read_specs(path, runtime)
        lock = threading.Lock()

        def clone() -> Any:
            with lock, quiet_stdout():
                return first.clone()

        self._pool: WorkerPool[Any] | None = WorkerPool(clone, first)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._pool is None:
            raise InferenceError("This MNN session is closed.")
        check_feeds(self.inputs, feeds)
        expr = _mnn().expr
        kinds = {"float32": expr.float, "int32": expr.int, "int64": expr.int64, "uint8": expr.uint8, "int8": expr.int8}
        args = [expr.const(np.ascontiguousarray(feeds[s.name]), list(feeds[s.name].shape), expr.NCHW,
                           kinds.get(s.dtype, expr.float)) for s in self.inputs]
        with self._pool.borrow() as module:
            try:
                results = module.forward(args)
            except Exception as exc:  # noqa: BLE001 - inputs were checked: this is MNN failing
                raise InferenceError(f"MNN failed while running the model: {first_line(exc)}") from None
            return [self._copy(r, expr) for r in results]

    @staticmethod
    def _copy(result: Any, expr: Any) -> np.ndarray:
        if result.data_format == expr.NC4HW4:  # MNN's packed layout: back to the plain one
            result = expr.convert(result, expr.NCHW)
        data = result.read()
        if data is None:
            raise InputError("MNN could not compute an output for these inputs; check their shapes.")
        return np.array(data, copy=True)  # read() is a view into `result`: copy while it is alive


class MNNBackend(Backend):
    name = "mnn"
    formats = ("mnn",)
    suffixes = {".mnn": "mnn"}
    modules = ("MNN",)
    extra = "mnn"
    # Its int8 is weight-only (float speed, a quarter of the size); fp16 computes faster where the CPU has it.
    precision_preference = ("fp16", "int8", "fp32")
    # Built for ARM phones and boards; behind ONNX Runtime and OpenVINO on x86 (1.9x ORT's latency here).
    device_rank = {"android": 1, "rpi": 2, "arm": 2, "x86": 31, "jetson": 31, "nvidia": 41}

    def installed(self) -> tuple[bool, str]:
        try:
            _mnn()
        except ImportError as exc:
            return False, f"'MNN' is not installed ({exc}); pip install 'edgesdk[{self.extra}]'"
        from importlib.metadata import version

        return True, version("mnn")

    def load(self, path: Path, threads: int | None = None, **options: Any) -> MNNSession:
        return MNNSession(path, threads, options["precision"] or "fp32")


BACKEND = MNNBackend()
