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
    job.source.export_onnx(path, int(job.options.get("opset") or DEFAULT_OPSET), bool(job.options.get("dynamic_batch")))
    return path


def describe_error(exc: BaseException) -> str:
    """'ClassName: first line of the message', for logs of a tool that failed."""
    return f"{exc.__class__.__name__}: {first_line(exc)}"


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
