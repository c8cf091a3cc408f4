"""The host-side pieces of `make arm-check` (tools/arm_check.py), and its device half run here: the
arm64 root itself takes minutes under emulation and is not part of `make test`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))

import arm_check  # noqa: E402
import arm_device  # noqa: E402

from tests.conftest import smooth_batch  # noqa: E402


@pytest.fixture(scope="module")
def exchange(tmp_path_factory, tiny_bundle) -> Path:
    """An exchange folder as the host half writes it: the tiny bundle, 6 inputs, the host's outputs."""
    ex = tmp_path_factory.mktemp("exchange")
    shutil.copytree(tiny_bundle, ex / "bundles" / "classifier")
    feeds = [{"input": smooth_batch(1, (3, 32, 32), seed=s)} for s in range(6)]
    arm_check.save_feeds(ex / "inputs" / "classifier.npz", feeds)
    arm_device.run_everywhere(ex / "bundles" / "classifier", ex / "inputs" / "classifier.npz", ex / "host" / "classifier",
                              isolate=False)
    return ex


def test_feeds_and_outputs_round_trip(tmp_path):
    feeds = [{"audio": np.arange(4, dtype=np.float32)[None], "state": np.ones((2, 1, 3), np.float32)} for _ in range(3)]
    arm_check.save_feeds(tmp_path / "f.npz", feeds)
    back = arm_device.load_feeds(tmp_path / "f.npz")
    assert len(back) == 3 and all(np.array_equal(a[k], b[k]) for a, b in zip(feeds, back) for k in a)
    outs = [[np.full((1, 2), i, np.float32), np.zeros(3, np.int64)] for i in range(12)]  # 12 > 9: numeric order
    arm_device.save_outputs(tmp_path / "o.npz", outs)
    assert [o[0][0, 0] for o in arm_check.load_outputs(tmp_path / "o.npz")] == list(range(12))


def test_every_artifact_ran_on_every_backend_that_runs_it(exchange):
    made = sorted(p.name for p in (exchange / "host" / "classifier").glob("*.npz"))
    assert made == ["onnx-fp16@onnxruntime.npz", "onnx-fp16@openvino.npz", "onnx-fp32@onnxruntime.npz",
                    "onnx-fp32@openvino.npz", "onnx-int8@onnxruntime.npz", "onnx-int8@openvino.npz"]


def _device(exchange, tmp_path, change=None):
    ex = tmp_path / "ex"
    shutil.copytree(exchange, ex)
    shutil.copytree(ex / "host", ex / "device")
    if change:
        for f in (ex / "device" / "classifier").glob("*.npz"):
            outs = arm_check.load_outputs(f)
            arm_device.save_outputs(f, [[change(f.stem, o) for o in s] for s in outs])
    return ex


def test_identical_outputs_compare_clean(exchange, tmp_path):
    rows = arm_check.compare_model(_device(exchange, tmp_path), "classifier")
    assert len(rows) == 6 and all(r.ok for r in rows), [r.__dict__ for r in rows]
    assert all(r.vs_source == "top-1 100.0%" for r in rows if r.artifact == "onnx-fp32")


def test_a_drifted_fp32_artifact_is_a_mismatch(exchange, tmp_path):
    """1e-2 of drift in FP32 logits is far past 1e-4 relative; the same drift in INT8 keeps its top-1."""
    ex = _device(exchange, tmp_path, lambda stem, o: o + np.float32(1e-2))
    rows = {(r.artifact, r.backend): r for r in arm_check.compare_model(ex, "classifier")}
    assert not rows["onnx-fp32", "onnxruntime"].ok and "max abs error 1.00e-02" in rows["onnx-fp32", "onnxruntime"].vs_x86
    assert rows["onnx-int8", "onnxruntime"].ok


def test_a_shuffled_int8_artifact_fails_agreement(exchange, tmp_path):
    ex = _device(exchange, tmp_path, lambda stem, o: o[..., ::-1].copy() if "int8" in stem else o)
    rows = {(r.artifact, r.backend): r for r in arm_check.compare_model(ex, "classifier")}
    assert not rows["onnx-int8", "onnxruntime"].ok and "top-1 agreement" in rows["onnx-int8", "onnxruntime"].vs_x86
    table = arm_check.int8_table(ex)
    assert {t["backend"] for t in table} == {"onnxruntime", "openvino"} and all(t["x86"] > t["arm"] for t in table)


def test_choice_rules():
    report = {"machine": "aarch64", "device": "arm", "choice": {
        "classifier": {"ranking": ["onnx-int8@onnxruntime", "openvino-int8@openvino"], "explanation": "",
                       "latencies_from_elsewhere": ["onnx-int8"]}}}
    assert arm_check.choice_problems(report) == []
    report["choice"]["classifier"]["ranking"].reverse()  # OpenVINO (tier 3 on arm) before ORT (tier 2)
    report["choice"]["classifier"]["explanation"] = "1. onnx-int8 on onnxruntime: tier 2 on arm, 3.1 ms measured here"
    assert len(arm_check.choice_problems(report)) == 2
    assert "device class x86" in arm_check.choice_problems({**report, "machine": "x86_64", "device": "x86"})[0]


def test_the_device_half_runs_here(exchange, tmp_path):
    """tools/arm_device.py end to end on this machine: the code that runs in the arm64 root."""
    ex = tmp_path / "ex"
    shutil.copytree(exchange, ex)
    done = subprocess.run([sys.executable, str(TOOLS / "arm_device.py"), str(ex)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((ex / "device" / "report.json").read_text())
    assert report["choice"]["classifier"]["artifact"] in {"onnx-fp32", "onnx-fp16", "onnx-int8"}
    assert report["doctor"]["returncode"] == 0 and "onnxruntime" in report["doctor"]["output"]
    assert report["sizes"]["edgesdk"] > 0 and report["import_edgesdk"]["peak_rss_mb"] > 0
    assert "torch" in report["converter_libraries"]  # this dev environment has them; the check sees them
    rss = report["peak_rss_mb"]["classifier"]
    assert len(rss) == 6 and all(v > 0 for v in rss.values())
    assert sorted(p.name for p in (ex / "device" / "classifier").glob("*.npz")) == \
        sorted(p.name for p in (ex / "host" / "classifier").glob("*.npz"))


def test_a_pair_that_kills_its_process_is_recorded_not_fatal(exchange, tmp_path):
    """Each pair runs in its own process on the device: one that dies costs that pair, with the reason."""
    entry = arm_device._run_isolated(exchange / "bundles" / "classifier", "onnx-fp32", "onnxruntime",
                                     tmp_path / "missing.npz", tmp_path / "out" / "x.npz")
    assert entry["error"].startswith("the process died (exit status 1)") and "missing.npz" in entry["error"]
    ok = arm_device._run_isolated(exchange / "bundles" / "classifier", "onnx-fp32", "onnxruntime",
                                  exchange / "inputs" / "classifier.npz", tmp_path / "out" / "y.npz")
    assert "error" not in ok and len(arm_check.load_outputs(tmp_path / "out" / "y.npz")) == 6


def test_a_mismatch_on_a_pair_the_device_never_picks_is_reported_not_failed(exchange, tmp_path):
    ex = _device(exchange, tmp_path, lambda stem, o: o[..., ::-1].copy() if "int8@openvino" in stem else o)
    rows = arm_check.compare_model(ex, "classifier")
    ranked = [f"{r.artifact}@{r.backend}" for r in rows if r.backend != "openvino" or "int8" not in r.artifact]
    excused = arm_check.excuse_unranked(rows, {"choice": {"classifier": {"ranking": ranked}}})
    assert [(r.artifact, r.backend) for r in excused] == [("onnx-int8", "openvino")]
    assert "never picked automatically" in excused[0].vs_x86
    assert arm_check.excuse_unranked(rows, {"choice": {"classifier": {"ranking": ranked + ["onnx-int8@openvino"]}}}) == []
