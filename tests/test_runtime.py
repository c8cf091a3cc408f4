import json
import shutil

import numpy as np
import pytest
import torch

import edgesdk
from edgesdk.core.errors import EdgeSDKError, InputError, ModelLoadError
from tests.conftest import smooth_batch
from tests.models import tiny_cnn
from tests.stats import TINY_MIN_COSINE, cosine


@pytest.fixture(scope="module")
def x():
    return smooth_batch(1, (3, 32, 32), seed=5)


@pytest.fixture(scope="module")
def reference(x):
    with torch.no_grad():
        return tiny_cnn()(torch.from_numpy(x)).numpy()


def copy_bundle(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_auto_runtime_runs_and_says_what_it_picked(tiny_bundle, x, reference):
    with edgesdk.Runtime(tiny_bundle, threads=1) as rt:
        # Both backends that run ONNX share x86's first tier: the pick is the pair measured fastest at
        # conversion among those within tolerance (which one that was is this run's timing, not a contract).
        accepted = [a for a in rt.bundle.artifacts if edgesdk.Tolerance().accepts(a.precision, a.parity)[0]]
        fastest = min(((ms, a.id, b) for a in accepted for b, ms in a.latency_ms.items()))
        assert (rt.artifact.id, rt.backend) == fastest[1:], rt.explain()
        assert rt.artifact.id in rt.explain()
        out = rt.run(x)
        assert out.shape == (1, 10) and out.dtype == np.float32
        assert rt.inputs[0].name == "input" and rt.outputs[0].shape == (1, 10)
        assert rt.labels[0] == "class0"


@pytest.mark.parametrize("precision,atol", [("fp32", 1e-4), ("fp16", 0.05), ("int8", 0.5)])
def test_every_precision_gives_the_same_outputs(tiny_bundle, x, reference, precision, atol):
    with edgesdk.Runtime(tiny_bundle, precision=precision) as rt:
        assert rt.artifact.precision == precision
        out = rt.run(x)
    np.testing.assert_allclose(out, reference, atol=atol)
    assert cosine(out, reference) >= TINY_MIN_COSINE  # not argmax: a near-tie on the tiny CNN (tests/stats.py)


def test_array_list_and_dict_inputs_agree(tiny_bundle, x):
    with edgesdk.Runtime(tiny_bundle, precision="fp32") as rt:
        a, b, c = rt.run(x), rt.run([x]), rt.run({"input": x})
        d = rt.run_dict(x)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(a, d["output"])


def test_bad_inputs_name_expected_and_got(tiny_bundle, x):
    with edgesdk.Runtime(tiny_bundle, precision="fp32") as rt:
        with pytest.raises(InputError, match=r"shape \[1, 3, 16, 16\].*expects \[1, 3, 32, 32\]"):
            rt.run(np.zeros((1, 3, 16, 16), np.float32))
        with pytest.raises(InputError, match=r"dtype float64.*expects float32"):
            rt.run(x.astype(np.float64))
        with pytest.raises(InputError, match=r"unknown: \['image'\]"):
            rt.run({"image": x})
        with pytest.raises(InputError, match="takes 1"):
            rt.run([x, x])
    with pytest.raises(EdgeSDKError, match="closed"):
        rt.run(x)


def test_forced_artifact_and_file(tiny_bundle):
    assert edgesdk.Runtime(tiny_bundle, artifact="onnx-int8").artifact.id == "onnx-int8"
    assert edgesdk.Runtime(tiny_bundle, artifact="model.fp16.onnx").artifact.id == "onnx-fp16"
    with pytest.raises(ModelLoadError, match="no artifact 'tflite-int8'"):
        edgesdk.Runtime(tiny_bundle, artifact="tflite-int8")
    with pytest.raises(ModelLoadError, match="no bf16 artifact"):
        edgesdk.Runtime(tiny_bundle, precision="bf16")


def _edit_manifest(bundle, fn):
    path = bundle / "edgesdk.json"
    m = json.loads(path.read_text())
    fn(m)
    path.write_text(json.dumps(m))


def test_auto_prefers_fastest_within_tolerance(tiny_bundle, tmp_path):
    b = copy_bundle(tiny_bundle, tmp_path / "b")
    machine = edgesdk.Runtime(b).ranking.candidates[0].artifact.measured_on

    def set_latency(m):
        for a, ms in zip(m["artifacts"], (3.0, 2.0, 1.0)):
            a["latency_ms"], a["measured_on"] = {"onnxruntime": ms}, machine
            a["parity"]["top1_agreement"] = 1.0

    _edit_manifest(b, set_latency)
    assert edgesdk.Runtime(b).artifact.id == "onnx-int8"

    def int8_inaccurate(m):
        m["artifacts"][2]["parity"]["top1_agreement"] = 0.5

    _edit_manifest(b, int8_inaccurate)
    rt = edgesdk.Runtime(b)
    assert rt.artifact.id == "onnx-fp16"
    assert any("onnx-int8" in s and "parity outside tolerance" in s for s in rt.skipped)
    assert edgesdk.Runtime(b, precision="int8").artifact.id == "onnx-int8"  # the user may still force it


def test_latency_from_another_machine_is_not_trusted(tiny_bundle, tmp_path):
    b = copy_bundle(tiny_bundle, tmp_path / "b")

    def other_machine(m):
        for a, ms in zip(m["artifacts"], (1.0, 2.0, 3.0)):
            a["latency_ms"], a["measured_on"] = {"onnxruntime": ms}, "elsewhere"

    _edit_manifest(b, other_machine)
    rt = edgesdk.Runtime(b)
    assert rt.artifact.id == "onnx-int8"  # the backend's preference, not the foreign timings
    assert "prefers" in rt.ranking.candidates[0].why


def test_corrupt_preferred_artifact_falls_back_and_says_so(tiny_bundle, tmp_path, x, reference, caplog):
    b = copy_bundle(tiny_bundle, tmp_path / "b")
    first = edgesdk.Runtime(b).artifact
    data = bytearray((b / first.file).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights runs silently unless checked
    (b / first.file).write_bytes(bytes(data))
    rt = edgesdk.Runtime(b)
    assert rt.artifact.id != first.id
    assert any(first.id in s and "sha256" in s for s in rt.skipped)
    assert "could not load" in caplog.text.lower()
    assert cosine(rt.run(x), reference) >= TINY_MIN_COSINE


def test_every_artifact_corrupt_is_one_clear_error(tiny_bundle, tmp_path):
    b = copy_bundle(tiny_bundle, tmp_path / "b")
    for f in b.glob("*.onnx"):
        f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match="No candidate could be loaded"):
        edgesdk.Runtime(b)


def test_single_model_files(tiny_bundle, tmp_path, x, reference):
    with edgesdk.Runtime(tiny_bundle / "model.onnx") as rt:
        assert rt.inputs[0].shape == (1, 3, 32, 32)
        np.testing.assert_allclose(rt.run(x), reference, atol=1e-4)
    data = (tiny_bundle / "model.onnx").read_bytes()
    (tmp_path / "trunc.onnx").write_bytes(data[: len(data) // 3])
    (tmp_path / "garbage.onnx").write_bytes(b"\x08\x07garbage" * 100)
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "model.xyz").write_bytes(b"x")
    for name in ("trunc.onnx", "garbage.onnx", "empty.onnx"):
        with pytest.raises(ModelLoadError):
            edgesdk.Runtime(tmp_path / name)
    with pytest.raises(ModelLoadError, match="Cannot tell which runtime"):
        edgesdk.Runtime(tmp_path / "model.xyz")
    with pytest.raises(ModelLoadError, match="No model at"):
        edgesdk.Runtime(tmp_path / "missing.onnx")


def test_corrupt_manifest(tiny_bundle, tmp_path):
    b = copy_bundle(tiny_bundle, tmp_path / "b")
    (b / "edgesdk.json").write_text("{ not json")
    with pytest.raises(ModelLoadError, match="corrupt"):
        edgesdk.Runtime(b)
    (tmp_path / "plain").mkdir()
    with pytest.raises(ModelLoadError, match="not an edgesdk bundle"):
        edgesdk.Runtime(tmp_path / "plain")
