"""Data that ships with zoo: the ImageNet-1k class names and WordNet ids.

Where each file comes from and under which licence is in ``zoo/data/NOTICE.txt``.
"""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def _lines(file_name: str) -> tuple[str, ...]:
    text = resources.files(__package__).joinpath(file_name).read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in classifier-output order ("tench", "goldfish", ...).

    Returns:
        A new list, so callers may change it.
    """
    return list(_lines("imagenet_classes.txt"))


def imagenet_wnids() -> list[str]:
    """The WordNet ids of the same 1000 classes, in the same order ("n01440764", ...).

    Returns:
        A new list, so callers may change it.
    """
    return list(_lines("imagenet_wnids.txt"))


# Label sets by the name a Weights entry gives in its ``labels`` field.
LABEL_SETS = {"imagenet-1k": imagenet_class_names}


def class_names(label_set: str) -> list[str]:
    """The class names of a label set named by a Weights entry.

    Args:
        label_set: A name such as ``"imagenet-1k"``.

    Returns:
        The class names in classifier-output order.
    """
    if label_set not in LABEL_SETS:
        raise ValueError(f"Unknown label set {label_set!r}; known: {sorted(LABEL_SETS)}.")
    return LABEL_SETS[label_set]()
