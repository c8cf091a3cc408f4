"""ExecuTorch target (PyTorch Mobile's successor): a .pte program with the graph delegated to XNNPACK.

Route: torch.export -> to_edge_transform_and_lower(XnnpackPartitioner) -> to_executorch. It starts
from the torch module itself (ExecuTorch has no ONNX importer), so a torch module, TorchScript-free
torch.export file or factory is needed; ONNX and Keras sources get a ConversionError saying so.
The program has a fixed batch (memory is planned for it) and positional inputs and outputs; the
manifest declares them as input_0.. / output_0.. and the Runtime maps the source's names onto them.

INT8 is PT2E static quantization with ExecuTorch's XNNPACKQuantizer (int8 activations per tensor,
symmetric int8 weights per channel) calibrated on the CalibrationSet. Layers named in
executorch_float_modules stay in float (default: the first two convolutions, see _float_modules), and
so does the element-wise tail after the last weighted layer (a detector's box decoding).
There is no FP16 target: XNNPACK's fp16 kernels need the model itself in half precision (fp16 inputs),
and x86 CPUs have no fp16 arithmetic to measure it on."""

from __future__ import annotations

import logging
import time
from importlib.metadata import version
from typing import Any

from ...core.bundle import Artifact
from ...core.errors import CalibrationError, ConversionError, first_line
from ...core.options import Option
from ...core.records import ArtifactIO, Quantization
from ..int8 import choose_recipe, fx_graph_kind, recorded, tail_nodes
from . import ConversionJob, Converter

log = logging.getLogger(__name__)

#: How many weighted layers on the input side INT8 keeps in float by default.
FLOAT_INPUT_LAYERS = 2
#: aten ops that carry weights: the quantized layers an output tail comes after.
WEIGHTED_TARGETS = ("convolution", "conv2d", "conv1d", "linear", "matmul", "addmm")


def _torch_parts(job: ConversionJob) -> tuple[Any, tuple[Any, ...]]:
    """(module, example inputs) of a torch source; ConversionError for any other."""
    module, example = getattr(job.source, "module", None), getattr(job.source, "example_inputs", None)
    if module is None or example is None or not hasattr(module, "forward"):
        raise ConversionError(f"ExecuTorch converts torch models only; this source is {job.source.kind}. Give the "
                              "torch module (or a torch.export .pt2 file or a --factory) instead.")
    return module, tuple(example)


def _lower(exported: Any) -> bytes:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    return edge.to_executorch().buffer


def _export(module: Any, example: tuple[Any, ...]) -> Any:
    import torch

    try:
        return torch.export.export(module, example)
    except Exception as exc:  # noqa: BLE001 - torch.export raises many types, each with a long trace
        raise ConversionError(f"torch.export could not capture the model for ExecuTorch: {first_line(exc)}") from None


def _float_modules(module: Any, job: ConversionJob) -> list[str]:
    """Module names INT8 leaves in float: as given, else the first FLOAT_INPUT_LAYERS convolutions /
    linears (the input side, where one int8 scale per tensor loses most: EfficientNet-Lite0 went from
    89.6% to 98.4% top-1 agreement with its stem and first depthwise conv in float; the head bought nothing)."""
    import torch

    given = job.options["executorch_float_modules"]
    if given is not None:
        return [str(n) for n in given]
    weighted = [name for name, m in module.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv1d,
                                                                             torch.nn.Linear))]
    return weighted[:FLOAT_INPUT_LAYERS]


def float_tail(graph_module: Any) -> set[str]:
    """FX nodes after the last conv / linear on every path to the outputs (a detector's box decoding):
    one int8 scale across pixel boxes and [0, 1] scores would round the scores away, so they stay float."""
    nodes = [n for n in graph_module.graph.nodes if n.op == "call_function"]
    weighted = [any(k in str(n.target) for k in WEIGHTED_TARGETS) for n in nodes]
    tail = tail_nodes(nodes, [list(n.all_input_nodes) for n in nodes], [[n] for n in nodes], weighted)
    return {nodes[i].name for i in tail}


def quantize_dynamic(module: Any, example: tuple[Any, ...]) -> tuple[Any, Quantization]:
    """Attention graphs: int8 weights of every linear, activations quantized per call by XNNPACK's dynamic
    kernels (the static recipe's per-tensor activation scales break attention); no calibration needed."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    prepared = prepare_pt2e(_export(module, example).module(), quantizer)
    with torch.no_grad():
        prepared(*example)
    return convert_pt2e(prepared), Quantization(
        method="PT2E XNNPACKQuantizer (dynamic, transformer recipe)", weights="int8 per-channel symmetric",
        activations="int8 per call (dynamic)", details={"recipe": "transformer"})


def quantize(module: Any, example: tuple[Any, ...], job: ConversionJob) -> tuple[Any, Quantization]:
    """The PT2E-quantized module, calibrated on the CalibrationSet, and its record; attention graphs get
    the dynamic transformer recipe (option int8_recipe overrides the choice)."""
    recipe = choose_recipe(job.options["int8_recipe"], lambda: fx_graph_kind(_export(module, example).module()))
    if recipe == "transformer":
        return quantize_dynamic(module, example)
    quantized, quant = quantize_static(module, example, job)
    return quantized, recorded(quant, "cnn")


def quantize_static(module: Any, example: tuple[Any, ...], job: ConversionJob) -> tuple[Any, Quantization]:
    """The PT2E-quantized module, calibrated on the CalibrationSet, and its record."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import get_module_name_filter

    calib = job.calibration
    if calib is None:
        raise CalibrationError("ExecuTorch INT8 needs calibration data: pass calib= (a folder of images, a .npy/.npz, "
                               "or an iterable of inputs) or --calib on the CLI.")
    calib.check_representative()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph_module = _export(module, example).module()
    floats, tail = _float_modules(module, job), float_tail(graph_module)
    in_float = [get_module_name_filter(name) for name in floats]
    quantizer.set_filter_function(lambda node: node.name not in tail and not any(f(node) for f in in_float))
    prepared = prepare_pt2e(graph_module, quantizer)
    names = [s.name for s in job.source.inputs]
    started = time.perf_counter()
    with torch.no_grad():
        for sample in calib.samples:
            prepared(*(torch.from_numpy(sample[n]) for n in names))
    log.info("ExecuTorch INT8 calibration on %d samples took %.0f s", len(calib), time.perf_counter() - started)
    record = Quantization(method="PT2E XNNPACKQuantizer (static)", weights="int8 per-channel symmetric",
                          activations="int8 per-tensor", calibration="histogram observer",
                          float_nodes=floats + sorted(tail),
                          calibration_samples=len(calib), calibration_source=calib.source)
    return convert_pt2e(prepared), record


class ExecuTorchConverter(Converter):
    name = "executorch"
    precisions = ("fp32", "int8")
    int8_recipes = ("auto", "cnn", "transformer")
    modules = ("executorch",)
    extra = "executorch"
    options = (
        Option("executorch_float_modules", "list", None, "torch module names ExecuTorch INT8 keeps in float "
               "(default: the first two convolutions); 'none' quantizes every supported op."),
    )
    presets = {"android": ("fp32", "int8")}

    def convert(self, job: ConversionJob) -> list[Artifact]:
        self.require()
        module, example = _torch_parts(job)
        versions = {"executorch": version("executorch"), "torch": version("torch")}
        io = ArtifactIO(input_names=[f"input_{i}" for i in range(len(job.source.inputs))],
                        output_names=[f"output_{i}" for i in range(len(job.source.outputs))])
        layout = job.source.inputs[0].layout if job.source.inputs else None
        made = []
        for precision in job.precisions:
            if precision not in self.precisions:
                raise ConversionError(f"ExecuTorch has no precision '{precision}'; choose from {self.precisions}.")
            quant = Quantization()
            source = module
            if precision == "int8":
                source, quant = quantize(module, example, job)
            file = "model.pte" if precision == "fp32" else f"model.{precision}.pte"
            (job.stage / file).write_bytes(self._program(source, example))
            made.append(Artifact(file=file, format="executorch", precision=precision, layout=layout,
                                 versions=dict(versions), quantization=quant, io=io))
        return made

    def _program(self, module: Any, example: tuple[Any, ...]) -> bytes:
        try:
            return _lower(_export(module, example))
        except ConversionError:
            raise
        except Exception as exc:  # noqa: BLE001 - lowering failures come from deep inside exir
            raise ConversionError(f"ExecuTorch could not lower the model to XNNPACK: {first_line(exc)}") from None


CONVERTER = ExecuTorchConverter()
