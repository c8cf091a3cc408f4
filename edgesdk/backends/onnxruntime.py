"""ONNX Runtime backend: runs .onnx artifacts (FP32, FP16, QDQ INT8) on the CPU execution provider,
or on other providers the user asks for."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import InferenceError, InputError, ModelLoadError, first_line
from ..core.options import Option
from ..core.specs import TensorSpec, check_feeds, guess_layout
from .base import Backend

log = logging.getLogger(__name__)

# ONNX Runtime's type strings -> numpy dtype names
ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
              "tensor(bool)": "bool"}


def _dim(d: Any) -> int | str | None:
    if isinstance(d, int) and d >= 0:
        return d
    return d if isinstance(d, str) and d else None


def _spec_from_node_arg(arg: Any) -> TensorSpec:
    shape = tuple(_dim(d) for d in (arg.shape or ()))
    return TensorSpec(arg.name, shape, ORT_DTYPES.get(arg.type, arg.type), guess_layout(shape))


class OrtSession:
    """An onnxruntime.InferenceSession behind the Session protocol."""

    def __init__(self, path: Path, threads: int | None, providers: Sequence[str] | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if threads:  # otherwise ORT's own choice: one thread per physical core
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        available = ort.get_available_providers()
        # By default every accelerator this build has (TensorRT, then CUDA on NVIDIA), then the CPU.
        wanted = list(providers) if providers else [
            p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available
        ] + ["CPUExecutionProvider"]
        missing = [p for p in wanted if p not in available]
        if missing:
            log.warning("ONNX Runtime providers %s are not available here (have %s); using the rest.", missing,
                        available)
        wanted = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts, providers=wanted)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types (Fail, InvalidGraph, ...)
            raise ModelLoadError(f"ONNX Runtime cannot load {path}: {first_line(exc)}. The file may be truncated or "
                                 "corrupt, or use an operator this runtime lacks; re-export it.") from None
        self.providers = self._session.get_providers()
        self.inputs = [_spec_from_node_arg(a) for a in self._session.get_inputs()]
        self.outputs = [_spec_from_node_arg(a) for a in self._session.get_outputs()]
        self._output_names = [o.name for o in self.outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Thread-safe: ONNX Runtime allows concurrent run() calls on one InferenceSession."""
        check_feeds(self.inputs, feeds)  # ORT reports a missing input as a bare ValueError
        return self.run_unchecked(feeds)

    def run_unchecked(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        session = self._session
        if session is None:
            raise InferenceError("This ONNX Runtime session is closed.")
        try:
            return session.run(self._output_names, feeds)
        except Exception as exc:  # noqa: BLE001 - ORT's own types: InvalidArgument is the input's fault
            from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

            if isinstance(exc, InvalidArgument):  # feeds of the wrong name, type or shape
                raise InputError(f"ONNX Runtime rejected the inputs: {first_line(exc)}") from None
            raise InferenceError(f"ONNX Runtime failed while running the model: {first_line(exc)}") from None

    def close(self) -> None:
        self._session = None


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    open_options = (Option("providers", "list", None, "ONNX Runtime execution providers, in order of preference "
                           "(default: CPUExecutionProvider; CUDAExecutionProvider where onnxruntime-gpu is installed)."),)
    formats = ("onnx",)
    suffixes = {".onnx": "onnx"}
    modules = ("onnxruntime",)
    reference = True  # runs .onnx source models for the outputs artifacts are checked against
    dynamic_batch = True
    dynamic_shapes = True
    extra = "onnx"
    # On x86 CPUs the QDQ INT8 kernels are the fastest; FP16 runs through casts on the CPU provider.
    precision_preference = ("int8", "fp32", "fp16")
    # Behind TensorRT on NVIDIA (with its CUDA/TensorRT providers where installed), beside OpenVINO on x86,
    # behind TFLite on ARM.
    device_rank = {"jetson": 10, "nvidia": 10, "x86": 11, "rpi": 20, "arm": 20, "android": 20}
    checks_formats = ("tensorrt",)

    def load(self, path: Path, threads: int | None = None, **options: Any) -> OrtSession:
        return OrtSession(path, threads, options["providers"])

    def info(self) -> dict[str, Any]:
        info = super().info()
        if info["available"]:
            import onnxruntime as ort

            info["providers"] = ort.get_available_providers()
            info["device"] = ort.get_device()
        return info


BACKEND = OnnxRuntimeBackend()
