"""TensorRT target. Engines are tied to the TensorRT version and the GPU they were built on, so a
bundle normally carries what the device builds its engine from, and the tensorrt backend builds and
caches the engine on the device at first load:

- fp32 / fp16: the FP32 ONNX file (fp16 is a builder flag, not a different file);
- int8: a QDQ ONNX file with *symmetric int8* activations and weights (explicit quantization),
  calibrated by edgesdk on the CalibrationSet. TensorRT 10 deprecates implicit INT8 calibrators, and it
  rejects the uint8 activations that suit x86 ONNX Runtime, so this is its own artifact. Its accuracy is
  checked on ONNX Runtime at conversion (the same graph TensorRT will quantize as written).

Where TensorRT and a GPU are present at conversion (a Jetson converting for itself), the engines are
built right away as well (option tensorrt_build_now)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from ...core.bundle import Artifact
from ...core.options import Option
from ...core.records import Quantization
from . import ConversionJob, Converter, onnx_for

log = logging.getLogger(__name__)


class TensorRTConverter(Converter):
    name = "tensorrt"
    precisions = ("fp32", "fp16", "int8")
    int8_recipes = ("auto", "cnn")  # its QDQ INT8 is symmetric and static: the transformer recipe is not applied
    modules = ("onnx", "onnxruntime")  # the artifacts are ONNX; TensorRT itself is needed only on the device
    optional = ("tensorrt",)
    extra = "onnx"
    options = (Option("tensorrt_build_now", "bool", False, "Build the engines at conversion (needs TensorRT and "
                      "the target GPU here); normally they are built on the device at first load.", cli=False),)
    presets = {"jetson": ("fp16", "int8")}  # engines are built on the Jetson itself

    def convert(self, job: ConversionJob) -> list[Artifact]:
        import onnxruntime

        from .onnx import quantize_int8

        self.require()
        folder = job.stage / "tensorrt"
        folder.mkdir(exist_ok=True)
        made: list[Artifact] = []
        layout = job.source.inputs[0].layout if job.source.inputs else None
        with tempfile.TemporaryDirectory() as tmp:
            own = next((a for a in job.artifacts if a.format == "onnx" and a.precision == "fp32"), None)
            if own is not None:  # the bundle's FP32 ONNX artifact is what the engine is built from: no copy
                fp32_file = own.file
            else:
                fp32_file = "tensorrt/model.onnx"
                shutil.copy(onnx_for(job, Path(tmp)), job.stage / fp32_file)
            fp32 = job.stage / fp32_file
            versions = {"onnxruntime": onnxruntime.__version__}
            for precision in job.precisions:
                build = {"engine": "built on the device at first load, cached by TensorRT version + GPU + precision",
                         "builder_precision": precision}
                if precision in ("fp32", "fp16"):
                    file = fp32_file
                    quant = Quantization(details=build)
                else:
                    out = folder / "model.int8.qdq.onnx"
                    quant = quantize_int8(fp32, out, job, symmetric=True)
                    quant.details.update(build, purpose="TensorRT explicit quantization (symmetric int8 Q/DQ)")
                    file = "tensorrt/model.int8.qdq.onnx"
                made.append(Artifact(file=file, format="tensorrt", precision=precision, layout=layout,
                                     versions=dict(versions), quantization=quant))
        if job.options["tensorrt_build_now"]:
            from ...backends.tensorrt import BACKEND

            for art in made:
                BACKEND.open(job.stage / art.file, precision=art.precision)  # builds and caches the engine
        return made


CONVERTER = TensorRTConverter()
