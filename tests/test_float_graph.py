"""NCNN and integer inputs: ncnn's Mat holds 4-byte values with no integer arithmetic, comparison or select,
so a mask's arithmetic is rewritten as float before pnnx (edgesdk/conversion/float_graph.py) and token ids
go to ncnn's Embed as int32. A tiny model with every op transformers' masks use: ids != padding, a
cumsum of it as positions (RoBERTa), a causal triangle, And/Or/Not/==/>, masked_fill with finfo.min,
where."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgesdk
from edgesdk.conversion import float_graph
from edgesdk.core.errors import ConversionError, InputError

SEQ, VOCAB = 12, 50


class MaskedTiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.words = torch.nn.Embedding(VOCAB, 8, padding_idx=1)
        self.positions = torch.nn.Embedding(SEQ + 2, 8)
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        keep = input_ids.ne(1).int()
        h = self.words(input_ids) + self.positions(torch.cumsum(keep, dim=1) * keep + 1)
        seq = torch.arange(input_ids.shape[1])
        allowed = (seq[None, :] <= seq[:, None])[None] & attention_mask.bool()[:, None, :]
        allowed = allowed | (attention_mask[:, None, :] == 2)  # never true: Or and Equal on the data
        scores = (h @ h.transpose(1, 2)).masked_fill(~allowed, torch.finfo(torch.float32).min)
        h = torch.softmax(scores, -1) @ h
        return self.proj(torch.where((attention_mask > 0)[:, :, None], h, torch.zeros_like(h)))


def _feeds(seed: int, padding: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((1, SEQ), np.int64)
    if padding:
        mask[:, -padding:] = 0
    ids = rng.integers(2, VOCAB, (1, SEQ)).astype(np.int64)
    ids[mask == 0] = 1  # padding ids where the mask is off, as a tokenizer pads
    return {"input_ids": ids, "attention_mask": mask}


def _want(module: torch.nn.Module, feeds: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return module(**{k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()


def test_the_rewrite_leaves_no_integer_data_and_computes_the_same(tmp_path):
    import onnx

    from edgesdk.conversion.onnx_tools import save_slim

    feeds = _feeds(0)
    torch.onnx.export(MaskedTiny().eval(), tuple(torch.from_numpy(v) for v in feeds.values()),
                      str(tmp_path / "m.onnx"), input_names=list(feeds), output_names=["out"], dynamo=False)
    save_slim(onnx.load(str(tmp_path / "m.onnx")), tmp_path / "folded.onnx")
    folded = onnx.load(str(tmp_path / "folded.onnx"))
    assert float_graph.token_inputs(folded) == ["input_ids"]
    before = {n.op_type for n in folded.graph.node}
    assert {"Cast", "Where", "And", "Not", "CumSum"} <= before  # the ops the rewrite is for are there
    save_slim(float_graph.to_float_arithmetic(folded), tmp_path / "float.onnx")
    rewritten = onnx.load(str(tmp_path / "float.onnx"))
    assert not {n.op_type for n in rewritten.graph.node} & {"Cast", "Where", "And", "Or", "Not", "Equal", "Less",
                                                             "Greater", "LessOrEqual", "CumSum", "IsNaN"}
    assert float_graph.float_inputs(rewritten) == {"input_ids": "int64", "attention_mask": "float32"}
    samples = [_feeds(s, padding=p) for s, p in ((1, 0), (2, 3), (3, 7))]
    assert float_graph.check_equivalent(tmp_path / "m.onnx", tmp_path / "float.onnx", samples) < 1e-5


@pytest.fixture(scope="module")
def tiny_ncnn(tmp_path_factory):
    out = tmp_path_factory.mktemp("ncnn") / "tiny"
    module = MaskedTiny().eval()
    example = {k: torch.from_numpy(v) for k, v in _feeds(0).items()}
    edgesdk.convert(module, example, targets=["ncnn"], precisions=["fp32", "fp16"], out=out, strict=True)
    return module, out


def test_a_masked_token_model_runs_on_ncnn_as_its_source(tiny_ncnn):
    """Padded masks never seen at conversion (n=3 paddings): FP32 within 1e-4 of the source, and FP16
    within 1e-2 (the -1e4 fill holds in fp16 where finfo.min does not)."""
    module, out = tiny_ncnn
    for artifact, atol in (("ncnn-fp32", 1e-4), ("ncnn-fp16", 1e-2)):
        with edgesdk.Runtime(out, artifact=artifact) as rt:
            for seed, padding in ((5, 0), (6, 4), (7, 9)):
                feeds = _feeds(seed, padding)
                np.testing.assert_allclose(rt.run_all(feeds)[0], _want(module, feeds), atol=atol, err_msg=artifact)


def test_ncnn_refuses_ids_its_int32_blob_cannot_hold(tiny_ncnn):
    _, out = tiny_ncnn
    feeds = _feeds(0)
    feeds["input_ids"][0, 0] = 2**31
    with edgesdk.Runtime(out, artifact="ncnn-fp32") as rt, pytest.raises(InputError, match="2147483648 or more"):
        rt.run_all(feeds)


def test_integer_arithmetic_that_is_not_a_mask_is_refused_not_rewritten_wrong(tmp_path):
    """ids // 3 is integer division: as float it would be ids / 3. The rewrite's check on ONNX Runtime
    catches the difference; NCNN says so and writes nothing."""

    class Halves(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.words = torch.nn.Embedding(VOCAB, 4)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.words(input_ids) * (input_ids // 3).unsqueeze(-1).float()

    example = torch.from_numpy(_feeds(0)["input_ids"])
    with pytest.raises(ConversionError, match="changed its outputs"):
        edgesdk.convert(Halves().eval(), example, targets=["ncnn"], out=tmp_path / "h", strict=True)
    assert not (tmp_path / "h").exists()


def test_a_first_layer_that_works_in_place_on_the_input_runs_on_ncnn(tmp_path):
    """ncnn.Mat(array) borrows numpy's memory; ncnn's in-place Abs on it segfaulted the caller's process.
    The backend hands ncnn a copy of its own."""

    class AbsFirst(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.abs(x) * 2.0

    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    edgesdk.convert(AbsFirst().eval(), torch.from_numpy(x), targets=["ncnn"], out=tmp_path / "a", strict=True)
    with edgesdk.Runtime(tmp_path / "a", artifact="ncnn-fp32") as rt:
        np.testing.assert_allclose(rt.run_all({"input": x})[0], np.abs(x) * 2.0, atol=1e-6)


def _one_node_model(tmp_path, node, inputs, output, consts=()):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, n) for n, v in consts])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.save(model, str(tmp_path / "one.onnx"))
    return model


def _run(model_or_path, feeds):
    import onnxruntime as ort

    data = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.mark.parametrize("sign", [1, -1])
def test_a_relative_position_gather_becomes_a_relative_shift(tmp_path, sign):
    """DeBERTa's c2p/p2c: GatherElements by an index that depends on k - q only, log-bucketed far from the
    diagonal; ncnn has no GatherElements. The rewrite has none either and gives the same values exactly."""
    from onnx import helper

    from edgesdk.conversion.pnnx_rewrites import rewrite_for_pnnx

    heads, rows, width = 3, 7, 16
    q, k = np.indices((rows, rows))
    rel = sign * (k - q)
    bucket = np.where(np.abs(rel) > 3, np.sign(rel) * (3 + np.log2(np.abs(rel)).astype(np.int64)), rel)
    index = np.broadcast_to(bucket + width // 2, (heads, rows, rows)).astype(np.int64)
    node = helper.make_node("GatherElements", ["x", "i"], ["y"], axis=-1)
    model = _one_node_model(tmp_path, node, [("x", [heads, rows, width])], "y", [("i", index)])
    rewrite_for_pnnx(model)
    assert "GatherElements" not in {n.op_type for n in model.graph.node}
    x = np.random.default_rng(0).standard_normal((heads, rows, width)).astype(np.float32)
    np.testing.assert_array_equal(_run(model, {"x": x}), np.take_along_axis(x, index, axis=-1))


def test_a_gather_by_an_index_that_is_not_relative_is_left_alone(tmp_path):
    from onnx import helper

    from edgesdk.conversion.pnnx_rewrites import rewrite_for_pnnx

    index = np.random.default_rng(0).integers(0, 8, (2, 5, 5)).astype(np.int64)
    node = helper.make_node("GatherElements", ["x", "i"], ["y"], axis=-1)
    model = _one_node_model(tmp_path, node, [("x", [2, 5, 8])], "y", [("i", index)])
    rewrite_for_pnnx(model)
    assert [n.op_type for n in model.graph.node] == ["GatherElements"]


def test_a_mean_over_the_last_axis_becomes_a_matmul(tmp_path):
    """pnnx writes ReduceMean over the last axis (an RMSNorm) as an ncnn Reduction over no axes."""
    from onnx import helper

    from edgesdk.conversion.pnnx_rewrites import rewrite_for_pnnx

    node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=1)
    model = _one_node_model(tmp_path, node, [("x", [1, 6, 10])], "y", [("axes", np.array([-1], np.int64))])
    rewrite_for_pnnx(model)
    assert [n.op_type for n in model.graph.node] == ["MatMul"]
    x = np.random.default_rng(0).standard_normal((1, 6, 10)).astype(np.float32)
    np.testing.assert_allclose(_run(model, {"x": x}), x.mean(-1, keepdims=True), rtol=1e-6, atol=1e-7)


def test_the_layers_that_read_token_ids_stay_out_of_fp16(tiny_ncnn):
    """ids lie in their Mat as int32 bits; ncnn on ARM casts a blob to fp16 for a layer with fp16 storage.
    Every layer reading them (Split fan-out, Embed) carries ncnn's feature mask 31=7 (fp32 only)."""
    _, out = tiny_ncnn
    layers = [line.split() for line in (out / "model.fp16.ncnn.param").read_text().splitlines()[2:]]
    readers, carrying = [], {"in0"}
    for f in layers:
        bottoms, tops = f[4:4 + int(f[2])], f[4 + int(f[2]):4 + int(f[2]) + int(f[3])]
        if carrying & set(bottoms):
            readers.append(f)
            carrying.update(tops if f[0] == "Split" else [])
    assert {f[0] for f in readers} >= {"Embed"}
    assert all("31=7" in f for f in readers)
    assert not any("31=7" in f for f in layers if f not in readers)


def test_torch_exports_vmap_mask_gather_becomes_a_reshape(tmp_path):
    """torch.export builds the padding mask by GatherND over every index of the mask in order; ncnn has no
    GatherND. The rewrite makes it a Reshape, and the Cast/Where around it float."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    index = np.stack(np.meshgrid([0], np.arange(6), indexing="ij"), -1).reshape(1, 1, 1, 6, 2).astype(np.int64)
    nodes = [helper.make_node("Cast", ["mask"], ["b"], to=TensorProto.BOOL),
             helper.make_node("GatherND", ["b", "idx"], ["g"]),
             helper.make_node("Where", ["g", "zero", "fill"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("mask", TensorProto.INT64, [1, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(index, "idx"), numpy_helper.from_array(np.float32(0), "zero"),
                               numpy_helper.from_array(np.float32(-np.inf), "fill")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9),
              str(tmp_path / "m.onnx"))
    rewritten = float_graph.to_float_arithmetic(onnx.load(str(tmp_path / "m.onnx")))
    assert {n.op_type for n in rewritten.graph.node} & {"GatherND", "Cast", "Where"} == set()
    onnx.save(rewritten, str(tmp_path / "f.onnx"))
    mask = np.array([[1, 1, 1, 1, 0, 0]], np.int64)
    got = _run(str(tmp_path / "f.onnx"), {"mask": mask.astype(np.float32)})
    np.testing.assert_array_equal(got, np.where(mask, 0.0, -float_graph.MASK_FILL).reshape(1, 1, 1, 6))


def test_an_embedding_gather_with_its_axis_spelled_out_loses_the_attribute(tmp_path):
    """pnnx makes an ncnn Embed only of a Gather without axis; torch.export writes axis=0."""
    from onnx import helper

    from edgesdk.conversion.pnnx_rewrites import rewrite_for_pnnx

    table = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    node = helper.make_node("Gather", ["table", "ids"], ["y"], axis=0)
    model = _one_node_model(tmp_path, node, [("x", [1])], "y", [("table", table)])
    rewrite_for_pnnx(model)
    assert list(model.graph.node[0].attribute) == []
