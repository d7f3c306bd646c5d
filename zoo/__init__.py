"""zoo: classic image networks for Keras 3, with pretrained weights, fine-tuning and export.

Example:
    >>> import zoo
    >>> model = zoo.build("resnet50", num_classes=10)

The public names are imported on first use, so that ``import zoo`` (and the ``zoo``
command's start-up) does not pay for TensorFlow until a model is needed.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public name -> module that defines it.
_EXPORTS = {
    "Geometry": "zoo.registry",
    "Recipe": "zoo.recipes.recipe",
    "Spec": "zoo.registry",
    "Weights": "zoo.registry",
    "build": "zoo.models",
    "count_macs": "zoo.models",
    "count_params": "zoo.models",
    "describe": "zoo.models",
    "evaluate": "zoo.recipes.evaluate",
    "export": "zoo.deploy",
    "find_learning_rate": "zoo.recipes.finetune",
    "finetune": "zoo.recipes.finetune",
    "geometry": "zoo.models",
    "get_spec": "zoo.models",
    "list_models": "zoo.models",
    "register": "zoo.registry",
    "select_strategy": "zoo.distribute",
    "without_aux": "zoo.architectures.inception",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
