"""ResNet (He et al. 2015) in its three common forms: v1.5, v1 and v2 (pre-activation).

- ``resnet18`` ... ``resnet152`` are torchvision's ``resnet*``: v1.5, the stride in the 3x3
  convolution, convolutions without bias, batch-norm epsilon 1e-5.
- ``resnet50_v1`` ... ``resnet152_v1`` are keras.applications ``ResNet50/101/152``, a port of
  the authors' Caffe models: the stride in the first 1x1 convolution, every convolution with
  a bias, epsilon 1.001e-5.
- ``resnet50_v2`` ... ``resnet152_v2`` are keras.applications ``ResNet50V2/101V2/152V2``
  (pre-activation, He et al. 2016), with Keras' own stride placement.

Layer names follow keras.applications for every variant: ``conv1_pad``, ``conv1_conv``,
``conv1_bn``, ``conv1_relu``, ``pool1_pad``, ``pool1_pool``; then per block
``conv{stage}_block{b}_{k}_conv/_bn/_relu`` for the k-th convolution of the residual branch,
``..._0_conv/_0_bn`` for the projection shortcut, ``..._add`` and ``..._out``; then
``avg_pool`` and ``predictions``. v2 blocks add ``..._preact_bn/_preact_relu`` and end with
``post_bn``/``post_relu``. For the Keras twins both the names and the order in which layers
with weights are created match keras.applications, so Keras' legacy h5 files (loaded by
that order) and ``set_weights(keras_model.get_weights())`` both work.

A torchvision state dict maps onto the same names by this rule (stage ``s`` of torchvision
is ``conv{s+1}``, block ``b`` is ``block{b+1}``)::

    conv1.weight                       -> conv1_conv (kernel)
    bn1.*                              -> conv1_bn
    layer{s}.{b}.conv{k}.weight        -> conv{s+1}_block{b+1}_{k}_conv (kernel)
    layer{s}.{b}.bn{k}.*               -> conv{s+1}_block{b+1}_{k}_bn
    layer{s}.{b}.downsample.0.weight   -> conv{s+1}_block{b+1}_0_conv (kernel)
    layer{s}.{b}.downsample.1.*        -> conv{s+1}_block{b+1}_0_bn
    fc.weight, fc.bias                 -> predictions (kernel, bias)

with convolution kernels transposed from OIHW to HWIO (``(2, 3, 1, 0)``), the dense kernel
from ``(out, in)`` to ``(in, out)``, batch norm ``weight, bias, running_mean, running_var``
as ``gamma, beta, moving_mean, moving_variance`` and ``num_batches_tracked`` dropped.
"""

from __future__ import annotations

import re

from keras import layers

from zoo.architectures._common import pooled_top
from zoo.layers import conv_bn_act
from zoo.registry import Body, Spec, TimmRule, TorchvisionRule, register
from zoo.weights.catalog import (
    LICENCE_KERAS_RESNET,
    LICENCE_KERAS_UNSTATED,
    keras_weights,
    timm_weights,
    torchvision_weights,
)

PAPER_V1 = "He, Zhang, Ren and Sun, Deep Residual Learning for Image Recognition, " \
           "CVPR 2016 (arXiv:1512.03385)"
PAPER_V2 = "He, Zhang, Ren and Sun, Identity Mappings in Deep Residual Networks, " \
           "ECCV 2016 (arXiv:1603.05027)"

# Bottleneck (or basic-block) widths of the four stages conv2..conv5; every ResNet shares them.
WIDTHS = (64, 128, 256, 512)
# Blocks per stage for each depth, as in table 1 of the paper.
BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
          152: (3, 8, 36, 3)}
_EXPANSION = {"basic": 1, "bottleneck": 4}


def resnet(
    x,
    *,
    blocks: tuple[int, ...],
    block: str = "bottleneck",
    stride_in_1x1: bool = False,
    use_bias: bool = False,
    bn_eps: float = 1e-5,
) -> Body:
    """Builds a post-activation ResNet: v1.5 (torchvision) or v1 (Keras' Caffe port).

    Args:
        x: Normalised input tensor.
        blocks: Number of blocks in each of the four stages.
        block: ``"basic"`` (two 3x3 convolutions, ResNet-18/34) or ``"bottleneck"``
            (1x1, 3x3, 1x1 with four times wider output).
        stride_in_1x1: Downsample in the first 1x1 convolution of a bottleneck (v1) rather
            than in its 3x3 convolution (v1.5). Basic blocks always stride their first 3x3.
        use_bias: Give every convolution a bias (the Caffe port does; batch norm makes it
            redundant).
        bn_eps: Batch-norm epsilon.

    Returns:
        The four stage outputs conv2..conv5 (strides 4 to 32) and the pooled classifier.
    """
    if block not in _EXPANSION:
        raise ValueError(f"block must be one of {sorted(_EXPANSION)}; got {block!r}.")
    if len(blocks) != len(WIDTHS):
        raise ValueError(f"blocks needs one count per stage ({len(WIDTHS)}); got {blocks!r}.")
    conv = {"use_bias": use_bias, "bn_epsilon": bn_eps}
    x = conv_bn_act(x, 64, 7, strides=2, padding=3, name="conv1", **conv)
    # Zero padding equals PyTorch's -inf padding here: the input is after a ReLU, so >= 0.
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)

    features = []
    for stage, (width, count) in enumerate(zip(WIDTHS, blocks), start=2):
        for index in range(1, count + 1):
            # conv2 follows the max pooling, which already halved the map.
            stride = 2 if index == 1 and stage > 2 else 1
            x = _residual_block(x, width, stride=stride, block=block,
                                stride_in_1x1=stride_in_1x1, conv=conv,
                                name=f"conv{stage}_block{index}")
        features.append(x)

    def top(num_classes, dropout):
        return pooled_top(features[-1], num_classes, dropout)

    return Body(features=features, strides=[4, 8, 16, 32], top=top)


def _residual_block(x, width: int, *, stride: int, block: str, stride_in_1x1: bool,
                    conv: dict, name: str):
    """One post-activation block: ``relu(shortcut(x) + branch(x))``.

    Args:
        x: Input tensor.
        width: Width of the 3x3 convolutions.
        stride: 2 in the first block of conv3..conv5, else 1.
        block: ``"basic"`` or ``"bottleneck"``.
        stride_in_1x1: Where a bottleneck downsamples, see :func:`resnet`.
        conv: ``use_bias`` and ``bn_epsilon`` for every convolution.
        name: Block prefix, ``conv{stage}_block{index}``.

    Returns:
        The block output.
    """
    out_channels = width * _EXPANSION[block]
    # The shortcut is created first because Keras creates it first: its h5 files load by
    # the order of layers with weights.
    if stride != 1 or x.shape[-1] != out_channels:
        shortcut = conv_bn_act(x, out_channels, 1, strides=stride, padding="valid",
                               activation=None, name=f"{name}_0", **conv)
    else:
        shortcut = x

    if block == "bottleneck":
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        y = conv_bn_act(x, width, 1, strides=stride_1x1, padding="valid", name=f"{name}_1",
                        **conv)
        y = conv_bn_act(y, width, 3, strides=stride_3x3, padding=_padding_3x3(stride_3x3),
                        name=f"{name}_2", **conv)
        y = conv_bn_act(y, out_channels, 1, padding="valid", activation=None,
                        name=f"{name}_3", **conv)
    else:
        y = conv_bn_act(x, width, 3, strides=stride, padding=_padding_3x3(stride),
                        name=f"{name}_1", **conv)
        y = conv_bn_act(y, width, 3, padding="same", activation=None, name=f"{name}_2", **conv)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def _padding_3x3(stride: int) -> str | int:
    # With stride 2 on an even map Keras' "same" pads only bottom/right, PyTorch pads one
    # pixel on every side: the outputs would be shifted by a pixel. With stride 1 both agree,
    # and "same" keeps the layer list identical to keras.applications.
    return 1 if stride > 1 else "same"


def resnet_v2(x, *, blocks: tuple[int, ...], bn_eps: float = 1.001e-5) -> Body:
    """Builds keras.applications' pre-activation ResNet (ResNet50V2 and deeper).

    Args:
        x: Normalised input tensor.
        blocks: Number of blocks in each of the four stages; each of the first three stages
            downsamples in its last block, as Keras (after TF-Slim) does.
        bn_eps: Batch-norm epsilon.

    Returns:
        The residual stream at strides 4, 8 and 16 (the input of each strided block) and
        the final ``post_relu`` map at stride 32, and the pooled classifier.
    """
    if len(blocks) != len(WIDTHS):
        raise ValueError(f"blocks needs one count per stage ({len(WIDTHS)}); got {blocks!r}.")
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    # No batch norm in the stem: the first block's pre-activation normalises this output.
    x = layers.Conv2D(64, 7, strides=2, name="conv1_conv")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)

    features, strides, stride_so_far = [], [], 4
    for stage, (width, count) in enumerate(zip(WIDTHS, blocks), start=2):
        for index in range(1, count + 1):
            stride = 2 if index == count and stage < 5 else 1
            if stride > 1:
                # The last map at this resolution is the input of the strided block.
                features.append(x)
                strides.append(stride_so_far)
                stride_so_far *= stride
            x = _preact_block(x, width, stride=stride, projection=index == 1, bn_eps=bn_eps,
                              name=f"conv{stage}_block{index}")
    # Pre-activation blocks end in an un-normalised sum; the head needs one last BN + ReLU.
    x = layers.BatchNormalization(epsilon=bn_eps, name="post_bn")(x)
    x = layers.Activation("relu", name="post_relu")(x)
    features.append(x)
    strides.append(stride_so_far)

    def top(num_classes, dropout):
        return pooled_top(features[-1], num_classes, dropout)

    return Body(features=features, strides=strides, top=top)


def _preact_block(x, width: int, *, stride: int, projection: bool, bn_eps: float, name: str):
    """One pre-activation bottleneck, ``x + branch(relu(bn(x)))``, in Keras' layer order.

    Args:
        x: Input tensor (the un-normalised residual stream).
        width: Width of the 1x1 and 3x3 convolutions; the output is four times wider.
        stride: 2 in the last block of conv2..conv4, else 1.
        projection: Use a 1x1 convolution shortcut (first block of each stage).
        bn_eps: Batch-norm epsilon.
        name: Block prefix, ``conv{stage}_block{index}``.

    Returns:
        The block output (no activation: the next block's pre-activation does it).
    """
    preact = layers.BatchNormalization(epsilon=bn_eps, name=f"{name}_preact_bn")(x)
    preact = layers.Activation("relu", name=f"{name}_preact_relu")(preact)
    if projection:
        shortcut = layers.Conv2D(4 * width, 1, strides=stride, name=f"{name}_0_conv")(preact)
    elif stride > 1:
        # A 1x1 max pooling with stride 2 just keeps every other pixel of the identity.
        shortcut = layers.MaxPooling2D(1, strides=stride, name=f"{name}_0_pool")(x)
    else:
        shortcut = x
    y = conv_bn_act(preact, width, 1, padding="valid", bn_epsilon=bn_eps, name=f"{name}_1")
    y = conv_bn_act(y, width, 3, strides=stride, padding=1, bn_epsilon=bn_eps,
                    name=f"{name}_2")
    y = layers.Conv2D(4 * width, 1, name=f"{name}_3_conv")(y)
    return layers.Add(name=f"{name}_out")([shortcut, y])


NOTES = """\
Where a ResNet halves its feature map is most of what tells the versions apart. In the \
paper (v1) and in the authors' Caffe models that keras.applications' ResNet50/101/152 were \
converted from, the first block of a stage downsamples with its first 1x1 convolution at \
stride 2: that convolution looks at one pixel in four, so three quarters of the block's \
input never reach the 3x3 convolution. v1.5 (fb.resnet.torch, then torchvision; the name \
is NVIDIA's) moves the stride to the 3x3 convolution, which sees every pixel: about 5% more \
compute (4.09 against 3.86 GMACs for ResNet-50) for about half a point of top-1. The Caffe \
port also gives every convolution a bias (redundant before batch norm, which has its own \
shift) and uses batch-norm epsilon 1.001e-5, just above the 1e-5 floor of cuDNN's batch \
norm; that is why Keras' ResNet50 has more parameters than torchvision's at the same depth. \
v2 (He et al. 2016, "Identity Mappings") puts batch norm and ReLU before each convolution \
(pre-activation): the shortcut is then a pure identity from the first block to the last, \
so signal and gradient cross the whole network untouched apart from additions. Blocks \
output an un-normalised sum, hence a stem without batch norm and one final BN + ReLU \
(post_bn, post_relu) before pooling. keras.applications' V2 models, ported from TF-Slim, \
add quirks of their own: each of the first three stages downsamples in its last block, \
not its first (conv5 not at all), so conv2 ends at stride 8, not 4; the strided block's \
identity shortcut is subsampled by a 1x1 max pooling with stride 2; only the projection \
shortcut, the last 1x1 convolution of each block and the stem convolution have biases; \
and the stem's output, not yet through a ReLU, is max-pooled with zero padding. Here the \
v2 feature maps at strides 4, 8 and 16 are therefore the inputs of the strided blocks \
(conv2_block2_out for ResNet50V2), and the stride-32 map is post_relu.\
"""

def torchvision_layer_name(path: str) -> str | None:
    """Torchvision's module path -> zoo layer name, by the rule in the module docstring."""
    fixed = {"conv1": "conv1_conv", "bn1": "conv1_bn", "fc": "predictions"}
    if path in fixed:
        return fixed[path]
    match = re.fullmatch(r"layer(\d)\.(\d+)\.(conv|bn)(\d)", path)
    if match:
        stage, block, kind, k = match.groups()
        return f"conv{int(stage) + 1}_block{int(block) + 1}_{k}_{kind}"
    match = re.fullmatch(r"layer(\d)\.(\d+)\.downsample\.([01])", path)
    if match:
        stage, block, index = match.groups()
        kind = "conv" if index == "0" else "bn"
        return f"conv{int(stage) + 1}_block{int(block) + 1}_0_{kind}"
    return None


TORCHVISION_RULE = TorchvisionRule(torchvision_layer_name, head=("fc",))


def timm_module_of(layer: str) -> str | None:
    """The timm (and torchvision) module path of a zoo layer: the rule above, inverted."""
    fixed = {"conv1_conv": "conv1", "conv1_bn": "bn1", "predictions": "fc"}
    if layer in fixed:
        return fixed[layer]
    match = re.fullmatch(r"conv(\d)_block(\d+)_(\d)_(conv|bn)", layer)
    if match is None:
        return None
    stage, block, k, kind = match.groups()
    prefix = f"layer{int(stage) - 1}.{int(block) - 1}"
    if k == "0":
        return f"{prefix}.downsample.{0 if kind == 'conv' else 1}"
    return f"{prefix}.{kind}{k}"

_V2_RECIPE = "https://github.com/pytorch/vision/issues/3995"
# torchvision's weight sets: file, top-1, top-5, and the V2 sets' recipe and resize.
WEIGHTS = {
    "resnet18": [torchvision_weights("torchvision_v1", "resnet18-f37072fd.pth", top1=69.758,
                                     top5=89.078, recipe="#resnet")],
    "resnet34": [torchvision_weights("torchvision_v1", "resnet34-b627a593.pth", top1=73.314,
                                     top5=91.420, recipe="#resnet")],
    "resnet50": [
        torchvision_weights("torchvision_v1", "resnet50-0676ba61.pth", top1=76.130,
                            top5=92.862, recipe="#resnet"),
        torchvision_weights("torchvision_v2", "resnet50-11ad3fa6.pth", top1=80.858,
                            top5=95.434, resize=232,
                            recipe=_V2_RECIPE + "#issuecomment-1013906621"),
    ],
    "resnet101": [
        torchvision_weights("torchvision_v1", "resnet101-63fe2227.pth", top1=77.374,
                            top5=93.546, recipe="#resnet"),
        torchvision_weights("torchvision_v2", "resnet101-cd907fc2.pth", top1=81.886,
                            top5=95.780, resize=232, recipe=_V2_RECIPE + "#new-recipe"),
    ],
    "resnet152": [
        torchvision_weights("torchvision_v1", "resnet152-394f9c45.pth", top1=78.312,
                            top5=94.046, recipe="#resnet"),
        torchvision_weights("torchvision_v2", "resnet152-f82ba261.pth", top1=82.284,
                            top5=96.002, resize=232, recipe=_V2_RECIPE + "#new-recipe"),
    ],
    # keras.applications' files: md5 with and without the classifier, Keras' table.
    "resnet50_v1": keras_weights(
        "resnet/resnet50", md5="2cb95161c43110f7111970584f804107",
        md5_notop="4d473c1dd8becc155b73f8504c6f6626", top1=74.9, top5=92.1, size=224,
        preprocessing="caffe", licence=LICENCE_KERAS_RESNET),
    "resnet101_v1": keras_weights(
        "resnet/resnet101", md5="f1aeb4b969a6efcfb50fad2f0c20cfc5",
        md5_notop="88cf7a10940856eca736dc7b7e228a21", top1=76.4, top5=92.8, size=224,
        preprocessing="caffe", licence=LICENCE_KERAS_RESNET),
    "resnet152_v1": keras_weights(
        "resnet/resnet152", md5="100835be76be38e30d865e96f2aaae62",
        md5_notop="ee4c566cf9a93f14d82f913c2dc6dd0c", top1=76.6, top5=93.1, size=224,
        preprocessing="caffe", licence=LICENCE_KERAS_RESNET),
    "resnet50_v2": keras_weights(
        "resnet/resnet50v2", md5="3ef43a0b657b3be2300d5770ece849e0",
        md5_notop="fac2f116257151a9d068a22e544a4917", top1=76.0, top5=93.0, size=224,
        preprocessing="tf", licence=LICENCE_KERAS_UNSTATED),
    "resnet101_v2": keras_weights(
        "resnet/resnet101v2", md5="6343647c601c52e1368623803854d971",
        md5_notop="c0ed64b8031c3730f411d2eb4eea35b5", top1=77.2, top5=93.8, size=224,
        preprocessing="tf", licence=LICENCE_KERAS_UNSTATED),
    "resnet152_v2": keras_weights(
        "resnet/resnet152v2", md5="a49b44d1979771252814e80f8ec446f9",
        md5_notop="ed17cf2e0169df9d443503ef94b23b33", top1=78.0, top5=94.2, size=224,
        preprocessing="tf", licence=LICENCE_KERAS_UNSTATED),
}

_TV_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160,
              152: 60_192_808}
_TV_GMACS = {18: 1.81, 34: 3.66, 50: 4.09, 101: 7.80, 152: 11.51}
_KERAS_V1_PARAMS = {50: 25_636_712, 101: 44_707_176, 152: 60_419_944}
_KERAS_V2_PARAMS = {50: 25_613_800, 101: 44_675_560, 152: 60_380_648}
# Table 1 of the paper ("FLOPs", which the text calls multiply-adds), for v1 at 224x224.
_PAPER_GMACS = {50: 3.8, 101: 7.6, 152: 11.3}

for _depth in (18, 34, 50, 101, 152):
    register(Spec(
        name=f"resnet{_depth}",
        family="resnet",
        builder=resnet,
        config={"blocks": BLOCKS[_depth], "block": "basic" if _depth < 50 else "bottleneck",
                "stride_in_1x1": False, "use_bias": False, "bn_eps": 1e-5},
        paper=PAPER_V1,
        year=2015,
        min_input_size=(32, 32),
        twins={"torchvision": f"resnet{_depth}"},
        twin_params={"torchvision": _TV_PARAMS[_depth]},
        published_gmacs=_TV_GMACS[_depth],
        gmacs_source="torchvision model table (its GFLOPS column counts multiply-adds)",
        preprocessing="torch",
        weights=WEIGHTS[f"resnet{_depth}"] + timm_weights(f"resnet{_depth}"),
        torchvision_rule=TORCHVISION_RULE,
        timm_rule=TimmRule(f"resnet{_depth}", timm_module_of, head=("fc",)),
        variant=("v1.5: stride in the 3x3 convolution, torchvision" if _depth >= 50 else
                 "basic blocks, stride in the first 3x3 convolution, torchvision"),
        notes=NOTES,
    ))

for _depth in (50, 101, 152):
    register(Spec(
        name=f"resnet{_depth}_v1",
        family="resnet",
        builder=resnet,
        config={"blocks": BLOCKS[_depth], "block": "bottleneck", "stride_in_1x1": True,
                "use_bias": True, "bn_eps": 1.001e-5},
        paper=PAPER_V1,
        year=2015,
        min_input_size=(32, 32),
        twins={"keras": f"ResNet{_depth}"},
        twin_params={"keras": _KERAS_V1_PARAMS[_depth]},
        published_gmacs=_PAPER_GMACS[_depth],
        gmacs_source="He et al. 2015, table 1 (the paper's v1 network, which Keras' "
                     "Caffe port reproduces)",
        preprocessing="caffe",
        weights=WEIGHTS[f"resnet{_depth}_v1"],
        variant="v1: stride in the first 1x1 convolution, conv biases, Keras' Caffe port",
        notes=NOTES,
    ))

for _depth in (50, 101, 152):
    register(Spec(
        name=f"resnet{_depth}_v2",
        family="resnet",
        builder=resnet_v2,
        config={"blocks": BLOCKS[_depth], "bn_eps": 1.001e-5},
        paper=PAPER_V2,
        year=2016,
        min_input_size=(32, 32),
        twins={"keras": f"ResNet{_depth}V2"},
        twin_params={"keras": _KERAS_V2_PARAMS[_depth]},
        published_gmacs=None,
        gmacs_source="none published: the paper gives no multiply-add counts, and Keras' "
                     "stride placement differs from the paper's in any case",
        preprocessing="tf",
        weights=WEIGHTS[f"resnet{_depth}_v2"],
        variant="v2: pre-activation, stride in the last block of each stage, Keras (TF-Slim)",
        notes=NOTES,
    ))
