"""Train-path throughput from a prepared store against raw files, Keras and the decode ceiling.

On the 500x375 real-photo folder of ``benchmarks/pipeline.py``: one epoch of the train path
(random-resized crop fused with decoding, flip) read from ``pipelines.prepare``'s store,
against the same from the raw files, ``keras.utils.image_dataset_from_directory`` +
RandomCrop + RandomFlip, and read + full decode of the raw files. Interleaved rounds in one
process; medians of images per wall-second and per CPU-second. With ``--parity-seeds``, also
short LeNet-5 fine-tunes from scikit-learn's digits (a folder of PNGs, and a store of it),
one pair per seed, to compare their validation accuracy (the photo folder's classes carry
no signal to learn).

    .venv/bin/python benchmarks/store.py --images 1000 --rounds 3
    .venv/bin/python benchmarks/store.py --images 1000 --rounds 3 --parity-seeds 0 1 2
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


def parity(workdir: Path, seeds: list[int], per_class: int = 100, epochs: int = 4) -> None:
    """Prints the validation accuracy of LeNet-5 trained from a folder and from its store."""
    import importlib.util

    import pipelines
    import zoo

    spec = importlib.util.spec_from_file_location(
        "tiny_data", Path(__file__).resolve().parents[1] / "examples" / "tiny_data.py")
    tiny_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny_data)
    runs = workdir / "parity"
    shutil.rmtree(runs, ignore_errors=True)
    digits = tiny_data.digits_folder(runs / "digits", per_class=per_class)
    pipelines.prepare(digits, runs / "store", image_size=32)
    print(f"\nLeNet-5 from scratch, {10 * per_class} digits (20 % held out), {epochs} epochs, "
          "validation accuracy:\n\n| seed | folder | store |\n|---:|---:|---:|")
    for seed in seeds:
        accuracy = {}
        for name, store in (("folder", None), ("store", runs / "store")):
            result = zoo.finetune("lenet5", digits, store=store, weights=None, epochs=epochs,
                                  seed=seed, verbose=0, out_dir=runs / f"{name}-{seed}")
            accuracy[name] = result.metrics["val_accuracy"]
        print(f"| {seed} | {accuracy['folder']:.4f} | {accuracy['store']:.4f} |", flush=True)


def main(argv=None) -> int:
    parser = common_parser(__doc__.splitlines()[0])
    parser.add_argument("--short-side", type=int, default=None,
                        help="the store's shorter side (default: prepare's, size / 0.875)")
    parser.add_argument("--quality", type=int, default=None,
                        help="the store's JPEG quality (default: prepare's, 90)")
    parser.add_argument("--parity-seeds", type=int, nargs="*", default=[],
                        help="also fine-tune LeNet-5 on digits from a folder and its store")
    args = parser.parse_args(argv)
    import pipelines

    root = build_folder(args.workdir / f"photos-{args.images}", args.images)
    store = args.workdir / f"store-{args.images}-{args.size}-{args.short_side}-{args.quality}"
    shutil.rmtree(store, ignore_errors=True)
    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipelines.prepare(root, store, image_size=args.size, short_side=args.short_side,
                          validation_split=0,
                          **({"quality": args.quality} if args.quality else {}))
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
    stored_bytes = sum(p.stat().st_size for p in store.glob("*.tfrecord"))
    source_bytes = sum(p.stat().st_size for p in root.rglob("*.jpg"))
    print(f"stored: {stored_bytes / 2**20:.1f} MiB of shards (quality "
          f"{stored.manifest['quality']}, 4:2:0) against {source_bytes / 2**20:.1f} MiB of "
          "source JPEGs")
    if args.parity_seeds:
        parity(args.workdir, args.parity_seeds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
