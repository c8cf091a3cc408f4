"""Hardware profiles from fake device roots, the per-device ranking with the real backends installed
here, fallback, autotune's cache, --target presets, and the TensorRT parts that run without a GPU."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import edgesdk
from edgesdk.backends import get_backend
from edgesdk.backends.tensorrt import BuildSettings, engine_cache_key
from edgesdk.core.errors import BackendUnavailable
from edgesdk.core.hardware import read_profile
from tests.conftest import smooth_batch
from tests.models import tiny_cnn
from tests.stats import TINY_MIN_COSINE, cosine
from tests.test_cli import cli

ROOTS = Path(__file__).parent / "hwroots"


def tensorrt_installed() -> bool:
    """Tests of TensorRT's absence must not fail on a machine that has it."""
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


needs_no_tensorrt = pytest.mark.skipif(tensorrt_installed(), reason="TensorRT is installed here: these tests cover "
                                       "machines without it (the GPU path is exercised on a TensorRT host)")


@pytest.mark.parametrize("root,device,expect", [
    ("jetson_orin", "jetson", {"arch": "aarch64", "cores": 12, "cpu_model": "Cortex-A78AE", "cpu_vendor": "arm"}),
    ("pi5", "rpi", {"arch": "aarch64", "cores": 4, "cpu_model": "Cortex-A76", "board": "Raspberry Pi 5 Model B Rev 1.0"}),
    ("android", "android", {"arch": "aarch64", "cores": 8, "board": "Pixel 8"}),
    ("intel_x86", "x86", {"arch": "x86_64", "cores": 8, "cpu_vendor": "intel"}),
    ("amd_x86", "x86", {"arch": "x86_64", "cores": 16, "cpu_vendor": "amd"}),
    ("nvidia_x86", "nvidia", {"arch": "x86_64", "cores": 20, "cpu_vendor": "intel"}),
])
def test_hardware_profiles(root, device, expect):
    p = read_profile(ROOTS / root)
    assert p.device == device
    for key, value in expect.items():
        assert getattr(p, key) == value, key
    if root == "jetson_orin":
        assert p.jetson["l4t"] == "36.3.0" and p.jetson["jetpack"] == "6.0"
        assert p.gpus[0]["compute_capability"] == "8.7" and {"neon", "dotprod"} <= set(p.flags)
    if root == "android":
        assert p.android == {"model": "Pixel 8", "release": "14", "sdk": "34"} and {"i8mm", "bf16"} <= set(p.flags)
    if root == "intel_x86":
        assert {"amx_int8", "avx512_vnni", "avx512_bf16"} <= set(p.flags)
    if root == "nvidia_x86":
        assert p.gpus == [{"name": "NVIDIA GeForce RTX 3060", "compute_capability": "8.6"}]
    assert p.machine_id != read_profile().machine_id


@pytest.mark.parametrize("root,first", [
    ("pi5", ("tflite", "tflite-int8")),
    ("android", ("tflite", "tflite-int8")),
    ("jetson_orin", ("onnxruntime", "onnx-int8")),  # TensorRT is first in line, but not installed here
    ("nvidia_x86", ("onnxruntime", "onnx-int8")),
    ("intel_x86", ("openvino", "onnx-int8")),  # nothing timed on that machine: OpenVINO's tier and preference
    ("amd_x86", ("openvino", "onnx-int8")),
])
def test_ranking_per_device(every_format, root, first):
    with edgesdk.Runtime(every_format, hardware=ROOTS / root) as rt:
        assert (rt.backend, rt.artifact.id) == first, rt.explain()
        order = [c.backend.name for c in rt.ranking.candidates]
        text = rt.explain()
    if root in ("jetson_orin", "nvidia_x86") and not tensorrt_installed():
        assert any(s.startswith("tensorrt-int8 on tensorrt: the tensorrt package is not installed") for s in rt.skipped)
        assert "skipped: tensorrt" in text
    if root in ("jetson_orin", "nvidia_x86"):
        cpu_fallbacks = ("tflite", "openvino") if root == "jetson_orin" else ("openvino", "tflite")  # x86 CPU: OpenVINO
        assert order.index("onnxruntime") < order.index(cpu_fallbacks[0]) < order.index(cpu_fallbacks[1])
    elif root in ("pi5", "android"):
        # the ARM tier: TFLite first among the unmeasured, then the device's other mobile runtimes, then ORT
        tier = {"pi5": {"tflite", "ncnn", "mnn"}, "android": {"tflite", "mnn", "executorch"}}[root]
        assert set(order[:order.index("onnxruntime")]) == tier and order.index("onnxruntime") < order.index("openvino")
    else:  # x86: OpenVINO and ONNX Runtime, then the mobile runtimes
        assert set(order[:4]) == {"openvino", "onnxruntime"}
        assert set(order[order.index("tflite"):]) == {"tflite", "mnn", "ncnn", "executorch"}


def test_x86_takes_whichever_was_measured_faster(every_format, tmp_path):
    intel = read_profile(ROOTS / "intel_x86")
    for faster in ("onnxruntime", "openvino"):
        b = tmp_path / faster
        shutil.copytree(every_format, b)
        m = json.loads((b / "edgesdk.json").read_text())
        for a in m["artifacts"]:  # pretend the conversion ran on that Intel box
            a["measured_on"] = intel.machine_id
            a["latency_ms"] = {k: (1.0 if k == faster and a["id"] == "onnx-fp32" else 5.0) for k in a["latency_ms"]}
        (b / "edgesdk.json").write_text(json.dumps(m))
        with edgesdk.Runtime(b, hardware=intel) as rt:
            assert (rt.backend, rt.artifact.id) == (faster, "onnx-fp32")
            assert "1.00 ms measured here at conversion" in rt.explain()


def test_fallback_from_a_corrupted_preferred_artifact_is_reported(every_format, tmp_path, caplog):
    b = tmp_path / "b"
    shutil.copytree(every_format, b)
    data = bytearray((b / "model.int8.tflite").read_bytes())
    data[len(data) // 2] ^= 0x55
    (b / "model.int8.tflite").write_bytes(bytes(data))
    with caplog.at_level("WARNING"), edgesdk.Runtime(b, hardware=ROOTS / "pi5") as rt:
        first, second = rt.ranking.candidates[:2]  # the policy's order on a Pi 5: the runner-up takes over
        assert (first.backend.name, first.artifact.id) == ("tflite", "tflite-int8")
        assert (rt.backend, rt.artifact.id) == (second.backend.name, second.artifact.id)
        assert any("tflite-int8 on tflite: failed to load" in s and "sha256" in s for s in rt.skipped)
        assert "model.int8.tflite" in caplog.text and "tflite-int8 on tflite: failed to load" in rt.explain()


def test_autotune_caches_the_winner(every_format):
    first = edgesdk.Runtime(every_format, autotune=True)
    assert first.autotune["cached"] is False and len(first.autotune["ms"]) >= 2
    # The policy orders by tier first (TFLite is a fallback on x86), then by the timings within the tier.
    def tier(key):
        return get_backend(key.split("|")[1]).device_rank.get(first.profile.device, 99) // 10

    pick = f"{first.artifact.id}|{first.backend}"
    same_tier = {k: v for k, v in first.autotune["ms"].items() if tier(k) == tier(pick)}
    winner = min(same_tier, key=same_tier.get)
    assert pick == winner
    first.close()
    with edgesdk.Runtime(every_format, autotune=True) as second:
        assert second.autotune["cached"] is True and second.autotune["ms"] == first.autotune["ms"]
        assert (second.artifact.id, second.backend) == (first.artifact.id, first.backend)
        assert "Autotune (cached)" in second.explain()


def test_tensorrt_int8_is_symmetric_qdq_checked_on_onnxruntime(every_format):
    arts = {a["id"]: a for a in json.loads((every_format / "edgesdk.json").read_text())["artifacts"]}
    int8, fp16 = arts["tensorrt-int8"], arts["tensorrt-fp16"]
    assert fp16["file"] == arts["onnx-fp32"]["file"]  # the engine is built from the bundle's FP32 ONNX
    assert int8["quantization"]["activations"] == "int8 per-tensor symmetric"
    model = onnx.load(str(every_format / int8["file"]))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)  # TensorRT rejects uint8
    assert int8["parity"]["backend"].startswith("onnxruntime (checks") and int8["latency_ms"] == {}
    # The same file on ONNX Runtime, as a user could check it: close to the FP32 model.
    x = smooth_batch(4, (3, 32, 32), seed=40)
    with torch.no_grad():
        ref = tiny_cnn()(torch.from_numpy(x)).numpy()
    sess = get_backend("onnxruntime").open(every_format / int8["file"])
    out = np.concatenate([sess.run({"input": x[i:i + 1]})[0] for i in range(4)])
    lowest = min(cosine(o, r) for o, r in zip(out, ref))  # not argmax: near-ties on the tiny CNN (tests/stats.py)
    assert lowest >= TINY_MIN_COSINE, lowest


@needs_no_tensorrt
def test_tensorrt_without_tensorrt_or_gpu(every_format):
    backend = get_backend("tensorrt")
    ok, why = backend.available()
    assert not ok and "tensorrt package is not installed" in why and "JetPack" in why
    with pytest.raises(BackendUnavailable, match="Backend 'tensorrt' is unavailable"):
        backend.open(every_format / "tensorrt" / "model.int8.qdq.onnx", precision="int8")
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        edgesdk.Runtime(every_format, backend="tensorrt")


def test_tensorrt_engine_keys_and_build_settings():
    key = engine_cache_key("10.3.0", "Orin (nvgpu)", "int8", "ab" * 32)
    assert key == "trt10.3.0-orin--nvgpu-int8-abababababababab"
    assert engine_cache_key("10.4.0", "Orin (nvgpu)", "int8", "ab" * 32) != key  # a new TensorRT rebuilds
    assert engine_cache_key("10.3.0", "NVIDIA GeForce RTX 3060", "int8", "ab" * 32) != key  # so does a new GPU
    assert engine_cache_key("10.3.0", "Orin (nvgpu)", "fp16", "ab" * 32) != key
    assert BuildSettings.for_precision("fp16", dynamic=False) == BuildSettings(("FP16",), None)
    assert BuildSettings.for_precision("int8", dynamic=True, max_batch=8) == BuildSettings(("INT8", "FP16"), (1, 4, 8))
    assert BuildSettings.for_precision("fp32", dynamic=False).flags == ()
    with pytest.raises(edgesdk.core.errors.ModelLoadError):
        BuildSettings.for_precision("bf8", dynamic=False)


def test_target_presets_on_the_cli(capsys, tmp_path, image_folder):
    for device, expected in (("jetson", {"onnx-fp32", "tensorrt-fp16", "tensorrt-int8"}),
                             ("rpi", {"tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8", "mnn-fp32", "mnn-int8",
                                      "ncnn-fp32", "ncnn-fp16"})):
        code, out, err = cli(capsys, "convert", "--factory", "tests.models:tiny_cnn", "-o", str(tmp_path / device),
                             "--target", device, "--calib", str(image_folder), "--resize", "36")
        assert code == 0, err
        ids = {a["id"] for a in json.loads((tmp_path / device / "edgesdk.json").read_text())["artifacts"]}
        assert ids == expected


@needs_no_tensorrt
def test_doctor_prints_the_ranking_for_a_model(capsys, every_format):
    code, out, err = cli(capsys, "doctor", str(every_format), "--hardware", str(ROOTS / "jetson_orin"))
    assert code == 0, err
    assert "Device: jetson: NVIDIA Jetson AGX Orin" in out and "L4T 36.3.0" in out
    assert "1. onnx-int8 on onnxruntime" in out and "skipped: tensorrt-int8 on tensorrt" in out
