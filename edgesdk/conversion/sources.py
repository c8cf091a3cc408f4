"""Load what the user brings (a torch module, a TorchScript / torch.export file, an ONNX file, or a
factory function plus weights) into a SourceModel: inputs, outputs, and a way to run the reference.

Untrusted files are never unpickled: weights go through torch.load(weights_only=True)."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConversionError, EdgeSDKError, ModelLoadError, first_line, require
from ..core.specs import (
    DynamicAxes,
    TensorSpec,
    axis_sizes,
    guess_layout,
    parse_dynamic_axes,
    random_feeds,
    resize_axes,
)
from .structure import flat_module, flatten_named, is_flat, select

log = logging.getLogger(__name__)


class SourceModel:
    """The model a conversion starts from, and the reference its artifacts are checked against."""

    kind: str = "unknown"  # converters look at this to choose their route ("torch", "onnx", ...)
    description: str = ""
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    dynamic_axes: dict[str, dict[int, str]] = {}  # input -> {axis: name}, beyond the fixed example shape

    def example_feeds(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def stand_in_feeds(self, seed: int) -> dict[str, np.ndarray]:
        """Inputs for a parity check when no data was given: deterministic per seed, valid for the model."""
        return random_feeds(self.inputs, seed)

    def export_onnx(self, path: Path, opset: int, dynamic_batch: bool = False,
                    exporter: str = "auto") -> dict[str, str]:
        """Write the model as one FP32 ONNX file at path; return the versions of the tools used. exporter
        picks torch's ONNX exporter (torch sources only)."""
        raise ConversionError(f"{type(self).__name__} cannot be exported to ONNX.")


def _names(given: Sequence[str] | None, count: int, stem: str) -> list[str]:
    if given:
        if len(given) != count:
            raise ConversionError(f"Got {len(given)} {stem} names for a model with {count} {stem}s.")
        return list(given)
    return [stem] if count == 1 else [f"{stem}_{i}" for i in range(count)]


def _flatten_outputs(out: Any) -> list[Any]:
    return [leaf for _, leaf in flatten_named(out)]


_SHAPE_WORDS = ("shape", "size of tensor", "sizes", "mat1 and mat2", "expected input", "dimension", "channels")


def source_failed(exc: BaseException, shapes: list[list[int]]) -> ConversionError:
    """The error for a source model that raised on its example: the exception, and the line of the
    user's code it came from (the innermost frame outside torch), so the user can see what broke. Only
    a failure that reads as a shape mismatch points at --input-shape."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if f"{os.sep}torch{os.sep}" not in f.filename and f"{os.sep}edgesdk{os.sep}" not in f.filename]
    where = (f" at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}"
             + (f" (`{frames[-1].line}`)" if frames[-1].line else "")) if frames else ""
    message = f"{exc.__class__.__name__}: {first_line(exc)}"
    hint = (" The input does not fit the model: check --input-shape / example_input."
            if any(w in message.lower() for w in _SHAPE_WORDS) else
            " The model itself raised: fix it, or pick its outputs with outputs= / --outputs if it is its "
            "output that edgesdk cannot read.")
    return ConversionError(f"The source model failed on its example input of shape {shapes}{where}: {message}."
                           f"{hint}")


class TorchSource(SourceModel):
    """A torch nn.Module (or ScriptModule / ExportedProgram's module) plus example inputs: a tuple in
    forward's order, or a dict by forward's parameter names. Inputs keep the examples' dtypes (int64
    token ids stay int64) and take forward's parameter names (a single float input is called "input",
    the name image models' bundles have always used) unless input_names are given."""

    kind = "torch"

    def __init__(
        self,
        module: Any,
        example_inputs: Sequence[Any] | Mapping[str, Any],
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
        description: str = "",
        dynamic_batch: bool = False,
        dynamic_axes: Any = None,
        outputs: Sequence[str] | None = None,
    ):
        torch = require("torch", "torch", "Converting a PyTorch model")
        try:
            module.eval()
        except (AttributeError, NotImplementedError):  # a torch.export program's module has no eval()
            pass
        names, values, by_keyword = _named_examples(module, example_inputs, input_names)
        self.example_inputs = tuple(x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
                                    for x in values)
        self.module, flat_names = _flat_form(module, names, self.example_inputs, by_keyword, outputs)
        self.selected_outputs = list(outputs) if outputs else None
        self.description = description or type(module).__name__
        self.dynamic_batch = dynamic_batch
        self.dynamic_axes = _merge_axes(names, [x.dim() for x in self.example_inputs], dynamic_batch,
                                        parse_dynamic_axes(dynamic_axes))
        self.inputs = [TensorSpec(n, _symbolic(tuple(x.shape), self.dynamic_axes.get(n, {})),
                                  str(x.dtype).replace("torch.", ""), guess_layout(tuple(x.shape)))
                       for n, x in zip(names, self.example_inputs)]
        outs = self._checked_run(self.example_feeds())
        onames = _names(output_names, len(outs), "output") if output_names else flat_names
        dims = self._output_dims(outs)
        self.outputs = [TensorSpec(n, d, str(o.dtype), None) for n, o, d in zip(onames, outs, dims)]

    def _checked_run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self.run(feeds)
        except EdgeSDKError:
            raise
        except Exception as exc:
            raise source_failed(exc, [list(f.shape) for f in feeds.values()]) from exc

    def _output_dims(self, outs: list[np.ndarray]) -> list[tuple[Any, ...]]:
        """Each output's shape, symbolic where it follows a dynamic axis: "batch" for the first dimension
        under a dynamic batch; for other axes, the dimensions that change when the model runs again with
        every other dynamic axis resized (named after the input axis whose size they had)."""
        dims = [tuple(int(d) for d in o.shape) for o in outs]
        if self.dynamic_batch:
            dims = [("batch", *d[1:]) if d else d for d in dims]
        sizes = axis_sizes(self.inputs, self.example_feeds())
        other = {n: s for n, s in sizes.items() if n != "batch" or not self.dynamic_batch}
        if not other:
            return dims
        moved = self._checked_run(resize_axes(self.inputs, self.example_feeds(), {n: s + 3 for n, s in other.items()}))
        by_size = {s: n for n, s in other.items()}
        return [tuple(by_size.get(d, f"dim_{i}") if isinstance(d, int) and d != m else d
                      for i, (d, m) in enumerate(zip(ds, o.shape)))
                for ds, o in zip(dims, moved)]

    def example_feeds(self) -> dict[str, np.ndarray]:
        return {s.name: x.numpy() for s, x in zip(self.inputs, self.example_inputs)}

    def stand_in_feeds(self, seed: int) -> dict[str, np.ndarray]:
        """Parity inputs shaped like the example: floats standard normal; integers drawn from the range
        the example's values span (token ids stay inside the vocabulary), except 0/1 masks, which keep the
        example's; from seed 3 on, every dynamic axis other than the batch at a second length."""
        rng = np.random.default_rng(seed)
        feeds = {}
        for name, x in self.example_feeds().items():
            if x.dtype.kind == "f":
                feeds[name] = rng.standard_normal(x.shape).astype(x.dtype)
            elif x.dtype.kind in "iu" and x.size and not set(np.unique(x)) <= {0, 1}:
                feeds[name] = rng.integers(int(x.min()), int(x.max()) + 1, x.shape).astype(x.dtype)
            else:
                feeds[name] = x.copy()
        sizes = {n: s for n, s in axis_sizes(self.inputs, feeds).items() if n != "batch"}
        if seed >= 3 and sizes:
            feeds = resize_axes(self.inputs, feeds, {n: s // 2 + 1 if s > 2 else s + 3 for n, s in sizes.items()})
        return feeds

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in self.inputs]
        with torch.no_grad():
            return [o.detach().numpy() for o in _flatten_outputs(self.module(*args))]


    def export_onnx(self, path: Path, opset: int, dynamic_batch: bool = False,
                    exporter: str = "auto") -> dict[str, str]:
        import torch

        from .onnx_tools import export_torch

        used = export_torch(self.module, self.inputs, self.outputs, self.dynamic_axes, self.example_feeds(), path,
                            opset, exporter)
        return {"torch": torch.__version__.split("+")[0], "exporter": used}


def _forward_params(module: Any) -> list[str]:
    """The names of forward's positional parameters, in order; [] where they cannot be read."""
    import inspect

    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError, AttributeError):
        return []
    names = []
    for p in params:
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            break
        names.append(p.name)
    return names


def _named_examples(module: Any, examples: Any, given: Sequence[str] | None) -> tuple[list[str], list[Any], bool]:
    """(input names, example values, whether they go in by keyword) from a tuple of examples in
    forward's order or a dict by forward's parameter names. A dict that is not the first parameters in
    order (it skips one, or names a keyword-only parameter) is passed by keyword."""
    params = _forward_params(module)
    if isinstance(examples, Mapping):
        keys = list(examples)
        if given and sorted(given) != sorted(keys):
            raise ConversionError(f"input_names {list(given)} differ from the example's names {keys}.")
        accepted = _keyword_params(module)
        unknown = [k for k in keys if accepted is not None and k not in accepted]
        if unknown:
            raise ConversionError(f"The example inputs {unknown} are not parameters of the model's forward "
                                  f"{sorted(accepted or [])}.")
        positional = bool(params) and sorted(keys) == sorted(params[:len(keys)])
        names = params[:len(keys)] if positional else keys
        return names, [examples[n] for n in names], not positional
    values = list(examples)
    if given:
        return _names(given, len(values), "input"), values, False
    if (len(values) == 1 and _is_float(values[0])) or len(params) < len(values):
        return _names(None, len(values), "input"), values, False
    return params[:len(values)], values, False


def _keyword_params(module: Any) -> set[str] | None:
    """The names forward takes by keyword; None where it takes any (**kwargs) or cannot be read."""
    import inspect

    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError, AttributeError):
        return None
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _flat_form(module: Any, names: list[str], examples: tuple[Any, ...], by_keyword: bool,
               wanted: Sequence[str] | None) -> tuple[Any, list[str]]:
    """(the module in the form exporters take, its output names): the module itself when it takes
    positional tensors and returns a tensor or a flat tuple and no selection is asked for; else a wrapper
    (structure.flat_module) that flattens and selects."""
    import torch

    try:
        with torch.no_grad():
            out = module(**dict(zip(names, examples))) if by_keyword else module(*examples)
    except Exception as exc:
        raise source_failed(exc, [list(x.shape) for x in examples]) from exc
    named = flatten_named(out)
    if not named:
        raise ConversionError("The model returned no tensors on its example input (only None or empty "
                              "containers): there is nothing to convert.")
    selected = select(named, wanted)
    if is_flat(out) and not by_keyword and not wanted:
        return module, [n for n, _ in selected]
    return flat_module(module, names, by_keyword, wanted), [n for n, _ in selected]


def _is_float(value: Any) -> bool:
    dtype = getattr(value, "dtype", None)
    return np.asarray(value).dtype.kind == "f" if dtype is None else "float" in str(dtype)


def _merge_axes(names: list[str], ranks: list[int], dynamic_batch: bool, axes: DynamicAxes) -> DynamicAxes:
    """Every input's dynamic axes: the first under dynamic_batch, plus those given (checked)."""
    unknown = sorted(set(axes) - set(names))
    if unknown:
        raise ConversionError(f"Dynamic axes name inputs {unknown} the model does not have; its inputs are {names}.")
    merged: DynamicAxes = {}
    for name, rank in zip(names, ranks):
        mine = ({0: "batch"} if dynamic_batch and rank else {}) | axes.get(name, {})
        bad = [a for a in mine if not 0 <= a < rank]
        if bad:
            raise ConversionError(f"Input '{name}' has {rank} axes; dynamic axis {bad[0]} does not exist.")
        if mine:
            merged[name] = mine
    return merged


def _symbolic(shape: tuple[int, ...], axes: dict[int, str]) -> tuple[Any, ...]:
    return tuple(axes.get(i, int(d)) for i, d in enumerate(shape))


class OnnxSource(SourceModel):
    """An existing ONNX file; its reference outputs come from ONNX Runtime on the file itself."""

    kind = "onnx"

    def __init__(self, path: Path, input_shape: Sequence[int] | None = None):
        onnx = require("onnx", "onnx", "Reading an ONNX model")
        self.path = Path(path)
        self.description = str(path)
        try:
            onnx.checker.check_model(str(path))
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            raise ModelLoadError(f"{path} is not a valid ONNX model ({exc.__class__.__name__}: "
                                 f"{first_line(exc)}).") from None
        init_names = {i.name for i in proto.graph.initializer}
        from .onnx_tools import spec_from_value_info

        self.inputs = [spec_from_value_info(v) for v in proto.graph.input if v.name not in init_names]
        self.outputs = [spec_from_value_info(v) for v in proto.graph.output]
        if input_shape is not None:
            if len(self.inputs) != 1:
                raise ConversionError("--input-shape applies to single-input models only.")
            s = self.inputs[0]
            self.inputs = [TensorSpec(s.name, tuple(input_shape), s.dtype, s.layout)]
        self._session = None

    def example_feeds(self) -> dict[str, np.ndarray]:
        return random_feeds(self.inputs)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._session is None:
            from ..backends import open_reference

            self._session = open_reference(self.path)
        return self._session.run(feeds)

    def export_onnx(self, path: Path, opset: int, dynamic_batch: bool = False,
                    exporter: str = "auto") -> dict[str, str]:
        import onnx

        from .onnx_tools import save_slim

        save_slim(onnx.load(str(self.path)), path)
        return {}


class KerasSource(SourceModel):
    """A Keras model (keras.Model, .keras, .h5) or a TensorFlow SavedModel folder. Keras models are
    channels-last: their NHWC layout is the one every artifact of the bundle takes and returns."""

    kind = "keras"

    def __init__(self, model: Any = None, saved_model: Path | None = None, description: str = "",
                 input_shape: Sequence[int] | None = None):
        tf = require("tensorflow", "keras", "Converting a Keras model")
        self.model = model
        self.saved_model = Path(saved_model) if saved_model else None
        self.description = description or (type(model).__name__ if model is not None else str(saved_model))
        if model is not None:
            tensors = list(model.inputs)
            names = [t.name.split(":")[0] for t in tensors]
            shapes = [tuple(t.shape) for t in tensors]
            dtypes = [str(getattr(t.dtype, "name", t.dtype)) for t in tensors]
        else:
            try:
                loaded = tf.saved_model.load(str(saved_model))
                self._signature = loaded.signatures["serving_default"]
            except Exception as exc:
                raise ModelLoadError(f"{saved_model} is not a loadable SavedModel with a 'serving_default' "
                                     f"signature ({exc.__class__.__name__}: {first_line(exc)}).") from None
            self._loaded = loaded  # the signature needs its object alive
            specs = self._signature.structured_input_signature[1]
            names = list(specs)
            shapes = [tuple(specs[n].shape) for n in names]
            dtypes = [specs[n].dtype.name for n in names]
        if input_shape is not None:
            if len(shapes) != 1:
                raise ConversionError("--input-shape applies to single-input models only.")
            shapes = [tuple(input_shape)]
        shapes = [tuple(1 if (d is None and i == 0) else d for i, d in enumerate(s)) for s in shapes]
        if any(d is None for s in shapes for d in s):
            raise ConversionError(f"The Keras model's input shapes {shapes} have unknown sizes: give one with "
                                  "--input-shape (e.g. 1,224,224,3).")
        self.inputs = [TensorSpec(n, s, d, "NHWC" if len(s) == 4 else guess_layout(s))
                       for n, s, d in zip(names, shapes, dtypes)]
        outs = self.run(self.example_feeds())
        self.outputs = [TensorSpec(f"output_{i}" if len(outs) > 1 else "output", o.shape, str(o.dtype), None)
                        for i, o in enumerate(outs)]

    def example_feeds(self) -> dict[str, np.ndarray]:
        return random_feeds(self.inputs, uniform=True)

    def _call(self, *tensors: Any) -> list[Any]:
        """Run the model on tf tensors in input order (inside or outside a tf.function)."""
        if self.model is not None:
            # Feed the structure the model was built with (a list for Input lists), so Keras does not warn.
            as_list = len(tensors) > 1 or isinstance(getattr(self.model, "_inputs_struct", None), (list, tuple))
            out = self.model(list(tensors) if as_list else tensors[0], training=False)
        else:
            out = self._signature(**{s.name: t for s, t in zip(self.inputs, tensors)})
            out = [out[k] for k in sorted(out)]
        return _flatten_outputs(out)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(o) for o in self._call(*(feeds[s.name] for s in self.inputs))]

    def write_saved_model(self, folder: Path) -> Path:
        """A SavedModel of this source for TFLiteConverter: the given folder, or a fresh export."""
        if self.saved_model is not None:
            return self.saved_model
        self.model.export(str(folder), format="tf_saved_model", verbose=False)
        return folder

    def export_onnx(self, path: Path, opset: int, dynamic_batch: bool = False,
                    exporter: str = "auto") -> dict[str, str]:
        import tensorflow as tf

        tf2onnx = require("tf2onnx", "keras", "Converting a Keras model to ONNX")
        from .onnx_tools import rename_io, save_slim

        signature = [tf.TensorSpec((None if dynamic_batch else s.shape[0], *s.shape[1:]), s.dtype, name=s.name)
                     for s in self.inputs]
        function = tf.function(lambda *xs: self._call(*xs))
        try:
            proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=min(opset, 18))
        except Exception as exc:
            raise ConversionError(f"tf2onnx could not convert the Keras model: {first_line(exc)}") from None
        save_slim(rename_io(proto, [s.name for s in self.inputs], [s.name for s in self.outputs]), path)
        return {"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__}


#: TensorFlow ops that touch the file system or call back into Python. A SavedModel is a program: its
#: serving function runs on example feeds during conversion, so one that holds these ops is refused
#: unless the user says they trust it.
UNSAFE_TF_OPS = frozenset({
    "WriteFile", "ReadFile", "MatchingFiles", "Save", "SaveSlices", "SaveV2", "MergeV2Checkpoints", "Restore",
    "RestoreSlice", "RestoreV2", "PyFunc", "PyFuncStateless", "EagerPyFunc", "CreateSummaryFileWriter",
    "WriteScalarSummary", "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary", "WriteGraphSummary",
    "WriteRawProtoSummary", "WriteSummary", "ImportEvent", "FlushSummaryWriter", "DebugIdentityV2",
    "DebugIdentityV3", "TFRecordDataset", "TFRecordDatasetV2", "FixedLengthRecordDataset", "TextLineDataset",
    "DatasetToTFRecord", "SaveDataset", "SaveDatasetV2", "LoadDataset", "WholeFileReader", "WholeFileReaderV2",
    "ReaderReadV2", "ImmutableConst",
})


def saved_model_unsafe_ops(folder: Path, signature: str = "serving_default") -> list[str]:
    """The unsafe ops a SavedModel's serving signature can reach (the graph nodes its outputs depend
    on, and every function those call, transitively). The saver's own SaveV2/RestoreV2 functions are
    not reachable from serving and do not count. Read from the protobuf: nothing of the model runs."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString((folder / "saved_model.pb").read_bytes())
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise ModelLoadError(f"{folder}/saved_model.pb is not a readable SavedModel ({first_line(exc)}).") from None
    found: set[str] = set()
    for meta in proto.meta_graphs:
        if signature not in meta.signature_def:
            continue
        functions = {f.signature.name: f for f in meta.graph_def.library.function}
        nodes = {n.name: n for n in meta.graph_def.node}
        pending = [t.name.lstrip("^").split(":")[0] for t in meta.signature_def[signature].outputs.values()]
        seen_nodes: set[str] = set()
        calls: list[str] = []
        while pending:  # the main graph, backwards from the signature's outputs
            name = pending.pop()
            if name in seen_nodes or name not in nodes:
                continue
            seen_nodes.add(name)
            node = nodes[name]
            found.add(node.op)
            calls += _called_functions(node, functions)
            pending += [i.lstrip("^").split(":")[0] for i in node.input]
        seen_functions: set[str] = set()
        while calls:  # every function reachable from there, whole
            name = calls.pop()
            if name in seen_functions:
                continue
            seen_functions.add(name)
            for node in functions[name].node_def:
                found.add(node.op)
                calls += _called_functions(node, functions)
    return sorted(found & UNSAFE_TF_OPS)


def _called_functions(node: Any, functions: dict[str, Any]) -> list[str]:
    """Functions a node calls: by op name, or through func / list-of-func attributes."""
    called = [node.op] if node.op in functions else []
    for attr in node.attr.values():
        if attr.HasField("func"):
            called.append(attr.func.name)
        called += [f.name for f in attr.list.func]
    return [c for c in called if c in functions]


def check_saved_model(folder: Path, trust_source: bool) -> None:
    """Refuse a SavedModel whose serving function holds file-system or Python-calling ops, unless trusted."""
    unsafe = saved_model_unsafe_ops(folder)
    if unsafe and not trust_source:
        raise ModelLoadError(
            f"The SavedModel {folder} runs ops that read or write files or call Python when served "
            f"({', '.join(unsafe)}). A SavedModel is a program, and converting it runs it. If you trust where it "
            "came from, pass trust_source=True (--trust-source on the CLI).")
    if unsafe:
        log.warning("Converting the SavedModel %s although it holds %s (trusted by the user).", folder,
                    ", ".join(unsafe))


def load_keras(path: Path, input_shape: Sequence[int] | None = None, trust_source: bool = False) -> KerasSource:
    """A .keras / .h5 file (loaded with safe_mode: no arbitrary code from Lambda layers) or a SavedModel
    (a program: checked for file-system and Python-calling ops first, see check_saved_model)."""
    if path.is_dir():
        require("tensorflow", "keras", "Converting a SavedModel")
        check_saved_model(path, trust_source)
        return KerasSource(saved_model=path, description=str(path), input_shape=input_shape)
    keras = require("keras", "keras", f"Reading {path.name}")
    try:
        model = keras.models.load_model(str(path), compile=False, safe_mode=True)
    except Exception as exc:
        raise ModelLoadError(f"{path} is not a loadable Keras model ({exc.__class__.__name__}: {first_line(exc)})."
                             " Models with Lambda layers are refused (safe_mode): rebuild them in code.") from None
    return KerasSource(model, description=str(path), input_shape=input_shape)


def from_module(module: Any, example_input: Any, **kwargs: Any) -> TorchSource:
    """A SourceModel from a torch module and an example input (a tensor, an array, a tuple of them in
    forward's order, or a dict by forward's parameter names)."""
    examples = example_input if isinstance(example_input, (tuple, list, Mapping)) else (example_input,)
    return TorchSource(module, examples, **kwargs)


def _example_from_shape(input_shape: Sequence[int] | None, what: str) -> tuple[Any, ...]:
    import torch

    if input_shape is None:
        raise ConversionError(f"{what} does not say its input shape: give one, e.g. --input-shape 1,3,224,224.")
    return (torch.randn(*input_shape),)


def load_weights(module: Any, weights: str | os.PathLike) -> None:
    """Load a state dict into module with torch.load(weights_only=True): never unpickles code."""
    torch = require("torch", "torch", "Loading weights")
    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelLoadError(f"Weights file not found: {weights}") from None
    except Exception as exc:
        raise ModelLoadError(
            f"Cannot load weights from {weights} safely ({exc.__class__.__name__}: {first_line(exc)}). "
            "edgesdk loads only tensors (torch.load weights_only=True): save a state_dict, not a whole model."
        ) from None
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    try:
        module.load_state_dict(state)
    except Exception as exc:
        raise ModelLoadError(f"Weights in {weights} do not fit the model: {exc}") from None


def load_factory(spec: str) -> Any:
    """Call 'pkg.module:function' and return the module it builds."""
    if ":" not in spec:
        raise ModelLoadError(f"--factory expects 'package.module:function', got '{spec}'.")
    mod_name, func_name = spec.split(":", 1)
    if os.getcwd() not in sys.path:  # as `python -m` does: factories in the user's project import from where they run
        sys.path.insert(0, os.getcwd())
    try:
        func = getattr(importlib.import_module(mod_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"Cannot find factory {spec}: {exc}") from None
    return func()


def load_source(
    path: str | os.PathLike | None = None,
    factory: str | None = None,
    weights: str | os.PathLike | None = None,
    input_shape: Sequence[int] | None = None,
    dynamic_batch: bool = False,
    trust_source: bool = False,
    dynamic_axes: Any = None,
    outputs: Sequence[str] | None = None,
) -> SourceModel:
    """Open a source model from the CLI's arguments: a model file, or a factory with optional weights.
    A factory's module may carry its own example (`example_inputs`: a tuple or a dict by name, e.g. token
    ids) or `input_shape`. trust_source=True lets a SavedModel with file-system or Python-calling ops be
    converted (it runs)."""
    if factory:
        module = load_factory(factory)
        if weights:
            load_weights(module, weights)
        carried = getattr(module, "example_inputs", None)
        examples = carried if carried is not None and input_shape is None else _example_from_shape(
            input_shape or getattr(module, "input_shape", None), f"Factory {factory}")
        return TorchSource(module, examples, description=factory, dynamic_batch=dynamic_batch,
                           dynamic_axes=dynamic_axes, outputs=outputs)
    if path is None:
        raise ModelLoadError("Give a model file (.onnx, TorchScript .pt, torch.export .pt2, .keras, .h5, a "
                             "SavedModel folder) or --factory.")
    p = Path(path)
    if p.is_dir() and (p / "saved_model.pb").is_file():
        return load_keras(p, input_shape, trust_source)
    if not p.is_file():
        raise ModelLoadError(f"Model file not found: {p}")
    suffix = p.suffix.lower()
    if outputs and suffix not in _TORCH_FILES:
        raise ConversionError(f"--outputs picks among a torch model's outputs; {p.name} keeps the outputs it "
                              "declares (cut an ONNX file with onnx.utils.extract_model).")
    if suffix == ".onnx" and not dynamic_axes:
        return OnnxSource(p, input_shape)
    if suffix in (".keras", ".h5", ".hdf5"):
        return load_keras(p, input_shape)
    if suffix in _TORCH_FILES:
        load = _load_exported if suffix == ".pt2" else _load_torchscript
        return load(p, input_shape, dynamic_batch, dynamic_axes, outputs)
    if dynamic_axes:
        raise ConversionError(f"Dynamic axes apply to torch sources; {p.name} keeps the shapes it declares "
                              "(an ONNX file's symbolic dimensions stay symbolic).")
    raise ModelLoadError(f"Unknown model file type '{suffix}' ({p}). edgesdk reads .onnx, TorchScript .pt, "
                         "torch.export .pt2, Keras .keras/.h5, a SavedModel folder, or --factory with --weights.")


_TORCH_FILES = (".pt2", ".pt", ".pth", ".jit", ".ts", ".torchscript")


def _load_exported(p: Path, input_shape: Sequence[int] | None, dynamic_batch: bool, dynamic_axes: Any,
                   outputs: Sequence[str] | None = None) -> SourceModel:
    """A torch.export program (.pt2); its own example inputs unless a shape is given."""
    torch = require("torch", "torch", f"Reading {p.name}")
    try:
        program = torch.export.load(str(p))
    except Exception as exc:
        raise ModelLoadError(f"{p} is not a readable torch.export program ({exc.__class__.__name__}: "
                             f"{first_line(exc)}).") from None
    examples = input_shape and _example_from_shape(input_shape, str(p))
    if not examples and program.example_inputs:
        examples = program.example_inputs[0]
    if not examples:
        examples = _example_from_shape(None, str(p))
    return TorchSource(program.module(), examples, description=str(p), dynamic_batch=dynamic_batch,
                       dynamic_axes=dynamic_axes, outputs=outputs)


def _load_torchscript(p: Path, input_shape: Sequence[int] | None, dynamic_batch: bool, dynamic_axes: Any,
                      outputs: Sequence[str] | None = None) -> SourceModel:
    """A TorchScript archive; a plain checkpoint of weights is told to use --factory."""
    torch = require("torch", "torch", f"Reading {p.name}")
    try:
        module = torch.jit.load(str(p), map_location="cpu")
    except Exception as exc:
        raise ModelLoadError(
            f"{p} is not a TorchScript archive ({exc.__class__.__name__}: "
            f"{first_line(exc)}). For a checkpoint of weights, use "
            "--factory package.module:function --weights FILE."
        ) from None
    return TorchSource(module, _example_from_shape(input_shape, f"TorchScript file {p.name}"),
                       description=str(p), dynamic_batch=dynamic_batch, dynamic_axes=dynamic_axes, outputs=outputs)
