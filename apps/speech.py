"""Streaming voice activity detection, wake-word spotting and (with --transcribe) speech recognition on
WAV files, in fixed-size chunks as a device would process a microphone, with latency logged per stage.

    python -m apps.speech speech.wav [more.wav] [--vad build/vad] [--wake-word okay_nabu,alexa]
        [--transcribe] [--asr build/whisper] [--log build/speech-latency.jsonl] [--json]
    python -m apps.speech --mic 10        # 10 s from the microphone (needs sounddevice and a device)

Models: silero-vad (converted by edgesdk into build/vad on first use, ONNX + OpenVINO), the int8
TFLite wake-word models of pymicro-wakeword, and Whisper-base's encoder and decoder (converted into
build/whisper on first use, ONNX FP32 + INT8), all through edgesdk.Runtime. Each 32 ms chunk (512
samples at 16 kHz) goes through: features (the wake words' 40-band front end), vad, wakeword. Each speech
segment VAD closes then goes through: mel (numpy), asr_encoder, asr_decoder (greedy, numpy around the
Runtime)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import edgesdk
from apps.common import app_parser, open_runtime, print_results, run_app
from edgesdk.models import zoo
from edgesdk.tasks.audio import load_wav, to_pcm16

RATE, CHUNK, CONTEXT = zoo.VAD_RATE, zoo.VAD_CHUNK, zoo.VAD_CONTEXT
DEFAULT_VAD = "build/vad"
log = logging.getLogger("apps.speech")


def build_vad_bundle(out: Path) -> Path:
    """Convert silero-vad into a bundle (ONNX and OpenVINO FP32), its parity measured on real speech:
    the recorded voices of alsa-utils when installed, else a synthetic signal."""
    source = zoo.silero_vad_source()
    voices = sorted(Path("/usr/share/sounds/alsa").glob("*.wav"))
    audio = np.concatenate([load_wav(v, RATE) for v in voices]) if voices else \
        np.sin(np.linspace(0, 2000, RATE * 3)).astype(np.float32) * 0.1
    windows = zoo.silero_vad_windows(source, audio)
    log.warning("Converting silero-vad into %s (first use)", out)
    edgesdk.convert(source, targets=["onnx", "openvino"], precisions=["fp32"], out=out, validation=windows,
                    task="voice-activity")
    return out


DEFAULT_ASR = "build/whisper"


#: Calibration speech for the encoder's INT8 (synthesized by espeak-ng; parity is measured on recorded voices).
CALIBRATION_SPEECH = ["switch on the light in the hall", "what time is it in tokyo", "stop the music please",
                      "how many steps did I walk today", "open the window a little", "read my new messages"]


def build_asr_bundles(folder: Path) -> Path:
    """Convert Whisper-base's encoder and decoder into folder/encoder and folder/decoder: ONNX FP32 and INT8
    (the transformer recipe), and for the encoder OpenVINO FP32 and INT8 (SmoothQuant, calibrated on speech
    espeak-ng synthesizes); parity measured on the recorded voices of alsa-utils where installed."""
    from edgesdk.models import whisper

    voices = sorted(Path("/usr/share/sounds/alsa").glob("*.wav"))[:3]
    mels = [{"mel": whisper.log_mel(load_wav(v, RATE))} for v in voices] or None
    calib = [{"mel": whisper.log_mel(a)} for a in _synthesized(CALIBRATION_SPEECH)] or None
    log.warning("Converting Whisper-base into %s (first use, a few minutes)", folder)
    encoder = whisper.whisper_encoder()
    targets = ["onnx", "openvino"] if calib else ["onnx"]
    edgesdk.convert(encoder, encoder.example_inputs, targets=targets, precisions=["fp32", "int8"],
                    out=folder / "encoder", calib=calib, validation=mels, force=True)
    decoder = whisper.whisper_decoder()
    edgesdk.convert(decoder, decoder.example_inputs, targets=["onnx"], precisions=["fp32", "int8"],
                    out=folder / "decoder", validation=_decoder_feeds(encoder, decoder, mels), force=True,
                    dynamic_axes=["tokens:1=tokens"])
    return folder


def _synthesized(texts: list[str]) -> list[np.ndarray]:
    """16 kHz speech of each text by espeak-ng (two voices, two speeds); [] where espeak-ng is missing."""
    import shutil
    import subprocess
    import tempfile

    if shutil.which("espeak-ng") is None:
        return []
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(texts):
            wav = Path(tmp) / f"{i}.wav"
            subprocess.run(["espeak-ng", "-v", "en-us" if i % 2 else "en-gb", "-s", str(140 + 20 * (i % 2)), "-w",
                            str(wav), text], check=True, capture_output=True, timeout=60)
            out.append(load_wav(wav, RATE))
    return out


def _decoder_feeds(encoder: Any, decoder: Any, mels: list[dict[str, np.ndarray]] | None) -> list[dict[str, Any]] | None:
    """The decoder's real inputs: each voice's encoder output with its transcript's prefixes, token by token."""
    import torch

    from edgesdk.models import whisper

    feeds = []
    with torch.no_grad():
        for mel in mels or []:
            cross_k, cross_v = (x.numpy() for x in encoder(torch.from_numpy(mel["mel"])))
            k, v = torch.from_numpy(cross_k), torch.from_numpy(cross_v)
            text = whisper.greedy_tokens(lambda t, k=k, v=v: decoder(torch.from_numpy(t), k, v).numpy())
            feeds += [{"tokens": np.array([list(whisper.PROMPT) + text[:n]], np.int64), "cross_k": cross_k,
                       "cross_v": cross_v} for n in range(len(text) + 1)]
    return feeds or None


class Transcriber:
    """Whisper-base through two Runtimes: the encoder once per segment, the decoder once per token."""

    def __init__(self, folder: Path, threads: int | None, encoder_precision: str = "auto"):
        from edgesdk.models import whisper

        self.whisper = whisper
        self.encoder = edgesdk.Runtime(folder / "encoder", threads=threads, precision=encoder_precision)
        self.decoder = edgesdk.Runtime(folder / "decoder", threads=threads)
        self.tokenizer = whisper.tokenizer()

    def __call__(self, audio: np.ndarray, latency: edgesdk.LatencyLog) -> str:
        with latency.stage("mel"):
            mel = self.whisper.log_mel(audio)
        with latency.stage("asr_encoder"):
            cross_k, cross_v = self.encoder.run(mel)
        with latency.stage("asr_decoder"):
            tokens = self.whisper.greedy_tokens(
                lambda t: self.decoder.run({"tokens": t, "cross_k": cross_k, "cross_v": cross_v}))
        return self.tokenizer.decode(tokens).strip()

    def describe(self) -> str:
        return f"ASR encoder {self.encoder.artifact.id} / decoder {self.decoder.artifact.id} on {self.encoder.backend}"

    def close(self) -> None:
        self.encoder.close()
        self.decoder.close()


def transcribe_segments(audio: np.ndarray, segments: list[tuple[float, float]], asr: Transcriber,
                        latency: edgesdk.LatencyLog, name: str, pad_s: float = 0.2) -> list[dict[str, Any]]:
    """Each speech segment (with pad_s of audio either side, at most 30 s) as text."""
    out = []
    for start, end in segments:
        a, b = max(0, int((start - pad_s) * RATE)), min(len(audio), int((end + pad_s) * RATE))
        with latency.sample(audio_s=(b - a) / RATE, input=name, segment=[round(start, 2), round(end, 2)]):
            text = asr(audio[a:b][:30 * RATE], latency)
        out.append({"start": round(start, 2), "end": round(end, 2), "text": text})
    return out


class VoiceActivity:
    """silero-vad over a stream: speech probability per chunk, segments by hysteresis (start above 0.5,
    end after 100 ms below 0.35, segments shorter than 250 ms dropped), as silero's own utilities do."""

    def __init__(self, rt: edgesdk.Runtime, start: float = 0.5, end: float = 0.35, min_speech_s: float = 0.25,
                 min_silence_s: float = 0.1):
        self.rt, self.start, self.end = rt, start, end
        self.min_speech, self.min_silence = min_speech_s, min_silence_s
        self.state = np.zeros((2, 1, 128), np.float32)
        self.context = np.zeros(CONTEXT, np.float32)
        self.segments: list[tuple[float, float]] = []
        self._open: float | None = None
        self._quiet_since: float | None = None

    def prob(self, chunk: np.ndarray) -> float:
        x = np.concatenate([self.context, chunk])[None].astype(np.float32)
        prob, self.state = self.rt.run([x, self.state])
        self.context = chunk[-CONTEXT:]
        return float(np.asarray(prob).ravel()[0])

    def update(self, p: float, t: float) -> None:
        """Feed the probability of the chunk that ends at time t (seconds)."""
        chunk_s = CHUNK / RATE
        if self._open is None:
            if p >= self.start:
                self._open, self._quiet_since = t - chunk_s, None
            return
        if p < self.end:
            self._quiet_since = self._quiet_since if self._quiet_since is not None else t - chunk_s
            if t - self._quiet_since >= self.min_silence:
                self._close(self._quiet_since)
        else:
            self._quiet_since = None

    def _close(self, t: float) -> None:
        if self._open is not None and t - self._open >= self.min_speech:
            self.segments.append((round(self._open, 3), round(t, 3)))
        self._open, self._quiet_since = None, None

    def finish(self, t: float) -> None:
        self._close(self._quiet_since if self._quiet_since is not None else t)


@dataclass
class WakeWord:
    """One microWakeWord model: int8 TFLite through the Runtime, stride 3 feature frames per call,
    a sliding-window mean of the probability against the model's own cutoff, 1 s refractory."""

    name: str
    path: Path
    threads: int | None
    cutoff: float
    window: int
    stride: int = 3
    frames: list[np.ndarray] = field(default_factory=list)
    probs: deque = field(default_factory=deque)
    detections: list[float] = field(default_factory=list)
    last: float = -10.0
    rt: Any = None

    def reset(self) -> None:
        """A fresh stream: streaming wake-word models keep their state inside the interpreter."""
        if self.rt is not None:
            self.rt.close()
        self.rt = edgesdk.Runtime(self.path, threads=self.threads)
        self.frames.clear()
        self.probs.clear()
        self.detections.clear()
        self.last = -10.0

    def feed(self, feature: np.ndarray, t: float) -> None:
        self.frames.append(feature)
        if len(self.frames) < self.stride:
            return
        x = np.concatenate(self.frames, axis=1).astype(np.float32)
        self.frames.clear()
        self.probs.append(float(np.asarray(self.rt.run(x)).ravel()[0]))
        while len(self.probs) > self.window:
            self.probs.popleft()
        if len(self.probs) == self.window and float(np.mean(self.probs)) > self.cutoff and t - self.last > 1.0:
            self.detections.append(round(t, 3))
            self.last = t
            self.probs.clear()


def load_wake_words(names: list[str], threads: int | None) -> list[WakeWord]:
    models = zoo.wake_word_models()
    words = []
    for name in names:
        if name not in models:
            raise edgesdk.InputError(f"Unknown wake word '{name}'; the installed models are {', '.join(models)}.")
        path, config = models[name]
        micro = config["micro"]
        word = WakeWord(name, path, threads, float(micro["probability_cutoff"]), int(micro["sliding_window_size"]))
        word.reset()
        word.stride = int(word.rt.inputs[0].shape[1])
        words.append(word)
    return words


def process(audio: np.ndarray, vad: edgesdk.Runtime, words: list[WakeWord], latency: edgesdk.LatencyLog,
            name: str = "", asr: Transcriber | None = None) -> dict[str, Any]:
    """Stream 16 kHz float32 audio chunk by chunk; return speech segments and wake-word detections (s)."""
    from pymicro_features import MicroFrontend

    frontend = MicroFrontend()
    activity = VoiceActivity(vad)
    for w in words:
        w.reset()
    pending = b""
    n_chunks = len(audio) // CHUNK
    for i in range(n_chunks):
        chunk = audio[i * CHUNK:(i + 1) * CHUNK]
        t = (i + 1) * CHUNK / RATE
        with latency.sample(audio_s=CHUNK / RATE, input=name, t=round(t, 3)):
            with latency.stage("features"):
                pending += to_pcm16(chunk).tobytes()
                features = []
                while len(pending) >= 320:  # 10 ms of 16-bit audio per front-end step
                    result = frontend.process_samples(pending[:320])
                    pending = pending[max(2, 2 * result.samples_read):]
                    if result.features:
                        features.append(np.asarray(result.features, np.float32).reshape(1, 1, -1))
            with latency.stage("vad"):
                activity.update(activity.prob(chunk), t)
            with latency.stage("wakeword"):
                for f in features:
                    for w in words:
                        w.feed(f, t)
    activity.finish(n_chunks * CHUNK / RATE)
    result = {"input": name, "seconds": round(len(audio) / RATE, 3), "speech": activity.segments,
              "wake_words": {w.name: list(w.detections) for w in words}}
    if asr is not None:
        result["transcripts"] = transcribe_segments(audio, activity.segments, asr, latency, name)
    return result


def _line(r: dict[str, Any]) -> str:
    speech = ", ".join(f"{a:.2f}-{b:.2f}s" for a, b in r["speech"]) or "none"
    wake = ", ".join(f"{w} at {', '.join(f'{t:.2f}s' for t in ts)}" for w, ts in r["wake_words"].items() if ts) or "none"
    said = "".join(f"; \"{t['text']}\"" for t in r.get("transcripts", []))
    return f"{r['input']} ({r['seconds']:.2f} s): speech {speech}; wake words {wake}{said}"


def _audio_sources(args: argparse.Namespace, results: list[dict[str, Any]]) -> list[tuple[str, np.ndarray]]:
    """(name, 16 kHz audio) for the microphone and each readable file; unreadable ones go to results."""
    sources: list[tuple[str, np.ndarray]] = [("microphone", record(args.mic))] if args.mic else []
    for path in args.inputs:
        try:
            sources.append((path, load_wav(path, RATE)))
        except edgesdk.InputError as exc:
            results.append({"input": path, "error": str(exc)})
    return sources


def main(argv: list[str] | None = None) -> int:
    ap = app_parser("apps.speech", __doc__, DEFAULT_VAD, "build/speech-latency.jsonl")
    ap.add_argument("inputs", nargs="*", help="WAV files (any rate; resampled to 16 kHz)")
    ap.add_argument("--vad", dest="model", help="the same as --model: a silero-vad bundle or model file (built on first use)")
    ap.add_argument("--wake-word", default="okay_nabu,alexa", help="comma-separated pymicro-wakeword models")
    ap.add_argument("--mic", type=float, help="record this many seconds from the microphone (needs sounddevice)")
    ap.add_argument("--transcribe", action="store_true", help="transcribe each speech segment with Whisper-base")
    ap.add_argument("--asr", default=DEFAULT_ASR, help="folder of the Whisper encoder and decoder bundles (built on "
                    "first use)")
    ap.add_argument("--asr-precision", default="auto", help="the encoder's precision: auto runs what passed parity "
                    "(FP32 today: INT8's K/V cosine is 0.986-0.988), int8 runs it anyway (2.5x faster on OpenVINO)")
    ap.set_defaults(threads=1)  # small models: one thread per model is fastest
    args = ap.parse_args(argv)
    if not args.inputs and not args.mic:
        ap.error("give WAV files or --mic SECONDS")

    def body() -> list[dict[str, Any]]:
        if not Path(args.model).exists() and args.model == DEFAULT_VAD:
            build_vad_bundle(Path(args.model))
        words = load_wake_words([w for w in args.wake_word.split(",") if w], args.threads)
        asr = None
        if args.transcribe:
            if not (Path(args.asr) / "decoder").exists() and args.asr == DEFAULT_ASR:
                build_asr_bundles(Path(args.asr))
            asr = Transcriber(Path(args.asr), None if args.threads == 1 else args.threads, args.asr_precision)
        try:
            with open_runtime(args) as vad, \
                    edgesdk.LatencyLog(args.log, name=f"speech: VAD {vad.artifact.id} on {vad.backend}, wake words on "
                                                      f"{words[0].rt.backend if words else '-'}"
                                                      + (f", {asr.describe()}" if asr else ""),
                                       inference_stages=("vad", "wakeword", "asr_encoder", "asr_decoder")) as latency:
                results: list[dict[str, Any]] = []
                for name, audio in _audio_sources(args, results):
                    results.append(process(audio, vad, words, latency, name, asr))
                print_results(results, latency, args.json, _line, {})
        finally:
            if asr is not None:
                asr.close()
        return results
    return run_app(body)


def record(seconds: float) -> np.ndarray:
    try:
        import sounddevice
    except ImportError:
        raise edgesdk.BackendUnavailable("--mic needs sounddevice (pip install sounddevice) and an input device.") from None
    try:
        audio = sounddevice.rec(int(seconds * RATE), samplerate=RATE, channels=1, dtype="float32")
        sounddevice.wait()
    except Exception as exc:  # noqa: BLE001 - PortAudio raises its own types
        raise edgesdk.InputError(f"Cannot record from the microphone: {exc}") from None
    return audio[:, 0]


if __name__ == "__main__":
    sys.exit(main())
