"""The TFLite converter (torch -> ONNX -> onnx2tf -> tf.lite, litert-torch where onnx2tf fails) and backend,
with the real ai-edge-litert."""

import json

import numpy as np
import pytest
import torch

import edgesdk
from edgesdk.backends import get_backend
from edgesdk.core.errors import InputError, ModelLoadError, UsageError
from tests.conftest import smooth_batch
from tests.models import tiny_cnn
from tests.stats import TINY_MIN_COSINE, cosine


@pytest.fixture(scope="module")
def tfl_bundle(tmp_path_factory, image_folder, tiny_preprocess):
    out = tmp_path_factory.mktemp("tfl") / "tiny"
    edgesdk.convert(tiny_cnn(), torch.zeros(1, 3, 32, 32), targets=["onnx", "tflite"],
                    precisions=["fp32", "fp16", "int8"], calib=image_folder, preprocess=tiny_preprocess, out=out)
    return out


@pytest.fixture(scope="module")
def full_int8_bundle(tmp_path_factory, image_folder, tiny_preprocess, tfl_bundle):
    out = tmp_path_factory.mktemp("tfl") / "full"
    edgesdk.convert(tiny_cnn(), torch.zeros(1, 3, 32, 32), targets=["tflite"], precisions=["int8"],
                    calib=image_folder, preprocess=tiny_preprocess, out=out, options={"tflite_int8": "full"})
    return out


@pytest.fixture(scope="module")
def xs():
    return [smooth_batch(1, (3, 32, 32), seed=s) for s in range(20, 28)]


def _reference(xs):
    with torch.no_grad():
        return [tiny_cnn()(torch.from_numpy(x)).numpy() for x in xs]


def test_manifest_records_layout_and_route(tfl_bundle):
    arts = {a["id"]: a for a in json.loads((tfl_bundle / "edgesdk.json").read_text())["artifacts"]}
    assert {"tflite-fp32", "tflite-fp16", "tflite-int8"} <= set(arts)
    for precision in ("fp32", "fp16", "int8"):
        a = arts[f"tflite-{precision}"]
        # onnx2tf makes the graph channels-last: the manifest says how the Runtime maps NCHW onto it
        assert a["layout"] == "NHWC" and a["io"] == {"inputs": [[0, 2, 3, 1]], "outputs": [None],
                                                   "output_names": ["output_0"]}  # onnx2tf's name, declared
        assert "onnx2tf" in a["versions"]["route"] and a["versions"]["onnx2tf"]
    assert arts["tflite-fp32"]["parity"]["max_abs"] <= 1e-5
    q = arts["tflite-int8"]["quantization"]
    assert q["details"]["mode"] == "selective" and q["details"]["io"] == "float32" and len(q["float_nodes"]) == 3
    assert q["calibration_samples"] == 40 and q["details"]["sensitivity"][0]["rmse_over_scale"] >= q["details"]["sensitivity"][-1]["rmse_over_scale"]
    assert arts["tflite-fp16"]["size_bytes"] < 0.7 * arts["tflite-fp32"]["size_bytes"]
    assert arts["onnx-fp32"]["io"] == {}  # nothing to adapt on the ONNX artifact


def test_same_nchw_input_same_outputs_on_onnx_and_tflite(tfl_bundle, xs):
    refs = _reference(xs)
    outs = {}
    for art in ("onnx-fp32", "tflite-fp32", "tflite-fp16", "tflite-int8"):
        with edgesdk.Runtime(tfl_bundle, artifact=art) as rt:
            assert rt.inputs[0].shape == (1, 3, 32, 32)  # the source's layout, whatever the artifact's
            outs[art] = [rt.run(x) for x in xs]
    for onnx_out, tfl_out, ref in zip(outs["onnx-fp32"], outs["tflite-fp32"], refs):
        np.testing.assert_allclose(tfl_out, onnx_out, atol=1e-5)
        np.testing.assert_allclose(tfl_out, ref, atol=1e-5)
    for art in ("tflite-fp16", "tflite-int8"):
        lowest = min(cosine(o, r) for o, r in zip(outs[art], refs))  # not argmax: near-ties (tests/stats.py)
        assert lowest >= TINY_MIN_COSINE, (art, lowest)


def test_wrong_layout_is_refused(tfl_bundle):
    """NCHW (the source's layout) or NHWC (the artifact's own, rt.native_inputs: no transpose) are the
    same input; any other arrangement is an InputError."""
    with edgesdk.Runtime(tfl_bundle, artifact="tflite-fp32") as rt:
        assert rt.backend == "tflite" and rt.native_inputs[0].shape == (1, 32, 32, 3)
        x = np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)
        np.testing.assert_allclose(rt.run(np.ascontiguousarray(x.transpose(0, 2, 3, 1))), rt.run(x), atol=1e-6)
        with pytest.raises(InputError, match=r"expects \[1, 3, 32, 32\]"):
            rt.run(np.zeros((1, 32, 3, 32), np.float32))
        with pytest.raises(InputError, match="dtype"):
            rt.run(np.zeros((1, 3, 32, 32), np.float64))


def test_full_int8_has_int8_io_and_the_runtime_hides_it(full_int8_bundle, xs):
    art = json.loads((full_int8_bundle / "edgesdk.json").read_text())["artifacts"][0]
    assert art["quantization"]["details"]["mode"] == "full" and art["quantization"]["details"]["io"] == "int8"
    raw = get_backend("tflite").open(full_int8_bundle / "model.int8.tflite", raw=True)
    assert raw.inputs[0].dtype == "int8" and raw.outputs[0].dtype == "int8"
    scale, zero = raw.quantized_io[raw.inputs[0].name]
    assert scale > 0 and -128 <= zero <= 127
    refs = _reference(xs)
    with edgesdk.Runtime(full_int8_bundle) as rt:
        outs = [rt.run(x) for x in xs]
    assert all(o.dtype == np.float32 and o.shape == (1, 10) for o in outs)
    lowest = min(cosine(o, r) for o, r in zip(outs, refs))  # int8 I/O; argmax is a near-tie (tests/stats.py)
    assert lowest >= TINY_MIN_COSINE, lowest
    # The raw session takes what the Runtime computed: quantized NHWC input gives the same int8 output.
    x = xs[0].transpose(0, 2, 3, 1)
    q = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
    out_scale, out_zero = raw.quantized_io[raw.outputs[0].name]
    deq = (raw.run({raw.inputs[0].name: q})[0].astype(np.float32) - out_zero) * out_scale
    np.testing.assert_allclose(deq, outs[0], atol=1e-6)


def test_onnx2tf_result_is_cached(tfl_bundle, tmp_path):
    from edgesdk.conversion.formats.tflite import onnx_to_saved_model
    from edgesdk.core.cache import cache_dir

    # The bundle's model.onnx went through onnx2tf once; the same bytes again come from the cache,
    # without running onnx2tf (which would need the job this call does not give).
    saved, versions = onnx_to_saved_model(tfl_bundle / "model.onnx", tmp_path / "unused", job=None)
    assert saved.parent == cache_dir() / "onnx2tf" and (saved / "saved_model.pb").is_file()
    assert versions["onnx2tf"] and not (tmp_path / "unused").exists()


def test_truncated_or_foreign_tflite_is_a_clear_error(tfl_bundle, tmp_path):
    data = (tfl_bundle / "model.tflite").read_bytes()
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated|not a valid|corrupt"):
        edgesdk.Runtime(truncated)
    # tf.lite segfaults on this file: it is opened in a child process first, and the crash is reported here.
    with pytest.raises(ModelLoadError, match="cannot be loaded by tensorflow"):
        get_backend("tflite").open(truncated, interpreter="tensorflow")
    foreign = tmp_path / "foreign.tflite"
    foreign.write_bytes((tfl_bundle / "model.onnx").read_bytes())
    with pytest.raises(ModelLoadError, match="not a TFLite model"):
        edgesdk.Runtime(foreign)
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError):
        edgesdk.Runtime(empty)


def test_single_tflite_file_runs_in_its_own_layout(tfl_bundle):
    with edgesdk.Runtime(tfl_bundle / "model.tflite", threads=2) as rt:
        assert rt.inputs[0].shape == (1, 32, 32, 3)  # no manifest: the file's own NHWC contract
        assert rt.run(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 10)


def test_bench_and_doctor_cover_tflite(tfl_bundle):
    report = edgesdk.benchmark(tfl_bundle, runs=5, warmup=1, backend="tflite")
    assert {r.artifact for r in report.results} == {"tflite-fp32", "tflite-fp16", "tflite-int8"}
    assert all(r.error is None and r.latency_ms["p50"] > 0 for r in report.results)
    info = get_backend("tflite").info()
    assert info["available"] and info["interpreter"].startswith("ai_edge_litert")


def test_where_onnx2tf_fails_litert_torch_converts_and_the_artifact_says_which_route(tmp_path):
    """The TFLite routes in order: onnx2tf refuses F.normalize (ReduceL2's axis), litert-torch converts it
    straight from torch.export; FP16 has no litert-torch route here, so it fails naming both."""
    from tests.test_isolation import normalized

    model = normalized()
    bundle = edgesdk.convert(model, torch.randn(1, 16), targets=["tflite"], precisions=["fp32", "fp16"],
                             out=tmp_path / "b")
    art = bundle.artifact("tflite-fp32")
    assert art.versions["route"] == "torch.export -> litert-torch" and art.versions["litert-torch"] == "0.10.0"
    assert art.parity.measured and not art.parity.problems and art.io.inputs == [None]  # the torch layout kept
    assert [(f.id, f.stage) for f in bundle.failed] == [("tflite-fp16", "convert")]
    assert "onnx2tf" in bundle.failed[0].reason and "litert-torch route makes FP32" in bundle.failed[0].reason
    x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    with edgesdk.Runtime(bundle.path, backend="tflite") as rt:
        np.testing.assert_allclose(rt.run(x), want, atol=1e-5)


def test_fp32_alone_goes_through_litert_torch_first_and_it_takes_torch_sources_only(tmp_path, tiny_model, tfl_bundle):
    """FP32 alone of a static torch model: litert-torch first (NCHW kept); with FP16/INT8 asked too, every
    precision comes from onnx2tf's one SavedModel (NHWC). litert-torch named for an ONNX file: UsageError."""
    bundle = edgesdk.convert(tiny_model, torch.zeros(1, 3, 32, 32), targets=["tflite"], out=tmp_path / "b",
                             strict=True)
    art = bundle.artifact("tflite-fp32")
    assert art.versions["route"] == "torch.export -> litert-torch" and art.layout == "NCHW"
    assert edgesdk.load_bundle(tfl_bundle).artifact("tflite-fp32").versions["route"].startswith("ONNX -> onnx2tf")
    assert sorted(p.name for p in bundle.path.iterdir()) == ["edgesdk.json", "model.tflite"]
    edgesdk.convert(tiny_model, torch.zeros(1, 3, 32, 32), targets=["onnx"], out=tmp_path / "o", strict=True)
    with pytest.raises(UsageError, match="converts torch modules"):
        edgesdk.convert(tmp_path / "o" / "model.onnx", targets=["tflite"], out=tmp_path / "t",
                        options={"tflite_route": "litert-torch"})
    assert not (tmp_path / "t").exists()
