"""Transformers side by side, in one run, interleaved: all-MiniLM-L6-v2 at sequence 128, batch 1 (torch
eager, ORT FP32 / INT8, OpenVINO FP32 / INT8, with the cosine of each sentence embedding to torch FP32 on
held-out sentences and the latency at each sentence's own length), and the Whisper-base encoder (torch
eager, ORT FP32 / INT8, OpenVINO FP32 / INT8: cosine of the cross-attention keys to torch), plus word error
rate and real-time factor of the whole speech recognizer per backend on espeak-ng sentences the model
never saw.

    python benchmarks/compare_text.py [--minilm build/minilm] [--whisper build/whisper-bench] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # apps.speech builds the decoder bundle
from common import interleaved, ratio  # noqa: E402

SEQUENCE = ["input_ids:1=sequence", "attention_mask:1=sequence"]
SENTENCES = ["open the garage door", "what is the weather like tomorrow", "call my sister on her mobile phone",
             "set an alarm for seven thirty", "play the next song", "how far is the nearest train station",
             "turn the volume down a little", "remind me to buy milk after work"]


def build_minilm(folder: Path) -> None:
    import edgesdk
    from edgesdk.models import zoo
    from edgesdk.tasks.text import Tokenizer, tokenizer_file

    model = zoo.minilm()
    tok = Tokenizer(tokenizer_file(zoo.minilm_folder()), {"inputs": {"input_ids": "ids", "attention_mask": "attention_mask"}})
    calib = [tok(s) for s in zoo.sample_sentences(64, seed=1)]
    held_out = [tok(s) for s in zoo.sample_sentences(32, seed=2)]
    edgesdk.convert(model, model.example_inputs, targets=["onnx", "openvino"], precisions=["fp32", "int8"],
                    calib=calib, validation=held_out, out=folder, dynamic_batch=True, dynamic_axes=SEQUENCE, force=True)


def minilm(folder: Path, threads: int, rounds: int, runs: int, optimum: Path | None = None) -> dict[str, Any]:
    import torch

    import edgesdk
    from edgesdk.models import zoo
    from edgesdk.tasks.text import mean_pool

    if not (folder / "edgesdk.json").is_file():
        build_minilm(folder)
    model = zoo.minilm()
    torch.set_num_threads(threads)
    pairs = {"ort-fp32": ("onnx-fp32", "onnxruntime"), "ort-int8": ("onnx-int8", "onnxruntime"),
             "ov-fp32": ("openvino-fp32", "openvino"), "ov-int8": ("openvino-int8", "openvino")}
    runtimes = {k: edgesdk.Runtime(folder, artifact=a, backend=b, threads=threads) for k, (a, b) in pairs.items()}
    any_rt = next(iter(runtimes.values()))
    held_out = zoo.sample_sentences(64, seed=11)
    cosines, mean_cosines = {}, {}
    feeds = any_rt.tokenize(held_out)
    with torch.no_grad():
        ref = mean_pool(model(*(torch.from_numpy(feeds[n]) for n in ("input_ids", "attention_mask"))).numpy(),
                        feeds["attention_mask"])
    for k, rt in runtimes.items():
        got = mean_pool(rt.run(feeds), feeds["attention_mask"])
        cosines[k] = float((got * ref).sum(1).min())
        mean_cosines[k] = float((got * ref).sum(1).mean())
    padded = any_rt.tokenize(held_out[0])
    padded = {n: np.pad(v, ((0, 0), (0, 128 - v.shape[1]))) for n, v in padded.items()}
    padded["input_ids"][:, :] = np.where(padded["attention_mask"] == 1, padded["input_ids"], 0)
    torch_args = [torch.from_numpy(padded[n]) for n in ("input_ids", "attention_mask")]

    def eager() -> None:
        with torch.no_grad():
            model(*torch_args)

    runners = {"torch": eager, **{k: (lambda rt=rt: rt.run(padded)) for k, rt in runtimes.items()}}
    if optimum is not None:  # Optimum's export of the same model, a bare file on the same ONNX Runtime
        opt = edgesdk.Runtime(optimum, backend="onnxruntime", threads=threads)
        extra = {n: np.zeros_like(padded["input_ids"]) for n in opt._input_names if n not in padded}
        opt_feeds = {**padded, **extra}
        got = mean_pool(opt.run({**feeds, **{n: np.zeros_like(feeds["input_ids"]) for n in extra}}), feeds["attention_mask"])
        cosines["optimum-ort-fp32"] = float((got * ref).sum(1).min())
        mean_cosines["optimum-ort-fp32"] = float((got * ref).sum(1).mean())
        runners["optimum-ort-fp32"] = lambda: opt.run(opt_feeds)
    per_round = interleaved(runners, rounds, runs, warmup=3)
    own = [any_rt.tokenize(s) for s in held_out[:16]]
    short = interleaved({k: (lambda rt=rt: [rt.run(f) for f in own]) for k, rt in runtimes.items() if "fp32" in k},
                        rounds, 2, warmup=1)
    return {"ms_seq128": {k: float(np.median(v)) for k, v in per_round.items()},
            "speedup_vs_torch": {k: ratio(per_round, "torch", k) for k in runners if k != "torch"},
            "int8_speedup": {"ort": ratio(per_round, "ort-fp32", "ort-int8"), "ov": ratio(per_round, "ov-fp32", "ov-int8")},
            "edgesdk_vs_optimum_export": ratio(per_round, "optimum-ort-fp32", "ort-fp32") if optimum else None,
            "min_embedding_cosine_to_torch": cosines, "mean_embedding_cosine_to_torch": mean_cosines,
            "ms_16_sentences_own_length": {k: float(np.median(v)) for k, v in short.items()},
            "mean_tokens": float(np.mean([f["attention_mask"].sum() for f in own])),
            "held_out_sentences": len(held_out)}


def build_whisper(folder: Path) -> None:
    import edgesdk
    from edgesdk.models import whisper

    voices = [_say(s, 140 + 10 * i) for i, s in enumerate(SENTENCES[:3])]
    mels = [{"mel": whisper.log_mel(v)} for v in voices]
    encoder = whisper.whisper_encoder()
    edgesdk.convert(encoder, encoder.example_inputs, targets=["onnx", "openvino"], precisions=["fp32", "int8"],
                    calib=mels, validation=mels, out=folder, force=True)


def _say(text: str, speed: int, voice: str = "en-us") -> np.ndarray:
    from edgesdk.tasks.audio import load_wav

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True)
        return load_wav(path, 16000)


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    """(edit distance in words, reference words), punctuation and case ignored."""
    norm = lambda s: "".join(c if c.isalnum() or c == " " else " " for c in s.lower()).split()  # noqa: E731
    r, h = norm(ref), norm(hyp)
    d = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        prev, d[0] = d[0], i
        for j, hw in enumerate(h, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (rw != hw))
    return d[len(h)], len(r)


def asr(folder: Path, threads: int, rounds: int, runs: int, decoder_folder: Path) -> dict[str, Any]:
    import torch

    import edgesdk
    from edgesdk.models import whisper

    if not (folder / "edgesdk.json").is_file():
        build_whisper(folder)
    torch.set_num_threads(threads)
    encoder = whisper.whisper_encoder()
    mel = whisper.log_mel(_say(SENTENCES[4], 160))
    with torch.no_grad():
        ref_k = encoder(torch.from_numpy(mel))[0].numpy()
    pairs = {"ort-fp32": ("onnx-fp32", "onnxruntime"), "ort-int8": ("onnx-int8", "onnxruntime"),
             "ov-fp32": ("openvino-fp32", "openvino"), "ov-int8": ("openvino-int8", "openvino")}
    runtimes = {k: edgesdk.Runtime(folder, artifact=a, backend=b, threads=threads) for k, (a, b) in pairs.items()}
    cosines = {}
    for k, rt in runtimes.items():
        got = rt.run(mel)[0]
        cosines[k] = float((got.ravel() @ ref_k.ravel()) / (np.linalg.norm(got) * np.linalg.norm(ref_k)))

    def eager() -> None:
        with torch.no_grad():
            encoder(torch.from_numpy(mel))

    per_round = interleaved({"torch": eager, **{k: (lambda rt=rt: rt.run(mel)) for k, rt in runtimes.items()}},
                            rounds, runs, warmup=1)
    decoder = edgesdk.Runtime(decoder_folder, backend="onnxruntime", precision="fp32", threads=threads)
    tok = whisper.tokenizer()
    wer: dict[str, Any] = {}
    voices = [(s, _say(s, 130 + 15 * (i % 4), "en-us" if i % 2 else "en-gb")) for i, s in enumerate(SENTENCES)]
    for k, rt in runtimes.items():
        errors = words = 0
        seconds = audio = 0.0
        for text, wav in voices:
            t0 = time.perf_counter()
            k_, v_ = rt.run(whisper.log_mel(wav))
            hyp = tok.decode(whisper.greedy_tokens(
                lambda t, k_=k_, v_=v_: decoder.run({"tokens": t, "cross_k": k_, "cross_v": v_})))
            seconds += time.perf_counter() - t0
            audio += len(wav) / 16000
            e, n = word_errors(text, hyp)
            errors, words = errors + e, words + n
        wer[k] = {"wer": errors / words, "rtf": seconds / audio}
    return {"encoder_ms": {k: float(np.median(v)) for k, v in per_round.items()},
            "speedup_vs_torch": {k: ratio(per_round, "torch", k) for k in runtimes},
            "cross_k_cosine_to_torch": cosines, "recognizer_by_encoder_artifact": wer,
            "sentences": len(voices), "decoder": f"{decoder.artifact.id} on {decoder.backend}"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minilm", default="build/minilm")
    ap.add_argument("--whisper", default="build/whisper-bench")
    ap.add_argument("--decoder", default="build/whisper/decoder", help="the speech app's decoder bundle")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--optimum", help="an Optimum export of all-MiniLM-L6-v2 (model.onnx) to time beside edgesdk's")
    ap.add_argument("--only", choices=("minilm", "whisper"), help="run one half")
    ap.add_argument("--json")
    args = ap.parse_args()
    report: dict[str, Any] = {"threads": args.threads}
    if args.only != "whisper":
        report["minilm"] = minilm(Path(args.minilm), args.threads, args.rounds, args.runs,
                                  Path(args.optimum) if args.optimum else None)
    if args.only != "minilm":
        if not Path(args.decoder, "edgesdk.json").is_file():
            from apps.speech import build_asr_bundles

            build_asr_bundles(Path(args.decoder).parent)
        report["whisper_encoder"] = asr(Path(args.whisper), args.threads, args.rounds, max(3, args.runs // 5),
                                        Path(args.decoder))
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
