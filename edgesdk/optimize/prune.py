"""Pruning. Unstructured pruning (L1 or random, made permanent) zeroes weights: the model compresses
better but runs no faster on the dense kernels of ONNX Runtime, OpenVINO or TFLite. Structured channel
pruning removes whole channels, so the exported model really is smaller and faster; torch-pruning's
dependency graph keeps residual adds, depthwise groups and BatchNorms consistent."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..core.errors import ConversionError, require


def prune_unstructured(model: Any, amount: float, method: str = "l1") -> Any:
    """Zero `amount` (0-1) of each conv/linear layer's weights, smallest |w| first ("l1") or at random,
    in place; the masks are folded into the weights (torch.nn.utils.prune.remove)."""
    torch = require("torch", "torch", "Pruning")
    from torch.nn.utils import prune

    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    for layer in layers:
        if method == "l1":
            prune.l1_unstructured(layer, "weight", amount=amount)
        elif method == "random":
            prune.random_unstructured(layer, "weight", amount=amount)
        else:
            raise ConversionError(f"Unknown pruning method '{method}': use l1 or random.")
        prune.remove(layer, "weight")
    return model


def sparsity(model: Any) -> float:
    """The share of conv/linear weights that are exactly zero."""
    torch = require("torch", "torch", "Pruning")
    weights = [m.weight for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    total = sum(w.numel() for w in weights)
    return float(sum(int((w == 0).sum()) for w in weights)) / max(total, 1)


def prune_channels(model: Any, example_input: Any, ratio: float, keep: Sequence[Any] = ()) -> Any:
    """Remove `ratio` (0-1) of the channels of every prunable layer, lowest L1 group norm first, in place
    (torch-pruning's MagnitudePruner over its dependency graph). `keep` lists modules whose outputs must
    not change width, e.g. the classifier; the last Linear layer is kept by default."""
    torch = require("torch", "torch", "Pruning")
    tp = require("torch_pruning", "optimize", "Structured pruning")
    ignored = list(keep) or [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1:]
    args = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    model.eval()
    pruner = tp.pruner.MagnitudePruner(model, args, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                       pruning_ratio=ratio, ignored_layers=ignored)
    pruner.step()
    return model


def fine_tune(model: Any, batches: Callable[[], Iterable[tuple[Any, Any]]], epochs: int = 3, lr: float = 1e-3,
              loss_fn: Any = None) -> Any:
    """A plain supervised loop (Adam, cross entropy by default) to recover accuracy after pruning.
    `batches()` yields (inputs, labels) for one epoch; replace this with your own loop as you like."""
    torch = require("torch", "torch", "Fine-tuning")
    loss_fn = loss_fn or torch.nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for x, y in batches():
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
    model.eval()
    return model
