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


def randomise_batch_norm(model, seed: int, *, scale: bool = True) -> None:
    """Moves every BatchNorm2d's statistics and affine parameters away from 0 and 1.

    Fresh batch norms hold mean 0, variance 1, scale 1 and shift 0, under which a wrong
    conversion of any of the four goes unseen; random values make the conversion tested.
    ``scale=False`` keeps the scales at one (for nets trained without a BN scale).
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
                if scale:
                    module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(n, generator=generator) - 0.5)
