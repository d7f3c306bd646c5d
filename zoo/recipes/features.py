"""Cached features for the frozen stage: the backbone runs once per image, not once per epoch.

While the backbone is frozen (stage 1, ``"head"``, batch normalisation in inference mode) and
the train stream is not augmented, the backbone's output for an image is the same in every
epoch. This module cuts the model where the head begins, computes the backbone's features of
the train and validation images once, keeps them in the run directory under a key of
everything that decides them (the backbone's weights, the model's input and the precision,
the images' files and the augmentation), and trains the head on them.

The head model is made of the full model's own layers (``keras.Model`` between the cut and
the output), so its weights are the full model's: what the head learns is in the full model
without a copy, stage 2 starts from it, early stopping's restored weights are the full
model's, and the best checkpoint (``model.keras``) is the full model.

The cut is the input of the head's first layer with weights: parameter-free layers between
the backbone and it (global pooling, flatten, adaptive pooling) are part of the features,
so ResNet-50 keeps 2,048 numbers per image, VGG the flattened 25,088, AlexNet 9,216.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from zoo import rundir

log = logging.getLogger("zoo")

CHOICES = ("auto", "on", "off")
FEATURES_DIR = "features"
# Part of every key: a change to how features are stored or cut makes new files.
FORMAT = "zoo.recipes.features/1"
# Layers without weights that give the same output in training and inference: the features
# may include them (Dropout, with no weights, is random in training and stays in the head).
_ABSORBABLE = ("Flatten", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
               "GlobalMaxPooling1D", "GlobalMaxPooling2D", "AdaptiveAveragePooling2D",
               "AveragePooling2D", "MaxPooling2D", "Reshape")


@dataclass
class Features:
    """One split's features and one-hot labels, memory-mapped from the cache's files.

    Attributes:
        features: ``[N, ...]`` float32 backbone outputs, in the stream's order.
        labels: ``[N, num_classes]`` float32 labels.
        batch_size: The largest batch of the stream they were taken from.
        reused: Whether they were read from an earlier run's files.
    """

    features: np.ndarray
    labels: np.ndarray
    batch_size: int
    reused: bool = False


def cut(model: keras.Model, stages: dict[str, int]):
    """The tensor of ``model`` the head's first weighted layer takes: the features.

    Args:
        model: A functional model.
        stages: ``stages.layer_stages`` of it (-1: the head).

    Returns:
        ``(tensor, reason)``: the Keras tensor, or None and why the model has no single cut.
    """
    head = [layer for layer in model.layers if stages.get(layer.name, -1) == -1
            and not isinstance(layer, keras.layers.InputLayer)]
    names = {layer.name for layer in head}
    entries = []
    for layer in head:
        for tensor in _inputs(layer):
            producer = tensor._keras_history.operation
            if producer.name not in names and all(t is not tensor for t in entries):
                entries.append(tensor)
    if len(entries) != 1:
        return None, f"the head takes {len(entries)} backbone outputs, not one"
    tensor = entries[0]
    while True:
        consumers = [layer for layer in head if any(t is tensor for t in _inputs(layer))]
        if len(consumers) != 1 or type(consumers[0]).__name__ not in _ABSORBABLE:
            break
        if consumers[0] is head[-1] or consumers[0].weights:
            break
        tensor = consumers[0]._inbound_nodes[0].output_tensors[0]
    if not any(layer.trainable_weights or layer.weights for layer in head):
        return None, "the head has no weights to train"
    return tensor, ""


def _inputs(layer) -> list:
    # The layer's first node is the one of the model it was built in (a head model made
    # later from the same layers adds nodes after it).
    nodes = layer._inbound_nodes
    return list(nodes[0].input_tensors) if nodes else []


def decide(recipe, model: keras.Model, stages: dict[str, int]) -> tuple[bool, str]:
    """Whether stage 1 trains on cached features, and why (for the log).

    ``auto`` caches when the result is the same as without: the train stream is not
    augmented (``augment`` none) and draws each image once an epoch (``sampling``
    natural). ``on`` caches also then, each image's one augmented view of the first pass
    standing for it in every epoch. ``off`` never caches.

    Raises:
        ValueError: For a ``cache_features`` that is none of :data:`CHOICES`.
    """
    choice = getattr(recipe, "cache_features", "auto")
    if choice not in CHOICES:
        raise ValueError(f"cache_features (--cache-features) must be one of "
                         f"{', '.join(CHOICES)}; got {choice!r}.")
    if choice == "off":
        return False, "cache_features is off"
    tensor, why = cut(model, stages)
    if tensor is None:
        return False, why
    augment = recipe.augment if recipe.augment is not None else "none"
    varies = []
    if augment != "none":
        varies.append(f"augment={augment!r}")
    if recipe.sampling != "natural":
        varies.append(f"sampling={recipe.sampling!r}")
    if varies and choice == "auto":
        return False, (f"the head stage's train stream changes from epoch to epoch "
                       f"({', '.join(varies)}); cache_features='on' caches one pass anyway")
    if varies:
        log.warning("cache_features='on' with %s: stage 1 sees each image as it was drawn "
                    "in the first pass, in every epoch.", ", ".join(varies))
    return True, "the backbone is frozen and the train stream is the same every epoch"


def extractor(model: keras.Model, tensor) -> keras.Model:
    """The model from the input to the cut (shares the model's layers)."""
    return keras.Model(model.inputs, tensor, name="backbone_features")


def head_model(model: keras.Model, tensor) -> keras.Model:
    """The model from the cut to the output, made of the full model's own layers."""
    return keras.Model(tensor, model.outputs, name="head")


def weights_digest(model: keras.Model) -> str:
    """A sha256 of a model's weight values (names, shapes, dtypes and bytes) in order."""
    digest = hashlib.sha256()
    for variable in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
        digest.update(f"{variable.path}\0{value.shape}\0{value.dtype}\0".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def files_digest(files) -> str | None:
    """A sha256 of ``(path, label)`` pairs with each file's size, mtime and content hash.

    None when there is no file list (a stream the caller made): its features are not kept
    for another run.
    """
    if not files:
        return None
    from pipelines.cache import content_digests

    files = list(files)
    contents = content_digests([str(path) for path, _ in files])
    digest = hashlib.sha256()
    for (path, label), content in zip(files, contents):
        try:
            stat = os.stat(path)
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        digest.update(f"{path}\0{label}\0{size}\0{mtime}\0{content}\n".encode(
            "utf-8", "surrogateescape"))
    return digest.hexdigest()


def cache_key(backbone: keras.Model, recipe, data, split: str) -> dict:
    """Everything that decides one split's features, as JSON data.

    Args:
        backbone: The :func:`extractor`.
        recipe: The recipe (augmentation, sampling, seed).
        data: The ``ImageData`` the streams come from, or None.
        split: ``"train"`` or ``"val"``.
    """
    files = getattr(data, f"{split}_files", None) if data is not None else None
    geometry = getattr(data, "geometry", None)
    return {
        "format": FORMAT,
        "split": split,
        "weights": weights_digest(backbone),
        "input": list(backbone.input_shape[1:]),
        "output": list(backbone.output_shape[1:]),
        "cut": backbone.outputs[0]._keras_history.operation.name,
        "policy": keras.config.dtype_policy().name,
        "geometry": repr(geometry) if geometry is not None else None,
        "augment": str(recipe.augment) if split == "train" else "none",
        "sampling": recipe.sampling if split == "train" else "natural",
        "seed": recipe.seed,
        "batch_size": getattr(data, "batch_size", None),
        "files": files_digest(files),
    }


def extract(backbone: keras.Model, dataset: tf.data.Dataset,
            paths: dict[str, Path]) -> dict:
    """One pass of ``dataset``: the backbone's features and the labels, written as they come.

    Each is a raw float32 file, row after row, in the stream's order (written batch by
    batch, so the features of a large folder never sit in memory at once), staged and
    renamed into place at the end.

    Args:
        backbone: The :func:`extractor`.
        dataset: ``(pixels, labels)`` batches.
        paths: ``{"features": path, "labels": path}``.

    Returns:
        ``{"count", "batch_size", "features_shape", "labels_shape"}`` (shapes of one row).
    """
    forward = tf.function(lambda x: backbone(x, training=False), reduce_retracing=True)
    staging = {part: path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
               for part, path in paths.items()}
    record = {"count": 0, "batch_size": 0, "features_shape": None, "labels_shape": None}
    start = time.monotonic()
    try:
        with open(staging["features"], "wb") as f_out, open(staging["labels"], "wb") as l_out:
            for x, y in dataset:
                rows = np.asarray(forward(x), dtype=np.float32)
                labels = np.asarray(y, dtype=np.float32)
                f_out.write(np.ascontiguousarray(rows).tobytes())
                l_out.write(np.ascontiguousarray(labels).tobytes())
                record.update(count=record["count"] + len(labels),
                              batch_size=max(record["batch_size"], len(labels)),
                              features_shape=list(rows.shape[1:]),
                              labels_shape=list(labels.shape[1:]))
        if not record["count"]:
            raise ValueError("The stream gave no batches; there is nothing to train on.")
        for part, path in paths.items():
            os.replace(staging[part], path)
    finally:
        for path in staging.values():
            path.unlink(missing_ok=True)
    log.info("Backbone features of %d images in %.1f s.", record["count"],
             time.monotonic() - start)
    return record


def cached(backbone: keras.Model, dataset: tf.data.Dataset, key: dict,
           folder: Path) -> Features:
    """The split's features from ``folder`` when its key matches, else computed and kept.

    Files are ``<split>-<digest>.features.f32`` / ``.labels.f32`` (raw float32 rows) and a
    ``.json`` with the key and the shapes, written last: a crash before it leaves files
    that are never read. Another key's files of the same split are removed when new ones
    are written (a changed folder or new weights: they are stale). Without a file list the
    key is unique to this run.
    """
    if key["files"] is None:
        key = {**key, "run": uuid.uuid4().hex}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    stem = f"{key['split']}-{digest}"
    paths = {part: folder / f"{stem}.{part}.f32" for part in ("features", "labels")}
    manifest = folder / f"{stem}.json"
    found = _read(manifest, paths, key)
    if found is not None:
        log.info("Stage 1 reuses the %s features in %s.", key["split"], manifest.name)
        return found
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{key['split']}-*"):
        old.unlink(missing_ok=True)  # stale (or this key's, unfinished)
    record = extract(backbone, dataset, paths)
    rundir.write_json(manifest, {"key": key, **record})
    found = _read(manifest, paths, key)
    found.reused = False
    return found


def _read(manifest: Path, paths: dict[str, Path], key: dict) -> Features | None:
    try:
        record = json.loads(manifest.read_text(encoding="utf-8"))
        if record.get("key") != key:
            return None
        count = int(record["count"])
        shapes = {part: (count, *record[f"{part}_shape"]) for part in paths}
        if any(paths[part].stat().st_size != 4 * math.prod(shapes[part]) for part in paths):
            return None  # cut short or of another size: computed again
        arrays = [np.memmap(paths[part], dtype=np.float32, mode="r", shape=shapes[part])
                  for part in ("features", "labels")]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing, damaged or of another size: computed again
    return Features(*arrays, int(record["batch_size"]), reused=True)


def stream(split: Features, *, shuffle: bool, seed: int) -> tf.data.Dataset:
    """Batches of ``(features, labels)``; reshuffled each epoch when ``shuffle``.

    The arrays are gathered per batch (memory-mapped files stay on disk and out of the
    graph, which a dataset made from large arrays would hit the 2 GB limit of).
    """
    features, labels = split.features, split.labels
    count = len(labels)
    order = tf.data.Dataset.range(count)
    if shuffle:
        order = order.shuffle(count, seed=seed, reshuffle_each_iteration=True)

    def gather(index):
        index = np.asarray(index)
        return (np.asarray(features[index], dtype=np.float32),
                np.asarray(labels[index], dtype=np.float32))

    def load(index):
        x, y = tf.numpy_function(gather, [index], (tf.float32, tf.float32))
        x.set_shape((None, *features.shape[1:]))
        y.set_shape((None, *labels.shape[1:]))
        return x, y

    return order.batch(split.batch_size).map(load).prefetch(tf.data.AUTOTUNE)


class _SavesFullModel(keras.callbacks.Callback):
    """Runs a callback as if the fit were the full model's: a checkpoint saves all of it."""

    def __init__(self, inner: keras.callbacks.Callback, full: keras.Model):
        super().__init__()
        self.inner = inner
        self.full = full

    def set_model(self, model):
        super().set_model(model)
        self.inner.set_model(self.full)

    def on_epoch_end(self, epoch, logs=None):
        self.inner.on_epoch_end(epoch, logs)


def run_head(runner, epochs: int) -> bool:
    """Stage 1 on cached features, if :func:`decide` says so; the caller's stage otherwise.

    Args:
        runner: The ``stages.StageRunner`` (its model, recipe, streams and run dir).
        epochs: Epochs of stage 1.

    Returns:
        Whether stage 1 ran here (False: the caller runs it as usual).
    """
    from zoo.recipes import stages

    use, why = decide(runner.recipe, runner.model, runner.stages)
    log.info("Stage 1 %s cached features: %s.", "on" if use else "without", why)
    if not use:
        return False
    tensor, _ = cut(runner.model, runner.stages)
    folder = runner.write_dir / FEATURES_DIR
    backbone = extractor(runner.model, tensor)
    data = getattr(runner, "data", None)
    train = cached(backbone, runner.train, cache_key(backbone, runner.recipe, data, "train"),
                   folder)
    val = None
    if runner.val is not None:
        val = cached(backbone, runner.val, cache_key(backbone, runner.recipe, data, "val"),
                     folder)
    with runner.strategy.scope():
        head = head_model(runner.model, tensor)
        peak_lr = stages.prepare_stage(head, runner.stages, "head", runner.recipe,
                                       steps_per_epoch=runner.steps, epochs=epochs,
                                       replicas=runner.strategy.num_replicas_in_sync,
                                       num_classes=runner.num_classes,
                                       multi_label=runner.multi_label)
    _fit(runner, head, stream(train, shuffle=True, seed=runner.recipe.seed),
         None if val is None else stream(val, shuffle=False, seed=0), epochs, peak_lr)
    return True


def _fit(runner, head: keras.Model, train: tf.data.Dataset, val: tf.data.Dataset | None,
         epochs: int, peak_lr: float) -> None:
    """Fits the head as ``StageRunner.run`` fits a stage, with the stage's callbacks."""
    from zoo.recipes import stages

    pixels_val = runner.val
    runner.val = val  # the callbacks that measure on validation data get the features
    try:
        callbacks = runner._callbacks("head")
    finally:
        runner.val = pixels_val
    for index, callback in enumerate(callbacks):
        if isinstance(callback, stages.SafeBackup):
            # Its own folder: a head model's state must never be restored into the full one.
            callbacks[index] = stages.SafeBackup(
                runner.write_dir / stages.BACKUP_DIR / "head-features", aside=runner.write_dir)
        elif isinstance(callback, stages.BestCheckpoint):
            callbacks[index] = _SavesFullModel(callback, runner.model)
    guard = stages.NanGuard()
    head._initial_epoch = None
    fit = head.fit(train, validation_data=val, initial_epoch=0, epochs=epochs, shuffle=False,
                   callbacks=[*callbacks, guard, *runner.callbacks],
                   class_weight=runner.class_weight, verbose=runner.verbose)
    if guard.where is not None:
        runner._refuse_nan("head", peak_lr, guard.where)
    if pixels_val is None:
        rundir.save_model(runner.model, runner.write_dir / rundir.MODEL_FILE)
    for key, values in fit.history.items():
        runner.history.setdefault(key, []).extend(float(v) for v in values)
    if fit.history.get(runner.monitor):
        runner.best_val = max(runner.best_val, *fit.history[runner.monitor])

