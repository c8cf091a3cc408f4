"""Any output structure in, flat named outputs out (issue 28, part 1): tuples, dicts, ModelOutput-like
dataclasses, nested lists and None entries are flattened in forward's order with names from their paths;
outputs= keeps the named ones; inputs may be keyword-only, a dict that skips a parameter, mixed dtypes;
a source that raises says where. The every-backend round trip is in test_backend_conformance.py."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

import edgesdk
from edgesdk.conversion.sources import from_module
from edgesdk.conversion.structure import flatten_named
from edgesdk.core.errors import ConversionError, InputError


@dataclass
class Output:  # what transformers' ModelOutput looks like to edgesdk (it is also a Mapping)
    logits: torch.Tensor
    hidden: tuple[torch.Tensor, ...]
    attentions: torch.Tensor | None = None


class Detector(nn.Module):
    """Returns Ultralytics' eval layout: (predictions, {"boxes", "scores", "feats": [three maps]})."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 6, 1)

    def forward(self, x: torch.Tensor, *, gain: torch.Tensor) -> tuple:
        f = torch.relu(self.conv(x)) * gain.float().view(1, 1, 1, 1)
        p = self.head(f).flatten(2)
        feats = [f, nn.functional.avg_pool2d(f, 2), nn.functional.avg_pool2d(f, 4)]
        return p, {"boxes": p[:, :4], "scores": p[:, 4:].sigmoid(), "feats": feats, "aux": None}


def test_names_follow_the_path_to_each_tensor():
    t = torch.zeros(1)
    assert [n for n, _ in flatten_named(t)] == ["output"]
    assert [n for n, _ in flatten_named((t, [t, t]))] == ["output0", "output1.0", "output1.1"]
    assert [n for n, _ in flatten_named((t, {"boxes": t, "feats": [t, t], "none": None}))] == \
        ["output0", "boxes", "feats.0", "feats.1"]
    assert [n for n, _ in flatten_named(Output(t, (t, t)))] == ["logits", "hidden.0", "hidden.1"]
    assert [n for n, _ in flatten_named(OrderedDict(last_hidden_state=t, pooler_output=t))] == \
        ["last_hidden_state", "pooler_output"]
    assert [n for n, _ in flatten_named({"a": t, "b": {"a": t}, "c": 3})] == ["a", "b.a"]  # 3: not a tensor


def test_a_keyword_only_input_and_a_structured_output_convert_and_select_by_name(tmp_path):
    module = Detector().eval()
    example = {"x": torch.rand(1, 3, 16, 16), "gain": torch.tensor([2])}  # float and int64, one keyword-only
    src = from_module(module, example)
    assert [o.name for o in src.outputs] == ["output0", "boxes", "scores", "feats.0", "feats.1", "feats.2"]
    assert [(i.name, i.dtype) for i in src.inputs] == [("x", "float32"), ("gain", "int64")]
    bundle = edgesdk.convert(module, example, targets=["onnx"], out=tmp_path / "b", outputs=["output0", "feats.2"],
                             strict=True)
    assert [o.name for o in bundle.outputs] == ["output0", "feats.2"]
    feeds = {"x": np.random.default_rng(0).random((1, 3, 16, 16), np.float32), "gain": np.array([3], np.int64)}
    with torch.no_grad():
        pred, extra = module(torch.from_numpy(feeds["x"]), gain=torch.from_numpy(feeds["gain"]))
    rt = edgesdk.Runtime(tmp_path / "b")
    got = rt.run_dict(feeds, outputs=["feats.2", "output0"])
    assert list(got) == ["feats.2", "output0"]
    np.testing.assert_allclose(got["output0"], pred.numpy(), atol=1e-4)
    np.testing.assert_allclose(got["feats.2"], extra["feats"][2].numpy(), atol=1e-4)
    with pytest.raises(InputError, match=r"no output named \['boxes'\].*output0"):
        rt.run_dict(feeds, outputs=["boxes"])


def test_a_wrong_output_name_lists_the_names_there_are():
    with pytest.raises(ConversionError, match=r"no output named \['logits'\].*'output0', 'boxes'"):
        from_module(Detector(), {"x": torch.rand(1, 3, 8, 8), "gain": torch.tensor([1])}, outputs=["logits"])


def test_a_dict_example_may_skip_a_parameter():
    class Text(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(50, 8)

        def forward(self, input_ids, attention_mask=None, token_type_ids=None):
            h = self.emb(input_ids)
            return {"last_hidden_state": h if token_type_ids is None else h + token_type_ids[..., None]}

    src = from_module(Text(), {"input_ids": torch.ones(1, 5, dtype=torch.long),
                               "token_type_ids": torch.zeros(1, 5, dtype=torch.long)})
    assert [i.name for i in src.inputs] == ["input_ids", "token_type_ids"]
    assert [o.name for o in src.outputs] == ["last_hidden_state"]
    with pytest.raises(ConversionError, match="not parameters of the model's forward"):
        from_module(Text(), {"input_ids": torch.ones(1, 5, dtype=torch.long), "mask": torch.ones(1, 5)})


def test_a_model_that_raises_says_where_and_blames_the_shape_only_for_a_shape_error():
    class Broken(nn.Module):
        def forward(self, x):
            return x.detach_later()  # the line the message must show

    with pytest.raises(ConversionError) as err:
        from_module(Broken(), torch.rand(1, 3))
    message = str(err.value)
    assert "test_structure.py" in message and "x.detach_later()" in message and "AttributeError" in message
    assert "--input-shape" not in message

    with pytest.raises(ConversionError, match="mat1 and mat2.*check --input-shape"):
        from_module(nn.Linear(5, 2), torch.rand(2, 3))


def test_a_model_that_returns_no_tensor_is_refused():
    class Nothing(nn.Module):
        def forward(self, x):
            return (None, {"a": None})

    with pytest.raises(ConversionError, match="no tensors"):
        from_module(Nothing(), torch.rand(1, 3))


def test_outputs_applies_to_torch_sources_only(tmp_path):
    edgesdk.convert(nn.Linear(3, 2), torch.rand(1, 3), targets=["onnx"], out=tmp_path / "lin")
    with pytest.raises(ConversionError, match="torch"):
        edgesdk.convert(tmp_path / "lin" / "onnx" / "model.onnx", targets=["onnx"], out=tmp_path / "x",
                        outputs=["output"])
