"""What a model takes and gives (TensorSpec): stored in the bundle manifest, so every backend and app
feeds a model the same way. How raw images become its input (Preprocess) is in edgesdk.core.images."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

Dim = int | str | None  # a fixed size, or a symbolic / unknown one (dynamic axis)
#: Dynamic axes beyond a fixed shape: input name -> {axis index: symbolic name}, e.g.
#: {"input_ids": {1: "sequence"}}. Inputs sharing a name share a size (ids and mask).
DynamicAxes = dict[str, dict[int, str]]


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape, dtype and layout of one model input or output."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"
    layout: str | None = None  # e.g. "NCHW", "NHWC"; None where it has no meaning

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "layout": self.layout}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(d["name"], tuple(d["shape"]), d.get("dtype", "float32"), d.get("layout"))

    def concrete_shape(self, batch: int = 1) -> tuple[int, ...]:
        """The shape with every dynamic dimension replaced (batch for the first, 1 elsewhere)."""
        return tuple(d if isinstance(d, int) else (batch if i == 0 else 1) for i, d in enumerate(self.shape))

    def accepts_shape(self, shape: Sequence[int]) -> bool:
        if shape == self.shape:  # a fixed shape, the common case: one comparison per call
            return True
        return len(shape) == len(self.shape) and all(
            not isinstance(d, int) or d == s for d, s in zip(self.shape, shape)
        )

    @cached_property
    def np_dtype(self) -> np.dtype | None:
        """The numpy dtype, or None for a type numpy has no name for (ONNX strings, sequences)."""
        try:
            return np.dtype(self.dtype)
        except TypeError:
            return None

    def permuted(self, perm: Sequence[int]) -> TensorSpec:
        """The same tensor with its axes in another order (NCHW -> NHWC for perm (0, 2, 3, 1))."""
        layout = "".join(self.layout[i] for i in perm) if self.layout and len(self.layout) == len(perm) else None
        return TensorSpec(self.name, tuple(self.shape[i] for i in perm), self.dtype, layout)


def parse_dynamic_axes(given: Any) -> DynamicAxes:
    """Dynamic axes from a dict, or from CLI-style specs "input_ids:1=sequence" (a string, comma-separated
    specs, or a list of them). UsageError for anything else, saying the form expected."""
    from .errors import UsageError

    if not given:
        return {}
    if isinstance(given, dict):
        try:
            return {str(k): {int(a): str(n) for a, n in v.items()} for k, v in given.items()}
        except (AttributeError, TypeError, ValueError):
            raise UsageError(f"dynamic_axes must map input names to {{axis: name}}, e.g. "
                             f"{{'input_ids': {{1: 'sequence'}}}}; got {given!r}.") from None
    items = given.split(",") if isinstance(given, str) else [p for g in given for p in str(g).split(",")]
    axes: DynamicAxes = {}
    for item in (i.strip() for i in items if i.strip()):
        match = re.fullmatch(r"([^:=\s]+):(\d+)=([A-Za-z_][A-Za-z0-9_]*)", item)
        if not match:
            raise UsageError(f"Cannot read the dynamic axis '{item}': write INPUT:AXIS=NAME, e.g. "
                             "input_ids:1=sequence (inputs sharing a NAME share a size).")
        axes.setdefault(match[1], {})[int(match[2])] = match[3]
    return axes


def check_array(spec: TensorSpec, arr: np.ndarray, allow_nonfinite: bool = False,
                native: TensorSpec | None = None) -> None:
    """Raise InputError unless arr has spec's dtype and an accepted shape, and (for floating inputs)
    only finite values: NaN or Inf in gives plausible-looking garbage out on several backends.
    native: the same input in the layout the loaded artifact computes in (NHWC inside a TFLite file
    made from an NCHW model); an array already in that layout is accepted too (no transpose needed)."""
    from .errors import InputError

    wanted = spec.np_dtype
    if wanted is not None and arr.dtype != wanted:
        raise InputError(f"Input '{spec.name}' has dtype {arr.dtype}; the model expects {spec.dtype}. "
                         f"Convert it with .astype(np.{spec.dtype}).")
    if not spec.accepts_shape(arr.shape) and not (native is not None and native.accepts_shape(arr.shape)):
        raise InputError(f"Input '{spec.name}' has shape {list(arr.shape)}; the model expects "
                         f"{list(spec.shape)}" + (f" ({spec.layout})" if spec.layout else "") + ".")
    if not allow_nonfinite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise InputError(f"Input '{spec.name}' holds {bad} NaN or infinite values; the model expects finite "
                         "numbers. Check the preprocessing, or pass allow_nonfinite=True to run them anyway.")


def check_feeds(specs: Sequence[TensorSpec], feeds: dict[str, np.ndarray]) -> None:
    """Raise InputError unless feeds has exactly the named inputs, each matching its spec."""
    from .errors import InputError

    if len(feeds) != len(specs) or any(s.name not in feeds for s in specs):
        raise InputError(f"Inputs {sorted(feeds)} do not match the model's inputs {[s.name for s in specs]}.")
    for spec in specs:
        arr = feeds[spec.name]
        if not isinstance(arr, np.ndarray):
            raise InputError(f"Input '{spec.name}' is a {type(arr).__name__}; give a numpy array.")
        check_array(spec, arr, allow_nonfinite=True)


def random_feeds(specs: Sequence[TensorSpec], seed: int = 0, uniform: bool = False,
                 length: int = 16) -> dict[str, np.ndarray]:
    """Deterministic stand-in inputs of the specs' shapes and dtypes: a dynamic first axis as 1, other
    dynamic axes (a sequence) as `length`; standard normal (or uniform [0, 1)) floats; small non-negative
    integers (token ids, indices), except ones for masks (an integer input named *mask*); False for booleans."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for s in specs:
        shape = tuple(d if isinstance(d, int) else (1 if i == 0 else length) for i, d in enumerate(s.shape))
        dtype = np.dtype(s.dtype)
        if dtype.kind == "f":
            values = rng.random(shape) if uniform else rng.standard_normal(shape)
        elif dtype.kind in "iu":
            values = np.ones(shape) if "mask" in s.name.lower() else rng.integers(0, 100, shape)
        else:
            values = np.zeros(shape)
        feeds[s.name] = values.astype(dtype)
    return feeds


def axis_sizes(specs: Sequence[TensorSpec], feeds: dict[str, np.ndarray]) -> dict[str, int]:
    """The size of each symbolic axis name in these feeds."""
    return {d: int(feeds[s.name].shape[i]) for s in specs for i, d in enumerate(s.shape) if isinstance(d, str)}


def resize_axes(specs: Sequence[TensorSpec], feeds: dict[str, np.ndarray], sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """The feeds with each named symbolic axis cut or repeated to its new size (repeating keeps token ids
    valid and masks masks)."""
    out = {}
    for s in specs:
        a = feeds[s.name]
        for i, d in enumerate(s.shape):
            if isinstance(d, str) and d in sizes and a.shape[i] != sizes[d]:
                a = np.take(a, np.arange(sizes[d]) % a.shape[i], axis=i)
        out[s.name] = np.ascontiguousarray(a)
    return out


def guess_layout(shape: Sequence[Dim]) -> str | None:
    """NCHW or NHWC for a 4-D image-like shape, None otherwise."""
    if len(shape) != 4:
        return None
    c_first, c_last = shape[1], shape[3]
    if c_first in (1, 3, 4) and c_last not in (1, 3, 4):
        return "NCHW"
    if c_last in (1, 3, 4) and c_first not in (1, 3, 4):
        return "NHWC"
    return "NCHW"
