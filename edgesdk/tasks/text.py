"""Text in, token inputs out, on the device: a Hugging Face `tokenizer.json` stored in the bundle and run
by the `tokenizers` package alone (no torch, no transformers), so `edgesdk run BUNDLE "some text"` and the
apps go from text to outputs with the same tokenization the model was converted with."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConversionError, InputError, ModelLoadError, first_line, require
from ..core.specs import TensorSpec

log = logging.getLogger(__name__)

#: Where a bundle keeps its tokenizer.
TOKENIZER_FILE = "tokenizer/tokenizer.json"
#: Which field of an encoding each conventional model input takes.
ENCODING_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


def tokenizer_file(given: str | os.PathLike) -> Path:
    """The tokenizer.json of what the user gave: the file itself, or a Hugging Face model folder holding one."""
    path = Path(given)
    found = path / "tokenizer.json" if path.is_dir() else path
    if not found.is_file():
        raise ConversionError(f"No tokenizer at {given}: give a tokenizer.json or a Hugging Face folder holding one "
                              "(a 'fast' tokenizer; save one with tokenizer.save_pretrained(folder)).")
    return found


def _max_length(file: Path, fallback: int | None) -> int | None:
    """The length the tokenizer truncates to: its own truncation setting, else the folder's
    tokenizer_config.json model_max_length (when sensible), else fallback."""
    truncation = (json.loads(file.read_text()).get("truncation") or {})
    if truncation.get("max_length"):
        return int(truncation["max_length"])
    config = file.parent / "tokenizer_config.json"
    if config.is_file():
        length = json.loads(config.read_text()).get("model_max_length")
        if isinstance(length, int) and 0 < length <= 1 << 16:
            return length
    return fallback


def bundle_tokenizer(stage: Path, given: str | os.PathLike, inputs: Sequence[TensorSpec],
                     max_length: int | None = None) -> dict[str, Any]:
    """Copy the tokenizer into the bundle being written; return its manifest record. Every integer input
    must be one a tokenizer gives (input_ids, attention_mask, token_type_ids)."""
    from ..core.bundle import sha256_of

    file = tokenizer_file(given)
    token_inputs = [s.name for s in inputs if s.dtype.startswith(("int", "uint"))]
    unknown = [n for n in token_inputs if n not in ENCODING_FIELDS]
    if not token_inputs or unknown:
        raise ConversionError(f"A tokenizer fills the inputs {', '.join(ENCODING_FIELDS)}; the model's integer inputs "
                              f"are {token_inputs or 'none'}. Name them so (input_names=...).")
    Tokenizer(file, {"inputs": {n: ENCODING_FIELDS[n] for n in token_inputs}})  # refuse a broken file now
    dest = stage / TOKENIZER_FILE
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, dest)
    return {"file": TOKENIZER_FILE, "sha256": sha256_of(dest), "max_length": _max_length(file, max_length),
            "inputs": {n: ENCODING_FIELDS[n] for n in token_inputs}}


class Tokenizer:
    """A tokenizer.json run by the `tokenizers` package: texts -> the model's integer inputs (int64)."""

    def __init__(self, file: Path, record: dict[str, Any]):
        tokenizers = require("tokenizers", "text", "Tokenizing text")
        try:
            self._tokenizer = tokenizers.Tokenizer.from_file(str(file))
        except Exception as exc:  # noqa: BLE001 - the Rust side raises a bare Exception on bad JSON
            raise ModelLoadError(f"{file} is not a readable tokenizer.json ({first_line(exc)}).") from None
        self.fields: dict[str, str] = dict(record["inputs"])
        self.max_length: int | None = record.get("max_length")
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()

    def __call__(self, texts: str | Sequence[str], length: int | None = None) -> dict[str, np.ndarray]:
        """Token inputs for a text or a batch of texts: padded to the longest (or to `length`, for an
        artifact of fixed shape), cut at the tokenizer's max_length."""
        batch = [texts] if isinstance(texts, str) else list(texts)
        if not batch or not all(isinstance(t, str) for t in batch):
            raise InputError("Give a text or a list of texts to tokenize.")
        encodings = self._tokenizer.encode_batch(batch)
        limit = min(x for x in (length, self.max_length) if x) if (length or self.max_length) else None
        longest = max(len(e.ids) for e in encodings)
        width = length or min(longest, limit or longest)
        out = {}
        for name, field_name in self.fields.items():
            rows = np.zeros((len(batch), width), np.int64)
            for i, e in enumerate(encodings):
                values = getattr(e, field_name)[:width]
                rows[i, :len(values)] = values
            out[name] = rows
        if limit and longest > limit:
            log.warning("A text of %d tokens was cut to %d, the model's length.", longest, limit)
        return out

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._tokenizer.decode(list(map(int, ids)), skip_special_tokens=skip_special_tokens)


def mean_pool(hidden: np.ndarray, mask: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Sentence embeddings from token states: the mask-weighted mean over tokens (sentence-transformers'
    pooling), unit length when normalize (so a dot product is the cosine)."""
    weights = mask[..., None].astype(hidden.dtype)
    pooled = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
    if normalize:
        pooled /= np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
    return pooled
