"""Inception family: GoogLeNet (Inception v1), Inception v3 and Inception-ResNet v2.

Four models, four twins, one set of building blocks. Every network here is a sequence of
steps (a conv-BN-ReLU unit, a pooling, an Inception block of parallel branches, or an
Inception-ResNet block), written as data in the torchvision/TF-slim notation and run by one
function; the twins differ only in their :class:`_Style` (batch-norm scale, and how pooling
is padded) and in their layer names.

* ``googlenet``: torchvision's ``googlenet``. Batch norm after every convolution (the 2014
  paper has none, and has local response normalisation instead); max pools with
  ``ceil_mode=True``. torchvision's third branch uses a 3x3 convolution where the paper has
  5x5 (pytorch/vision#906); it is kept, as the pretrained weights need it.
* ``inception_v3``: keras.applications' ``InceptionV3``, layer-for-layer: batch norm without
  scale, and average pools padded "same" with the padding left out of the average (TF).
  Keras 3 loads Keras' legacy h5 files by the order of the layers that have weights, and
  that order is fixed by the graph; this one has Keras' graph, so the files load here.
* ``inception_v3_tv``: torchvision's ``inception_v3`` (``Inception3``): batch norm with scale,
  and average pools that count the zero padding (``count_include_pad=True``), done as zero
  padding then a valid average pool.
* ``inception_resnet_v2``: keras.applications' ``InceptionResNetV2``, layer-for-layer as
  above, with Inception v3's stem.

Layer names:
    The torchvision twins use torchvision's module paths with dots replaced by
    underscores, so a state-dict key ``<path>.<tensor>`` belongs to the layer named
    ``<path>`` with ``.`` -> ``_``. BasicConv2d's ``.conv`` and ``.bn`` children thereby
    become ``_conv`` and ``_bn`` suffixes (our ``_relu`` layer has no torchvision tensor):
    ``inception3a.branch2.1.conv.weight`` -> ``inception3a_branch2_1_conv``,
    ``Mixed_5b.branch5x5_1.bn.running_mean`` -> ``Mixed_5b_branch5x5_1_bn``,
    ``aux1.fc1.weight`` -> ``aux1_fc1``, ``AuxLogits.conv1.conv.weight`` ->
    ``AuxLogits_conv1_conv``. The one exception is the main classifier: ``fc.*`` ->
    ``predictions``, the head name every zoo model shares. Tensors: conv ``weight`` OIHW ->
    ``kernel`` HWIO; linear ``weight`` (out, in) -> ``kernel`` (in, out); BN ``weight``,
    ``bias``, ``running_mean``, ``running_var`` -> ``gamma``, ``beta``, ``moving_mean``,
    ``moving_variance``; ``num_batches_tracked`` is dropped. GoogLeNet's auxiliary heads
    flatten in PyTorch's channel-first order (a ``Permute`` precedes the ``Flatten``), so
    ``aux*.fc1`` is a plain transpose too.

    The Keras twins keep the block-level names Keras gives (``mixed0`` ... ``mixed10``,
    ``mixed_5b``, ``mixed_6a``, ``mixed_7a``, ``block35_1_mixed``, ``block35_1_conv``,
    ``block35_1`` (the scaled sum), ``block35_1_ac``, ``avg_pool``, ``predictions``) and
    name every conv-BN unit ``<block>_<branch>_conv/_bn/_relu``, with torchvision's branch
    names for Inception v3 (``mixed0_branch5x5_1_conv``) and TF-slim's numbering for
    Inception-ResNet v2 (``mixed_5b_branch_1_0_conv``: branch 1, step 0); the stem is
    ``Conv2d_1a_3x3`` ... ``Conv2d_4a_3x3`` in all three v3-style models. Keras' own
    ``mixed9_0``/``mixed9_1`` are ``mixed9_branch3x3``/``mixed10_branch3x3`` here, and its
    ``conv_7b``/``conv_7b_ac`` are ``conv_7b_conv``/``conv_7b_relu``. Weight files load by
    order, so the names are free to be systematic.

Feature maps (``features=True``), at strides 4, 8, 16 and 32:
    * googlenet: ``conv3``, ``inception3b``, ``inception4e``, ``inception5b``.
    * inception_v3: ``Conv2d_4a_3x3``, ``mixed2``, ``mixed7``, ``mixed10``.
    * inception_v3_tv: ``Conv2d_4a_3x3``, ``Mixed_5d``, ``Mixed_6e``, ``Mixed_7c``.
    * inception_resnet_v2: ``Conv2d_4a_3x3``, ``block35_10_ac``, ``block17_20_ac``,
      ``conv_7b``.

    The layers that produce them are a conv unit's ``_relu``, a block's concatenation and
    an Inception-ResNet block's ``_ac``. The v3-style stems use valid convolutions, so
    "stride 4" is nominal there (71x71 at 299).

Auxiliary heads:
    ``googlenet`` and ``inception_v3_tv`` take ``aux_logits=True`` (off by default). The
    model then has outputs ``output`` (main), ``output_aux1`` (and for GoogLeNet
    ``output_aux2``): GoogLeNet's aux1 sits after ``inception4a`` and aux2 after
    ``inception4d`` (torchvision returns them as ``(x, aux2, aux1)`` in training mode; here
    the order is main, aux1, aux2); Inception v3's after ``Mixed_6e``. Train with e.g.
    ``loss_weights={"output": 1.0, "output_aux1": 0.3, "output_aux2": 0.3}`` (the GoogLeNet
    paper weights its auxiliary losses 0.3; TF-slim trained Inception v3 with 0.4). For
    inference, keep the main output only with :func:`without_aux`; it shares layers and
    weights with the training model, and saving it drops the auxiliary weights.

Preprocessing:
    torchvision's ``transform_input`` is not a layer here. It re-maps torch-normalised input
    to ``(pixels / 255 - 0.5) / 0.5``, which is the "tf" preset; torchvision turns it on with
    its pretrained GoogLeNet and Inception v3 weights, so those weight sets must carry
    ``preprocessing="tf"``; the model's first layer (``Normalize``) then does the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

import keras
from keras import layers

from zoo.architectures._common import pooled_top
from zoo.layers import AdaptiveAveragePooling2D, conv_bn_act, torch_pool
from zoo.registry import Body, Spec, TimmRule, TorchvisionRule, register
from zoo.weights.catalog import (
    LICENCE_KERAS_INCEPTION_V3,
    LICENCE_KERAS_UNSTATED,
    keras_weights,
    timm_weights,
    torchvision_weights,
)

# --------------------------------------------------------------------------------------
# Steps: the data a network is written in.


class Conv(NamedTuple):
    """A conv-BN-ReLU unit (torchvision's BasicConv2d, Keras' ``conv2d_bn``).

    Attributes:
        name: Layer-name stem; the unit's layers are ``<prefix><name>_conv/_bn/_relu``.
        filters: Output channels.
        kernel: Kernel size, square or ``(height, width)``.
        strides: Stride.
        padding: ``"same"``, ``"valid"`` or PyTorch's explicit symmetric zero padding.
    """

    name: str
    filters: int
    kernel: int | tuple[int, int]
    strides: int = 1
    padding: str | int = "same"


class Pool(NamedTuple):
    """A pooling step whose padding follows the model's :class:`_Style`.

    Attributes:
        name: Layer name (after the prefix).
        kind: ``"max"`` or ``"avg"``.
        strides: 1 (padded to keep the size) or 2 (unpadded, but for the last window
            PyTorch's ``ceil_mode`` may add).
        size: Window size.
    """

    name: str
    kind: str
    strides: int = 1
    size: int = 3


class Fork(NamedTuple):
    """Parallel convolutions on one tensor, concatenated (Inception v3's 1x3 / 3x1 pairs)."""

    name: str
    convs: tuple[Conv, ...]


class Block(NamedTuple):
    """An Inception block: branches of steps run on one input, concatenated as ``name``."""

    name: str
    branches: tuple[tuple, ...]


class Residual(NamedTuple):
    """An Inception-ResNet block: ``relu(x + scale * conv1x1(concat(branches(x))))``.

    Attributes:
        name: Block name (Keras': ``block35_1``).
        branches: The residual branches.
        scale: Scale of the residual before the sum.
        activation: Whether a ReLU follows the sum (not after the last block8).
    """

    name: str
    branches: tuple[tuple, ...]
    scale: float
    activation: bool = True


@dataclass(frozen=True)
class _Style:
    """How one library realises the shared steps.

    Attributes:
        bn_scale: Whether batch norm learns a scale (Keras' Inception models do not).
        torch_padding: PyTorch pooling (explicit padding: -inf for max, zeros counted in the
            average) rather than TF's "same" pooling (padding left out of the average).
        ceil_mode: PyTorch's ``ceil_mode`` for the max pools (GoogLeNet).
        bn_epsilon: 1e-3 in all four twins.
    """

    bn_scale: bool
    torch_padding: bool
    ceil_mode: bool = False
    bn_epsilon: float = 1e-3

    def conv(self, x, conv: Conv, name: str):
        return conv_bn_act(x, conv.filters, conv.kernel, name=name, strides=conv.strides,
                           padding=conv.padding, bn_epsilon=self.bn_epsilon,
                           bn_scale=self.bn_scale)

    def pool(self, x, pool: Pool, name: str):
        if self.torch_padding:
            return torch_pool(x, pool.size, pool.strides, name=name,
                              padding=1 if pool.strides == 1 else 0, ceil_mode=self.ceil_mode,
                              kind=pool.kind)
        layer = layers.MaxPooling2D if pool.kind == "max" else layers.AveragePooling2D
        return layer(pool.size, strides=pool.strides,
                     padding="same" if pool.strides == 1 else "valid", name=name)(x)


KERAS_STYLE = _Style(bn_scale=False, torch_padding=False)
TORCHVISION_STYLE = _Style(bn_scale=True, torch_padding=True)
GOOGLENET_STYLE = _Style(bn_scale=True, torch_padding=True, ceil_mode=True)


@keras.saving.register_keras_serializable(package="zoo")
class ScaledResidual(layers.Layer):
    """``inputs[0] + inputs[1] * scale``: Inception-ResNet's scaled residual sum.

    The same arithmetic as Keras' ``CustomScaleLayer`` (so outputs match bit for bit), but
    registered under ``zoo`` so that a saved ``.keras`` file needs no custom objects.

    Args:
        scale: Scale of the residual (``inputs[1]``).
    """

    def __init__(self, scale: float, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, inputs):
        shortcut, residual = inputs
        return shortcut + residual * self.scale

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        config = super().get_config()
        config.update(scale=self.scale)
        return config


def run_steps(x, steps, style: _Style, prefix: str = ""):
    """Runs a sequence of steps.

    Args:
        x: Input tensor.
        steps: :class:`Conv`, :class:`Pool`, :class:`Fork`, :class:`Block` or
            :class:`Residual` items.
        style: The twin's style.
        prefix: Prepended to every layer name (a block's name and ``_`` inside blocks).

    Returns:
        ``(output, taps)``: the last tensor, and every step's output by step name.
    """
    taps = {}
    for step in steps:
        name = prefix + step.name
        if isinstance(step, Conv):
            x = style.conv(x, step, name)
        elif isinstance(step, Pool):
            x = style.pool(x, step, name)
        elif isinstance(step, Fork):
            x = layers.Concatenate(name=name)(
                [style.conv(x, conv, prefix + conv.name) for conv in step.convs])
        elif isinstance(step, Block):
            x = layers.Concatenate(name=name)(_branches(x, step, style))
        elif isinstance(step, Residual):
            mixed = layers.Concatenate(name=f"{name}_mixed")(_branches(x, step, style))
            # Back to the shortcut's width: a biased 1x1 convolution, no batch norm.
            up = layers.Conv2D(x.shape[-1], 1, use_bias=True, name=f"{name}_conv")(mixed)
            x = ScaledResidual(step.scale, name=name)([x, up])
            if step.activation:
                x = layers.Activation("relu", name=f"{name}_ac")(x)
        else:
            raise TypeError(f"Unknown step {step!r}.")
        taps[step.name] = x
    return x, taps


def _branches(x, block: Block | Residual, style: _Style) -> list:
    return [run_steps(x, branch, style, prefix=f"{block.name}_")[0]
            for branch in block.branches]


# --------------------------------------------------------------------------------------
# GoogLeNet (torchvision).


def _googlenet_block(name: str, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int,
                     ch5x5: int, pool_proj: int) -> Block:
    # torchvision's Inception(in, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj); its
    # branches 2 to 4 are nn.Sequential, hence the _0/_1 in their names.
    return Block(name, (
        (Conv("branch1", ch1x1, 1),),
        (Conv("branch2_0", ch3x3red, 1), Conv("branch2_1", ch3x3, 3)),
        # torchvision's 3x3 where the paper has 5x5; the pretrained weights are 3x3.
        (Conv("branch3_0", ch5x5red, 1), Conv("branch3_1", ch5x5, 3)),
        (Pool("branch4_0", "max"), Conv("branch4_1", pool_proj, 1)),
    ))


GOOGLENET_LAYOUT = (
    Conv("conv1", 64, 7, strides=2, padding=3),
    Pool("maxpool1", "max", strides=2),
    Conv("conv2", 64, 1),
    Conv("conv3", 192, 3),
    Pool("maxpool2", "max", strides=2),
    _googlenet_block("inception3a", 64, 96, 128, 16, 32, 32),
    _googlenet_block("inception3b", 128, 128, 192, 32, 96, 64),
    Pool("maxpool3", "max", strides=2),
    _googlenet_block("inception4a", 192, 96, 208, 16, 48, 64),
    _googlenet_block("inception4b", 160, 112, 224, 24, 64, 64),
    _googlenet_block("inception4c", 128, 128, 256, 24, 64, 64),
    _googlenet_block("inception4d", 112, 144, 288, 32, 64, 64),
    _googlenet_block("inception4e", 256, 160, 320, 32, 128, 128),
    Pool("maxpool4", "max", strides=2, size=2),
    _googlenet_block("inception5a", 256, 160, 320, 32, 128, 128),
    _googlenet_block("inception5b", 384, 192, 384, 48, 128, 128),
)


def _googlenet_aux(x, name: str, num_classes: int):
    """The InceptionAux head of torchvision: pool to 4x4, 1x1 conv, fc 1024, dropout 0.7, fc."""
    x = AdaptiveAveragePooling2D((4, 4), name=f"{name}_pool")(x)
    x = GOOGLENET_STYLE.conv(x, Conv("conv", 128, 1), f"{name}_conv")
    # torch.flatten on NCHW is channel-major; flattening the same order keeps fc1's
    # weights a plain transpose of torchvision's.
    x = layers.Permute((3, 1, 2), name=f"{name}_channels_first")(x)
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(1024, activation="relu", name=f"{name}_fc1")(x)
    x = layers.Dropout(0.7, name=f"{name}_dropout")(x)
    return layers.Dense(num_classes, name=f"{name}_fc2")(x)


# --------------------------------------------------------------------------------------
# Inception v3 (Keras and torchvision) and Inception-ResNet v2 (Keras).

# TF-slim's stem, shared by Inception v3 and Inception-ResNet v2, up to stride 4.
V3_STEM = (
    Conv("Conv2d_1a_3x3", 32, 3, strides=2, padding="valid"),
    Conv("Conv2d_2a_3x3", 32, 3, padding="valid"),
    Conv("Conv2d_2b_3x3", 64, 3),
    Pool("maxpool1", "max", strides=2),
    Conv("Conv2d_3b_1x1", 80, 1, padding="valid"),
    Conv("Conv2d_4a_3x3", 192, 3, padding="valid"),
)


def _inception_a(pool_features: int) -> tuple:
    return (
        (Conv("branch1x1", 64, 1),),
        (Conv("branch5x5_1", 48, 1), Conv("branch5x5_2", 64, 5)),
        (Conv("branch3x3dbl_1", 64, 1), Conv("branch3x3dbl_2", 96, 3),
         Conv("branch3x3dbl_3", 96, 3)),
        (Pool("pool", "avg"), Conv("branch_pool", pool_features, 1)),
    )


def _inception_c(channels_7x7: int) -> tuple:
    c7 = channels_7x7
    return (
        (Conv("branch1x1", 192, 1),),
        (Conv("branch7x7_1", c7, 1), Conv("branch7x7_2", c7, (1, 7)),
         Conv("branch7x7_3", 192, (7, 1))),
        (Conv("branch7x7dbl_1", c7, 1), Conv("branch7x7dbl_2", c7, (7, 1)),
         Conv("branch7x7dbl_3", c7, (1, 7)), Conv("branch7x7dbl_4", c7, (7, 1)),
         Conv("branch7x7dbl_5", 192, (1, 7))),
        (Pool("pool", "avg"), Conv("branch_pool", 192, 1)),
    )


_INCEPTION_B = (
    (Conv("branch3x3", 384, 3, strides=2, padding="valid"),),
    (Conv("branch3x3dbl_1", 64, 1), Conv("branch3x3dbl_2", 96, 3),
     Conv("branch3x3dbl_3", 96, 3, strides=2, padding="valid")),
    (Pool("pool", "max", strides=2),),
)
_INCEPTION_D = (
    (Conv("branch3x3_1", 192, 1), Conv("branch3x3_2", 320, 3, strides=2, padding="valid")),
    (Conv("branch7x7x3_1", 192, 1), Conv("branch7x7x3_2", 192, (1, 7)),
     Conv("branch7x7x3_3", 192, (7, 1)),
     Conv("branch7x7x3_4", 192, 3, strides=2, padding="valid")),
    (Pool("pool", "max", strides=2),),
)
_INCEPTION_E = (
    (Conv("branch1x1", 320, 1),),
    (Conv("branch3x3_1", 384, 1),
     Fork("branch3x3", (Conv("branch3x3_2a", 384, (1, 3)), Conv("branch3x3_2b", 384, (3, 1))))),
    (Conv("branch3x3dbl_1", 448, 1), Conv("branch3x3dbl_2", 384, 3),
     Fork("branch3x3dbl", (Conv("branch3x3dbl_3a", 384, (1, 3)),
                           Conv("branch3x3dbl_3b", 384, (3, 1))))),
    (Pool("pool", "avg"), Conv("branch_pool", 192, 1)),
)

# (torchvision name, Keras name, branches), in order.
_V3_BLOCKS = (
    ("Mixed_5b", "mixed0", _inception_a(32)),
    ("Mixed_5c", "mixed1", _inception_a(64)),
    ("Mixed_5d", "mixed2", _inception_a(64)),
    ("Mixed_6a", "mixed3", _INCEPTION_B),
    ("Mixed_6b", "mixed4", _inception_c(128)),
    ("Mixed_6c", "mixed5", _inception_c(160)),
    ("Mixed_6d", "mixed6", _inception_c(160)),
    ("Mixed_6e", "mixed7", _inception_c(192)),
    ("Mixed_7a", "mixed8", _INCEPTION_D),
    ("Mixed_7b", "mixed9", _INCEPTION_E),
    ("Mixed_7c", "mixed10", _INCEPTION_E),
)


def _v3_layout(torchvision_names: bool) -> tuple:
    blocks = tuple(Block(tv if torchvision_names else keras_name, branches)
                   for tv, keras_name, branches in _V3_BLOCKS)
    return V3_STEM + (Pool("maxpool2", "max", strides=2),) + blocks


def _v3_aux(x, num_classes: int):
    """The AuxLogits head of Inception3: avg pool 5/3, 1x1 conv 128, 5x5 conv 768, fc."""
    if min(x.shape[1:3]) < 17:
        raise ValueError(
            f"aux_logits=True needs Mixed_6e to be at least 17x17 (an input of at least "
            f"299x299); got {tuple(x.shape[1:3])}. Use a larger input or aux_logits=False.")
    x = layers.AveragePooling2D(5, strides=3, name="AuxLogits_pool")(x)
    x = TORCHVISION_STYLE.conv(x, Conv("conv0", 128, 1), "AuxLogits_conv0")
    x = TORCHVISION_STYLE.conv(x, Conv("conv1", 768, 5, padding="valid"), "AuxLogits_conv1")
    x = layers.GlobalAveragePooling2D(name="AuxLogits_avg_pool")(x)
    return layers.Dense(num_classes, name="AuxLogits_fc")(x)


def _numbered(*branches) -> tuple:
    """Names steps ``branch_<i>_<j>`` (TF-slim's ``Branch_i``), for blocks Keras leaves unnamed.

    Args:
        *branches: Per branch, its steps: ``Conv`` arguments without the name, or a
            :class:`Pool` whose name is filled in.

    Returns:
        The branches as :class:`Conv` and :class:`Pool` steps.
    """
    return tuple(
        tuple(step._replace(name=f"branch_{i}_{j}") if isinstance(step, Pool)
              else Conv(f"branch_{i}_{j}", *step) for j, step in enumerate(branch))
        for i, branch in enumerate(branches))


_MAX_2 = Pool("", "max", strides=2)
_BLOCK35 = _numbered(((32, 1),), ((32, 1), (32, 3)), ((32, 1), (48, 3), (64, 3)))
_BLOCK17 = _numbered(((192, 1),), ((128, 1), (160, (1, 7)), (192, (7, 1))))
_BLOCK8 = _numbered(((192, 1),), ((192, 1), (224, (1, 3)), (256, (3, 1))))

INCEPTION_RESNET_V2_LAYOUT = (
    V3_STEM
    + (Pool("maxpool2", "max", strides=2),
       Block("mixed_5b", _numbered(((96, 1),), ((48, 1), (64, 5)), ((64, 1), (96, 3), (96, 3)),
                                   (Pool("", "avg"), (64, 1)))))
    + tuple(Residual(f"block35_{i}", _BLOCK35, 0.17) for i in range(1, 11))
    + (Block("mixed_6a", _numbered(((384, 3, 2, "valid"),),
                                   ((256, 1), (256, 3), (384, 3, 2, "valid")), (_MAX_2,))),)
    + tuple(Residual(f"block17_{i}", _BLOCK17, 0.1) for i in range(1, 21))
    + (Block("mixed_7a", _numbered(((256, 1), (384, 3, 2, "valid")),
                                   ((256, 1), (288, 3, 2, "valid")),
                                   ((256, 1), (288, 3), (320, 3, 2, "valid")), (_MAX_2,))),)
    + tuple(Residual(f"block8_{i}", _BLOCK8, 0.2) for i in range(1, 10))
    + (Residual("block8_10", _BLOCK8, 1.0, activation=False),
       Conv("conv_7b", 1536, 1))
)


# --------------------------------------------------------------------------------------
# The builder.


@dataclass(frozen=True)
class _Variant:
    """One registered network: its steps, style, taps and head settings."""

    layout: tuple
    style: _Style
    features: tuple[str, ...]  # step names at strides 4, 8, 16, 32
    dropout: float
    aux: tuple[str, ...] = ()  # step names the auxiliary heads read


VARIANTS = {
    "googlenet": _Variant(GOOGLENET_LAYOUT, GOOGLENET_STYLE,
                          ("conv3", "inception3b", "inception4e", "inception5b"), 0.2,
                          aux=("inception4a", "inception4d")),
    "inception_v3": _Variant(_v3_layout(torchvision_names=False), KERAS_STYLE,
                             ("Conv2d_4a_3x3", "mixed2", "mixed7", "mixed10"), 0.0),
    "inception_v3_tv": _Variant(_v3_layout(torchvision_names=True), TORCHVISION_STYLE,
                                ("Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c"), 0.5,
                                aux=("Mixed_6e",)),
    "inception_resnet_v2": _Variant(INCEPTION_RESNET_V2_LAYOUT, KERAS_STYLE,
                                    ("Conv2d_4a_3x3", "block35_10", "block17_20", "conv_7b"),
                                    0.0),
}


def inception(x, *, variant: str, aux_logits: bool = False) -> Body:
    """Builds one of the Inception networks.

    Args:
        x: Normalised input tensor.
        variant: A key of :data:`VARIANTS` (the zoo name).
        aux_logits: Add the auxiliary classifiers as extra outputs (GoogLeNet and
            torchvision's Inception v3 only).

    Returns:
        Feature maps at strides 4, 8, 16, 32 and the classifier (global average pooling,
        the variant's dropout, ``predictions``), plus the auxiliary logits if asked.
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown Inception variant {variant!r}; expected one of "
                         f"{sorted(VARIANTS)}.")
    spec = VARIANTS[variant]
    if aux_logits and not spec.aux:
        raise ValueError(f"{variant!r} has no auxiliary classifier; got aux_logits=True.")
    _, taps = run_steps(x, spec.layout, spec.style)
    features = [taps[name] for name in spec.features]

    def top(num_classes, dropout):
        logits = pooled_top(features[-1], num_classes, dropout, default_dropout=spec.dropout)
        if not aux_logits:
            return logits
        if variant == "googlenet":
            aux = [_googlenet_aux(taps[tap], f"aux{i}", num_classes)
                   for i, tap in enumerate(spec.aux, 1)]
        else:
            aux = [_v3_aux(taps[spec.aux[0]], num_classes)]
        return [logits, *aux]

    return Body(features=features, strides=[4, 8, 16, 32], top=top)


def without_aux(model: keras.Model) -> keras.Model:
    """Returns the inference model of a model built with ``aux_logits=True``.

    Args:
        model: A model whose first output is the main classifier.

    Returns:
        A model with the main output only, sharing layers and weights with ``model``;
        ``model`` itself when it has a single output.
    """
    if len(model.outputs) == 1:
        return model
    return keras.Model(model.input, model.outputs[0], name=model.name)


# --------------------------------------------------------------------------------------
# Registry entries.

_V1_PAPER = ("Szegedy et al., Going Deeper with Convolutions, CVPR 2015 (arXiv:1409.4842)")
_V3_PAPER = ("Szegedy, Vanhoucke, Ioffe, Shlens and Wojna, Rethinking the Inception "
             "Architecture for Computer Vision, CVPR 2016 (arXiv:1512.00567)")
_IRV2_PAPER = ("Szegedy, Ioffe, Vanhoucke and Alemi, Inception-v4, Inception-ResNet and the "
               "Impact of Residual Connections on Learning, AAAI 2017 (arXiv:1602.07261)")

def torchvision_layer_name(path: str) -> str:
    """Torchvision's module path -> zoo layer name: dots become underscores, fc the head."""
    return "predictions" if path == "fc" else path.replace(".", "_")


def timm_v3_module_of(layer: str) -> str | None:
    """The timm ``inception_v3`` module path of a zoo layer (torchvision's, as timm keeps it).

    The inverse of :func:`torchvision_layer_name`: a unit's ``_conv``/``_bn`` suffix and the
    block prefix (``Mixed_5b_``, ``AuxLogits_``) become path components again.
    """
    if layer == "predictions":
        return "fc"
    path = re.sub(r"_(conv|bn)$", r".\1", layer)
    return re.sub(r"^(Mixed_\d[a-e]|AuxLogits)_", r"\1.", path)


# timm's inception_resnet_v2 (a port of TF-slim's checkpoint) names its stem after TF-slim
# and its repeated blocks as three Sequentials and a last block8.
_IRV2_STEM = {"Conv2d_1a_3x3": "conv2d_1a", "Conv2d_2a_3x3": "conv2d_2a",
              "Conv2d_2b_3x3": "conv2d_2b", "Conv2d_3b_1x1": "conv2d_3b",
              "Conv2d_4a_3x3": "conv2d_4a", "conv_7b": "conv2d_7b"}
_IRV2_REPEATS = {"35": "repeat", "17": "repeat_1", "8": "repeat_2"}


def _irv2_block(name: str) -> str:
    kind, index = re.fullmatch(r"block(\d+)_(\d+)", name).groups()
    return "block8" if name == "block8_10" else f"{_IRV2_REPEATS[kind]}.{int(index) - 1}"


def timm_irv2_module_of(layer: str) -> str | None:
    """The timm ``inception_resnet_v2`` module path of a zoo layer.

    ``block35_3_branch_1_0_conv`` -> ``repeat.2.branch1.0.conv``; ``block35_3_conv`` (the
    residual's 1x1 convolution) -> ``repeat.2.conv2d``; a branch of one convolution is that
    module itself in timm (``mixed_5b.branch0.conv``), in every block but Mixed_7a.
    """
    if layer == "predictions":
        return "classif"
    match = re.fullmatch(r"(block\d+_\d+)_conv", layer)
    if match:
        return f"{_irv2_block(match[1])}.conv2d"
    match = re.fullmatch(r"(mixed_\d[ab]|block\d+_\d+)_branch_(\d)_(\d)_(conv|bn)", layer)
    if match:
        block, branch, step, kind = match.groups()
        parent = block if block.startswith("mixed") else _irv2_block(block)
        single = branch == "0" and block != "mixed_7a"
        return f"{parent}.branch{branch}{'' if single else '.' + step}.{kind}"
    unit, _, kind = layer.rpartition("_")
    return f"{_IRV2_STEM[unit]}.{kind}" if unit in _IRV2_STEM and kind in ("conv", "bn") \
        else None


# transform_input=True, with which torchvision loads its weights, turns torch mean/std input
# into (x/255 - 0.5)/0.5: the "tf" preset on raw pixels.
_TRANSFORM_INPUT = ("torchvision loads these with transform_input=True; here that is the "
                    "'tf' preprocessing.")

register(Spec(
    name="googlenet",
    family="inception",
    builder=inception,
    config={"variant": "googlenet"},
    paper=_V1_PAPER,
    year=2014,
    min_input_size=(32, 32),
    twins={"torchvision": "googlenet"},
    twin_params={"torchvision": 6_624_904},
    published_gmacs=1.5,
    gmacs_source="torchvision model table",
    preprocessing="torch",
    family_options={"aux_logits": False},
    weights=[torchvision_weights(
        "torchvision_v1", "googlenet-1378be20.pth", top1=69.778, top5=89.530,
        recipe="#googlenet", preprocessing="tf",
        notes=_TRANSFORM_INPUT + " The file also holds the auxiliary heads (aux1, aux2), "
              "which load when the model is built with aux_logits=True.")],
    torchvision_rule=TorchvisionRule(torchvision_layer_name, head=("fc",),
                                     aux=("aux1", "aux2"), bn_eps=1e-3),
    variant="torchvision's: batch norm, 3x3 in the '5x5' branch",
    notes="torchvision's GoogLeNet: batch norm after every convolution instead of the "
          "paper's local response normalisation, and a 3x3 convolution in the branch the "
          "paper gives 5x5 (pytorch/vision#906; the pretrained weights have it). The two "
          "auxiliary classifiers are optional (aux_logits=True); torchvision's pretrained "
          "weights expect transform_input, i.e. 'tf' preprocessing.",
))

register(Spec(
    name="inception_v3",
    family="inception",
    builder=inception,
    config={"variant": "inception_v3"},
    paper=_V3_PAPER,
    year=2015,
    input_size=(299, 299, 3),
    min_input_size=(75, 75),
    twins={"keras": "InceptionV3"},
    twin_params={"keras": 23_851_784},
    # Keras publishes no MAC count; the layers (convolutions, dense) are those of
    # torchvision's inception_v3, whose table gives 5.71.
    published_gmacs=5.71,
    gmacs_source="torchvision model table (inception_v3: the same convolutions)",
    crop_fraction=0.875,
    preprocessing="tf",
    weights=keras_weights("inception_v3/inception_v3", md5="9a0d58056eeedaa3f26cb7ebd46da564",
                          md5_notop="bcbd6486424b2319ff4ef7d526e38f63", top1=77.9, top5=93.7,
                          size=299, preprocessing="tf", licence=LICENCE_KERAS_INCEPTION_V3),
    variant="Keras': batch norm without scale, no auxiliary classifier",
    notes="keras.applications' InceptionV3: batch norm without a learned scale, average "
          "pools that leave the padding out of the average, no auxiliary classifier and no "
          "dropout. The paper's network; torchvision's port is inception_v3_tv.",
))

register(Spec(
    name="inception_v3_tv",
    family="inception",
    builder=inception,
    config={"variant": "inception_v3_tv"},
    paper=_V3_PAPER,
    year=2015,
    input_size=(299, 299, 3),
    min_input_size=(75, 75),
    twins={"torchvision": "inception_v3"},
    # torchvision publishes 27,161,264, which includes the auxiliary classifier; this is
    # Inception3(aux_logits=False), the model built by default here.
    twin_params={"torchvision": 23_834_568},
    published_gmacs=5.71,
    gmacs_source="torchvision model table",
    crop_fraction=299 / 342,
    preprocessing="torch",
    family_options={"aux_logits": False},
    weights=[torchvision_weights(
        "torchvision_v1", "inception_v3_google-0cc3c7bd.pth", top1=77.294, top5=93.450,
        recipe="#inception-v3", crop=299, resize=342, preprocessing="tf",
        notes=_TRANSFORM_INPUT + " Ported from TensorFlow by torchvision. The file also "
              "holds the auxiliary head (AuxLogits), which loads with aux_logits=True."),
        *timm_weights("inception_v3_tv")],
    torchvision_rule=TorchvisionRule(torchvision_layer_name, head=("fc",),
                                     aux=("AuxLogits",), bn_eps=1e-3),
    timm_rule=TimmRule("inception_v3", timm_v3_module_of, head=("fc",), bn_eps=1e-3),
    variant="torchvision's: batch norm with scale, padding counted in average pools",
    notes="torchvision's Inception3: batch norm with a learned scale, average pools that "
          "count the zero padding, dropout 0.5. Its auxiliary classifier (after Mixed_6e) is "
          "optional and needs a 299x299 input; the parameter count here excludes it "
          "(torchvision's published 27,161,264 includes it). torchvision's pretrained weights "
          "expect transform_input, i.e. 'tf' preprocessing.",
))

register(Spec(
    name="inception_resnet_v2",
    family="inception",
    builder=inception,
    config={"variant": "inception_resnet_v2"},
    paper=_IRV2_PAPER,
    year=2016,
    input_size=(299, 299, 3),
    min_input_size=(75, 75),
    twins={"keras": "InceptionResNetV2"},
    twin_params={"keras": 55_873_736},
    crop_fraction=0.875,
    preprocessing="tf",
    weights=keras_weights("inception_resnet_v2/inception_resnet_v2",
                          md5="e693bd0210a403b3192acc6073ad2e96",
                          md5_notop="d19885ff4a710c122648d3b5c3b684e4", top1=80.3, top5=95.3,
                          size=299, preprocessing="tf", licence=LICENCE_KERAS_UNSTATED)
    + timm_weights("inception_resnet_v2"),
    timm_rule=TimmRule("inception_resnet_v2", timm_irv2_module_of, head=("classif",),
                       bn_eps=1e-3),
    variant="Keras': batch norm without scale",
    notes="keras.applications' InceptionResNetV2: Inception v3's stem (not the paper's "
          "Inception-v4 stem), batch norm without a learned scale, residuals scaled by 0.17, "
          "0.1 and 0.2 before the sum, no auxiliary classifier and no dropout.",
))
