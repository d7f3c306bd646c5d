"""Train-path throughput from a prepared store against raw files, Keras and the decode ceiling.

On the 500x375 real-photo folder of ``benchmarks/pipeline.py``: one epoch of the train path
(random-resized crop fused with decoding, flip) read from ``pipelines.prepare``'s store,
against the same from the raw files, ``keras.utils.image_dataset_from_directory`` +
RandomCrop + RandomFlip, and read + full decode of the raw files. Interleaved rounds in one
process; medians of images per wall-second and per CPU-second.

    .venv/bin/python benchmarks/store.py --images 1000 --rounds 3
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import (  # noqa: E402
    build_folder,
    ceiling_dataset,
    common_parser,
    measure,
    medians,
    ours_dataset,
)


def keras_dataset(root: Path, batch: int, size: int):
    import keras
    import tensorflow as tf

    ds = keras.utils.image_dataset_from_directory(
        root, image_size=(256, 256), batch_size=batch, shuffle=True, seed=0,
        crop_to_aspect_ratio=True, verbose=False)
    crop = keras.layers.RandomCrop(size, size, seed=0)
    flip = keras.layers.RandomFlip("horizontal", seed=0)
    return ds.map(lambda x, y: (flip(crop(x, training=True), training=True), y),
                  num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def main(argv=None) -> int:
    parser = common_parser(__doc__.splitlines()[0])
    parser.add_argument("--short-side", type=int, default=None,
                        help="the store's shorter side (default: prepare's, 1.25 x size)")
    args = parser.parse_args(argv)
    import pipelines

    root = build_folder(args.workdir / f"photos-{args.images}", args.images)
    store = args.workdir / f"store-{args.images}-{args.size}-{args.short_side}"
    shutil.rmtree(store, ignore_errors=True)
    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipelines.prepare(root, store, image_size=args.size, short_side=args.short_side,
                          validation_split=0)
        stored = pipelines.from_store(store, image_size=args.size, batch_size=args.batch)
    prepare_wall, prepare_cpu = time.perf_counter() - start, time.process_time() - cpu
    datasets = {
        "read + full decode (ceiling)": ceiling_dataset(root, args.batch),
        "keras image_dataset_from_directory + RandomCrop + RandomFlip":
            keras_dataset(root, args.batch, args.size),
        'from_folder, augment="standard" (raw files)':
            ours_dataset(root, args.batch, args.size, augment="standard").train,
        'from_store, augment="standard"': stored.train,
    }
    rates = measure(datasets, args.images, args.rounds)
    wall = {n: medians(r)[0] for n, r in rates.items()}
    cpu_rate = {n: medians(r)[1] for n, r in rates.items()}
    ceiling, keras_name, raw, ours = list(datasets)
    print(f"\n{args.images} JPEGs of about 500x375, batch {args.batch}, output "
          f"{args.size}x{args.size}, store short side {stored.manifest['short_side']}, "
          f"{os.cpu_count()} cores, medians of {args.rounds} interleaved rounds; load "
          f"average at the end {os.getloadavg()[0]:.1f}\n")
    print("| pipeline | img/s (wall) | img per CPU-second |")
    print("|---|---:|---:|")
    for name in datasets:
        print(f"| {name} | {wall[name]:.0f} | {cpu_rate[name]:.0f} |")
    print("\n| ratio | wall | CPU time | target |")
    print("|---|---:|---:|---:|")
    for label, a, b, target in (("store / ceiling", ours, ceiling, ">= 1.0x"),
                                ("store / Keras", ours, keras_name, ">= 3x"),
                                ("store / raw files", ours, raw, "")):
        print(f"| {label} | {wall[a] / wall[b]:.2f}x | {cpu_rate[a] / cpu_rate[b]:.2f}x "
              f"| {target} |")
    print(f"\nprepare (check, split, re-encode, write) of {args.images} files: "
          f"{prepare_wall:.1f} s wall, {prepare_cpu:.1f} CPU-s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
