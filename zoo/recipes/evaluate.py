"""``zoo evaluate``: the same metrics and plots for any model on any image folder."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import keras

from zoo.recipes import reports

log = logging.getLogger("zoo")

_VAL_NAMES = ("val", "valid", "validation")


@dataclass
class _Subject:
    model: keras.Model
    class_names: list[str]
    wnids: list[str] | None
    image_size: tuple[int, int]
    channels: int
    crop_fraction: float
    interpolation: str
    description: str
    reference: dict


def _load_subject(model_or_run: str, weights: str | None) -> _Subject:
    from zoo.recipes.finetune import BEST_MODEL, RUN_FILE

    path = Path(model_or_run)
    if path.is_dir() or path.suffix == ".keras":
        run_dir = path if path.is_dir() else path.parent
        model_path = path / BEST_MODEL if path.is_dir() else path
        if not model_path.exists():
            raise FileNotFoundError(f"{path} is neither a .keras file nor a run directory "
                                    f"with {BEST_MODEL}.")
        model = keras.saving.load_model(model_path, compile=False)
        info = json.loads((run_dir / RUN_FILE).read_text()) if (run_dir / RUN_FILE).exists() \
            else {}
        height, width, channels = model.input_shape[1:]
        names = info.get("class_names")
        if names is None and (run_dir / "class_names.txt").exists():
            names = (run_dir / "class_names.txt").read_text().split("\n")[:-1]
        names = names or [str(i) for i in range(model.output_shape[-1])]
        return _Subject(model, list(names), None, (height, width), channels,
                        info.get("crop_fraction", 0.875), info.get("interpolation", "bilinear"),
                        str(model_path), {})
    import zoo
    from zoo import weights as weights_module
    from zoo.registry import get_spec

    spec = get_spec(model_or_run)
    if weights is None:
        raise ValueError(f"Evaluating the zoo model {model_or_run!r} needs weights "
                         "(--weights imagenet, another tag, or a file): a random network "
                         "has nothing to measure.")
    weight_set = weights_module.resolve(spec, weights)
    # Catalog weights say at which size they were evaluated; a local file does not.
    model = zoo.build(model_or_run, weights=weights,
                      input_shape=weight_set.input_size if weight_set.url else None)
    names, wnids = weight_set.class_names(), None
    imagenet = weight_set.labels == "imagenet-1k" or (
        names is None and model.output_shape[-1] == 1000)
    if imagenet:
        from zoo.data import imagenet_class_names, imagenet_wnids

        if names is None:
            log.info("The weights name no label set; their 1000 outputs are taken to be "
                     "ImageNet-1k's classes.")
        names, wnids = imagenet_class_names(), imagenet_wnids()
    names = names or [str(i) for i in range(model.output_shape[-1])]
    height, width, channels = model.input_shape[1:]
    reference = {k: getattr(weight_set, k) for k in ("top1", "top5", "metrics_source")}
    return _Subject(model, names, wnids, (height, width), channels, weight_set.crop_fraction,
                    weight_set.interpolation, f"{model_or_run} ({weight_set.tag})", reference)


def _class_folders(root: Path) -> tuple[Path, list[Path]]:
    for name in _VAL_NAMES:
        if (root / name).is_dir():
            log.info("Evaluating on %s.", root / name)
            root = root / name
            break
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"{root} has no class folders; evaluate needs root/<class>/<images>.")
    return root, folders


def _label_of_folder(folder: str, subject: _Subject) -> int | None:
    if folder in subject.class_names:
        return subject.class_names.index(folder)
    if subject.wnids and folder in subject.wnids:
        return subject.wnids.index(folder)
    return None


def evaluate(model_or_run: str | os.PathLike, data: str | os.PathLike, *,
             out_dir: str | os.PathLike | None = None, weights: str | None = None,
             batch_size: int = 32) -> dict:
    """Measures a model on a folder with the model's own evaluation transform.

    Class folders are matched to the model's classes by name, or, for ImageNet models, by
    WordNet id (``n01440764/``), as ILSVRC2012's validation set is usually laid out; so a
    pretrained weight set's published top-1/top-5 can be re-measured.

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

    subject = _load_subject(str(model_or_run), weights)
    root, folders = _class_folders(Path(data))
    unknown = [f.name for f in folders if _label_of_folder(f.name, subject) is None]
    if unknown:
        shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        known = ", ".join(subject.class_names[:20]) + (
            " ..." if len(subject.class_names) > 20 else "")
        raise ValueError(
            f"{len(unknown)} class folder(s) of {root} are not classes of "
            f"{subject.description}: {shown}. Its classes are: "
            f"{known}. Rename the folders to class names (or WordNet ids for ImageNet models).")
    paths, labels = [], []
    for folder in folders:
        label = _label_of_folder(folder.name, subject)
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.startswith((".", "_")):
                paths.append(path)
                labels.append(label)
    files = pipelines.from_files(paths, labels, image_size=subject.image_size,
                                 crop_fraction=subject.crop_fraction,
                                 interpolation=subject.interpolation,
                                 channels=subject.channels, batch_size=batch_size)
    if not files.paths:
        raise ValueError(f"No usable images under {root}.")
    name = Path(str(model_or_run)).name.replace(".keras", "")
    out = Path(out_dir or Path("runs") / f"eval-{name}-{Path(data).name}")
    out.mkdir(parents=True, exist_ok=True)
    metrics = reports.write_report(out, subject.model, files.dataset, subject.class_names)
    metrics.update(out_dir=str(out), skipped=[list(s) for s in files.skipped],
                   model=subject.description, reference=subject.reference)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
