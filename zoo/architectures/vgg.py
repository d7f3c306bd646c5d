"""VGG (Simonyan and Zisserman 2014), with and without batch normalisation.

Layer names follow keras.applications (``block1_conv1`` ... ``fc1``, ``fc2``,
``predictions``), so Keras' VGG16/VGG19 files load by name and by order; torchvision's
``vgg*`` and ``vgg*_bn`` state dicts map onto the same layers.
"""

from __future__ import annotations

from keras import layers

from zoo.architectures._common import flatten_top
from zoo.registry import Body, Spec, register

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
            variant="with batch normalisation" if _bn else "",
            notes="The paper's configurations A, B, D and E. Batch normalisation (the _bn "
                  "models) came later (Ioffe and Szegedy 2015); torchvision added it.",
        ))
