"""Shared fixtures: quiet TensorFlow, torchvision's reference models, tiny image folders."""

from __future__ import annotations

import os
import sys
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


def import_torchvision():
    """Imports torch and torchvision's pure-Python model definitions, or skips the test.

    torchvision from the registry registers compiled ops that do not match the CPU torch
    build; an empty ``torchvision._meta_registrations`` module lets ``torchvision.models``
    import regardless, which is all the tests need.

    Returns:
        ``(torch, torchvision)``.
    """
    torch = pytest.importorskip("torch")
    sys.modules.setdefault("torchvision._meta_registrations",
                           types.ModuleType("torchvision._meta_registrations"))
    torchvision = pytest.importorskip("torchvision")
    return torch, torchvision


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
