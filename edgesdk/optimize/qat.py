"""Quantization-aware training: the remedy when post-training INT8 loses too much accuracy. BatchNorm is
folded into the convolutions first, fake quantization (per-channel symmetric int8 weights, uint8
activations: the pair x86 ONNX Runtime runs fastest; by default 7-bit activations, see prepare_qat) is inserted with torch.ao's FX graph mode, the model
is fine-tuned with it, and the result is exported as a QDQ ONNX model: the same INT8 form as edgesdk's
post-training ONNX artifact, which OpenVINO and ONNX Runtime both run."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..core.errors import ConversionError, require


def prepare_qat(model: Any, example_input: Any, reduce_range: bool = True) -> Any:
    """A copy of model with BN folded and fake quantization inserted, in training mode.

    reduce_range (default) trains uint8 activations in [0, 127] instead of [0, 255]. x86 CPUs without
    VNNI (AVX2 only) run ONNX Runtime's U8S8 convolutions with vpmaddubsw, whose int16 pair sums saturate
    when both operands are near full range (2 * 255 * 127 > 32767): a full-range QAT model that is right
    in torch loses accuracy there with no error. With 7-bit activations no pair sum can saturate
    (fbgemm's reduce_range; torch exports [0, 127] from opset 13). Pass False for VNNI or ARM targets."""
    torch = require("torch", "torch", "Quantization-aware training")
    from torch.ao.quantization import (
        FakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        QConfig,
        QConfigMapping,
    )
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    from .fuse import fuse_conv_bn

    args = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    fused, _ = fuse_conv_bn(model, args)
    # Plain FakeQuantize (not the fused observer op) so that the model exports to ONNX Q/DQ pairs;
    # the ranges ONNX export allows: uint8 [0, 255] or [0, 127] activations, int8 [-128, 127] weights.
    quant_max = 127 if reduce_range else 255
    qconfig = QConfig(
        activation=FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=quant_max,
                                          dtype=torch.quint8, qscheme=torch.per_tensor_affine),
        weight=FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127,
                                      dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_qat_fx(fused.train(), QConfigMapping().set_global(qconfig), args)
    return prepared


def train_qat(prepared: Any, batches: Callable[[], Iterable[tuple[Any, Any]]], epochs: int = 3, lr: float = 1e-4,
              loss_fn: Any = None, freeze_observers_after: int | None = None) -> Any:
    """Fine-tune with fake quantization (a small learning rate: the weights are nearly right already).
    Observers freeze after `freeze_observers_after` epochs (default: the last epoch trains with fixed ranges)."""
    torch = require("torch", "torch", "Quantization-aware training")
    from torch.ao.quantization import disable_observer

    loss_fn = loss_fn or torch.nn.CrossEntropyLoss()
    opt = torch.optim.Adam(prepared.parameters(), lr=lr)
    freeze = epochs - 1 if freeze_observers_after is None else freeze_observers_after
    for epoch in range(epochs):
        if epoch == freeze:
            prepared.apply(disable_observer)
        prepared.train()
        for x, y in batches():
            opt.zero_grad()
            loss_fn(prepared(x), y).backward()
            opt.step()
    prepared.eval()
    prepared.apply(disable_observer)
    return prepared


def export_qat_onnx(prepared: Any, example_input: Any, path: str | Path, opset: int = 17) -> Path:
    """Write the fake-quantized model as a QDQ ONNX file (QuantizeLinear/DequantizeLinear pairs)."""
    torch = require("torch", "torch", "Quantization-aware training")
    args = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(prepared, tuple(args), str(path), dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=["output"], do_constant_folding=True)
    except Exception as exc:
        raise ConversionError(f"Could not export the QAT model to ONNX: {exc}") from exc
    _scalar_qparams(path)
    return path


def _scalar_qparams(path: Path) -> None:
    """torch exports per-tensor scales and zero points as 1-element vectors; ONNX Runtime's fused
    QLinear kernels (QLinearAveragePool, ...) require scalars. Make them scalars (per-channel ones stay)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    qparams = {name for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
               for name in n.input[1:3]}
    for init in model.graph.initializer:
        if init.name in qparams:
            array = numpy_helper.to_array(init)
            if array.size == 1 and array.ndim == 1:
                init.CopyFrom(numpy_helper.from_array(array.reshape(()), init.name))
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] in qparams:
            for attr in node.attribute:
                if attr.name == "value":
                    array = numpy_helper.to_array(attr.t)
                    if array.size == 1 and array.ndim == 1:
                        attr.t.CopyFrom(numpy_helper.from_array(array.reshape(())))
    onnx.save(model, str(path))
