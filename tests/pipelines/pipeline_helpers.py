"""Helpers that write tiny real-photo image folders (skimage's sample photographs).

Imported by every pipeline test module before ``pipelines``. There is deliberately no
conftest.py in this folder: pytest would import it as the module ``conftest`` and hide
tests/conftest.py from the modules that import helpers from it.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# pytest puts tests/ on sys.path (tests/ has no __init__.py), where this folder would pass
# for the `pipelines` package as a namespace package; the project root must come first.
_ROOT = str(Path(__file__).resolve().parents[2])
if sys.path[:1] != [_ROOT]:
    sys.path.insert(0, _ROOT)
if "pipelines" in sys.modules and getattr(sys.modules["pipelines"], "__file__", None) is None:
    del sys.modules["pipelines"]

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field")


def photo(name: str, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """A skimage sample photograph resized to ``size`` (width, height), uint8 RGB."""
    import skimage.data

    array = getattr(skimage.data, name)()
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    return np.asarray(Image.fromarray(array[..., :3]).resize(size, Image.BILINEAR))


def jpeg_bytes(array: np.ndarray, quality: int = 92, **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=quality, **save_kwargs)
    return buffer.getvalue()


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def make_folder(root: Path, per_class: dict[str, int], size=(64, 48)) -> Path:
    """Writes ``root/<class>/<i>.jpg`` from different crops of a few real photos."""
    rng = np.random.default_rng(0)
    for c, (name, count) in enumerate(per_class.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        base = photo(PHOTOS[c % len(PHOTOS)], (size[0] * 2, size[1] * 2))
        for i in range(count):
            y, x = rng.integers(0, size[1]), rng.integers(0, size[0])
            crop = base[y:y + size[1], x:x + size[0]]
            (folder / f"{i:03d}.jpg").write_bytes(jpeg_bytes(crop))
    return root


def tree_fingerprint(root: Path) -> dict[str, tuple]:
    """Path -> (size, mtime, sha256) of everything under root, symlinks as links."""
    out = {}
    for current, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(current) / name
            if path.is_symlink():
                out[str(path)] = ("link", os.readlink(path))
            elif path.is_file():
                stat = path.stat()
                out[str(path)] = (stat.st_size, stat.st_mtime_ns,
                                  hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                out[str(path)] = ("dir",)
    return out


def small_folder_at(root: Path) -> Path:
    """Three classes of 10, 10 and 8 real-photo JPEGs."""
    return make_folder(root, {"astronaut": 10, "coffee": 10, "chelsea": 8})
