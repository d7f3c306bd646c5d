"""torch and torchvision, imported for reference models in tests only.

A module of its own, not ``conftest``: with ``tests/pipelines`` holding a conftest.py too,
``import conftest`` may give that one.
"""

from __future__ import annotations

import sys
import types

import pytest


def import_torchvision():
    """Imports torch and torchvision's pure-Python model definitions, or skips the test.

    torchvision from the registry registers compiled ops that do not match the CPU torch
    build; an empty ``torchvision._meta_registrations`` module lets ``torchvision.models``
    import regardless, which is all the tests need. ``make test`` installs both, so in CI
    nothing is skipped.

    Returns:
        ``(torch, torchvision)``.
    """
    torch = pytest.importorskip("torch")
    sys.modules.setdefault("torchvision._meta_registrations",
                           types.ModuleType("torchvision._meta_registrations"))
    return torch, pytest.importorskip("torchvision")
