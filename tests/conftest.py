"""Shared fixtures: tiny real models and data, and converted bundles made once per test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before the guard imports TensorFlow
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # so factories like tests.models:tiny_cnn import in-process


def pytest_sessionstart(session: pytest.Session) -> None:
    """Every dependency `make setup` installs is required: a missing one fails the run here, loudly,
    rather than skipping the tests that need it."""
    from tests.required import missing

    problems = missing()
    if problems:
        pytest.exit("Required test dependencies are missing or broken (run `make setup`):\n  " +
                    "\n  ".join(problems), returncode=3)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """edgesdk's cache (onnx2tf SavedModels) in a folder of this session's, shared by its conversions."""
    os.environ["EDGESDK_CACHE"] = str(tmp_path_factory.mktemp("edgesdk-cache"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def make_scene(rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A synthetic but image-like picture: a smooth gradient background and a few filled shapes."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(0, 1, 3)
    img = np.stack([base[c] * (0.6 + 0.4 * (xx if c % 2 else yy)) for c in range(3)], -1)
    for _ in range(3):
        cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.25)
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        img[mask] = rng.uniform(0, 1, 3)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 PNG scenes: calibration data for the tiny CNN."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("scenes")
    rng = np.random.default_rng(1)
    for i in range(40):
        Image.fromarray(make_scene(rng)).save(folder / f"scene{i}.png")
    return folder


@pytest.fixture(scope="session")
def tiny_preprocess():
    from edgesdk import Preprocess

    return Preprocess(size=(32, 32), resize=36)


@pytest.fixture
def tiny_model():
    from tests.models import tiny_cnn

    return tiny_cnn()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, image_folder: Path, tiny_preprocess) -> Path:
    """The tiny CNN converted to ONNX FP32, FP16 and INT8 (calibrated on the image folder)."""
    import torch

    import edgesdk
    from tests.models import tiny_cnn

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    edgesdk.convert(tiny_cnn(), torch.zeros(1, 3, 32, 32), targets=["onnx"], precisions=["fp32", "fp16", "int8"],
                    calib=image_folder, preprocess=tiny_preprocess, labels=[f"class{i}" for i in range(10)],
                    out=out, options={"onnx_float_nodes": []})
    return out


@pytest.fixture(scope="session")
def every_format(tmp_path_factory: pytest.TempPathFactory, image_folder: Path, tiny_preprocess) -> Path:
    """The tiny CNN in every declared format, in every precision some device preset ships it in (TensorRT:
    FP16 and the symmetric QDQ INT8; NCNN: FP32 and FP16; TFLite and MNN: FP32, FP16, INT8). Judged as
    task "other" (every output's cosine): the random CNN's logits are near-ties (top-1/top-2 margins
    0.001-0.02), so its top-1 agreement is noise (77-98% between runs at cosine 0.9999) and the ranking
    tests would depend on which INT8 artifacts it happened to keep."""
    import torch

    import edgesdk
    from edgesdk.conversion.formats import converters, target_presets
    from tests.models import tiny_cnn

    out = tmp_path_factory.mktemp("sel") / "all"
    shipped = {c.name: sorted({p for device in target_presets().values() for p in device.get(c.name, ())},
                              key=c.precisions.index) for c in converters()}
    edgesdk.convert(tiny_cnn(), torch.zeros(1, 3, 32, 32), targets=list(shipped), precisions=shipped,
                    calib=image_folder, preprocess=tiny_preprocess, labels=[f"class{i}" for i in range(10)], out=out,
                    options={"onnx_float_nodes": []}, task="other", strict=True)
    return out


@pytest.fixture(scope="session")
def effnet_mobile_bundle(tmp_path_factory: pytest.TempPathFactory, photos: tuple[Path, Path]) -> Path:
    """EfficientNet-Lite0 in ExecuTorch and MNN (FP32, INT8) and NCNN (FP32; INT8 too where ncnn's tools are)."""
    import torch

    import edgesdk
    from edgesdk.conversion.formats.ncnn import int8_tools
    from edgesdk.core.errors import BackendUnavailable
    from edgesdk.models import zoo

    try:
        ncnn = ["fp32", "int8"] if int8_tools() else ["fp32"]
    except BackendUnavailable:
        ncnn = ["fp32"]
    calib, evaluation = photos
    out = tmp_path_factory.mktemp("bundles") / "effnet-mobile"
    edgesdk.convert(zoo.efficientnet_lite0(), torch.zeros(1, 3, 224, 224), targets=["executorch", "mnn", "ncnn"],
                    precisions={"executorch": ["fp32", "int8"], "mnn": ["fp32", "int8"], "ncnn": ncnn},
                    calib=calib, validation=evaluation, out=out)
    return out


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The 100 real photos of the ai-benchmark wheel: 0-49 for calibration, 50-99 held out."""
    from edgesdk.models import zoo

    return zoo.split_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def effnet_bundle(tmp_path_factory: pytest.TempPathFactory, photos: tuple[Path, Path]) -> Path:
    """EfficientNet-Lite0 (real ImageNet weights) converted to ONNX, OpenVINO and TFLite, FP32 and INT8."""
    import torch

    import edgesdk
    from edgesdk.models import zoo

    calib, evaluation = photos
    out = tmp_path_factory.mktemp("bundles") / "effnet"
    targets = ["onnx", "openvino", "tflite"]
    edgesdk.convert(zoo.efficientnet_lite0(), torch.zeros(1, 3, 224, 224), targets=targets,
                    precisions=["fp32", "int8"], calib=calib, validation=evaluation, out=out)
    return out


def smooth_batch(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Image-like float32 data (correlated neighbours), n samples."""
    rng = np.random.default_rng(seed)
    return np.stack([
        (make_scene(rng, shape[-1]).astype(np.float32) / 127.5 - 1).transpose(2, 0, 1)[: shape[0]]
        for _ in range(n)
    ])
