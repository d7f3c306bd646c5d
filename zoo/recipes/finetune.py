"""The fine-tuning recipe: two stages, BN frozen, layer-wise rates, resume, reports.

Stage 1 trains a new head on the frozen backbone; stage 2 unfreezes the backbone (all of it
or its top stages) at a lower rate, earlier stages lower still, as the Keras
transfer-learning guide and fastai's ``fine_tune`` do. Batch normalisation layers of the
backbone stay in inference mode throughout: updating their statistics with small batches
of a new dataset is the classic cause of collapsed accuracy after unfreezing. Training
from scratch (``weights=None``) is one stage with everything trainable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from zoo import distribute
from zoo.recipes import reports
from zoo.recipes.optim import LayerwiseAdamW, warmup_cosine
from zoo.registry import build, get_spec

log = logging.getLogger("zoo")

RUN_FILE = "run.json"
BEST_MODEL = "best.keras"


@dataclass
class Recipe:
    """Every knob of the recipe; ``FAMILY_DEFAULTS`` overrides some per family.

    Attributes:
        head_epochs: Epochs of stage 1 (new head, frozen backbone).
        finetune_epochs: Epochs of stage 2 (backbone unfrozen).
        scratch_epochs: Epochs when training from scratch (``weights=None``).
        batch_size: Batch size per replica; the global batch is this times the replicas.
        head_lr: Peak learning rate of stage 1 (per 1 replica; scaled with replicas).
        finetune_lr: Peak learning rate of stage 2 for the last stage and the head.
        scratch_lr: Peak learning rate from scratch.
        layer_decay: Each earlier stage's rate is this times the next one's.
        unfreeze: ``"all"`` or the number of top stages to unfreeze in stage 2.
        warmup_epochs: Linear warm-up at the start of each stage.
        weight_decay: AdamW decoupled weight decay (not applied to biases and BN).
        label_smoothing: Label smoothing of the cross-entropy.
        patience: Early stopping patience in epochs (on validation accuracy; without a
            validation split there is no early stopping).
        dropout: Dropout before the classifier (None keeps the family's default).
        scratch_bn_momentum: Batch-norm momentum from scratch (Keras' convention: the weight
            of the old moving statistics). 0.9 is torchvision's training default
            (``momentum=0.1``); Keras' 0.99 needs several hundred steps before its moving
            statistics fit the weights, so a short run from scratch evaluates at chance.
        augment: Augmentation preset when zoo builds the pipeline from a folder.
        validation_split: Fraction of each class held out for validation when zoo builds
            the pipeline from a one-folder layout (``root/<class>/*``). 0 trains on every
            image without validation: the last epoch's model is kept (training loss is no
            model-selection criterion) and nothing stops early. None in ``run.json`` when
            the caller built the pipeline and it does not say.
        precision: ``"auto"``, ``"float32"``, ``"mixed_bfloat16"`` or ``"mixed_float16"``.
        strategy: ``"auto"``, ``"one"``, ``"mirrored"``, ``"multiworker"`` or ``"tpu"``.
        seed: Seed of the split, the shuffles and the initialisation.
    """

    head_epochs: int = 3
    finetune_epochs: int = 10
    scratch_epochs: int = 30
    batch_size: int = 32
    head_lr: float = 1e-3
    finetune_lr: float = 1e-4
    scratch_lr: float = 1e-3
    layer_decay: float = 0.7
    unfreeze: str | int = "all"
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    patience: int = 5
    dropout: float | None = None
    scratch_bn_momentum: float = 0.9
    augment: Any = "standard"
    validation_split: float | None = 0.2
    precision: str = "auto"
    strategy: str = "auto"
    seed: int = 0


# Measured or customary departures from the defaults, per family.
FAMILY_DEFAULTS: dict[str, dict] = {
    # Digits and characters: shifts and turns only (crops cut strokes off, flips change
    # the class), a larger batch. On the bundled digits: 98.6% with "none", 99.4% with
    # "shift" (validation, seeds 0 and 1).
    # The cosine schedule's low-rate tail is where it settles, so no early stopping.
    "lenet": {"batch_size": 64, "scratch_epochs": 40, "scratch_lr": 3e-3, "augment": "shift",
              "patience": 40},
    # Huge dense heads overfit fast and want smaller rates.
    "vgg": {"head_lr": 5e-4, "finetune_lr": 3e-5},
    "alexnet": {"head_lr": 5e-4, "finetune_lr": 5e-5},
}


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns.

    Attributes:
        model: The best model (highest validation accuracy); without a validation split,
            the last epoch's.
        history: Per-epoch metrics of the whole run, stages concatenated.
        metrics: Final validation metrics, with ``"val_accuracy"``; without a validation
            split ``"val_accuracy"`` is None and ``"validation"`` is ``"none"``.
        run_dir: The run directory.
    """

    model: keras.Model
    history: dict
    metrics: dict
    run_dir: Path
    recipe: Recipe = field(default_factory=Recipe)


def make_recipe(model_name: str, weights: Any, **overrides) -> Recipe:
    """The recipe for a model: defaults, then the family's, then the caller's overrides."""
    family = get_spec(model_name).family
    known = {f.name for f in dataclasses.fields(Recipe)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"Unknown recipe option(s) {sorted(unknown)}; known: {sorted(known)}.")
    values = {**FAMILY_DEFAULTS.get(family, {}),
              **{k: v for k, v in overrides.items() if v is not None}}
    recipe = Recipe(**values)
    if isinstance(recipe.unfreeze, str) and recipe.unfreeze != "all":
        try:
            recipe.unfreeze = int(recipe.unfreeze)
        except ValueError as error:
            raise ValueError(f"unfreeze must be 'all' or a number of stages; got "
                             f"{recipe.unfreeze!r}.") from error
    del weights
    return recipe


def layer_stages(model: keras.Model, model_name: str) -> dict[str, int]:
    """Assigns every layer to a backbone stage (0 = earliest) or to the head (-1).

    A layer belongs to the first stage whose output depends on it; layers no stage output
    depends on form the head.

    Args:
        model: A model built by ``zoo.build(model_name, ...)``.
        model_name: Its registered name (the stage outputs are read from the family).

    Returns:
        ``{layer_name: stage_index}``.
    """
    spec = get_spec(model_name)
    probe = build(model_name, features=True,
                  input_shape=(*(max(s, 32) for s in spec.min_input_size), 3))
    stage_names = [t._keras_history.operation.name for t in probe.outputs]
    del probe
    by_name = {layer.name: layer for layer in model.layers}

    def ancestors(layer) -> set[str]:
        seen, stack = set(), [layer]
        while stack:
            current = stack.pop()
            if current.name in seen:
                continue
            seen.add(current.name)
            for node in current._inbound_nodes:
                for tensor in node.input_tensors:
                    stack.append(tensor._keras_history.operation)
        return seen

    stages: dict[str, int] = {}
    for index, name in enumerate(stage_names):
        if name not in by_name:
            continue
        for member in ancestors(by_name[name]):
            stages.setdefault(member, index)
    return {layer.name: stages.get(layer.name, -1) for layer in model.layers}


def _set_trainable(model: keras.Model, stages: dict[str, int], *, min_stage: int | None,
                   freeze_bn: bool) -> None:
    """Makes the head and stages ``>= min_stage`` trainable (None: backbone frozen)."""
    model.trainable = True
    for layer in model.layers:
        stage = stages.get(layer.name, -1)
        trainable = stage == -1 or (min_stage is not None and stage >= min_stage)
        if freeze_bn and stage != -1 and isinstance(layer, keras.layers.BatchNormalization):
            # Inference mode: Keras runs a non-trainable BN layer with its moving statistics.
            trainable = False
        layer.trainable = trainable


def _one_hot(dataset: tf.data.Dataset, num_classes: int) -> tf.data.Dataset:
    label_spec = dataset.element_spec[1]
    if label_spec.shape.rank == 2:  # Already soft (mixup / cutmix).
        return dataset.map(lambda x, y: (x, tf.cast(y, tf.float32)))
    return dataset.map(lambda x, y: (x, tf.one_hot(tf.cast(y, tf.int32), num_classes)),
                       num_parallel_calls=tf.data.AUTOTUNE)


def prepare_stage(model: keras.Model, stages: dict[str, int], stage: str, recipe: Recipe, *,
                  steps_per_epoch: int | None, epochs: int, replicas: int = 1,
                  num_classes: int | None = None) -> float:
    """Sets what trains in ``stage`` and compiles ``model`` for it (call inside the scope).

    Args:
        model: The model.
        stages: :func:`layer_stages` of the model.
        stage: ``"scratch"`` (everything, BN training), ``"head"`` (backbone frozen) or
            ``"finetune"`` (backbone unfrozen per ``recipe.unfreeze``, BN frozen,
            layer-wise rates).
        recipe: The recipe.
        steps_per_epoch: Batches per epoch (None: unknown, 100 is assumed for the schedule).
        epochs: Epochs of this stage.
        replicas: Replicas in sync; the rate scales linearly with them.
        num_classes: Classes, for the top-5 metric; defaults to the output size.

    Returns:
        The peak learning rate.
    """
    num_stages = max(stages.values()) + 1
    multipliers = []
    if stage == "scratch":
        _set_trainable(model, stages, min_stage=0, freeze_bn=False)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = recipe.scratch_bn_momentum
        base_lr = recipe.scratch_lr
    elif stage == "head":
        _set_trainable(model, stages, min_stage=None, freeze_bn=True)
        base_lr = recipe.head_lr
    elif stage == "finetune":
        first = 0 if recipe.unfreeze == "all" else max(0, num_stages - recipe.unfreeze)
        _set_trainable(model, stages, min_stage=first, freeze_bn=True)
        base_lr = recipe.finetune_lr
        multipliers = [(v, recipe.layer_decay ** (num_stages - 1 - stages[layer.name]))
                       for layer in model.layers if stages.get(layer.name, -1) >= 0
                       for v in layer.trainable_weights]
    else:
        raise ValueError(f"Unknown stage {stage!r}.")
    peak_lr = base_lr * replicas
    steps = steps_per_epoch or 100
    schedule = warmup_cosine(peak_lr, max(1, steps * epochs), int(steps * recipe.warmup_epochs))
    optimizer = LayerwiseAdamW(lr_multipliers=multipliers, learning_rate=schedule,
                               weight_decay=recipe.weight_decay)
    num_classes = num_classes or model.output_shape[-1]
    metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if num_classes > 5:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5"))
    model.compile(optimizer=optimizer,
                  loss=keras.losses.CategoricalCrossentropy(
                      label_smoothing=recipe.label_smoothing),
                  metrics=metrics)
    return peak_lr


class NanGuard(keras.callbacks.Callback):
    """Stops training at the first NaN or infinite loss and remembers where."""

    def __init__(self):
        super().__init__()
        self.where: tuple[int, int, float] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.where = (self._epoch + 1, batch + 1, float(loss))
            self.model.stop_training = True


def _data_fingerprint(root: Path | None) -> str:
    if root is None or not root.exists():
        return "n/a"
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\n".encode())
    return digest.hexdigest()[:16]


def _prepare_run_dir(run_dir: Path, data_root: Path | None, overwrite: bool) -> None:
    run_dir = run_dir.resolve()
    if data_root is not None:
        root = data_root.resolve()
        if run_dir == root or root in run_dir.parents:
            raise ValueError(f"The run directory {run_dir} is inside the data folder {root}; "
                             "choose an out_dir outside it, so the images are never touched.")
    run_file = run_dir / RUN_FILE
    if run_file.exists() and json.loads(run_file.read_text()).get("status") == "finished":
        if not overwrite:
            raise FileExistsError(
                f"{run_dir} already holds a finished run. Pass overwrite=True "
                "(--overwrite) to start again (the old run is kept beside it, renamed), "
                "or choose another out_dir.")
        kept = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(kept)
        log.warning("Moved the previous run to %s.", kept)
    run_dir.mkdir(parents=True, exist_ok=True)


def _load_data(data, model_name: str, recipe: Recipe, global_batch: int, run_dir: Path,
               options: dict):
    if isinstance(data, (str, os.PathLike)):
        import pipelines

        root = Path(data)
        return pipelines.from_folder(root, model=model_name, batch_size=global_batch,
                                     seed=recipe.seed, augment=recipe.augment,
                                     validation_split=recipe.validation_split,
                                     out_dir=run_dir), root
    if options.get("validation_split") is not None:
        # Silently training with the caller's split would contradict what was asked.
        raise ValueError(
            f"validation_split={options['validation_split']!r} applies when finetune builds "
            "the pipeline from a folder path; this data was built by the caller. Pass "
            "validation_split to pipelines.from_folder (or from_tfds) instead.")
    return data, (Path(data.root) if getattr(data, "root", None) else None)


def _say(verbose: int | str, message: str) -> None:
    # Where and when Keras prints its own progress (stdout, unless interactive logging is
    # off), so Python-API users see it too: the "zoo" logger has no handler at INFO unless
    # the program adds one.
    if verbose != 0 and keras.config.is_interactive_logging_enabled():
        print(message, flush=True)
    else:
        log.info(message)


def _refuse_what_needs_validation(recipe_options: dict, callbacks: list | None) -> None:
    """Raises ValueError for options the caller set that only work with validation data."""
    needs = []
    if recipe_options.get("patience") is not None:
        needs.append(f"patience={recipe_options['patience']!r} (early stopping on validation "
                     "accuracy)")
    for callback in callbacks or []:
        monitor = getattr(callback, "monitor", None)
        if isinstance(monitor, str) and monitor.startswith("val_"):
            needs.append(f"the {type(callback).__name__} callback (monitor={monitor!r})")
    if needs:
        raise ValueError(
            f"{' and '.join(needs)} needs validation data, but there is no validation split. "
            "Hold images out (validation_split=0.2, --validation-split 0.2 on the command "
            "line, or a root/val folder), or leave that out: without validation the last "
            "epoch's model is kept.")


def finetune(
    model_name: str,
    data,
    *,
    weights: str | None = "imagenet",
    epochs: int | None = None,
    out_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    strategy: str | None = None,
    precision: str | None = None,
    verbose: int | str = "auto",
    callbacks: list | None = None,
    **recipe_options,
) -> FinetuneResult:
    """Fine-tunes (or trains from scratch) a zoo model on a folder or a pipelines dataset.

    Running the same call again after an interruption resumes where it stopped, losing
    at most the epoch in progress.

    Args:
        model_name: A registered model name.
        data: A folder of images (``root/<class>/*`` or ``root/train|val/<class>/*``) or
            the object ``pipelines.from_folder`` / ``pipelines.from_tfds`` returns.
        weights: Pretrained weights (tag or path), or None to train from scratch.
        epochs: Total epochs; with weights, a quarter (at least one) trains the head.
        out_dir: The run directory; defaults to ``runs/<model>-<data folder>``.
        overwrite: Start again when ``out_dir`` holds a finished run (the old one is kept,
            renamed).
        strategy: Overrides the recipe's distribution strategy.
        precision: Overrides the recipe's precision policy.
        verbose: Keras progress-bar verbosity; unless 0, one line first says the strategy,
            its replicas and devices, the global batch and the precision.
        callbacks: Extra Keras callbacks, added to every stage.
        **recipe_options: Any field of :class:`Recipe`; ``validation_split=0`` trains on
            every image of a folder, without validation, and keeps the last epoch.

    Returns:
        A :class:`FinetuneResult`.

    Raises:
        ValueError: Among others, when the data has no validation split and the caller
            asked for something that needs one (``patience``, a callback that monitors a
            ``val_`` metric), or passed ``validation_split`` with data it built itself.
    """
    recipe = make_recipe(model_name, weights, strategy=strategy, precision=precision,
                         **recipe_options)
    if epochs is not None:
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1; got {epochs}.")
        if weights is None:
            recipe.scratch_epochs = epochs
        else:
            recipe.head_epochs = max(1, epochs // 4)
            recipe.finetune_epochs = epochs - recipe.head_epochs
    keras.utils.set_random_seed(recipe.seed)

    strategy_obj = distribute.select_strategy(recipe.strategy)
    replicas = strategy_obj.num_replicas_in_sync
    global_batch = recipe.batch_size * replicas
    chief = distribute.is_chief(strategy_obj)

    data_name = Path(data).name if isinstance(data, (str, os.PathLike)) else "data"
    run_dir = Path(out_dir or Path("runs") / f"{model_name}-{data_name}")
    write_dir = run_dir if chief else Path(tempfile.mkdtemp(prefix="zoo-worker-"))
    data_root = Path(data) if isinstance(data, (str, os.PathLike)) else None
    if chief:
        _prepare_run_dir(run_dir, data_root, overwrite)
    given_data = not isinstance(data, (str, os.PathLike))
    data, data_root = _load_data(data, model_name, recipe, global_batch, write_dir,
                                 recipe_options)
    has_val = data.val is not None
    if given_data:
        # The caller built the pipeline; record what it does, not the recipe's default.
        recipe.augment = getattr(data, "augment", "given by the caller")
        recipe.validation_split = (getattr(data, "manifest", None) or {}).get(
            "validation_split", None if has_val else 0.0)
    if not has_val:
        _refuse_what_needs_validation(recipe_options, callbacks)
    class_names = list(data.class_names)
    num_classes = len(class_names)
    image_shape = tuple(data.train.element_spec[0].shape[1:])
    train = _one_hot(data.train, num_classes)
    val = _one_hot(data.val, num_classes) if has_val else None
    steps = int(train.cardinality()) if int(train.cardinality()) > 0 else None

    policy = distribute.resolve_policy(recipe.precision)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    # The batch of the dataset is the global one: tf.distribute splits it between replicas.
    data_batch = getattr(data, "batch_size", None)
    batch_text = f"global batch {data_batch}" if data_batch else "batches as the data has them"
    _say(verbose, f"Training {model_name} on {num_classes} classes: "
                  f"{distribute.describe_strategy(strategy_obj)}, {batch_text}, {policy}.")
    if not has_val:
        _say(verbose, "No validation split: training on every image without validation; "
                      "the model of the last epoch is kept (no early stopping, no best-epoch "
                      "selection) and the report has no validation metrics.")
    try:
        with strategy_obj.scope():
            model = build(model_name, weights=weights, num_classes=num_classes,
                          input_shape=image_shape, dropout=recipe.dropout)
        stages = layer_stages(model, model_name)
        state_file = write_dir / "state.json"
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        history: dict[str, list] = {}
        best = {"val_accuracy": -1.0}

        def run_stage(stage: str, epochs_before: int, epochs_here: int) -> None:
            with strategy_obj.scope():
                peak_lr = prepare_stage(model, stages, stage, recipe, steps_per_epoch=steps,
                                        epochs=epochs_here, replicas=replicas,
                                        num_classes=num_classes)
            guard = NanGuard()
            # Without validation nothing chooses an epoch: the stage's last model is saved
            # after fit. The training loss, on augmented images with smoothed labels and a
            # cosine tail, says little about which epoch generalises best.
            selection = [
                keras.callbacks.ModelCheckpoint(
                    str(write_dir / BEST_MODEL), monitor="val_accuracy", mode="max",
                    save_best_only=True,
                    initial_value_threshold=best["val_accuracy"] if best["val_accuracy"] >= 0
                    else None),
                keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max",
                                              patience=recipe.patience,
                                              restore_best_weights=True),
            ] if has_val else []
            stage_callbacks = [
                keras.callbacks.BackupAndRestore(str(write_dir / "backup" / stage)),
                *selection,
                keras.callbacks.CSVLogger(str(write_dir / "history.csv"), append=True),
                keras.callbacks.TensorBoard(str(write_dir / "logs")),
                guard,
                *(callbacks or []),
            ]
            model._initial_epoch = None
            fit = model.fit(train, validation_data=val, initial_epoch=epochs_before,
                            shuffle=False, epochs=epochs_before + epochs_here,
                            callbacks=stage_callbacks, verbose=verbose)
            if guard.where is not None:
                epoch, batch, loss = guard.where
                kept = ("the best model so far is kept" if has_val else
                        "the model of the last stage that finished, if one did, is kept")
                raise FloatingPointError(
                    f"The loss became {loss} at epoch {epoch}, batch {batch} of stage "
                    f"{stage!r} (peak learning rate {peak_lr:g}). Training "
                    f"stopped; {kept} in the run directory. Lower "
                    "the learning rate, or check the data for broken labels, and run again "
                    "with overwrite=True.")
            if not has_val:
                model.save(write_dir / BEST_MODEL)
            for key, values in fit.history.items():
                history.setdefault(key, []).extend(float(v) for v in values)
            if fit.history.get("val_accuracy"):
                best["val_accuracy"] = max(best["val_accuracy"], *fit.history["val_accuracy"])

        if weights is None:
            run_stage("scratch", 0, recipe.scratch_epochs)
        else:
            stage1_weights = write_dir / "stage1.weights.h5"
            if state.get("stage1") == "done" and stage1_weights.exists():
                model.load_weights(stage1_weights)
                best["val_accuracy"] = state.get("best_val_accuracy", -1.0)
                log.info("Stage 1 finished in an earlier run; resuming at stage 2.")
            else:
                run_stage("head", 0, recipe.head_epochs)
                model.save_weights(stage1_weights)
                state.update(stage1="done", best_val_accuracy=best["val_accuracy"])
                state_file.write_text(json.dumps(state))
            if recipe.finetune_epochs > 0:
                run_stage("finetune", recipe.head_epochs, recipe.finetune_epochs)

        if (write_dir / BEST_MODEL).exists():
            model = keras.saving.load_model(write_dir / BEST_MODEL, compile=False)
        keras.mixed_precision.set_global_policy("float32")
        model = _float32_copy(model, model_name, num_classes, image_shape, recipe)
        if chief:
            model.save(write_dir / BEST_MODEL)
        history = _read_history(write_dir / "history.csv") or history
        metrics = reports.write_report(write_dir, model, data.val, class_names, history)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    spec = get_spec(model_name)
    run_info = {
        "status": "finished",
        "model": model_name,
        "weights": weights,
        "class_names": class_names,
        "image_size": list(image_shape),
        "crop_fraction": spec.crop_fraction,
        "interpolation": spec.interpolation,
        "preprocessing": model.get_layer("normalize").get_config(),
        "recipe": _jsonable(dataclasses.asdict(recipe)),
        "replicas": replicas,
        "precision": policy,
        "strategy": distribute.strategy_name(strategy_obj),
        "data": {"root": str(data_root) if data_root else None,
                 "fingerprint": _data_fingerprint(data_root),
                 "counts": _jsonable(getattr(data, "counts", {})),
                 "skipped": len(getattr(data, "skipped", []) or [])},
        "val_accuracy": metrics["val_accuracy"],
        "validation": "held out" if has_val else "none",
        "kept": "best val_accuracy" if has_val else "last epoch",
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if chief:
        _copy_samples(data, write_dir / "samples")
        (write_dir / "class_names.txt").write_text("\n".join(class_names) + "\n")
        (write_dir / RUN_FILE).write_text(json.dumps(run_info, indent=2))
        write_model_card(write_dir, run_info, metrics)
        shutil.rmtree(write_dir / "backup", ignore_errors=True)
    else:
        shutil.rmtree(write_dir, ignore_errors=True)
    return FinetuneResult(model=model, history=history, metrics=metrics, run_dir=run_dir,
                          recipe=recipe)


def _float32_copy(model: keras.Model, model_name: str, num_classes: int, image_shape,
                  recipe: Recipe) -> keras.Model:
    """The same network and weights with a float32 policy, for evaluation and export.

    Mixed precision is a training speed-up; the model a run leaves must give the same
    answers on any hardware, and its variables are float32 already.
    """
    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model
    norm = model.get_layer("normalize").get_config()
    copy = build(model_name, num_classes=num_classes, input_shape=image_shape,
                 dropout=recipe.dropout,
                 preprocessing={k: norm[k] for k in ("mean", "std", "channel_order")})
    copy.set_weights(model.get_weights())
    return copy


def _copy_samples(data, folder: Path, count: int = 8) -> None:
    """Copies a few validation images (one per class first) for the export's self-check.

    Without a validation split they are training images: the self-check compares the
    export with the Keras model, it does not measure accuracy.
    """
    files = list(getattr(data, "val_files", None) or getattr(data, "train_files", None) or [])
    if not files:
        return
    firsts, seen = [], set()
    for path, label in files:
        if label not in seen:
            seen.add(label)
            firsts.append(path)
    chosen = (firsts + [p for p, _ in files if p not in firsts])[:count]
    folder.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(chosen):
        source = Path(path)
        shutil.copyfile(source, folder / f"{index:02d}_{source.name}")


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def _read_history(path: Path) -> dict[str, list[float]]:
    import csv

    if not path.exists():
        return {}
    history: dict[str, list[float]] = {}
    rows: dict[int, dict] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            # A resumed epoch is logged again; the last row of an epoch wins.
            rows[int(row.pop("epoch"))] = row
    for _, row in sorted(rows.items()):
        for key, value in row.items():
            # Keras' CSVLogger adds empty val_ columns to a run without validation: a key
            # appears only with numbers.
            with contextlib.suppress(TypeError, ValueError):
                number = float(value)
                history.setdefault(key, []).append(number)
    return history


def write_model_card(run_dir: Path, run_info: dict, metrics: dict) -> Path:
    """Writes the run's ``README.md``: data, recipe, metrics, preprocessing, how to load."""
    norm = run_info["preprocessing"]
    recipe = "\n".join(f"- {k}: {v}" for k, v in run_info["recipe"].items())
    text = f"""# {run_info['model']} fine-tuned on {Path(run_info['data']['root'] or 'data').name}

Trained with zoo on {run_info['finished']} ({run_info['strategy']}, {run_info['replicas']}
replica(s), {run_info['precision']}), from weights `{run_info['weights']}`.

## Data
- root: `{run_info['data']['root']}` (fingerprint of names and sizes
  `{run_info['data']['fingerprint']}`)
- classes ({len(run_info['class_names'])}): {', '.join(run_info['class_names'])}
- counts: {run_info['data']['counts']}
- files skipped as unreadable: {run_info['data']['skipped']}

{_metrics_section(metrics)}

## Preprocessing contract
The model takes float32 RGB pixels in [0, 255], shape
`[batch, {', '.join(map(str, run_info['image_size']))}]`, channels last. It normalises
inside (first layer `normalize`: mean {norm['mean']}, std {norm['std']},
{norm['channel_order']}). Evaluation resizes the shorter side to size / crop fraction
({run_info['crop_fraction']}) with {run_info['interpolation']} interpolation and crops
the centre.

## Recipe
{recipe}

## Loading
```python
import keras, zoo  # importing zoo registers its layers
model = keras.saving.load_model("{BEST_MODEL}")
```
"""
    path = run_dir / "README.md"
    path.write_text(text)
    return path


def _metrics_section(metrics: dict) -> str:
    """The model card's metrics: measured on the validation split, or why there are none."""
    if metrics.get("validation") == "none":
        last = metrics.get("last_epoch", {})
        figures = ", ".join(f"{key} {last[key]:.4f}" for key in ("loss", "accuracy")
                            if key in last)
        trained = ("\n\nThe last epoch on the training images (with the run's "
                   "augmentation, averaged over the epoch while the weights changed): "
                   f"{figures}." if figures else "")
        plots = ", ".join(f"`{name}`" for name in metrics.get("plots", {}).values()) or "none"
        return ("## Metrics\n"
                "No validation split: every image was used for training and nothing was "
                "measured on held-out images, so there are no validation metrics, no early "
                "stopping and no best-epoch selection. `best.keras` holds the model of the "
                f"last epoch.{trained}\n\nPlots: {plots}.")
    per_class = "\n".join(
        f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
        for name, m in metrics["per_class"].items())
    top5 = (f"- top-5 accuracy: {metrics['top5_accuracy']:.4f}\n"
            if "top5_accuracy" in metrics else "")
    return f"""## Metrics (validation)
- accuracy: {metrics['accuracy']:.4f}
{top5}- macro F1: {metrics['macro_f1']:.4f} over {metrics['num_images']} images

| class | precision | recall | F1 | support |
|---|---|---|---|---|
{per_class}

Plots: `training_curves.png`, `confusion_matrix.png`, `misclassified.png`, `gradcam.png`."""


def load_run(run_dir: str | os.PathLike) -> tuple[keras.Model, dict]:
    """Loads a run directory's best model and its ``run.json``."""
    run_dir = Path(run_dir)
    info_path, model_path = run_dir / RUN_FILE, run_dir / BEST_MODEL
    if not model_path.exists():
        raise FileNotFoundError(f"{run_dir} has no {BEST_MODEL}; is it a zoo run directory?")
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    return keras.saving.load_model(model_path), info



def find_learning_rate(model_name: str, data, *, weights: str | None = "imagenet",
                       out_dir: str | os.PathLike | None = None, steps: int = 100,
                       **recipe_options):
    """Runs the learning-rate range test for the stage that would be trained first.

    With weights, the backbone is frozen as in stage 1 (the rate found is ``head_lr``);
    without, everything trains (``scratch_lr``).

    Args:
        model_name: A registered model name.
        data: A folder of images or a pipelines dataset object.
        weights: Pretrained weights, or None.
        out_dir: Where the plot ``lr_find.png`` goes; defaults to ``runs/lr-find-<model>``.
        steps: Batches to run.
        **recipe_options: Any field of :class:`Recipe`.

    Returns:
        A :class:`zoo.recipes.lr_find.LRFindResult`.
    """
    from zoo.recipes.lr_find import lr_find

    recipe = make_recipe(model_name, weights, **recipe_options)
    keras.utils.set_random_seed(recipe.seed)
    out = Path(out_dir or Path("runs") / f"lr-find-{model_name}")
    data_root = Path(data) if isinstance(data, (str, os.PathLike)) else None
    _prepare_run_dir(out, data_root, overwrite=False)
    # The range test trains only: a pipeline without a validation split works as it is.
    data, _ = _load_data(data, model_name, recipe, recipe.batch_size, out, recipe_options)
    num_classes = len(data.class_names)
    model = build(model_name, weights=weights, num_classes=num_classes,
                  input_shape=tuple(data.train.element_spec[0].shape[1:]),
                  dropout=recipe.dropout)
    _set_trainable(model, layer_stages(model, model_name),
                   min_stage=0 if weights is None else None, freeze_bn=weights is not None)
    return lr_find(model, _one_hot(data.train, num_classes), steps=steps,
                   loss=keras.losses.CategoricalCrossentropy(
                       label_smoothing=recipe.label_smoothing),
                   plot_path=out / "lr_find.png")
