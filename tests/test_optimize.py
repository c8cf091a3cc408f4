"""edgesdk.optimize: profile and Conv+BN fusion on real torch models (issue 8, first parts)."""

import json

import pytest
import torch

import edgesdk
from edgesdk.errors import ConversionError
from edgesdk.optimize import fuse_conv_bn, profile
from tests.models import tiny_cnn
from tests.test_cli import cli


def test_profile_counts_params_flops_and_layers():
    model = tiny_cnn()
    p = profile(model, torch.zeros(1, 3, 32, 32))
    assert p.params == sum(x.numel() for x in model.parameters())
    assert p.flops == sum(layer.flops for layer in p.layers) > 0  # every FLOP belongs to a leaf layer
    convs = [layer for layer in p.layers if layer.type == "Conv2d"]
    # the stem conv: 16 x 3 x 3 x 3 weights over a 16x16 output, 2 FLOPs per multiply-add
    assert convs[0].flops == 2 * 16 * 3 * 9 * 16 * 16 and convs[0].output_shape == [1, 16, 16, 16]
    assert p.top(1)[0].type == "Conv2d" and p.size_bytes > 4 * p.params
    assert p.peak_activation_bytes >= max(layer.output_bytes for layer in p.layers) > 0


def test_fusion_folds_batchnorm_within_1e5_and_exports(tmp_path):
    model = tiny_cnn()
    x = torch.randn(4, 3, 32, 32)
    fused, report = fuse_conv_bn(model, x)
    assert report.batchnorms_before == 3 and report.batchnorms_after == 0 and report.max_abs_error <= 1e-5
    assert profile(fused, x[:1]).params < profile(model, x[:1]).params  # BN's parameters are gone
    bundle = edgesdk.convert(fused, torch.zeros(1, 3, 32, 32), out=tmp_path / "fused")
    assert bundle.artifact("onnx-fp32").parity["max_abs"] <= 1e-4


def test_fusion_refuses_a_model_it_cannot_trace():
    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                x = -x
            return self.bn(self.conv(x))

    with pytest.raises(ConversionError, match="traceable"):
        fuse_conv_bn(Branchy(), torch.randn(1, 3, 8, 8))


def test_profile_on_the_cli(capsys):
    code, out, err = cli(capsys, "profile", "--factory", "tests.models:tiny_cnn", "--input-shape", "1,3,32,32",
                         "--top", "3")
    assert code == 0, err
    assert "FLOPs" in out and "stem.0" in out
    code, out, err = cli(capsys, "profile", "--factory", "tests.models:tiny_cnn", "--input-shape", "1,3,32,32",
                         "--json")
    assert code == 0 and json.loads(out)["params"] > 0
