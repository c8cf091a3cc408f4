"""OpenVINO target: IR (model.xml + model.bin) via openvino.convert_model + save_model.

The route is source -> ONNX (edgesdk's own export, or the bundle's ONNX artifact) -> IR: it keeps input
names and dynamic batch identical across formats and measured 1.5e-5 max abs error on
EfficientNet-Lite0. FP32 is saved uncompressed (save_model compresses to FP16 by default), FP16 with
compressed weights, bf16 is the FP32 IR run with the bf16 hint, INT8 comes from nncf.quantize fed by
the CalibrationSet."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Any

from ...core.bundle import Artifact
from ...core.errors import CalibrationError, ConversionError
from ...core.hardware import read_profile
from ...core.options import Option
from ...core.records import Quantization
from ..int8 import recorded
from . import ConversionJob, Converter, onnx_for

log = logging.getLogger(__name__)

#: CPUs whose int8 dot products cannot overflow, so NNCF's overflow fix (which halves weight range on
#: the first layers) only costs accuracy: -3.6 points of top-1 agreement on EfficientNet-Lite0 here.
VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}


def _quantize_transformer(model: Any, job: ConversionJob, tail: list[str]) -> tuple[Any, Quantization]:
    """Attention graphs: with calibration data, NNCF's transformer preset (SmoothQuant, mixed symmetric /
    asymmetric activations; cosine 0.998 on MiniLM where the CNN recipe gave 0.07); without, weight-only
    INT8 (compress_weights, cosine 0.9995, no activation ranges to learn)."""
    import nncf

    calib = job.calibration
    details = {"recipe": "transformer", "graph": "transformer"}
    captured = io.StringIO()  # nncf draws progress bars on stdout
    with contextlib.redirect_stdout(captured):
        if calib is None:
            quantized = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
            return quantized, Quantization(method="nncf.compress_weights (transformer recipe)",
                                           weights="int8 per-channel asymmetric", activations="float",
                                           details=details)
        calib.check_representative()
        quantized = nncf.quantize(
            model, nncf.Dataset(list(calib)), subset_size=len(calib), model_type=nncf.ModelType.TRANSFORMER,
            ignored_scope=nncf.IgnoredScope(names=tail, validate=False) if tail else None)
    return quantized, Quantization(method="nncf.quantize model_type=TRANSFORMER (SmoothQuant)",
                                   weights="int8 per-channel", activations="int8", float_nodes=list(tail),
                                   calibration_samples=len(calib), calibration_source=calib.source, details=details)


def _quantize(model: Any, job: ConversionJob, tail: list[str]) -> tuple[Any, Quantization]:
    import nncf

    calib = job.calibration
    if calib is None:
        raise CalibrationError("OpenVINO INT8 needs calibration data: pass calib= (a folder of images, a "
                               ".npy/.npz, or an iterable of inputs) or --calib on the CLI.")
    calib.check_representative()
    overflow = job.options["openvino_int8_overflow_fix"]
    if overflow == "auto":
        overflow = "disable" if VNNI_FLAGS & set(read_profile().flags) else "first_layer_only"
    # OpenVINO op names to keep in float. Default: the element-wise output tail (a detector's box
    # decoding; OpenVINO keeps the ONNX node names), not the stem conv (that bought nothing here).
    given = job.options["openvino_float_nodes"]
    ignored = list(given) if given is not None else list(tail)
    # Bias correction: the fast one suited EfficientNet-Lite0 (97.6% vs 96.8% with the full one); the full
    # one keeps a detector's box regression (0.12 vs 2.8 points mAP@0.5:0.95 lost). "auto" goes by task.
    correction = job.options["openvino_int8_fast_bias_correction"]
    fast = job.task != "detection" if correction == "auto" else correction == "fast"
    params = nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix(overflow))
    captured = io.StringIO()  # nncf draws progress bars on stdout
    with contextlib.redirect_stdout(captured):
        quantized = nncf.quantize(
            model, nncf.Dataset(list(calib)), subset_size=len(calib),
            fast_bias_correction=bool(fast),
            ignored_scope=nncf.IgnoredScope(names=ignored, validate=False) if ignored else None,
            advanced_parameters=params,
        )
    record = Quantization(method="nncf.quantize", weights="int8 per-channel", activations="int8",
                          float_nodes=list(ignored or []), calibration_samples=len(calib), calibration_source=calib.source,
                          details={"preset": "performance", "overflow_fix": overflow, "fast_bias_correction": bool(fast)})
    return quantized, record


class OpenVINOConverter(Converter):
    name = "openvino"
    precisions = ("fp32", "fp16", "bf16", "int8")
    int8_recipes = ("auto", "cnn", "transformer")
    modules = ("openvino",)
    extra = "openvino"
    options = (
        Option("openvino_float_nodes", "list", None, "OpenVINO op names NNCF keeps in float (default: the output "
               "tail); 'none' quantizes every op."),
        Option("openvino_int8_overflow_fix", "str", "auto", "NNCF's overflow fix (auto: disabled on VNNI/AMX CPUs).",
               choices=("auto", "enable", "disable", "first_layer_only"), renamed_from=("int8_overflow_fix",)),
        Option("openvino_int8_fast_bias_correction", "str", "auto", "NNCF bias correction: fast, full, or auto (full "
               "for detectors, fast otherwise).", choices=("auto", "fast", "full"),
               renamed_from=("int8_fast_bias_correction",)),
    )
    presets = {"x86": ("fp32", "int8")}

    def convert(self, job: ConversionJob) -> list[Artifact]:
        import openvino as ov

        self.require()
        logging.getLogger("nncf").setLevel(logging.WARNING)
        versions = {"openvino": ov.get_version().split("-")[0]}
        (job.stage / "openvino").mkdir(exist_ok=True)
        model, tail, recipe = _read_model(job)
        layout = job.source.inputs[0].layout if job.source.inputs else None
        made: list[Artifact] = []
        for precision in job.precisions:
            file, quant = self._one_precision(precision, model, job, tail, versions, recipe)
            made.append(Artifact(file=file, format="openvino", precision=precision, layout=layout,
                                 versions=dict(versions), quantization=quant,
                                 companions={file[: -len(".xml")] + ".bin": ""}))
        return made

    def _one_precision(self, precision: str, model: Any, job: ConversionJob, tail: list[str],
                       versions: dict[str, str], recipe: str) -> tuple[str, Quantization]:
        """Save one precision's IR (FP32 and BF16 share one file); (its bundle path, quantization record)."""
        import openvino as ov

        def save(m: Any, stem: str, compress: bool) -> str:
            if not (job.stage / "openvino" / f"{stem}.xml").exists():
                ov.save_model(m, str(job.stage / "openvino" / f"{stem}.xml"), compress_to_fp16=compress)
            return f"openvino/{stem}.xml"

        if precision == "fp32":
            return save(model, "model", compress=False), Quantization()
        if precision == "bf16":
            return save(model, "model", compress=False), Quantization(
                method="bf16 execution (INFERENCE_PRECISION_HINT) on the FP32 IR")
        if precision == "fp16":
            return save(model, "model.fp16", compress=True), Quantization()
        if precision == "int8":
            import nncf

            versions["nncf"] = nncf.__version__
            quantize = _quantize_transformer if recipe == "transformer" else _quantize
            quantized, quant = quantize(model, job, tail)
            return save(quantized, "model.int8", compress=False), recorded(quant, recipe)
        raise ConversionError(f"OpenVINO has no precision '{precision}'; choose from {self.precisions}.")


def _read_model(job: ConversionJob) -> tuple[Any, list[str], str]:
    """(the OpenVINO model of the FP32 ONNX this target builds from, the output-tail nodes NNCF leaves
    in float when INT8 is asked for, and the INT8 recipe the graph calls for, read while the ONNX is here)."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = onnx_for(job, Path(tmp))
        tail: list[str] = []
        recipe = "cnn"
        if "int8" in job.precisions:
            import onnx

            from ..int8 import int8_recipe, output_tail

            graph = onnx.load(str(onnx_path), load_external_data=False)
            tail, recipe = output_tail(graph), int8_recipe(graph, job.options)
        try:
            return ov.convert_model(str(onnx_path)), tail, recipe
        except Exception as exc:  # OpenVINO's message ends with the cause ("... not supported: Op"), after a C++ trace
            raise ConversionError(f"OpenVINO could not convert the model: {str(exc).strip().splitlines()[-1]}"
                                  ) from None


CONVERTER = OpenVINOConverter()
