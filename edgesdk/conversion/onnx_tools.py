"""The ONNX plumbing every target shares: torch -> ONNX export, one-file saving with onnxslim, I/O
renaming, specs from value infos, and copies with fixed shapes. Converters import it; it imports no
converter, so no converter reaches into another. (INT8 recipes: edgesdk.conversion.int8.)"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConversionError, first_line
from ..core.specs import DynamicAxes, TensorSpec, axis_sizes, guess_layout, resize_axes

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
#: onnx TensorProto element types -> numpy dtype names
ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
               11: "float64", 12: "uint32", 13: "uint64"}


def _dim(d: Any) -> int | str | None:
    if isinstance(d, int) and d >= 0:
        return d
    return d if isinstance(d, str) and d else None


def spec_from_value_info(v: Any) -> TensorSpec:
    """A TensorSpec from an onnx ValueInfoProto."""
    t = v.type.tensor_type
    shape = tuple(_dim(d.dim_value) if d.HasField("dim_value") else _dim(d.dim_param) for d in t.shape.dim)
    return TensorSpec(v.name, shape, ONNX_DTYPES.get(t.elem_type, str(t.elem_type)), guess_layout(shape))


def fixed_shapes(onnx_path: Path, inputs: Sequence[TensorSpec], example: dict[str, np.ndarray], out: Path,
                 fmt: str) -> Path:
    """A copy of the ONNX file whose dynamic axes beyond the batch (a sequence) are fixed at the example's
    sizes, for formats that take one shape (MNN, NCNN, TFLite where onnx2tf needs it); the path itself when
    it has none."""
    import onnx

    sizes = {d: example[s.name].shape[i] for s in inputs for i, d in enumerate(s.shape)
             if isinstance(d, str) and i > 0}
    if not sizes:
        return onnx_path
    sizes.update({s.shape[0]: 1 for s in inputs if s.shape and isinstance(s.shape[0], str)})  # batch 1
    model = onnx.load(str(onnx_path))
    for value in [*model.graph.input, *model.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in sizes:
                dim.dim_value = int(sizes[dim.dim_param])
    del model.graph.value_info[:]  # inner shapes are inferred again from the fixed inputs, and folded
    save_slim(model, out)  # (onnx2tf converted MiniLM only after this)
    # convert() has already warned for formats whose backends take one shape; this says the sizes.
    log.info("%s: the dynamic axes %s are fixed at the example's %s.", fmt, ", ".join(sizes),
             ", ".join(f"{k}={v}" for k, v in sizes.items()))
    return out


def describe_error(exc: BaseException) -> str:
    """'ClassName: first line of the message', for logs of a tool that failed."""
    return f"{exc.__class__.__name__}: {first_line(exc)}"


def export_torch(module: Any, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], axes: DynamicAxes,
                 feeds: dict[str, np.ndarray], path: Path, opset: int, exporter: str = "auto") -> str:
    """Export a torch module to a single ONNX file at path, with its dynamic axes, traced on the example
    feeds. Returns the exporter used (see export_attempts for which is tried first)."""
    import onnx
    import torch

    # torch.export specializes a dimension of size 1 to a constant: trace dynamic axes of size 1 at 2.
    small = {n: 2 for n, s in axis_sizes(inputs, feeds).items() if s == 1}
    args = tuple(torch.from_numpy(a) for a in resize_axes(inputs, feeds, small).values())
    in_names = [s.name for s in inputs]
    errors = []
    _quiet_exporter_logs()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        for name, kwargs in export_attempts(module, in_names, outputs, axes, exporter):
            captured = io.StringIO()
            try:
                with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured), \
                        warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
                    torch.onnx.export(module, args, str(raw), input_names=in_names,
                                      output_names=[s.name for s in outputs], opset_version=opset, verbose=False,
                                      **kwargs)
                model = onnx.load(str(raw))  # pulls in external data the dynamo exporter writes
                break
            except Exception as exc:
                log.debug("%s exporter output:\n%s", name, captured.getvalue())
                log.info("The %s ONNX exporter failed: %s", name, describe_error(exc))
                errors.append(f"{name} exporter: {describe_error(exc)}")
        else:
            raise ConversionError(
                "PyTorch could not export the model to ONNX. " + "; ".join(errors) +
                ". An unsupported operator usually needs a rewrite of that layer or a newer opset (--opset)."
            )
    save_slim(model, path)
    return name


def export_attempts(module: Any, in_names: list[str], outputs: Sequence[TensorSpec], axes: DynamicAxes,
                    exporter: str = "auto") -> list[tuple[str, dict[str, Any]]]:
    """(exporter, torch.onnx.export keywords) in the order to try. "auto": the legacy TorchScript exporter
    first when no axis beyond the batch is dynamic (it traces YOLOv8n in 0.5 s where torch.export takes
    4-5 s, and is what Ultralytics exports with), torch.export (dynamo) first for dynamic sequence axes,
    whose symbolic shapes it keeps where tracing can bake a length in; each falls back to the other. A
    ScriptModule only has the legacy exporter."""
    import torch

    legacy_axes = {**axes, **{s.name: {i: d for i, d in enumerate(s.shape) if isinstance(d, str)} for s in outputs}}
    legacy = ("legacy", {"dynamo": False, "dynamic_axes": legacy_axes if axes else None,
                         "do_constant_folding": True})
    if isinstance(module, torch.jit.ScriptModule):
        return [legacy]
    dyn = {"dynamic_shapes": _dynamic_shapes(module, tuple(axes.get(n, {}) for n in in_names))} if axes else {}
    dynamo = ("dynamo", {"dynamo": True, "optimize": True, **dyn})
    if exporter != "auto":
        return [legacy if exporter == "legacy" else dynamo]
    beyond_batch = any(name != "batch" for per_input in axes.values() for name in per_input.values())
    return [dynamo, legacy] if beyond_batch else [legacy, dynamo]


def _dynamic_shapes(module: Any, per_input: tuple[dict[int, str], ...]) -> tuple[Any, ...]:
    """torch.export's dynamic_shapes follow forward's signature: a forward(*args) (the wrapper that
    flattens structured outputs) takes one tuple, so its shapes are one tuple too. Given flat, torch.export
    refused every wrapped model with dynamic axes, and the legacy exporter took them all."""
    import inspect

    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return per_input
    return (per_input,) if any(p.kind is p.VAR_POSITIONAL for p in params) else per_input


def _quiet_exporter_logs() -> None:
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger(noisy).level))
    # Without torchvision installed the exporter warns about each torchvision op it cannot register.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


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
        log.warning("onnxslim could not simplify the model (%s); keeping it as exported.", describe_error(exc))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
