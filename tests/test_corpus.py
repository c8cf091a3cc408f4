"""The models users bring (issue 28): Ultralytics YOLOv8n and YOLO11n modules converted straight from
the module to every format with FP32 parity and the detection app running each artifact; eight Hugging
Face families with a dynamic sequence (or batch) axis; timm/torchvision mobile CNNs and hybrids. Random
init and small configs (tests/corpus.py); the full models x formats x precisions table is
benchmarks/coverage.py's."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import edgesdk
from edgesdk.conversion.formats import converters
from edgesdk.core.records import Tolerance
from tests.corpus import CASES, CNN_CASES, TRANSFORMER_CASES, YOLO_SIZE, Case


def _formats() -> list[str]:
    """Every format this machine can make (TensorRT's converter writes the ONNX its device builds from)."""
    return [c.name for c in converters() if c.available()[0]]


def _assert_accepted(bundle) -> None:
    for art in bundle.artifacts:
        ok, why = Tolerance().accepts(art.precision, art.parity)
        assert ok, f"{art.id}: {why}"


@pytest.mark.parametrize("name", ["yolov8n", "yolo11n"])
def test_a_yolo_module_converts_to_every_format_and_the_detect_app_runs_each(name, tmp_path, image_folder, capsys):
    module, example = CASES[name].make()
    bundle = edgesdk.convert(module, example, targets=_formats(), precisions=["fp32"], out=tmp_path / name,
                             outputs=["output0"], task="detection", strict=True)
    assert sorted({a.format for a in bundle.artifacts}) == sorted(_formats())
    assert [o.name for o in bundle.outputs] == ["output0"]
    cells = (YOLO_SIZE // 8) ** 2 + (YOLO_SIZE // 16) ** 2 + (YOLO_SIZE // 32) ** 2
    assert tuple(bundle.outputs[0].shape) == (1, 84, cells)
    _assert_accepted(bundle)

    from apps import detect

    for art in bundle.artifacts:
        if art.format == "tensorrt":  # its engine is built on an NVIDIA device; parity ran on its ONNX
            continue
        capsys.readouterr()
        rc = detect.main([str(image_folder), "--model", str(tmp_path / name), "--artifact", art.id, "--json",
                          "--conf", "0.0", "--max-det", "5", "--log", str(tmp_path / f"{art.id}.jsonl")])
        assert rc == 0, art.id
        results = json.loads(capsys.readouterr().out)
        assert len(results["results"]) == len(list(image_folder.iterdir())), art.id
        assert all(len(r["detections"]) == 5 for r in results["results"]), art.id  # conf 0: max-det boxes


def test_every_yolo_output_keeps_its_name_and_value(tmp_path):
    module, example = CASES["yolov8n"].make()
    bundle = edgesdk.convert(module, example, targets=["onnx"], out=tmp_path / "all", strict=True)
    assert [o.name for o in bundle.outputs] == ["output0", "boxes", "scores", "feats.0", "feats.1", "feats.2"]
    x = np.random.default_rng(1).random(example.shape, np.float32)
    with torch.no_grad():
        pred, extra = module(torch.from_numpy(x))
    got = edgesdk.Runtime(tmp_path / "all").run_dict(x, outputs=["feats.2", "output0"])
    np.testing.assert_allclose(got["feats.2"], extra["feats"][2].numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(got["output0"], pred.numpy(), rtol=1e-3, atol=1e-2)  # boxes are pixels


def _longer(case: Case, example: dict) -> dict:
    """The example at a length (or batch) it was not exported at: the dynamic axis must hold."""
    axes = case.convert_kwargs.get("dynamic_axes")
    if not axes:  # a dynamic batch
        return {k: np.concatenate([v.numpy()] * 3) for k, v in example.items()}
    rng = np.random.default_rng(2)
    out = {}
    for k, v in example.items():
        shape = list(v.shape)
        shape[1] += 7 * (1 if v.dtype == torch.int64 else 320)
        out[k] = (rng.integers(5, 1000, shape) if v.dtype == torch.int64 and k == "input_ids" else
                  np.ones(shape) if v.dtype == torch.int64 else rng.standard_normal(shape)).astype(v.numpy().dtype)
    return out


@pytest.mark.parametrize("name", [c.name for c in TRANSFORMER_CASES])
def test_a_transformer_family_converts_with_its_dynamic_axis(name, tmp_path):
    case = CASES[name]
    module, example = case.make()
    bundle = edgesdk.convert(module, example, targets=["onnx", "openvino"], out=tmp_path / name, strict=True,
                             **case.convert_kwargs)
    _assert_accepted(bundle)
    feeds = _longer(case, example)
    with torch.no_grad():
        want = module(**{k: torch.from_numpy(v) for k, v in feeds.items()})[0].numpy()
    for art in bundle.artifacts:
        with edgesdk.Runtime(tmp_path / name, artifact=art.id) as rt:
            got = rt.run_all(feeds)[0]
        np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, float(np.abs(want).max())), err_msg=art.id)


@pytest.mark.parametrize("name", [c.name for c in CNN_CASES])
def test_a_mobile_cnn_or_hybrid_converts(name, tmp_path):
    case = CASES[name]
    module, example = case.make()
    # Hybrids' TFLite (onnx2tf: a minute each, and efficientvit_b0's mismatches) is coverage.py's to report.
    targets = ["onnx", "openvino", "tflite"] if case.family == "cnn" else ["onnx", "openvino"]
    bundle = edgesdk.convert(module, example, targets=targets, out=tmp_path / name, strict=True,
                             **case.convert_kwargs)
    _assert_accepted(bundle)
    assert {a.format for a in bundle.artifacts} == set(targets)


@pytest.mark.parametrize("name", ["hf-deberta-v2", "hf-vit", "hf-wav2vec2"])
def test_a_transformer_onnx2tf_cannot_take_converts_to_tflite_by_litert_torch(name, tmp_path):
    """onnx2tf refuses DeBERTa-v2 and ViT, and its Wav2Vec2 fails XNNPACK's prepare (coverage.py's table);
    litert-torch converts all three at the example's shape. The route is named to keep the test short; the
    fallback itself is tested in test_tflite.py and on efficientvit below."""
    case = CASES[name]
    module, example = case.make()
    bundle = edgesdk.convert(module, example, targets=["tflite"], out=tmp_path / name, strict=True,
                             options={"tflite_route": "litert-torch"}, **case.convert_kwargs)
    _assert_accepted(bundle)
    art = bundle.artifact("tflite-fp32")
    assert art.versions["route"] == "torch.export -> litert-torch"
    feeds = {k: v.numpy() for k, v in example.items()}
    with torch.no_grad():
        want = module(**example)[0].numpy()
    with edgesdk.Runtime(bundle.path) as rt:
        assert rt.backend == "tflite"
        np.testing.assert_allclose(rt.run_all(feeds)[0], want, atol=1e-4 * max(1.0, float(np.abs(want).max())))


def test_an_onnx2tf_mistranslation_is_caught_and_litert_torch_ships_instead(tmp_path, caplog):
    """onnx2tf converts timm's efficientvit_b0 without a word, 0.14 off the source. With FP16 asked too,
    onnx2tf goes first: the route check on the example catches it, litert-torch makes the FP32 artifact
    that ships, and FP16 (onnx2tf's only) is failed with the check's reason rather than shipped off."""
    case = CASES["timm-efficientvit_b0"]
    module, example = case.make()
    bundle = edgesdk.convert(module, example, targets=["tflite"], precisions=["fp32", "fp16"], out=tmp_path / "e",
                             **case.convert_kwargs)
    _assert_accepted(bundle)
    assert bundle.artifact("tflite-fp32").versions["route"] == "torch.export -> litert-torch"
    assert "TFLite by onnx2tf failed (The FP32 TFLite file is off the source" in caplog.text
    assert [f.id for f in bundle.failed] == ["tflite-fp16"] and "off the source" in bundle.failed[0].reason


def test_ncnn_takes_the_traced_graph_where_pnnx_cannot_take_the_torch_export(tmp_path, caplog):
    """pnnx turns Wav2Vec2's torch.export graph into a torch.where ncnn has no layer for; the converter then
    exports the model again with the TorchScript exporter (NCNN takes one shape either way) and ships that."""
    case = CASES["hf-wav2vec2"]
    module, example = case.make()
    bundle = edgesdk.convert(module, example, targets=["ncnn"], out=tmp_path / "w", strict=True, **case.convert_kwargs)
    _assert_accepted(bundle)
    assert bundle.artifact("ncnn-fp32").versions["exporter"] == "legacy"
    assert re.search(r"NCNN from the shared graph failed \(pnnx has no ncnn layer for [^)]*torch.where", caplog.text)


@pytest.mark.parametrize("name", ["hf-roberta", "hf-llama", "hf-deberta-v2"])
def test_a_token_id_model_runs_on_ncnn_with_its_mask(name, tmp_path):
    """ncnn has no integer tensors, comparisons or select: the mask arithmetic is rewritten as float
    (float_graph), ids go to ncnn's Embed as int32. RoBERTa: position ids from a cumsum of ids != padding;
    Llama: causal mask, rotary positions, and an RMSNorm pnnx would reduce over no axis; DeBERTa-v2: its
    relative-position gathers, which ncnn has no layer for (pnnx_rewrites). A padded mask must change the
    output as the source's does, so the mask is not dropped on the way."""
    case = CASES[name]
    module, example = case.make()
    bundle = edgesdk.convert(module, example, targets=["ncnn"], out=tmp_path / name, strict=True,
                             **case.convert_kwargs)
    _assert_accepted(bundle)
    art = bundle.artifact("ncnn-fp32")
    assert "exporter" not in art.versions  # the shared graph (torch.export's), not the TorchScript fallback
    feeds = {k: v.numpy() for k, v in example.items()}
    padded = {**feeds, "attention_mask": feeds["attention_mask"].copy()}
    padded["attention_mask"][:, -6:] = 0
    with edgesdk.Runtime(tmp_path / name, artifact=art.id) as rt:
        for f in (feeds, padded):
            with torch.no_grad():
                want = module(**{k: torch.from_numpy(v) for k, v in f.items()})[0].numpy()
            got = rt.run_all(f)[0]
            np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, float(np.abs(want).max())))
        assert not np.allclose(rt.run_all(feeds)[0], rt.run_all(padded)[0], atol=1e-3)  # the mask is used


def test_a_conversion_leaves_nothing_in_the_working_folder(tmp_path, monkeypatch):
    """ONNX Runtime's symbolic shape inference, incomplete on BERT's mask path, dumped
    sym_shape_infer_temp.onnx and a <uuid>.data into the caller's working folder (TensorRT's INT8 QDQ)."""
    case = CASES["hf-bert"]
    module, example = case.make()
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    edgesdk.convert(module, example, targets=["tensorrt"], precisions=["int8"], calib=case.calib(8),
                    out=tmp_path / "b", **case.convert_kwargs)
    assert sorted(p.name for p in work.iterdir()) == []
