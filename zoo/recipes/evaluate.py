"""``zoo evaluate``: the same metrics, plots and report page for any model on any image folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from zoo import rundir
from zoo.recipes import report_page, reports

log = logging.getLogger("zoo")


def _label_of_folder(folder: str, opened: rundir.Opened) -> int | None:
    if folder in opened.class_names:
        return opened.class_names.index(folder)
    if opened.wnids and folder in opened.wnids:
        return opened.wnids.index(folder)
    return None


def _labelled_files(root: Path, folders: list[Path], opened: rundir.Opened):
    """Every file of the class folders with its label, and what the scanner passed over.

    A class folder without images is not a class, as in training: it is passed over
    (reported), not matched against the model's classes.
    """
    from pipelines.scan import walk

    paths, labels, passed_over, used = [], [], [], []
    for folder in folders:
        found = []
        for path, reason in walk(folder):
            if reason is None:
                found.append(Path(path))
            else:
                passed_over.append((path, reason))
        if not found:
            passed_over.append((str(folder), "class folder without usable images; not a class"))
            continue
        used.append(folder)
        paths += found
        labels += [_label_of_folder(folder.name, opened)] * len(found)
    empty = sorted(set(folders) - set(used))
    if empty:
        log.warning("Skipped %d class folder(s) of %s without images (not classes, as in "
                    "training): %s.", len(empty), root, ", ".join(f.name for f in empty[:10]))
    _check_folders(root, used, opened)
    return paths, labels, passed_over


def _warn_missing_classes(opened: rundir.Opened, labels: list[int], root: Path) -> None:
    """Warns about the model's classes that have no image in the folder (not measured)."""
    if opened.wnids:
        return  # an ImageNet model: a folder of a few classes is the usual case
    present = set(labels)
    missing = [name for i, name in enumerate(opened.class_names) if i not in present]
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        log.warning("%d class(es) of %s have no images under %s: %s. They have support 0 "
                    "in the per-class figures and are left out of macro_f1; add images of "
                    "them to measure them.",
                    len(missing), opened.description, root, shown)


def _check_folders(root: Path, folders: list[Path], opened: rundir.Opened) -> None:
    unknown = [f.name for f in folders if _label_of_folder(f.name, opened) is None]
    if unknown:
        shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        known = ", ".join(opened.class_names[:20]) + (
            " ..." if len(opened.class_names) > 20 else "")
        raise ValueError(
            f"{len(unknown)} class folder(s) of {root} are not classes of "
            f"{opened.description}: {shown}. Its classes are: "
            f"{known}. Rename the folders to class names (or WordNet ids for ImageNet models).")


def evaluate(model_or_run: str | os.PathLike, data: str | os.PathLike, *,
             images: str | os.PathLike | None = None, label_delimiter: str | None = None,
             path_column: str | None = None, label_column: str | None = None,
             suffix: str | None = None,
             out_dir: str | os.PathLike | None = None, weights: str | None = None,
             batch_size: int = 32, tta: str | None = None, calibrate: bool = True) -> dict:
    """Measures a model on a folder or a label table with the model's own eval transform.

    The transform is the run's (the geometry its data used), else the one of the model's
    weights (``zoo.geometry``). Class folders are matched to the model's classes by name,
    or, for ImageNet models, by WordNet id (``n01440764/``), as ILSVRC2012's validation set
    is usually laid out; so a pretrained weight set's published top-1/top-5 can be
    re-measured. A label table's labels are matched by name. A multi-label run is measured
    as in training (mAP, F1 micro and macro, per-class AP) at the thresholds its run
    chose on its validation split (0.5 for a model without a run).

    Args:
        model_or_run: A run directory, a ``.keras`` file, or a zoo model name (with
            ``weights``).
        data: ``root/<class>/*`` (or ``root/val/<class>/*``), or a label table (``.csv``
            / ``.tsv``, read by ``pipelines.from_csv``; every row is measured).
        images: With a label table: the folder its paths are relative to (default: the
            table's folder).
        label_delimiter: With a label table: splits a label cell into several labels.
        path_column: With a label table: the column of image paths (default ``path``).
        label_column: With a label table: the column of labels (default ``label``).
        suffix: With a label table: appended to bare ids (``".jpg"``).
        out_dir: Where ``metrics.json`` and the plots go; defaults to
            ``runs/eval-<model>-<folder or table>``.
        weights: With a model name: a catalog tag or a weights file.
        batch_size: Batch size.
        tta: Test-time augmentation, one of ``zoo.recipes.tta.TTA_MODES``: ``"flip"``
            averages the probabilities of the crop and its mirror, ``"five_crop"`` those
            of the four corner crops and the centre crop of the resized image (before
            its centre crop), ``"flip+five_crop"`` those ten views. The result's ``tta``
            gives the accuracy with and without it. Single-label models only.
        calibrate: Measure the run's temperature (``run.json`` ``calibration``) on this
            data: the result's ``calibration`` gives the ECE with and without it.

    Returns:
        The metrics (as in a run's ``metrics.json``, of the plain model) plus ``out_dir``,
        ``skipped``, ``evaluated_on`` (``data``), for catalog weights the publisher's
        ``reference`` figures, and with ``tta`` or a calibrated run, ``tta`` and
        ``calibration``. ``out_dir`` also gets the report page (``report.html``).
    """
    from zoo.recipes import tta as tta_module

    tta = tta_module.check_tta(tta)
    from zoo.recipes.finetune import table_options

    table = table_options(data, images=images, label_delimiter=label_delimiter,
                          path_column=path_column, label_column=label_column, suffix=suffix)
    opened = rundir.open_model(model_or_run, weights=weights)
    if opened.multi_label and tta != "none":
        raise ValueError(f"tta={tta!r} is for single-label models; "
                         f"{opened.description} is multi-label (use tta='none').")
    if opened.class_names is None:
        opened.class_names = [str(i) for i in range(opened.model.output_shape[-1])]
    name = Path(str(model_or_run)).name.replace(".keras", "")
    shown = Path(data).stem if table else Path(data).name
    out = Path(out_dir or Path("runs") / f"eval-{name}-{shown}")
    if table:
        files, labels, passed_over = _table_files(Path(data), table, opened, batch_size, out)
    else:
        files, labels, passed_over = _folder_files(Path(data), opened, batch_size)
    out.mkdir(parents=True, exist_ok=True)
    thresholds = opened.thresholds or [0.5] * len(opened.class_names)
    metrics = reports.write_report(out, opened.model, _labelled(files, labels, opened,
                                                                batch_size),
                                   opened.class_names, multi_label=opened.multi_label,
                                   thresholds=thresholds if opened.multi_label else None)
    skipped = [[str(p), r] for p, r in passed_over] + [list(s) for s in files.skipped]
    metrics.update(out_dir=str(out), skipped=skipped, model=opened.description,
                   reference=opened.reference, evaluated_on=str(data))
    plain = _labelled(files, labels, opened, batch_size)
    # The five-crop modes take views cut from the resized image, not the eval crops.
    viewed = (_labelled(files, labels, opened, batch_size, five_crop=True)
              if tta_module.needs_views(tta) else plain)
    metrics.update(_levers(opened, plain, viewed, tta, calibrate))
    rundir.write_json(out / rundir.METRICS_FILE, metrics)
    # The same page a training run gets, so a folder evaluated reads like a run's report.
    report_page.write_page(out)
    return metrics


def _temperature(opened: rundir.Opened) -> float | None:
    """The run's fitted temperature, or None (no run, not calibrated)."""
    info = opened.run.info if opened.run is not None else {}
    record = info.get("calibration") or {}
    return record.get("temperature") if record.get("method") == "temperature" else None


def _levers(opened: rundir.Opened, dataset, viewed, tta: str, calibrate: bool) -> dict:
    """TTA accuracy with and without, and the ECE with and without the run's temperature.

    ``dataset`` yields eval crops and labels; ``viewed`` the views ``tta`` averages over
    (``dataset`` itself unless ``tta`` is a five-crop mode).
    """
    from zoo.recipes import calibrate as cal
    from zoo.recipes import tta as tta_module

    temperature = _temperature(opened) if calibrate else None
    if opened.multi_label or (tta == "none" and temperature is None):
        return {}
    y, plain = tta_module.collect(opened.model, dataset, "none")
    out: dict = {}
    if tta != "none":
        _, augmented = tta_module.collect(opened.model, viewed, tta)
        out["tta"] = {"mode": tta, "views": tta_module.VIEWS[tta],
                      "accuracy": float((augmented.argmax(1) == y).mean()),
                      "accuracy_without": float((plain.argmax(1) == y).mean())}
    if temperature is not None:
        scaled = cal.scale(plain, temperature)
        out["calibration"] = {
            "temperature": temperature, "images": int(len(y)),
            "ece_before": cal.expected_calibration_error(plain, y),
            "ece_after": cal.expected_calibration_error(scaled, y), "bins": cal.BINS,
            "reliability_before": cal.reliability(plain, y),
            "reliability_after": cal.reliability(scaled, y)}
    return out


def _eval_files(paths: list, opened: rundir.Opened, batch_size: int):
    import pipelines

    geometry = opened.geometry
    return pipelines.from_files(paths, image_size=geometry.image_size,
                                crop_fraction=geometry.crop_fraction,
                                interpolation=geometry.interpolation,
                                channels=geometry.channels, batch_size=batch_size)


def _folder_files(data: Path, opened: rundir.Opened, batch_size: int):
    """A folder's files through the eval path, their labels and what was passed over."""
    from pipelines.scan import class_folders

    root, folders = class_folders(data)
    if root != data:
        log.info("Evaluating on %s.", root)
    paths, labels, passed_over = _labelled_files(root, folders, opened)
    files = _eval_files(paths, opened, batch_size)
    if not files.paths:
        raise ValueError(f"No usable images under {root}.")
    label_of = {str(p): label for p, label in zip(paths, labels)}
    kept = [label_of[p] for p in files.paths]
    _warn_missing_classes(opened, kept, root)
    return files, kept, passed_over


def _table_files(data: Path, table: dict, opened: rundir.Opened, batch_size: int,
                 out: Path):
    """Every row of a label table through the eval path, labels by the model's classes."""
    from zoo.recipes.finetune import read_table

    out.mkdir(parents=True, exist_ok=True)  # the split manifest goes there
    rows = read_table(data, table, validation_split=0, augment="none", out_dir=out,
                              imbalance_warning=None, cache=False)
    if rows.multi_label and not opened.multi_label:
        raise ValueError(f"{data} is a multi-label table (label_delimiter="
                         f"{table.get('label_delimiter')!r}), but {opened.description} is a "
                         "single-label model; evaluate a multi-label run on it.")
    unknown = sorted(set(rows.class_names) - set(opened.class_names))
    if unknown:
        raise ValueError(f"{data} has labels that are not classes of {opened.description}: "
                         f"{', '.join(unknown[:10])}. Its classes are: "
                         f"{', '.join(opened.class_names[:20])}.")
    index = [opened.class_names.index(name) for name in rows.class_names]
    listed = rows.train_files + rows.val_files + rows.test_files
    label_of = {str(Path(p)): (tuple(index[c] for c in label) if rows.multi_label
                               else index[label]) for p, label in listed}
    files = _eval_files([p for p, _ in listed], opened, batch_size)
    if not files.paths:
        raise ValueError(f"No usable images in {data}.")
    return files, [label_of[p] for p in files.paths], rows.skipped


def _labelled(files, labels: list, opened: rundir.Opened, batch_size: int,
             five_crop: bool = False):
    """The files' pixel batches with their labels: indices, or multi-hot for multi-label.

    With ``five_crop``, each image's five-crop views ``[B, 5, H, W, C]`` instead of its
    eval crop (``pipelines.EvalFiles.five_crops``).
    """
    import numpy as np
    import tensorflow as tf

    if opened.multi_label:
        y = np.zeros((len(labels), len(opened.class_names)), "float32")
        for row, label in enumerate(labels):
            y[row, list(label) if isinstance(label, tuple) else [label]] = 1.0
    else:
        y = np.asarray(labels, "int32")
    pixels = files.five_crops() if five_crop else files.dataset
    return tf.data.Dataset.zip((pixels,
                                tf.data.Dataset.from_tensor_slices(y).batch(batch_size)))
