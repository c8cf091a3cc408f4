"""What a PyTorch model costs, measured before choosing an optimization: parameters, FLOPs (torch's own
FlopCounterMode), size on disk, activation memory, and a per-layer breakdown of where the cost is."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.errors import InputError, require


@dataclass
class LayerCost:
    name: str
    type: str
    params: int
    flops: int
    output_shape: list[int]
    output_bytes: int


@dataclass
class ModelCost:
    params: int
    flops: int  # for one forward pass on the example input (a multiply-add counts as 2)
    size_bytes: int  # the FP32 state dict as torch.save writes it
    peak_activation_bytes: int  # the largest input + output of any single layer
    activation_bytes: int  # all layer outputs of one forward pass together
    layers: list[LayerCost] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def top(self, n: int = 10, by: str = "flops") -> list[LayerCost]:
        return sorted(self.layers, key=lambda layer: getattr(layer, by), reverse=True)[:n]


def measure_cost(model: Any, example_input: Any) -> ModelCost:
    """Run one forward pass of model on example_input (a tensor or tuple of tensors) and measure it."""
    torch = require("torch", "torch", "Measuring a model's cost")
    from torch.utils.flop_counter import FlopCounterMode

    args = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    args = tuple(torch.as_tensor(a) for a in args)
    model.eval()
    # Layers: modules that own parameters (a conv with a padding child is one layer) and parameter-free leaves.
    leaves = {name: m for name, m in model.named_modules()
              if name and (not list(m.children()) or any(True for _ in m.parameters(recurse=False)))}
    shapes: dict[str, tuple[list[int], int, int]] = {}  # layer -> (output shape, output bytes, in + out bytes)
    handles = [m.register_forward_hook(_recorder(name, shapes)) for name, m in leaves.items()]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(*args)
    except Exception as exc:
        raise InputError(f"The model failed on the example input {[tuple(a.shape) for a in args]}: {exc}") from exc
    finally:
        for h in handles:
            h.remove()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return ModelCost(
        params=sum(p.numel() for p in model.parameters()),
        flops=int(counter.get_total_flops()),
        size_bytes=buffer.getbuffer().nbytes,
        peak_activation_bytes=max((v[2] for v in shapes.values()), default=0),
        activation_bytes=sum(v[1] for n, v in shapes.items()  # outermost layers only: no output counted twice
                             if not any(n.startswith(p + ".") for p in leaves)),
        layers=_layers(leaves, shapes, counter.get_flop_counts(), type(model).__name__),
    )


def _recorder(name: str, shapes: dict[str, tuple[list[int], int, int]]) -> Any:
    """A forward hook that records one layer's output shape and activation bytes."""
    def record(module: Any, inputs: tuple[Any, ...], output: Any) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        in_bytes = sum(t.numel() * t.element_size() for t in inputs if hasattr(t, "numel"))
        out_bytes = out.numel() * out.element_size() if hasattr(out, "numel") else 0
        shapes[name] = (list(getattr(out, "shape", [])), out_bytes, in_bytes + out_bytes)
    return record


def _layers(leaves: dict[str, Any], shapes: dict[str, tuple[list[int], int, int]],
            per_module: dict[str, dict[Any, int]], root: str) -> list[LayerCost]:
    """Each layer's own cost: its FLOP count minus those of the layers nested inside it."""
    def total(name: str) -> int:
        return int(sum(per_module.get(f"{root}.{name}", {}).values()))

    layers = []
    for name, module in leaves.items():
        nested = [n for n in leaves if n.startswith(name + ".")]
        flops = total(name) - sum(total(n) for n in nested)
        shape, out_bytes, _ = shapes.get(name, ([], 0, 0))
        layers.append(LayerCost(name, type(module).__name__, sum(p.numel() for p in module.parameters(recurse=False)),
                                int(flops), shape, out_bytes))
    return layers
