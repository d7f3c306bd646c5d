"""The frozen-backbone stage with and without cached features (issue 19 point 3), in one run.

ResNet-50 at 224x224 on a small folder of real photos (crops of scikit-image's samples, one
class per source photo, ``augment="none"``: the stream the cache is for). Each round runs
stage 1 (``head_epochs`` epochs, no stage 2) three ways, in a rotated order, each with a
freshly built model and the same seed:

1. ``off``: today's stage, the backbone forward on every image in every epoch;
2. ``cold``: cached features, computed in this run (one backbone pass over train and
   validation), then the head trains on them;
3. ``warm``: cached features read from an earlier run of the same run directory (a resume,
   or stage 1 again with other head options).

The wall time of ``StageRunner.run_all`` (checkpoints and the stage-1 weights included) and
the validation accuracy each reaches are reported; the table gives medians over rounds and
the ratios to ``off``. No pretrained weights can be downloaded here, so the backbone is a
random initialisation (the same in all three: the speed is the network's either way).

    .venv/bin/python benchmarks/features.py                      # about 10 minutes on 2 cores
    .venv/bin/python benchmarks/features.py --rounds 1 --head-epochs 10 --parity-seeds 0
    .venv/bin/python benchmarks/features.py --rounds 0        # the accuracy runs only

First, unless ``--parity-seeds 0``, stage 1 trains with and without the cache on digits
(LeNet-5, mini-batches of 32, 5 epochs, several seeds) and the validation accuracies are
printed: the figure for "the same result within noise".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

CLASSES = 7  # one per source photo of benchmarks/pipeline.py
MODES = ("off", "cold", "warm")


def stage_one(data, out: Path, mode: str, head_epochs: int, batch: int) -> tuple[float, float]:
    """Runs stage 1 once; returns (seconds, best validation accuracy)."""
    from zoo.models import build
    from zoo.recipes.recipe import make_recipe
    from zoo.recipes.stages import STATE_FILE, StageRunner, one_hot

    if mode == "cold":
        shutil.rmtree(out, ignore_errors=True)
    (out / STATE_FILE).unlink(missing_ok=True)  # stage 1 again, as a resume before it ended
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    recipe = make_recipe("resnet50", head_epochs=head_epochs, finetune_epochs=0,
                         augment="none", batch_size=batch,
                         cache_features="off" if mode == "off" else "on")
    model = build("resnet50", num_classes=CLASSES, input_shape=(224, 224, 3))
    runner = StageRunner(model, "resnet50", recipe, tf.distribute.get_strategy(),
                         one_hot(data.train, CLASSES), one_hot(data.val, CLASSES), out,
                         data.steps_per_epoch, CLASSES, verbose=0, data=data)
    start = time.perf_counter()
    runner.run_all(pretrained=True)
    seconds = time.perf_counter() - start
    return seconds, max(runner.history["val_accuracy"])


def parity(seeds: int, head_epochs: int) -> dict:
    """Validation accuracy of stage 1 off and cached on digits, LeNet-5, batch 32, per seed.

    The frozen backbone is LeNet-5's random initialisation (no pretrained weights here);
    its features still separate digits well enough for the head to reach about 0.8. Each
    seed builds the same model for both ways; the ways differ only in the order the
    images come in (the cached stage shuffles its features with the recipe's seed).
    """
    from sklearn.datasets import load_digits

    from zoo.models import build
    from zoo.recipes.recipe import make_recipe
    from zoo.recipes.stages import StageRunner, one_hot

    digits = load_digits()
    x = tf.image.resize(digits.images[..., None] * (255 / 16), (32, 32)).numpy()
    y = digits.target
    results: dict[str, list[float]] = {"off": [], "on": []}
    for seed in range(seeds):
        train = tf.data.Dataset.from_tensor_slices((x[:1000], y[:1000])).shuffle(
            1000, seed=seed).batch(32)
        val = tf.data.Dataset.from_tensor_slices((x[1000:], y[1000:])).batch(128)
        for mode in ("off", "on"):
            keras.utils.set_random_seed(seed)
            recipe = make_recipe("lenet5", head_epochs=head_epochs, finetune_epochs=0,
                                 augment="none", cache_features=mode, seed=seed,
                                 patience=head_epochs)
            model = build("lenet5", num_classes=10)
            runner = StageRunner(model, "lenet5", recipe, tf.distribute.get_strategy(),
                                 one_hot(train, 10), one_hot(val, 10),
                                 Path(tempfile.mkdtemp(prefix="zoo-bench-parity-")), 32, 10,
                                 verbose=0)
            runner.run_all(pretrained=True)
            results[mode].append(runner.history["val_accuracy"][-1])
            print(f"parity seed {seed} {mode:3s} val_accuracy "
                  f"{results[mode][-1]:.3f}", flush=True)
    return {mode: {"mean": statistics.mean(v), "stdev": statistics.pstdev(v), "runs": v}
            for mode, v in results.items()}


def main(argv=None) -> int:
    from pipeline import build_folder

    import pipelines
    from zoo import distribute

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=140)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--head-epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="0: the parity runs only")
    parser.add_argument("--parity-seeds", type=int, default=3,
                        help="seeds of the LeNet-5 digits accuracy runs (0: none)")
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "zoo-bench-features"))
    args = parser.parse_args(argv)
    logging.getLogger("zoo").setLevel(logging.WARNING)

    if args.parity_seeds:
        print(json.dumps({"parity": parity(args.parity_seeds, 5)}, indent=2), flush=True)
    if not args.rounds:
        return 0
    folder = build_folder(Path(args.data) / f"photos-{args.images}", args.images,
                          classes=CLASSES, size=(320, 240))
    work = Path(tempfile.mkdtemp(prefix="zoo-bench-features-"))
    policy = distribute.resolve_policy("auto")
    keras.mixed_precision.set_global_policy(policy)
    data = pipelines.from_folder(folder, model="resnet50", batch_size=args.batch,
                                 augment="none", out_dir=work / "split")
    times: dict[str, list[float]] = {m: [] for m in MODES}
    accuracy: dict[str, list[float]] = {m: [] for m in MODES}
    for round_ in range(args.rounds):
        # cold must come before warm (warm reads cold's files); off moves around them.
        order = [("off", "cold", "warm"), ("cold", "warm", "off"), ("cold", "off", "warm")][
            round_ % 3]
        for mode in order:
            out = work / ("off" if mode == "off" else "cached")
            seconds, acc = stage_one(data, out, mode, args.head_epochs, args.batch)
            times[mode].append(seconds)
            accuracy[mode].append(acc)
            print(f"round {round_ + 1} {mode:4s} {seconds:7.1f} s  val_accuracy {acc:.3f}",
                  flush=True)
    medians = {m: statistics.median(times[m]) for m in MODES}
    print(json.dumps({
        "policy": policy, "images": args.images, "train": len(data.train_files),
        "val": len(data.val_files), "head_epochs": args.head_epochs, "batch": args.batch,
        "seconds": medians, "val_accuracy": {m: accuracy[m][0] for m in MODES},
        "speedup": {m: medians["off"] / medians[m] for m in ("cold", "warm")},
    }, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
