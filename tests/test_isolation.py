"""Conversion survives what it converts: parity and timing run each backend in a child process, so a
backend that crashes or hangs on one artifact fails only that artifact; a target that fails keeps the
others in the bundle (and the CLI exits 1), unless strict."""

from __future__ import annotations

import json
import os

import pytest
import torch
from click.testing import CliRunner

import edgesdk
import edgesdk.backends.registry
import edgesdk.running.isolated
from edgesdk.core.errors import ConversionError
from tests.crashing_backend import BACKEND as CRASHING


@pytest.fixture
def crashing_first(monkeypatch):
    """The crashing backend registered ahead of the real ones, so parity of ONNX artifacts runs on it."""
    registry = {"crashing": CRASHING, **edgesdk.backends.registry._registry()}
    monkeypatch.setattr(edgesdk.backends.registry, "_registry", lambda: registry)


@pytest.mark.parametrize("fault,says", [("segv", "crashing crashed with SIGSEGV while running the artifact"),
                                        ("hang", "crashing did not finish running the artifact in 5 s")])
def test_a_backend_that_crashes_fails_only_its_artifact(tmp_path, tiny_model, image_folder, crashing_first,
                                                        monkeypatch, fault, says):
    monkeypatch.setenv("EDGESDK_TEST_FAULT", fault)
    monkeypatch.setattr(edgesdk.running.isolated, "CHILD_TIMEOUT_S", 5.0)
    parent = os.getpid()
    bundle = edgesdk.convert(tiny_model, torch.zeros(1, 3, 32, 32), targets=["onnx", "openvino"],
                             precisions=["fp32", "int8"], calib=image_folder, out=tmp_path / "b")
    assert os.getpid() == parent
    assert [a.id for a in bundle.artifacts] == ["onnx-fp32", "openvino-fp32", "openvino-int8"]
    (failure,) = bundle.failed
    assert (failure.id, failure.stage) == ("onnx-int8", "crash") and says in failure.reason, failure
    assert not (tmp_path / "b" / "model.int8.onnx").exists()  # a failed artifact's file is not shipped
    manifest = json.loads((tmp_path / "b" / "edgesdk.json").read_text())
    assert manifest["failed"] == [failure.to_dict()]
    onnx_fp32 = bundle.artifact("onnx-fp32")
    assert onnx_fp32.parity.backend == "crashing" and not onnx_fp32.parity.problems
    assert {"crashing", "onnxruntime", "openvino"} <= set(onnx_fp32.latency_ms)  # the restarted child times it
    with edgesdk.Runtime(bundle.path) as rt:
        assert rt.run(torch.zeros(1, 3, 32, 32).numpy()).shape == (1, 10)


class Normalized(torch.nn.Module):
    """F.normalize: ONNX and OpenVINO take it; onnx2tf does not (ReduceL2's axis), a real TFLite failure."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(16, 8)

    def forward(self, x):
        return torch.nn.functional.normalize(self.linear(x), dim=-1)


def normalized() -> Normalized:
    model = Normalized().eval()
    model.input_shape = (1, 16)
    return model


def test_a_failed_target_keeps_the_others_and_the_cli_exits_1(tmp_path):
    """TFLite fails for real (onnx2tf, the only route asked for); the bundle keeps ONNX and OpenVINO, the CLI
    marks the failed row and exits 1; --strict writes nothing."""
    from edgesdk.cli import cli

    args = ["convert", "--factory", "tests.test_isolation:normalized", "--to", "onnx,openvino,tflite",
            "--tflite-route", "onnx2tf"]
    result = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "b")])
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output and "tflite-fp32" in result.output
    bundle = edgesdk.load_bundle(tmp_path / "b")
    assert [a.id for a in bundle.artifacts] == ["onnx-fp32", "openvino-fp32"]
    assert [(f.id, f.stage) for f in bundle.failed] == [("tflite-fp32", "convert")]
    assert "onnx2tf" in bundle.failed[0].reason and bundle.failed[0].hint
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["edgesdk.json", "model.onnx", "openvino"]

    strict = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "s"), "--strict"])
    assert strict.exit_code != 0 and not (tmp_path / "s").exists()
    assert isinstance(strict.exception, ConversionError) and "strict" in str(strict.exception)
    assert not list(tmp_path.glob(".s*"))  # no staging folder left behind


def test_an_fp32_artifact_that_does_not_match_is_failed_not_shipped(tmp_path, tiny_model):
    """A tolerance nothing meets makes every FP32 artifact a parity failure: nothing passed, nothing written."""
    with pytest.raises(ConversionError, match="No artifact was made: onnx-fp32 failed at parity"):
        edgesdk.convert(tiny_model, torch.zeros(1, 3, 32, 32), out=tmp_path / "b",
                        tolerance=edgesdk.Tolerance(fp32_max_abs=0.0, fp32_noise_factor=0.0))
    assert not (tmp_path / "b").exists()


def test_a_relative_output_folder_is_checked_in_the_child_processes(tmp_path, tiny_model, monkeypatch):
    """`edgesdk convert -o build/x` (make demo): the children run in a folder of their own, so they are given
    absolute paths; relative ones failed every artifact with 'Model file not found'."""
    monkeypatch.chdir(tmp_path)
    bundle = edgesdk.convert(tiny_model, torch.zeros(1, 3, 32, 32), targets=["onnx", "openvino"], out="build/rel",
                             strict=True)
    assert [a.id for a in bundle.artifacts] == ["onnx-fp32", "openvino-fp32"] and not bundle.failed
    assert all(a.parity.measured and a.latency_ms for a in bundle.artifacts)
