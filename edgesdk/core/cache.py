"""edgesdk's cache folder, for results that are slow to make and safe to reuse: onnx2tf SavedModels,
TensorRT engines, autotune winners."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$EDGESDK_CACHE, else $XDG_CACHE_HOME/edgesdk, else ~/.cache/edgesdk."""
    if os.environ.get("EDGESDK_CACHE"):
        return Path(os.environ["EDGESDK_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgesdk"
