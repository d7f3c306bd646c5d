"""Test-time augmentation: the model's probabilities averaged over several views of an image.

The modes (:data:`TTA_MODES`):

- ``"none"``: the eval centre crop alone;
- ``"flip"``: the eval centre crop and its left-right mirror (2 views), as timm's and
  fastai's flip TTA;
- ``"five_crop"``: the four corner crops and the centre crop of the image resized as the
  eval transform resizes it, before its centre crop (5 views), as torchvision's
  ``FiveCrop`` after ``Resize``: ``pipelines.transforms.eval_five_crop``;
- ``"flip+five_crop"``: those five and their mirrors (10 views), as ``TenCrop``.

The softmax outputs of the views are averaged (probabilities, not logits). Five-crop views
come from the resized image, so a caller hands :func:`predict` ``[N, 5, H, W, C]`` views
(``pipelines.EvalFiles.five_crops`` on files, ``make_eval_transform(five_crop=True)`` on
bytes) where :func:`needs_views` says so, and ``[N, H, W, C]`` eval crops otherwise. Only
single-label models are averaged; evaluate and export refuse TTA for multi-label ones.
:func:`average` is the same average as a TensorFlow function, which the exported
SavedModel's signatures hold.
"""

from __future__ import annotations

import numpy as np

TTA_MODES = ("none", "flip", "five_crop", "flip+five_crop")

# Views per image under each mode.
VIEWS = {"none": 1, "flip": 2, "five_crop": 5, "flip+five_crop": 10}


def check_tta(mode: str | None) -> str:
    """Returns the TTA mode (``None`` is ``"none"``), or raises naming the allowed values."""
    mode = "none" if mode is None else mode
    if mode not in TTA_MODES:
        raise ValueError(f"Unknown tta {mode!r}; use one of {', '.join(TTA_MODES)}.")
    return mode


def needs_views(mode: str) -> bool:
    """Whether ``mode`` takes five-crop views ``[N, 5, H, W, C]`` rather than eval crops."""
    return "five_crop" in check_tta(mode)


def flips(mode: str) -> bool:
    """Whether ``mode`` averages each view with its left-right mirror."""
    return "flip" in check_tta(mode)


def average(probability_fn, x, mode: str):
    """The probabilities of ``x``'s views under ``mode``, averaged, in TensorFlow.

    All views go through ``probability_fn`` as one batch, so a graph (a serving signature)
    runs the model once per request.

    Args:
        probability_fn: Pixels ``[M, H, W, C]`` to probabilities ``[M, classes]``.
        x: ``[N, 5, H, W, C]`` views when :func:`needs_views`, else ``[N, H, W, C]``.
        mode: One of :data:`TTA_MODES`.

    Returns:
        ``[N, classes]`` float32 probabilities.
    """
    import tensorflow as tf

    mode = check_tta(mode)
    if mode == "none":
        return probability_fn(x)
    if needs_views(mode):
        shape = tf.shape(x)
        batch, views = shape[0], shape[1]
        x = tf.reshape(x, tf.concat([[batch * views], shape[2:]], 0))
    else:
        batch, views = tf.shape(x)[0], 1
    if flips(mode):
        x = tf.concat([x, tf.reverse(x, [2])], 0)  # axis 2 of [M, H, W, C] is the width
    probs = tf.cast(probability_fn(x), tf.float32)
    copies = 2 if flips(mode) else 1
    # [copies * N * views, C] -> [copies, N, views, C]: mirrors first, then image, then view.
    probs = tf.reshape(probs, tf.stack([copies, batch, views, -1]))
    return tf.reduce_mean(probs, axis=[0, 2])


def _probabilities(model, x) -> np.ndarray:
    out = model(x, training=False)
    if isinstance(out, (list, tuple)):
        out = out[0]
    return out


def predict(model, x, mode: str) -> np.ndarray:
    """The model's softmax outputs for a batch, averaged over the views of ``mode``.

    Args:
        model: A single-label Keras classifier ending in a softmax.
        x: A batch of eval crops ``[N, H, W, C]``, or for the five-crop modes of five-crop
            views ``[N, 5, H, W, C]``.
        mode: One of :data:`TTA_MODES`.

    Returns:
        ``[N, classes]`` probabilities.
    """
    mode = check_tta(mode)
    rank = len(np.shape(x))
    if rank != (5 if needs_views(mode) else 4):
        wanted = "[N, 5, H, W, C] five-crop views" if needs_views(mode) else \
            "[N, H, W, C] eval crops"
        raise ValueError(f"tta={mode!r} takes {wanted}; got shape {tuple(np.shape(x))}.")
    return np.asarray(average(lambda pixels: _probabilities(model, pixels), x, mode),
                      "float32")


def collect(model, dataset, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, probabilities)`` over ``(pixels or views, class index)`` batches."""
    labels, probs = [], []
    for x, y in dataset:
        probs.append(predict(model, x, mode))
        labels.append(np.asarray(y).reshape(-1))
    return np.concatenate(labels).astype("int64"), np.concatenate(probs)
