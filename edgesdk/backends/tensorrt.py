"""TensorRT backend: runs serialized engines (.engine/.plan) and builds them on the device from a bundle's
ONNX files (FP32 / FP16 from the FP32 ONNX, INT8 from the symmetric QDQ ONNX), caching each engine under
a key of TensorRT version + GPU name + precision + the ONNX file's sha256, with a timing cache beside it.

Written against NVIDIA's documented Python API (TensorRT 10: explicit batch, named I/O tensors,
execute_async_v3) and cuda-python's cudart for device memory. The tensorrt package and a GPU are not
available where this project is tested: everything that runs without them (availability, cache keys,
build settings, errors) is tested; the lines that touch a GPU are kept few and plain."""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.cache import cache_dir
from ..core.errors import BackendUnavailable, InferenceError, InputError, ModelLoadError
from ..core.specs import TensorSpec, guess_layout
from .base import Backend

log = logging.getLogger(__name__)

WORKSPACE_BYTES = 1 << 30  # builder scratch memory (1 GiB; Jetson Orin Nano has 8 GB shared)


@dataclass(frozen=True)
class BuildSettings:
    """What the builder is asked for; a pure function of the request, so it is testable anywhere."""

    flags: tuple[str, ...]  # trt.BuilderFlag names
    dynamic_batch: tuple[int, int, int] | None  # (min, opt, max) for a dynamic first dimension

    @classmethod
    def for_precision(cls, precision: str, dynamic: bool, max_batch: int = 8) -> BuildSettings:
        flags = {"fp32": (), "fp16": ("FP16",),
                 # Explicit quantization: the Q/DQ nodes fix the int8 layers; FP16 lets the rest run in half.
                 "int8": ("INT8", "FP16")}.get(precision)
        if flags is None:
            raise ModelLoadError(f"TensorRT has no precision '{precision}'; use fp32, fp16 or int8.")
        return cls(flags, (1, max(1, max_batch // 2), max_batch) if dynamic else None)


def engine_cache_key(trt_version: str, gpu_name: str, precision: str, onnx_sha256: str) -> str:
    """Engines are valid only for the TensorRT version and GPU that built them."""
    safe_gpu = "".join(c if c.isalnum() else "-" for c in gpu_name).strip("-").lower()
    return f"trt{trt_version}-{safe_gpu}-{precision}-{onnx_sha256[:16]}"


def gpu_name() -> str:
    """The name of CUDA device 0, or BackendUnavailable when there is none."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise BackendUnavailable("TensorRT needs cuda-python for device memory (pip install cuda-python); "
                                     "it is not installed.") from None
    err, props = cudart.cudaGetDeviceProperties(0)
    if int(err) != 0:
        raise BackendUnavailable(f"No CUDA GPU is usable here (cudaGetDeviceProperties: {err}).")
    name = props.name
    return name.decode(errors="replace").strip("\x00") if isinstance(name, bytes) else str(name)


class TensorRTSession:
    """A deserialized engine with an execution context, device buffers and a CUDA stream."""

    def __init__(self, engine: Any, trt: Any, cudart: Any):
        self._engine, self._trt, self._cudart = engine, trt, cudart
        self._context = engine.create_execution_context()
        err, self._stream = cudart.cudaStreamCreate()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs = [self._spec(n) for n in names if is_input[n]]
        self.outputs = [self._spec(n) for n in names if not is_input[n]]
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._lock = threading.Lock()

    def _spec(self, name: str) -> TensorSpec:
        shape = tuple(int(d) if d >= 0 else None for d in self._engine.get_tensor_shape(name))
        dtype = np.dtype(self._trt.nptype(self._engine.get_tensor_dtype(name))).name
        return TensorSpec(name, shape, dtype, guess_layout(shape))

    def _device(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self._cudart.cudaFree(ptr)
            _, ptr = self._cudart.cudaMalloc(nbytes)
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Serialized: one execution context, its device buffers and stream serve one call at a time."""
        with self._lock:
            return self._run(feeds)

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        cudart, ctx = self._cudart, self._context
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for spec in self.inputs:
            x = np.ascontiguousarray(feeds[spec.name], dtype=spec.dtype)
            if not ctx.set_input_shape(spec.name, x.shape):
                raise InputError(f"TensorRT rejected shape {list(x.shape)} for input '{spec.name}' "
                                 f"(engine: {list(spec.shape)}).")
            ptr = self._device(spec.name, x.nbytes)
            cudart.cudaMemcpyAsync(ptr, x.ctypes.data, x.nbytes, h2d, self._stream)
            ctx.set_tensor_address(spec.name, ptr)
        outs = []
        for spec in self.outputs:
            out = np.empty(tuple(ctx.get_tensor_shape(spec.name)), dtype=spec.dtype)
            ctx.set_tensor_address(spec.name, self._device(spec.name, out.nbytes))
            outs.append(out)
        if not ctx.execute_async_v3(self._stream):
            raise InferenceError("TensorRT failed to run the engine (execute_async_v3 returned false).")
        for spec, out in zip(self.outputs, outs):
            cudart.cudaMemcpyAsync(out.ctypes.data, self._buffers[spec.name][0], out.nbytes, d2h, self._stream)
        cudart.cudaStreamSynchronize(self._stream)
        return outs

    def close(self) -> None:
        for ptr, _ in self._buffers.values():
            self._cudart.cudaFree(ptr)
        self._buffers.clear()
        if self._stream is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self._context = self._engine = None


class TensorRTBackend(Backend):
    name = "tensorrt"
    needs_hardware = "an NVIDIA GPU host with TensorRT"
    formats = ("tensorrt",)
    suffixes = {".engine": "tensorrt", ".plan": "tensorrt"}
    modules = ("tensorrt",)
    dynamic_batch = True
    extra = "tensorrt"
    precision_preference = ("int8", "fp16", "fp32")
    device_rank = {"jetson": 0, "nvidia": 0}  # first wherever it can run at all

    def installed(self) -> tuple[bool, str]:
        try:
            trt = importlib.import_module("tensorrt")
        except ImportError:
            return False, ("the tensorrt package is not installed: it comes with JetPack on a Jetson, and from "
                           "NVIDIA's package index on a GPU host (pip install tensorrt --extra-index-url "
                           "https://pypi.nvidia.com), not from PyPI's CPU-only machines")
        try:
            gpu = gpu_name()
        except BackendUnavailable as exc:
            return False, str(exc)
        return True, f"{trt.__version__} on {gpu}"

    def load(self, path: Path, threads: int | None = None, **options: Any) -> TensorRTSession:
        import tensorrt as trt

        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        logger = trt.Logger(trt.Logger.WARNING)
        if path.suffix.lower() == ".onnx":
            engine_bytes = self.engine_for(path, options["precision"] or "fp32", trt, logger)
        else:
            engine_bytes = path.read_bytes()
        engine = trt.Runtime(logger).deserialize_cuda_engine(engine_bytes)
        if engine is None:
            raise ModelLoadError(f"TensorRT cannot deserialize {path}: engines only load on the TensorRT version "
                                 "and GPU that built them. Rebuild it here from the bundle's ONNX file.")
        return TensorRTSession(engine, trt, cudart)

    def engine_for(self, onnx_path: Path, precision: str, trt: Any, logger: Any) -> bytes:
        """The cached engine for this ONNX file, TensorRT version, GPU and precision; built if missing."""
        from ..core.bundle import sha256_of

        folder = cache_dir() / "tensorrt"
        key = engine_cache_key(trt.__version__, gpu_name(), precision, sha256_of(onnx_path))
        cached = folder / f"{key}.engine"
        if cached.is_file():
            log.info("TensorRT engine from the cache: %s", cached)
            return cached.read_bytes()
        log.warning("Building a TensorRT %s engine for %s on this device (minutes on a Jetson; cached after).",
                    precision, onnx_path.name)
        folder.mkdir(parents=True, exist_ok=True)
        data = self._build(onnx_path, precision, trt, logger, folder / f"timing-trt{trt.__version__}.cache")
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".partial")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, cached)
        return data

    @staticmethod
    def _build(onnx_path: Path, precision: str, trt: Any, logger: Any, timing_cache: Path) -> bytes:
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ModelLoadError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
        inputs = [network.get_input(i) for i in range(network.num_inputs)]
        dynamic = any(inp.shape[0] == -1 for inp in inputs)
        settings = BuildSettings.for_precision(precision, dynamic)
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        for flag in settings.flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        if settings.dynamic_batch:
            profile = builder.create_optimization_profile()
            for inp in inputs:
                rest = tuple(inp.shape)[1:]
                lo, opt, hi = settings.dynamic_batch
                profile.set_shape(inp.name, (lo, *rest), (opt, *rest), (hi, *rest))
            config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ModelLoadError(f"TensorRT could not build a {precision} engine from {onnx_path.name}; "
                                 "its log above says which layer failed.")
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
        return bytes(serialized)

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["engine cache"] = str(cache_dir() / "tensorrt")
        return info


BACKEND = TensorRTBackend()
