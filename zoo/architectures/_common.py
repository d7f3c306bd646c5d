"""Heads shared by the families."""

from __future__ import annotations

from collections.abc import Sequence

from keras import layers

from zoo.layers import AdaptiveAveragePooling2D


def pooled_top(x, num_classes: int, dropout: float | None, *, default_dropout: float = 0.0,
               pool_name: str = "avg_pool", dense_name: str = "predictions"):
    """Global average pooling, optional dropout, then the classifier's logits.

    Args:
        x: The last feature map.
        num_classes: Classifier size.
        dropout: Dropout rate before the classifier; None uses ``default_dropout``.
        default_dropout: The family's rate.
        pool_name: Name of the pooling layer.
        dense_name: Name of the classifier layer.

    Returns:
        Logits.
    """
    x = layers.GlobalAveragePooling2D(name=pool_name)(x)
    rate = default_dropout if dropout is None else dropout
    if rate:
        x = layers.Dropout(rate, name="head_dropout")(x)
    return layers.Dense(num_classes, name=dense_name)(x)


def flatten_top(x, num_classes: int, dropout: float | None, *, grid: tuple[int, int],
                hidden: Sequence[int], default_dropout: float = 0.5,
                activation: str = "relu", dropout_first: bool = False,
                names: Sequence[str] | None = None):
    """The classic flattening classifier: adaptive pooling to a grid, flatten, dense layers.

    Adaptive average pooling to ``grid`` is what lets LeNet, AlexNet and VGG keep their
    classifier at any input size, as torchvision does; at the default size it is the
    identity.

    Args:
        x: The last feature map.
        num_classes: Classifier size.
        dropout: Dropout rate; None uses ``default_dropout``; 0 removes the layers.
        grid: The spatial grid the classifier was designed for, e.g. ``(7, 7)`` for VGG.
        hidden: Widths of the hidden dense layers.
        default_dropout: The family's rate.
        activation: Activation of the hidden layers.
        dropout_first: Dropout before each hidden layer (AlexNet in torchvision) rather than
            after it (VGG).
        names: Names of the hidden layers then the classifier; defaults to
            ``fc1, fc2, ..., predictions``.

    Returns:
        Logits.
    """
    names = list(names or [f"fc{i + 1}" for i in range(len(hidden))] + ["predictions"])
    rate = default_dropout if dropout is None else dropout
    if tuple(x.shape[1:3]) != tuple(grid):
        x = AdaptiveAveragePooling2D(grid, name="adaptive_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, (units, name) in enumerate(zip(hidden, names)):
        if rate and dropout_first:
            x = layers.Dropout(rate, name=f"dropout{i + 1}")(x)
        x = layers.Dense(units, activation=activation, name=name)(x)
        if rate and not dropout_first:
            x = layers.Dropout(rate, name=f"dropout{i + 1}")(x)
    return layers.Dense(num_classes, name=names[len(hidden)])(x)
