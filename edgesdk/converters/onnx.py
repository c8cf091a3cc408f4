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

from ..bundle import Artifact
from ..errors import CalibrationError, ConversionError
from ..sources import SourceModel
from . import ConversionJob, Converter

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
#: For int8_method="percentile": activation ranges from this percentile of the calibration histogram,
#: for models whose activations have rare outliers (unbounded ReLU/SiLU). Models built with ReLU6 (the
#: edge families: MobileNet, EfficientNet-Lite) calibrate as well or better with MinMax, 5x faster.
DEFAULT_PERCENTILE = 99.99
DYNAMIC_FRIENDLY_OPS = {"MatMul", "Gemm", "LSTM", "GRU", "Attention"}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{exc.__class__.__name__}: {text.splitlines()[0] if text else ''}"


def export_torch(source: SourceModel, path: Path, opset: int, dynamic_batch: bool) -> str:
    """Export a torch source to a single ONNX file at path. Returns the exporter used."""
    import onnx
    import torch

    module, args = source.module, source.example_inputs  # type: ignore[attr-defined]
    if dynamic_batch:
        # torch.export specializes a dimension of size 1 to a constant: trace with a batch of 2.
        args = tuple(torch.cat([a, a]) if a.dim() and a.shape[0] == 1 else a for a in args)
    in_names = [s.name for s in source.inputs]
    out_names = [s.name for s in source.outputs]
    errors = []
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger(noisy).level))
    # Without torchvision installed the exporter warns about each torchvision op it cannot register.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        attempts: list[tuple[str, dict[str, Any]]] = []
        if not isinstance(module, torch.jit.ScriptModule):
            dyn = ({"dynamic_shapes": tuple({0: torch.export.Dim.DYNAMIC} for _ in args)} if dynamic_batch else {})
            attempts.append(("dynamo", {"dynamo": True, "optimize": True, **dyn}))
        axes = {n: {0: "batch"} for n in in_names + out_names} if dynamic_batch else None
        attempts.append(("legacy", {"dynamo": False, "dynamic_axes": axes, "do_constant_folding": True}))
        for exporter, kwargs in attempts:
            captured = io.StringIO()
            try:
                with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                    torch.onnx.export(module, args, str(raw), input_names=in_names, output_names=out_names,
                                      opset_version=opset, verbose=False, **kwargs)
                model = onnx.load(str(raw))  # pulls in external data the dynamo exporter writes
                break
            except Exception as exc:
                log.debug("%s exporter output:\n%s", exporter, captured.getvalue())
                log.info("The %s ONNX exporter failed: %s", exporter, _first_line(exc))
                errors.append(f"{exporter} exporter: {_first_line(exc)}")
        else:
            raise ConversionError(
                "PyTorch could not export the model to ONNX. " + "; ".join(errors) +
                ". An unsupported operator usually needs a rewrite of that layer or a newer opset (--opset)."
            )
    save_slim(model, path)
    return exporter


def rename_io(model: Any, inputs: list[str], outputs: list[str]) -> Any:
    """The graph's inputs and outputs renamed, by position, to the source's names (tf2onnx calls a Keras
    output 'Identity:0'), everywhere the tensors appear. Returns the model, changed in place."""
    graph = model.graph
    init = {i.name for i in graph.initializer}
    graph_inputs = [v for v in graph.input if v.name not in init]
    mapping = {v.name: n for v, n in zip(graph_inputs, inputs) if v.name != n}
    mapping.update({v.name: n for v, n in zip(graph.output, outputs) if v.name != n})
    if not mapping:
        return model
    for value in [*graph_inputs, *graph.output]:
        value.name = mapping.get(value.name, value.name)
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = mapping.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = mapping.get(name, name)
    return model


def save_slim(model: Any, path: Path) -> None:
    """Simplify with onnxslim (constant folding, fusions) and save as one file."""
    import onnx

    try:
        import onnxslim

        model = onnxslim.slim(model)
    except Exception as exc:  # slimming is an optimization, never a reason to fail
        log.warning("onnxslim could not simplify the model (%s); keeping it as exported.", _first_line(exc))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _stem_convs(model: Any) -> list[str]:
    """The first Conv fed by a graph input: it sees raw pixels, its INT8 error hurts most, and its
    FP32 cost is small. Keeping it in float was worth +0.8 to +2.8 points of top-1 agreement on
    EfficientNet-Lite0; also keeping the classifier in float bought nothing there and cost speed."""
    inputs = {i.name for i in model.graph.input}
    return [n.name for n in model.graph.node if n.op_type == "Conv" and n.input[0] in inputs][:1]


WEIGHTED_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


def output_tail(model: Any) -> list[str]:
    """Nodes after the last weighted layer on every path to the outputs: the cheap element-wise tail
    (a detector's box decoding, sigmoid, concat of pixel boxes with probabilities). One int8 scale across
    boxes in pixels and scores in [0, 1] would round every score to 0 or 1, so the tail stays in float."""
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    feeds_weighted: dict[str, bool] = {}

    def reaches_weighted(node: Any) -> bool:
        if node.name in feeds_weighted:
            return feeds_weighted[node.name]
        feeds_weighted[node.name] = False  # guard against cycles (none in a valid graph)
        result = any(c.op_type in WEIGHTED_OPS or reaches_weighted(c) for out in node.output
                     for c in consumers.get(out, []))
        feeds_weighted[node.name] = result
        return result

    return [n.name for n in model.graph.node if n.op_type not in WEIGHTED_OPS and not reaches_weighted(n)]


def quantize_int8(fp32: Path, out: Path, job: ConversionJob, symmetric: bool = False) -> dict[str, Any]:
    """Write the INT8 model; return the quantization record for the manifest.

    symmetric=False: uint8 activations, the fast pair on x86 ONNX Runtime. symmetric=True: int8
    activations with zero point 0, what TensorRT's explicit quantization accepts (it rejects uint8)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    model = onnx.load(str(fp32))
    ops = {n.op_type for n in model.graph.node}
    calib = job.calibration
    if calib is None:
        if "Conv" not in ops and ops & DYNAMIC_FRIENDLY_OPS:
            log.info("No calibration data: using dynamic INT8 quantization, which fits this "
                     "Linear/LSTM model (weights int8, activations quantized at run time).")
            quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8)
            return {"method": "dynamic", "weights": "int8 per-tensor"}
        raise CalibrationError(
            "INT8 for this model needs calibration data: pass calib= (a folder of images, a .npy/.npz, or an "
            "iterable of inputs) or --calib on the CLI. Dynamic quantization is wrong for convolutional models."
        )
    calib.check_representative()
    method = job.options.get("int8_method") or "minmax"
    # Nodes kept in float: by default the stem conv and the output tail; options["int8_float_nodes"] lists
    # others (or none).
    exclude = job.options.get("int8_float_nodes")
    if exclude is None:  # default: the stem conv and the element-wise output tail stay in float
        exclude = _stem_convs(model) + output_tail(model)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=False)
        except Exception as exc:
            log.info("quant_pre_process failed (%s); quantizing the model as is.", _first_line(exc))
            pre = fp32

        class Reader(CalibrationDataReader):
            """Feeds the CalibrationSet to onnxruntime.quantization."""

            def __init__(self) -> None:
                self._iter = iter(calib)

            def get_next(self) -> dict[str, Any] | None:
                return next(self._iter, None)

        extra: dict[str, Any] = {"ActivationSymmetric": True, "WeightSymmetric": True} if symmetric else {}
        if method == "percentile":
            calibrate_method = CalibrationMethod.Percentile
            extra["CalibPercentile"] = job.options.get("int8_percentile", DEFAULT_PERCENTILE)
        elif method == "minmax":
            calibrate_method = CalibrationMethod.MinMax
        else:
            raise ConversionError(f"Unknown INT8 calibration method '{method}': use percentile or minmax.")
        captured = io.StringIO()  # the percentile calibrator prints its progress
        with contextlib.redirect_stdout(captured):
            quantize_static(
                str(pre), str(out), Reader(),
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=calibrate_method, nodes_to_exclude=exclude, extra_options=extra,
            )
        log.debug("%s", captured.getvalue())
    record: dict[str, Any] = {
        "method": "static QDQ",
        "activations": "int8 per-tensor symmetric" if symmetric else "uint8 per-tensor",
        "weights": "int8 per-channel symmetric",
        "calibration": f"{method}" + (f" {extra['CalibPercentile']}" if "CalibPercentile" in extra else ""),
        "calibration_samples": len(calib), "calibration_source": calib.source, "float_nodes": exclude,
    }
    return record


def convert_fp16(fp32: Path, out: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    onnx.save(model, str(out))


class OnnxConverter(Converter):
    name = "onnx"
    precisions = ("fp32", "fp16", "int8")
    modules = ("onnx", "onnxruntime", "onnxslim")
    extra = "onnx"

    def convert(self, job: ConversionJob) -> list[Artifact]:
        import onnx
        import onnxruntime

        self.require()
        versions = {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
        fp32 = job.stage / "model.onnx"
        source = job.source
        opset = int(job.options.get("opset") or DEFAULT_OPSET)
        versions.update(source.export_onnx(fp32, opset, bool(job.options.get("dynamic_batch"))))
        try:
            import onnxslim

            versions["onnxslim"] = onnxslim.__version__
        except ImportError:
            pass
        made: list[Artifact] = []
        for precision in job.precisions:
            quant: dict[str, Any] = {}
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
