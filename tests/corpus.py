"""Models edgesdk did not write, as users bring them: Ultralytics YOLO modules, Hugging Face
`transformers` families and timm/torchvision mobile CNNs and hybrids. Random init with small configs,
nothing downloaded. The tests convert them (tests/test_corpus.py) and `benchmarks/coverage.py` runs the
whole corpus through every format and precision.

ultralytics, timm and torchvision are test dependencies; edgesdk never imports them. The Makefile
installs them into .venv/corpus, which only use_corpus_packages() puts on sys.path: PyPI's torchvision
0.28.0 (the release paired with torch 2.13.0) is a CUDA build whose compiled ops cannot load beside the
CPU torch, and in the venv itself transformers would import it and fail. Its models and transforms are
Python and work; it only fails to import because it registers fake kernels for two ops its library
would have defined. import_torchvision() defines those two op schemas (no kernels) first, so models
build and run; NMS and the other compiled ops stay unavailable, and nothing here needs them."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

YOLO_SIZE = 160  # a multiple of the 32-pixel stride; small enough for a quick test
SEQUENCE = 24  # example token count; parity also runs at a second length


@dataclass
class Case:
    """One corpus model: how to build it and what convert() needs besides."""

    name: str
    family: str  # "yolo", "cnn", "hybrid", or what the transformer is (encoder-absolute, causal-decoder, ...)
    build: Callable[[], tuple[Any, Any]]  # -> (module, example input)
    convert_kwargs: dict[str, Any] = field(default_factory=dict)
    calib: Callable[[int], Any] | None = None  # n -> calibration data for INT8

    def make(self) -> tuple[Any, Any]:
        import_torchvision()  # ultralytics, timm and transformers all import it when it is installed
        torch.manual_seed(0)
        return self.build()


CORPUS_PACKAGES = os.path.join(sys.prefix, "corpus")  # .venv/corpus (the Makefile's setup)


def use_corpus_packages() -> None:
    """Put the corpus' own packages (ultralytics, timm, torchvision) on sys.path, once."""
    if CORPUS_PACKAGES not in sys.path:
        sys.path.append(CORPUS_PACKAGES)


def import_torchvision() -> Any:
    """torchvision, importable beside the CPU torch (see the module docstring)."""
    use_corpus_packages()
    try:
        import torchvision

        return torchvision
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    for op in ("nms", "qnms"):
        torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision

    return torchvision


# --- Ultralytics -----------------------------------------------------------------------------------

def _yolo(yaml: str) -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_VERBOSE", "False")
        os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(tempfile.gettempdir(), "edgesdk-ultralytics"))
        from ultralytics import YOLO  # a test dependency only

        module = YOLO(yaml).model.eval()  # random init from the yaml: nothing is downloaded
        return module, torch.rand(1, 3, YOLO_SIZE, YOLO_SIZE)

    return build


def _images(shape: tuple[int, ...]) -> Callable[[int], np.ndarray]:
    def calib(n: int) -> np.ndarray:
        from tests.conftest import smooth_batch

        return smooth_batch(n, shape[1:], seed=11)

    return calib


YOLO_CASES = [
    Case("yolov8n", "yolo", _yolo("yolov8n.yaml"), {"outputs": ["output0"], "task": "detection"},
         _images((1, 3, YOLO_SIZE, YOLO_SIZE))),
    Case("yolo11n", "yolo", _yolo("yolo11n.yaml"), {"outputs": ["output0"], "task": "detection"},
         _images((1, 3, YOLO_SIZE, YOLO_SIZE))),
]


# --- timm and torchvision --------------------------------------------------------------------------

def _timm(name: str, size: int) -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        import_torchvision()
        import timm

        return timm.create_model(name, pretrained=False, num_classes=10).eval(), torch.rand(1, 3, size, size)

    return build


def _torchvision(name: str, size: int) -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        tv = import_torchvision()
        return getattr(tv.models, name)(weights=None, num_classes=10).eval(), torch.rand(1, 3, size, size)

    return build


CNN_CASES = [
    Case("tv-mobilenet_v3_small", "cnn", _torchvision("mobilenet_v3_small", 96), {"task": "other"},
         _images((1, 3, 96, 96))),
    Case("tv-shufflenet_v2_x0_5", "cnn", _torchvision("shufflenet_v2_x0_5", 96), {"task": "other"},
         _images((1, 3, 96, 96))),
    Case("timm-mobilenetv3_small_050", "cnn", _timm("mobilenetv3_small_050", 96), {"task": "other"},
         _images((1, 3, 96, 96))),
    Case("timm-mobilevit_xxs", "hybrid", _timm("mobilevit_xxs", 128), {"task": "other"},
         _images((1, 3, 128, 128))),
    Case("timm-efficientvit_b0", "hybrid", _timm("efficientvit_b0", 128), {"task": "other"},
         _images((1, 3, 128, 128))),
]


# --- Hugging Face transformers ---------------------------------------------------------------------

SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
TEXT_AXES = ["input_ids:1=sequence", "attention_mask:1=sequence"]


def _tokens(vocab: int = 1000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {"input_ids": rng.integers(5, vocab, (1, SEQUENCE)).astype(np.int64),
            "attention_mask": np.ones((1, SEQUENCE), np.int64)}


def _text_calib(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {"input_ids": rng.integers(5, 1000, (n, SEQUENCE)).astype(np.int64),
            "attention_mask": np.ones((n, SEQUENCE), np.int64)}


def _hf(model_class: str, config_class: str, **config: Any) -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        import transformers

        cfg = getattr(transformers, config_class)(**config)
        module = getattr(transformers, model_class)(cfg).eval()
        return module, {k: torch.from_numpy(v) for k, v in _tokens().items()}

    return build


def _wav2vec2() -> tuple[Any, Any]:
    import transformers

    cfg = transformers.Wav2Vec2Config(**SMALL, conv_dim=(32, 32, 32), conv_stride=(5, 4, 2), conv_kernel=(10, 4, 2),
                                      num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                                      do_stable_layer_norm=True, feat_extract_norm="layer")
    return transformers.Wav2Vec2Model(cfg).eval(), {"input_values": torch.randn(1, 4000)}


def _vit() -> tuple[Any, Any]:
    import transformers

    cfg = transformers.ViTConfig(**SMALL, image_size=64, patch_size=16)
    return transformers.ViTModel(cfg).eval(), {"pixel_values": torch.rand(1, 3, 64, 64)}


def _audio_calib(n: int) -> dict[str, np.ndarray]:
    """Recorded voices (Debian's alsa-utils): windows of 4000 samples, normalized as Wav2Vec2's extractor does."""
    import wave
    from pathlib import Path

    windows = []
    for path in sorted(Path("/usr/share/sounds/alsa").glob("[FRS]*.wav")):
        with wave.open(str(path)) as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
        windows += [pcm[i:i + 4000] for i in range(0, len(pcm) - 4000, 12000) if np.abs(pcm[i:i + 4000]).max() > 0.05]
    picked = np.stack(windows[:n])
    return {"input_values": (picked - picked.mean(1, keepdims=True)) / (picked.std(1, keepdims=True) + 1e-7)}


def _vit_calib(n: int) -> dict[str, np.ndarray]:
    from tests.conftest import smooth_batch

    return {"pixel_values": smooth_batch(n, (3, 64, 64), seed=13)}


TEXT = {"dynamic_axes": TEXT_AXES, "task": "other"}
TRANSFORMER_CASES = [
    Case("hf-bert", "encoder, absolute positions",
         _hf("BertModel", "BertConfig", vocab_size=1000, max_position_embeddings=128, **SMALL), TEXT, _text_calib),
    Case("hf-roberta", "encoder, absolute positions from the mask",
         _hf("RobertaModel", "RobertaConfig", vocab_size=1000, max_position_embeddings=130, **SMALL), TEXT,
         _text_calib),
    Case("hf-deberta-v2", "encoder, relative positions",
         _hf("DebertaV2Model", "DebertaV2Config", vocab_size=1000, max_position_embeddings=128,
             relative_attention=True, position_buckets=32, pos_att_type=["p2c", "c2p"], **SMALL), TEXT, _text_calib),
    Case("hf-t5-encoder", "encoder of an encoder-decoder, relative position bias",
         _hf("T5EncoderModel", "T5Config", vocab_size=1000, d_model=64, d_ff=128, d_kv=16, num_layers=2,
             num_heads=4), TEXT, _text_calib),
    Case("hf-gpt2", "causal decoder, learned positions",
         _hf("GPT2Model", "GPT2Config", vocab_size=1000, n_positions=128, n_embd=64, n_layer=2, n_head=4,
             use_cache=False), TEXT, _text_calib),
    Case("hf-llama", "causal decoder, rotary positions, grouped-query attention",
         _hf("LlamaModel", "LlamaConfig", vocab_size=1000, max_position_embeddings=128, num_key_value_heads=2,
             use_cache=False, **SMALL), TEXT, _text_calib),
    Case("hf-wav2vec2", "audio encoder", _wav2vec2,
         {"dynamic_axes": ["input_values:1=samples"], "task": "other"}, _audio_calib),
    Case("hf-vit", "vision transformer", _vit, {"dynamic_batch": True, "task": "other"}, _vit_calib),
]

CASES = {c.name: c for c in [*YOLO_CASES, *CNN_CASES, *TRANSFORMER_CASES]}
