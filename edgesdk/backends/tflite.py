"""TFLite backend: the LiteRT interpreter with XNNPACK on the CPU.

Interpreters, in order: ai-edge-litert (the maintained successor), tflite-runtime (what some Raspberry
Pi images carry; it does not work with numpy 2), TensorFlow's tf.lite. tflite-runtime and tf.lite
segfault on a truncated .tflite, so a file is checked before it is loaded (flatbuffer identifier and
size) and, with those two interpreters, first opened in a child process: a crash there is a
ModelLoadError here. Quantized (int8/uint8) inputs and outputs are hidden: callers feed and receive
float32, quantized with each tensor's own scale and zero point (raw=True exposes them)."""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import BackendUnavailable, InferenceError, InputError, ModelLoadError, first_line
from ..core.options import Option
from ..core.specs import TensorSpec, guess_layout
from .base import Backend
from .pool import PooledSession, WorkerPool
from .probe import flatbuffer_head, load_in_child

log = logging.getLogger(__name__)

#: (module, attribute path of the Interpreter class, whether it can crash on a bad file)
INTERPRETERS = (
    ("ai_edge_litert.interpreter", "Interpreter", False),
    ("tflite_runtime.interpreter", "Interpreter", True),
    ("tensorflow", "lite.Interpreter", True),
)


def find_interpreter(only: str | None = None) -> tuple[Any, str, bool]:
    """(Interpreter class, module name, crashes on bad files) of the first interpreter that imports,
    or of the one named (e.g. only="tensorflow")."""
    reasons = []
    for module, attr, fragile in INTERPRETERS:
        if only and module.split(".")[0] != only:
            continue
        try:
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
            return obj, module, fragile
        except Exception as exc:  # noqa: BLE001 - tflite-runtime raises odd errors under numpy 2
            reasons.append(f"{module}: {exc.__class__.__name__}")
    if only and not reasons:
        raise BackendUnavailable(f"Unknown TFLite interpreter '{only}': choose from "
                                 f"{', '.join(m.split('.')[0] for m, _, _ in INTERPRETERS)}.")
    raise BackendUnavailable("No TFLite interpreter is installed (" + "; ".join(reasons) + "). "
                             "pip install 'edgesdk[tflite]' (ai-edge-litert).")


def check_tflite_file(path: Path) -> None:
    """Cheap structural checks before an interpreter sees the file."""
    if not path.is_file():
        raise ModelLoadError(f"Model file not found: {path}")
    size = path.stat().st_size
    head = flatbuffer_head(path, b"TFL3", "a TFLite model")
    # The flatbuffer's root table offset must point inside the file.
    root = int.from_bytes(head[:4], "little")
    if root >= size:
        raise ModelLoadError(f"{path} is truncated ({size} bytes; its root table starts at byte {root}). Re-convert it.")


_PROBE = """
import sys
from {module} import {name} as I
it = I(model_path=sys.argv[1])
it.allocate_tensors()
"""


def probe_in_subprocess(path: Path, module: str, attr: str) -> None:
    """Open the file in a child process first: a segfault there is an error here, not a crash."""
    if module == "tensorflow":
        code = "import sys\nimport tensorflow as tf\nit = tf.lite.Interpreter(model_path=sys.argv[1])\nit.allocate_tensors()\n"
    else:
        code = _PROBE.format(module=module, name=attr)
    load_in_child(code, path, module)


def _quant(detail: dict[str, Any]) -> tuple[float, int] | None:
    scale, zero = detail.get("quantization", (0.0, 0))
    return (float(scale), int(zero)) if np.dtype(detail["dtype"]) in (np.int8, np.uint8, np.int16) and scale else None


class _Interpreter:
    """One interpreter and the input shapes its tensors are allocated for (asked once, not per call)."""

    def __init__(self, interpreter: Any):
        self.it = interpreter
        self.shapes = {d["index"]: tuple(int(v) for v in d["shape"]) for d in interpreter.get_input_details()}


class TFLiteSession(PooledSession):
    """Interpreters with their tensors allocated, behind the Session protocol. An interpreter keeps
    its input and output tensors between set_tensor, invoke and get_tensor, so each call borrows one of
    its own from a pool (made on demand from the same file): threads never read each other's outputs."""

    def __init__(self, interpreter: Any, raw: bool = False, make: Any = None):
        self._pool: WorkerPool[_Interpreter] | None = WorkerPool(
            lambda: _Interpreter(make() if make else interpreter), _Interpreter(interpreter))
        self.raw = raw
        signatures = interpreter.get_signature_list() if hasattr(interpreter, "get_signature_list") else {}
        if signatures:
            key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
            runner = interpreter.get_signature_runner(key)
            ins, outs = runner.get_input_details(), runner.get_output_details()
            # Signature names are the model's own (the ONNX / Keras names); tensor indices do the work.
            self._in = [(n, ins[n]) for n in signatures[key]["inputs"]]
            self._out = [(n, outs[n]) for n in signatures[key]["outputs"]]
        else:
            self._in = [(d["name"], d) for d in interpreter.get_input_details()]
            self._out = [(d["name"], d) for d in interpreter.get_output_details()]
        self.quantized_io = {n: q for n, d in self._in + self._out if (q := _quant(d))}
        self.inputs = [self._spec(n, d) for n, d in self._in]
        self.outputs = [self._spec(n, d) for n, d in self._out]
        # Per input and output, worked out once: (name, tensor index, dtype, quantization or None, spec).
        self._feeds = [(n, d["index"], np.dtype(d["dtype"]), None if raw else _quant(d), spec)
                       for (n, d), spec in zip(self._in, self.inputs)]
        self._reads = [(d["index"], None if raw else _quant(d)) for _, d in self._out]

    def _spec(self, name: str, detail: dict[str, Any]) -> TensorSpec:
        """Axes after the first that the model leaves dynamic (-1 in its signature: a sequence) are None;
        the batch stays as allocated."""
        signature = detail.get("shape_signature", detail["shape"])
        shape = tuple(int(v) if i == 0 or int(s) >= 0 else None for i, (v, s) in enumerate(zip(detail["shape"], signature)))
        dtype = np.dtype(detail["dtype"]).name
        if not self.raw and _quant(detail):
            dtype = "float32"  # what callers exchange; the session (de)quantizes
        return TensorSpec(name, shape, dtype, guess_layout(shape))

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Thread-safe: the interpreter is this call's alone from set_tensor to the copied outputs."""
        pool = self._pool
        if pool is None:
            raise InferenceError("This TFLite session is closed.")
        worker = pool.take()
        try:
            return self._run(worker, feeds)
        finally:
            pool.give(worker)

    def _run(self, worker: _Interpreter, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        it = worker.it
        for name, index, dtype, q, spec in self._feeds:
            try:
                x = feeds[name]
            except KeyError:
                raise InputError(f"Missing input '{name}'; the model takes {[n for n, _ in self._in]}.") from None
            if q is not None:
                info = np.iinfo(dtype)
                x = np.clip(np.round(x / q[0] + q[1]), info.min, info.max).astype(dtype)
            if x.dtype != dtype:
                raise InputError(f"Input '{name}' has dtype {x.dtype}; the TFLite model expects {dtype.name}.")
            if x.shape != worker.shapes[index]:
                self._fit(worker, index, spec, x)
            it.set_tensor(index, x if x.flags.c_contiguous else np.ascontiguousarray(x))
        try:
            it.invoke()
        except Exception as exc:  # noqa: BLE001 - inputs were checked: this is the interpreter failing
            raise InferenceError(f"TFLite failed while running the model: {first_line(exc)}") from None
        outs = []
        for index, q in self._reads:
            y = it.get_tensor(index)  # a copy: the interpreter's buffer is reused by the next call
            outs.append((y.astype(np.float32) - q[1]) * q[0] if q is not None else y)
        return outs

    @staticmethod
    def _fit(worker: _Interpreter, index: int, spec: TensorSpec, x: np.ndarray) -> None:
        """Check x's shape; resize this interpreter to x's length along the model's dynamic axes."""
        if not spec.accepts_shape(x.shape):
            raise InputError(f"Input '{spec.name}' has shape {list(x.shape)}; the TFLite model expects "
                             f"{[d if d is not None else 'any' for d in spec.shape]} (its batch is fixed).")
        worker.it.resize_tensor_input(index, list(x.shape), strict=True)
        worker.it.allocate_tensors()
        worker.shapes[index] = tuple(x.shape)


class TFLiteBackend(Backend):
    name = "tflite"
    open_options = (
        Option("interpreter", "str", None, "Which interpreter: ai_edge_litert, tflite_runtime or tensorflow "
               "(default: the first that imports)."),
        Option("raw", "bool", False, "Quantized inputs and outputs as stored (int8 with their scales), not float32."),
        Option("probe", "bool", False, "Load the file in a child process first, so a crash on it cannot take "
               "down the caller."),
    )
    formats = ("tflite",)
    suffixes = {".tflite": "tflite"}
    modules = ("ai_edge_litert",)
    extra = "tflite"
    precision_preference = ("int8", "fp32", "fp16")
    # First on ARM boards and phones (XNNPACK); a fallback on x86 and NVIDIA hosts.
    device_rank = {"rpi": 0, "android": 0, "arm": 0, "x86": 30, "jetson": 30, "nvidia": 40}
    dynamic_shapes = True  # axes after the batch that onnx2tf left dynamic (-1): resized per call

    def installed(self) -> tuple[bool, str]:
        try:
            _, module, _ = find_interpreter()
        except BackendUnavailable as exc:
            return False, str(exc)
        mod = importlib.import_module(module.split(".")[0])
        return True, f"{module.split('.')[0]} {getattr(mod, '__version__', '?')}"

    def load(self, path: Path, threads: int | None = None, **options: Any) -> TFLiteSession:
        interpreter_cls, module, fragile = find_interpreter(options["interpreter"])
        check_tflite_file(path)
        if fragile or options["probe"]:
            probe_in_subprocess(path, module, interpreter_cls.__name__)
        # Default: every core, as ONNX Runtime and OpenVINO do (LiteRT alone would use one thread).
        kwargs: dict[str, Any] = {"model_path": str(path), "num_threads": int(threads or os.cpu_count() or 1)}

        def make() -> Any:
            interpreter = interpreter_cls(**kwargs)  # XNNPACK is the default CPU delegate
            interpreter.allocate_tensors()
            return interpreter

        try:
            first = make()
        except Exception as exc:  # noqa: BLE001 - interpreters raise ValueError/RuntimeError alike
            raise ModelLoadError(f"TFLite cannot load {path}: {first_line(exc)}. "
                                 "The file may be corrupt or use an unsupported operator; re-convert it.") from None
        return TFLiteSession(first, raw=options["raw"], make=make)

    def info(self) -> dict[str, Any]:
        info = super().info()
        if info["available"]:
            _, module, fragile = find_interpreter()
            info["interpreter"] = module + (" (files probed in a subprocess first)" if fragile else "")
        return info


BACKEND = TFLiteBackend()
