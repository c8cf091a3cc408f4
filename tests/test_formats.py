"""The format table: converters declare their options and presets; the CLI, the presets, option
validation and the README's table come from those declarations."""

import re
from pathlib import Path

import pytest
import torch

import edgesdk
from edgesdk.conversion.formats import converters, format_table, target_presets
from edgesdk.core.errors import ConversionError
from tests.models import tiny_cnn
from tests.test_cli import cli

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_format_table_is_the_generated_one():
    text = README.read_text()
    block = re.search(r"<!-- format-table:start -->\n(.*?)\n<!-- format-table:end -->", text, re.S)
    assert block, "README.md lost its format-table markers"
    assert block.group(1) == format_table(), "regenerate with: python -c 'from edgesdk.conversion.formats import " \
                                             "format_table; print(format_table())'"


def test_convert_help_comes_from_the_declarations(capsys):
    code, out, err = cli(capsys, "convert", "--help")
    assert code == 0
    help_text = " ".join(out.split())
    for option in (o for c in converters() for o in c.options):  # the common ones have flags of their own
        assert (option.flag in help_text) == option.cli, option.name
    for conv in converters():
        assert conv.name in help_text
    for device in target_presets():
        assert device in help_text


def test_presets_are_the_converters_own():
    presets = target_presets()
    assert presets["jetson"] == {"onnx": ["fp32"], "tensorrt": ["fp16", "int8"]}
    assert presets["x86"] == {"onnx": ["fp32", "int8"], "openvino": ["fp32", "int8"]}
    for device, formats in presets.items():
        for fmt, precisions in formats.items():
            assert set(precisions) <= set(next(c for c in converters() if c.name == fmt).precisions), (device, fmt)


@pytest.mark.parametrize("options,match", [
    ({"tflite_int9": "full"}, r"Unknown conversion option 'tflite_int9' \(did you mean 'tflite_int8'\?\)"),
    ({"tflite_int8": "most"}, "must be one of selective, full"),
    ({"tflite_float_layers": "3"}, "must be a int"),
    ({"onnx_float_nodes": "stem"}, "must be a list"),
])
def test_options_are_validated_before_any_work(tmp_path, options, match):
    with pytest.raises(ConversionError, match=match):
        edgesdk.convert(tmp_path / "missing.onnx", options=options, out=tmp_path / "b")  # the source is never read


def test_a_declared_option_reaches_its_converter(tmp_path, image_folder, tiny_preprocess):
    """openvino_int8_overflow_fix=first_layer_only, NNCF's own value (what 'auto' picks on CPUs without VNNI)."""
    bundle = edgesdk.convert(tiny_cnn(), torch.zeros(1, 3, 32, 32), targets=["openvino"], precisions=["int8"],
                             calib=image_folder, preprocess=tiny_preprocess, out=tmp_path / "b",
                             options={"openvino_int8_overflow_fix": "first_layer_only",
                                      "openvino_int8_fast_bias_correction": "full"})
    quant = bundle.artifact("openvino-int8").quantization
    assert quant.details["overflow_fix"] == "first_layer_only" and quant.details["fast_bias_correction"] is False
