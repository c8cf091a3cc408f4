"""edgesdk.optimize: measure_cost and Conv+BN fusion on real torch models (issue 8, first parts)."""

import json

import pytest
import torch

import edgesdk
from edgesdk.core.errors import ConversionError
from edgesdk.optimize import fuse_conv_bn, measure_cost
from tests.models import tiny_cnn
from tests.test_cli import cli


def test_profile_counts_params_flops_and_layers():
    model = tiny_cnn()
    p = measure_cost(model, torch.zeros(1, 3, 32, 32))
    assert p.params == sum(x.numel() for x in model.parameters())
    assert p.flops == sum(layer.flops for layer in p.layers) > 0  # every FLOP belongs to a leaf layer
    convs = [layer for layer in p.layers if layer.type == "Conv2d"]
    # the stem conv: 16 x 3 x 3 x 3 weights over a 16x16 output, 2 FLOPs per multiply-add
    assert convs[0].flops == 2 * 16 * 3 * 9 * 16 * 16 and convs[0].output_shape == [1, 16, 16, 16]
    assert p.top(1)[0].type == "Conv2d" and p.size_bytes > 4 * p.params
    assert p.peak_activation_bytes >= max(layer.output_bytes for layer in p.layers) > 0


def test_fusion_folds_batchnorm_within_1e5_and_exports(tmp_path):
    model = tiny_cnn()
    x = torch.randn(4, 3, 32, 32)
    fused, report = fuse_conv_bn(model, x)
    assert report.batchnorms_before == 3 and report.batchnorms_after == 0 and report.max_abs_error <= 1e-5
    assert measure_cost(fused, x[:1]).params < measure_cost(model, x[:1]).params  # BN's parameters are gone
    bundle = edgesdk.convert(fused, torch.zeros(1, 3, 32, 32), out=tmp_path / "fused")
    assert bundle.artifact("onnx-fp32").parity.max_abs <= 1e-4


def test_fusion_refuses_a_model_it_cannot_trace():
    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                x = -x
            return self.bn(self.conv(x))

    with pytest.raises(ConversionError, match="traceable"):
        fuse_conv_bn(Branchy(), torch.randn(1, 3, 8, 8))


def test_profile_on_the_cli(capsys):
    code, out, err = cli(capsys, "profile", "--factory", "tests.models:tiny_cnn", "--input-shape", "1,3,32,32",
                         "--top", "3")
    assert code == 0, err
    assert "FLOPs" in out and "stem.0" in out
    code, out, err = cli(capsys, "profile", "--factory", "tests.models:tiny_cnn", "--input-shape", "1,3,32,32",
                         "--json")
    assert code == 0 and json.loads(out)["params"] > 0


def test_structured_pruning_shrinks_a_residual_depthwise_model_and_it_exports(tmp_path):
    from edgesdk.optimize import prune_channels

    model = tiny_cnn()  # conv+BN, a depthwise block with a residual add, a linear head
    x = torch.zeros(1, 3, 32, 32)
    before = measure_cost(model, x)
    prune_channels(model, x, ratio=0.5)
    after = measure_cost(model, x)
    assert after.params < 0.5 * before.params and after.flops < 0.5 * before.flops
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)  # the head keeps its 10 classes
    assert model.block[0].groups == model.block[0].in_channels == model.stem[0].out_channels  # depthwise kept consistent
    bundle = edgesdk.convert(model, x, out=tmp_path / "pruned")
    assert bundle.artifact("onnx-fp32").parity.max_abs <= 1e-4


def test_unstructured_pruning_zeroes_weights_but_keeps_shapes():
    from edgesdk.optimize import prune_unstructured, sparsity

    model = tiny_cnn()
    params = sum(p.numel() for p in model.parameters())
    prune_unstructured(model, 0.6, method="l1")
    assert abs(sparsity(model) - 0.6) < 0.02
    assert sum(p.numel() for p in model.parameters()) == params  # same dense tensors: no speed-up by itself
    assert not any("weight_orig" in n for n, _ in model.named_parameters())  # the masks were made permanent


def test_distillation_beats_the_same_student_without_a_teacher():
    import numpy as np
    from sklearn import datasets

    from edgesdk.optimize import distill, fine_tune

    X, y = datasets.load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    order = np.random.default_rng(0).permutation(len(X))
    train, test = order[:1200], order[1200:]
    xtr, ytr, xte, yte = (torch.from_numpy(a) for a in (X[train], y[train], X[test], y[test]))

    def batches(x, labels):
        epoch = {"n": 0}

        def gen():
            g = torch.Generator().manual_seed(epoch["n"])
            epoch["n"] += 1
            perm = torch.randperm(len(x), generator=g)
            for i in range(0, len(perm), 64):
                yield x[perm[i:i + 64]], labels[perm[i:i + 64]]
        return gen

    def student():
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))

    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
                                  torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
                                  torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(256, 10))
    fine_tune(teacher, batches(xtr, ytr), epochs=10, lr=3e-3)
    acc = lambda m: float((m(xte).argmax(1) == yte).float().mean())  # noqa: E731
    # 100 labelled samples; the other 1100 are unlabelled (-1): only the teacher can teach from them.
    alone = fine_tune(student(), batches(xtr[:100], ytr[:100]), epochs=40, lr=3e-3)
    partly = ytr.clone()
    partly[100:] = -1
    taught = distill(student(), teacher, batches(xtr, partly), epochs=40, lr=3e-3, progress=False)
    assert acc(teacher) > 0.97 and acc(taught) > acc(alone) + 0.05, (acc(teacher), acc(alone), acc(taught))


def test_worked_example_table(tmp_path):
    """The digits table (n=597 held-out digits). Accuracy floors sit far below the figures (0.97-0.997 here;
    the 95% Wilson interval of 0.99 at n=597 is +-0.009), so they catch a broken step, not noise. QAT vs PTQ
    is not compared: which wins depends on the CPU's int8 kernels (the figure is in the README). The QAT
    mechanism is asserted instead: every uint8 activation is clipped to 7 bits, so ONNX Runtime's U8S8
    kernels cannot saturate on CPUs without VNNI (full range gave 0.9715 there, 7 bits 0.9966)."""
    import onnx
    from onnx import numpy_helper

    from examples.optimize_digits import run

    rows = {r["model"]: r for r in run(epochs=6, qat_epochs=2, out=tmp_path)}
    base = rows["baseline CNN"]
    for ratio in ("30%", "50%", "70%"):
        pruned = rows[f"pruned {ratio} (structured, fine-tuned)"]
        assert pruned["params"] < base["params"] and pruned["flops"] < base["flops"]
        assert pruned["onnx_bytes"] < base["onnx_bytes"] and pruned["accuracy"] > 0.9
    assert rows["fused Conv+BN"]["accuracy"] == pytest.approx(base["accuracy"], abs=0.002)
    assert rows["student distilled (+1100 unlabelled)"]["accuracy"] > rows["student alone (100 labels)"]["accuracy"]
    for name in ("PTQ INT8 (edgesdk.convert)", "QAT INT8"):
        assert rows[name]["accuracy"] > 0.95, (name, rows[name]["accuracy"])
    graph = onnx.load(str(tmp_path / "qat.int8.onnx")).graph
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"}
    consts.update({i.name: numpy_helper.to_array(i) for i in graph.initializer})
    consts.update({n.output[0]: consts[n.input[0]] for n in graph.node if n.op_type == "Identity"})
    uint8_q = [n.output[0] for n in graph.node if n.op_type == "QuantizeLinear" and consts[n.input[2]].dtype == "uint8"]
    clip_max = {n.input[0]: int(consts[n.input[2]]) for n in graph.node if n.op_type == "Clip"}
    assert uint8_q and all(clip_max.get(q) == 127 for q in uint8_q), (uint8_q, clip_max)


def test_hidden_state_distillation_teaches_a_shallower_encoder():
    """loss="hidden": a 1-layer TinyBert (the teacher's second layer, DistilBERT's initialisation) learns the
    2-layer teacher's token states on unlabelled token batches (dict inputs, padding masked out): its
    sentence embeddings move towards the teacher's."""
    import copy

    import numpy as np

    from edgesdk.core.errors import UsageError
    from edgesdk.optimize import distill
    from tests.models import tiny_bert, token_batches

    teacher = tiny_bert()
    torch.manual_seed(3)
    student = copy.deepcopy(teacher)
    for name in ("qkv", "proj", "norm1", "ffn", "norm2"):
        setattr(student, name, torch.nn.ModuleList([getattr(student, name)[1]]))
    train = [{k: torch.from_numpy(v) for k, v in b.items()} for b in token_batches(64, 16, seed=8)]
    held_out = [{k: torch.from_numpy(v) for k, v in b.items()} for b in token_batches(16, 20, seed=9)]

    def cosine() -> float:
        with torch.no_grad():
            pairs = [(student(**b), teacher(**b), b["attention_mask"][..., None].float()) for b in held_out]
        pooled = [((s * m).sum(1) / m.sum(1), (t * m).sum(1) / m.sum(1)) for s, t, m in pairs]
        return float(np.mean([torch.nn.functional.cosine_similarity(a, b).item() for a, b in pooled]))

    before = cosine()
    distill(student, teacher, lambda: ((b, None) for b in train), epochs=15, lr=2e-3, loss="hidden", progress=False)
    after = cosine()
    assert after > before + 0.05 and after > 0.95, (before, after)
    with pytest.raises(UsageError, match="hidden"):
        distill(student, teacher, lambda: iter(()), loss="mse")
