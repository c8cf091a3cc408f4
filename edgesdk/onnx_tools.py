"""The ONNX plumbing every target shares: torch -> ONNX export, one-file saving with onnxslim, I/O
renaming, the output-tail walk, specs from value infos, and "the FP32 ONNX this target builds from".
Converters import it; it imports no converter, so no converter reaches into another."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConversionError, first_line
from .specs import TensorSpec, guess_layout

if TYPE_CHECKING:
    from .converters import ConversionJob
    from .sources import SourceModel

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


def onnx_for(job: ConversionJob, tmp: Path) -> Path:
    """An FP32 ONNX file of the source: the bundle's own if made, else a fresh export."""
    made = next((a for a in job.artifacts if a.format == "onnx" and a.precision == "fp32"), None)
    if made is not None:
        return job.stage / made.file
    path = tmp / "model.onnx"
    export_source(job, path)
    return path


def export_source(job: ConversionJob, path: Path) -> dict[str, str]:
    """The source exported to ONNX at path (the versions of what exported it); a failure is an ExportError,
    recorded against every target built from it."""
    from .errors import ExportError

    try:
        return job.source.export_onnx(path, int(job.options.get("opset") or DEFAULT_OPSET),
                                      bool(job.options.get("dynamic_batch")))
    except ConversionError as exc:
        raise ExportError(str(exc)) from exc.__cause__
    except Exception as exc:  # noqa: BLE001 - an exporter's own exception, with its first line as the cause
        raise ExportError(f"The ONNX export failed: {type(exc).__name__}: {first_line(exc)}") from exc


def fixed_shapes(onnx_path: Path, source: SourceModel, out: Path, fmt: str) -> Path:
    """A copy of the ONNX file whose dynamic axes beyond the batch (a sequence) are fixed at the example's
    sizes, for formats that take one shape (MNN, NCNN, TFLite where onnx2tf needs it); the path itself when
    it has none."""
    import onnx

    example = source.example_feeds()
    sizes = {d: example[s.name].shape[i] for s in source.inputs for i, d in enumerate(s.shape)
             if isinstance(d, str) and i > 0}
    if not sizes:
        return onnx_path
    sizes.update({s.shape[0]: 1 for s in source.inputs if s.shape and isinstance(s.shape[0], str)})  # batch 1
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


def export_torch(source: SourceModel, path: Path, opset: int) -> str:
    """Export a torch source to a single ONNX file at path, with its dynamic axes. Returns the exporter used."""
    import onnx
    import torch

    from .specs import axis_sizes, resize_axes

    module = source.module  # type: ignore[attr-defined]
    axes = source.dynamic_axes
    feeds = source.example_feeds()
    # torch.export specializes a dimension of size 1 to a constant: trace dynamic axes of size 1 at 2.
    small = {n: 2 for n, s in axis_sizes(source.inputs, feeds).items() if s == 1}
    args = tuple(torch.from_numpy(a) for a in resize_axes(source.inputs, feeds, small).values())
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
            dyn = {"dynamic_shapes": tuple(axes.get(n, {}) for n in in_names)} if axes else {}
            attempts.append(("dynamo", {"dynamo": True, "optimize": True, **dyn}))
        legacy_axes = {**axes, **{s.name: {i: d for i, d in enumerate(s.shape) if isinstance(d, str)}
                                  for s in source.outputs}}
        attempts.append(("legacy", {"dynamo": False, "dynamic_axes": legacy_axes if axes else None,
                                    "do_constant_folding": True}))
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
                log.info("The %s ONNX exporter failed: %s", exporter, describe_error(exc))
                errors.append(f"{exporter} exporter: {describe_error(exc)}")
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
        log.warning("onnxslim could not simplify the model (%s); keeping it as exported.", describe_error(exc))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


WEIGHTED_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
#: Fused attention ops some exporters and optimizers emit.
ATTENTION_OPS = {"Attention", "MultiHeadAttention", "GroupQueryAttention"}


def activation_matmuls(model: Any) -> list[str]:
    """MatMul nodes that multiply two activations (attention's Q.K^T and probs.V), not an input by weights."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not constants & set(n.input)]


def graph_kind(model: Any) -> str:
    """"transformer" for a graph with attention (a Softmax and an activation-by-activation MatMul, or a
    fused attention op), else "cnn". It decides the INT8 recipe: static activation ranges calibrated on
    every op collapse on attention (cosine 0.34 on MiniLM), weight-first recipes keep it (0.99+)."""
    ops = {n.op_type for n in model.graph.node}
    if ops & ATTENTION_OPS or ("Softmax" in ops and activation_matmuls(model)):
        return "transformer"
    return "cnn"


def int8_recipe(model: Any, options: dict[str, Any]) -> str:
    """The INT8 recipe to use: the one asked for, else the graph's kind."""
    asked = options.get("int8_recipe") or "auto"
    return graph_kind(model) if asked == "auto" else asked


def output_tail(model: Any) -> list[str]:
    """Nodes after the last weighted layer on every path to the outputs: the cheap element-wise tail
    (a detector's box decoding, sigmoid, concat of pixel boxes with probabilities). One int8 scale across
    boxes in pixels and scores in [0, 1] would round every score to 0 or 1, so the tail stays in float."""
    nodes = list(model.graph.node)
    tail = tail_nodes(nodes, [list(n.input) for n in nodes], [list(n.output) for n in nodes],
                      [n.op_type in WEIGHTED_OPS for n in nodes])
    return [nodes[i].name for i in tail]


def tail_nodes(nodes: list[Any], inputs: list[list[Any]], outputs: list[list[Any]], weighted: list[bool]) -> list[int]:
    """Indices of the unweighted nodes from which no weighted node can be reached, for a graph in
    topological order (ONNX nodes, TFLite ops): walked backwards once, so no recursion limit to meet."""
    consumers: dict[Any, list[int]] = {}
    for i, names in enumerate(inputs):
        for name in names:
            consumers.setdefault(name, []).append(i)  # tensor -> the nodes that read it
    reaches = [False] * len(nodes)
    for i in reversed(range(len(nodes))):
        reaches[i] = any(weighted[c] or reaches[c] for name in outputs[i] for c in consumers.get(name, []))
    return [i for i in range(len(nodes)) if not weighted[i] and not reaches[i]]
