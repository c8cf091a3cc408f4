"""The sample apps end to end on real inputs, and the LatencyLog they share."""

import json
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from apps import classify, speech
from edgesdk import LatencyLog
from tests.stats import below_noise


def test_latency_log(tmp_path):
    with LatencyLog(tmp_path / "l.jsonl", name="t", inference_stages=("infer",)) as log:
        for i in range(5):
            with log.sample(audio_s=0.5, input=f"s{i}") as rec:
                with log.stage("pre"):
                    pass
                with log.stage("infer"):
                    sum(range(20000))
                rec["result"] = i
        with pytest.raises(RuntimeError):
            with log.stage("outside"):
                pass
    s = log.summary()
    assert s["samples"] == 5 and list(s["stages"]) == ["pre", "infer"] and s["stages"]["infer"]["count"] == 5
    assert 0 <= s["share_outside_infer"] < 1 and s["real_time_factor"] == pytest.approx(sum(log.totals) / 1e3 / 2.5)
    assert s["total"]["p50"] <= s["total"]["p99"]
    lines = [json.loads(line) for line in (tmp_path / "l.jsonl").read_text().splitlines()]
    assert len(lines) == 5 and lines[3]["input"] == "s3" and lines[3]["result"] == 3 and "infer" in lines[3]["stages_ms"]
    assert "p50 ms" in log.table() and "real-time factor" in log.table()


ARTIFACTS = ["onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-int8", "tflite-fp32", "tflite-int8"]


@pytest.mark.integration
def test_classify_app_on_every_artifact(effnet_bundle, photos, tmp_path, capsys):
    present = {a["id"] for a in json.loads((effnet_bundle / "edgesdk.json").read_text())["artifacts"]}
    _classify_each(effnet_bundle, [a for a in ARTIFACTS if a in present], photos[1], tmp_path, capsys)
    assert len((tmp_path / "c.jsonl").read_text().splitlines()) == 3


@pytest.mark.integration
def test_classify_app_on_the_mobile_formats(effnet_mobile_bundle, photos, tmp_path, capsys):
    """ExecuTorch, MNN and NCNN artifacts through the same app. INT8 is judged on its mechanism: the
    ExecuTorch recipe keeps layers in float and says which; MNN's is weight-only. Its figure (top-1
    agreement on n=50 photos, 0.96-0.98 seen here) is benchmarks/compare_mobile.py's to report; the test
    only guards against a collapse, at 0.70, under the 95% Wilson interval of 0.90 at n=50 ([0.79, 0.96])."""
    bundle = json.loads((effnet_mobile_bundle / "edgesdk.json").read_text())
    for art in bundle["artifacts"]:
        assert not art["parity"].get("problems"), art["id"]
        if art["precision"] == "int8":
            assert art["parity"]["samples"] == 50
            assert art["parity"]["top1_agreement"] >= below_noise(0.70, 0.90, 50), art["id"]
    arts = {a["id"]: a for a in bundle["artifacts"]}
    assert arts["executorch-int8"]["quantization"]["float_nodes"]
    assert "weight-only" in arts["mnn-int8"]["quantization"]["method"]
    _classify_each(effnet_mobile_bundle, [a["id"] for a in bundle["artifacts"]], photos[1], tmp_path, capsys)


def _classify_each(bundle: Path, artifacts: list[str], evaluation: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_text("not an image")
    for artifact in artifacts:
        code = classify.main([str(evaluation / "55.jpg"), str(evaluation / "57.jpg"), str(bad), "--model",
                              str(bundle), "--artifact", artifact, "--json", "--log", str(tmp_path / "c.jsonl")])
        out = json.loads(capsys.readouterr().out)
        assert code == 2  # the unreadable image is reported; the others are classified
        by_input = {Path(r["input"]).name: r for r in out["results"]}
        assert "black swan" in [t["label"] for t in by_input["55.jpg"]["top"]], (artifact, by_input["55.jpg"])
        assert by_input["57.jpg"]["top"][0]["label"] == "maze"
        assert "Cannot read" in by_input["broken.jpg"]["error"]
        assert out["artifact"] == artifact and set(out["latency"]["stages"]) == {"decode", "preprocess", "infer",
                                                                                 "postprocess"}


@pytest.mark.integration
def test_classify_app_pipelined_is_the_sequential_app(effnet_bundle, photos, tmp_path, capsys):
    """Pipelining changes when the stages run, not what comes out: the same answers in input order, a
    broken image in its place; --exact-decode gives the manifest's tensor, the default the reduced
    decode's answers (top-1 the same on these photos)."""
    files = [str(photos[1] / f"{i}.jpg") for i in range(50, 62)]
    bad = tmp_path / "broken.jpg"
    bad.write_text("not an image")
    files.insert(5, str(bad))
    out = {}
    for mode, extra in (("pipelined", []), ("sequential", ["--sequential"]), ("exact", ["--exact-decode"])):
        code = classify.main([*files, "--model", str(effnet_bundle), "--artifact", "onnx-fp32", "--json",
                              "--log", str(tmp_path / f"{mode}.jsonl"), *extra])
        assert code == 2
        out[mode] = json.loads(capsys.readouterr().out)
    assert out["pipelined"]["results"] == out["sequential"]["results"]
    assert [r["input"] for r in out["pipelined"]["results"]] == files and "error" in out["pipelined"]["results"][5]
    top1 = {m: [r["top"][0]["label"] for r in o["results"] if "top" in r] for m, o in out.items()}
    assert sum(a == b for a, b in zip(top1["exact"], top1["pipelined"])) >= len(files) - 2
    latency = out["pipelined"]["latency"]
    assert latency["samples"] == len(files) and latency["per_second"] > 0 and "share_outside_infer" in latency


def test_classify_app_needs_a_model(tmp_path, capsys):
    assert classify.main(["x.jpg", "--model", str(tmp_path / "none")]) == 1
    assert "make demo" in capsys.readouterr().err


# -- speech ----------------------------------------------------------------------------------------

def _write_wav(path: Path, x: np.ndarray, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio")
    texts = {"okay_nabu": "okay nabu", "alexa": "alexa", "other": "the weather is nice today, I would like a coffee"}
    files = {}
    for name, text in texts.items():  # espeak-ng writes 22050 Hz: the app resamples to 16 kHz
        files[name] = folder / f"{name}.wav"
        subprocess.run(["espeak-ng", "-w", str(files[name]), text], check=True)
    rng = np.random.default_rng(0)
    files["silence"] = _write_wav(folder / "silence.wav", np.zeros(16000 * 2))
    files["noise"] = _write_wav(folder / "noise.wav", rng.normal(0, 0.05, 16000 * 2))
    files["voice_8k"] = folder / "voice_8k.wav"  # a real recorded voice, at another rate
    from edgesdk.tasks.audio import load_wav

    _write_wav(files["voice_8k"], load_wav(Path("/usr/share/sounds/alsa/Front_Center.wav"), 8000), rate=8000)
    (folder / "notes.txt").write_text("not audio")
    files["not_wav"] = folder / "notes.txt"
    return files


@pytest.fixture(scope="module")
def vad_bundle(tmp_path_factory):
    return speech.build_vad_bundle(tmp_path_factory.mktemp("vad") / "vad")


def _run_speech(capsys, vad_bundle, *files, log=None):
    args = [str(f) for f in files] + ["--vad", str(vad_bundle), "--json"]
    if log:
        args += ["--log", str(log)]
    code = speech.main(args)
    return code, {Path(r["input"]).stem: r for r in json.loads(capsys.readouterr().out)["results"]}


def test_vad_conversion_parity(vad_bundle):
    m = json.loads((vad_bundle / "edgesdk.json").read_text())
    assert [s["name"] for s in m["inputs"]] == ["audio", "state"] and m["inputs"][1]["shape"] == [2, 1, 128]
    for a in m["artifacts"]:
        assert a["parity"]["max_abs"] <= 1e-4 and a["parity"]["data"].startswith("validation"), a


def test_speech_app(capsys, tmp_path, vad_bundle, audio):
    code, r = _run_speech(capsys, vad_bundle, audio["okay_nabu"], audio["alexa"], audio["other"], audio["silence"],
                          audio["noise"], log=tmp_path / "s.jsonl")
    assert code == 0
    assert r["okay_nabu"]["wake_words"]["okay_nabu"] and not r["okay_nabu"]["wake_words"]["alexa"]
    assert r["alexa"]["wake_words"]["alexa"] and not r["alexa"]["wake_words"]["okay_nabu"]
    assert not any(r["other"]["wake_words"].values())  # other speech is not a wake word
    seconds = r["other"]["seconds"]
    speech_s = sum(b - a for a, b in r["other"]["speech"])
    assert r["other"]["speech"] and speech_s > 0.6 * seconds  # speech where the speech is
    for quiet in ("silence", "noise"):
        assert r[quiet]["speech"] == [] and not any(r[quiet]["wake_words"].values()), quiet
    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    assert len(lines) == sum(int(v["seconds"] * 16000) // 512 for v in r.values())


def test_speech_app_other_rates_and_bad_files(capsys, vad_bundle, audio):
    files = [audio["not_wav"]] + ([audio["voice_8k"]] if audio["voice_8k"].exists() else [])
    code, r = _run_speech(capsys, vad_bundle, *files)
    assert code == 2 and "not a PCM WAV file" in r["notes"]["error"]
    if "voice_8k" in r:  # 8 kHz recorded voice, resampled to 16 kHz: speech found
        assert r["voice_8k"]["speech"]
