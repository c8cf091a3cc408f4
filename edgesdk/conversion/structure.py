"""What a torch model's forward returns, flattened: tensors, tuples and lists (nested), dicts,
Hugging Face `ModelOutput`s and dataclasses, with None entries dropped. Every artifact has flat, named
outputs; these names are the ones users see in the manifest, in `Runtime.run_dict` and in `--outputs`.

Names follow the path to each tensor: a lone tensor is "output"; the i-th entry of a returned tuple is
"output{i}"; a dict (or ModelOutput) entry is its key ("logits", "last_hidden_state"), with list indices
and inner keys after a dot ("feats.1", "one2many.boxes"). Ultralytics' YOLO returns
`(predictions, {"boxes", "scores", "feats": [...]})`: output0, boxes, scores, feats.0, feats.1, feats.2."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..core.errors import ConversionError

log = logging.getLogger(__name__)


def _children(value: Any) -> list[tuple[str, Any]] | None:
    """(key, child) pairs of a container, None for a leaf."""
    if isinstance(value, Mapping):  # dicts and transformers' ModelOutput (an OrderedDict)
        return [(str(k), v) for k, v in value.items()]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
    if isinstance(value, (tuple, list)):
        return [(str(i), v) for i, v in enumerate(value)]
    return None


def _walk(value: Any, path: tuple[str, ...], found: list[tuple[str, Any]]) -> None:
    children = _children(value)
    if children is None:
        if value is not None and hasattr(value, "shape") and hasattr(value, "dtype"):
            found.append((".".join(path) or "output", value))
        elif value is not None:  # a cache object, a number: not a tensor an artifact can return
            log.info("Output %s is a %s, not a tensor: it is left out.", ".".join(path) or "output",
                     type(value).__name__)
        return
    for key, child in children:
        _walk(child, (*path, key), found)


def _is_map(value: Any) -> bool:
    return _children(value) is not None and not isinstance(value, (tuple, list))


def flatten_named(out: Any) -> list[tuple[str, Any]]:
    """[(name, leaf)] in forward's order; names unique (a repeat gets _2, _3)."""
    found: list[tuple[str, Any]] = []
    if isinstance(out, (tuple, list)):
        for i, entry in enumerate(out):  # (preds, {"boxes": ...}) -> "output0", "boxes"
            _walk(entry, () if _is_map(entry) else (f"output{i}",), found)
    else:
        _walk(out, (), found)
    named, seen = [], {}
    for name, leaf in found:
        seen[name] = seen.get(name, 0) + 1
        named.append((name if seen[name] == 1 else f"{name}_{seen[name]}", leaf))
    return named


def select(named: list[tuple[str, Any]], wanted: Sequence[str] | None) -> list[tuple[str, Any]]:
    """The named outputs in the order asked for; all of them when wanted is None. An unknown name is an
    error that lists the names there are."""
    if not wanted:
        return named
    by_name = dict(named)
    unknown = [w for w in wanted if w not in by_name]
    if unknown:
        raise ConversionError(f"The model has no output named {unknown}; its outputs are {list(by_name)}. "
                              "Pick from those with outputs= / --outputs.")
    return [(w, by_name[w]) for w in wanted]


def is_flat(out: Any) -> bool:
    """A tensor, or a tuple/list of tensors: what every exporter takes as it is."""
    if isinstance(out, (tuple, list)):
        return all(_children(o) is None and o is not None for o in out)
    return _children(out) is None and out is not None


def flat_module(module: Any, input_names: Sequence[str], by_keyword: bool, wanted: Sequence[str] | None) -> Any:
    """A torch module that calls module (positionally, or by keyword for dict examples and keyword-only
    parameters) and returns the selected outputs as a flat tuple: the form every exporter and runtime
    takes. Built only when the module's own forward is not already in that form."""
    import torch

    class Flattened(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *args: Any) -> tuple[Any, ...]:
            out = self.inner(**dict(zip(input_names, args))) if by_keyword else self.inner(*args)
            return tuple(leaf for _, leaf in select(flatten_named(out), wanted))

    flattened = Flattened()
    flattened.train(getattr(module, "training", False))
    return flattened
