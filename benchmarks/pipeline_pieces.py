"""Where the train path's time goes: its pieces measured one by one, in one process.

Each row is a tf.data pipeline over the same folder as ``benchmarks/pipeline.py`` (real-photo
JPEGs of about 500x375), built like our train path (shuffle, per-image stateless seeds,
parallel map, batch 64, autotuning off) but stopping after a given piece. The consumer gets
the pixels where a row makes them, else each image's shape. Rows alternate over several
rounds; the table gives medians of images per CPU-second, and each row's cost per image.

    .venv/bin/python benchmarks/pipeline_pieces.py --rounds 5
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import (  # noqa: E402
    build_folder,
    common_parser,
    measure,
    medians,
    ours_dataset,
    without_autotuning,
)


def piece_datasets(root: Path, batch: int, size: int) -> dict:
    """One dataset per piece of the train path, cheapest first."""
    import tensorflow as tf

    from pipelines import transforms

    paths = sorted(str(p) for p in root.rglob("*.jpg"))
    out = (size, size)

    def window(data, seed):
        return transforms.random_crop_window(tf.io.extract_jpeg_shape(data), seed)

    def crop(path, seed):
        data = tf.io.read_file(path)
        return tf.io.decode_and_crop_jpeg(data, window(data, seed), channels=3)

    def flipped(image, seed):
        mirror = tf.random.stateless_uniform([], seed) < 0.5
        return tf.cond(mirror, lambda: tf.reverse(image, [1]), lambda: image)

    pieces = {
        "read the file": lambda p, s: tf.strings.length(tf.io.read_file(p)),
        "read + full decode (the ceiling)": lambda p, s: tf.shape(
            tf.io.decode_jpeg(tf.io.read_file(p), channels=3)),
        "read + decode the crop window": lambda p, s: tf.shape(crop(p, s)),
        "+ resize (uint8 in) + batch float32": lambda p, s: tf.image.resize(crop(p, s), out),
        "+ resize (float32 in) + batch": lambda p, s: tf.image.resize(
            tf.cast(crop(p, s), tf.float32), out),
        "+ flip the crop + resize (uint8 in) + batch": lambda p, s: tf.image.resize(
            flipped(crop(p, s), s[::-1]), out),
        "+ resize + flip the output + batch": lambda p, s: flipped(
            tf.image.resize(crop(p, s), out), s[::-1]),
    }

    def dataset(piece):
        seeds = tf.data.Dataset.random(seed=0).batch(2)
        files = tf.data.Dataset.from_tensor_slices(paths).shuffle(len(paths), seed=0)
        return without_autotuning(
            tf.data.Dataset.zip((files, seeds))
            .map(piece, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
            .batch(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
            .prefetch(tf.data.AUTOTUNE))

    datasets = {name: dataset(piece) for name, piece in pieces.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        datasets['ours, augment="standard" (all of it)'] = ours_dataset(
            root, batch, size, augment="standard").train
    return datasets


def main(argv=None) -> int:
    args = common_parser(__doc__.splitlines()[0]).parse_args(argv)

    root = build_folder(args.workdir / f"photos-{args.images}", args.images)
    datasets = piece_datasets(root, args.batch, args.size)
    rates = measure(datasets, args.images, args.rounds)
    print(f"\n{args.images} JPEGs of about 500x375, batch {args.batch}, output "
          f"{args.size}x{args.size}, medians of {args.rounds} alternating rounds; load "
          f"average at the end {os.getloadavg()[0]:.1f}\n")
    print("| pipeline stops after | img/s (wall) | img per CPU-second | CPU ms per image |")
    print("|---|---:|---:|---:|")
    for name, values in rates.items():
        wall, cpu = medians(values)
        print(f"| {name} | {wall:.0f} | {cpu:.0f} | {1000 / cpu:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
