"""Small real models for the tests (importable as factories: tests.models:tiny_cnn)."""

from __future__ import annotations

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
