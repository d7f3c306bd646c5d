"""Training speed: zoo's recipe against plain keras.applications + model.fit, in one run.

On the same in-memory batches of real photos (cut from scikit-image's samples, 7 classes,
one per source photo), measures training images per second of ResNet-50 at 224x224 for:

1. ``keras.applications.ResNet50`` + ``model.fit``, float32, BN in training mode: what a
   Keras user writes today;
2. zoo's full-network stage (``prepare_stage("finetune")``: the precision policy chosen for
   this hardware, BN frozen, layer-wise AdamW);
3. zoo's frozen-backbone stage (``prepare_stage("head")``);
4. zoo's from-scratch stage (``prepare_stage("scratch")``: BN in training mode), with the
   chosen precision policy and in float32.

The five alternate for several rounds and the medians are reported. Then, unless
``--no-accuracy``, each of plain Keras and ``zoo.finetune`` trains for a few epochs on the
folder and the validation accuracy each reaches is reported. No pretrained weights can be
downloaded here, so both start from the same kind of random initialisation (zoo's
``weights=None`` recipe); with pretrained weights the recipe's two-stage path applies.

    .venv/bin/python benchmarks/train.py                 # about 15 minutes on 2 cores
    .venv/bin/python benchmarks/train.py --rounds 2 --no-accuracy
    .venv/bin/python benchmarks/train.py --rounds 0          # the accuracy runs only
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

CLASSES = 7  # one per source photo of benchmarks/pipeline.py


class _Clock(keras.callbacks.Callback):
    def __init__(self, skip: int):
        super().__init__()
        self.skip, self.times = skip, []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


def batches_in_memory(folder: Path, batch: int, count: int):
    """Decoded, cropped batches held in memory, so only the model is measured."""
    import pipelines

    data = pipelines.from_folder(folder, model="resnet50", batch_size=batch,
                                 augment="standard", out_dir=tempfile.mkdtemp())
    xs, ys = [], []
    for x, y in data.train.take(count):
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def rate(model, x, y, batch: int, steps: int) -> float:
    """Training images per second over ``steps`` batches, after two warm-up batches."""
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch).prefetch(2)
    clock = _Clock(skip=2)
    model.fit(ds, steps_per_epoch=steps + 2, epochs=1, verbose=0, callbacks=[clock])
    times = clock.times[2:]
    return batch * (len(times) - 1) / (times[-1] - times[0])


def keras_model():
    model = keras.applications.ResNet50(weights=None, classes=CLASSES)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.CategoricalCrossentropy(), metrics=["accuracy"])
    return model


def zoo_model(stage: str, policy: str):
    import zoo
    from zoo.recipes.recipe import make_recipe
    from zoo.recipes.stages import layer_stages, prepare_stage

    keras.mixed_precision.set_global_policy(policy)
    try:
        model = zoo.build("resnet50", num_classes=CLASSES)
        recipe = make_recipe("resnet50")
        prepare_stage(model, layer_stages(model, "resnet50"), stage, recipe,
                      steps_per_epoch=100, epochs=1)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model


def keras_preprocess(x):
    return keras.applications.resnet50.preprocess_input(x.copy())


def accuracy_runs(folder: Path, epochs: int, batch: int) -> dict:
    """Plain Keras fit and zoo.finetune for ``epochs`` on the same split."""
    import pipelines
    from zoo.recipes.finetune import finetune

    out = Path(tempfile.mkdtemp())
    data = pipelines.from_folder(folder, model="resnet50", batch_size=batch,
                                 augment="standard", out_dir=out / "split")
    onehot = lambda x, y: (keras.applications.resnet50.preprocess_input(x),  # noqa: E731
                           tf.one_hot(y, CLASSES))
    model = keras_model()
    start = time.perf_counter()
    model.fit(data.train.map(onehot), validation_data=data.val.map(onehot), epochs=epochs,
              verbose=2)
    keras_seconds = time.perf_counter() - start
    keras_acc = model.evaluate(data.val.map(onehot), verbose=0, return_dict=True)["accuracy"]
    start = time.perf_counter()
    result = finetune("resnet50", data, weights=None, epochs=epochs, out_dir=out / "zoo",
                      verbose=2, patience=epochs)
    return {"keras_val_accuracy": float(keras_acc), "keras_seconds": keras_seconds,
            "zoo_val_accuracy": float(result.metrics["val_accuracy"]),
            "zoo_seconds": time.perf_counter() - start, "epochs": epochs,
            "zoo_precision": result.recipe.precision}


def main(argv=None) -> int:
    from pipeline import build_folder

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=420)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=3, help="0: accuracy only")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--no-accuracy", action="store_true")
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "zoo-bench-train"))
    args = parser.parse_args(argv)

    folder = build_folder(Path(args.data), args.images, classes=CLASSES)
    report: dict = {}
    if args.rounds > 0:
        report.update(speed(folder, args))
    if not args.no_accuracy:
        report["accuracy"] = accuracy_runs(folder, args.epochs, args.batch)
        print(json.dumps(report["accuracy"], indent=2))
    # Beside the folder, not in it: the folder is a dataset of images only.
    Path(f"{args.data}.json").write_text(json.dumps(report, indent=2))
    return 0


def speed(folder: Path, args) -> dict:
    """The paths alternate for ``args.rounds`` rounds; prints and returns the rates."""
    from zoo.distribute import resolve_policy

    x, y = batches_in_memory(folder, args.batch, 6)
    y = tf.one_hot(y, CLASSES).numpy()
    xk = keras_preprocess(x)
    policy = resolve_policy("auto")
    models = {"keras fp32 full": (keras_model(), xk),
              f"zoo full ({policy}, BN frozen)": (zoo_model("finetune", policy), x),
              f"zoo frozen backbone ({policy})": (zoo_model("head", policy), x),
              f"zoo from scratch ({policy}, BN training)": (zoo_model("scratch", policy), x),
              "zoo from scratch (float32, BN training)": (zoo_model("scratch", "float32"), x)}
    rates: dict[str, list[float]] = {name: [] for name in models}
    for round_index in range(args.rounds):
        names = list(models)
        for name in names[round_index % len(names):] + names[:round_index % len(names)]:
            model, inputs = models[name]
            rates[name].append(rate(model, inputs, y, args.batch, args.steps))
            print(f"round {round_index + 1}: {name}: {rates[name][-1]:.2f} img/s", flush=True)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    base = medians["keras fp32 full"]
    names = list(models)
    print("\n| path | images/s (median) | vs plain Keras |")
    print("|---|---|---|")
    for name in names:
        print(f"| {name} | {medians[name]:.2f} | {medians[name] / base:.2f}x |")
    print(f"\nfrozen backbone vs zoo full network: {medians[names[2]] / medians[names[1]]:.2f}x")
    return {"rates": rates, "medians": medians, "policy": policy}


if __name__ == "__main__":
    sys.exit(main())
