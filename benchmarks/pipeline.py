"""Input-pipeline throughput: our train path against Keras' loader and the decode ceiling.

Builds a folder of real-photo JPEGs cut from scikit-image's sample photographs (about
500x375, 10 classes) and measures images per second of one epoch, for:

1. read + full decode only (``tf.io.decode_jpeg``): the ceiling of a pipeline that decodes
   whole images;
2. ``keras.utils.image_dataset_from_directory`` at 256x256 + ``RandomCrop(224)`` +
   ``RandomFlip``: what a Keras user writes today;
3. ``pipelines.from_folder(augment="standard")``: random-resized-crop fused with JPEG
   decoding, flip;
4. ``pipelines.from_folder(augment=albumentations.Compose([RandomResizedCrop, HorizontalFlip]))``;
5. the Keras baseline again with tf.data's autotuning off, as our pipelines and the ceiling
   run, to tell the transform's share of the difference from the setting's.

All run in one process, in rotating order, several rounds; the medians are reported (single
runs drift up to 1.6x on a shared machine). The scan of the folder (fast and full check) is
timed separately.

    .venv/bin/python benchmarks/pipeline.py                # 3000 images, 5 rounds
    .venv/bin/python benchmarks/pipeline.py --images 1000 --rounds 3 --large 0
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
           "immunohistochemistry", "retina")


def photo_crops(count: int, seed: int = 0, size: tuple[int, int] = (500, 375)):
    """Yields ``(index, PIL image, rng)``: ``count`` crops of ``size`` (a quarter portrait,
    half mirrored) from scikit-image's photographs, and the generator that drew them."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = [getattr(skimage.data, name)() for name in SOURCES]
    for i in range(count):
        photo = Image.fromarray(photos[i % len(photos)])
        portrait = rng.random() < 0.25
        width, height = (size[1], size[0]) if portrait else size
        # Scale so that the photo covers the target, with some zoom, then cut a window.
        scale = max(width / photo.width, height / photo.height) * rng.uniform(1.0, 1.6)
        resized = photo.resize((int(photo.width * scale) + 1, int(photo.height * scale) + 1),
                               Image.BILINEAR)
        left = rng.integers(0, resized.width - width + 1)
        top = rng.integers(0, resized.height - height + 1)
        image = resized.crop((left, top, left + width, top + height))
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        yield i, image, rng


def build_folder(root: Path, count: int, classes: int = 10, seed: int = 0,
                 size: tuple[int, int] = (500, 375)) -> Path:
    """Writes ``count`` JPEGs of ``size`` (a quarter portrait) into ``root/<class>/``."""
    marker = root / f".complete-{count}-{classes}-{seed}-{size[0]}x{size[1]}"
    if marker.exists():
        return root
    for i, image, rng in photo_crops(count, seed, size):
        folder = root / f"class_{i % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:05d}.jpg", "JPEG", quality=int(rng.integers(85, 96)))
    marker.write_text("ok")
    return root


def ceiling_dataset(root: Path, batch: int):
    """Read + full decode, nothing else; the consumer gets each image's shape."""
    import tensorflow as tf

    paths = sorted(str(p) for p in root.rglob("*.jpg"))

    def decode_only(path):
        return tf.shape(tf.io.decode_jpeg(tf.io.read_file(path), channels=3))

    # Autotuning off, as in our pipelines: the ceiling is the best setting.
    return without_autotuning(
        tf.data.Dataset.from_tensor_slices(paths).shuffle(len(paths), seed=0)
        .map(decode_only, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
        .batch(batch).prefetch(tf.data.AUTOTUNE))


def without_autotuning(dataset):
    """``dataset`` with tf.data's model-based autotuning off, as ``pipelines`` runs."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def ours_dataset(root: Path, batch: int, size: int, **kwargs):
    import pipelines

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pipelines.from_folder(root, image_size=size, batch_size=batch,
                                     validation_split=0, cache=False, **kwargs)


def make_pipelines(root: Path, batch: int, size: int) -> tuple[dict, dict]:
    import albumentations as A
    import keras
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    ceiling = ceiling_dataset(root, batch)

    keras_ds = keras.utils.image_dataset_from_directory(
        root, image_size=(256, 256), batch_size=batch, shuffle=True, seed=0,
        crop_to_aspect_ratio=True, verbose=False)
    crop = keras.layers.RandomCrop(size, size, seed=0)
    flip = keras.layers.RandomFlip("horizontal", seed=0)
    keras_ds = keras_ds.map(lambda x, y: (flip(crop(x, training=True), training=True), y),
                            num_parallel_calls=autotune).prefetch(autotune)
    # The same with autotuning off, as our pipelines run: for a fair reading of how much of
    # the difference is the transform and how much the setting.
    keras_off = without_autotuning(keras_ds)

    timings = {}
    start = time.perf_counter()
    ours = ours_dataset(root, batch, size, augment="standard")
    timings["scan (fast check)"] = time.perf_counter() - start
    start = time.perf_counter()
    ours_dataset(root, batch, size, check="full")
    timings["scan (full check)"] = time.perf_counter() - start
    albu = ours_dataset(root, batch, size, augment=A.Compose(
        [A.RandomResizedCrop(size=(size, size)), A.HorizontalFlip()], seed=0))
    return {
        "read + full decode (ceiling)": ceiling,
        "keras image_dataset_from_directory + RandomCrop + RandomFlip": keras_ds,
        'ours, augment="standard"': ours.train,
        "ours, albumentations RandomResizedCrop + HorizontalFlip": albu.train,
        "keras baseline with tf.data autotuning off": keras_off,
    }, timings


def epoch_rate(dataset, count: int) -> tuple[float, float]:
    """Images per second and per CPU-second of one full pass.

    The process's CPU time (all threads) is far steadier than wall time on a machine that
    other jobs share: it measures the work, not the share of the cores this process got.
    """
    start, cpu = time.perf_counter(), time.process_time()
    seen = 0
    for batch in dataset:
        first = batch[0] if isinstance(batch, tuple) else batch
        seen += int(first.shape[0])
    elapsed, cpu_used = time.perf_counter() - start, time.process_time() - cpu
    assert seen == count, (seen, count)
    return seen / elapsed, seen / cpu_used


def measure(datasets: dict, count: int, rounds: int) -> dict[str, list[tuple[float, float]]]:
    """Alternates the datasets (rotating the order every round) after one warm-up epoch."""
    names = list(datasets)
    for name in names:  # warm-up: tracing, autotuning, page cache
        epoch_rate(datasets[name], count)
    rates: dict[str, list] = {name: [] for name in names}
    for round_ in range(rounds):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            rates[name].append(epoch_rate(datasets[name], count))
        print(f"round {round_ + 1}: " + ", ".join(
            f"{rates[n][-1][0]:.0f}/{rates[n][-1][1]:.0f}" for n in names), file=sys.stderr)
    return rates


def medians(values: list[tuple[float, float]]) -> tuple[float, float]:
    return (statistics.median(v[0] for v in values), statistics.median(v[1] for v in values))


def common_parser(description: str) -> argparse.ArgumentParser:
    """The options every pipeline benchmark takes: folder size, rounds, batch, output size."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/zoo-bench-pipeline"))
    return parser


def main(argv=None) -> int:
    parser = common_parser(__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=300,
                        help="also compare on this many 1600x1200 photos (0: skip)")
    args = parser.parse_args(argv)

    root = build_folder(args.workdir / f"photos-{args.images}", args.images)
    datasets, timings = make_pipelines(root, args.batch, args.size)
    rates = measure(datasets, args.images, args.rounds)
    names = list(datasets)
    wall = {n: medians(rates[n])[0] for n in names}
    cpu = {n: medians(rates[n])[1] for n in names}
    ceiling, keras_name, ours, albu, keras_off = names

    print(f"\n{args.images} JPEGs of about 500x375, batch {args.batch}, output "
          f"{args.size}x{args.size}, {os.cpu_count()} cores, medians of {args.rounds} "
          f"alternating rounds; load average at the end {os.getloadavg()[0]:.1f}\n")
    print("| pipeline | img/s (wall) | img per CPU-second |")
    print("|---|---:|---:|")
    for name in names:
        print(f"| {name} | {wall[name]:.0f} | {cpu[name]:.0f} |")
    print()
    print("| ratio | wall | CPU time | target |")
    print("|---|---:|---:|---:|")
    for label, a, b, target in (("ours / Keras baseline", ours, keras_name, ">= 2.5x"),
                                ("ours / full-decode ceiling", ours, ceiling, ">= 1.0x"),
                                ("albumentations / ours", albu, ours, ">= 0.5x"),
                                ("ours / Keras baseline, autotuning off", ours, keras_off,
                                 "(fairness check)")):
        print(f"| {label} | {wall[a] / wall[b]:.2f}x | {cpu[a] / cpu[b]:.2f}x | {target} |")
    print()
    for name, seconds in timings.items():
        print(f"- {name} of {args.images} files, including building the tf.data graph: "
              f"{seconds:.2f} s")

    if args.large:
        big = build_folder(args.workdir / f"large-{args.large}", args.large,
                           size=(1600, 1200))
        large = {"read + full decode (ceiling), 1600x1200": ceiling_dataset(big, args.batch),
                 'ours, augment="standard", 1600x1200': ours_dataset(
                     big, args.batch, args.size, augment="standard").train}
        large_rates = measure(large, args.large, args.rounds)
        (c_name, o_name) = list(large)
        c_wall, c_cpu = medians(large_rates[c_name])
        o_wall, o_cpu = medians(large_rates[o_name])
        print(f"\nLarger photos ({args.large} JPEGs of 1600x1200, where libjpeg's DCT "
              "downscaling applies to most crops):\n")
        print("| pipeline | img/s (wall) | img per CPU-second |")
        print("|---|---:|---:|")
        print(f"| {c_name} | {c_wall:.0f} | {c_cpu:.0f} |")
        print(f"| {o_name} | {o_wall:.0f} | {o_cpu:.0f} |")
        print(f"\nours / ceiling at 1600x1200: {o_wall / c_wall:.2f}x wall, "
              f"{o_cpu / c_cpu:.2f}x CPU time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
