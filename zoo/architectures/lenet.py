"""LeNet-5 (LeCun, Bottou, Bengio and Haffner 1998).

C1 (6 5x5 convolutions) - S2 (2x2 average pooling) - C3 (16 5x5) - S4 - C5 (120 5x5) -
F6 (84) - output, with tanh activations, on 32x32 grayscale digits. Two simplifications
that every modern reimplementation makes: C3 connects to all six S2 maps (the paper's sparse
connection table has 1,516 weights instead of 2,416), and the output is a dense layer, not
the paper's Euclidean RBF units; the subsampling layers have no trainable coefficients.
``modern=True`` swaps in ReLU and max pooling.
"""

from __future__ import annotations

from keras import layers

from zoo.layers import AdaptiveAveragePooling2D
from zoo.registry import Body, Spec, register

PAPER = "LeCun, Bottou, Bengio and Haffner, Gradient-Based Learning Applied to Document " \
        "Recognition, Proc. IEEE 86(11), 1998"


def lenet5(x, *, modern: bool = False) -> Body:
    """Builds LeNet-5.

    Args:
        x: Normalised input tensor.
        modern: ReLU and max pooling instead of tanh and average pooling.

    Returns:
        The S2 and S4 maps (strides 2 and 4) and the C5-F6-output classifier. At inputs
        other than 32x32, S4 is adaptively pooled to the 5x5 grid C5 expects.
    """
    activation = "relu" if modern else "tanh"
    pool = layers.MaxPooling2D if modern else layers.AveragePooling2D
    x = layers.Conv2D(6, 5, activation=activation, name="c1")(x)
    s2 = pool(2, name="s2")(x)
    x = layers.Conv2D(16, 5, activation=activation, name="c3")(s2)
    s4 = pool(2, name="s4")(x)

    def top(num_classes, dropout):
        y = s4
        if tuple(y.shape[1:3]) != (5, 5):
            y = AdaptiveAveragePooling2D((5, 5), name="adaptive_pool")(y)
        y = layers.Conv2D(120, 5, activation=activation, name="c5")(y)
        y = layers.Flatten(name="flatten")(y)
        y = layers.Dense(84, activation=activation, name="f6")(y)
        if dropout:
            y = layers.Dropout(dropout, name="head_dropout")(y)
        return layers.Dense(num_classes, name="predictions")(y)

    return Body(features=[s2, s4], strides=[2, 4], top=top)


register(Spec(
    name="lenet5",
    family="lenet",
    builder=lenet5,
    config={},
    paper=PAPER,
    year=1998,
    input_size=(32, 32, 1),
    min_input_size=(16, 16),
    crop_fraction=1.0,
    num_classes=10,  # the ten digits of the paper's data set (MNIST)
    # Digits and characters: shifts and turns only (crops cut strokes off, flips change
    # the class), a larger batch. On the bundled digits: 98.6% with "none", 99.4% with
    # "shift" (validation, seeds 0 and 1). The cosine schedule's low-rate tail is where it
    # settles, so no early stopping.
    recipe_defaults={"batch_size": 64, "scratch_epochs": 40, "scratch_lr": 3e-3,
                     "augment": "shift", "patience": 40},
    family_options={"modern": False},
    notes=__doc__.split("\n\n", 1)[1].strip(),
))
