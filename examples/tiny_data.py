"""Tiny image folders for the examples' ``--small`` mode (what CI runs); not needed otherwise.

Both write real image files, so the examples exercise the same folder-reading path as
with your own photos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def digits_folder(root: str | Path, per_class: int = 40) -> Path:
    """Writes the first ``per_class`` of each of scikit-learn's handwritten digits as PNGs.

    Args:
        root: Folder to write ``root/<digit>/*.png`` into.
        per_class: Images per class (the data set has about 180).

    Returns:
        ``root``.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    root = Path(root)
    digits = load_digits()
    written: dict[int, int] = {}
    for index, (image, label) in enumerate(zip(digits.images, digits.target)):
        if written.get(int(label), 0) >= per_class:
            continue
        written[int(label)] = written.get(int(label), 0) + 1
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.round(image / 16.0 * 255).astype("uint8")
        Image.fromarray(pixels, mode="L").save(folder / f"digit_{index:04d}.png")
    return root


PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def photo_folder(root: str | Path, per_class: int = 12, size: tuple[int, int] = (160, 120),
                 seed: int = 0) -> Path:
    """Writes JPEG crops of scikit-image's sample photographs, one class per photograph.

    Args:
        root: Folder to write ``root/<photo>/*.jpg`` into.
        per_class: Crops per photograph.
        size: ``(width, height)`` of each crop.
        seed: Seed of the crop positions and scales.

    Returns:
        ``root``.
    """
    import skimage.data
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for name in PHOTOS:
        photo = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            scale = max(size[0] / photo.width, size[1] / photo.height) * rng.uniform(1.0, 2.0)
            resized = photo.resize((int(photo.width * scale) + 1, int(photo.height * scale) + 1))
            left = int(rng.integers(0, resized.width - size[0] + 1))
            top = int(rng.integers(0, resized.height - size[1] + 1))
            crop = resized.crop((left, top, left + size[0], top + size[1]))
            crop.save(folder / f"{name}_{i:03d}.jpg", quality=90)
    return root
