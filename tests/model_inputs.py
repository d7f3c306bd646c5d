"""Small inputs for model tests, and the fast way to run a model on them."""

from __future__ import annotations

import keras
import numpy as np

from zoo.models import get_spec


def small_shape(name: str, channels: int = 3) -> tuple[int, int, int]:
    """The smallest input a model accepts, at least 32x32: keeps the suite fast."""
    min_h, min_w = get_spec(name).min_input_size
    return (max(min_h, 32), max(min_w, 32), channels)


def pixels(shape, batch: int = 2, seed: int = 0) -> np.ndarray:
    """Seeded float32 pixels in [0, 255] of ``(batch, *shape)``."""
    return np.random.default_rng(seed).uniform(0, 255, (batch, *shape)).astype("float32")


def run(model, x):
    """Calls the model eagerly: for one small batch, tracing ``predict``'s graph costs
    several times the pass itself (about 4 s against 1 s for Inception-ResNet-v2).

    Returns a NumPy array, or a list of them for a model with several outputs.
    """
    out = model(x, training=False)
    if isinstance(out, (list, tuple)):
        return [keras.ops.convert_to_numpy(o) for o in out]
    return keras.ops.convert_to_numpy(out)


def assert_close(what: str, out: np.ndarray, ref: np.ndarray, tolerance: float = 1e-4) -> None:
    """Asserts ``out`` matches ``ref`` within ``tolerance`` times the reference's largest value.

    Prints the figures, so a run with ``-s`` shows how close each comparison came.
    """
    assert out.shape == ref.shape, (out.shape, ref.shape)
    scale = float(np.abs(ref).max())
    diff = float(np.abs(out - ref).max())
    print(f"\n{what:48s} max|diff| {diff:.3e}  scale {scale:.3e}  ratio {diff / scale:.2e}")
    assert scale > 0
    assert diff <= tolerance * scale, f"{what}: {diff} > {tolerance} * {scale}"
