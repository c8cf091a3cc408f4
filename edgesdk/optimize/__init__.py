"""Model-side optimizations on a PyTorch model before it is converted: profile (where the cost is) and
Conv+BN fusion so far; pruning, distillation and quantization-aware training follow (issue 8).
Each module imports torch only when used."""

from .fuse import FusionReport, fuse_conv_bn
from .profile import LayerProfile, ModelProfile, profile

__all__ = ["profile", "ModelProfile", "LayerProfile", "fuse_conv_bn", "FusionReport"]
