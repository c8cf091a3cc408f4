"""NCNN target: model.ncnn.param + .bin by pnnx, from the FP32 ONNX every target shares.

pnnx runs as its own binary in a child process: its Python wrapper (`pnnx.export`) writes broken
Python for some modules while reporting success, so edgesdk checks the binary's exit code and files.
NCNN has no batch axis and its param file declares no tensor shapes: each artifact carries a small
JSON beside it (model.ncnn.json) with its blob names, shapes and dtypes in the source's order, which
the ncnn backend checks every input against.

Integer inputs (token ids, masks): ncnn has no integer tensors, so the graph's mask arithmetic is made
float first (float_graph, checked on ONNX Runtime) and token ids reach ncnn's Embed as int32 (the .json's
"blob"); pnnx_rewrites covers what pnnx mistranslates (RMSNorm's mean) or ncnn lacks (GatherElements).

Precisions:
- fp32: weights in float32 (pnnx fp16=0); the backend turns ncnn's default fp16 storage and
  arithmetic off for it (with them on, EfficientNet-Lite0 was off by 4e-3 instead of 1.4e-5).
- fp16: weights stored as float16 (pnnx fp16=1), fp16 storage and arithmetic on where the CPU has them.
- int8: ncnn's own post-training tools: ncnn2table (KL calibration on the CalibrationSet, saved as
  .npy) then ncnn2int8. They are in neither the ncnn wheel nor Debian: build them from ncnn's source
  (see the README's "NCNN INT8") and put them on PATH or in EDGESDK_NCNN_TOOLS."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import replace
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from ...core.bundle import Artifact
from ...core.errors import BackendUnavailable, CalibrationError, ConversionError, first_line
from ...core.options import Option
from ...core.records import ArtifactIO, Quantization
from ...core.specs import TensorSpec
from ...core.stdio import run_tool
from .. import float_graph
from ..calibration import CalibrationSet
from ..onnx_tools import fixed_shapes, save_slim
from ..pnnx_rewrites import rewrite_for_pnnx
from . import ConversionJob, Converter, onnx_for

log = logging.getLogger(__name__)

INT8_TOOLS = ("ncnn2table", "ncnn2int8")
#: EfficientNet-Lite0: 96.8% top-1 agreement with every layer int8, 98.0% with the stem conv and the first
#: depthwise conv left in float (photos 50-99 x 5 views).
FLOAT_INPUT_LAYERS = 2
WEIGHTED_LAYERS = ("Convolution", "ConvolutionDepthWise", "InnerProduct", "Deconvolution", "DeconvolutionDepthWise")
_PNNX_DTYPES = {"float32": "f32", "float16": "f16", "int64": "i64", "int32": "i32", "int8": "i8", "uint8": "u8"}


def pnnx_binary() -> Path:
    """The pnnx executable the pnnx wheel ships."""
    spec = find_spec("pnnx")
    folder = Path(next(iter(spec.submodule_search_locations or []), "")) if spec else None
    if folder is None or not (folder / "pnnx").is_file():
        raise BackendUnavailable("Converting to NCNN needs pnnx: pip install 'edgesdk[ncnn-convert]'.")
    return folder / "pnnx"


def int8_tools() -> dict[str, Path]:
    """ncnn2table and ncnn2int8, from EDGESDK_NCNN_TOOLS or PATH; BackendUnavailable saying how to get them."""
    folder = os.environ.get("EDGESDK_NCNN_TOOLS")
    found = {t: shutil.which(t, path=folder) if folder else shutil.which(t) for t in INT8_TOOLS}
    missing = [t for t, p in found.items() if p is None]
    if missing:
        raise BackendUnavailable(
            f"NCNN INT8 needs ncnn's {' and '.join(missing)}, which no wheel or Debian package ships. Build them "
            "from ncnn's source (cmake -DNCNN_SIMPLEOCV=ON -DNCNN_BUILD_TOOLS=ON, then make ncnn2table ncnn2int8) "
            "and put them on PATH or in EDGESDK_NCNN_TOOLS; or choose fp32/fp16 for ncnn.")
    return {t: Path(p) for t, p in found.items() if p}


def _integer_inputs(inputs: list[TensorSpec]) -> list[str]:
    return [s.name for s in inputs if np.dtype(s.dtype).kind in "iub"]


def _one_sample(spec: TensorSpec, example: tuple[int, ...] | None = None) -> list[int]:
    """A shape with batch 1: NCNN runs one sample at a time. Axes beyond the batch that are dynamic take
    the example's sizes (fixed_shapes fixed the ONNX file at them; pnnx must be told the same)."""
    if not spec.shape:
        return []
    return [1, *(example[1:] if example is not None else spec.concrete_shape()[1:])]


def example_shapes(job: ConversionJob) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """(input shapes, output shapes) at the example: the sizes a fixed-shape artifact has."""
    feeds = job.source.example_feeds()
    return [feeds[s.name].shape for s in job.source.inputs], [o.shape for o in job.source.run(feeds)]


def sidecar(job: ConversionJob, precision: str, blobs: list[TensorSpec], ins: list[tuple[int, ...]],
            outs: list[tuple[int, ...]]) -> dict[str, object]:
    """The blob names, shapes and dtypes the backend checks inputs against, in the source's order, and how
    each input lies in its Mat ("blob": int32 for token ids an Embed reads, else float32); blobs: the inputs
    as pnnx was told them; ins/outs: example_shapes(job)."""

    def entry(prefix: str, i: int, spec: TensorSpec, shape: tuple[int, ...]) -> dict[str, object]:
        return {"name": f"{prefix}{i}", "shape": _one_sample(spec, shape), "dtype": spec.dtype}

    def blob(spec: TensorSpec) -> str:
        return "int32" if np.dtype(spec.dtype).kind in "iub" else "float32"

    return {"format": "edgesdk-ncnn-io", "version": 1, "precision": precision,
            "inputs": [{**entry("in", i, s, x), "blob": blob(b)}
                       for i, (s, b, x) in enumerate(zip(job.source.inputs, blobs, ins))],
            "outputs": [entry("out", i, s, x) for i, (s, x) in enumerate(zip(job.source.outputs, outs))]}


class NCNNConverter(Converter):
    name = "ncnn"
    precisions = ("fp32", "fp16", "int8")
    modules = ("ncnn",)
    optional = ("pnnx",)
    extra = "ncnn-convert"
    options = (
        Option("ncnn_int8_method", "str", "kl", "ncnn2table's calibration: kl (the best on EfficientNet-Lite0; "
               "aciq lost 12 points more), aciq or eq.", choices=("kl", "aciq", "eq")),
        Option("ncnn_float_layers", "int", FLOAT_INPUT_LAYERS, "How many weighted layers on the input side NCNN "
               "INT8 keeps in float (their scales are left out of the table)."),
    )
    # fp16 where the presets go: Cortex-A76 and newer compute in it; INT8 needs ncnn's own tools, so only on request.
    presets = {"rpi": ("fp32", "fp16"), "arm": ("fp32", "fp16"), "android": ("fp32", "fp16")}

    def notes(self) -> list[str]:
        try:
            return ["int8 tools: " + ", ".join(str(p) for p in int8_tools().values())]
        except BackendUnavailable:
            return ["int8: ncnn2table/ncnn2int8 not found (README: NCNN INT8)"]

    def missing_for(self, precision: str) -> str | None:
        if precision != "int8":
            return None
        try:
            int8_tools()
        except BackendUnavailable as exc:
            return str(exc)
        return None

    def convert(self, job: ConversionJob) -> list[Artifact]:
        self.require()
        pnnx = pnnx_binary()
        if "int8" in job.precisions:
            int8_tools()  # fail before the slow part, saying how to get them
        self._check_shapes(job)
        versions = {"ncnn": version("ncnn"), "pnnx": version("pnnx")}
        io = ArtifactIO(input_names=[f"in{i}" for i in range(len(job.source.inputs))],
                        output_names=[f"out{i}" for i in range(len(job.source.outputs))])
        with tempfile.TemporaryDirectory() as tmp:
            shapes = example_shapes(job)  # one run of the source, for every precision's pnnx call and .json
            routes = self._routes(job)
            for k, (exporter, make_graph) in enumerate(routes):
                try:
                    graph, inputs = self._prepared(job, make_graph(job, Path(tmp)), Path(tmp) / f"g{k}")
                    made = {**versions, "exporter": exporter} if exporter else versions
                    return self._from_graph(job, graph, inputs, pnnx, Path(tmp) / f"r{k}", shapes, made, io)
                except ConversionError as exc:
                    if k == len(routes) - 1:
                        raise
                    # pnnx turns some torch.export graphs into layers ncnn lacks (wav2vec2's torch.where) that
                    # the TorchScript exporter's graph of the same model avoids; NCNN takes one shape either way.
                    log.warning("NCNN from the %s graph failed (%s); trying the %s graph.", exporter or "shared",
                                first_line(exc), routes[k + 1][0] or "shared")
        raise AssertionError("unreachable: the last route raises")

    def _routes(self, job: ConversionJob) -> list[tuple[str, Any]]:
        """(exporter recorded, graph maker) in the order tried: the shared ONNX, then (a torch source) the
        TorchScript exporter's graph of the same model."""
        shared = ("", self._shared_graph)
        return [shared, ("legacy", self._traced_graph)] if job.source.kind == "torch" else [shared]

    def _prepared(self, job: ConversionJob, graph: Path, work: Path) -> tuple[Path, list[TensorSpec]]:
        """The graph as pnnx gets it, with the input specs pnnx is told: integer mask arithmetic made float
        (float_graph) and checked on ONNX Runtime; what pnnx mistranslates or ncnn lacks rewritten
        (pnnx_rewrites)."""
        import onnx

        work.mkdir(parents=True, exist_ok=True)
        model = onnx.load(str(graph))
        integer = _integer_inputs(job.source.inputs)
        out = work / "ncnn-ready.onnx"
        try:
            if integer:
                model = float_graph.to_float_arithmetic(model)
            if not rewrite_for_pnnx(model) and not integer:
                return graph, list(job.source.inputs)  # nothing to change: no second onnxslim pass
            save_slim(model, out)
        except (ValueError, KeyError, IndexError, TypeError) as exc:  # a graph shape the rewrites do not expect
            raise ConversionError(f"Preparing the graph for pnnx failed ({type(exc).__name__}: {first_line(exc)}); "
                                  "choose another format than ncnn for this model.") from exc
        if integer:
            feeds = job.source.example_feeds()
            worst = float_graph.check_equivalent(graph, out, [feeds, float_graph.padded(feeds)])
            log.info("NCNN: integer inputs %s; the float rewrite of their arithmetic is %.1e off on ONNX Runtime.",
                     ", ".join(integer), worst)
        dtypes = float_graph.float_inputs(onnx.load(str(out)))
        return out, [replace(s, dtype=dtypes.get(s.name, s.dtype)) for s in job.source.inputs]

    def _shared_graph(self, job: ConversionJob, tmp: Path) -> Path:
        return fixed_shapes(onnx_for(job, tmp), job.source.inputs, job.source.example_feeds(), tmp / "fixed.onnx",
                            "ncnn")

    def _traced_graph(self, job: ConversionJob, tmp: Path) -> Path:
        traced = tmp / "traced.onnx"
        job.source.export_onnx(traced, job.options["opset"], False, exporter="legacy")
        return fixed_shapes(traced, job.source.inputs, job.source.example_feeds(), tmp / "traced-fixed.onnx", "ncnn")

    def _from_graph(self, job: ConversionJob, onnx_path: Path, inputs: list[TensorSpec], pnnx: Path, work: Path,
                    shapes: tuple[list[tuple[int, ...]], list[tuple[int, ...]]], versions: dict[str, str],
                    io: ArtifactIO) -> list[Artifact]:
        made = []
        for precision in job.precisions:
            stem = "model.ncnn" if precision == "fp32" else f"model.{precision}.ncnn"
            quant = self._one_precision(precision, pnnx, onnx_path, inputs, job, work, stem, shapes[0])
            (job.stage / f"{stem}.json").write_text(json.dumps(sidecar(job, precision, inputs, *shapes), indent=1))
            made.append(Artifact(file=f"{stem}.param", format="ncnn", precision=precision,
                                 layout=job.source.inputs[0].layout if job.source.inputs else None,
                                 versions=dict(versions), quantization=quant, io=io,
                                 companions={f"{stem}.bin": "", f"{stem}.json": ""}))
        return made

    def _check_shapes(self, job: ConversionJob) -> None:
        too_deep = [s.name for s in (*job.source.inputs, *job.source.outputs) if len(s.shape) > 5]
        if too_deep:
            raise ConversionError(f"NCNN holds at most 4 dimensions besides the batch; {too_deep} have more.")
        other = [f"{s.name} ({s.dtype})" for s in job.source.inputs
                 if s.dtype != "float32" and np.dtype(s.dtype).kind not in "iub"]
        if other:
            raise ConversionError(f"NCNN takes float32 and integer inputs; {', '.join(other)} are neither. Choose "
                                  "onnx, openvino or tflite for this model.")

    def _one_precision(self, precision: str, pnnx: Path, onnx_path: Path, inputs: list[TensorSpec],
                       job: ConversionJob, tmp: Path, stem: str, example: list[tuple[int, ...]]) -> Quantization:
        if precision not in self.precisions:
            raise ConversionError(f"NCNN has no precision '{precision}'; choose from {self.precisions}.")
        fp16 = precision == "fp16"
        param, binary = run_pnnx(pnnx, onnx_path, inputs, tmp / precision, fp16=fp16,
                                 shapes=example)
        ids = [f"in{i}" for i, s in enumerate(inputs) if np.dtype(s.dtype).kind in "iub"]
        if ids:
            keep_ids_in_32_bits(param, ids)
        if precision == "int8":
            return quantize_int8(param, binary, job, tmp / "int8-work", job.stage / stem)
        shutil.copy(param, job.stage / f"{stem}.param")
        shutil.copy(binary, job.stage / f"{stem}.bin")
        return Quantization(method="pnnx fp16=1", weights="float16") if fp16 else Quantization()


def run_pnnx(pnnx: Path, onnx_path: Path, inputs: list[TensorSpec], work: Path, fp16: bool,
             shapes: list[tuple[int, ...]] | None = None) -> tuple[Path, Path]:
    """(param, bin) of the ONNX model by pnnx, run in `work`; shapes: the example's input shapes."""
    work.mkdir(parents=True, exist_ok=True)
    model = Path(shutil.copy(onnx_path, work / "model.onnx"))  # pnnx writes its files beside its input
    given = shapes or [None] * len(inputs)
    text = ",".join(f"[{','.join(str(d) for d in _one_sample(s, x))}]{_PNNX_DTYPES.get(s.dtype, 'f32')}"
                    for s, x in zip(inputs, given))
    log.info("Running pnnx on %s (inputshape=%s)", model.name, text)
    run_tool([str(pnnx), str(model), f"inputshape={text}", f"fp16={int(fp16)}"], "pnnx", cwd=work, timeout=1800)
    param, binary = work / "model.ncnn.param", work / "model.ncnn.bin"
    if not param.is_file() or not binary.is_file():
        raise ConversionError("pnnx reported success but wrote no model.ncnn.param / .bin.")
    _check_layers(param)
    return param, binary


#: ncnn's per-layer feature mask (param 31): no fp16 arithmetic (1), fp16 storage (2) or bf16 storage (4).
_NO_HALF_PRECISION = 7


def keep_ids_in_32_bits(param: Path, blobs: list[str]) -> None:
    """Token ids lie in their Mat as int32 bits: a layer that stores its input in fp16 (ncnn casts the blob
    on ARM with fp16 storage) would garble them. The layers that read them (the Embeds, and the Splits that
    fan them out) get ncnn's feature mask for fp32 only."""
    lines = param.read_text().splitlines()
    carrying = set(blobs)
    for k, line in enumerate(lines[2:], start=2):
        fields = line.split()
        if len(fields) < 4:
            continue
        kind, bottoms_n, tops_n = fields[0], int(fields[2]), int(fields[3])
        bottoms, tops = fields[4:4 + bottoms_n], fields[4 + bottoms_n:4 + bottoms_n + tops_n]
        if kind != "Input" and carrying & set(bottoms):
            lines[k] = f"{line} 31={_NO_HALF_PRECISION}"
            if kind == "Split":
                carrying.update(tops)
    param.write_text("\n".join(lines) + "\n")


def _check_layers(param: Path) -> None:
    """pnnx writes an operator it has no ncnn layer for under its torch name (torch.unbind, F.xxx,
    pnnx.xxx) or its ONNX name (GatherElements); ncnn then refuses the whole file. Say which, at conversion."""
    import ncnn

    kinds = {line.split()[0] for line in param.read_text().splitlines()[2:] if line.split()}
    foreign = sorted(k for k in kinds if "." in k or ncnn.layer_to_index(k) < 0)
    if foreign:
        raise ConversionError(f"pnnx has no ncnn layer for {', '.join(foreign)}: ncnn cannot load the model. "
                              "Rewrite that part of the model (e.g. unbind as indexing), or choose another format.")


def quantize_int8(param: Path, binary: Path, job: ConversionJob, work: Path, out_stem: Path) -> Quantization:
    """ncnn2table (calibration scales from the CalibrationSet) then ncnn2int8, into out_stem.param/.bin."""
    tools = int8_tools()
    calib = _calibration(job)
    if len(job.source.inputs) != 1:
        raise ConversionError("NCNN INT8 calibrates single-input models only; this one has "
                              f"{len(job.source.inputs)} inputs. Choose fp32/fp16 for ncnn.")
    work.mkdir(parents=True, exist_ok=True)
    spec = job.source.inputs[0]
    listing = work / "calibration.txt"
    rows = [row for sample in calib.samples for row in np.asarray(sample[spec.name], np.float32)]
    for i, row in enumerate(rows):  # one sample per file, without the batch axis
        np.save(work / f"{i}.npy", np.ascontiguousarray(row))
    listing.write_text("".join(f"{work / f'{i}.npy'}\n" for i in range(len(rows))))
    ncnn_shape = list(reversed(_one_sample(spec)[1:]))  # ncnn orders dimensions w, h, c
    method = job.options["ncnn_int8_method"]
    table = work / "model.table"
    run_tool([str(tools["ncnn2table"]), str(param), str(binary), str(listing), str(table),
              f"shape=[{','.join(map(str, ncnn_shape))}]", f"method={method}", "type=1",
              f"thread={os.cpu_count() or 1}"], "ncnn2table", cwd=work)
    floats = _keep_in_float(table, param, job.options["ncnn_float_layers"])
    out_stem = out_stem.resolve()  # the tools run in `work`
    run_tool([str(tools["ncnn2int8"]), str(param), str(binary), f"{out_stem}.param", f"{out_stem}.bin", str(table)],
             "ncnn2int8", cwd=work)
    return Quantization(method=f"ncnn2table ({method}) + ncnn2int8", weights="int8 per-channel",
                        activations="int8 per-tensor", calibration=method, calibration_samples=len(calib),
                        calibration_source=calib.source, float_nodes=floats)


def _keep_in_float(table: Path, param: Path, count: int) -> list[str]:
    """Drop the first `count` weighted layers' scales from ncnn2table's table: ncnn2int8 leaves a layer
    without scales in float. Returns those layers' names."""
    layers = [line.split() for line in param.read_text().splitlines()[2:]]
    floats = [f[1] for f in layers if len(f) > 1 and f[0] in WEIGHTED_LAYERS][:max(count, 0)]
    lines = table.read_text().splitlines()
    table.write_text("".join(f"{line}\n" for line in lines
                             if line.split()[:1] and line.split()[0].removesuffix("_param_0") not in floats))
    return floats


def _calibration(job: ConversionJob) -> CalibrationSet:
    if job.calibration is None:
        raise CalibrationError("NCNN INT8 needs calibration data: pass calib= (a folder of images, a .npy/.npz, or "
                               "an iterable of inputs) or --calib on the CLI.")
    job.calibration.check_representative()
    return job.calibration


CONVERTER = NCNNConverter()
