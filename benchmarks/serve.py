"""Serving speed and the price of each export format, in one run.

Trains LeNet-5 on scikit-learn's digits (8x8 upsampled to 32x32, written as PNG files),
exports it in every format (int8 calibrated on the training PNGs), then reports:

1. per format: file size, test accuracy, largest probability difference from Keras and
   top-1 agreement with Keras on the 360 test digits;
2. latency and throughput at batch 1 and 32 of: the Keras model call (eager), the SavedModel's
   bytes signature (PNG decode + eval transform + model), its pixels signature, each TFLite
   file, and ONNX Runtime when installed. Every alternative is timed in every round, in a
   rotated order; the figures are medians over the rounds.

3. the price of test-time augmentation baked into the SavedModel (``zoo export --tta``):
   the bytes signature of one more export per mode in ``--tta``, timed in the same rounds
   as the plain one, as ratios of its latency (and the accuracy of each on the digits).

With ``--model NAME`` (any registered model) the speed part runs on that model instead,
untrained, at its spec's input size, on synthetic 500x375 JPEG photos; the accuracy table is
then about agreement with Keras only. ``--formats savedmodel`` leaves the other formats out
(on a shared machine, to measure TTA alone).

    .venv/bin/python benchmarks/serve.py                     # LeNet-5 on the digits
    .venv/bin/python benchmarks/serve.py --model resnet18 --rounds 3
    .venv/bin/python benchmarks/serve.py --formats savedmodel --tta flip,five_crop
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from zoo.recipes.tta import VIEWS, check_tta  # noqa: E402

ALL_FORMATS = ("savedmodel", "tflite", "tflite-fp16", "tflite-dynamic", "tflite-int8", "onnx")


def write_digits(root: Path):
    """Digits as 32x32 grayscale PNGs, split 80/20 (stratified, seed 0)."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0 * 255).astype("uint8")
    index = np.arange(len(images))
    train, test = train_test_split(index, test_size=0.2, stratify=digits.target,
                                   random_state=0)
    split = {}
    for name, ids in (("train", train), ("test", test)):
        paths = []
        for i in ids:
            path = root / name / str(digits.target[i]) / f"{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).resize((32, 32), Image.BILINEAR).save(path)
            paths.append(path)
        split[name] = (paths, digits.target[ids].astype("int32"))
    return split


def write_photos(root: Path, count: int, seed: int = 0) -> list[Path]:
    """Synthetic 500x375 JPEG 'photos' (smooth colour fields with noise and edges)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:375, 0:500]
    paths = []
    for i in range(count):
        a, b, c = rng.uniform(0.005, 0.05, 3)
        base = np.stack([127 + 120 * np.sin(a * xx + i), 127 + 120 * np.cos(b * yy),
                         127 + 120 * np.sin(c * (xx + yy))], -1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype("uint8")
        path = root / f"{i:03d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def timed(fn, rounds: int, target_seconds: float = 0.3) -> float:
    """Per-call seconds of ``fn``: a calibrated inner loop, as one round's measurement."""
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-5)
    calls = max(1, int(target_seconds / once))
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def bench(alternatives: dict, rounds: int) -> dict[str, float]:
    """Median per-call seconds of each alternative; each round runs all, in a rotated order."""
    for fn in alternatives.values():  # warm-up: tracing, allocation, caches
        fn()
        fn()
    names = list(alternatives)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            samples[name].append(timed(alternatives[name], rounds))
    return {n: statistics.median(v) for n, v in samples.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--epochs", type=int, default=15, help="LeNet-5 training epochs")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for TFLite and ONNX Runtime (TensorFlow uses its "
                        "default, all cores)")
    parser.add_argument("--out", default=None, help="keep data, export and serve.json here")
    parser.add_argument("--formats", default=",".join(ALL_FORMATS),
                        help="formats to export and time (comma-separated; default all)")
    parser.add_argument("--tta", default="flip,five_crop,flip+five_crop",
                        help="TTA modes to export and time against the plain SavedModel "
                        "(comma-separated; 'none' for none)")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    import zoo
    from zoo.deploy import reference_pixels, run_onnx, savedmodel_bytes
    from zoo.deploy.tflite import invoke as invoke_tflite  # the runner export checks with

    work = Path(args.out or tempfile.mkdtemp(prefix="zoo-serve-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    # The eval geometry the export serves for an untrained model: the spec's.
    geometry = zoo.geometry(args.model)
    keras.utils.set_random_seed(0)

    if args.model == "lenet5":
        split = write_digits(work / "digits")
        test_paths, test_y = split["test"]
        train_paths, train_y = split["train"]
        decode = reference_pixels([p.read_bytes() for p in train_paths], geometry)
        model = zoo.build("lenet5", num_classes=10)
        model.compile(optimizer=keras.optimizers.Adam(3e-3),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        t = time.perf_counter()
        model.fit(decode, train_y, epochs=args.epochs, batch_size=64, verbose=0)
        print(f"trained lenet5 for {args.epochs} epochs in {time.perf_counter() - t:.1f} s")
        representative = work / "digits" / "train"
        class_names = [str(i) for i in range(10)]
    else:
        test_paths = write_photos(work / "photos" / "test", 64)
        write_photos(work / "photos" / "calibration", 64, seed=1)
        test_y = None
        model = zoo.build(args.model, num_classes=10)
        representative = work / "photos" / "calibration"
        class_names = [f"class{i}" for i in range(10)]

    formats = [f for f in args.formats.split(",") if f]
    if "savedmodel" not in formats:
        formats.insert(0, "savedmodel")  # the rows are measured against its signatures
    if "onnx" in formats:
        try:
            import onnxruntime  # noqa: F401
            import tf2onnx  # noqa: F401
        except ImportError:
            print("onnx extra not installed: ONNX left out")
            formats.remove("onnx")
    tta_modes = [m for m in args.tta.split(",") if m and m != "none"]
    for mode in tta_modes:
        check_tta(mode)
    t = time.perf_counter()
    exported = zoo.export(model, work / "export", class_names=class_names, formats=formats,
                          representative_images=representative, overwrite=True, version=1)
    print(f"exported {', '.join(formats)} in {time.perf_counter() - t:.1f} s")

    by_tta = {}
    for mode in tta_modes:
        tta_export = zoo.export(model, work / f"export-{mode}", class_names=class_names,
                                overwrite=True, version=1, tta=mode)
        by_tta[mode] = tf.saved_model.load(tta_export["savedmodel"]).signatures[
            "serving_default"]

    test_bytes = [p.read_bytes() for p in test_paths]
    test_x = reference_pixels(test_bytes, geometry)
    served = tf.saved_model.load(exported["savedmodel"])
    by_bytes = served.signatures["serving_default"]
    by_pixels = served.signatures["serving_pixels"]

    # ------------------------------------------------------------- size and accuracy
    keras_probs = model.predict(test_x, batch_size=64, verbose=0)
    results = {"keras": keras_probs}
    results["savedmodel (bytes)"] = np.concatenate([
        by_bytes(image_bytes=tf.constant(test_bytes[i:i + 64]))["probabilities"].numpy()
        for i in range(0, len(test_bytes), 64)])
    for mode, signature in by_tta.items():
        results[f"savedmodel (bytes, tta={mode})"] = np.concatenate([
            signature(image_bytes=tf.constant(test_bytes[i:i + 64]))["probabilities"].numpy()
            for i in range(0, len(test_bytes), 64)])
    interpreters = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fmt in formats:
            if fmt.startswith("tflite"):
                interpreters[fmt] = {b: tf.lite.Interpreter(model_path=exported[fmt],
                                                            num_threads=args.threads)
                                     for b in (1, 32, len(test_x))}
    for fmt, by_batch in interpreters.items():
        results[fmt] = invoke_tflite(by_batch[len(test_x)], test_x)
    if "onnx" in formats:
        results["onnx"] = run_onnx(exported["onnx"], test_x)

    def file_size(fmt: str) -> int:
        if fmt == "savedmodel":
            return savedmodel_bytes(exported["savedmodel"])
        return Path(exported[fmt]).stat().st_size

    keras_file = work / "model.keras"
    model.save(keras_file)
    rows = []
    for name, probs in results.items():
        fmt = name.split(" ")[0]
        nbytes = keras_file.stat().st_size if name == "keras" else file_size(fmt)
        row = {"format": name, "bytes": int(nbytes),
               "max_abs_diff": float(np.max(np.abs(probs - keras_probs))),
               "top1_agreement": float(np.mean(probs.argmax(-1) == keras_probs.argmax(-1)))}
        if test_y is not None:
            row["accuracy"] = float(np.mean(probs.argmax(-1) == test_y))
        rows.append(row)
    print(f"\n### {args.model}: size and accuracy ({len(test_x)} test images)\n")
    head = "| format | size | test accuracy | max abs diff vs Keras | top-1 = Keras |"
    print(head + "\n|---|---:|---:|---:|---:|")
    for r in rows:
        accuracy = f"{r['accuracy']:.4f}" if "accuracy" in r else "-"
        print(f"| {r['format']} | {r['bytes'] / 1024:.0f} KiB | {accuracy} | "
              f"{r['max_abs_diff']:.1e} | {r['top1_agreement']:.2%} |")

    # ------------------------------------------------------------------------- speed
    def alternatives_for(batch: int) -> dict:
        index = np.arange(batch) % len(test_x)
        pixels = test_x[index]
        pixels_tensor = tf.constant(pixels)
        images = tf.constant([test_bytes[i] for i in index])
        alternatives = {
            "keras call (eager)": lambda: model(pixels_tensor, training=False).numpy(),
            "savedmodel bytes": lambda: by_bytes(image_bytes=images)["probabilities"].numpy(),
            "savedmodel pixels": lambda: by_pixels(pixels=pixels_tensor)[
                "probabilities"].numpy(),
        }
        for mode, signature in by_tta.items():
            alternatives[f"savedmodel bytes, tta={mode}"] = (
                lambda s=signature: s(image_bytes=images)["probabilities"].numpy())
        for fmt, by_batch in interpreters.items():
            alternatives[fmt] = (lambda it=by_batch[batch]: invoke_tflite(it, pixels))
        if "onnx" in formats:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = args.threads
            session = onnxruntime.InferenceSession(exported["onnx"], options,
                                                   providers=["CPUExecutionProvider"])
            alternatives["onnx (onnxruntime)"] = (
                lambda: session.run(None, {"pixels": pixels})[0])
        return alternatives

    speed = {batch: bench(alternatives_for(batch), args.rounds) for batch in (1, 32)}

    print(f"\n### {args.model}: latency and throughput (median of {args.rounds} alternated "
          f"rounds; TFLite/ORT threads {args.threads})\n")
    print("| alternative | batch 1 ms | batch 1 img/s | batch 32 ms | batch 32 img/s | "
          "b1 vs Keras | b32 vs Keras |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = {b: speed[b]["keras call (eager)"] for b in speed}
    for name in speed[1]:
        b1, b32 = speed[1][name], speed[32][name]
        print(f"| {name} | {b1 * 1e3:.2f} | {1 / b1:,.0f} | {b32 * 1e3:.2f} | {32 / b32:,.0f} | "
              f"{base[1] / b1:.2f}x | {base[32] / b32:.2f}x |")
    if by_tta:
        print("\n### test-time augmentation: latency of the bytes signature against the "
              "plain one (ratio > 1 is slower)\n")
        print("| tta | views | batch 1 ms | batch 32 ms | b1 vs no TTA | b32 vs no TTA |")
        print("|---|---:|---:|---:|---:|---:|")
        plain = {b: speed[b]["savedmodel bytes"] for b in speed}
        print(f"| none | 1 | {plain[1] * 1e3:.2f} | {plain[32] * 1e3:.2f} | 1.00x | 1.00x |")
        for mode in by_tta:
            b1, b32 = (speed[b][f"savedmodel bytes, tta={mode}"] for b in (1, 32))
            print(f"| {mode} | {VIEWS[mode]} | {b1 * 1e3:.2f} | {b32 * 1e3:.2f} | "
                  f"{b1 / plain[1]:.2f}x | {b32 / plain[32]:.2f}x |")

    report = {"model": args.model, "rounds": args.rounds, "threads": args.threads,
              "tta": tta_modes,
              "formats": rows, "seconds_per_call": {str(b): s for b, s in speed.items()},
              "command": " ".join([Path(sys.executable).name, *sys.argv])}
    (work / "serve.json").write_text(json.dumps(report, indent=2))
    print(f"\nwritten: {work / 'serve.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
