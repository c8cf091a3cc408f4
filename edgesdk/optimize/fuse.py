"""Conv+BN folding before export: the BatchNorm's scale and shift go into the convolution's weights and
bias (torch.fx's own fuse pass), so the exported graph has one op where it had two. A ReLU after them
stays a separate op; every runtime here fuses Conv+ReLU itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.errors import ConversionError, require


@dataclass
class FusionReport:
    batchnorms_before: int
    batchnorms_after: int
    max_abs_error: float  # fused vs original on the example input


def fuse_conv_bn(model: Any, example_input: Any, tolerance: float = 1e-5) -> tuple[Any, FusionReport]:
    """(fused copy of model, report). Raises ConversionError when the outputs differ by more than
    tolerance, or when the model cannot be traced (data-dependent control flow)."""
    torch = require("torch", "torch", "Conv+BN fusion")
    from torch.fx.experimental.optimization import fuse

    model.eval()
    args = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    try:
        fused = fuse(model, inplace=False)
    except Exception as exc:
        raise ConversionError(f"Conv+BN fusion needs a torch.fx-traceable model: {exc}") from exc
    count = lambda m: sum(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in m.modules())  # noqa: E731
    with torch.no_grad():
        ref, out = model(*args), fused(*args)
    err = float((ref - out).abs().max()) if hasattr(ref, "abs") else 0.0
    if err > tolerance:
        raise ConversionError(f"Fused model differs from the original by {err:.2e} (limit {tolerance:.0e}).")
    return fused, FusionReport(count(model), count(fused), err)
