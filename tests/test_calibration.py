import logging

import numpy as np
import pytest

from edgesdk import CalibrationSet, Preprocess, TensorSpec
from edgesdk.core.errors import CalibrationError
from tests.conftest import smooth_batch

SPEC = [TensorSpec("input", (1, 3, 32, 32), "float32", "NCHW")]


def test_image_folder_is_preprocessed_and_counted(image_folder):
    pre = Preprocess(size=(32, 32), resize=36, mean=(0.5,) * 3, std=(0.25,) * 3)
    calib = CalibrationSet.from_any(image_folder, SPEC, pre)
    assert len(calib) == 40
    sample = calib.samples[0]["input"]
    assert sample.shape == (1, 3, 32, 32) and sample.dtype == np.float32
    # (x/255 - 0.5) / 0.25 lies in [-2, 2]
    assert sample.min() >= -2.0 - 1e-6 and sample.max() <= 2.0 + 1e-6
    assert calib.preprocess == pre
    calib.check_representative()  # real pictures pass


def test_bgr_and_nhwc_preprocessing(image_folder):
    rgb = CalibrationSet.from_any(image_folder, SPEC, Preprocess(size=(32, 32), resize=None)).samples[0]["input"]
    bgr = CalibrationSet.from_any(image_folder, SPEC, Preprocess(size=(32, 32), resize=None, color="BGR",
                                                                 mean=(0.485, 0.456, 0.406)[::-1],
                                                                 std=(0.229, 0.224, 0.225)[::-1])).samples[0]["input"]
    np.testing.assert_allclose(rgb[:, ::-1], bgr, atol=1e-6)
    nhwc_spec = [TensorSpec("input", (1, 32, 32, 3), "float32", "NHWC")]
    nhwc = CalibrationSet.from_any(image_folder, nhwc_spec, Preprocess(size=(32, 32), resize=None, layout="NHWC"))
    np.testing.assert_allclose(nhwc.samples[0]["input"].transpose(0, 3, 1, 2), rgb, atol=1e-6)


def test_npy_npz_and_iterables(tmp_path):
    data = smooth_batch(5, (3, 32, 32))
    np.save(tmp_path / "x.npy", data)
    np.savez(tmp_path / "x.npz", input=data)
    for source in (tmp_path / "x.npy", tmp_path / "x.npz", data, list(data), [{"input": d[None]} for d in data]):
        calib = CalibrationSet.from_any(source, SPEC)
        assert len(calib) == 5
        np.testing.assert_array_equal(calib.samples[3]["input"], data[3:4])


def test_max_samples_caps_the_set(image_folder):
    assert len(CalibrationSet.from_any(image_folder, SPEC, max_samples=7)) == 7


def test_warns_below_the_recommended_minimum(caplog):
    with caplog.at_level(logging.WARNING):
        CalibrationSet.from_any(smooth_batch(4, (3, 32, 32)), SPEC)
    assert "only 4 samples" in caplog.text


def test_refuses_random_and_constant_data():
    noise = np.random.default_rng(0).standard_normal((40, 3, 32, 32)).astype(np.float32)
    with pytest.raises(CalibrationError, match="random noise"):
        CalibrationSet.from_any(noise, SPEC).check_representative()
    with pytest.raises(CalibrationError, match="constant"):
        CalibrationSet.from_any(np.zeros((40, 3, 32, 32), np.float32), SPEC).check_representative()


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(CalibrationError, match="not found"):
        CalibrationSet.from_any(tmp_path / "nope", SPEC)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match="No image files"):
        CalibrationSet.from_any(tmp_path / "empty", SPEC)
    with pytest.raises(CalibrationError, match="shape"):
        CalibrationSet.from_any([np.zeros((5, 5), np.float32)], SPEC)
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(CalibrationError, match="numpy"):
        CalibrationSet.from_any(tmp_path / "bad.npy", SPEC)


def test_a_dict_of_batches_is_split_into_samples_and_a_bad_value_is_a_calibration_error():
    """{input name: batch}, as a multi-input model's calibration is most easily given (it used to be read
    as an iterable of its keys and crash with a raw ValueError)."""
    inputs = [TensorSpec("input_ids", (1, "sequence"), "int64"), TensorSpec("attention_mask", (1, "sequence"), "int64")]
    ids = np.arange(40, dtype=np.int64).reshape(5, 8)
    cal = CalibrationSet.from_any({"input_ids": ids, "attention_mask": np.ones((5, 8), np.int64)}, inputs)
    assert len(cal) == 5
    np.testing.assert_array_equal(list(cal)[3]["input_ids"], ids[3:4])
    with pytest.raises(CalibrationError, match="cannot be read as the input's int64"):
        CalibrationSet.from_any([{"input_ids": np.array([["a", "b"]]), "attention_mask": np.ones((1, 2))}], inputs)
