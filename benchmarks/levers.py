"""The cost of the training levers: EMA of the weights and gradient accumulation, in one run.

On the same in-memory batches of real photos (crops of scikit-image's samples, the
``"standard"`` train transform), measures training images per second of zoo's fine-tuning
stage (``prepare_stage("finetune")``, the precision policy chosen for this CPU) for:

1. the recipe as it is, batch B;
2. with ``ema=0.999``: the average is updated after every step;
3. with ``accumulate_steps=4`` at steps of B/4 images (one update per B images): what a user
   does when B does not fit in memory;
4. plain steps of B/4 images with no accumulation: the batch that does fit, the
   alternative to 3.

The paths alternate for several rounds in a rotated order; images per CPU-second are
compared, as ratios to path 1 within each round (and 3 to 4), medians over the rounds. Per
epoch EMA also measures the raw weights on the validation split once
(``val_accuracy_raw``); that pass is not in these figures.

    .venv/bin/python benchmarks/levers.py                    # about 10 minutes on 2 cores
    .venv/bin/python benchmarks/levers.py --model resnet50 --size 224
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

CLASSES = 7


def photo_batches(folder: Path, model: str, size: int, batch: int, count: int):
    """Decoded, augmented batches held in memory, so only the training step is measured."""
    import pipelines

    data = pipelines.from_folder(folder, model=model, batch_size=batch, image_size=size,
                                 augment="standard", out_dir=tempfile.mkdtemp())
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in data.train.take(count)))
    return np.concatenate(xs), tf.one_hot(np.concatenate(ys), CLASSES).numpy()


def stage_model(model_name: str, size: int, policy: str, **options):
    """zoo's fine-tuning stage of ``model_name``, compiled with the recipe's ``options``."""
    import zoo
    from zoo.recipes.recipe import make_recipe
    from zoo.recipes.stages import layer_stages, prepare_stage

    keras.mixed_precision.set_global_policy(policy)
    try:
        model = zoo.build(model_name, num_classes=CLASSES, input_shape=(size, size, 3))
        prepare_stage(model, layer_stages(model, model_name), "finetune",
                      make_recipe(model_name, **options), steps_per_epoch=1000, epochs=1)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model


class _Clock(keras.callbacks.Callback):
    """Wall and process CPU time at each batch's end."""

    def __init__(self):
        super().__init__()
        self.times: list[tuple[float, float]] = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append((time.perf_counter(), time.process_time()))


def images_per_cpu_second(model, x, y, batch: int, images: int) -> tuple[float, float]:
    """Training images per CPU-second and per wall second, after 2 warm-up steps.

    CPU time (all threads of the process) is the figure compared: on a machine shared with
    other work the wall clock measures the neighbours as much as the path.
    """
    steps = max(2, images // batch)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch).prefetch(2)
    clock = _Clock()
    model.fit(ds, steps_per_epoch=steps + 2, epochs=1, verbose=0, callbacks=[clock])
    (wall0, cpu0), (wall1, cpu1) = clock.times[1], clock.times[-1]
    counted = batch * (len(clock.times) - 2)
    return counted / (cpu1 - cpu0), counted / (wall1 - wall0)


def main(argv=None) -> int:
    from pipeline import build_folder

    from zoo.distribute import resolve_policy

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch", type=int, default=32, help="images per weight update")
    parser.add_argument("--images", type=int, default=256, help="timed images per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "zoo-bench-levers"))
    args = parser.parse_args(argv)

    folder = build_folder(Path(args.data), 140, classes=CLASSES)
    policy = resolve_policy("auto")
    small = args.batch // 4
    x, y = photo_batches(folder, args.model, args.size, args.batch, 4)
    paths = {
        f"recipe, batch {args.batch}": (stage_model(args.model, args.size, policy), args.batch),
        f"ema=0.999, batch {args.batch}": (stage_model(args.model, args.size, policy,
                                                       ema=0.999), args.batch),
        f"accumulate_steps=4, steps of {small}": (
            stage_model(args.model, args.size, policy, accumulate_steps=4), small),
        f"plain steps of {small}": (stage_model(args.model, args.size, policy), small),
    }
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    wall: dict[str, list[float]] = {name: [] for name in paths}
    ratios: dict[str, list[float]] = {name: [] for name in paths}
    names = list(paths)
    for round_index in range(args.rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            model, batch = paths[name]
            per_cpu, per_wall = images_per_cpu_second(model, x, y, batch, args.images)
            cpu[name].append(per_cpu)
            wall[name].append(per_wall)
            print(f"round {round_index + 1}: {name}: {per_cpu:.2f} img/CPU-s, "
                  f"{per_wall:.2f} img/s", flush=True)
        # Ratios within a round, so a change in the machine's load between rounds cancels.
        for name in names:
            ratios[name].append(cpu[name][-1] / cpu[names[0]][-1])
    median = {name: statistics.median(values) for name, values in cpu.items()}
    median_ratio = {name: statistics.median(values) for name, values in ratios.items()}
    print(f"\n{args.model} at {args.size}x{args.size}, fine-tuning stage, {policy}, "
          f"{args.rounds} rounds")
    print("\n| path | images per CPU-second (median) | vs the recipe (median of rounds) |")
    print("|---|---:|---:|")
    for name in names:
        print(f"| {name} | {median[name]:.2f} | {median_ratio[name]:.2f}x |")
    between = statistics.median(c / p for c, p in zip(cpu[names[2]], cpu[names[3]]))
    print(f"\naccumulation / plain steps of {small}: {between:.2f}x (median of rounds)")
    out = Path(f"{args.data}-{args.model}.json")
    out.write_text(json.dumps({"cpu": cpu, "wall": wall, "policy": policy,
                               "model": args.model, "size": args.size}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
