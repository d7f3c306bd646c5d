"""Pretrained weights: catalog, download and cache, readers and converters.

``resolve(spec, weights)`` turns a tag or a path into a weight set and
``load_into(model, spec, weight_set, ...)`` loads it; ``zoo.build`` calls both.
"""

from __future__ import annotations


def resolve(spec, weights):
    """Resolves a catalog tag or a file path for ``spec`` to a weight set.

    Raises:
        ValueError: Always, until pretrained weights are implemented.
    """
    raise ValueError(
        f"Pretrained weights ({weights!r}) for {spec.name!r} are not available in this "
        "version of zoo yet; build with weights=None.")


def load_into(model, spec, weight_set, *, include_top: bool, num_classes: int) -> None:
    """Loads ``weight_set`` into ``model`` (not implemented yet)."""
    raise NotImplementedError
