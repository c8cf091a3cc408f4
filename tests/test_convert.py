import json
import pickle

import numpy as np
import pytest
import torch

import edgesdk
from edgesdk import Tolerance
from edgesdk.conversion.sources import load_source
from edgesdk.core.errors import CalibrationError, ConversionError, ModelLoadError
from tests.conftest import smooth_batch
from tests.models import TinyMLP, Unexportable, tiny_cnn, tiny_mlp


def test_manifest_describes_every_artifact(tiny_bundle):
    m = json.loads((tiny_bundle / "edgesdk.json").read_text())
    assert m["schema_version"] == 4
    assert m["inputs"] == [{"name": "input", "shape": [1, 3, 32, 32], "dtype": "float32", "layout": "NCHW"}]
    assert m["outputs"][0]["shape"] == [1, 10]
    assert m["preprocess"]["size"] == [32, 32] and m["labels"][3] == "class3"
    assert m["calibration"]["count"] == 40
    assert [a["id"] for a in m["artifacts"]] == ["onnx-fp32", "onnx-fp16", "onnx-int8"]
    for a in m["artifacts"]:
        path = tiny_bundle / a["file"]
        assert path.stat().st_size == a["size_bytes"]
        assert len(a["sha256"]) == 64
        assert a["versions"]["onnxruntime"] and a["versions"]["torch"]
        assert {"max_abs", "mean_abs", "cosine", "top1_agreement", "top5_overlap"} <= set(a["parity"])
    fp32, fp16, int8 = m["artifacts"]
    assert fp32["parity"]["max_abs"] <= 1e-4
    assert fp16["parity"]["max_abs"] < 0.05 and fp16["size_bytes"] < fp32["size_bytes"]
    assert int8["quantization"]["method"] == "static QDQ"
    assert int8["quantization"]["calibration_samples"] == 40
    assert int8["parity"]["cosine"] > 0.95


def test_int8_artifact_really_is_quantized(tiny_bundle):
    import onnx

    ops = {n.op_type for n in onnx.load(str(tiny_bundle / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_existing_output_is_kept_without_force(tmp_path, tiny_model):
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="already exists"):
        edgesdk.convert(tiny_model, torch.zeros(1, 3, 32, 32), out=out)
    assert (out / "keep.txt").read_text() == "mine"
    edgesdk.convert(tiny_model, torch.zeros(1, 3, 32, 32), out=out, force=True)
    assert not (out / "keep.txt").exists() and (out / "edgesdk.json").is_file()


def test_fp32_mismatch_fails_and_leaves_nothing(tmp_path, tiny_model):
    out = tmp_path / "strict"
    with pytest.raises(ConversionError, match=r"max abs error .* \(limit"):
        edgesdk.convert(tiny_model, torch.zeros(1, 3, 32, 32), out=out, tolerance=Tolerance(fp32_max_abs=0.0))
    assert not out.exists()
    assert not list(tmp_path.iterdir()), "no staging folder may be left behind"


def test_unexportable_source_is_a_conversion_error(tmp_path):
    out = tmp_path / "qr"
    with pytest.raises(ConversionError, match="could not export"):
        edgesdk.convert(Unexportable(), torch.randn(1, 8, 8), out=out)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_source_that_fails_on_its_example_input(tmp_path, tiny_model):
    with pytest.raises(ConversionError, match="example input"):
        edgesdk.convert(tiny_model, torch.zeros(1, 5, 32, 32), out=tmp_path / "x")


def test_int8_of_a_cnn_needs_real_calibration(tmp_path, tiny_model):
    with pytest.raises(CalibrationError, match="calibration data"):
        edgesdk.convert(tiny_model, torch.zeros(1, 3, 32, 32), precisions=["int8"], out=tmp_path / "a")
    noise = np.random.default_rng(0).standard_normal((40, 3, 32, 32)).astype(np.float32)
    with pytest.raises(CalibrationError, match="random noise"):
        edgesdk.convert(tiny_model, torch.zeros(1, 3, 32, 32), precisions=["int8"], calib=noise, out=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_linear_model_without_calibration_gets_dynamic_int8(tmp_path):
    bundle = edgesdk.convert(tiny_mlp(), torch.zeros(1, 64), precisions=["fp32", "int8"], out=tmp_path / "mlp")
    int8 = bundle.artifact("onnx-int8")
    assert int8.quantization.method == "dynamic"
    assert int8.parity.cosine > 0.98  # 0.995 here: the bar leaves 4x the measured 1 - cosine


def test_dynamic_batch(tmp_path, tiny_model):
    bundle = edgesdk.convert(tiny_model, torch.zeros(1, 3, 32, 32), out=tmp_path / "dyn", dynamic_batch=True)
    assert bundle.inputs[0].shape[0] == "batch"
    x = smooth_batch(3, (3, 32, 32))
    with edgesdk.Runtime(bundle.path) as rt:
        out = rt.run(x)
    with torch.no_grad():
        ref = tiny_model(torch.from_numpy(x)).numpy()
    assert out.shape == (3, 10)
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_validation_set_is_used_for_parity(tmp_path, tiny_model, image_folder, tiny_preprocess):
    bundle = edgesdk.convert(tiny_model, torch.zeros(1, 3, 32, 32), precisions=["fp32"], out=tmp_path / "v",
                             validation=image_folder, preprocess=tiny_preprocess)
    parity = bundle.artifact("onnx-fp32").parity
    assert parity.samples == 40 and parity.data.startswith("validation")


# -- sources from files ----------------------------------------------------------------------------------


def test_torchscript_pt2_and_onnx_sources(tmp_path, tiny_model):
    x = torch.zeros(1, 3, 32, 32)
    torch.jit.save(torch.jit.trace(tiny_model, x), tmp_path / "m.pt")
    torch.export.save(torch.export.export(tiny_model, (x,)), tmp_path / "m.pt2")
    ts = load_source(tmp_path / "m.pt", input_shape=(1, 3, 32, 32))
    pt2 = load_source(tmp_path / "m.pt2")  # the program remembers its example input
    assert ts.inputs[0].shape == pt2.inputs[0].shape == (1, 3, 32, 32)
    b1 = edgesdk.convert(ts, out=tmp_path / "from_ts")
    assert b1.artifact("onnx-fp32").versions["exporter"] == "legacy"  # dynamo cannot take a ScriptModule
    b2 = edgesdk.convert(pt2, out=tmp_path / "from_pt2")
    onnx_src = load_source(b2.path / "model.onnx")
    b3 = edgesdk.convert(onnx_src, out=tmp_path / "from_onnx")
    sample = smooth_batch(1, (3, 32, 32))
    with torch.no_grad():
        ref = tiny_model(torch.from_numpy(sample)).numpy()
    for b in (b1, b2, b3):
        assert b.artifact("onnx-fp32").parity.max_abs <= 1e-4
        np.testing.assert_allclose(edgesdk.Runtime(b.path).run(sample), ref, atol=1e-4)


def test_torchscript_without_shape_asks_for_one(tmp_path, tiny_model):
    torch.jit.save(torch.jit.trace(tiny_model, torch.zeros(1, 3, 32, 32)), tmp_path / "m.pt")
    with pytest.raises(ConversionError, match="--input-shape"):
        load_source(tmp_path / "m.pt")


def test_factory_and_weights_only_loading(tmp_path):
    model = tiny_cnn()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    src = load_source(factory="tests.models:tiny_cnn", weights=tmp_path / "w.pt")
    assert src.inputs[0].shape == (1, 3, 32, 32)
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_source(factory="tests.models:tiny_mlp", weights=tmp_path / "w.pt", input_shape=(1, 64))
    assert TinyMLP  # the factory's class


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/edgesdk-pwned",))


def test_weights_file_is_never_unpickled(tmp_path):
    import os

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump(_Evil(), f)
    with pytest.raises(ModelLoadError, match="weights_only"):
        load_source(factory="tests.models:tiny_cnn", weights=path)
    assert not os.path.exists("/tmp/edgesdk-pwned")


@pytest.mark.parametrize("name,content", [("garbage.onnx", b"\x00garbage" * 10), ("trunc.pt", b"PK\x03\x04abc"),
                                          ("garbage.pt2", b"nonsense"), ("model.h5", b"x")])
def test_bad_model_files_are_load_errors(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ModelLoadError):
        load_source(tmp_path / name, input_shape=(1, 3, 32, 32))


def test_truncated_onnx_source(tmp_path, tiny_bundle):
    data = (tiny_bundle / "model.onnx").read_bytes()
    (tmp_path / "t.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="not a valid ONNX"):
        load_source(tmp_path / "t.onnx")


# -- the exporter and timing choices ---------------------------------------------------------------------


class _DictOut(torch.nn.Module):
    """Token ids in, a dict out: exported through edgesdk's flattening wrapper."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(16, 8)

    def forward(self, ids):
        return {"hidden": self.embed(ids).tanh()}


def test_the_exporter_follows_the_dynamic_axes_unless_named(tmp_path, tiny_model):
    """Static or batch-only: the TorchScript exporter (fast); a dynamic sequence: torch.export (dynamo)
    first; --exporter names one. Each artifact records the exporter that made it."""
    from edgesdk.conversion.onnx_tools import export_attempts

    out = [edgesdk.TensorSpec("output", ("batch", 10), "float32", None)]
    assert [n for n, _ in export_attempts(tiny_model, ["input"], out, {})] == ["legacy", "dynamo"]
    assert [n for n, _ in export_attempts(tiny_model, ["input"], out, {"input": {0: "batch"}})] == ["legacy", "dynamo"]
    assert [n for n, _ in export_attempts(tiny_model, ["ids"], out, {"ids": {1: "sequence"}})] == ["dynamo", "legacy"]
    assert [n for n, _ in export_attempts(tiny_model, ["input"], out, {}, "dynamo")] == ["dynamo"]
    x = torch.zeros(1, 3, 32, 32)
    structured = edgesdk.convert(_DictOut(), {"ids": torch.arange(6).reshape(1, 6)}, out=tmp_path / "s",
                                 dynamic_axes=["ids:1=sequence"], strict=True)
    # Its forward(*args) wrapper once made torch.export refuse the dynamic shapes, and legacy took every such model.
    assert structured.artifact("onnx-fp32").versions["exporter"] == "dynamo"
    fast = edgesdk.convert(tiny_model, x, out=tmp_path / "a", strict=True)
    named = edgesdk.convert(tiny_model, x, out=tmp_path / "d", options={"exporter": "dynamo"}, strict=True)
    assert fast.artifact("onnx-fp32").versions["exporter"] == "legacy"
    assert named.artifact("onnx-fp32").versions["exporter"] == "dynamo"


def test_timing_off_records_no_latency_and_the_runtime_still_picks(tmp_path, tiny_model):
    x = torch.zeros(1, 3, 32, 32)
    quick = edgesdk.convert(tiny_model, x, out=tmp_path / "q", strict=True)
    off = edgesdk.convert(tiny_model, x, out=tmp_path / "o", options={"timing": "off"}, strict=True)
    assert {"onnxruntime", "openvino"} <= set(quick.artifact("onnx-fp32").latency_ms)
    assert off.artifact("onnx-fp32").latency_ms == {} and off.artifact("onnx-fp32").parity.measured
    with edgesdk.Runtime(off.path) as rt:  # ranked by device tier and precision
        assert rt.run(smooth_batch(1, (3, 32, 32))).shape == (1, 10)
