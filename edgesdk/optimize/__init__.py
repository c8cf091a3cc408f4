"""Model-side optimizations on a PyTorch model before it is converted: measure_cost (where the cost is),
Conv+BN fusion, unstructured and structured pruning with fine-tuning, knowledge distillation, and
quantization-aware training exported as a QDQ ONNX model. Each module imports torch only when used."""

from .cost import LayerCost, ModelCost, measure_cost
from .distill import distill, distillation_loss
from .fuse import FusionReport, fuse_conv_bn
from .prune import fine_tune, prune_channels, prune_unstructured, sparsity
from .qat import export_qat_onnx, prepare_qat, train_qat

__all__ = ["measure_cost", "ModelCost", "LayerCost", "fuse_conv_bn", "FusionReport", "prune_unstructured",
           "prune_channels", "sparsity", "fine_tune", "distill", "distillation_loss", "prepare_qat", "train_qat",
           "export_qat_onnx"]
