"""Audio input for speech models: WAV files to mono float32 at the model's sample rate."""

from __future__ import annotations

import logging
import os
import wave
from math import gcd
from pathlib import Path

import numpy as np

from ..core.errors import InputError

log = logging.getLogger(__name__)


def load_wav(path: str | os.PathLike, rate: int = 16000) -> np.ndarray:
    """Mono float32 samples in [-1, 1] at `rate` Hz. Other rates are resampled (polyphase, with scipy when
    installed); stereo is averaged. Anything but a PCM WAV file is an InputError."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"Audio file not found: {p}")
    try:
        with wave.open(str(p), "rb") as w:
            channels, width, src_rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(frames)
    except (wave.Error, EOFError) as exc:
        raise InputError(f"{p} is not a PCM WAV file ({exc}). Convert it first, e.g. "
                         f"`ffmpeg -i {p.name} -ar {rate} -ac 1 out.wav`.") from None
    if width not in (1, 2, 4):
        raise InputError(f"{p} has {8 * width}-bit samples; use 8-, 16- or 32-bit PCM.")
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
    x = np.frombuffer(raw, dtype=dtype).astype(np.float32)
    x = (x - 128) / 128 if width == 1 else x / float(np.iinfo(dtype).max)
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    if src_rate != rate:
        log.info("Resampling %s from %d Hz to %d Hz", p.name, src_rate, rate)
        x = resample(x, src_rate, rate)
    return np.ascontiguousarray(x, dtype=np.float32)


def resample(x: np.ndarray, src_rate: int, rate: int) -> np.ndarray:
    if src_rate == rate:
        return x
    try:
        from scipy.signal import resample_poly
    except ImportError:  # linear interpolation: fine for speech models, no extra dependency
        n = int(round(len(x) * rate / src_rate))
        return np.interp(np.linspace(0, len(x) - 1, n), np.arange(len(x)), x).astype(np.float32)
    g = gcd(src_rate, rate)
    return resample_poly(x, rate // g, src_rate // g).astype(np.float32)


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """float32 [-1, 1] -> int16, what microcontroller front ends take."""
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)
