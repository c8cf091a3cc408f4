"""How raw images become a model's input (Preprocess, stored in the manifest) and the decoding and
preprocessing that does it (Pillow, imported when first used, so `import edgesdk` needs only numpy)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, missing_extra
from .specs import TensorSpec, guess_layout

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:
        raise missing_extra("pillow", "apps", "Reading images") from exc
    return Image


#: (width, height) of an image -> the smallest (width, height) its user needs.
SizeRule = Callable[[int, int], tuple[int, int]]


def load_image(image: Any, color: str = "RGB", reduce_to: SizeRule | None = None):
    """Open an image file (or take a PIL image) in the given color mode; a PIL image already in that
    mode is returned as it is, not copied.

    reduce_to(width, height) -> (min_width, min_height): the smallest size the caller will use. A JPEG
    is then decoded at the largest 1/2, 1/4 or 1/8 scale that stays at least that big (Pillow's draft:
    the DCT does the downscaling, a fraction of the decode and resize time; pixels differ a little from
    a full decode then resize, so the tensor is not the manifest's exactly)."""
    if isinstance(image, (str, os.PathLike)):
        pil = _open(image, reduce_to)
    elif hasattr(image, "convert"):
        pil = image
    else:
        raise InputError(f"Expected an image path or PIL image, got {type(image).__name__}")
    pil = _to_8bit(pil)
    mode = "L" if color == "GRAY" else "RGB"
    return pil if pil.mode == mode else pil.convert(mode)


def _open(path: str | os.PathLike, reduce_to: SizeRule | None) -> Any:
    """The decoded image of a file, with its file closed; no copy (Pillow closes a single-frame file
    once loaded)."""
    Image = _pil()
    im = None
    try:
        im = Image.open(path)
        if reduce_to is not None and im.format == "JPEG":
            im.draft(None, reduce_to(*im.size))
        im.load()
    except FileNotFoundError:
        raise InputError(f"Image file not found: {path}") from None
    except Exception as exc:  # Pillow raises several types for undecodable data
        if im is not None:
            im.close()
        raise InputError(f"Cannot read {path} as an image ({exc}). Give a JPEG, PNG or BMP file.") from None
    if getattr(im, "fp", None) is not None:  # a multi-frame file (GIF, TIFF) stays open: keep a copy of frame 0
        frame = im.copy()
        im.close()
        return frame
    return im


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


def preprocess_image(image: Any, pre: Preprocess, crop: str = "c", reduced_decode: bool = False) -> np.ndarray:
    """Resize, crop, normalize and lay out one image as a float32 batch of one.

    crop is "c" (centre) or a corner ("tl", "tr", "bl", "br"), for evaluation on several views.
    reduced_decode=True lets a large JPEG decode at reduced scale (see load_image): faster, and no
    longer the manifest's exact numbers (the apps measure and report what it changes)."""
    im = load_image(image, pre.color, reduce_to=partial(decode_size, pre) if reduced_decode else None)
    return to_tensor(fit_image(im, pre, crop), pre)


def decode_size(pre: Preprocess, width: int, height: int) -> tuple[int, int]:
    """The size an image of width x height is resized to before its crop: what a reduced decode keeps."""
    out_h, out_w = pre.size
    if not pre.resize:
        return out_w, out_h
    scale = pre.resize / min(width, height)
    return max(out_w, math.ceil(width * scale)), max(out_h, math.ceil(height * scale))


def fit_image(im: Any, pre: Preprocess, crop: str = "c") -> np.ndarray:
    """The pixels of the model's input window as uint8 HxWxC (HxW for gray): at most one resize (none
    when the image already has the resize's size, as a reduced decode often gives), and the crop as a
    view of it, not a copy. (Resizing only the crop's source region, Pillow's box, would save a little
    more but moves up to 2 levels on 1% of pixels at fractional scales: the manifest's numbers win.)"""
    Image = _pil()
    out_h, out_w = pre.size
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[pre.interpolation]
    w, h = im.size
    if not pre.resize:
        return np.asarray(im if (w, h) == (out_w, out_h) else im.resize((out_w, out_h), resample))
    scale = pre.resize / min(w, h)
    size = (max(out_w, round(w * scale)), max(out_h, round(h * scale)))
    left, top, right, bottom = _crop_box(*size, out_w, out_h, crop)
    return np.asarray(im if size == (w, h) else im.resize(size, resample))[top:bottom, left:right]


@lru_cache(maxsize=32)
def _affine(mean: tuple[float, ...], std: tuple[float, ...], repeat: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(scale, bias) per channel with (pixel / 255 - mean) / std == pixel * scale + bias, repeated
    `repeat` times (along a row of channels-last pixels)."""
    std_ = np.asarray(std, np.float64)
    scale, bias = 1.0 / (255.0 * std_), -np.asarray(mean, np.float64) / std_
    return np.tile(scale, repeat).astype(np.float32), np.tile(bias, repeat).astype(np.float32)


def to_tensor(pixels: np.ndarray, pre: Preprocess) -> np.ndarray:
    """uint8 pixels (HxWxC or HxW) -> the float32 batch of one the model takes: channel order, scale
    to [0, 1], mean/std and layout in one pass over the pixels, written straight into the result."""
    scale, bias = _affine(tuple(pre.mean), tuple(pre.std))
    hwc = pixels[:, :, None] if pixels.ndim == 2 else pixels
    if pre.color == "BGR":
        hwc = hwc[:, :, ::-1]
    channels = np.broadcast_shapes(hwc.shape[2:], scale.shape)[0]
    height, width = hwc.shape[:2]
    if pre.layout == "NCHW":
        out = np.empty((1, channels, height, width), np.float32)
        np.multiply(hwc.transpose(2, 0, 1), scale[:, None, None], out=out[0])
        out[0] += bias[:, None, None]
    else:
        out = np.empty((1, height, width, channels), np.float32)
        if hwc.shape[2] == scale.shape[0] == channels and hwc.strides[1:] == (channels * hwc.itemsize, hwc.itemsize):
            # Rows of channels-last pixels are contiguous: one long inner loop per row, not one of 3.
            scale_row, bias_row = _affine(tuple(pre.mean), tuple(pre.std), width)
            rows = out.reshape(height, width * channels)
            np.multiply(hwc.reshape(height, width * channels), scale_row, out=rows)
            rows += bias_row
        else:
            np.multiply(hwc, scale, out=out[0])
            out[0] += bias
    return out


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files in a folder, in natural order (2.jpg before 10.jpg)."""
    import re

    def natural(p: Path) -> list[Any]:
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]

    files = [p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files, key=natural)


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


@dataclass(frozen=True)
class Preprocess:
    """How an image file becomes a model input: resize the short side, centre-crop, scale to [0, 1],
    normalize with mean/std, order the channels, lay out as NCHW or NHWC."""

    size: tuple[int, int] = (224, 224)  # (height, width) of the model input
    resize: int | None = 256  # short side before the centre crop; None resizes straight to size
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    color: str = "RGB"  # "RGB", "BGR" or "GRAY"
    layout: str = "NCHW"
    interpolation: str = "bilinear"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        return cls(
            size=tuple(d["size"]),
            resize=d.get("resize"),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            color=d.get("color", "RGB"),
            layout=d.get("layout", "NCHW"),
            interpolation=d.get("interpolation", "bilinear"),
            extra=dict(d.get("extra", {})),
        )

    @classmethod
    def for_input(cls, spec: TensorSpec, **overrides: Any) -> Preprocess:
        """A default Preprocess matching an image input's shape and layout."""
        layout = spec.layout or guess_layout(spec.shape) or "NCHW"
        dims = spec.concrete_shape()
        h, w = (dims[2], dims[3]) if layout == "NCHW" else (dims[1], dims[2])
        channels = dims[1] if layout == "NCHW" else dims[3]
        base: dict[str, Any] = {"size": (h, w), "resize": round(min(h, w) * 256 / 224), "layout": layout}
        if channels == 1:
            base.update(color="GRAY", mean=(0.5,), std=(0.5,))
        base.update(overrides)
        return cls(**base)

    def __call__(self, image: Any) -> np.ndarray:
        """Turn an image (a path or a PIL image) into a float32 batch of one."""
        return preprocess_image(image, self)
