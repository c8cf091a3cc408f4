"""The options system: one declaration per option (its default written once), one way in for each setting,
format prefixes with the old names still accepted, INT8 recipes a target cannot apply refused, backend open
options checked, and device presets in convert() and sweep specs."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import edgesdk
from edgesdk.conversion.formats import converters, declared_options, target_presets
from edgesdk.conversion.pipeline import with_preset
from edgesdk.core.errors import ConversionError, UsageError
from edgesdk.core.options import Option, validate

PACKAGE = Path(edgesdk.__file__).parent


def test_validate_fills_in_the_declared_defaults():
    declared = [Option("a", "int", 3), Option("b", "list", None), Option("c", "str", "x", choices=("x", "y"))]
    assert validate({"c": "y"}, declared) == {"a": 3, "b": None, "c": "y"}
    assert validate({"a": None}, declared)["a"] == 3  # None means: the default
    with pytest.raises(UsageError, match="Unknown backend option 'd'"):
        validate({"d": 1}, declared, error=UsageError, what="backend option")


def test_every_declared_option_reaches_a_job_with_its_default():
    options = validate({}, declared_options())
    assert options["opset"] == 18 and options["int8_recipe"] == "auto" and options["tflite_int8"] == "selective"
    assert set(options) == {o.name for o in declared_options()}


def test_no_option_default_is_repeated_outside_its_declaration():
    """`job.options.get(name) or default` wrote each default twice; converters and backends index the validated
    options (Converter.options, Backend.open_options and RUNTIME_SETTINGS hold the defaults)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                    and "options" in (getattr(node.func.value, "attr", None), getattr(node.func.value, "id", None))):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == []


def test_old_option_names_work_with_a_warning():
    with pytest.warns(DeprecationWarning, match="'int8_float_nodes' is now 'onnx_float_nodes'"):
        options = validate({"int8_float_nodes": ["stem"]}, declared_options())
    assert options["onnx_float_nodes"] == ["stem"] and "int8_float_nodes" not in options
    with pytest.raises(UsageError, match="same option"):
        validate({"int8_method": "minmax", "onnx_int8_method": "percentile"}, declared_options())


def test_format_specific_options_carry_their_format_prefix():
    shared = {"opset", "int8_recipe", "exporter", "timing"}
    for conv in converters():
        for opt in conv.options:
            assert opt.name.startswith(conv.name + "_"), (conv.name, opt.name)
    assert {o.name for o in declared_options()} - {o.name for c in converters() for o in c.options} == shared


def test_an_old_option_name_reaches_its_converter(tmp_path, image_folder, tiny_preprocess, tiny_model):
    with pytest.warns(DeprecationWarning, match="int8_float_nodes"):
        bundle = edgesdk.convert(tiny_model, torch.zeros(1, 3, 32, 32), targets=["onnx"], precisions=["int8"],
                                 calib=image_folder, preprocess=tiny_preprocess, out=tmp_path / "b",
                                 options={"int8_float_nodes": []}, strict=True)
    assert bundle.artifact("onnx-int8").quantization.float_nodes == []  # the default keeps the stem conv


@pytest.mark.parametrize("options", [{"dynamic_batch": True}, {"task": "detection"}])
def test_a_keyword_given_as_an_option_is_a_usage_error(tmp_path, options):
    """It used to pass validation and be overwritten by the keyword's default without a word."""
    key = next(iter(options))
    with pytest.raises(UsageError, match=f"{key} is a keyword of convert\\(\\), not an option: convert\\(\\.\\.\\., {key}="):
        edgesdk.convert(tmp_path / "missing.onnx", options=options, out=tmp_path / "b")


@pytest.mark.parametrize("target", ["mnn", "ncnn"])
def test_a_target_that_cannot_apply_the_int8_recipe_refuses_it(tmp_path, tiny_model, target):
    """MNN's and NCNN's INT8 have one recipe each; asking for another used to be ignored."""
    assert next(c for c in converters() if c.name == target).int8_recipes == ("auto",)
    with pytest.raises(UsageError, match=f"'transformer' cannot be applied by {target} \\(it applies: auto\\)"):
        edgesdk.convert(tiny_model, torch.zeros(1, 3, 32, 32), targets=["onnx", target], precisions=["fp32", "int8"],
                        out=tmp_path / "b", options={"int8_recipe": "transformer"})
    assert not (tmp_path / "b").exists()


def test_backend_open_options_are_checked(tiny_bundle):
    with pytest.raises(UsageError, match="'devcie' \\(did you mean 'device'\\?\\).*device, interpreter"):
        edgesdk.Runtime(tiny_bundle, devcie="GPU")
    with pytest.raises(UsageError, match="Unknown onnxruntime option 'device'. Valid options: providers"):
        edgesdk.Runtime(tiny_bundle, backend="onnxruntime", device="GPU")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with edgesdk.Runtime(tiny_bundle, backend="openvino", device="CPU") as rt:  # declared: passes
            assert rt.backend == "openvino"
    with edgesdk.Runtime(tiny_bundle, backend="auto", device="CPU", artifact="onnx-fp32") as rt:
        rt.run(np.zeros((1, 3, 32, 32), np.float32))  # whichever backend it picked got only its own options
    from edgesdk.backends import get_backend

    bundle = edgesdk.load_bundle(tiny_bundle)
    with pytest.raises(UsageError, match="Unknown onnxruntime option 'provider' \\(did you mean 'providers'"):
        get_backend("onnxruntime").open(tiny_bundle / bundle.artifact("onnx-fp32").file, provider=["CPU"])


def test_device_presets_in_convert_and_sweep_specs(tmp_path):
    from edgesdk.fleet.sweep import load_spec

    presets = target_presets()
    assert with_preset("x86", None, None) == (["onnx", "openvino"], presets["x86"])
    assert with_preset("x86", ["onnx"], None) == (["onnx"], {"onnx": presets["x86"]["onnx"]})
    assert with_preset("x86", None, ["fp32"]) == (["onnx", "openvino"], ["fp32"])
    assert with_preset(None, None, None) == (["onnx"], ["fp32"])
    with pytest.raises(UsageError, match="Unknown target device class 'pi'"):
        with_preset("pi", None, None)
    spec = load_spec({"target": "jetson", "models": [
        {"name": "a", "factory": "tests.models:tiny_cnn"},
        {"name": "b", "factory": "tests.models:tiny_cnn", "target": "x86", "targets": ["openvino"]}]}, tmp_path)
    cells = {(c.model, c.target, c.precision) for c in spec.cells()}
    assert cells == {("a", "onnx", "fp32"), ("a", "tensorrt", "fp16"), ("a", "tensorrt", "int8"),
                     ("b", "openvino", "fp32"), ("b", "openvino", "int8")}


def test_convert_takes_a_device_preset(tmp_path, tiny_model, image_folder, tiny_preprocess):
    """target="x86" makes what the x86 preset lists (onnx and openvino, FP32 and INT8)."""
    bundle = edgesdk.convert(tiny_model, torch.zeros(1, 3, 32, 32), target="x86", calib=image_folder,
                             preprocess=tiny_preprocess, out=tmp_path / "b", strict=True)
    assert {a.id for a in bundle.artifacts} == {"onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-int8"}


def test_unknown_conversion_options_stay_conversion_errors(tmp_path):
    with pytest.raises(ConversionError, match="Unknown conversion option 'opsett'"):
        edgesdk.convert(tmp_path / "missing.onnx", options={"opsett": 17}, out=tmp_path / "b")


def test_an_old_cli_flag_maps_to_its_new_name(capsys):
    from edgesdk.cli import _format_options, cli

    assert _format_options({"int8_method": "percentile", "onnx_int8_method": None}) == {"onnx_int8_method": "percentile"}
    assert "--int8-method is now --onnx-int8-method" in capsys.readouterr().err
    help_text = cli.get_command(None, "convert").get_help(__import__("click").Context(cli))
    assert "--onnx-int8-method" in help_text and "--int8-method" not in help_text.replace("--onnx-int8-method", "")


def test_every_int8_artifact_records_its_recipe(every_format):
    """edgesdk.conversion.int8.recorded: the same details["recipe"] on the INT8 artifact of every converter
    that has recipes to choose from (the tiny CNN: "cnn"), not only on transformer ones."""
    recipes = {c.name: c.int8_recipes for c in converters()}
    checked = []
    for art in edgesdk.load_bundle(every_format).artifacts:
        if art.precision == "int8" and "cnn" in recipes[art.format]:
            assert art.quantization.details.get("recipe") == "cnn", (art.id, art.quantization)
            checked.append(art.format)
    assert {"onnx", "openvino", "tflite", "executorch", "tensorrt"} <= set(checked)
