import json

import pytest
import torch
from PIL import Image

from edgesdk.cli import main
from tests.conftest import make_scene
from tests.models import tiny_cnn


def cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    import numpy as np

    folder = tmp_path_factory.mktemp("cli_images")
    rng = np.random.default_rng(3)
    for i in range(3):
        Image.fromarray(make_scene(rng)).save(folder / f"img{i}.png")
    return folder


def test_convert_from_factory_with_weights(capsys, tmp_path, image_folder):
    torch.save(tiny_cnn().state_dict(), tmp_path / "w.pt")
    (tmp_path / "labels.txt").write_text("\n".join(f"thing{i}" for i in range(10)))
    code, out, err = cli(capsys, "convert", "--factory", "tests.models:tiny_cnn", "--weights", str(tmp_path / "w.pt"),
                         "-o", str(tmp_path / "b"), "--precision", "fp32,int8", "--calib", str(image_folder),
                         "--labels", str(tmp_path / "labels.txt"), "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5")
    assert code == 0, err
    assert "onnx-int8" in out
    manifest = json.loads((tmp_path / "b" / "edgesdk.json").read_text())
    assert manifest["labels"][2] == "thing2"
    assert manifest["preprocess"]["mean"] == [0.5, 0.5, 0.5] and manifest["preprocess"]["size"] == [32, 32]


def test_convert_from_onnx_file_and_input_shape(capsys, tmp_path, tiny_bundle):
    code, out, err = cli(capsys, "convert", str(tiny_bundle / "model.onnx"), "-o", str(tmp_path / "b"))
    assert code == 0, err
    torch.jit.save(torch.jit.trace(tiny_cnn(), torch.zeros(1, 3, 32, 32)), tmp_path / "m.pt")
    code, _, err = cli(capsys, "convert", str(tmp_path / "m.pt"), "-o", str(tmp_path / "c"), "--input-shape", "1,3,32,32")
    assert code == 0, err


def test_run_classifies_images_with_labels(capsys, tiny_bundle, images):
    code, out, err = cli(capsys, "run", str(tiny_bundle), str(images), "--json", "-k", "3", "--precision", "fp32")
    assert code == 0, err
    results = json.loads(out)
    assert len(results) == 3
    top = results[0]["top"]
    assert len(top) == 3 and top[0]["label"].startswith("class")
    assert top[0]["score"] >= top[1]["score"] >= top[2]["score"]
    assert abs(sum(t["score"] for t in top)) <= 1.0 + 1e-6
    code, out, _ = cli(capsys, "run", str(tiny_bundle), str(images / "img0.png"))
    assert code == 0 and "img0.png: class" in out


def test_run_npy_input(capsys, tmp_path, tiny_bundle):
    import numpy as np

    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 32), np.float32))
    code, out, err = cli(capsys, "run", str(tiny_bundle), str(tmp_path / "x.npy"), "--json")
    assert code == 0, err
    assert json.loads(out)[0]["top"]


def test_bench_writes_json_and_csv(capsys, tmp_path, tiny_bundle):
    code, out, err = cli(capsys, "bench", str(tiny_bundle), "--runs", "5", "--warmup", "1", "--threads", "1",
                         "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv"))
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert {r["artifact"] for r in report["results"]} == {"onnx-fp32", "onnx-fp16", "onnx-int8"}
    assert {r["backend"] for r in report["results"]} >= {"onnxruntime"}
    r = report["results"][0]
    assert set(r) >= {"artifact", "format", "backend", "precision", "latency_ms", "throughput_ips", "load_s",
                      "peak_rss_mb", "size_bytes", "parity"}
    assert set(r["latency_ms"]) >= {"p50", "p90", "p99", "mean"}
    assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
    assert r["peak_rss_mb"] > 10 and report["machine"]["cores"] >= 1
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 1 + len(report["results"])
    assert "p50 ms" in out


def test_doctor(capsys):
    code, out, _ = cli(capsys, "doctor")
    assert code == 0
    assert "onnxruntime" in out and "CPUExecutionProvider" in out and "Python" in out
    assert "openvino" in out and "CPU" in out


@pytest.mark.parametrize("args,needle", [
    (["run", "MISSING", "x.png"], "does not exist"),
    (["convert", "nope.onnx", "-o", "OUT"], "not found"),
    (["convert", "BAD", "-o", "OUT"], "not a valid ONNX"),
    (["convert", "BAD", "-o", "EXISTING"], "already exists"),
    (["run", "BAD", "IMG"], "cannot load"),
    (["run", "BUNDLE", "NOTIMG"], "Cannot use"),
    (["convert", "--factory", "nosuch.module:f", "-o", "OUT"], "Cannot find factory"),
])
def test_failures_are_one_clear_message(capsys, tmp_path, tiny_bundle, args, needle):
    (tmp_path / "bad.onnx").write_bytes(b"garbage" * 50)
    (tmp_path / "existing").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    subst = {"BAD": str(tmp_path / "bad.onnx"), "OUT": str(tmp_path / "out"), "EXISTING": str(tmp_path / "existing"),
             "IMG": str(tmp_path / "notes.txt"), "BUNDLE": str(tiny_bundle), "NOTIMG": str(tmp_path / "notes.txt")}
    code, out, err = cli(capsys, *[subst.get(a, a) for a in args])
    assert code != 0
    assert needle.lower() in (out + err).lower()
    assert "Traceback" not in out + err
    assert not (tmp_path / "out").exists()
