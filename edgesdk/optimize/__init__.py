"""Model-side optimizations on a PyTorch model before it is converted: profile (where the cost is),
Conv+BN fusion, unstructured and structured pruning with fine-tuning, and knowledge distillation;
quantization-aware training follows (issue 8). Each module imports torch only when used."""

from .distill import distill, distillation_loss
from .fuse import FusionReport, fuse_conv_bn
from .profile import LayerProfile, ModelProfile, profile
from .prune import fine_tune, prune_channels, prune_unstructured, sparsity

__all__ = ["profile", "ModelProfile", "LayerProfile", "fuse_conv_bn", "FusionReport", "prune_unstructured",
           "prune_channels", "sparsity", "fine_tune", "distill", "distillation_loss"]
