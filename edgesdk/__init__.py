"""edgesdk: take a trained PyTorch model to an edge device and run it there fast.

    import edgesdk
    bundle = edgesdk.convert(model, example_input, targets=["onnx"], precisions=["fp32", "int8"],
                             calib="photos/", out="build/effnet")
    rt = edgesdk.Runtime("build/effnet")
    logits = rt.run(x)

`import edgesdk` needs only numpy; converters and backends import their libraries when used."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (BackendUnavailable, CalibrationError, ConversionError, EdgeSDKError, InputError,
                     ModelLoadError)
from .specs import Preprocess, TensorSpec

__version__ = "0.1.0"

__all__ = [
    "Runtime", "convert", "load_bundle", "benchmark", "CalibrationSet", "Preprocess", "TensorSpec", "Tolerance",
    "EdgeSDKError", "ModelLoadError", "ConversionError", "BackendUnavailable", "InputError", "CalibrationError",
]

_LAZY = {
    "Runtime": ("runtime", "Runtime"),
    "convert": ("convert", "convert"),
    "load_bundle": ("bundle", "load_bundle"),
    "Bundle": ("bundle", "Bundle"),
    "benchmark": ("bench", "benchmark"),
    "CalibrationSet": ("calibration", "CalibrationSet"),
    "Tolerance": ("parity", "Tolerance"),
}

if TYPE_CHECKING:
    from .bench import benchmark
    from .bundle import Bundle, load_bundle
    from .calibration import CalibrationSet
    from .convert import convert
    from .parity import Tolerance
    from .runtime import Runtime


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'edgesdk' has no attribute '{name}'")
