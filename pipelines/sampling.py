"""How the train stream draws its images: ``sampling="natural"`` or ``"balanced"``.

Balanced sampling re-samples the train records with ``tf.data`` before they are decoded:
one endless, shuffled stream per class, drawn from with equal weights by
``tf.data.Dataset.sample_from_datasets``. Files are neither copied nor repeated on disk,
and one epoch stays ``size`` images, so steps per epoch, schedules and progress bars do
not change; rare classes' images simply come round more often within it.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

SAMPLINGS = ("natural", "balanced")


def check_sampling(sampling: str, multi_label: bool) -> str:
    """``sampling``, checked.

    Raises:
        ValueError: For an unknown value, and for ``"balanced"`` with multi-label data.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be 'natural' or 'balanced'; got {sampling!r}.")
    if sampling == "balanced" and multi_label:
        raise ValueError(
            "sampling='balanced' is not defined for multi-label data: an image carrying "
            "several classes would be drawn for each of them, so no draw makes every class "
            "equally frequent. Use sampling='natural' and weight the loss instead (the "
            "positive weights of binary cross-entropy, or a focal loss).")
    return sampling


def balanced(ds: tf.data.Dataset, classes: Sequence[int], *, size: int | None, seed: int,
             shuffle: bool = True, in_memory: bool = False) -> tf.data.Dataset:
    """Draws ``(source, label, kind, orientation)`` elements with every class equally often.

    Args:
        ds: The train records (or their cached bytes), int32 labels second.
        classes: The class indices that have training images (a class without any would
            never yield, and its stream would wait forever).
        size: Elements per epoch (the train split's size).
        seed: Seed of the per-class shuffles and of the draws.
        shuffle: Shuffle each class's stream (every pass through it anew).
        in_memory: ``ds`` is an in-memory cache: each class's stream then keeps its own
            elements after its first pass (references to the cached tensors, not copies),
            so that a rare class's many passes per epoch do not each scan the whole cache.
            Otherwise each pass filters ``ds`` again, which costs little over records of
            paths and more over a file cache.

    Returns:
        An epoch of ``size`` elements (endless if ``size`` is None).

    Raises:
        ValueError: If ``classes`` is empty.
    """
    if not classes:
        raise ValueError("Balanced sampling needs at least one class with training images.")
    streams = []
    for offset, label in enumerate(classes):
        stream = ds.filter(lambda source, y, kind, orientation, label=label:
                           tf.equal(y, label))
        if in_memory:
            stream = stream.cache()
        if shuffle:
            stream = stream.shuffle(size or 10_000, seed=seed + 7919 * (offset + 1),
                                    reshuffle_each_iteration=True)
        streams.append(stream.repeat())
    drawn = tf.data.Dataset.sample_from_datasets(
        streams, weights=[1.0 / len(streams)] * len(streams), seed=seed,
        rerandomize_each_iteration=True)
    return drawn.take(size) if size else drawn


__all__ = ["SAMPLINGS", "balanced", "check_sampling"]
