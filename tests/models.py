"""Small real models for the tests (importable as factories: tests.models:tiny_cnn)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class TinyCNN(nn.Module):
    """A small classifier with the parts real edge CNNs have: conv+BN+ReLU6, a depthwise block with a
    residual add, global pooling and a linear head."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.block = nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
            nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16),
        )
        self.expand = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU6())
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.block(x)
        x = self.expand(x)
        return self.head(x.mean((2, 3)))


def tiny_cnn() -> TinyCNN:
    torch.manual_seed(0)
    model = TinyCNN().eval()
    # Non-trivial BN statistics, as a trained model would have.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    model.input_shape = (1, 3, 32, 32)
    return model


def tiny_cnn_marked() -> TinyCNN:
    """tiny_cnn that leaves a marker (the Ray node it runs on) in $EDGESDK_TEST_MARKERS and then takes
    a few seconds, so a test can kill that node while a conversion runs there."""
    import os
    import time
    from pathlib import Path

    folder = os.environ.get("EDGESDK_TEST_MARKERS")
    if folder:
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
        (Path(folder) / f"{node}-{os.getpid()}").write_text(node)
        time.sleep(float(os.environ.get("EDGESDK_TEST_MARKER_SLEEP", "4")))
    return tiny_cnn()


class TinyMLP(nn.Module):
    """Linear-only: the kind of model dynamic INT8 quantization suits."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def tiny_mlp() -> TinyMLP:
    torch.manual_seed(0)
    return TinyMLP().eval()


class Unexportable(nn.Module):
    """Runs in eager mode but uses an operator neither ONNX exporter supports (QR decomposition)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.qr(x)[0]


def tiny_keras_cnn():
    """A small channels-last Keras classifier (conv, depthwise, residual add, pooling, dense)."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu6")(inp)
    y = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    y = keras.layers.BatchNormalization()(y)
    x = keras.layers.Add()([x, keras.layers.ReLU(6.0)(y)])
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu6")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(10)(x)
    return keras.Model(inp, out, name="tiny_keras_cnn")


class TinyBert(nn.Module):
    """A BERT-shaped encoder: token + position embeddings, post-norm self-attention blocks with an
    additive padding mask and exact-GELU feed-forwards. Takes int64 ids and mask, returns hidden states."""

    def __init__(self, vocab: int = 1000, dim: int = 64, heads: int = 4, layers: int = 2, max_len: int = 64):
        super().__init__()
        self.heads = heads
        self.tokens, self.positions = nn.Embedding(vocab, dim), nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.ModuleList(nn.Linear(dim, 3 * dim) for _ in range(layers))
        self.proj = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        self.norm1 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.ffn = nn.ModuleList(nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
                                 for _ in range(layers))
        self.norm2 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        b, t = input_ids.shape
        x = self.norm(self.tokens(input_ids) + self.positions(torch.arange(t)[None]))
        bias = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
        for qkv, proj, norm1, ffn, norm2 in zip(self.qkv, self.proj, self.norm1, self.ffn, self.norm2):
            q, k, v = qkv(x).reshape(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            attn = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5 + bias, dim=-1)
            x = norm1(x + proj((attn @ v).transpose(1, 2).reshape(b, t, -1)))
            x = norm2(x + ffn(x))
        return x


def tiny_bert() -> TinyBert:
    torch.manual_seed(0)
    model = TinyBert().eval()
    ids = torch.randint(5, 1000, (1, 16))
    model.example_inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return model


def token_batches(count: int, length: int, seed: int, vocab: int = 1000) -> list[dict[str, np.ndarray]]:
    """Held-out token batches of one: random ids with a padded tail (mask 0) on every other sample."""
    rng = np.random.default_rng(seed)
    batches = []
    for i in range(count):
        ids = rng.integers(5, vocab, (1, length)).astype(np.int64)
        mask = np.ones((1, length), np.int64)
        if i % 2:
            mask[:, length - 1 - i % (length // 2):] = 0
            ids[mask == 0] = 0
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


class TinyConvNeXt(nn.Module):
    """ConvNeXt's parts: a patchify stem, depthwise 7x7 convs, channels-last LayerNorm, exact-GELU MLPs with
    layer scale, residuals. The ops that kept ConvNeXt off TFLite (Erf) are all here."""

    def __init__(self, classes: int = 10, dim: int = 32):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, stride=4)
        self.dw = nn.ModuleList(nn.Conv2d(dim, dim, 7, padding=3, groups=dim) for _ in range(2))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(2))
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
                                  for _ in range(2))
        self.scale = nn.Parameter(torch.full((2, dim), 0.5))
        self.head_norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i, (dw, norm, mlp) in enumerate(zip(self.dw, self.norms, self.mlps)):
            y = mlp(norm(dw(x).permute(0, 2, 3, 1))) * self.scale[i]
            x = x + y.permute(0, 3, 1, 2)
        return self.head(self.head_norm(x.mean((2, 3))))


class TinyViT(nn.Module):
    """A Vision Transformer: 8x8 patches, a class token, learned positions, pre-norm attention blocks with
    exact-GELU MLPs, a linear head on the class token."""

    def __init__(self, classes: int = 10, dim: int = 64, heads: int = 4, layers: int = 2, image: int = 32):
        super().__init__()
        self.heads = heads
        self.patches = nn.Conv2d(3, dim, 8, stride=8)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (image // 8) ** 2 + 1, dim) * 0.02)
        self.norm1 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.qkv = nn.ModuleList(nn.Linear(dim, 3 * dim) for _ in range(layers))
        self.proj = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        self.norm2 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.mlp = nn.ModuleList(nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
                                 for _ in range(layers))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patches(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        b, t, d = x.shape
        for norm1, qkv, proj, norm2, mlp in zip(self.norm1, self.qkv, self.proj, self.norm2, self.mlp):
            q, k, v = qkv(norm1(x)).reshape(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            attn = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1)
            x = x + proj((attn @ v).transpose(1, 2).reshape(b, t, d))
            x = x + mlp(norm2(x))
        return self.head(self.norm(x[:, 0]))
