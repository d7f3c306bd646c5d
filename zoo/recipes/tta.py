"""Test-time augmentation: the model's probabilities averaged over views of each eval crop.

Only ``"flip"`` is available: the eval centre crop and its left-right mirror, whose
probabilities are averaged (as timm's and fastai's TTA do for the flip). Five-crop views
would have to be cut from the resized image before the centre crop, which the eval bytes
path does not expose yet, so ``"five_crop"`` is refused rather than approximated.
"""

from __future__ import annotations

import numpy as np

TTA_MODES = ("none", "flip")


def check_tta(mode: str | None) -> str:
    """Returns the TTA mode (``None`` is ``"none"``), or raises naming the allowed values."""
    mode = "none" if mode is None else mode
    if mode not in TTA_MODES:
        planned = " (five_crop is not implemented yet)" if "five_crop" in str(mode) else ""
        raise ValueError(f"Unknown tta {mode!r}; use one of {', '.join(TTA_MODES)}{planned}.")
    return mode


def _probabilities(model, x) -> np.ndarray:
    out = model(x, training=False)
    if isinstance(out, (list, tuple)):
        out = out[0]
    return np.asarray(out, "float32")


def predict(model, x, mode: str) -> np.ndarray:
    """The model's softmax outputs for a batch, averaged over the views of ``mode``.

    Args:
        model: A single-label Keras classifier ending in a softmax.
        x: A batch of eval crops ``[N, H, W, C]``.
        mode: One of :data:`TTA_MODES`.

    Returns:
        ``[N, classes]`` probabilities.
    """
    import tensorflow as tf

    mode = check_tta(mode)
    probs = _probabilities(model, x)
    if mode == "flip":
        probs = (probs + _probabilities(model, tf.image.flip_left_right(x))) / 2
    return probs


def collect(model, dataset, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, probabilities)`` over ``(pixels, class index)`` batches under ``mode``."""
    labels, probs = [], []
    for x, y in dataset:
        probs.append(predict(model, x, mode))
        labels.append(np.asarray(y).reshape(-1))
    return np.concatenate(labels).astype("int64"), np.concatenate(probs)
