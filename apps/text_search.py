"""Semantic search on-device: sentence embeddings of a small corpus and of each query with an edgesdk
text bundle (all-MiniLM-L6-v2 by default), the corpus ranked by cosine, latency logged per stage.

    python -m apps.text_search "who fixed the boat?" ["another query"] [--model build/minilm]
        [--corpus sentences.txt] [--top-k 3] [--log build/text-latency.jsonl] [--json]

Stages per query: tokenize (the bundle's tokenizer.json, `tokenizers` only), infer (Runtime.run on the
token ids), pool (masked mean and unit length in numpy), search (one matrix product over the corpus)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

import edgesdk
from apps.common import app_parser, open_runtime, positive_int, print_results, run_app
from edgesdk.tasks.text import mean_pool

DEFAULT_MODEL = "build/minilm"
CORPUS = ["The old fisherman repaired the wooden boat before sunrise.", "A young engineer measured the garden fence.",
          "The city council argued about the quarterly budget.", "My neighbour's cat slept on a stack of letters.",
          "Two hikers photographed the mountain trail during the storm.", "The school choir wrote a song about the "
          "new library.", "A tired nurse borrowed a broken bicycle.", "The museum guide sold an ancient map."]


def build_bundle(out: Path) -> Path:
    """Convert all-MiniLM-L6-v2 (first use): ONNX and OpenVINO FP32 + INT8, dynamic batch and sequence."""
    from edgesdk.models import zoo

    model = zoo.minilm()
    edgesdk.convert(model, model.example_inputs, targets=["onnx", "openvino"], precisions=["fp32", "int8"], out=out,
                    dynamic_batch=True, dynamic_axes=["input_ids:1=sequence", "attention_mask:1=sequence"],
                    validation=[{k: v for k, v in model.example_inputs.items()}], force=True)
    return out


def embed(rt: edgesdk.Runtime, texts: list[str], latency: edgesdk.LatencyLog) -> np.ndarray:
    """Unit-length sentence embeddings, one row per text, each stage timed; one text at a time for a model
    converted with a fixed batch of one."""
    if len(texts) > 1 and rt.inputs[0].shape[0] == 1:
        return np.concatenate([embed(rt, [t], latency) for t in texts])
    with latency.stage("tokenize"):
        feeds = rt.tokenize(texts)
    with latency.stage("infer"):
        states = rt.run(feeds)
    with latency.stage("pool"):
        return mean_pool(states, feeds["attention_mask"])


def search(rt: edgesdk.Runtime, queries: list[str], corpus: list[str], top: int, latency: edgesdk.LatencyLog
           ) -> list[dict[str, Any]]:
    with latency.sample(input="corpus", texts=len(corpus)):
        index = embed(rt, corpus, latency)
    results = []
    for query in queries:
        with latency.sample(input=query):
            vector = embed(rt, [query], latency)[0]
            with latency.stage("search"):
                scores = index @ vector
                best = np.argsort(-scores)[:top]
        results.append({"input": query, "matches": [{"text": corpus[i], "score": round(float(scores[i]), 4)}
                                                    for i in best]})
    return results


def main(argv: list[str] | None = None) -> int:
    ap = app_parser("apps.text_search", __doc__, DEFAULT_MODEL, "build/text-latency.jsonl")
    ap.add_argument("inputs", nargs="+", help="queries")
    ap.add_argument("--corpus", help="a text file, one sentence per line (default: eight built-in sentences)")
    ap.add_argument("--top-k", type=positive_int, default=3)
    args = ap.parse_args(argv)

    def body() -> list[dict[str, Any]]:
        corpus = CORPUS if not args.corpus else [line.strip() for line in Path(args.corpus).read_text().splitlines()
                                                 if line.strip()]
        if not Path(args.model).exists() and args.model == DEFAULT_MODEL:
            build_bundle(Path(args.model))
        with open_runtime(args) as rt, \
                edgesdk.LatencyLog(args.log, name=f"text search: {rt.artifact.id} on {rt.backend}") as latency:
            results = search(rt, args.inputs, corpus, args.top_k, latency)
            print_results(results, latency, args.json,
                          lambda r: f"{r['input']!r}: " + "; ".join(f"{m['score']:.3f} {m['text']}" for m in r["matches"]),
                          {"model": str(args.model), "artifact": rt.artifact.id, "backend": rt.backend})
        return results
    return run_app(body)


if __name__ == "__main__":
    sys.exit(main())
