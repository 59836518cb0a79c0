"""Inception-ResNet-v1 (FaceNet) in Keras 3, with the layer names of ``facenet_keras.h5``.

The architecture follows the checkpoint's ``model_config`` layer for layer (426 layers), so
weights load by name. Its 21 ``Lambda`` "ScaleSum" layers (``a + b * scale``) are the
:class:`ScaleSum` layer here: real code with ``get_config``, never deserialised bytecode.
Blocks are functions; repeats are loops.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.quiet import import_tensorflow

import_tensorflow()  # before Keras loads TensorFlow: no start-up noise on the terminal

import keras  # noqa: E402
from keras import layers  # noqa: E402

# Residual scales of the original network (davidsandberg/facenet inception_resnet_v1.py).
BLOCK35_SCALE = 0.17
BLOCK17_SCALE = 0.10
BLOCK8_SCALE = 0.20
BN_EPSILON = 0.001
BN_MOMENTUM = 0.995
FULL_REPEATS = (5, 10, 5)
INPUT_SIZE = 160
EMBEDDING_LAYER = "Bottleneck_BatchNorm"
NORMALIZE_LAYER = "L2Normalize"


@keras.saving.register_keras_serializable(package="facenet")
class ScaleSum(layers.Layer):
    """``inputs[0] + inputs[1] * scale``: the residual merge of an Inception-ResNet block."""

    def __init__(self, scale: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, inputs):
        shortcut, residual = inputs
        return shortcut + residual * self.scale

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self) -> dict:
        return {**super().get_config(), "scale": self.scale}


def conv_bn(x, filters: int, kernel, name: str, strides: int = 1, padding: str = "same"):
    """Conv2D (no bias) → BatchNorm (centre only) → ReLU, named ``name``, ``name_BatchNorm``…"""
    x = layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False, name=name)(
        x
    )
    x = layers.BatchNormalization(
        axis=3, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, scale=False, name=f"{name}_BatchNorm"
    )(x)
    return layers.Activation("relu", name=f"{name}_Activation")(x)


def _residual(x, branches: list, prefix: str, scale: float, activate: bool = True):
    """Concatenate branches, project back to the input depth, scale-add, optional ReLU."""
    mixed = layers.Concatenate(axis=3, name=f"{prefix}_Concatenate")(branches)
    up = layers.Conv2D(x.shape[-1], 1, padding="same", use_bias=True, name=f"{prefix}_Conv2d_1x1")(
        mixed
    )
    x = ScaleSum(scale, name=f"{prefix}_ScaleSum")([x, up])
    if activate:
        x = layers.Activation("relu", name=f"{prefix}_Activation")(x)
    return x


def block35(x, index: int, scale: float = BLOCK35_SCALE):
    """Inception-ResNet-A (35×35 grid in the paper; 17×17 here)."""
    p = f"Block35_{index}"
    b0 = conv_bn(x, 32, 1, f"{p}_Branch_0_Conv2d_1x1")
    b1 = conv_bn(x, 32, 1, f"{p}_Branch_1_Conv2d_0a_1x1")
    b1 = conv_bn(b1, 32, 3, f"{p}_Branch_1_Conv2d_0b_3x3")
    b2 = conv_bn(x, 32, 1, f"{p}_Branch_2_Conv2d_0a_1x1")
    b2 = conv_bn(b2, 32, 3, f"{p}_Branch_2_Conv2d_0b_3x3")
    b2 = conv_bn(b2, 32, 3, f"{p}_Branch_2_Conv2d_0c_3x3")
    return _residual(x, [b0, b1, b2], p, scale)


def block17(x, index: int, scale: float = BLOCK17_SCALE):
    """Inception-ResNet-B."""
    p = f"Block17_{index}"
    b0 = conv_bn(x, 128, 1, f"{p}_Branch_0_Conv2d_1x1")
    b1 = conv_bn(x, 128, 1, f"{p}_Branch_1_Conv2d_0a_1x1")
    b1 = conv_bn(b1, 128, (1, 7), f"{p}_Branch_1_Conv2d_0b_1x7")
    b1 = conv_bn(b1, 128, (7, 1), f"{p}_Branch_1_Conv2d_0c_7x1")
    return _residual(x, [b0, b1], p, scale)


def block8(x, index: int, scale: float = BLOCK8_SCALE, activate: bool = True):
    """Inception-ResNet-C."""
    p = f"Block8_{index}"
    b0 = conv_bn(x, 192, 1, f"{p}_Branch_0_Conv2d_1x1")
    b1 = conv_bn(x, 192, 1, f"{p}_Branch_1_Conv2d_0a_1x1")
    b1 = conv_bn(b1, 192, (1, 3), f"{p}_Branch_1_Conv2d_0b_1x3")
    b1 = conv_bn(b1, 192, (3, 1), f"{p}_Branch_1_Conv2d_0c_3x1")
    return _residual(x, [b0, b1], p, scale, activate)


def reduction_a(x):
    """Mixed_6a: grid reduction to 8×8."""
    b0 = conv_bn(x, 384, 3, "Mixed_6a_Branch_0_Conv2d_1a_3x3", strides=2, padding="valid")
    b1 = conv_bn(x, 192, 1, "Mixed_6a_Branch_1_Conv2d_0a_1x1")
    b1 = conv_bn(b1, 192, 3, "Mixed_6a_Branch_1_Conv2d_0b_3x3")
    b1 = conv_bn(b1, 256, 3, "Mixed_6a_Branch_1_Conv2d_1a_3x3", strides=2, padding="valid")
    b2 = layers.MaxPooling2D(
        3, strides=2, padding="valid", name="Mixed_6a_Branch_2_MaxPool_1a_3x3"
    )(x)
    return layers.Concatenate(axis=3, name="Mixed_6a")([b0, b1, b2])


def reduction_b(x):
    """Mixed_7a: grid reduction to 3×3."""
    p = "Mixed_7a"
    b0 = conv_bn(x, 256, 1, f"{p}_Branch_0_Conv2d_0a_1x1")
    b0 = conv_bn(b0, 384, 3, f"{p}_Branch_0_Conv2d_1a_3x3", strides=2, padding="valid")
    b1 = conv_bn(x, 256, 1, f"{p}_Branch_1_Conv2d_0a_1x1")
    b1 = conv_bn(b1, 256, 3, f"{p}_Branch_1_Conv2d_1a_3x3", strides=2, padding="valid")
    b2 = conv_bn(x, 256, 1, f"{p}_Branch_2_Conv2d_0a_1x1")
    b2 = conv_bn(b2, 256, 3, f"{p}_Branch_2_Conv2d_0b_3x3")
    b2 = conv_bn(b2, 256, 3, f"{p}_Branch_2_Conv2d_1a_3x3", strides=2, padding="valid")
    b3 = layers.MaxPooling2D(3, strides=2, padding="valid", name=f"{p}_Branch_3_MaxPool_1a_3x3")(x)
    return layers.Concatenate(axis=3, name=p)([b0, b1, b2, b3])


def stem(x):
    """Conv2d_1a … Conv2d_4b: 160×160×3 → 17×17×256."""
    x = conv_bn(x, 32, 3, "Conv2d_1a_3x3", strides=2, padding="valid")
    x = conv_bn(x, 32, 3, "Conv2d_2a_3x3", padding="valid")
    x = conv_bn(x, 64, 3, "Conv2d_2b_3x3")
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="MaxPool_3a_3x3")(x)
    x = conv_bn(x, 80, 1, "Conv2d_3b_1x1", padding="valid")
    x = conv_bn(x, 192, 3, "Conv2d_4a_3x3", padding="valid")
    return conv_bn(x, 256, 3, "Conv2d_4b_3x3", strides=2, padding="valid")


def head(x, embedding_dim: int = 128, dropout: float = 0.2, normalize: bool = True):
    """AvgPool → Dropout → Bottleneck → Bottleneck_BatchNorm (→ L2 normalisation)."""
    x = layers.GlobalAveragePooling2D(name="AvgPool")(x)
    x = layers.Dropout(dropout, name="Dropout")(x)
    x = layers.Dense(embedding_dim, use_bias=False, name="Bottleneck")(x)
    x = layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, scale=False, name=EMBEDDING_LAYER
    )(x)
    if normalize:
        x = layers.UnitNormalization(axis=-1, name=NORMALIZE_LAYER)(x)
    return x


def build_facenet(
    repeats: Sequence[int] = FULL_REPEATS,
    input_size: int = INPUT_SIZE,
    embedding_dim: int = 128,
    dropout: float = 0.2,
    normalize: bool = True,
    name: str = "inception_resnet_v1",
) -> keras.Model:
    """Build Inception-ResNet-v1. ``repeats`` = (Block35, Block17, Block8) counts.

    The full network is ``(5, 10, 5)``; the final, unactivated Block8 (scale 1.0) always
    follows, named ``Block8_{repeats[2] + 1}``. Small repeats give a tiny model for tests.
    """
    n35, n17, n8 = repeats
    inputs = keras.Input((input_size, input_size, 3), name="input_1")
    x = stem(inputs)
    for i in range(1, n35 + 1):
        x = block35(x, i)
    x = reduction_a(x)
    for i in range(1, n17 + 1):
        x = block17(x, i)
    x = reduction_b(x)
    for i in range(1, n8 + 1):
        x = block8(x, i)
    x = block8(x, n8 + 1, scale=1.0, activate=False)
    outputs = head(x, embedding_dim, dropout, normalize)
    return keras.Model(inputs, outputs, name=name)
