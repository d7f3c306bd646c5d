"""AlexNet (Krizhevsky, Sutskever and Hinton 2012).

The default is torchvision's form, which is the "one weird trick" single-tower variant
(Krizhevsky 2014): 64-192-384-256-256 filters, no local response normalisation, no grouped
convolutions. ``variant="paper"`` gives the 2012 paper's network instead: 96-256-384-384-256
filters, local response normalisation after the first two convolutions, and the two-GPU
towers as grouped convolutions (groups=2) in layers 2, 4 and 5.
"""

from __future__ import annotations

from keras import layers

from zoo.architectures._common import flatten_top
from zoo.layers import LocalResponseNormalization
from zoo.registry import Body, Spec, register

PAPER = "Krizhevsky, Sutskever and Hinton, ImageNet Classification with Deep Convolutional " \
        "Neural Networks, NeurIPS 2012"

# (filters, kernel, stride, padding, groups, lrn, pool after)
_LAYOUTS = {
    "torchvision": [(64, 11, 4, 2, 1, False, True), (192, 5, 1, 2, 1, False, True),
                    (384, 3, 1, 1, 1, False, False), (256, 3, 1, 1, 1, False, False),
                    (256, 3, 1, 1, 1, False, True)],
    "paper": [(96, 11, 4, 2, 1, True, True), (256, 5, 1, 2, 2, True, True),
              (384, 3, 1, 1, 1, False, False), (384, 3, 1, 1, 2, False, False),
              (256, 3, 1, 1, 2, False, True)],
}


def alexnet(x, *, variant: str = "torchvision") -> Body:
    """Builds AlexNet.

    Args:
        x: Normalised input tensor.
        variant: ``"torchvision"`` (default, pretrained weights exist) or ``"paper"``.

    Returns:
        The three pooled stages and the 4096-4096 classifier (dropout before each hidden
        layer, as torchvision has it).
    """
    if variant not in _LAYOUTS:
        raise ValueError(f"alexnet variant must be one of {sorted(_LAYOUTS)}; got {variant!r}.")
    features, strides = [], []
    for i, (filters, kernel, stride, pad, groups, lrn, pool) in enumerate(_LAYOUTS[variant], 1):
        x = layers.ZeroPadding2D(pad, name=f"conv{i}_pad")(x)
        x = layers.Conv2D(filters, kernel, strides=stride, groups=groups, activation="relu",
                          name=f"conv{i}")(x)
        if lrn:
            x = LocalResponseNormalization(name=f"conv{i}_lrn")(x)
        if pool:
            x = layers.MaxPooling2D(3, strides=2, name=f"pool{i}")(x)
            features.append(x)
            strides.append(8 * 2 ** (len(features) - 1))

    def top(num_classes, dropout):
        return flatten_top(features[-1], num_classes, dropout, grid=(6, 6), hidden=(4096, 4096),
                           dropout_first=True)

    return Body(features=features, strides=strides, top=top)


register(Spec(
    name="alexnet",
    family="alexnet",
    builder=alexnet,
    config={},
    paper=PAPER,
    year=2012,
    min_input_size=(63, 63),
    twins={"torchvision": "alexnet"},
    twin_params={"torchvision": 61_100_840},
    published_gmacs=0.71,
    gmacs_source="torchvision model table",
    family_options={"variant": "torchvision"},
    variant="torchvision's single-tower form",
    notes=__doc__.split("\n\n", 1)[1].strip(),
))
