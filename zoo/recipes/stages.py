"""The recipe's stages: what trains when, at which rate, and the loop that runs them.

Stage 1 (``"head"``) trains a new head on the frozen backbone; stage 2 (``"finetune"``)
unfreezes the backbone (all of it or its top stages) at a lower rate, earlier stages lower
still. Batch normalisation layers of the backbone stay in inference mode in both. From
scratch there is one stage (``"scratch"``) with everything trainable.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import keras
import tensorflow as tf

from zoo import rundir
from zoo.recipes.optim import LayerwiseAdamW, warmup_cosine
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
    best_val_accuracy: float = -1.0

    def __post_init__(self):
        self.stages = layer_stages(self.model, self.model_name)

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
        if state.get("stage1") == "done" and stage1_weights.exists():
            self.model.load_weights(stage1_weights)
            self.best_val_accuracy = state.get("best_val_accuracy", -1.0)
            log.info("Stage 1 finished in an earlier run; resuming at stage 2.")
        else:
            self.run("head", 0, self.recipe.head_epochs)
            self.model.save_weights(stage1_weights)
            state.update(stage1="done", best_val_accuracy=self.best_val_accuracy)
            state_file.write_text(json.dumps(state))
        if self.recipe.finetune_epochs > 0:
            self.run("finetune", self.recipe.head_epochs, self.recipe.finetune_epochs)
        return self.history

    def run(self, stage: str, epochs_before: int, epochs_here: int) -> None:
        """Compiles the model for ``stage`` and fits it, resuming an interrupted fit."""
        with self.strategy.scope():
            peak_lr = prepare_stage(self.model, self.stages, stage, self.recipe,
                                    steps_per_epoch=self.steps, epochs=epochs_here,
                                    replicas=self.strategy.num_replicas_in_sync,
                                    num_classes=self.num_classes)
        guard = NanGuard()
        # Keras resumes from BackupAndRestore only when no initial epoch is left over.
        self.model._initial_epoch = None
        fit = self.model.fit(self.train, validation_data=self.val, initial_epoch=epochs_before,
                             shuffle=False, epochs=epochs_before + epochs_here,
                             callbacks=[*self._callbacks(stage), guard, *self.callbacks],
                             verbose=self.verbose)
        if guard.where is not None:
            self._refuse_nan(stage, peak_lr, guard.where)
        if self.val is None:
            self.model.save(self.write_dir / rundir.MODEL_FILE)
        for key, values in fit.history.items():
            self.history.setdefault(key, []).extend(float(v) for v in values)
        if fit.history.get("val_accuracy"):
            self.best_val_accuracy = max(self.best_val_accuracy, *fit.history["val_accuracy"])

    def _callbacks(self, stage: str) -> list:
        # Without validation nothing chooses an epoch: the stage's last model is saved
        # after fit. The training loss, on augmented images with smoothed labels and a
        # cosine tail, says little about which epoch generalises best.
        best = self.best_val_accuracy
        selection = [
            keras.callbacks.ModelCheckpoint(
                str(self.write_dir / rundir.MODEL_FILE), monitor="val_accuracy", mode="max",
                save_best_only=True, initial_value_threshold=best if best >= 0 else None),
            keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max",
                                          patience=self.recipe.patience,
                                          restore_best_weights=True),
        ] if self.val is not None else []
        return [
            keras.callbacks.BackupAndRestore(str(self.write_dir / BACKUP_DIR / stage)),
            *selection,
            keras.callbacks.CSVLogger(str(self.write_dir / rundir.HISTORY_FILE), append=True),
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
