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
from zoo.registry import Body, Spec, TorchvisionRule, register
from zoo.weights.catalog import torchvision_weights

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


# torchvision's module paths -> zoo layer names (``features`` and ``classifier`` Sequentials).
TORCHVISION_NAMES = {
    "features.0": "conv1", "features.3": "conv2", "features.6": "conv3", "features.8": "conv4",
    "features.10": "conv5", "classifier.1": "fc1", "classifier.4": "fc2",
    "classifier.6": "predictions",
}

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
    weights=[torchvision_weights(
        "torchvision_v1", "alexnet-owt-7be5be79.pth", top1=56.522, top5=79.066,
        recipe="#alexnet-and-vgg", family_options={"variant": "torchvision"},
        notes="torchvision's single-tower AlexNet ('one weird trick', Krizhevsky 2014).")],
    torchvision_rule=TorchvisionRule(TORCHVISION_NAMES.get, head=("classifier",)),
    recipe_defaults={"head_lr": 5e-4, "finetune_lr": 5e-5},
    variant="torchvision's single-tower form",
    notes=__doc__.split("\n\n", 1)[1].strip(),
))
