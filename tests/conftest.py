"""Shared fixtures: quiet TensorFlow, torchvision's reference models, tiny image folders."""

from __future__ import annotations

import itertools
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# zoo keeps its caches and the check index under ZOO_HOME; the suite (and the subprocesses
# it starts, which inherit this) writes them into a folder of its own, not the user's home.
os.environ.setdefault("ZOO_HOME", tempfile.mkdtemp(prefix="zoo-tests-home-"))

import pytest  # noqa: E402
from torch_reference import import_torchvision  # noqa: E402


@pytest.fixture(scope="session")
def torchvision_models():
    """torchvision.models, importable beside the CPU torch build."""
    _, torchvision = import_torchvision()
    return torchvision.models


_TESTS_BETWEEN_COLLECTIONS = 10
_finished = itertools.count(1)


@pytest.fixture(autouse=True)
def _clear_keras_session():
    # Layer-name counters and graph state from one test must not leak into the next.
    yield
    import keras

    # A full gc.collect() (what free_memory=True adds) takes 0.2 s, over a minute if done
    # after every test. Python's own collector counts objects, not the large buffers behind
    # dropped models, so one collection every few tests keeps the memory bounded.
    keras.backend.clear_session(free_memory=next(_finished) % _TESTS_BETWEEN_COLLECTIONS == 0)
