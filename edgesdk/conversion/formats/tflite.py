"""TFLite target: FP32, FP16 and INT8 .tflite files by tf.lite.TFLiteConverter from a SavedModel.

Where the SavedModel comes from:
- a Keras source exports its own (model.export), so Keras models keep their channels-last layout;
- a torch or ONNX source goes through its FP32 ONNX export and onnx2tf, which rewrites the graph
  channels-last (no transposes around every conv, the fast path for XNNPACK). Its inputs and outputs are
  then NHWC; the manifest records the permutation and the Runtime applies it, so users keep feeding NCHW.
  onnx2tf runs in a child process: it may sys.exit on an unsupported op, and it fetches a sample file
  from GitHub unless one of that name is in its working folder, so edgesdk writes one there.
  Why onnx2tf first: see "The TFLite route" in the README.
- the second route, for torch sources where onnx2tf fails, makes a file XNNPACK cannot prepare, or is off
  the source on the example (routes() says when): litert-torch lowers torch.export's graph straight to a
  FP32 .tflite in the torch layout, no SavedModel. It runs in this process (it needs the module).

INT8 is full-integer post-training quantization with the CalibrationSet as representative dataset, in
one of two forms (option tflite_int8):
- "selective" (default): the few layers whose int8 error is largest, measured by TensorFlow's
  QuantizationDebugger on the calibration data (RMSE / scale), stay in float; I/O is float32. On
  EfficientNet-Lite0 this lifts top-1 agreement from 96.4% to 98.0% for ~0.4 ms.
- "full": every op int8 with int8 inputs and outputs, for accelerators and microcontrollers that take
  nothing else. The Runtime quantizes and dequantizes with each tensor's scale and zero point."""

from __future__ import annotations

import importlib
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ...core.bundle import Artifact
from ...core.cache import cache_dir
from ...core.errors import BackendUnavailable, CalibrationError, ConversionError, ModelLoadError, UsageError, first_line
from ...core.options import Option
from ...core.records import ArtifactIO, Quantization
from ...core.stdio import last_lines, quiet_stdout
from ..int8 import recorded, tail_nodes
from . import ConversionJob, Converter, onnx_for

log = logging.getLogger(__name__)

DEFAULT_FLOAT_LAYERS = 3
#: onnx2tf looks for this file in its working folder and downloads it from GitHub otherwise.
ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
_CHANNELS_LAST = {3: [0, 2, 1], 4: [0, 2, 3, 1], 5: [0, 2, 3, 4, 1]}

# Exact GELU's Erf is not a TFLite builtin (a flex op LiteRT cannot run): onnx2tf's pseudo-Erf replaces it
# (measured 2.7e-6 on ConvNeXt). Dynamic axes beyond the batch (a sequence) stay dynamic (-1) in the TFLite
# model; the backend resizes its interpreter to each input's length.
_ONNX2TF_SCRIPT = """
import sys
import onnx2tf
onnx2tf.convert(input_onnx_file_path=sys.argv[1], output_folder_path=sys.argv[2], non_verbose=True,
                output_signaturedefs=True, copy_onnx_input_output_names_to_tflite=True,
                replace_to_pseudo_operators=["erf"])
"""


def onnx2tf_version() -> str:
    """onnx2tf's version, without importing it (it imports TensorFlow and tf_keras)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onnx2tf")
    except PackageNotFoundError:
        raise BackendUnavailable(
            "Converting a torch or ONNX model to TFLite needs onnx2tf, which is not installed. Its declared pins "
            "would downgrade TensorFlow, so install it without them: pip install --no-deps onnx2tf==1.29.24 "
            "tf_keras==2.21.0 (plus pip install 'edgesdk[tflite-convert]')."
        ) from None


def onnx_to_saved_model(onnx_path: Path, folder: Path, job: ConversionJob | None) -> tuple[Path, dict[str, str]]:
    """A channels-last SavedModel of the ONNX file, by onnx2tf in a child process (offline).
    The result is cached by the ONNX file's sha256 and the onnx2tf version: onnx2tf takes about a
    minute on a mobile CNN, and trying INT8 settings on one model should not pay it each time."""
    import hashlib

    from ...core.bundle import sha256_of

    version = onnx2tf_version()
    versions = {"onnx2tf": version}
    settings = hashlib.sha256(_ONNX2TF_SCRIPT.encode())
    cached = cache_dir() / "onnx2tf" / f"{sha256_of(onnx_path)[:32]}-{version}-{settings.hexdigest()[:8]}"
    if (cached / "saved_model.pb").is_file():
        log.info("Using the cached onnx2tf SavedModel %s", cached)
        return cached, versions
    if job is None:
        raise ConversionError(f"No cached onnx2tf SavedModel for {onnx_path.name}, and no job to make one from.")
    if cached.name in _FAILED:  # a retry of the same graph (one precision at a time) fails alike: say it again
        raise ConversionError(_FAILED[cached.name])
    try:
        _run_onnx2tf(onnx_path, folder, job)
    except ConversionError as exc:
        _FAILED[cached.name] = str(exc)
        raise
    try:  # cache a copy, renamed into place whole
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=cached.parent, prefix=".partial-"))
        shutil.copytree(folder, partial, dirs_exist_ok=True)
        partial.rename(cached)
    except OSError as exc:
        log.debug("Could not cache the onnx2tf SavedModel: %s", exc)
    return folder, versions


#: onnx2tf's failures in this process, by the cache key of the graph it failed on.
_FAILED: dict[str, str] = {}


def _run_onnx2tf(onnx_path: Path, folder: Path, job: ConversionJob) -> None:
    work = folder.parent / "onnx2tf-work"
    work.mkdir(exist_ok=True)
    # onnx2tf rewrites the file it is given (simplified in place): give it a copy, not the bundle's artifact.
    onnx_path = Path(shutil.copy(onnx_path, work / "model.onnx"))
    sample = _sample_nhwc(job)
    np.save(work / ONNX2TF_SAMPLE, sample)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    log.info("Running onnx2tf on %s (about a minute for a mobile CNN)", onnx_path.name)
    result = subprocess.run([sys.executable, "-c", _ONNX2TF_SCRIPT, str(onnx_path.resolve()), str(folder.resolve())],
                            cwd=work, env=env, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0 or not (folder / "saved_model.pb").is_file():
        raise ConversionError(f"onnx2tf could not convert the model (exit {result.returncode}): "
                              f"{onnx2tf_error(result.stderr + result.stdout)}. The ONNX and OpenVINO targets take "
                              "any model that exports to ONNX.")


def onnx2tf_error(output: str) -> str:
    """The cause in onnx2tf's output: the exception it caught and the ONNX node it failed on (its last
    lines are generic advice about -b / -ois / -kt options)."""
    import re

    clean = re.sub(r"\x1b\[[0-9;]*m", "", output)
    lines = [line.strip() for line in clean.splitlines() if line.strip()]
    cause = next((line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception): ", line)), None)
    after = lines[lines.index(cause) + 1:] if cause else []
    detail = next((line for line in after if "must be" in line or "not supported" in line), None)
    node = next((line for line in lines if line.startswith("onnx_op_name:") or line.startswith("• name=")), None)
    found = [x for x in (cause, detail, node) if x]
    return " ".join(found)[:600] if found else last_lines(clean)


def _sample_nhwc(job: ConversionJob) -> np.ndarray:
    """20 channels-last samples of the first input, from the calibration set where there is one."""
    spec = job.source.inputs[0]
    perm = _CHANNELS_LAST.get(len(spec.shape))
    if np.dtype(spec.dtype).kind != "f":  # token ids: onnx2tf's sample only matters for images
        return job.source.example_feeds()[spec.name]
    if job.calibration is not None:
        arrays = [s[spec.name] for s in job.calibration.samples[:20]]
        batch = np.concatenate(arrays)
    else:
        batch = np.random.default_rng(0).standard_normal((20, *spec.concrete_shape()[1:])).astype(np.float32)
    return np.ascontiguousarray(batch.transpose(perm)) if perm else batch


def layout_permutations(session: Any, job: ConversionJob, channels_last: bool) -> ArtifactIO:
    """How each TFLite tensor's shape relates to the source's: None (same) or the permutation applied."""
    from ...core.specs import axis_sizes

    sizes = {**axis_sizes(job.source.inputs, job.source.example_feeds()), "batch": 1}

    def sized(spec: Any) -> tuple[Any, ...]:
        """The spec's shape at the example's sizes (the batch as 1); an axis of unknown size stays a name."""
        return tuple(sizes.get(d, d) if isinstance(d, str) else d for d in spec.shape)

    def perm_for(mine: tuple[Any, ...], source: tuple[Any, ...], what: str) -> list[int] | None:
        candidates = ([_CHANNELS_LAST[len(source)]] if channels_last and len(source) in _CHANNELS_LAST else []) + [None]
        for p in candidates:
            moved = tuple(source[i] for i in p) if p else tuple(source)
            if len(moved) == len(mine) and all(m is None or not isinstance(d, int) or m == d  # dynamic either side
                                               for m, d in zip(mine, moved)):
                return p
        raise ConversionError(f"The TFLite {what} has shape {list(mine)}, which does not match the source's "
                              f"{list(source)} in either layout.")

    io = ArtifactIO(
        inputs=[perm_for(t.shape, sized(s), f"input '{t.name}'") for t, s in zip(session.inputs, job.source.inputs)],
        outputs=[perm_for(t.shape, sized(s), f"output '{t.name}'") for t, s in zip(session.outputs, job.source.outputs)],
    )
    # onnx2tf renames tensors ('output' -> 'output_0'): declare the TFLite names, in the source's order,
    # so the Runtime maps them by name and parity can tell a renamed tensor from a wrong one.
    for what, mine, source in (("input", session.inputs, job.source.inputs),
                               ("output", session.outputs, job.source.outputs)):
        if sorted(t.name for t in mine) != sorted(s.name for s in source):
            setattr(io, f"{what}_names", [t.name for t in mine])
    return io


def _representative(job: ConversionJob, perms: list[Any]) -> Any:
    calib = job.calibration
    if calib is None:
        raise CalibrationError("TFLite INT8 needs calibration data: pass calib= (a folder of images, a .npy/.npz, "
                               "or an iterable of inputs) or --calib on the CLI.")
    calib.check_representative()
    names = [s.name for s in job.source.inputs]

    order = sorted(range(len(names)), key=lambda i: names[i])  # a signature's inputs, as TF orders them

    def samples() -> Iterator[list[np.ndarray]]:
        for sample in calib.samples:
            arrays = [np.ascontiguousarray(sample[n].transpose(p)) if p else sample[n] for n, p in zip(names, perms)]
            yield [arrays[i].astype(np.float32) for i in order]

    return samples


def _converter(saved_model: Path) -> Any:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_saved_model(str(saved_model))


def _quiet_convert(converter: Any) -> bytes:
    with quiet_stdout():
        return converter.convert()


def quantize_dynamic_range(saved_model: Path) -> tuple[bytes, Quantization]:
    """Attention graphs: int8 weights, activations in float (quantized on the fly by the hybrid kernels).
    Full-integer calibration collapses attention, and token-id inputs cannot be calibrated as floats."""
    import tensorflow as tf

    conv = _converter(saved_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    try:
        data = _quiet_convert(conv)
    except Exception as exc:
        raise ConversionError(f"TFLite dynamic-range quantization failed: {converter_error(str(exc))}") from None
    return data, Quantization(method="tf.lite dynamic-range (transformer recipe)", weights="int8 per-channel",
                              activations="float (int8 on the fly in hybrid kernels)",
                              details={"recipe": "transformer", "io": "float32"})


def quantize_int8(saved_model: Path, job: ConversionJob, perms: list[Any], fp32_model: bytes = b""
                  ) -> tuple[bytes, Quantization]:
    """Full-integer post-training quantization by tf.lite from the CalibrationSet. mode "selective" (the
    default) keeps the most error-prone layers and the output tail in float; "full" makes even the I/O int8."""
    import tensorflow as tf

    dataset = _representative(job, perms)
    mode = job.options["tflite_int8"]
    if mode not in ("selective", "full"):
        raise ConversionError(f"tflite_int8 must be 'selective' or 'full', not {mode!r}.")
    conv = _converter(saved_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = dataset
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    record = Quantization(method="tf.lite full-integer post-training quantization", weights="int8 per-channel",
                          activations="int8", calibration_samples=len(job.calibration),
                          calibration_source=job.calibration.source, details={"mode": mode, "io": "float32"})
    if mode == "full":
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        record.details["io"] = "int8"
        try:
            return _quiet_convert(conv), record
        except Exception as exc:
            raise ConversionError(f"TFLite full-integer quantization failed: {last_lines(str(exc), 1)}") from None
    wanted = job.options["tflite_float_layers"]
    # The element-wise tail after the last weighted layer (a detector's box decoding and the concat of
    # pixel boxes with scores) stays in float: one int8 scale cannot hold both.
    tail = _output_tail(fp32_model) if fp32_model else []
    try:
        with quiet_stdout(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")  # the debugger's own use
            return _selective(conv, dataset, wanted, tail, record), record
    except Exception as exc:
        raise ConversionError(f"TFLite INT8 quantization failed: {last_lines(str(exc), 1)}") from None


def _selective(conv: Any, dataset: Any, wanted: int | list[str], tail: list[str], record: Quantization) -> bytes:
    """INT8 with some layers in float: the `wanted` most error-prone ones by the QuantizationDebugger's
    RMSE/scale (when wanted is a count) or the named ones, plus the output tail. Fills in the record."""
    import tensorflow as tf

    if isinstance(wanted, int):  # the ranking run keeps the tail and FLOAT_TFLITE_OPS in float as well
        first = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(tail) or None)
        debugger = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=dataset, debug_options=first)
        debugger.run()
        buf = io.StringIO()
        debugger.layer_statistics_dump(buf)
        ranked = sorted(_layer_rows(buf.getvalue()), key=lambda r: r["score"], reverse=True)
        deny = [r["tensor_name"] for r in ranked[:wanted]]
        deny += [t for t in tail if t not in deny]
        record.details["sensitivity"] = [{"op": r["op_name"], "tensor": r["tensor_name"],
                                          "rmse_over_scale": round(r["score"], 4)} for r in ranked[:8]]
    else:
        deny = list(wanted)
    record.float_nodes = deny
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=deny or None)
    selective = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=dataset,
                                                          debug_options=options)
    return selective.get_nondebug_quantized_model()


WEIGHTED_TFLITE_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"}


def _layer_rows(csv_text: str) -> list[dict[str, Any]]:
    """The debugger's per-layer statistics in model order, each with its int8 error relative to its
    quantization step (score)."""
    import csv

    rows = []
    for row in csv.DictReader(io.StringIO(csv_text)):
        try:
            scale, mse = float(row["scale"]), float(row["mean_squared_error"])
        except (KeyError, ValueError):
            continue
        if scale > 0 and np.isfinite(mse):
            rows.append({**row, "score": float(np.sqrt(mse) / scale)})
    return rows


#: Ops INT8 keeps in float wherever they are: an int8 DIV whose divisor quantizes to zero fails at run time
#: (LayerNorm's 1/sqrt(var) in ConvNeXt: "div.cc data[i] != 0").
FLOAT_TFLITE_OPS = {"DIV"}


def _output_tail(tflite_model: bytes) -> list[str]:
    """Output tensor names of the ops from which no weighted op (conv, fully connected) is reachable
    (the element-wise tail), and of every op in FLOAT_TFLITE_OPS, read from the float model's graph (ops
    listed without XNNPACK fusing them)."""
    from ...backends.tflite import find_interpreter

    interpreter_cls, module, _ = find_interpreter()
    try:
        resolver = importlib.import_module(module).OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        it = interpreter_cls(model_content=tflite_model, experimental_op_resolver_type=resolver)
        it.allocate_tensors()
        ops = it._get_ops_details()  # noqa: SLF001 - the interpreter's only graph listing
        names = {d["index"]: d["name"] for d in it.get_tensor_details()}
    except Exception as exc:  # noqa: BLE001 - an interpreter without these gets no tail exclusion
        log.debug("Could not list the TFLite graph (%s); the output tail is quantized too.", exc)
        return []
    ops = sorted(ops, key=lambda op: int(op["index"]))  # execution order: a topological order
    tail = tail_nodes(ops, [[int(t) for t in op["inputs"]] for op in ops], [[int(t) for t in op["outputs"]] for op in ops],
                      [op["op_name"] in WEIGHTED_TFLITE_OPS for op in ops])
    keep = sorted(set(tail) | {i for i, op in enumerate(ops) if op["op_name"] in FLOAT_TFLITE_OPS})
    return [names[int(t)] for i in keep for t in ops[i]["outputs"]]


def converter_error(message: str) -> str:
    """The cause in a TFLiteConverter message, which ends with an MLIR dump: its first 'error:' line (the op
    and why) and the list of ops that would need TF Select, where there is one."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    errors = [line.rsplit("error: ", 1)[1] for line in lines if "error: " in line and "failed while converting" not in line]
    select = [line for line in lines if line.startswith(("TF Select ops:", "Flex ops:"))]
    found = list(dict.fromkeys(errors[:1] + select[:1]))
    return "; ".join(found) if found else last_lines(message, 1)


def _onnx2tf_saved_model(onnx_path: Path, tmp: Path, job: ConversionJob) -> tuple[Path, dict[str, str]]:
    """onnx2tf's SavedModel of the ONNX file; where it fails on a dynamic graph (MiniLM), of a copy with
    the example's shapes fixed."""
    from ..onnx_tools import fixed_shapes

    try:
        return onnx_to_saved_model(onnx_path, tmp / "saved_model", job)
    except ConversionError:
        fixed = fixed_shapes(onnx_path, job.source.inputs, job.source.example_feeds(), tmp / "fixed.onnx", "tflite")
        if fixed == onnx_path:
            raise
        log.warning("onnx2tf could not convert the dynamic graph; the TFLite artifacts take the example's "
                    "shape only (Runtime.tokenize pads to it; other lengths are an InputError).")
        return onnx_to_saved_model(fixed, tmp / "saved_model", job)


def _probe_io(fp32_bytes: bytes, job: ConversionJob, channels_last: bool, check: bool) -> ArtifactIO:
    """Load the FP32 file (a file XNNPACK cannot prepare fails here, so the next route is tried) and read how
    its inputs and outputs relate to the source's; check: compare it with the source on the example too."""
    from ...backends.tflite import BACKEND as TFLITE

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(fp32_bytes)
        try:
            probe = TFLITE.open(path)
        except ModelLoadError as exc:
            raise ConversionError(str(exc)) from None
        try:
            io_perms = layout_permutations(probe, job, channels_last)
            if check:
                _route_check(probe, io_perms, job)
        finally:
            probe.close()
    return io_perms


#: How far (relative to the output's largest value) a route's FP32 file may be from the source on the example
#: before the next route is tried: 10x the parity check's FP32 limit, so only a mistranslation trips it (onnx2tf
#: on timm's efficientvit_b0 is 0.14 off), never float noise; parity still judges the file that ships.
ROUTE_CHECK_LIMIT = 1e-3


def _route_check(probe: Any, io_perms: ArtifactIO, job: ConversionJob) -> None:
    from ...backends.adapt import AdaptedSession

    feeds = job.source.example_feeds()
    got = AdaptedSession(probe, job.source.inputs, job.source.outputs, io_perms).run(feeds)
    want = job.source.run(feeds)
    worst = max((float(np.max(np.abs(g.astype(np.float64) - w))) / max(1.0, float(np.max(np.abs(w))))
                 for g, w in zip(got, want) if w.size), default=0.0)
    if worst > ROUTE_CHECK_LIMIT:
        raise ConversionError(f"The FP32 TFLite file is off the source by {worst:.2g} (relative to the largest "
                              f"output) on the example input, over {ROUTE_CHECK_LIMIT:g}")


def _exportable(source: Any) -> bool:
    """Whether litert-torch can take the source: a torch module that torch.export traces (not TorchScript)."""
    if source.kind != "torch":
        return False
    import torch

    return not isinstance(source.module, torch.jit.ScriptModule)


def litert_torch_version(required: bool = False) -> str | None:
    """litert-torch's version, or None when it is not installed (BackendUnavailable if required)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("litert-torch")
    except PackageNotFoundError:
        if required:
            raise BackendUnavailable("tflite_route 'litert-torch' needs litert-torch, which is not installed: "
                                     "make setup installs it (pip install --no-deps litert-torch==0.10.0 and the "
                                     "packages pinned beside it in constraints.txt).") from None
        return None


def torch_to_tflite(module: Any, args: tuple[Any, ...]) -> bytes:
    """FP32 TFLite of a torch module by litert-torch: torch.export at the example's shapes, lowered to
    TFLite with the module's own layout (NCHW stays NCHW). Inputs are named args_0.., outputs output_0.."""
    with tempfile.TemporaryDirectory() as tmp, quiet_stdout(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("absl").setLevel(logging.ERROR)
        try:
            import litert_torch

            litert_torch.convert(module, args).export(str(Path(tmp) / "model.tflite"))
        except Exception as exc:  # noqa: BLE001 - any failure of the route is the route's error
            raise ConversionError(f"litert-torch could not convert the model: {type(exc).__name__}: "
                                  f"{first_line(exc)}") from None
        return (Path(tmp) / "model.tflite").read_bytes()


class TFLiteConverter(Converter):
    name = "tflite"
    precisions = ("fp32", "fp16", "int8")
    int8_recipes = ("auto", "cnn", "transformer")
    modules = ("tensorflow",)
    optional = ("onnx2tf", "tf2onnx")
    extra = "tflite-convert"
    options = (
        Option("tflite_int8", "str", "selective", "TFLite INT8: 'selective' keeps the most int8-sensitive layers in "
               "float (float I/O); 'full' makes every op int8 with int8 I/O, for accelerators and microcontrollers.",
               choices=("selective", "full")),
        Option("tflite_float_layers", "int", DEFAULT_FLOAT_LAYERS, "How many of the most int8-sensitive layers "
               "'selective' TFLite INT8 keeps in float."),
        Option("tflite_route", "str", "auto", "How a torch model becomes TFLite: onnx2tf (channels-last, every "
               "precision), litert-torch (torch.export, FP32), or auto: litert-torch first for FP32 alone of a "
               "static model, onnx2tf first otherwise, each falling back to the other.",
               choices=("auto", "onnx2tf", "litert-torch")),
    )
    presets = {"rpi": ("fp32", "int8"), "android": ("fp32", "fp16", "int8")}  # fp16 for Android's GPU delegate

    def convert(self, job: ConversionJob) -> list[Artifact]:
        """The artifacts by the first route that converts the model (see routes())."""
        self.require()
        errors: list[str] = []
        chosen = self.routes(job)
        for route in chosen:
            try:
                # a route with another after it is checked against the source on the example here
                return getattr(self, "_via_" + route.replace("-", "_"))(job, route != chosen[-1])
            except ConversionError as exc:
                errors.append(str(exc))
                if route != chosen[-1]:
                    log.warning("TFLite by %s failed (%s); trying %s.", route, first_line(exc),
                                chosen[chosen.index(route) + 1])
        raise ConversionError(" Then: ".join(errors))

    def routes(self, job: ConversionJob) -> list[str]:
        """The routes to try, in order. A Keras source exports its own SavedModel. A torch source asked for
        FP32 alone, with no dynamic axis beyond the batch, goes through litert-torch first (torch.export
        straight to TFLite: YOLOv8n in 13.6 s against onnx2tf's 52.7 s, and as fast to run), then onnx2tf.
        Otherwise onnx2tf first (channels-last, FP16 and INT8 from one SavedModel, dynamic axes it can keep),
        then litert-torch for FP32 (it converts DeBERTa-v2, ViT and Wav2Vec2, which onnx2tf refuses or
        mistranslates). tflite_route names one route only."""
        if hasattr(job.source, "write_saved_model"):
            return ["keras"]
        asked = job.options["tflite_route"]
        if asked == "litert-torch":
            litert_torch_version(required=True)
            if not _exportable(job.source):
                raise UsageError("tflite_route 'litert-torch' converts torch modules (not TorchScript); this "
                                 f"source is {job.source.description or job.source.kind}. Use tflite_route 'onnx2tf'.")
            return ["litert-torch"]
        if asked == "onnx2tf" or not _exportable(job.source) or litert_torch_version() is None:
            return ["onnx2tf"]
        beyond_batch = any(isinstance(d, str) and d != "batch" for spec in job.source.inputs for d in spec.shape)
        if list(job.precisions) == ["fp32"] and not beyond_batch:
            return ["litert-torch", "onnx2tf"]
        return ["onnx2tf", "litert-torch"]

    def _via_keras(self, job: ConversionJob, check: bool) -> list[Artifact]:
        with tempfile.TemporaryDirectory() as tmp:
            saved_model = job.source.write_saved_model(Path(tmp) / "saved_model")
            return self._finish(job, saved_model, self._convert_plain(saved_model), "keras SavedModel -> tf.lite",
                                False, {}, job.options["int8_recipe"], check)

    def _via_onnx2tf(self, job: ConversionJob, check: bool) -> list[Artifact]:
        onnx2tf_version()  # fail early, with the install line, if it is missing
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = onnx_for(job, Path(tmp))
            saved_model, made_with = _onnx2tf_saved_model(onnx_path, Path(tmp), job)
            recipe = job.options["int8_recipe"]
            if "int8" in job.precisions:
                import onnx

                from ..int8 import int8_recipe

                recipe = int8_recipe(onnx.load(str(onnx_path), load_external_data=False), job.options)
            return self._finish(job, saved_model, self._convert_plain(saved_model),
                                "ONNX -> onnx2tf (channels-last SavedModel) -> tf.lite", True, made_with, recipe, check)

    def _via_litert_torch(self, job: ConversionJob, check: bool) -> list[Artifact]:
        others = [p for p in job.precisions if p != "fp32"]
        if others:
            raise ConversionError(f"The litert-torch route makes FP32 TFLite only here, not {', '.join(others)} "
                                  "(those come from the onnx2tf route).")
        fixed = [s.name for s in job.source.inputs if any(isinstance(d, str) for d in s.shape)]
        if fixed:
            log.warning("litert-torch exports one shape: the TFLite artifact takes the example's shape of %s.",
                        ", ".join(fixed))
        data = torch_to_tflite(job.source.module, tuple(job.source.example_inputs))
        return self._finish(job, None, data, "torch.export -> litert-torch", False,
                            {"litert-torch": litert_torch_version() or "?"}, "auto", check)

    def _finish(self, job: ConversionJob, saved_model: Path | None, fp32_bytes: bytes, route: str,
                channels_last: bool, made_with: dict[str, str], recipe: str, check: bool) -> list[Artifact]:
        """Every asked precision written to the stage, with the FP32 file's I/O relation to the source."""
        import tensorflow as tf

        versions = {"tensorflow": tf.__version__, **made_with, "route": route}
        io_perms = _probe_io(fp32_bytes, job, channels_last, check)
        layout = "NHWC" if any(io_perms.inputs) else (job.source.inputs[0].layout if job.source.inputs else None)
        made: list[Artifact] = []
        for precision in job.precisions:
            name, data, quant = self._one_precision(precision, saved_model, fp32_bytes, io_perms, job, recipe)
            (job.stage / name).write_bytes(data)
            made.append(Artifact(file=name, format="tflite", precision=precision, layout=layout,
                                 versions=dict(versions), quantization=quant, io=io_perms))
        return made

    def _one_precision(self, precision: str, saved_model: Path | None, fp32_bytes: bytes, io_perms: ArtifactIO,
                       job: ConversionJob, recipe: str) -> tuple[str, bytes, Quantization]:
        """(file name, model bytes, quantization record) of one precision."""
        import tensorflow as tf

        if precision == "fp32":
            return "model.tflite", fp32_bytes, Quantization()
        assert saved_model is not None, "only the FP32 route has no SavedModel"
        if precision == "fp16":
            conv = _converter(saved_model)
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
            return "model.fp16.tflite", _quiet_convert(conv), Quantization(
                method="float16 weights (dequantized at load by XNNPACK)", weights="float16")
        if precision == "int8" and recipe == "transformer":
            data, quant = quantize_dynamic_range(saved_model)
            return "model.int8.tflite", data, quant
        if precision == "int8":
            data, quant = quantize_int8(saved_model, job, io_perms.inputs, fp32_bytes)
            return "model.int8.tflite", data, recorded(quant, "cnn")
        raise ConversionError(f"TFLite has no precision '{precision}'; choose from {self.precisions}.")

    def _convert_plain(self, saved_model: Path) -> bytes:
        try:
            return _quiet_convert(_converter(saved_model))
        except Exception as exc:
            raise ConversionError(f"TFLiteConverter failed on the model: {converter_error(str(exc))}. The ONNX and "
                                  "OpenVINO targets take this model.") from None


CONVERTER = TFLiteConverter()
