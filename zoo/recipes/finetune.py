"""The fine-tuning recipe: two stages, BN frozen, layer-wise rates, resume, reports.

Stage 1 trains a new head on the frozen backbone; stage 2 unfreezes the backbone (all of it
or its top stages) at a lower rate, earlier stages lower still, as the Keras
transfer-learning guide and fastai's ``fine_tune`` do. Batch normalisation layers of the
backbone stay in inference mode throughout: updating their statistics with small batches
of a new dataset is the classic cause of collapsed accuracy after unfreezing. Training
from scratch (``weights=None``) is one stage with everything trainable.

:func:`finetune` is the outline: prepare (recipe, strategy, run directory, data), build,
run the stages (:mod:`zoo.recipes.stages`), write the run directory (:mod:`zoo.rundir`).
The options are :class:`~zoo.recipes.recipe.Recipe`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from zoo import distribute, rundir
from zoo.models import build
from zoo.recipes import report_page, reports
from zoo.recipes.features import FEATURES_DIR
from zoo.recipes.optim import LayerwiseAdamW
from zoo.recipes.recipe import Recipe, make_recipe, set_epochs
from zoo.recipes.stages import (
    BACKUP_DIR,
    STATE_FILE,
    NanGuard,
    StageRunner,
    layer_stages,
    make_loss,
    monitored,
    one_hot,
    prepare_stage,
    read_history_rows,
    set_trainable,
)
from zoo.registry import Geometry

__all__ = ["FinetuneResult", "LayerwiseAdamW", "NanGuard", "Recipe", "find_learning_rate",
           "finetune", "layer_stages", "make_recipe", "prepare_stage"]

log = logging.getLogger("zoo")


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns.

    Attributes:
        model: The best model (highest validation accuracy, or ``val_map`` for
            multi-label data); without a validation split, the last epoch's.
        history: Per-epoch metrics of the whole run, stages concatenated.
        metrics: Final validation metrics, with ``"val_accuracy"``; without a validation
            split ``"val_accuracy"`` is None and ``"validation"`` is ``"none"``. For
            multi-label data ``"val_map"``, ``"val_f1_micro"``, ``"val_f1_macro"``,
            ``"thresholds"`` and per-class ``"ap"`` instead (``"val_accuracy"`` None).
        run_dir: The run directory.
        recipe: The recipe the run used.
    """

    model: keras.Model
    history: dict
    metrics: dict
    run_dir: Path
    recipe: Recipe = field(default_factory=Recipe)


@dataclass
class _Opening:
    """How to open the run directory, and the stack that holds its lock."""

    overwrite: bool
    resume: str | None
    stack: contextlib.ExitStack
    table: dict = field(default_factory=dict)  # a label table's images and label_delimiter
    store: str | os.PathLike | None = None  # a prepared store of the data folder


@dataclass
class _Setup:
    """What :func:`_prepare` settles before anything trains."""

    strategy: tf.distribute.Strategy
    chief: bool
    run_dir: Path
    write_dir: Path  # the run directory on the chief, a scratch directory on other workers
    data: Any
    data_root: Path | None
    class_names: list[str]
    image_shape: tuple[int, int, int]  # what the model takes: the data's batches' shape
    geometry: Geometry
    train: tf.data.Dataset
    val: tf.data.Dataset | None
    steps: int | None
    changes: list = field(default_factory=list)  # options changed on purpose at a resume
    multi_label: bool = False
    class_weight: dict | None = None  # by class index, as Keras' fit takes it
    weights_file: dict | None = None  # where the starting weights came from, with a hash


def finetune(
    model_name: str,
    data,
    *,
    images: str | os.PathLike | None = None,
    label_delimiter: str | None = None,
    path_column: str | None = None,
    label_column: str | None = None,
    split_column: str | None = None,
    suffix: str | None = None,
    store: str | os.PathLike | None = None,
    weights: str | None = "imagenet",
    epochs: int | None = None,
    out_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    resume: str | None = None,
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
        data: A folder of images (``root/<class>/*`` or ``root/train|val/<class>/*``), a
            label table (a ``.csv`` or ``.tsv`` path, read by ``pipelines.from_csv``), or
            the object ``pipelines.from_folder`` / ``from_csv`` / ``from_tfds`` returns.
        images: With a label table: the folder its paths are relative to (default: the
            table's folder).
        label_delimiter: With a label table: splits a label cell into several labels
            (``" "`` for ``"cat dog"``), making the data multi-label.
        path_column: With a label table: the column of image paths (default ``path``).
        label_column: With a label table: the column of labels (default ``label``).
        split_column: With a label table: a column of train / val / test values, used
            as the split instead of ``validation_split``.
        suffix: With a label table: appended to bare ids (``".jpg"``).
        store: A prepared store of the folder ``data`` (``pipelines.prepare`` /
            ``zoo prepare``): the images are read from it, decoded smaller, with the split
            it was written with; refused when the folder changed since.
        weights: Pretrained weights (tag or path), or None to train from scratch.
        epochs: Total epochs; with weights, a quarter (at least one) trains the head.
        out_dir: The run directory; defaults to ``runs/<model>-<data folder>``.
        overwrite: Start again when ``out_dir`` holds a run, finished or not (the old one
            is kept beside it, renamed).
        resume: None resumes an interrupted run only with the model, weights, recipe and
            data it started with, and refuses another; ``"changed"`` continues it with
            this call's options on purpose, recorded in ``run.json`` (``changes``, with the
            epoch).
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
            ``val_`` metric), or passed ``validation_split`` with data it built itself; or
            when an interrupted run in ``out_dir`` started with other options.
        zoo.rundir.RunDirBusy: When another process is writing ``out_dir``.
    """
    if resume not in (None, "changed"):
        raise ValueError(f"resume must be None or 'changed'; got {resume!r}.")
    recipe = make_recipe(model_name, strategy=strategy, precision=precision, **recipe_options)
    set_epochs(recipe, epochs, pretrained=weights is not None)
    keras.utils.set_random_seed(recipe.seed)
    table = table_options(data, images=images, label_delimiter=label_delimiter,
                          path_column=path_column, label_column=label_column,
                          split_column=split_column, suffix=suffix)
    _refuse_store_without_folder(store, data, table, recipe_options)
    with contextlib.ExitStack() as stack:
        setup = _prepare(model_name, data, weights, recipe, out_dir,
                         _Opening(overwrite, resume, stack, table, store), recipe_options)
        result = _train(setup, model_name, weights, recipe, verbose, callbacks,
                        recipe_options)
    return result


def _train(setup: _Setup, model_name: str, weights, recipe: Recipe, verbose: int | str,
           callbacks: list | None, recipe_options: dict) -> FinetuneResult:
    """Builds, runs the stages and writes the run directory (the lock held)."""
    if setup.val is None:
        _refuse_what_needs_validation(recipe_options, callbacks)
    _refuse_short_accumulation(setup, recipe)
    policy = distribute.resolve_policy(recipe.precision)
    with _global_policy(policy):
        _announce(setup, model_name, policy, verbose, recipe.accumulate_steps)
        weight_set = resolve_weights(model_name, weights)
        setup.weights_file = weights_record(weight_set)
        with setup.strategy.scope():
            model = build(model_name, weights=weight_set, num_classes=len(setup.class_names),
                          input_shape=setup.image_shape, dropout=recipe.dropout,
                          classifier_activation=_activation(setup.multi_label))
        runner = StageRunner(model, model_name, recipe, setup.strategy, setup.train,
                             setup.val, setup.write_dir, setup.steps, len(setup.class_names),
                             callbacks=list(callbacks or []), verbose=verbose,
                             class_weight=setup.class_weight, multi_label=setup.multi_label,
                             data=setup.data)
        history = runner.run_all(pretrained=weights is not None)
        model = _final_model(model, setup, model_name, recipe)
        history = _read_history(setup.write_dir / rundir.HISTORY_FILE) or history
        metrics = reports.write_report(setup.write_dir, model, setup.data.val,
                                       setup.class_names, history,
                                       multi_label=setup.multi_label,
                                       files=[str(path) for path, _ in
                                              getattr(setup.data, "val_files", None) or []])
        metrics["calibration"] = _calibration(setup, model, recipe)
        metrics.update(levers(setup, recipe, history))
        if setup.chief:
            # metrics.json gets the figures measured after the report too: the temperature's
            # and, under EMA, the raw weights' beside the averaged ones.
            rundir.write_json(setup.write_dir / rundir.METRICS_FILE, _jsonable(metrics))
    _write_run_dir(setup, model, model_name, weights, recipe, policy, metrics)
    return FinetuneResult(model=model, history=history, metrics=metrics,
                          run_dir=setup.run_dir, recipe=recipe)


def resolve_weights(model_name: str, weights):
    """The weight set ``weights`` names (a Hub address is fetched here), or None."""
    if weights is None:
        return None
    from zoo import weights as weights_module
    from zoo.models import get_spec

    return weights_module.resolve(get_spec(model_name), weights)


def weights_record(weight_set) -> dict | None:
    """Where a run's starting weights came from, for ``run.json`` and the model card.

    A catalog or Hub set gives its address, revision (the Hub commit) and the publisher's
    hash; a local file its path and the sha256 of its bytes, taken here.
    """
    if weight_set is None:
        return None
    record = {"tag": weight_set.tag, "source": weight_set.source, "url": weight_set.url,
              "revision": weight_set.revision, "path": weight_set.path,
              "hash": weight_set.hash, "hash_algorithm": weight_set.hash_algorithm}
    if weight_set.hash is None and weight_set.path and os.path.isfile(weight_set.path):
        from zoo.weights.readers import file_sha256

        record.update(hash=file_sha256(weight_set.path), hash_algorithm="sha256")
    return {k: v for k, v in record.items() if v is not None}


# ------------------------------------------------------------------------------- prepare


def _prepare(model_name: str, data, weights, recipe: Recipe, out_dir, opening: _Opening,
             recipe_options: dict) -> _Setup:
    """Strategy, run directory and data: everything settled before the model is built."""
    strategy = distribute.select_strategy(recipe.strategy)
    chief = distribute.is_chief(strategy)
    given_data = not isinstance(data, (str, os.PathLike))
    run_dir = Path(out_dir or default_run_dir(model_name, data))
    write_dir = run_dir if chief else Path(tempfile.mkdtemp(prefix="zoo-worker-"))
    if given_data:
        # The caller built the pipeline; record what it does, not the recipe's default.
        recipe.augment = getattr(data, "augment", "given by the caller")
        recipe.validation_split = (getattr(data, "manifest", None) or {}).get(
            "validation_split", None if data.val is not None else 0.0)
        _refuse_other_sampling(recipe_options.get("sampling"), data)
        recipe.sampling = getattr(data, "sampling", "natural")
    start: dict = {"changes": []}
    if chief:
        _open_run_dir(run_dir, images_root(data, opening.table), opening.overwrite,
                      opening.stack)
        start = _guard_resume(run_dir, _start_record(model_name, weights, recipe, data,
                                                     opening.table, opening.store),
                              opening.resume)
    global_batch = step_batch(recipe, given_data) * strategy.num_replicas_in_sync
    data, data_root = _load_data(data, model_name, weights, recipe, global_batch, write_dir,
                                 recipe_options, opening.table, opening.store)
    if chief:
        # Written once the data is read: a command that fails before leaves no trace.
        rundir.write_start(run_dir, start)
    class_names = list(data.class_names)
    multi_label = bool(getattr(data, "multi_label", False))
    _refuse_what_multi_label_cannot(recipe, multi_label)
    train = one_hot(data.train, len(class_names))
    val = one_hot(data.val, len(class_names)) if data.val is not None else None
    cardinality = int(train.cardinality())
    return _Setup(strategy=strategy, chief=chief, run_dir=run_dir, write_dir=write_dir,
                  data=data, data_root=data_root, class_names=class_names,
                  image_shape=tuple(int(s) for s in data.train.element_spec[0].shape[1:]),
                  geometry=_data_geometry(data, model_name, weights), train=train, val=val,
                  steps=cardinality if cardinality > 0 else None,
                  changes=list(start["changes"]), multi_label=multi_label,
                  class_weight=class_weights(recipe.class_weight, data, class_names))


TABLE_SUFFIXES = (".csv", ".tsv", ".tab")


# The keywords of pipelines.from_csv a data path ending in TABLE_SUFFIXES takes.
TABLE_KEYWORDS = ("images", "label_delimiter", "path_column", "label_column", "split_column",
                  "suffix")


def table_options(data, **given) -> dict:
    """A label table's options, ``{}`` for other data (which takes none).

    Args:
        data: What was given as the data.
        **given: The table keywords (:data:`TABLE_KEYWORDS`) as the caller passed them;
            None means ``pipelines.from_csv``'s default.

    Returns:
        ``{keyword: value}`` (``images`` always there) for a ``.csv`` / ``.tsv`` path,
        else ``{}``.

    Raises:
        ValueError: For a table keyword with data that is no table.
    """
    if isinstance(data, (str, os.PathLike)) and Path(data).suffix.lower() in TABLE_SUFFIXES:
        return {"images": None, **{k: v for k, v in given.items() if v is not None}}
    passed = [f"{name}={value!r}" for name, value in given.items() if value is not None]
    if passed:
        raise ValueError(f"{' and '.join(passed)} go with a label table (a data path ending "
                         f"in {', '.join(TABLE_SUFFIXES)}); {str(data)!r} is not one. Leave "
                         "them out, or pass the table as the data.")
    return {}


def read_table(data, table: dict, **options):
    """``pipelines.from_csv`` over the table ``data`` with its ``table`` options."""
    import pipelines

    columns = {k: v for k, v in table.items() if k != "images"}
    return pipelines.from_csv(data, table["images"], **columns, **options)


def images_root(data, table: dict) -> Path | None:
    """The folder of the images a data path names (a table's: ``images``, or its folder)."""
    if not isinstance(data, (str, os.PathLike)):
        return None
    if table:
        return Path(table["images"]) if table.get("images") is not None else Path(data).parent
    return Path(data)


def _refuse_other_sampling(sampling: str | None, data) -> None:
    """Refuses a ``sampling`` that contradicts the caller's pipeline (it cannot change it)."""
    built = getattr(data, "sampling", "natural")
    if sampling is not None and sampling != built:
        raise ValueError(
            f"sampling={sampling!r} applies when finetune builds the pipeline from a folder "
            f"path; this data was built by the caller with sampling={built!r}. Pass "
            f"sampling={sampling!r} to pipelines.from_folder (or from_csv) instead.")


def _refuse_what_multi_label_cannot(recipe: Recipe, multi_label: bool) -> None:
    """Multi-label data: a class weight, which weighs an image by its one class, is refused.

    Label smoothing and mixup / cutmix work: binary cross-entropy takes soft targets per
    class (smoothing pulls each towards 0.5, mixing blends two pictures' multi-hot labels).
    """
    if multi_label and recipe.class_weight is not None:
        raise ValueError(
            f"Multi-label data cannot train with class_weight={recipe.class_weight!r}: a class "
            "weight weighs an image by its one class, and these images have several. Try "
            "loss='focal' (--loss focal), which weighs down the labels already learnt.")


def class_weights(class_weight, data, class_names: list[str]) -> dict[int, float] | None:
    """The recipe's ``class_weight`` by class index, as Keras' ``fit`` takes it.

    Args:
        class_weight: None, ``"balanced"`` or ``{class name or index: weight}``.
        data: The pipeline (``"balanced"`` reads its per-class training counts).
        class_names: The data's classes in label order.

    Returns:
        ``{index: weight}`` for every class (1.0 for a class a dict leaves out), or None.

    Raises:
        ValueError: For a class the data does not have, or ``"balanced"`` with data that
            has no per-class training counts.
    """
    if class_weight is None:
        return None
    if class_weight == "balanced":
        from pipelines import balanced_class_weights

        train = (getattr(data, "counts", None) or {}).get("train")
        if not isinstance(train, dict):
            raise ValueError("class_weight='balanced' needs the training images per class "
                             "(data.counts['train'] = {class name: count}); this data does "
                             "not say them. Pass a dict of class to weight instead.")
        return balanced_class_weights([train.get(name, 0) for name in class_names])
    weights = {i: 1.0 for i in range(len(class_names))}
    for key, weight in class_weight.items():
        if str(key) in class_names:
            weights[class_names.index(str(key))] = weight
        elif str(key).isdigit() and int(key) < len(class_names):
            weights[int(key)] = weight
        else:
            raise ValueError(f"class_weight names the class {key!r}, which the data does not "
                             f"have; its classes are {', '.join(class_names[:20])}.")
    return weights


def default_run_dir(model_name: str, data) -> Path:
    """Where a run goes without ``out_dir``: ``runs/<model>-<data folder>``."""
    if not isinstance(data, (str, os.PathLike)):
        return Path("runs") / f"{model_name}-data"
    table = Path(data).suffix.lower() in TABLE_SUFFIXES
    return Path("runs") / f"{model_name}-{Path(data).stem if table else Path(data).name}"


# What an unfinished run leaves; --overwrite sets a directory holding any of them aside.
_RUN_FILES = (rundir.START_FILE, STATE_FILE, BACKUP_DIR, rundir.HISTORY_FILE)


def _open_run_dir(run_dir: Path, data_root: Path | None, overwrite: bool,
                  stack: contextlib.ExitStack) -> None:
    """Creates and locks the run directory, refusing one inside the data and a finished run.

    With ``overwrite``, a directory holding a run (finished or not) is set aside, renamed.
    """
    run_dir = run_dir.resolve()
    if data_root is not None:
        root = data_root.resolve()
        if run_dir == root or root in run_dir.parents:
            raise ValueError(f"The run directory {run_dir} is inside the data folder {root}; "
                             "choose an out_dir outside it, so the images are never touched.")
    lock = stack.enter_context(rundir.locked(run_dir))
    try:
        info = rundir.read_info(run_dir)
    except ValueError as error:
        # An unreadable run.json did not come from a finished run: resume over it.
        log.warning("%s", error)
        info = None
    finished = (info or {}).get("status") == "finished"
    if finished and not overwrite:
        raise FileExistsError(
            f"{run_dir} already holds a finished run. Pass overwrite=True "
            "(--overwrite) to start again (the old run is kept beside it, renamed), "
            "or choose another out_dir.")
    if overwrite and (finished or any((run_dir / name).exists() for name in _RUN_FILES)):
        log.warning("Moved the previous run to %s.", lock.set_aside())


def _start_record(model_name: str, weights, recipe: Recipe, data, table: dict,
                  store: str | os.PathLike | None = None) -> dict:
    """What a run starts with, for the resume guard: model, weights, recipe, data."""
    if isinstance(data, (str, os.PathLike)):
        fingerprint = _data_fingerprint(images_root(data, table))
        if table:
            # The table's rows are the labels: an edited table is other data.
            fingerprint += "-" + hashlib.sha256(Path(data).read_bytes()).hexdigest()[:16]
        described = {"root": str(Path(data).resolve()), "fingerprint": fingerprint,
                     **{k: v for k, v in table.items() if v is not None}}
        if store is not None:
            from pipelines.store import manifest_hash, read_manifest

            read_manifest(store)  # a folder that is no store is refused here, by name
            # Another store of the same folder (other size, quality or split) is other data.
            described["store_hash"] = manifest_hash(store)
    else:
        manifest = getattr(data, "manifest", None)
        shape = {"class_names": list(getattr(data, "class_names", []) or []),
                 "counts": getattr(data, "counts", None), "manifest": manifest,
                 "batch_size": getattr(data, "batch_size", None)}
        described = {"root": str(getattr(data, "root", None) or "given by the caller"),
                     "fingerprint": hashlib.sha256(json.dumps(
                         shape, sort_keys=True, default=str).encode()).hexdigest()[:16]}
    return _jsonable({"model": model_name, "weights": weights,
                      "recipe": dataclasses.asdict(recipe), "data": described})


def _guard_resume(run_dir: Path, record: dict, resume: str | None) -> list:
    """Checks an interrupted run's start record against this call's.

    Returns:
        The start record to write: this call's, with the changes made on purpose so far
        (``resume="changed"``) under ``changes``, each
        ``{"epoch": n, "options": {name: [then, now]}}``.

    Raises:
        ValueError: When the options differ and ``resume`` is not ``"changed"``, or the
            model or weights differ (a run cannot go on with another network).
    """
    started = rundir.read_start(run_dir)
    if started is None:
        # A run from before the start record: resumed only on purpose (rundir says how).
        epoch = len(_read_history(run_dir / rundir.HISTORY_FILE).get("loss", []))
        return {**record, "changes": rundir.resume_without_start(run_dir, resume, _RUN_FILES,
                                                                 epoch)}
    changed = rundir.differences(started, record)
    # The data's root is shown, not compared: the same files moved are the same data.
    shown = {name: pair for name, pair in changed.items() if name != "data.root"}
    changes = list(started.get("changes", []))
    if not shown:
        return {**started, "changes": changes}
    listed = "; ".join(f"{name.removeprefix('recipe.')} {then!r} then, {now!r} now"
                       for name, (then, now) in shown.items())
    if "data.fingerprint" in shown and "data.root" in changed:
        listed += f" (data folder {changed['data.root'][0]} then)"
    network = {"model", "weights"} & set(shown)
    fresh = ("Start afresh with overwrite=True (--overwrite), which keeps the old run "
             "beside it, renamed, or choose another out_dir (--out)")
    if network or resume != "changed":
        on_purpose = ("" if network else ", or continue it with these options on purpose "
                      "with resume='changed' (--resume-changed), recorded in run.json")
        raise ValueError(f"{run_dir} holds an interrupted run that started with other "
                         f"options: {listed}. {fresh}{on_purpose}.")
    epoch = len(_read_history(run_dir / rundir.HISTORY_FILE).get("loss", []))
    changes.append({"epoch": epoch, "options": {k: list(v) for k, v in shown.items()}})
    log.warning("Resuming %s at epoch %d with changed options: %s.", run_dir, epoch, listed)
    return {**record, "changes": changes}


def step_batch(recipe: Recipe, given_data: bool) -> int:
    """The images per replica of one step: the update's batch split ``accumulate_steps`` ways.

    Raises:
        ValueError: When zoo builds the pipeline and the batch does not split evenly.
    """
    steps = recipe.accumulate_steps
    if given_data or steps == 1:
        return recipe.batch_size
    if recipe.batch_size % steps:
        raise ValueError(
            f"batch_size {recipe.batch_size} does not split into accumulate_steps={steps} "
            f"equal steps; choose a batch_size that is a multiple of {steps} (such as "
            f"{max(steps, recipe.batch_size // steps * steps)}) or another accumulate_steps.")
    return recipe.batch_size // steps


def _refuse_store_without_folder(store, data, table: dict, options: dict) -> None:
    """A store goes with the folder it was prepared from, and fixes the split it holds."""
    if store is None:
        return
    if not isinstance(data, (str, os.PathLike)) or table:
        raise ValueError(f"store={str(store)!r} goes with the image folder it was prepared "
                         f"from as the data; got {data!r}. Pass that folder's path as the "
                         "data (a label table or a built pipeline cannot take a store).")
    fixed = [f"{name}={options[name]!r}" for name in ("validation_split", "dedupe")
             if options.get(name) is not None]
    if options.get("sampling") not in (None, "natural"):
        fixed.append(f"sampling={options['sampling']!r}")
    if fixed:
        raise ValueError(f"{' and '.join(fixed)} cannot apply to the prepared store "
                         f"{str(store)!r}: its split and checks were fixed when it was "
                         "written, and it reads every training image once per epoch. Leave "
                         "them out, or prepare a store with that validation_split "
                         "(pipelines.prepare / zoo prepare --validation-split).")


def _load_data(data, model_name: str, weights, recipe: Recipe, global_batch: int,
               run_dir: Path, options: dict, table: dict | None = None,
               store: str | os.PathLike | None = None):
    """The pipeline zoo builds from a folder, table or store, or the caller's, and its root."""
    if isinstance(data, (str, os.PathLike)):
        import pipelines

        if store is not None:
            data_set = pipelines.from_folder(Path(data), store=store, model=model_name,
                                             weights=weights, batch_size=global_batch,
                                             seed=recipe.seed, augment=recipe.augment)
            # run.json records the split the store holds, not the recipe's default.
            recipe.validation_split = data_set.manifest["validation_split"]
            return data_set, Path(data)

        common = dict(model=model_name, weights=weights, batch_size=global_batch,
                      seed=recipe.seed, augment=recipe.augment,
                      validation_split=recipe.validation_split, sampling=recipe.sampling,
                      dedupe=recipe.dedupe, out_dir=run_dir)
        if table:
            return read_table(data, table, **common), images_root(data, table)
        return pipelines.from_folder(Path(data), **common), Path(data)
    for name in ("validation_split", "dedupe"):
        if options.get(name) is not None:
            # Silently training with the caller's split would contradict what was asked.
            raise ValueError(
                f"{name}={options[name]!r} applies when finetune builds the pipeline from a "
                f"folder path; this data was built by the caller. Pass {name} to "
                "pipelines.from_folder (or from_csv) instead.")
    return data, (Path(data.root) if getattr(data, "root", None) else None)


def _data_geometry(data, model_name: str, weights) -> Geometry:
    """The geometry the data used; for data that does not say, the model's at its size."""
    recorded = getattr(data, "geometry", None)
    if isinstance(recorded, Geometry):
        return recorded
    import zoo

    height, width, channels = data.train.element_spec[0].shape[1:]
    return zoo.geometry(model_name, weights, image_size=(int(height), int(width)),
                        channels=int(channels))


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


@contextlib.contextmanager
def _global_policy(policy: str):
    """Keras' global precision policy set to ``policy`` inside, restored after."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _say(verbose: int | str, message: str) -> None:
    # Where and when Keras prints its own progress (stdout, unless interactive logging is
    # off), so Python-API users see it too: the "zoo" logger has no handler at INFO unless
    # the program adds one.
    if verbose != 0 and keras.config.is_interactive_logging_enabled():
        print(message, flush=True)
    else:
        log.info(message)


def _announce(setup: _Setup, model_name: str, policy: str, verbose: int | str,
              accumulate: int = 1) -> None:
    """One line on the strategy, batch and precision; one more without validation."""
    # The batch of the dataset is the global one: tf.distribute splits it between replicas.
    data_batch = getattr(setup.data, "batch_size", None)
    batch_text = f"global batch {data_batch}" if data_batch else "batches as the data has them"
    if accumulate > 1:
        batch_text += (f" per step, {accumulate} steps per weight update (an update's batch "
                       f"{data_batch * accumulate})" if data_batch else
                       f", {accumulate} per weight update")
    _say(verbose, f"Training {model_name} on {len(setup.class_names)} classes: "
                  f"{distribute.describe_strategy(setup.strategy)}, {batch_text}, {policy}.")
    if setup.val is None:
        _say(verbose, "No validation split: training on every image without validation; "
                      "the model of the last epoch is kept (no early stopping, no best-epoch "
                      "selection) and the report has no validation metrics.")


# ---------------------------------------------------------------------------- the model


def _final_model(model: keras.Model, setup: _Setup, model_name: str,
                 recipe: Recipe) -> keras.Model:
    """The model the run keeps (the best checkpoint, or the last epoch's), in float32.

    Mixed precision is a training speed-up; the model a run leaves must give the same
    answers on any hardware, and its variables are float32 already.
    """
    best = setup.write_dir / rundir.MODEL_FILE
    if best.exists():
        model = rundir.load_model_file(best)  # its recorded sha256 checked first
    keras.mixed_precision.set_global_policy("float32")
    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model
    norm = model.get_layer("normalize").get_config()
    copy = build(model_name, num_classes=len(setup.class_names),
                 input_shape=setup.image_shape, dropout=recipe.dropout,
                 classifier_activation=_activation(setup.multi_label),
                 preprocessing={k: norm[k] for k in ("mean", "std", "channel_order")})
    copy.set_weights(model.get_weights())
    return copy


def _refuse_short_accumulation(setup: _Setup, recipe: Recipe) -> None:
    """Raises ValueError when an epoch has fewer steps than one weight update takes."""
    steps = recipe.accumulate_steps
    if steps > 1 and setup.steps is not None and setup.steps < steps:
        raise ValueError(
            f"accumulate_steps={steps} takes {steps} steps per weight update, but an epoch "
            f"of this training split has {setup.steps}; lower accumulate_steps to at most "
            f"{setup.steps} (or use more images).")


def levers(setup: _Setup, recipe: Recipe, history: dict) -> dict:
    """``run.json``'s ``accumulation`` and ``ema`` records (each None when off).

    Args:
        setup: The run's setup (the step batch is the data's).
        recipe: The recipe.
        history: Per-epoch metrics; under EMA ``val_<metric>`` are the averaged weights'
            and ``val_<metric>_raw`` the raw ones'.

    Returns:
        ``{"accumulation": ..., "ema": ...}``. The EMA record gives both figures at the
        kept epoch (the averaged weights' best) and the raw weights' best over all epochs.
    """
    step = getattr(setup.data, "batch_size", None)
    accumulation = None
    if recipe.accumulate_steps > 1:
        accumulation = {"steps": recipe.accumulate_steps, "step_batch": step,
                        "update_batch": step * recipe.accumulate_steps if step else None}
    ema = None
    if recipe.ema is not None:
        name = monitored(setup.multi_label)
        averaged, raw = history.get(name) or [], history.get(f"{name}_raw") or []
        best = max(range(len(averaged)), key=averaged.__getitem__) if averaged else None
        ema = {"momentum": recipe.ema,
               "momentum_per_step": recipe.ema ** (1 / recipe.accumulate_steps),
               "monitor": name,
               "kept_epoch": None if best is None else best + 1,
               "averaged": averaged[best] if best is not None else None,
               "raw_same_epoch": raw[best] if best is not None and best < len(raw) else None,
               "raw_best": max(raw) if raw else None}
    return {"accumulation": accumulation, "ema": ema}


def _calibration(setup: _Setup, model: keras.Model, recipe: Recipe) -> dict:
    """run.json's ``calibration``: a temperature fitted on the validation split, or why not."""
    from zoo.recipes import calibrate

    if recipe.calibrate == "none":
        return calibrate.not_calibrated("calibrate='none' (--calibrate none)")
    if setup.val is None:
        return calibrate.not_calibrated("no validation split to fit a temperature on")
    if setup.multi_label:
        return calibrate.not_calibrated(
            "multi-label: the per-class thresholds were chosen on the uncalibrated outputs")
    y_true, probs, _, _ = reports.collect_predictions(model, setup.data.val, max_images=0)
    return calibrate.calibration_record(probs, y_true)


def _activation(multi_label: bool) -> str | None:
    # Multi-label: logits, the sigmoid in the loss and in the exported signatures.
    return None if multi_label else "softmax"


def _read_history(path: Path) -> dict[str, list[float]]:
    """The per-epoch metrics of the run's history file, across resumed runs."""
    history: dict[str, list[float]] = {}
    for _, row in sorted(read_history_rows(path).items()):
        for key, value in row.items():
            history.setdefault(key, []).append(value)
    return history


# ------------------------------------------------------------------------ the run dir


def _write_run_dir(setup: _Setup, model: keras.Model, model_name: str, weights,
                   recipe: Recipe, policy: str, metrics: dict) -> None:
    """Writes the run directory through :mod:`zoo.rundir` (the chief only)."""
    if not setup.chief:
        shutil.rmtree(setup.write_dir, ignore_errors=True)
        return
    has_val = setup.val is not None
    info = _jsonable({
        "status": "finished",
        "model": model_name,
        "weights": weights,
        "weights_file": setup.weights_file,
        "class_names": setup.class_names,
        "geometry": setup.geometry.as_dict(),
        "preprocessing": model.get_layer("normalize").get_config(),
        "recipe": dataclasses.asdict(recipe),
        "replicas": setup.strategy.num_replicas_in_sync,
        "precision": policy,
        # The report re-measures the kept model in float32 (the model saved and served);
        # the history's per-epoch figures were measured by fit under the training policy.
        "measured": {"report": "float32", "history": policy},
        "strategy": distribute.strategy_name(setup.strategy),
        "data": {"root": str(setup.data_root) if setup.data_root else None,
                 "fingerprint": _data_fingerprint(setup.data_root),
                 "counts": getattr(setup.data, "counts", {}),
                 "skipped": len(getattr(setup.data, "skipped", []) or []),
                 # A run read from a prepared store names it and its manifest's hash; the
                 # root above stays the source folder, so evaluate and export see a folder run.
                 **({key: setup.data.manifest.get(key) for key in ("store", "store_hash")}
                    if getattr(setup.data, "source", None) == "store" else {})},
        "val_accuracy": metrics["val_accuracy"],
        "validation": "held out" if has_val else "none",
        "kept": f"best {monitored(setup.multi_label)}" if has_val else "last epoch",
        "class_weights": setup.class_weight,
        "multi_label": setup.multi_label,
        "calibration": metrics.get("calibration"),
        "accumulation": metrics.get("accumulation"),
        "ema": metrics.get("ema"),
        **({"val_map": metrics.get("val_map"),
            "thresholds": metrics.get("thresholds") or [0.5] * len(setup.class_names),
            "thresholds_from": "validation split (highest F1 per class; 0.5 without a "
                               "positive)" if has_val else "0.5 (no validation split)"}
           if setup.multi_label else {}),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        **({"changes": setup.changes} if setup.changes else {}),
    })
    card = reports.model_card(info, metrics)
    for key in ("model", "class_names", "geometry"):
        del info[key]  # write_run's own arguments
    rundir.write_run(setup.write_dir, model=model, model_name=model_name,
                     class_names=setup.class_names, geometry=setup.geometry, card=card,
                     samples=_sample_files(setup.data), **info)
    report_page.write_page(setup.write_dir)
    shutil.rmtree(setup.write_dir / BACKUP_DIR, ignore_errors=True)
    # Stage 1's cached features serve its resumes only; they can be gigabytes (VGG).
    shutil.rmtree(setup.write_dir / FEATURES_DIR, ignore_errors=True)
    # run.json says what the run was now; the start record guarded only its resumes.
    (setup.write_dir / rundir.START_FILE).unlink(missing_ok=True)


def _data_fingerprint(root: Path | None) -> str:
    if root is None or not root.exists():
        return "n/a"
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\n".encode())
    return digest.hexdigest()[:16]


def _sample_files(data, count: int = 8) -> list[Path]:
    """A few validation images (one per class first) for the export's self-check.

    Without a validation split they are training images: the self-check compares the
    export with the Keras model, it does not measure accuracy.
    """
    files = list(getattr(data, "val_files", None) or getattr(data, "train_files", None) or [])
    firsts, seen = [], set()
    for path, label in files:
        if label not in seen:
            seen.add(label)
            firsts.append(path)
    return [Path(p) for p in (firsts + [p for p, _ in files if p not in firsts])[:count]]


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


# ------------------------------------------------------------------------------ lr-find


def find_learning_rate(model_name: str, data, *, images: str | os.PathLike | None = None,
                       label_delimiter: str | None = None,
                       path_column: str | None = None, label_column: str | None = None,
                       split_column: str | None = None, suffix: str | None = None,
                       store: str | os.PathLike | None = None,
                       weights: str | None = "imagenet",
                       out_dir: str | os.PathLike | None = None, steps: int = 100,
                       **recipe_options):
    """Runs the learning-rate range test for the stage that would be trained first.

    With weights, the backbone is frozen as in stage 1 (the rate found is ``head_lr``);
    without, everything trains (``scratch_lr``).

    Args:
        model_name: A registered model name.
        data: A folder of images, a label table (``.csv`` / ``.tsv``) or a pipelines
            dataset object.
        images: With a label table: the folder its paths are relative to.
        label_delimiter: With a label table: splits a label cell into several labels.
        path_column: With a label table: the column of image paths (default ``path``).
        label_column: With a label table: the column of labels (default ``label``).
        split_column: With a label table: a column of train / val / test values, used
            as the split instead of ``validation_split``.
        suffix: With a label table: appended to bare ids (``".jpg"``).
        store: A prepared store of the folder ``data``, read instead of its files (see
            :func:`finetune`).
        weights: Pretrained weights, or None.
        out_dir: Where the plot ``lr_find.png`` goes; defaults to ``runs/lr-find-<model>``.
        steps: Batches to run.
        **recipe_options: Any field of :class:`Recipe`.

    Returns:
        A :class:`zoo.recipes.lr_find.LRFindResult`.
    """
    recipe = make_recipe(model_name, **recipe_options)
    keras.utils.set_random_seed(recipe.seed)
    out = Path(out_dir or Path("runs") / f"lr-find-{model_name}")
    table = table_options(data, images=images, label_delimiter=label_delimiter,
                          path_column=path_column, label_column=label_column,
                          split_column=split_column, suffix=suffix)
    _refuse_store_without_folder(store, data, table, recipe_options)
    with contextlib.ExitStack() as stack:
        _open_run_dir(out, images_root(data, table), False, stack)
        # The range test trains only: a pipeline without a validation split works as it is.
        data, _ = _load_data(data, model_name, weights, recipe, recipe.batch_size, out,
                             recipe_options, table, store)
        return _range_test(model_name, data, weights, recipe, steps, out)


def _range_test(model_name: str, data, weights, recipe: Recipe, steps: int, out: Path):
    """Builds the model frozen as its first stage trains and runs the range test."""
    from zoo.recipes.lr_find import lr_find

    num_classes = len(data.class_names)
    multi_label = bool(getattr(data, "multi_label", False))
    model = build(model_name, weights=weights, num_classes=num_classes,
                  input_shape=tuple(data.train.element_spec[0].shape[1:]),
                  dropout=recipe.dropout, classifier_activation=_activation(multi_label))
    set_trainable(model, layer_stages(model, model_name),
                  min_stage=0 if weights is None else None, freeze_bn=weights is not None)
    return lr_find(model, one_hot(data.train, num_classes), steps=steps,
                   loss=make_loss(recipe, multi_label), plot_path=out / "lr_find.png")
