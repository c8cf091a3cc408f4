"""OpenVINO backend: runs OpenVINO IR (model.xml + model.bin) and ONNX files on CPU (or AUTO/GPU/NPU).

Precision honesty: on CPUs with AVX512_BF16 or AMX, OpenVINO executes an FP32 model in bf16 unless told
otherwise. An fp32 artifact therefore runs with INFERENCE_PRECISION_HINT=f32; bf16 is its own opt-in
precision (an artifact of precision "bf16" runs with the bf16 hint, and says so)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import BackendUnavailable, InferenceError, ModelLoadError
from ..core.options import Option
from ..core.specs import TensorSpec, check_feeds, guess_layout
from .base import Backend
from .pool import WorkerPool

log = logging.getLogger(__name__)

_OV_DTYPES = {"f32": "float32", "f16": "float16", "f64": "float64", "i64": "int64", "i32": "int32", "i8": "int8",
              "u8": "uint8", "boolean": "bool"}


_PRECISION_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def _spec(port: Any) -> TensorSpec:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    dtype = _OV_DTYPES.get(port.get_element_type().get_type_name(), port.get_element_type().get_type_name())
    return TensorSpec(port.get_any_name(), shape, dtype, guess_layout(shape))


def _last_line(exc: BaseException) -> str:
    """OpenVINO puts the cause on the last line of its messages (after the source locations)."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1].strip() if lines else exc.__class__.__name__


class OpenVINOSession:
    """A compiled OpenVINO model behind the Session protocol. An infer request holds its inputs and
    outputs between infer() and the read, so each call borrows a request of its own from a pool: one
    shared request returned other threads' results."""

    def __init__(self, compiled: Any, config: dict[str, Any], precision: str | None = None):
        self._compiled = compiled
        self._requests = WorkerPool(compiled.create_infer_request, compiled.create_infer_request())
        self.config = config
        self.inputs = [_spec(p) for p in compiled.inputs]
        self.outputs = [_spec(p) for p in compiled.outputs]
        # A tensor may carry several names (the ONNX output's and its producer's): all of them match.
        self.input_aliases = [set(p.get_names()) for p in compiled.inputs]
        self.output_aliases = [set(p.get_names()) for p in compiled.outputs]
        # What the plugin really computes float layers in, read back rather than assumed.
        try:
            value = compiled.get_property("INFERENCE_PRECISION_HINT")
        except Exception:  # noqa: BLE001 - AUTO/MULTI do not report it: say what was asked for
            value = config["INFERENCE_PRECISION_HINT"]
        hint = str(value.get_type_name() if hasattr(value, "get_type_name") else value).lower()
        floating = _PRECISION_NAMES.get(hint, hint)
        self.execution_precision = f"int8+{floating}" if precision == "int8" else floating

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Thread-safe: the request is this call's alone from infer() until its outputs are copied."""
        check_feeds(self.inputs, feeds)
        return self.run_unchecked(feeds)

    def run_unchecked(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._compiled is None:
            raise InferenceError("This OpenVINO session is closed.")
        pool = self._requests
        request = pool.take()
        try:
            self._set_inputs(request, feeds)
            request.infer()
            return [request.get_output_tensor(i).data.copy() for i in range(len(self.outputs))]
        except Exception as exc:  # noqa: BLE001 - inputs were checked: this is OpenVINO failing
            raise InferenceError(f"OpenVINO failed while running the model: {_last_line(exc)}") from None
        finally:
            pool.give(request)

    def _set_inputs(self, request: Any, feeds: dict[str, np.ndarray]) -> None:
        """Copy each input into the request's own tensor when the shape is the same (no Python-side
        dispatch: half of infer(feeds)'s cost on a tiny model); a new shape gets a tensor of its own."""
        for i, spec in enumerate(self.inputs):
            x = feeds[spec.name]
            data = request.get_input_tensor(i).data  # a view of the request's buffer
            if data.shape == x.shape:
                data[...] = x
            else:  # a copy, never the caller's array: the request keeps its tensor after this call
                import openvino as ov

                request.set_input_tensor(i, ov.Tensor(np.array(x, order="C")))

    def run_many(self, feeds_list: list[dict[str, np.ndarray]]) -> tuple[list[list[np.ndarray]], list[float]]:
        """Run many batches through a pool of asynchronous infer requests (OpenVINO's throughput path).
        Returns the outputs in input order and each request's latency in seconds."""
        import openvino as ov

        for feeds in feeds_list:
            check_feeds(self.inputs, feeds)
        n_out = len(self.outputs)
        results: list[list[np.ndarray] | None] = [None] * len(feeds_list)
        latencies = [0.0] * len(feeds_list)

        def done(request: Any, userdata: tuple[int, float]) -> None:
            index, started = userdata
            latencies[index] = time.perf_counter() - started
            results[index] = [request.get_output_tensor(i).data.copy() for i in range(n_out)]

        queue = ov.AsyncInferQueue(self._compiled, self.requests)
        queue.set_callback(done)
        try:
            for index, feeds in enumerate(feeds_list):
                queue.get_idle_request_id()  # wait for a free request first: latency excludes queueing
                queue.start_async(feeds, (index, time.perf_counter()))
            queue.wait_all()
        except Exception as exc:  # noqa: BLE001 - inputs were checked: this is OpenVINO failing
            raise InferenceError(f"OpenVINO failed while running the model: {_last_line(exc)}") from None
        return [r for r in results if r is not None], latencies

    @property
    def requests(self) -> int:
        """How many infer requests OpenVINO finds optimal for this model and hint (1 under LATENCY)."""
        try:
            return int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        except Exception:  # noqa: BLE001 - a plugin without the property gets OpenVINO's own choice
            return 0

    def close(self) -> None:
        self._requests.clear()
        self._compiled = None


class OpenVINOBackend(Backend):
    name = "openvino"
    open_options = (Option("device", "str", "CPU", "The OpenVINO device: CPU, GPU, NPU, AUTO (or AUTO:GPU,CPU ...)."),)
    formats = ("openvino", "onnx")
    suffixes = {".xml": "openvino"}
    modules = ("openvino",)
    dynamic_batch = True
    dynamic_shapes = True
    extra = "openvino"
    precision_preference = ("int8", "fp32", "fp16", "bf16")
    # On x86, in ONNX Runtime's tier and ahead of it when nothing was measured (usually faster there).
    device_rank = {"x86": 10, "nvidia": 30, "jetson": 40, "rpi": 30, "arm": 30, "android": 40}

    def __init__(self) -> None:
        self._core: Any = None

    def core(self) -> Any:
        if self._core is None:
            import openvino as ov

            self._core = ov.Core()
        return self._core

    def load(self, path: Path, threads: int | None = None, **options: Any) -> OpenVINOSession:
        if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").is_file():
            raise ModelLoadError(f"OpenVINO IR {path} needs its weights file {path.with_suffix('.bin').name} "
                                 "beside it; it is missing. Re-convert or copy both files.")
        precision = options["precision"]
        config: dict[str, Any] = {
            # LATENCY: one stream, every core on one request. THROUGHPUT: several streams fed by async requests.
            "PERFORMANCE_HINT": "THROUGHPUT" if options["mode"] == "throughput" else "LATENCY",
            # An fp32 artifact runs in f32; only an artifact of precision bf16 opts in to bf16.
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        device = options["device"].upper()
        try:
            present = list(self.core().available_devices)
        except Exception as exc:  # noqa: BLE001 - a broken plugin or install: say so, let the Runtime fall back
            raise BackendUnavailable(f"OpenVINO could not start ({_last_line(exc)}).") from None
        if device.split(":")[0] not in ("AUTO", "MULTI", "HETERO") and device not in present:
            raise BackendUnavailable(f"OpenVINO device '{device}' is not present here; this machine has "
                                     f"{', '.join(present)}. Use one of those or device='AUTO'.")
        try:
            model = self.core().read_model(str(path))
            compiled = self.core().compile_model(model, device, config)
        except Exception as exc:
            raise ModelLoadError(f"OpenVINO cannot load {path}: {_last_line(exc)}. The file may be truncated or "
                                 "corrupt (check the .xml and the .bin), or use an unsupported operator.") from None
        return OpenVINOSession(compiled, config, precision)

    def info(self) -> dict[str, Any]:
        info = super().info()
        if info["available"]:
            try:
                info["devices"] = list(self.core().available_devices)
            except Exception as exc:  # a broken plugin should not break doctor
                info["devices"] = f"unknown ({_last_line(exc)})"
        return info


BACKEND = OpenVINOBackend()
