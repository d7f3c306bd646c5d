"""``zoo evaluate``: the same metrics and plots for any model on any image folder."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from zoo import rundir
from zoo.recipes import reports

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
                    "in the per-class figures and count as F1 0 in macro_f1; add images of "
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
             out_dir: str | os.PathLike | None = None, weights: str | None = None,
             batch_size: int = 32) -> dict:
    """Measures a model on a folder with the model's own evaluation transform.

    The transform is the run's (the geometry its data used), else the one of the model's
    weights (``zoo.geometry``). Class folders are matched to the model's classes by name,
    or, for ImageNet models, by WordNet id (``n01440764/``), as ILSVRC2012's validation set
    is usually laid out; so a pretrained weight set's published top-1/top-5 can be
    re-measured.

    Args:
        model_or_run: A run directory, a ``.keras`` file, or a zoo model name (with
            ``weights``).
        data: ``root/<class>/*`` (or ``root/val/<class>/*``).
        out_dir: Where ``metrics.json`` and the plots go; defaults to
            ``runs/eval-<model>-<folder>``.
        weights: With a model name: a catalog tag or a weights file.
        batch_size: Batch size.

    Returns:
        The metrics (as in a run's ``metrics.json``) plus ``out_dir``, ``skipped`` and,
        for catalog weights, the publisher's ``reference`` figures.
    """
    import pipelines
    from pipelines.scan import class_folders

    opened = rundir.open_model(model_or_run, weights=weights)
    if opened.class_names is None:
        opened.class_names = [str(i) for i in range(opened.model.output_shape[-1])]
    root, folders = class_folders(Path(data))
    if root != Path(data):
        log.info("Evaluating on %s.", root)
    paths, labels, passed_over = _labelled_files(root, folders, opened)
    geometry = opened.geometry
    files = pipelines.from_files(paths, labels, image_size=geometry.image_size,
                                 crop_fraction=geometry.crop_fraction,
                                 interpolation=geometry.interpolation,
                                 channels=geometry.channels, batch_size=batch_size)
    if not files.paths:
        raise ValueError(f"No usable images under {root}.")
    kept = set(files.paths)
    _warn_missing_classes(opened, [lab for p, lab in zip(paths, labels) if str(p) in kept],
                          root)
    name = Path(str(model_or_run)).name.replace(".keras", "")
    out = Path(out_dir or Path("runs") / f"eval-{name}-{Path(data).name}")
    out.mkdir(parents=True, exist_ok=True)
    metrics = reports.write_report(out, opened.model, files.dataset, opened.class_names)
    skipped = [[str(p), r] for p, r in passed_over] + [list(s) for s in files.skipped]
    metrics.update(out_dir=str(out), skipped=skipped, model=opened.description,
                   reference=opened.reference)
    (out / rundir.METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    return metrics
