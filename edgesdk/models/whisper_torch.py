"""Whisper-base rebuilt in torch from its CTranslate2 weights (edgesdk.models.whisper loads them): the
encoder and the decoder that convert() takes. Imported only when they are built, so torch stays optional."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


def _linear(w: dict[str, np.ndarray], name: str) -> nn.Linear:
    weight = torch.from_numpy(w[f"{name}/weight"].astype(np.float32))
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    layer.weight.data, layer.bias.data = weight, torch.from_numpy(w[f"{name}/bias"].astype(np.float32))
    return layer


def _norm(w: dict[str, np.ndarray], name: str) -> nn.LayerNorm:
    layer = nn.LayerNorm(w[f"{name}/gamma"].shape[0])
    layer.weight.data = torch.from_numpy(w[f"{name}/gamma"].astype(np.float32))
    layer.bias.data = torch.from_numpy(w[f"{name}/beta"].astype(np.float32))
    return layer


def _attend(q: Any, k: Any, v: Any, heads: int, mask: Any = None) -> Any:
    b, t, d = q.shape
    split = [x.reshape(b, x.shape[1], heads, d // heads).transpose(1, 2) for x in (q, k, v)]
    scores = split[0] @ split[1].transpose(-1, -2) / (d // heads) ** 0.5
    if mask is not None:
        scores = scores + mask
    return (torch.softmax(scores, -1) @ split[2]).transpose(1, 2).reshape(b, t, d)


class Block(nn.Module):
    """One transformer layer: self-attention, cross-attention to the encoder's states (decoder only), FFN."""

    def __init__(self, w: dict[str, np.ndarray], prefix: str, cross: bool):
        super().__init__()
        self.heads = 8
        self.ln1, self.qkv = _norm(w, f"{prefix}/self_attention/layer_norm"), _linear(w, f"{prefix}/self_attention/linear_0")
        self.out1 = _linear(w, f"{prefix}/self_attention/linear_1")
        if cross:
            self.ln2, self.q = _norm(w, f"{prefix}/attention/layer_norm"), _linear(w, f"{prefix}/attention/linear_0")
            self.kv, self.out2 = _linear(w, f"{prefix}/attention/linear_1"), _linear(w, f"{prefix}/attention/linear_2")
        self.ln3, self.fc1 = _norm(w, f"{prefix}/ffn/layer_norm"), _linear(w, f"{prefix}/ffn/linear_0")
        self.fc2 = _linear(w, f"{prefix}/ffn/linear_1")

    def forward(self, x: Any, mask: Any = None, k: Any = None, v: Any = None) -> Any:
        q, kk, vv = self.qkv(self.ln1(x)).chunk(3, -1)
        x = x + self.out1(_attend(q, kk, vv, self.heads, mask))
        if k is not None:
            x = x + self.out2(_attend(self.q(self.ln2(x)), k, v, self.heads))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.ln3(x))))


class WhisperEncoder(nn.Module):
    """log-mel [1, 80, 3000] -> cross_k, cross_v [6, 1, 1500, 512] for the decoder's layers."""

    def __init__(self, w: dict[str, np.ndarray]):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv1d(80, 512, 3, padding=1), nn.Conv1d(512, 512, 3, stride=2, padding=1)
        for conv, name in ((self.conv1, "conv1"), (self.conv2, "conv2")):
            conv.weight.data = torch.from_numpy(w[f"encoder/{name}/weight"].astype(np.float32))
            conv.bias.data = torch.from_numpy(w[f"encoder/{name}/bias"].astype(np.float32))
        self.register_buffer("positions", torch.from_numpy(w["encoder/position_encodings/encodings"].astype(np.float32)))
        self.blocks = nn.ModuleList(Block(w, f"encoder/layer_{i}", False) for i in range(6))
        self.ln = _norm(w, "encoder/layer_norm")
        self.cross = nn.ModuleList(_linear(w, f"decoder/layer_{i}/attention/linear_1") for i in range(6))

    def forward(self, mel: Any) -> tuple[Any, Any]:
        x = torch.nn.functional.gelu(self.conv2(torch.nn.functional.gelu(self.conv1(mel))))
        x = x.transpose(1, 2) + self.positions
        for block in self.blocks:
            x = block(x)
        x = self.ln(x)
        kv = [c(x).chunk(2, -1) for c in self.cross]
        return torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv])


class WhisperDecoder(nn.Module):
    """tokens [1, T] + cross_k, cross_v -> logits of the token after the last one [1, 51865]."""

    def __init__(self, w: dict[str, np.ndarray]):
        super().__init__()
        self.register_buffer("embeddings", torch.from_numpy(w["decoder/embeddings/weight"].astype(np.float32)))
        self.register_buffer("positions", torch.from_numpy(w["decoder/position_encodings/encodings"].astype(np.float32)))
        self.blocks = nn.ModuleList(Block(w, f"decoder/layer_{i}", True) for i in range(6))
        self.ln = _norm(w, "decoder/layer_norm")

    def forward(self, tokens: Any, cross_k: Any, cross_v: Any) -> Any:
        t = tokens.shape[1]
        x = self.embeddings[tokens] + self.positions[:t]
        mask = torch.triu(torch.full((t, t), -1e9), 1)
        for i, block in enumerate(self.blocks):
            x = block(x, mask, cross_k[i], cross_v[i])
        return self.ln(x[:, -1]) @ self.embeddings.T
