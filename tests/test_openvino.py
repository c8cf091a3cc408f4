"""The OpenVINO converter and backend, with the real openvino and nncf."""

import json
import shutil

import numpy as np
import pytest
import torch

import edgesdk
from edgesdk.backends import get_backend
from edgesdk.core.errors import InputError, ModelLoadError
from edgesdk.core.hardware import read_profile
from tests.conftest import smooth_batch
from tests.models import tiny_cnn
from tests.stats import TINY_MIN_COSINE, cosine


@pytest.fixture(scope="module")
def ov_bundle(tmp_path_factory, image_folder, tiny_preprocess):
    out = tmp_path_factory.mktemp("ov") / "tiny"
    edgesdk.convert(tiny_cnn(), torch.zeros(1, 3, 32, 32), targets=["onnx", "openvino"],
                    precisions=["fp32", "fp16", "bf16", "int8"], calib=image_folder, preprocess=tiny_preprocess,
                    out=out)
    return out


@pytest.fixture(scope="module")
def x():
    return smooth_batch(1, (3, 32, 32), seed=9)


def test_ir_artifacts_and_manifest(ov_bundle):
    m = json.loads((ov_bundle / "edgesdk.json").read_text())
    arts = {a["id"]: a for a in m["artifacts"]}
    assert {"openvino-fp32", "openvino-fp16", "openvino-bf16", "openvino-int8", "onnx-fp32"} <= set(arts)
    assert "onnx-bf16" not in arts  # bf16 goes only to the target that has it
    fp32 = arts["openvino-fp32"]
    assert fp32["file"] == "openvino/model.xml" and fp32["parity"]["max_abs"] <= 1e-4
    assert list(fp32["companions"]) == ["openvino/model.bin"] and len(fp32["companions"]["openvino/model.bin"]) == 64
    assert arts["openvino-bf16"]["file"] == fp32["file"]  # the same IR, run with the bf16 hint
    # FP32 IR keeps FP32 weights (save_model would compress to FP16 unless told not to)
    assert (ov_bundle / "openvino/model.bin").stat().st_size > 1.8 * (ov_bundle / "openvino/model.fp16.bin").stat().st_size
    int8 = arts["openvino-int8"]
    assert int8["quantization"]["method"] == "nncf.quantize" and int8["versions"]["nncf"]
    # the ONNX artifacts were timed on both backends, for the automatic choice
    assert set(arts["onnx-fp32"]["latency_ms"]) == {"onnxruntime", "openvino"}


def test_fp32_runs_in_f32_and_bf16_only_when_asked(ov_bundle):
    backend = get_backend("openvino")
    fp32 = backend.open(ov_bundle / "openvino/model.xml", precision="fp32")
    assert fp32.config["INFERENCE_PRECISION_HINT"] == "f32" and fp32.execution_precision == "fp32"
    bf16 = backend.open(ov_bundle / "openvino/model.xml", precision="bf16")
    assert bf16.config["INFERENCE_PRECISION_HINT"] == "bf16"
    if {"avx512_bf16", "amx_bf16"} & set(read_profile().flags):
        assert bf16.execution_precision == "bf16"


def test_same_outputs_from_both_backends(ov_bundle, x):
    with torch.no_grad():
        ref = tiny_cnn()(torch.from_numpy(x)).numpy()
    for backend, artifact in (("openvino", "openvino-fp32"), ("onnxruntime", "onnx-fp32"), ("openvino", "onnx-fp32")):
        with edgesdk.Runtime(ov_bundle, backend=backend, artifact=artifact) as rt:
            assert rt.backend == backend
            np.testing.assert_allclose(rt.run(x), ref, atol=1e-4)
    with edgesdk.Runtime(ov_bundle, artifact="openvino-int8") as rt:
        assert cosine(rt.run(x), ref) >= TINY_MIN_COSINE  # not argmax: a near-tie (tests/stats.py)


def test_auto_picks_the_fastest_measured_pair(ov_bundle):
    rt = edgesdk.Runtime(ov_bundle)
    tolerance = edgesdk.Tolerance()
    best = min(
        ((ms, a.id, b) for a in rt.bundle.artifacts if tolerance.accepts(a.precision, a.parity)[0]
         for b, ms in a.latency_ms.items()),
    )
    assert (rt.artifact.id, rt.backend) == (best[1], best[2])
    assert "measured here" in rt.explain()


def test_bad_ir_files(ov_bundle, tmp_path, x):
    src = ov_bundle / "openvino"
    shutil.copy(src / "model.xml", tmp_path / "nobin.xml")
    with pytest.raises(ModelLoadError, match="weights file nobin.bin"):
        edgesdk.Runtime(tmp_path / "nobin.xml")
    (tmp_path / "bad.xml").write_text("<net><layers><broken")
    shutil.copy(src / "model.bin", tmp_path / "bad.bin")
    with pytest.raises(ModelLoadError, match="OpenVINO cannot load"):
        edgesdk.Runtime(tmp_path / "bad.xml")
    shutil.copy(src / "model.xml", tmp_path / "trunc.xml")
    data = (src / "model.bin").read_bytes()
    (tmp_path / "trunc.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError):
        edgesdk.Runtime(tmp_path / "trunc.xml")
    with edgesdk.Runtime(src / "model.xml") as rt:
        with pytest.raises(InputError, match="expects"):
            rt.run(np.zeros((1, 3, 30, 30), np.float32))
        assert rt.run(x).shape == (1, 10)


def test_corrupt_bin_in_a_bundle_falls_back(ov_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(ov_bundle, b)
    data = bytearray((b / "openvino/model.int8.bin").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (b / "openvino/model.int8.bin").write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256"):
        edgesdk.Runtime(b, artifact="openvino-int8")
    manifest = json.loads((b / "edgesdk.json").read_text())
    for a in manifest["artifacts"]:  # make the corrupted artifact the first choice
        if a["id"] == "openvino-int8":
            a["latency_ms"]["openvino"] = 1e-6
    (b / "edgesdk.json").write_text(json.dumps(manifest))
    rt = edgesdk.Runtime(b, backend="openvino", precision="int8")
    assert rt.artifact.id == "onnx-int8" and any("model.int8.bin" in s for s in rt.skipped)


def test_throughput_mode_runs_async_requests_in_order(ov_bundle):
    xs = [smooth_batch(1, (3, 32, 32), seed=s) for s in range(12)]
    with torch.no_grad():
        refs = [tiny_cnn()(torch.from_numpy(v)).numpy() for v in xs]
    with edgesdk.Runtime(ov_bundle, artifact="openvino-fp32", mode="throughput") as rt:
        assert rt._session.config["PERFORMANCE_HINT"] == "THROUGHPUT"
        outs = rt.run_many(xs)
        assert len(outs) == 12 and len(rt.last_latencies_s) == 12 and min(rt.last_latencies_s) > 0
        for out, ref in zip(outs, refs):  # each result belongs to its own input, whatever finished first
            np.testing.assert_allclose(out[0], ref, atol=1e-4)
        with pytest.raises(InputError):
            rt.run_many([xs[0], np.zeros((1, 3, 8, 8), np.float32)])
    with edgesdk.Runtime(ov_bundle, artifact="onnx-fp32", backend="onnxruntime") as rt:  # the plain loop
        assert np.allclose(rt.run_many(xs[:2])[1][0], refs[1], atol=1e-4)


def test_explain_and_bench_report_execution_precision(ov_bundle):
    with edgesdk.Runtime(ov_bundle, artifact="openvino-fp32") as rt:
        assert rt.execution_precision == "fp32" and "executing in fp32" in rt.explain()
    with edgesdk.Runtime(ov_bundle, artifact="openvino-int8") as rt:
        assert rt.execution_precision == "int8+fp32"
    report = edgesdk.benchmark(ov_bundle, runs=8, warmup=2, artifacts=["openvino-bf16", "openvino-fp32"],
                               backend="openvino", mode="throughput")
    got = {r.artifact: r for r in report.results}
    assert report.mode == "throughput" and all(r.mode == "throughput" and r.throughput_ips > 0 for r in got.values())
    assert got["openvino-fp32"].execution_precision == "fp32"
    if {"avx512_bf16", "amx_bf16"} & set(read_profile().flags):
        assert got["openvino-bf16"].execution_precision == "bf16"


def test_devices(ov_bundle, x):
    from edgesdk.core.errors import BackendUnavailable

    with edgesdk.Runtime(ov_bundle, artifact="openvino-fp32", device="AUTO") as rt:
        assert rt.run(x).shape == (1, 10)
    present = get_backend("openvino").info()["devices"]
    assert "CPU" in present
    absent = next(d for d in ("NPU", "GPU", "GNA", "FPGA") if d not in present)  # holds on a machine with an NPU too
    with pytest.raises(BackendUnavailable, match=f"device '{absent}' is not present"):
        get_backend("openvino").open(ov_bundle / "openvino/model.xml", device=absent)
