"""The split leakage check: perceptual-hash distances of copies and distinct images, and cost.

Distances: crops of 256x192 are cut on a grid from scikit-image's sample photographs; each
crop is compared (64-bit pHash, ``pipelines.leakage``) with its copies — resized to 50%,
75% and 150%, re-encoded at JPEG quality 60, resized and re-encoded, cut 3%, 5% or 10% at
each border — and with every other crop, of the same photo (offset by at least half a crop,
so at most half of it shared) and of the other photos. The ranges are printed per kind.

Cost: from_folder on ``benchmarks/pipeline.py``'s folder of real-photo JPEGs (about 500x375)
with ``dedupe="off"``, with the default (identical files) and with ``dedupe_near=True``,
alternating, several rounds; medians reported.

    .venv/bin/python benchmarks/leakage.py distances
    .venv/bin/python benchmarks/leakage.py cost --images 2000 --rounds 3

Effect: scikit-learn's digits as a ``train/`` and ``val/`` folder (32x32 PNGs), where
``val/`` holds distinct digits and resized, JPEG re-encoded copies of some training
digits; LeNet-5 trained from scratch with ``dedupe_near=True`` and ``dedupe`` ``"warn"``
(the copies stay in validation) and ``"drop"``, against the accuracy on the distinct
validation digits alone. It also counts the distinct digits the hash pairs with a training
digit (false pairs: small grey digits look alike).

    .venv/bin/python benchmarks/leakage.py effect --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

CROP = (256, 192)


def _jpeg(image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _copies(image) -> dict[str, bytes]:
    from PIL import Image

    w, h = image.size
    out = {f"resized {int(s * 100)}%": _jpeg(image.resize((int(w * s), int(h * s)),
                                                           Image.LANCZOS))
           for s in (0.5, 0.75, 1.5)}
    out["JPEG q60"] = _jpeg(image, 60)
    out["resized 50% + q60"] = _jpeg(image.resize((w // 2, h // 2), Image.LANCZOS), 60)
    for cut in (0.03, 0.05, 0.10):
        dx, dy = int(w * cut), int(h * cut)
        out[f"cut {int(cut * 100)}% each side"] = _jpeg(image.crop((dx, dy, w - dx, h - dy)))
    return out


def _crops():
    """``(photo name, (left, top), PIL crop)`` on a grid with half-crop steps."""
    import skimage.data
    from PIL import Image
    from pipeline import SOURCES

    for name in SOURCES:
        photo = Image.fromarray(getattr(skimage.data, name)()[..., :3])
        for top in range(0, photo.height - CROP[1] + 1, CROP[1] // 2):
            for left in range(0, photo.width - CROP[0] + 1, CROP[0] // 2):
                yield name, (left, top), photo.crop((left, top, left + CROP[0],
                                                      top + CROP[1]))


def distances() -> None:
    """Prints the range of distances of each kind of copy and of distinct crops."""
    from pipelines.leakage import fingerprints

    with tempfile.TemporaryDirectory() as tmp:
        crops, copies = [], {}
        for i, (name, corner, image) in enumerate(_crops()):
            path = os.path.join(tmp, f"{i}.jpg")
            Path(path).write_bytes(_jpeg(image))
            crops.append((name, corner, path))
            for kind, data in _copies(image).items():
                copy = os.path.join(tmp, f"{i}-{len(copies)}.jpg")
                Path(copy).write_bytes(data)
                copies[copy] = (path, kind)
        found = fingerprints([p for *_, p in crops] + list(copies))

    def distance(a, b):
        return bin(found[a][1] ^ found[b][1]).count("1")

    by_kind: dict[str, list[int]] = {}
    for copy, (original, kind) in copies.items():
        by_kind.setdefault(kind, []).append(distance(copy, original))
    for i, (name_a, (xa, ya), a) in enumerate(crops):
        for name_b, (xb, yb), b in crops[i + 1:]:
            if name_a != name_b:
                by_kind.setdefault("distinct: other photo", []).append(distance(a, b))
            elif abs(xa - xb) >= CROP[0] // 2 or abs(ya - yb) >= CROP[1] // 2:
                by_kind.setdefault("distinct: same photo", []).append(distance(a, b))
    print(f"{len(crops)} crops of {CROP[0]}x{CROP[1]} from skimage photos, 64-bit pHash:")
    for kind, values in by_kind.items():
        values = np.array(values)
        print(f"- {kind}: {len(values)} pairs, min {values.min()}, median "
              f"{int(np.median(values))}, max {values.max()}, <= 10: {(values <= 10).sum()}")


def cost(images: int, rounds: int, workdir: Path) -> None:
    """Times from_folder with the check off and on (default), alternating; prints medians."""
    from pipeline import build_folder

    import pipelines
    from pipelines.leakage import fingerprints

    root = build_folder(workdir / f"photos-{images}", images)
    modes = {"dedupe='off'": dict(dedupe="off"), "default (identical files)": {},
             "dedupe_near=True": dict(dedupe_near=True)}
    times: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(rounds):
        for name, keywords in modes.items():
            started = time.perf_counter()
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                data = pipelines.from_folder(root, **keywords)
            times[name].append(time.perf_counter() - started)
            pairs = len(data.manifest["leakage"]["pairs"])
            print(f"  {name}: {times[name][-1]:.2f} s, {pairs} pair(s)", flush=True)
    off = statistics.median(times["dedupe='off'"])
    print(f"{images} JPEGs of about 500x375, from_folder at default options, medians of "
          f"{rounds} alternating rounds:")
    for name, values in times.items():
        value = statistics.median(values)
        print(f"- {name}: {value:.2f} s ({(value - off) / off:+.0%} against dedupe='off')")
    # The check alone, which the end-to-end difference shows only through the noise.
    paths = [path for path, _ in data.train_files + data.val_files]
    for near in (False, True):
        alone = []
        for _ in range(rounds):
            started = time.perf_counter()
            fingerprints(paths, near=near)
            alone.append(time.perf_counter() - started)
        print(f"- the fingerprints alone, near={near}: {statistics.median(alone):.2f} s")


def _digits_folder(root: Path, train: int, distinct: int, copies: int) -> None:
    """Writes ``root/train/<class>`` and ``root/val/<class>`` (``copy_*`` files are copies)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()

    def image(i: int) -> Image.Image:
        pixels = (data.images[i] / 16.0 * 255).astype("uint8")
        return Image.fromarray(pixels).resize((32, 32), Image.BILINEAR)

    for i in range(train):
        path = root / "train" / str(data.target[i]) / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image(i).save(path)
    for i in range(len(data.target) - distinct, len(data.target)):
        path = root / "val" / str(data.target[i]) / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image(i).save(path)
    for i in range(copies):  # resized to 40x40 and re-encoded: no byte in common
        path = root / "val" / str(data.target[i]) / f"copy_{i:04d}.jpg"
        path.write_bytes(_jpeg(image(i).resize((40, 40), Image.BICUBIC), 75))


def effect(seeds: list[int], epochs: int, workdir: Path) -> None:
    import keras

    import pipelines
    import zoo

    root = workdir / "digits-leaky"
    if not root.is_dir():
        _digits_folder(root, train=300, distinct=400, copies=150)
    common = dict(model="lenet5", batch_size=32, augment="none", dedupe_near=True)
    print(f"digits: 300 train, 400 distinct validation + 150 copies of training digits; "
          f"LeNet-5 from scratch, {epochs} epochs")
    # The distinct validation digits alone (no copy_ file): the figure without leakage.
    files = sorted((root / "val").rglob("[0-9]*.png"))
    distinct = pipelines.from_files([str(f) for f in files], model="lenet5", batch_size=64)
    truth = np.array([int(f.parent.name) for f in files])
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        row = {}
        for mode in ("warn", "drop"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = pipelines.from_folder(root, dedupe=mode, seed=seed,
                                             out_dir=workdir / f"split-{mode}", **common)
                keras.utils.set_random_seed(seed)
                result = zoo.finetune("lenet5", data, weights=None, epochs=epochs,
                                      out_dir=workdir / f"run-{mode}-{seed}",
                                      overwrite=True, verbose=0)
            row[mode] = result.metrics["val_accuracy"]
            pairs = data.manifest["leakage"]["pairs"]
            flagged = {pair["other"] for pair in pairs}
            copies = sum("copy_" in name for name in flagged)
            row["pairs"] = (copies, len(flagged) - copies)
            if mode == "warn":
                predicted = result.model.predict(distinct.dataset, verbose=0).argmax(-1)
                row["distinct"] = float((predicted == truth).mean())
        print(f"seed {seed}: val accuracy with the copies (warn) {row['warn']:.3f}, "
              f"after drop {row['drop']:.3f}, on the distinct digits alone "
              f"{row['distinct']:.3f}; pairs found: {row['pairs'][0]} of 150 copies, "
              f"{row['pairs'][1]} of 400 distinct digits")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("distances", "cost", "effect"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/zoo-bench-pipeline"))
    args = parser.parse_args(argv)
    if args.what == "distances":
        distances()
    elif args.what == "effect":
        effect(args.seeds, args.epochs, args.workdir)
    else:
        cost(args.images, args.rounds, args.workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
