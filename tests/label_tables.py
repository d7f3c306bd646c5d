"""Label tables over real images, for the tests of tables and multi-label training.

:func:`write_digit_table` writes pictures of two or three of scikit-learn's handwritten
digits side by side, labelled with the set of digits shown, and a CSV that lists them.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

TILE = 28  # pixels per digit, as MNIST


def digit_tiles(tile: int = TILE) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits as uint8 ``[N, tile, tile]`` images (ink bright) and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).astype(np.uint8)
    tiles = np.stack([np.asarray(Image.fromarray(im).resize((tile, tile), Image.BILINEAR))
                      for im in images])
    return tiles, digits.target.astype(int)


def write_digit_table(folder: str | Path, n_images: int = 120, *, seed: int = 0,
                      digits_per_image: tuple[int, ...] = (2, 3), tile: int = TILE,
                      delimiter: str = " ") -> tuple[Path, Path]:
    """Writes ``folder/images/<i>.png`` (two or three distinct digits in three slots) and a CSV.

    Each picture is ``tile`` pixels high and ``3 * tile`` wide, RGB: the digits stand in
    random slots (an empty slot stays black). The CSV ``folder/labels.csv`` has the
    columns ``path`` (relative to ``folder/images``), ``label`` (the distinct digits shown,
    ascending, joined by ``delimiter``) and ``first`` (the leftmost digit alone, for a
    single-label model of the same pictures).

    Args:
        folder: Where to write; created if missing.
        n_images: Number of pictures.
        seed: Seed of the digits and slots chosen.
        digits_per_image: How many digits a picture may hold (chosen uniformly).
        tile: Side of one digit in pixels.
        delimiter: Joins the labels of one picture.

    Returns:
        ``(images folder, CSV path)``.
    """
    folder = Path(folder)
    images_dir = folder / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    tiles, targets = digit_tiles(tile)
    by_digit = {d: np.flatnonzero(targets == d) for d in range(10)}
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_images):
        count = int(rng.choice(digits_per_image))
        shown = rng.choice(10, size=count, replace=False)
        slots = np.sort(rng.choice(3, size=count, replace=False))
        canvas = np.zeros((tile, 3 * tile), np.uint8)
        for digit, slot in zip(shown, slots):
            canvas[:, slot * tile:(slot + 1) * tile] = tiles[rng.choice(by_digit[digit])]
        name = f"{i:04d}.png"
        Image.fromarray(np.repeat(canvas[..., None], 3, axis=-1)).save(images_dir / name)
        rows.append({"path": name, "label": delimiter.join(str(d) for d in sorted(shown)),
                     "first": str(shown[0])})
    csv_path = folder / "labels.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "first"])
        writer.writeheader()
        writer.writerows(rows)
    return images_dir, csv_path
