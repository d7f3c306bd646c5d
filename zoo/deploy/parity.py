"""The self-checks: every artifact against the Keras model, on the same sample images.

The reference is the Keras model on the pixels of the eval path
(``pipelines.make_eval_transform`` at the exported geometry); each artifact's
probabilities must agree within :data:`TOLERANCES`, and formats not listed there (the
quantised TFLite files) are measured and reported, not enforced.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zoo.registry import Geometry

# Largest |probability difference| from the Keras model that the self-check accepts; formats
# not listed (the quantised ones) are measured and reported, not enforced.
TOLERANCES: dict[str, float] = {"savedmodel": 1e-5, "tflite": 1e-4, "onnx": 1e-4}

# How many images of a folder the self-check reads at most.
MAX_SAMPLE_IMAGES = 32


class ExportCheckError(RuntimeError):
    """An exported artifact does not reproduce the Keras model within tolerance."""


def synthetic_images(count: int = 6, seed: int = 0) -> list[bytes]:
    """Encodes a few synthetic images, in every format and in odd sizes, for self-checks.

    Smooth gradients with noise, so that JPEG and GIF compression, the resize and the crop
    all have something to do; sizes are below, at and above typical inputs, in portrait and
    landscape.

    Args:
        count: How many images (formats and sizes cycle).
        seed: Random seed.

    Returns:
        Encoded images (PNG, JPEG, BMP, GIF).
    """
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [(40, 48), (70, 33), (64, 64), (25, 20), (97, 131), (32, 32)]
    formats = ["PNG", "JPEG", "BMP", "GIF"]
    images = []
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([255 * yy / h, 255 * xx / w, 128 + 100 * np.sin(xx / 5.0 + yy / 7.0)],
                        axis=-1)
        pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype("uint8")
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, formats[i % len(formats)])
        images.append(buffer.getvalue())
    return images


def read_images(paths: Iterable[str | os.PathLike]) -> list[bytes]:
    """The bytes of each file, in order."""
    return [Path(p).read_bytes() for p in paths]


def sample_images(given: str | os.PathLike | Sequence[str | os.PathLike] | None,
                  samples_dir: Path | None) -> list[bytes]:
    """The self-check's images: those given, else the run's samples, else synthetic ones.

    Args:
        given: None, a folder, or a sequence of image files.
        samples_dir: The run's ``samples/`` folder, or None.

    Raises:
        FileNotFoundError: When the folder holds no images.
    """
    from pipelines import list_images

    if given is None:
        given = samples_dir
    if given is None:
        return synthetic_images()
    if isinstance(given, (str, os.PathLike)):
        images = read_images(list_images(given, limit=MAX_SAMPLE_IMAGES))
    else:
        images = read_images(given)
    if not images:
        raise FileNotFoundError(f"No sample images found in {given}.")
    return images


def reference_pixels(images: Sequence[bytes], geometry: Geometry, five_crop: bool = False):
    """Decodes and transforms encoded images eagerly, as the bytes signature does in-graph.

    Args:
        images: Encoded images.
        geometry: The :class:`zoo.Geometry` exported (input size, crop fraction,
            interpolation, channels).
        five_crop: Each image's five-crop views instead of its eval crop (test-time
            augmentation; see :func:`eval_transform`).

    Returns:
        float32 numpy array [N, H, W, C], or [N, 5, H, W, C] with ``five_crop``.

    Raises:
        ValueError: For a model that takes other than 1 or 3 channels.
        tf.errors.InvalidArgumentError: When an image cannot be decoded.
    """
    import numpy as np

    transform = eval_transform(geometry, five_crop=five_crop)
    return np.stack([transform(image).numpy() for image in images])


def eval_transform(geometry: Geometry, five_crop: bool = False):
    """``pipelines.make_eval_transform`` at a geometry: bytes -> float32 [H, W, C].

    With ``five_crop``: bytes -> float32 [5, H, W, C], the four corners and the centre of
    the resized image before its centre crop (test-time augmentation).

    Raises:
        ValueError: For a model that takes other than 1 or 3 channels.
    """
    from pipelines import make_eval_transform

    if geometry.channels not in (1, 3):
        raise ValueError(f"Images decode to 1 (grayscale) or 3 (RGB) channels; the model "
                         f"takes {geometry.channels}. Export the pixels formats only "
                         f"(tflite, onnx).")
    return make_eval_transform(geometry.image_size, geometry.crop_fraction,
                               geometry.interpolation, geometry.channels,
                               five_crop=five_crop)


def compare(name: str, got, expected, extra: dict | None = None) -> dict:
    """The check figures of one artifact's probabilities against the Keras model's.

    Args:
        name: The format (its tolerance, if any, is recorded).
        got: The artifact's probabilities [N, C].
        expected: The Keras model's [N, C].
        extra: More figures to record (e.g. ``bytes``).

    Returns:
        ``max_abs_diff``, ``top1_agreement``, ``samples``, ``tolerance`` where enforced,
        and ``extra``.

    Raises:
        ExportCheckError: When the shapes differ.
    """
    import numpy as np

    got = np.asarray(got, dtype="float64")
    expected = np.asarray(expected, dtype="float64")
    if got.shape != expected.shape:
        raise ExportCheckError(f"{name}: output shape {got.shape} differs from the Keras "
                               f"model's {expected.shape}.")
    result = {
        "max_abs_diff": float(np.max(np.abs(got - expected))) if got.size else 0.0,
        "top1_agreement": float(np.mean(np.argmax(got, -1) == np.argmax(expected, -1))),
        "samples": int(expected.shape[0]),
    }
    tolerance = TOLERANCES.get(name)
    if tolerance is not None:
        result["tolerance"] = tolerance
    result.update(extra or {})
    return result


def enforce(name: str, check: dict) -> None:
    """Raises :class:`ExportCheckError` when a check's difference exceeds its tolerance."""
    tolerance = check.get("tolerance")
    if tolerance is not None and not check["max_abs_diff"] <= tolerance:
        raise ExportCheckError(
            f"Self-check failed for {name}: the reloaded artifact's probabilities differ "
            f"from the Keras model's by up to {check['max_abs_diff']:.3g} on "
            f"{check['samples']} sample images (tolerance {tolerance:g}). Nothing was "
            f"written to the target; please report this with the model name and the sample "
            f"images.")


def compare_and_enforce(name: str, got, expected, extra: dict | None = None) -> dict:
    """:func:`compare`, then :func:`enforce`; returns the figures."""
    check = compare(name, got, expected, extra)
    enforce(name, check)
    return check
