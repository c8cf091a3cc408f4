"""Load what the user brings (a torch module, a TorchScript / torch.export file, an ONNX file, or a
factory function plus weights) into a SourceModel: inputs, outputs, and a way to run the reference.

Untrusted files are never unpickled: weights go through torch.load(weights_only=True)."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConversionError, ModelLoadError, require
from .specs import TensorSpec, guess_layout

log = logging.getLogger(__name__)


class SourceModel:
    """The model a conversion starts from, and the reference its artifacts are checked against."""

    kind: str = "unknown"  # converters look at this to choose their route ("torch", "onnx", ...)
    description: str = ""
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def example_feeds(self) -> dict[str, np.ndarray]:
        raise NotImplementedError


def _names(given: Sequence[str] | None, count: int, stem: str) -> list[str]:
    if given:
        if len(given) != count:
            raise ConversionError(f"Got {len(given)} {stem} names for a model with {count} {stem}s.")
        return list(given)
    return [stem] if count == 1 else [f"{stem}_{i}" for i in range(count)]


def _flatten_outputs(out: Any) -> list[Any]:
    if isinstance(out, dict):
        return [v for v in out.values()]
    if isinstance(out, (tuple, list)):
        flat: list[Any] = []
        for o in out:
            flat.extend(_flatten_outputs(o))
        return flat
    return [out]


class TorchSource(SourceModel):
    """A torch nn.Module (or ScriptModule / ExportedProgram's module) plus example inputs."""

    kind = "torch"

    def __init__(
        self,
        module: Any,
        example_inputs: Sequence[Any],
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
        description: str = "",
        dynamic_batch: bool = False,
    ):
        torch = require("torch", "torch", "Converting a PyTorch model")
        try:
            module.eval()
        except (AttributeError, NotImplementedError):  # a torch.export program's module has no eval()
            pass
        self.module = module
        self.example_inputs = tuple(torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
                                    for x in example_inputs)
        self.description = description or type(module).__name__
        self.dynamic_batch = dynamic_batch
        names = _names(input_names, len(self.example_inputs), "input")
        self.inputs = [self._spec(n, tuple(x.shape), str(x.dtype).replace("torch.", ""))
                       for n, x in zip(names, self.example_inputs)]
        try:
            with torch.no_grad():
                outs = [o.detach().numpy() for o in _flatten_outputs(module(*self.example_inputs))]
        except Exception as exc:
            raise ConversionError(
                f"The source model failed on its example input of shape "
                f"{[tuple(x.shape) for x in self.example_inputs]}: {exc.__class__.__name__}: {exc}. "
                "Check --input-shape / example_input."
            ) from exc
        onames = _names(output_names, len(outs), "output")
        self.outputs = [self._spec(n, o.shape, str(o.dtype), layout=None) for n, o in zip(onames, outs)]

    def _spec(self, name: str, shape: tuple[int, ...], dtype: str, layout: str | None = "guess") -> TensorSpec:
        """A spec whose first dimension is symbolic ("batch") when exporting with a dynamic batch."""
        dims: tuple[int | str, ...] = tuple(int(d) for d in shape)
        if self.dynamic_batch and dims:
            dims = ("batch", *dims[1:])
        return TensorSpec(name, dims, dtype, guess_layout(shape) if layout == "guess" else layout)

    def example_feeds(self) -> dict[str, np.ndarray]:
        return {s.name: x.numpy() for s, x in zip(self.inputs, self.example_inputs)}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in self.inputs]
        with torch.no_grad():
            return [o.detach().numpy() for o in _flatten_outputs(self.module(*args))]


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
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}).") from None
        init_names = {i.name for i in proto.graph.initializer}
        from .runtimes.onnxruntime import spec_from_value_info

        self.inputs = [spec_from_value_info(v) for v in proto.graph.input if v.name not in init_names]
        self.outputs = [spec_from_value_info(v) for v in proto.graph.output]
        if input_shape is not None:
            if len(self.inputs) != 1:
                raise ConversionError("--input-shape applies to single-input models only.")
            s = self.inputs[0]
            self.inputs = [TensorSpec(s.name, tuple(input_shape), s.dtype, s.layout)]
        self._session = None

    def example_feeds(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(0)
        return {s.name: rng.standard_normal(s.concrete_shape()).astype(s.dtype) for s in self.inputs}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._session is None:
            from .runtimes import open_session

            self._session = open_session("onnxruntime", self.path, threads=None)
        return self._session.run(feeds)


def from_module(module: Any, example_input: Any, **kwargs: Any) -> TorchSource:
    """A SourceModel from a torch module and an example input (a tensor, an array, or a tuple of them)."""
    examples = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
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
            f"Cannot load weights from {weights} safely ({exc.__class__.__name__}: {str(exc).splitlines()[0]}). "
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
) -> SourceModel:
    """Open a source model from the CLI's arguments: a model file, or a factory with optional weights."""
    if factory:
        module = load_factory(factory)
        if weights:
            load_weights(module, weights)
        return TorchSource(module, _example_from_shape(input_shape or getattr(module, "input_shape", None),
                                                       f"Factory {factory}"),
                           description=factory, dynamic_batch=dynamic_batch)
    if path is None:
        raise ModelLoadError("Give a model file (.onnx, TorchScript .pt, torch.export .pt2) or --factory.")
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"Model file not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        return OnnxSource(p, input_shape)
    torch = require("torch", "torch", f"Reading {p.name}")
    if suffix == ".pt2":
        try:
            program = torch.export.load(str(p))
        except Exception as exc:
            raise ModelLoadError(f"{p} is not a readable torch.export program ({exc.__class__.__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}).") from None
        examples = input_shape and _example_from_shape(input_shape, str(p))
        if not examples and program.example_inputs:
            examples = program.example_inputs[0]
        if not examples:
            examples = _example_from_shape(None, str(p))
        return TorchSource(program.module(), examples, description=str(p), dynamic_batch=dynamic_batch)
    if suffix in (".pt", ".pth", ".jit", ".ts", ".torchscript"):
        try:
            module = torch.jit.load(str(p), map_location="cpu")
        except Exception as exc:
            raise ModelLoadError(
                f"{p} is not a TorchScript archive ({exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}). For a checkpoint of weights, use "
                "--factory package.module:function --weights FILE."
            ) from None
        return TorchSource(module, _example_from_shape(input_shape, f"TorchScript file {p.name}"),
                           description=str(p), dynamic_batch=dynamic_batch)
    raise ModelLoadError(f"Unknown model file type '{suffix}' ({p}). edgesdk reads .onnx, TorchScript .pt, "
                         "torch.export .pt2, or --factory with --weights.")
