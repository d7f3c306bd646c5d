"""Shared fixtures: quiet TensorFlow, torchvision's reference models, tiny image folders."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from torch_reference import import_torchvision  # noqa: E402


@pytest.fixture(scope="session")
def torchvision_models():
    """torchvision.models, importable beside the CPU torch build."""
    _, torchvision = import_torchvision()
    return torchvision.models


@pytest.fixture(autouse=True)
def _clear_keras_session():
    # Layer-name counters and graph state from one test must not leak into the next.
    yield
    import keras

    keras.backend.clear_session()
