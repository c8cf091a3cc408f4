"""MNN target: .mnn files by MNN's own converter, from the FP32 ONNX every target shares.

The converter is the `mnn` wheel's compiled `_tools.mnnconvert`, run in a child process. Never its
`mnnconvert` / `mnnquant` console scripts or `MNN.tools.*` modules: those pip-install a logging SDK on
every call and upload the machine id, model id and arguments to a remote endpoint.

Precisions:
- fp32: the graph as converted (1.6e-5 max abs on EfficientNet-Lite0).
- fp16: convolution weights stored as float16 (`--fp16`), half the size; ARM cores with fp16
  arithmetic compute in it (the backend asks for MNN's low precision only for this artifact).
- int8: convolution / matmul weights stored as symmetric int8 per channel (`--weightQuantBits 8`),
  a quarter of the size, activations in float: 98.4% top-1 agreement on EfficientNet-Lite0 at FP32
  speed. MNN's full-integer quantizer (mnnquant) reached 91.6% there with its only working feature
  method (EMA; KL crashed, ADMM failed), below the 97% edgesdk asks of an INT8 artifact, so it is not
  offered: see the README's "MNN INT8"."""

from __future__ import annotations

import copy
import logging
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from ...core.bundle import Artifact
from ...core.errors import ConversionError
from ...core.records import Quantization
from ...core.stdio import run_tool
from ..onnx_tools import fixed_shapes
from . import ConversionJob, Converter, onnx_for

log = logging.getLogger(__name__)

#: The compiled converter's entry point, without the wheel's telemetry wrappers.
_MNNCONVERT = "import sys, _tools; sys.exit(0 if _tools.mnnconvert(sys.argv) else 1)"

#: precision -> (file name, extra mnnconvert flags, quantization record)
_PRECISIONS = {
    "fp32": ("model.mnn", [], Quantization()),
    "fp16": ("model.fp16.mnn", ["--fp16"], Quantization(method="mnnconvert --fp16", weights="float16")),
    "int8": ("model.int8.mnn", ["--weightQuantBits", "8"],
             Quantization(method="mnnconvert --weightQuantBits 8 (weight-only)", weights="int8 per-channel symmetric",
                          activations="float32")),
}


class MNNConverter(Converter):
    name = "mnn"
    precisions = ("fp32", "fp16", "int8")
    modules = ("MNN",)
    extra = "mnn"
    presets = {"rpi": ("fp32", "int8"), "android": ("fp32", "fp16", "int8"), "arm": ("fp32", "int8")}

    def available(self) -> tuple[bool, str]:
        """Found without importing it: `import MNN` prints on stdout, and the converter runs in a child."""
        from importlib.util import find_spec

        if find_spec("_tools") is None or find_spec("MNN") is None:
            return False, f"the mnn wheel is not installed; pip install 'edgesdk[{self.extra}]'"
        return True, version("mnn")

    def convert(self, job: ConversionJob) -> list[Artifact]:
        self.require()
        versions = {"mnn": version("mnn")}
        layout = job.source.inputs[0].layout if job.source.inputs else None
        made = []
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = fixed_shapes(onnx_for(job, Path(tmp)), job.source.inputs, job.source.example_feeds(),
                                     Path(tmp) / "fixed.onnx", "mnn")
            onnx_path = _without_isnan(onnx_path, Path(tmp) / "no_isnan.onnx")
            for precision in job.precisions:
                if precision not in _PRECISIONS:
                    raise ConversionError(f"MNN has no precision '{precision}'; choose from {self.precisions}.")
                file, flags, record = _PRECISIONS[precision]
                _mnnconvert(onnx_path, job.stage / file, flags)
                made.append(Artifact(file=file, format="mnn", precision=precision, layout=layout,
                                     versions=dict(versions), quantization=copy.deepcopy(record)))
        return made


def _without_isnan(onnx_path: Path, out: Path) -> Path:
    """MNN's converter has no IsNaN ("These Op Not Support: ONNX::IsNaN"), which transformers' attention masks
    use: IsNaN(x) becomes Not(Equal(x, x)), the same for every float (NaN is the one value unequal to
    itself). The path itself when the graph has none."""
    import onnx
    from onnx import helper

    model = onnx.load(str(onnx_path))
    graphs = [model.graph, *(a.g for n in model.graph.node for a in n.attribute if a.HasField("g"))]
    changed = False
    for graph in graphs:
        nodes = []
        for node in graph.node:
            if node.op_type != "IsNaN":
                nodes.append(node)
                continue
            same = f"{node.output[0]}__equal_self"
            nodes += [helper.make_node("Equal", [node.input[0], node.input[0]], [same], name=f"{node.name}_equal"),
                      helper.make_node("Not", [same], list(node.output), name=f"{node.name}_not")]
            changed = True
        graph.ClearField("node")
        graph.node.extend(nodes)
    if not changed:
        return onnx_path
    log.info("MNN: IsNaN rewritten as Not(Equal(x, x)) (MNN's converter has no IsNaN).")
    onnx.save(model, str(out))
    return out


def _mnnconvert(onnx_path: Path, out: Path, flags: list[str]) -> None:
    argv = [sys.executable, "-c", _MNNCONVERT, "-f", "ONNX", "--modelFile", str(onnx_path), "--MNNModel", str(out),
            "--bizCode", "edgesdk", *flags]
    log.info("Running MNN's converter: %s", " ".join(argv[3:]))
    output = run_tool(argv, "MNN's converter (mnnconvert)", timeout=1800)
    if not out.is_file() or out.stat().st_size == 0 or "Converted Success" not in output:
        raise ConversionError(f"MNN's converter wrote no model: {output.strip().splitlines()[-1:] or 'no message'}")


CONVERTER = MNNConverter()
