"""VGG (Simonyan and Zisserman 2014), with and without batch normalisation.

Layer names follow keras.applications (``block1_conv1`` ... ``fc1``, ``fc2``,
``predictions``), so Keras' VGG16/VGG19 files load by name and by order; torchvision's
``vgg*`` and ``vgg*_bn`` state dicts map onto the same layers.
"""

from __future__ import annotations

from keras import layers

from zoo.architectures._common import flatten_top
from zoo.registry import Body, Spec, TimmRule, TorchvisionRule, Weights, register
from zoo.weights.catalog import (
    LICENCE_KERAS_VGG,
    LICENCE_TORCHVISION,
    TORCHVISION_METRICS_SOURCE,
    keras_weights,
    timm_weights,
    torchvision_hash,
    torchvision_weights,
)

PAPER = "Simonyan and Zisserman, Very Deep Convolutional Networks for Large-Scale Image " \
        "Recognition, ICLR 2015 (arXiv:1409.1556)"

# Filters per convolution, "M" a 2x2 max pooling: torchvision's compact notation.
CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


def vgg(x, *, layout: list, batch_norm: bool) -> Body:
    """Builds a VGG backbone.

    Args:
        x: Normalised input tensor.
        layout: Filters per convolution with ``"M"`` for max pooling.
        batch_norm: Batch normalisation after every convolution (torchvision's ``_bn``).

    Returns:
        The five pooled block outputs (strides 2 to 32) and the 4096-4096 classifier.
    """
    features, strides = [], []
    block, conv = 1, 1
    for item in layout:
        if item == "M":
            x = layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
            features.append(x)
            strides.append(2 ** block)
            block, conv = block + 1, 1
            continue
        name = f"block{block}_conv{conv}"
        if batch_norm:
            x = layers.Conv2D(item, 3, padding="same", name=name)(x)
            x = layers.BatchNormalization(epsilon=1e-5, name=f"block{block}_bn{conv}")(x)
            x = layers.Activation("relu", name=f"block{block}_relu{conv}")(x)
        else:
            x = layers.Conv2D(item, 3, padding="same", activation="relu", name=name)(x)
        conv += 1

    def top(num_classes, dropout):
        return flatten_top(features[-1], num_classes, dropout, grid=(7, 7), hidden=(4096, 4096))

    return Body(features=features, strides=strides, top=top)


def torchvision_rule(layout: list, batch_norm: bool) -> TorchvisionRule:
    """The key rule of torchvision's ``vgg*``: one ``features`` Sequential, the classifier.

    ``features`` holds conv, (bn,) relu per number of the layout and a pool per ``"M"``;
    ``classifier`` is linear, relu, dropout, linear, relu, dropout, linear.
    """
    names = _feature_modules(layout, batch_norm)
    names.update({"classifier.0": "fc1", "classifier.3": "fc2", "classifier.6": "predictions"})
    return TorchvisionRule(names.get, head=("classifier",))


def _feature_modules(layout: list, batch_norm: bool) -> dict[str, str]:
    """``features.<i>`` -> zoo layer name, for the convolutions and batch norms."""
    names, index, block, conv = {}, 0, 1, 1
    for item in layout:
        if item == "M":
            index, block, conv = index + 1, block + 1, 1
            continue
        names[f"features.{index}"] = f"block{block}_conv{conv}"
        if batch_norm:
            names[f"features.{index + 1}"] = f"block{block}_bn{conv}"
        index += 3 if batch_norm else 2
        conv += 1
    return names


# timm's VGG keeps torchvision's features; its classifier is pre_logits (a ConvMlp: a 7x7
# then a 1x1 convolution, which are fc1 and fc2 on the 7x7 map) and head.fc.
_TIMM_HEAD = {"fc1": "pre_logits.fc1", "fc2": "pre_logits.fc2", "predictions": "head.fc"}


def timm_rule(name: str, layout: list, batch_norm: bool) -> TimmRule:
    """The key rule of timm's ``vgg*``: torchvision's features, timm's own classifier."""
    modules = {layer: path for path, layer in _feature_modules(layout, batch_norm).items()}
    modules |= _TIMM_HEAD
    return TimmRule(name, modules.get, head=("head.fc",),
                    conv_dense=("pre_logits.fc1", "pre_logits.fc2"))


_FEATURES_URL = "https://download.pytorch.org/models/vgg16_features-amdegroot-88682ab5.pth"

# torchvision's IMAGENET1K_V1 sets: file, top-1, top-5.
_TV_WEIGHTS = {
    "vgg11": ("vgg11-8a719046.pth", 69.020, 88.628),
    "vgg11_bn": ("vgg11_bn-6002323d.pth", 70.370, 89.810),
    "vgg13": ("vgg13-19584684.pth", 69.928, 89.246),
    "vgg13_bn": ("vgg13_bn-abd245e5.pth", 71.586, 90.374),
    "vgg16": ("vgg16-397923af.pth", 71.592, 90.382),
    "vgg16_bn": ("vgg16_bn-6c64b313.pth", 73.360, 91.516),
    "vgg19": ("vgg19-dcbb9e9d.pth", 72.376, 90.876),
    "vgg19_bn": ("vgg19_bn-c79401a0.pth", 74.218, 91.842),
}
_EXTRA_WEIGHTS = {
    "vgg16": [
        # IMAGENET1K_FEATURES: the SSD authors' port of the original VGG weights.
        Weights(
            tag="torchvision_features", source="torchvision", url=_FEATURES_URL,
            file_name=_FEATURES_URL.rsplit("/", 1)[1], hash=torchvision_hash(_FEATURES_URL),
            hash_algorithm="sha256",
            # torchvision's mean (0.48235, 0.45882, 0.40784) and std 1/255, in pixel units.
            preprocessing={"mean": (0.48235 * 255, 0.45882 * 255, 0.40784 * 255),
                           "std": (1.0, 1.0, 1.0), "channel_order": "rgb"},
            input_size=(224, 224, 3), resize_size=256, crop_fraction=0.875,
            interpolation="bilinear", num_classes=None, labels=None,
            metrics_source=TORCHVISION_METRICS_SOURCE, licence=LICENCE_TORCHVISION,
            recipe="https://github.com/amdegroot/ssd.pytorch#training-ssd",
            notes="Feature extractor only (ported for SSD): the convolutional layers load; "
                  "the classifier in the file holds no usable values and is never loaded."),
        *keras_weights("vgg16/vgg16", md5="64373286793e3c8b2b4e3219cbf3544b",
                       md5_notop="6d6bbae143d832006294945121d1f1fc", top1=71.3, top5=90.1,
                       size=224, preprocessing="caffe", licence=LICENCE_KERAS_VGG),
    ],
    "vgg19": keras_weights("vgg19/vgg19", md5="cbe5617147190e668d6c5d5026f83318",
                           md5_notop="253f8cb515780f3b799900260a226db6", top1=71.3,
                           top5=90.0, size=224, preprocessing="caffe",
                           licence=LICENCE_KERAS_VGG),
}

_GMACS = {"vgg11": 7.61, "vgg13": 11.31, "vgg16": 15.47, "vgg19": 19.63}
_TV_PARAMS = {
    "vgg11": 132_863_336, "vgg13": 133_047_848, "vgg16": 138_357_544, "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840, "vgg13_bn": 133_053_736, "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
}
_KERAS = {"vgg16": ("VGG16", 138_357_544), "vgg19": ("VGG19", 143_667_240)}

for _depth in ("vgg11", "vgg13", "vgg16", "vgg19"):
    for _bn in (False, True):
        _name = f"{_depth}_bn" if _bn else _depth
        _twins = {"torchvision": _name}
        _twin_params = {"torchvision": _TV_PARAMS[_name]}
        if _name in _KERAS:
            _twins["keras"], _twin_params["keras"] = _KERAS[_name]
        register(Spec(
            name=_name,
            family="vgg",
            builder=vgg,
            config={"layout": CONFIGS[_depth], "batch_norm": _bn},
            paper=PAPER,
            year=2014,
            min_input_size=(32, 32),
            twins=_twins,
            twin_params=_twin_params,
            published_gmacs=_GMACS[_depth],
            gmacs_source="torchvision model table",
            weights=[torchvision_weights("torchvision_v1", _TV_WEIGHTS[_name][0],
                                         top1=_TV_WEIGHTS[_name][1], top5=_TV_WEIGHTS[_name][2],
                                         recipe="#alexnet-and-vgg"),
                     *_EXTRA_WEIGHTS.get(_name, []), *timm_weights(_name)],
            torchvision_rule=torchvision_rule(CONFIGS[_depth], _bn),
            timm_rule=timm_rule(_name, CONFIGS[_depth], _bn),
            # Huge dense heads overfit fast and want smaller rates.
            recipe_defaults={"head_lr": 5e-4, "finetune_lr": 3e-5},
            variant="with batch normalisation" if _bn else "",
            notes="The paper's configurations A, B, D and E. Batch normalisation (the _bn "
                  "models) came later (Ioffe and Szegedy 2015); torchvision added it.",
        ))
