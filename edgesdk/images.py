"""Image decoding and preprocessing (Pillow). Kept apart so `import edgesdk` needs only numpy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError, missing_extra

if TYPE_CHECKING:
    from .specs import Preprocess

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:
        raise missing_extra("pillow", "apps", "Reading images") from exc
    return Image


def load_image(image: Any, color: str = "RGB"):
    """Open an image file (or pass a PIL image through) in the given color mode."""
    Image = _pil()
    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as im:
                im.load()
                pil = im.copy()
        except FileNotFoundError:
            raise InputError(f"Image file not found: {image}") from None
        except Exception as exc:  # Pillow raises several types for undecodable data
            raise InputError(f"Cannot read {image} as an image ({exc}). Give a JPEG, PNG or BMP file.") from None
    elif hasattr(image, "convert"):
        pil = image
    else:
        raise InputError(f"Expected an image path or PIL image, got {type(image).__name__}")
    return _to_8bit(pil).convert("L" if color == "GRAY" else "RGB")


#: Pillow's modes for 16- and 32-bit single-channel images (16-bit PNG, TIFF): convert("RGB") clips them
#: at 255, which turns almost every pixel white.
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _to_8bit(pil: Any) -> Any:
    """A wide single-channel image scaled to 8 bits by its bit depth (16-bit: 0-65535 -> 0-255);
    other images as they are."""
    if pil.mode not in WIDE_MODES:
        return pil
    Image = _pil()
    arr = np.asarray(pil, dtype=np.float64)
    if pil.mode.startswith("I;16") or (pil.mode == "I" and arr.max(initial=0) > 255):
        arr = arr / 65535.0 * 255.0  # 16-bit data (Pillow may open a 16-bit PNG as mode I)
    elif pil.mode == "F" and arr.max(initial=0) <= 1.0:
        arr = arr * 255.0  # float images in [0, 1]
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")


def _crop_box(width: int, height: int, out_w: int, out_h: int, where: str) -> tuple[int, int, int, int]:
    left = {"c": (width - out_w) // 2, "tl": 0, "bl": 0, "tr": width - out_w, "br": width - out_w}[where]
    top = {"c": (height - out_h) // 2, "tl": 0, "tr": 0, "bl": height - out_h, "br": height - out_h}[where]
    return left, top, left + out_w, top + out_h


def preprocess_image(image: Any, pre: Preprocess, crop: str = "c") -> np.ndarray:
    """Resize, crop, normalize and lay out one image as a float32 batch of one.

    crop is "c" (centre) or a corner ("tl", "tr", "bl", "br"), for evaluation on several views."""
    Image = _pil()
    im = load_image(image, pre.color)
    out_h, out_w = pre.size
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[pre.interpolation]
    if pre.resize:
        w, h = im.size
        scale = pre.resize / min(w, h)
        im = im.resize((max(out_w, round(w * scale)), max(out_h, round(h * scale))), resample)
        im = im.crop(_crop_box(im.size[0], im.size[1], out_w, out_h, crop))
    else:
        im = im.resize((out_w, out_h), resample)
    arr = np.asarray(im, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if pre.color == "BGR":
        arr = arr[:, :, ::-1]
    arr = (arr - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    if pre.layout == "NCHW":
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr[None], dtype=np.float32)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files in a folder, in natural order (2.jpg before 10.jpg)."""
    import re

    def natural(p: Path) -> list[Any]:
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]

    files = [p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files, key=natural)


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


