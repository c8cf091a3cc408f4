"""ONNX target: torch.onnx.export (the dynamo exporter, the legacy TorchScript exporter as fallback),
simplified by onnxslim into one self-contained file; FP16 by onnxruntime's float16 converter with
float32 I/O; INT8 by onnxruntime.quantization (static QDQ per-channel from the CalibrationSet, or
dynamic for Linear/LSTM-heavy models without calibration data)."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Any

from ...core.bundle import Artifact
from ...core.errors import CalibrationError, ConversionError
from ...core.options import Option
from ...core.records import Quantization
from ..int8 import activation_matmuls, batched_weight_matmuls, graph_kind, int8_recipe, output_tail, recorded
from ..onnx_tools import DEFAULT_OPSET, describe_error, save_slim  # noqa: F401 - DEFAULT_OPSET re-exported
from . import ConversionJob, Converter, export_source

log = logging.getLogger(__name__)

#: For onnx_int8_method="percentile": activation ranges from this percentile of the calibration histogram,
#: for models whose activations have rare outliers (unbounded ReLU/SiLU). Models built with ReLU6 (the
#: edge families: MobileNet, EfficientNet-Lite) calibrate as well or better with MinMax, 5x faster.
DEFAULT_PERCENTILE = 99.99
DYNAMIC_FRIENDLY_OPS = {"MatMul", "Gemm", "LSTM", "GRU", "Attention"}


def _stem_convs(model: Any) -> list[str]:
    """The first Conv fed by a graph input: it sees raw pixels, its INT8 error hurts most, and its
    FP32 cost is small. Keeping it in float was worth +0.8 to +2.8 points of top-1 agreement on
    EfficientNet-Lite0; also keeping the classifier in float bought nothing there and cost speed."""
    inputs = {i.name for i in model.graph.input}
    return [n.name for n in model.graph.node if n.op_type == "Conv" and n.input[0] in inputs][:1]


def quantize_int8(fp32: Path, out: Path, job: ConversionJob, symmetric: bool = False) -> Quantization:
    """Write the INT8 model; return the quantization record for the manifest.

    symmetric=False: uint8 activations, the fast pair on x86 ONNX Runtime. symmetric=True: int8
    activations with zero point 0, what TensorRT's explicit quantization accepts (it rejects uint8)."""
    import onnx

    model = onnx.load(str(fp32))
    if not symmetric and int8_recipe(model, job.options) == "transformer":
        return _quantize_transformer(fp32, out, model)
    calib = job.calibration
    if calib is None:
        return recorded(_quantize_dynamic(fp32, out, {n.op_type for n in model.graph.node}), "cnn")
    calib.check_representative()
    method = job.options["onnx_int8_method"]
    exclude = job.options["onnx_float_nodes"]
    if exclude is None:  # default: the stem conv and the element-wise output tail stay in float
        exclude = _stem_convs(model) + output_tail(model)
    extra = _static_settings(method, job, symmetric)
    with tempfile.TemporaryDirectory() as tmp:
        _quantize_static(_pre_processed(fp32, Path(tmp) / "pre.onnx"), out, calib, method, exclude, extra, symmetric)
    return recorded(Quantization(
        method="static QDQ",
        activations="int8 per-tensor symmetric" if symmetric else "uint8 per-tensor",
        weights="int8 per-channel symmetric",
        calibration=f"{method}" + (f" {extra['CalibPercentile']}" if "CalibPercentile" in extra else ""),
        calibration_samples=len(calib), calibration_source=calib.source, float_nodes=list(exclude),
    ), "cnn")


def _quantize_transformer(fp32: Path, out: Path, model: Any) -> Quantization:
    """Attention graphs: per-channel int8 weights of every MatMul/Gemm with a weight, activations
    quantized per call (dynamic), the activation-by-activation MatMuls of attention left in float. Static
    ranges calibrated on every op gave cosine 0.34 on MiniLM; this keeps 0.99+ and needs no calibration.
    A MatMul whose weight is batched (rank 3: DeBERTa's relative-position keys, folded to a constant by
    torch.export) stays float too: ONNX Runtime's DynamicQuantizeMatMul fails on it at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    kept = activation_matmuls(model) + batched_weight_matmuls(model)
    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=kept)
    return Quantization(method="dynamic (transformer recipe)", weights="int8 per-channel symmetric",
                        activations="quantized per call (dynamic)", float_nodes=kept,
                        details={"recipe": "transformer", "graph": graph_kind(model)})


def _quantize_dynamic(fp32: Path, out: Path, ops: set[str]) -> Quantization:
    """Without calibration data: dynamic INT8, which suits Linear/LSTM models and is wrong for CNNs."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if "Conv" in ops or not ops & DYNAMIC_FRIENDLY_OPS:
        raise CalibrationError(
            "INT8 for this model needs calibration data: pass calib= (a folder of images, a .npy/.npz, or an "
            "iterable of inputs) or --calib on the CLI. Dynamic quantization is wrong for convolutional models.")
    log.info("No calibration data: using dynamic INT8 quantization, which fits this "
             "Linear/LSTM model (weights int8, activations quantized at run time).")
    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8)
    return Quantization(method="dynamic", weights="int8 per-tensor", activations="quantized at run time")


def _static_settings(method: str, job: ConversionJob, symmetric: bool) -> dict[str, Any]:
    """onnxruntime.quantization's extra_options for the calibration method and activation symmetry."""
    extra: dict[str, Any] = {"ActivationSymmetric": True, "WeightSymmetric": True} if symmetric else {}
    if method == "percentile":
        extra["CalibPercentile"] = job.options["onnx_int8_percentile"]
    elif method != "minmax":
        raise ConversionError(f"Unknown INT8 calibration method '{method}': use percentile or minmax.")
    return extra


def _pre_processed(fp32: Path, pre: Path) -> Path:
    """quant_pre_process's output (shape inference, fusions) at pre, or the model as is where it fails."""
    from onnxruntime.quantization import quant_pre_process

    fp32, pre = Path(fp32).resolve(), Path(pre).resolve()
    try:
        # Where symbolic shape inference is incomplete, ONNX Runtime dumps sym_shape_infer_temp.onnx and a
        # <uuid>.data into the working folder: run it from pre's folder (a temporary one), not the user's.
        with contextlib.chdir(pre.parent):
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=False)
        return pre
    except Exception as exc:  # noqa: BLE001 - pre-processing is an optimization
        log.info("quant_pre_process failed (%s); quantizing the model as is.", describe_error(exc))
        return fp32


def _quantize_static(model: Path, out: Path, calib: Any, method: str, exclude: list[str], extra: dict[str, Any],
                     symmetric: bool) -> None:
    """Static QDQ, per-channel int8 weights, calibrated on the CalibrationSet."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        """Feeds the CalibrationSet to onnxruntime.quantization."""

        def __init__(self) -> None:
            self._iter = iter(calib)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._iter, None)

    captured = io.StringIO()  # the percentile calibrator prints its progress
    with contextlib.redirect_stdout(captured):
        quantize_static(
            str(model), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile if method == "percentile" else CalibrationMethod.MinMax,
            nodes_to_exclude=exclude, extra_options=extra)
    log.debug("%s", captured.getvalue())


def convert_fp16(fp32: Path, out: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    onnx.save(model, str(out))


class OnnxConverter(Converter):
    name = "onnx"
    precisions = ("fp32", "fp16", "int8")
    int8_recipes = ("auto", "cnn", "transformer")
    modules = ("onnx", "onnxruntime", "onnxslim")
    extra = "onnx"
    options = (
        Option("onnx_int8_method", "str", "minmax", "How INT8 activation ranges are calibrated (percentile suits "
               "unbounded activations).", choices=("minmax", "percentile"), renamed_from=("int8_method",)),
        Option("onnx_int8_percentile", "float", DEFAULT_PERCENTILE, "The percentile onnx_int8_method=percentile clips "
               "at.", renamed_from=("int8_percentile",)),
        Option("onnx_float_nodes", "list", None, "ONNX node names to keep in float (default: the stem conv and "
               "the output tail); 'none' quantizes every node.", renamed_from=("int8_float_nodes",)),
    )
    presets = {"jetson": ("fp32",), "rpi": ("fp32", "int8"), "x86": ("fp32", "int8")}

    def convert(self, job: ConversionJob) -> list[Artifact]:
        import onnx
        import onnxruntime

        self.require()
        versions = {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
        fp32 = job.stage / "model.onnx"
        source = job.source
        versions.update(export_source(job, fp32))
        try:
            import onnxslim

            versions["onnxslim"] = onnxslim.__version__
        except ImportError:
            pass
        made: list[Artifact] = []
        for precision in job.precisions:
            quant = Quantization()
            if precision == "fp32":
                path = fp32
            elif precision == "fp16":
                path = job.stage / "model.fp16.onnx"
                convert_fp16(fp32, path)
            elif precision == "int8":
                path = job.stage / "model.int8.onnx"
                quant = quantize_int8(fp32, path, job)
            else:
                raise ConversionError(f"ONNX has no precision '{precision}'; choose from {self.precisions}.")
            made.append(Artifact(file=path.name, format="onnx", precision=precision,
                                 layout=source.inputs[0].layout if source.inputs else None,
                                 versions=dict(versions), quantization=quant))
        if "fp32" not in job.precisions:
            fp32.unlink()
        return made


CONVERTER = OnnxConverter()
