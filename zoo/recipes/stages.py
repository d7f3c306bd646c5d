"""The recipe's stages: what trains when, at which rate, and the loop that runs them.

Stage 1 (``"head"``) trains a new head on the frozen backbone; stage 2 (``"finetune"``)
unfreezes the backbone (all of it or its top stages) at a lower rate, earlier stages lower
still. Batch normalisation layers of the backbone stay in inference mode in both. From
scratch there is one stage (``"scratch"``) with everything trainable.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import tensorflow as tf

from zoo import rundir
from zoo.recipes.optim import LayerwiseAdamW, PerUpdate, warmup_cosine
from zoo.recipes.recipe import Recipe

log = logging.getLogger("zoo")

STATE_FILE = "state.json"
STAGE1_WEIGHTS = "stage1.weights.h5"
BACKUP_DIR = "backup"


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
    from zoo.models import build, get_spec

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


def set_trainable(model: keras.Model, stages: dict[str, int], *, min_stage: int | None,
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


def one_hot(dataset: tf.data.Dataset, num_classes: int) -> tf.data.Dataset:
    """``(pixels, label)`` batches with one-hot float labels (soft labels kept as they are)."""
    label_spec = dataset.element_spec[1]
    if label_spec.shape.rank == 2:  # Already soft (mixup / cutmix).
        return dataset.map(lambda x, y: (x, tf.cast(y, tf.float32)))
    return dataset.map(lambda x, y: (x, tf.one_hot(tf.cast(y, tf.int32), num_classes)),
                       num_parallel_calls=tf.data.AUTOTUNE)


def prepare_stage(model: keras.Model, stages: dict[str, int], stage: str, recipe: Recipe, *,
                  steps_per_epoch: int | None, epochs: int, replicas: int = 1,
                  num_classes: int | None = None, multi_label: bool = False) -> float:
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
        multi_label: Multi-hot labels and a logits output: binary (focal) cross-entropy.

    Returns:
        The peak learning rate.
    """
    num_stages = max(stages.values()) + 1
    multipliers = []
    if stage == "scratch":
        set_trainable(model, stages, min_stage=0, freeze_bn=False)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = recipe.scratch_bn_momentum
        base_lr = recipe.scratch_lr
    elif stage == "head":
        set_trainable(model, stages, min_stage=None, freeze_bn=True)
        base_lr = recipe.head_lr
    elif stage == "finetune":
        first = 0 if recipe.unfreeze == "all" else max(0, num_stages - recipe.unfreeze)
        set_trainable(model, stages, min_stage=first, freeze_bn=True)
        base_lr = recipe.finetune_lr
        multipliers = [(v, recipe.layer_decay ** (num_stages - 1 - stages[layer.name]))
                       for layer in model.layers if stages.get(layer.name, -1) >= 0
                       for v in layer.trainable_weights]
    else:
        raise ValueError(f"Unknown stage {stage!r}.")
    peak_lr = base_lr * replicas
    # The schedule is counted in weight updates: under accumulation an update takes
    # ``accumulate_steps`` batches (an epoch's remainder carries over to the next epoch).
    accumulate = recipe.accumulate_steps
    updates = max(1, math.ceil((steps_per_epoch or 100) * epochs / accumulate))
    warmup = int((steps_per_epoch or 100) * recipe.warmup_epochs / accumulate)
    schedule = warmup_cosine(peak_lr, updates, warmup)
    optimizer = LayerwiseAdamW(lr_multipliers=multipliers,
                               learning_rate=PerUpdate(schedule, accumulate)
                               if accumulate > 1 else schedule,
                               weight_decay=recipe.weight_decay, accumulate_steps=accumulate,
                               **ema_options(recipe, updates))
    num_classes = num_classes or model.output_shape[-1]
    model.compile(optimizer=optimizer, loss=make_loss(recipe, multi_label),
                  metrics=_metrics(num_classes, multi_label))
    return peak_lr


def ema_options(recipe: Recipe, updates: int | None = None) -> dict:
    """The optimizer's EMA arguments for the recipe (none without ``recipe.ema``).

    Keras updates the average after every batch, also the batches of an accumulation that
    leave the weights as they were; the momentum per batch is therefore the N-th root of
    the recipe's, which is per weight update.

    Args:
        recipe: The recipe.
        updates: The stage's weight updates, to warn when the average would span more
            than the stage (its weights would be mostly the stage's starting ones).
    """
    if recipe.ema is None:
        return {}
    span = 1 / (1 - recipe.ema)
    if updates is not None and updates < span:
        log.warning("ema=%g averages about the last %d weight updates, but this stage has "
                    "%d: its averaged weights stay close to the ones it started from. Use "
                    "a smaller ema (1 - 1/updates, about %.3f) or more epochs.", recipe.ema,
                    round(span), updates, max(0.0, 1 - 1 / max(updates, 1)))
    return {"use_ema": True, "ema_momentum": recipe.ema ** (1 / recipe.accumulate_steps)}


def make_loss(recipe: Recipe, multi_label: bool = False) -> keras.losses.Loss:
    """The recipe's loss: cross-entropy or focal, softmax or (multi-label) sigmoid.

    A single-label model ends in a softmax; a multi-label one gives logits, and the
    sigmoid is the loss's (``from_logits``), which is exact where a saturated sigmoid's
    output is not.
    """
    smoothing = recipe.label_smoothing
    if multi_label:
        kind = (keras.losses.BinaryFocalCrossentropy if recipe.loss == "focal"
                else keras.losses.BinaryCrossentropy)
        return kind(from_logits=True, label_smoothing=smoothing)
    if recipe.loss == "focal":
        return keras.losses.CategoricalFocalCrossentropy(label_smoothing=smoothing)
    return keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)


def _metrics(num_classes: int, multi_label: bool) -> list:
    if multi_label:
        # A running figure for the progress bar; model selection uses val_map (MeanAP).
        return [keras.metrics.AUC(curve="PR", multi_label=True, from_logits=True,
                                  num_labels=num_classes, name="pr_auc")]
    metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if num_classes > 5:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5"))
    return metrics


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


@dataclass
class StageRunner:
    """Runs the stages of one training run, resumable, into ``write_dir``.

    Attributes:
        model: The model, built in ``strategy``'s scope.
        model_name: Its zoo name.
        recipe: The recipe.
        strategy: The ``tf.distribute`` strategy.
        train: One-hot training batches.
        val: One-hot validation batches, or None (then the last epoch's model is kept).
        write_dir: Where checkpoints, logs and the resume state go.
        steps: Batches per epoch, or None when unknown.
        num_classes: Classes.
        callbacks: The caller's extra Keras callbacks, added to every stage.
        verbose: Keras' verbosity.
        history: Per-epoch metrics of the stages run so far, concatenated.
        class_weight: ``{class index: weight}`` for Keras' ``fit``, or None.
        multi_label: Multi-hot labels, logits out; the best epoch is the one of the highest
            ``val_map`` instead of ``val_accuracy``.
        best_val: The best value of the monitored metric so far (-1 before any).
        data: The ``ImageData`` the streams come from, or None: its files and
            augmentation key stage 1's cached features (``zoo.recipes.features``).
    """

    model: keras.Model
    model_name: str
    recipe: Recipe
    strategy: tf.distribute.Strategy
    train: tf.data.Dataset
    val: tf.data.Dataset | None
    write_dir: Path
    steps: int | None
    num_classes: int
    callbacks: list = field(default_factory=list)
    verbose: int | str = "auto"
    history: dict = field(default_factory=dict)
    class_weight: dict | None = None
    multi_label: bool = False
    best_val: float = -1.0
    data: object = None

    def __post_init__(self):
        self.stages = layer_stages(self.model, self.model_name)
        self.monitor = monitored(self.multi_label)

    def run_all(self, pretrained: bool) -> dict:
        """Scratch, or head then fine-tuning (resuming after a finished stage 1).

        Returns:
            The history of the stages run in this call.
        """
        if not pretrained:
            self.run("scratch", 0, self.recipe.scratch_epochs)
            return self.history
        state_file = self.write_dir / STATE_FILE
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        stage1_weights = self.write_dir / STAGE1_WEIGHTS
        if state.get("stage1") == "done" and self._load_stage1(stage1_weights):
            self.best_val = state.get("best_val", state.get("best_val_accuracy", -1.0))
            log.info("Stage 1 finished in an earlier run; resuming at stage 2.")
        else:
            from zoo.recipes import features  # stage 1 on cached backbone features

            if not features.run_head(self, self.recipe.head_epochs):
                self.run("head", 0, self.recipe.head_epochs)
            rundir.save_weights(self.model, stage1_weights)
            state.update(stage1="done", best_val=self.best_val)
            rundir.write_json(state_file, state)
        if self.recipe.finetune_epochs > 0:
            self.run("finetune", self.recipe.head_epochs, self.recipe.finetune_epochs)
        return self.history

    def _load_stage1(self, path: Path) -> bool:
        """Loads stage 1's weights; a missing or damaged file is set aside: stage 1 again."""
        if not path.exists():
            return False
        try:
            rundir.load_weights(self.model, path)  # sha256 first
            return True
        except Exception as error:  # noqa: BLE001  (h5py raises OSError, RuntimeError, ...)
            aside = set_aside(path)
            log.warning("The stage 1 weights %s are damaged (%s); set aside as %s. Stage 1 "
                        "trains again.", path, _first_line(error), aside.name)
            return False

    def run(self, stage: str, epochs_before: int, epochs_here: int) -> None:
        """Compiles the model for ``stage`` and fits it, resuming an interrupted fit."""
        with self.strategy.scope():
            peak_lr = prepare_stage(self.model, self.stages, stage, self.recipe,
                                    steps_per_epoch=self.steps, epochs=epochs_here,
                                    replicas=self.strategy.num_replicas_in_sync,
                                    num_classes=self.num_classes,
                                    multi_label=self.multi_label)
        guard = NanGuard()
        # Keras resumes from BackupAndRestore only when no initial epoch is left over.
        self.model._initial_epoch = None
        fit = self.model.fit(self.train, validation_data=self.val, initial_epoch=epochs_before,
                             shuffle=False, epochs=epochs_before + epochs_here,
                             callbacks=[*self._callbacks(stage), guard, *self.callbacks],
                             class_weight=self.class_weight, verbose=self.verbose)
        if guard.where is not None:
            self._refuse_nan(stage, peak_lr, guard.where)
        if self.val is None:
            rundir.save_model(self.model, self.write_dir / rundir.MODEL_FILE)
        for key, values in fit.history.items():
            self.history.setdefault(key, []).extend(float(v) for v in values)
        if fit.history.get(self.monitor):
            self.best_val = max(self.best_val, *fit.history[self.monitor])

    def _callbacks(self, stage: str) -> list:
        # Without validation nothing chooses an epoch: the stage's last model is saved
        # after fit. The training loss, on augmented images with smoothed labels and a
        # cosine tail, says little about which epoch generalises best.
        best = self.best_val
        # MeanAP first: it adds val_map to the logs the callbacks after it read.
        measure = [MeanAP(self.val)] if self.multi_label else []
        # EMA: the backup (first) keeps the raw weights in the model and their average in
        # the optimizer, so a resumed run trains on the raw ones; the raw weights are
        # measured next, then the average is swapped in for the epoch's end, where it is
        # measured (Keras' validation already ran on it), checkpointed and kept by early
        # stopping; it is swapped out again as the next epoch begins.
        swap = []
        if self.recipe.ema is not None:
            raw = [RawValidation(self.val, self.multi_label)] if self.val is not None else []
            swap = [*raw, keras.callbacks.SwapEMAWeights(swap_on_epoch=True)]
        selection = [
            *measure,
            BestCheckpoint(self.write_dir / rundir.MODEL_FILE,
                           best=best if best >= 0 else None, monitor=self.monitor),
            keras.callbacks.EarlyStopping(monitor=self.monitor, mode="max",
                                          patience=self.recipe.patience,
                                          restore_best_weights=True),
        ] if self.val is not None else []
        return [
            SafeBackup(self.write_dir / BACKUP_DIR / stage, aside=self.write_dir),
            *swap,
            *selection,
            HistoryLog(self.write_dir / rundir.HISTORY_FILE),
            keras.callbacks.TensorBoard(str(self.write_dir / "logs")),
        ]

    def _refuse_nan(self, stage: str, peak_lr: float, where: tuple[int, int, float]) -> None:
        epoch, batch, loss = where
        kept = ("the best model so far is kept" if self.val is not None else
                "the model of the last stage that finished, if one did, is kept")
        raise FloatingPointError(
            f"The loss became {loss} at epoch {epoch}, batch {batch} of stage {stage!r} "
            f"(peak learning rate {peak_lr:g}). Training stopped; {kept} in the run "
            "directory. Lower the learning rate, or check the data for broken labels, and "
            "run again with overwrite=True.")


# ------------------------------------------------------------------ crash-safe callbacks
# Keras' ModelCheckpoint, BackupAndRestore and CSVLogger write their files in place: a
# crash or a full disk in the middle leaves half a file that every later resume trips on.
# These write a temporary file and rename it into place (zoo.rundir), so the last good one
# survives anything.


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:200]


def set_aside(path: Path, into: Path | None = None, prefix: str = "") -> Path:
    """Renames a damaged file to ``<prefix><name>.damaged-<time>`` (kept, not deleted).

    Args:
        path: The damaged file.
        into: The folder it goes to (default: its own).
        prefix: Put before its name (which stage it was of).

    Returns:
        Where it went.
    """
    folder = into or path.parent
    aside = folder / f"{prefix}{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
    path.rename(aside)
    return aside


class SafeBackup(keras.callbacks.Callback):
    """The training state at each epoch's end, crash-safe; restored when a fit starts.

    Each epoch's state is its own ``epoch-NNNN.weights.h5`` (model and optimizer), written
    to a temporary file and renamed; ``backup.json``, replaced the same way, names the last
    two. A damaged file found at the start is reported by name and set aside, and the fit
    resumes from the one before, or starts the stage again when none is left.

    Args:
        folder: The stage's backup folder (removed when the fit ends normally).
        aside: Where damaged files are set aside (the run directory: they outlive the
            backup folder, for a look at what happened).
        keep: How many epochs' states to keep.
    """

    INDEX = "backup.json"

    def __init__(self, folder: Path, aside: Path, keep: int = 2):
        super().__init__()
        self.folder = Path(folder)
        self.aside = Path(aside)
        self.keep = keep
        self.entries: list[dict] = []

    def _read_index(self) -> list[dict]:
        index = self.folder / self.INDEX
        if not index.exists():
            return self._keras_backup()
        try:
            entries = json.loads(index.read_text(encoding="utf-8"))["epochs"]
            return [e for e in entries if isinstance(e.get("epoch"), int)]
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            aside = set_aside(index, self.aside, f"{self.folder.name}-")
            log.warning("The backup index %s is damaged (%s); set aside as %s.", index,
                        _first_line(error), aside.name)
            return []

    def _keras_backup(self) -> list[dict]:
        """The state Keras' BackupAndRestore left (zoo before this callback), if any."""
        weights = self.folder / "latest.weights.h5"
        try:
            meta = json.loads((self.folder / "training_metadata.json").read_text())
        except (OSError, ValueError):
            return []
        epoch = meta.get("epoch") if isinstance(meta, dict) else None
        return [{"epoch": epoch, "file": weights.name}] if isinstance(epoch, int) else []

    def on_train_begin(self, logs=None):
        self.entries = self._read_index()
        if not self.entries:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            # The file holds the optimizer's variables too; they must exist to be loaded.
            self.model.optimizer.build(self.model.trainable_variables)
        optimizer = list(self.model.optimizer.variables) if self.model.optimizer else []
        variables = [*self.model.variables, *optimizer]
        start = [v.numpy() for v in variables]
        for entry in reversed(list(self.entries)):
            path = self.folder / entry["file"]
            try:
                rundir.load_weights(self.model, path)  # sha256 first
            except Exception as error:  # noqa: BLE001  (h5py: OSError, RuntimeError, ...)
                self.entries.remove(entry)
                aside = (set_aside(path, self.aside, f"{self.folder.name}-")
                         if path.exists() else path)
                log.warning("The backup %s is damaged or missing (%s); set aside as %s. %s",
                            path, _first_line(error), aside.name,
                            "Trying the one before." if self.entries else
                            "No good backup is left: the stage starts again.")
                continue
            # Keras' fit starts at the model's initial epoch when one is set.
            self.model._initial_epoch = entry["epoch"]
            return
        for variable, value in zip(variables, start):
            variable.assign(value)  # a half-read file may have changed some of them

    def on_epoch_end(self, epoch, logs=None):
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch + 1:04d}.weights.h5"
        rundir.save_weights(self.model, self.folder / name)
        self.entries = [e for e in self.entries if e["file"] != name]
        self.entries = (self.entries + [{"epoch": epoch + 1, "file": name}])[-self.keep:]
        rundir.write_json(self.folder / self.INDEX, {"epochs": self.entries})
        kept = {e["file"] for e in self.entries}
        for old in self.folder.glob("epoch-*.weights.h5"):
            if old.name not in kept:
                old.unlink(missing_ok=True)

    def on_train_end(self, logs=None):
        # The fit ended normally: the state is in the model and the stage's files.
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


def monitored(multi_label: bool) -> str:
    """The metric that chooses the best epoch and stops early: val_map or val_accuracy."""
    return "val_map" if multi_label else "val_accuracy"


class MeanAP(keras.callbacks.Callback):
    """Adds ``val_map`` to each epoch's logs: the macro mean average precision over classes.

    Measured on the whole validation split with scikit-learn's ``average_precision_score``
    (:func:`zoo.recipes.reports.multilabel_metrics`), after Keras' own validation pass: a
    Keras metric could only approximate it (``AUC(curve="PR")`` interpolates between fixed
    thresholds).

    Args:
        val: Validation batches of ``(pixels, multi-hot labels)``.
    """

    def __init__(self, val: tf.data.Dataset):
        super().__init__()
        self.val = val

    def on_epoch_end(self, epoch, logs=None):
        from zoo.recipes import reports

        if logs is None:
            return
        y_true, probs = reports.multilabel_predictions(self.model, self.val)
        logs["val_map"] = reports.average_precisions(y_true, probs)[0]


class RawValidation(keras.callbacks.Callback):
    """Adds the raw (not averaged) weights' validation figures to each epoch's logs.

    Under EMA, Keras' validation measures the averaged weights (``SwapEMAWeights`` swaps
    them in for it); this callback, placed before the swap at the epoch's end, measures the
    raw weights on the same split, as ``val_<metric>_raw`` (``val_accuracy_raw``,
    ``val_map_raw``), so the two stand side by side in the history and the report.

    Args:
        val: Validation batches.
        multi_label: Measure ``val_map_raw`` too.
    """

    def __init__(self, val: tf.data.Dataset, multi_label: bool = False):
        super().__init__()
        self.val = val
        self.multi_label = multi_label

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        measured = self.model.evaluate(self.val, verbose=0, return_dict=True)
        for name, value in measured.items():
            logs[f"val_{name}_raw"] = float(value)
        if self.multi_label:
            from zoo.recipes import reports

            y_true, probs = reports.multilabel_predictions(self.model, self.val)
            logs["val_map_raw"] = reports.average_precisions(y_true, probs)[0]


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model as ``path`` whenever the monitored metric improves, crash-safely.

    Args:
        path: The ``.keras`` file.
        best: The value to beat (an earlier stage's best), or None.
        monitor: The metric of the logs, higher is better.
    """

    def __init__(self, path: Path, best: float | None = None, monitor: str = "val_accuracy"):
        super().__init__()
        self.path = Path(path)
        self.best = best
        self.monitor = monitor

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or (self.best is not None and not float(value) > self.best):
            return
        self.best = float(value)
        rundir.save_model(self.model, self.path)


class HistoryLog(keras.callbacks.Callback):
    """Per-epoch metrics in a CSV file, one row per epoch, rewritten crash-safely.

    An epoch logged again after a resume replaces its row, so the file always has one
    header and one row per epoch.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)

    def on_epoch_end(self, epoch, logs=None):
        rows = read_history_rows(self.path)
        rows[epoch] = {k: float(v) for k, v in (logs or {}).items()
                       if isinstance(v, (int, float)) or hasattr(v, "__float__")}
        keys = sorted({k for row in rows.values() for k in row})
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["epoch", *keys], lineterminator="\n")
        writer.writeheader()
        for number in sorted(rows):
            writer.writerow({"epoch": number, **rows[number]})
        rundir.write_text(self.path, out.getvalue())


def read_history_rows(path: Path) -> dict[int, dict]:
    """``{epoch: {metric: value}}`` from a history CSV; rows that are no epoch are skipped.

    A history written by two processes at once (zoo before its run lock) has a second
    header and mixed rows: those rows are left out rather than failing every later run.
    """
    if not path.exists():
        return {}
    rows: dict[int, dict] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                number = int(row.pop("epoch"))
            except (TypeError, ValueError):
                continue
            values = {}
            for key, value in row.items():
                # Keras' CSVLogger wrote empty val_ columns without validation: numbers only.
                try:
                    values[key] = float(value)
                except (TypeError, ValueError):
                    continue
            rows[number] = values  # a resumed epoch logged again: the last row wins
    return rows
