"""Distilling a transformer for the edge: all-MiniLM-L6-v2 (6 layers) teaches a 3-layer student on
unlabelled sentences (edgesdk.optimize.distill, loss="hidden"), then both go through edgesdk.convert
(ONNX FP32 and INT8 by the transformer recipe) and are measured the same way.

    python -m examples.distill_minilm [--sentences 1500] [--epochs 4] [--json build/distill_minilm.json]

The student starts from every other teacher layer (DistilBERT's initialisation) and learns the teacher's
token states and sentence embeddings on unlabelled text: generated sentences (edgesdk.models.zoo.sample_sentences)
and nine in ten of the standard library's docstring sentences (edgesdk.models.zoo.docstring_sentences). Rows:
teacher and student, FP32 and INT8: parameters, ONNX size, p50 latency at sequence 128 / batch 1 / 2
threads (interleaved rounds through edgesdk.Runtime), and the cosine of each sentence embedding to the
teacher FP32's on three held-out sets: generated sentences, the tenth of the docstrings left out, and
hand-written sentences of yet another style."""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

import edgesdk
from edgesdk.models import zoo
from edgesdk.optimize import distill
from edgesdk.running.timing import interleaved_rounds
from edgesdk.tasks.text import Tokenizer, mean_pool, tokenizer_file

SEQUENCE = ["input_ids:1=sequence", "attention_mask:1=sequence"]
OTHER_STYLE = ["open the garage door", "what is the weather like tomorrow", "call my sister on her mobile phone",
               "set an alarm for seven thirty", "How far is the nearest train station from here?",
               "The quarterly report is due on Friday.", "Remind me to buy milk after work.",
               "She plays the violin in the city orchestra."]


def half_the_layers(teacher: Any, keep: tuple[int, ...] = (1, 3, 5)) -> Any:
    """A student: the teacher with only the kept encoder layers (weights copied)."""
    student = copy.deepcopy(teacher)
    layers = student.bert.encoder.layer
    student.bert.encoder.layer = torch.nn.ModuleList(layers[i] for i in keep)
    student.bert.config.num_hidden_layers = len(keep)
    return student


def embeddings(model: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        states = model(*(torch.from_numpy(feeds[n]) for n in ("input_ids", "attention_mask"))).numpy()
    return mean_pool(states, feeds["attention_mask"])


def train(student: Any, teacher: Any, tok: Tokenizer, sentences: list[str], epochs: int) -> Any:
    batches = [tok(sentences[i:i + 16]) for i in range(0, len(sentences), 16)]

    def stream() -> Any:
        for b in batches:
            yield {"input_ids": torch.from_numpy(b["input_ids"]), "attention_mask": torch.from_numpy(b["attention_mask"])}, None

    return distill(student, teacher, stream, epochs=epochs, lr=1e-4, loss="hidden", progress=False)


def measure(models: dict[str, Any], tok: Tokenizer, work: Path, threads: int) -> dict[str, dict[str, Any]]:
    """Convert each model (ONNX FP32 + INT8) and measure its rows."""
    held_out = {"generated": tok(zoo.sample_sentences(64, seed=4242)),
                "docstrings": tok(zoo.docstring_sentences()[::10][:64]), "hand-written": tok(OTHER_STYLE)}
    reference = {k: embeddings(models["teacher"], f) for k, f in held_out.items()}
    long_feed = tok(" ".join(zoo.sample_sentences(12, seed=7)), length=128)
    rows: dict[str, dict[str, Any]] = {}
    runners = {}
    for name, model in models.items():
        bundle = edgesdk.convert(model, model.example_inputs, targets=["onnx"], precisions=["fp32", "int8"],
                                 out=work / name, dynamic_batch=True, dynamic_axes=SEQUENCE, force=True)
        params = sum(p.numel() for p in model.parameters())
        for art in bundle.artifacts:
            rt = edgesdk.Runtime(bundle.path, artifact=art.id, threads=threads)
            key = f"{name} {art.precision}"
            cos = {k: float(np.mean((mean_pool(rt.run(f), f["attention_mask"]) * reference[k]).sum(1)))
                   for k, f in held_out.items()}
            rows[key] = {"params": params, "onnx_mb": art.size_bytes / 1e6, "cosine_to_teacher": cos}
            runners[key] = lambda rt=rt: rt.run(long_feed)
    per_round = interleaved_rounds(runners, rounds=5, runs=10, warmup=2)
    for key, ms in per_round.items():
        rows[key]["p50_ms_seq128"] = float(np.median(ms))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sentences", type=int, default=1000, help="generated sentences (besides the docstrings)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    teacher = zoo.minilm()
    tok = Tokenizer(tokenizer_file(zoo.minilm_folder()), {"inputs": {"input_ids": "ids", "attention_mask": "attention_mask"}})
    student = half_the_layers(teacher)
    check = tok(zoo.sample_sentences(64, seed=4242))
    before = float(np.mean((embeddings(student, check) * embeddings(teacher, check)).sum(1)))
    docs = [d for i, d in enumerate(zoo.docstring_sentences()) if i % 10]
    text = zoo.sample_sentences(args.sentences, seed=31) + docs
    np.random.default_rng(0).shuffle(text)
    student = train(student, teacher, tok, text, args.epochs)
    student.example_inputs = teacher.example_inputs
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure({"teacher": teacher, "student": student}, tok, Path(tmp), args.threads)
    sys.stdout.write(f"student (layers 1, 3, 5 of 6) before distillation: cosine to the teacher {before:.4f}\n")
    sys.stdout.write(f"{'model':18s} {'params':>11s} {'ONNX MB':>8s} {'p50 ms':>7s}   cosine to the teacher on "
                     "held-out: generated / docstrings / hand-written\n")
    for key, r in rows.items():
        c = r["cosine_to_teacher"]
        sys.stdout.write(f"{key:18s} {r['params']:11,d} {r['onnx_mb']:8.1f} {r['p50_ms_seq128']:7.2f}   "
                         f"{c['generated']:.4f} / {c['docstrings']:.4f} / {c['hand-written']:.4f}\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"before_distillation_cosine": before, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
