"""The options every entry point shares, checked and resolved in one place.

``from_folder``, ``from_csv`` / ``from_dataframe`` and ``from_tfds`` take the same keywords
for geometry, augmentation, labels, batching, caching and where the manifest goes;
:func:`resolve_options` turns them into one :class:`Options`. The geometry is zoo's answer
for the model and its weights (``zoo.geometry``: caller > weights > spec), the one tie
between the pipelines and the model zoo.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zoo
from pipelines import augment as augment_module
from pipelines.augment import Plan
from pipelines.leakage import check_dedupe
from pipelines.sampling import check_sampling


@dataclass(frozen=True)
class Options:
    """The shared options of an entry point, resolved.

    Attributes:
        geometry: The eval geometry (``zoo.Geometry``) of the data.
        plan: The train augmentation.
        label_mode: ``"int"``, ``"categorical"`` or ``"multi_hot"`` (multi-label data).
        out_dir: Where the split manifest goes, or None.
        batch_size: Batch size.
        validation_split: Fraction held out when the source has no validation split.
        seed: Seed of the split, the shuffling and the augmentation.
        cache: True, False or a directory for file caches.
        deterministic: Fix the train order under parallel maps (None: the default).
        drop_remainder: Drop the last partial batch.
        imbalance_warning: Warn at this ratio of largest to smallest class, or None.
        sampling: ``"natural"`` or ``"balanced"`` (see :mod:`pipelines.sampling`).
        multi_label: Whether images may carry several classes (multi-hot labels).
        dedupe: What to do with validation / test images that duplicate training images:
            ``"warn"``, ``"drop"`` or ``"off"`` (see :mod:`pipelines.leakage`).
        dedupe_near: Whether that check also looks for near-duplicates (resized,
            re-encoded copies) with a perceptual hash, not only for identical files.
    """

    geometry: zoo.Geometry
    plan: Plan
    label_mode: str
    out_dir: str | os.PathLike | None
    batch_size: int
    validation_split: float
    seed: int
    cache: bool | str | os.PathLike
    deterministic: bool | None
    drop_remainder: bool
    imbalance_warning: float | None
    sampling: str = "natural"
    multi_label: bool = False
    dedupe: str = "warn"
    dedupe_near: bool = False

    def dataset_keywords(self, num_classes: int) -> dict:
        """The keywords of ``build_dataset`` that these options decide."""
        return dict(geometry=self.geometry, plan=self.plan, batch_size=self.batch_size,
                    num_classes=num_classes, label_mode=self.label_mode, seed=self.seed,
                    cache=self.cache, drop_remainder=self.drop_remainder)


def resolve_label_mode(label_mode: str | None, plan: Plan, multi_label: bool = False) -> str:
    """``label_mode``, or its default for ``plan`` (mixed labels need ``"categorical"``).

    Multi-label data has ``"multi_hot"`` labels, mixed or not: mixup and cutmix mix the
    multi-hot targets of two images, as timm does.
    """
    if multi_label:
        if label_mode not in (None, "multi_hot"):
            raise ValueError(f"Multi-label data has multi-hot labels; label_mode must be "
                             f"'multi_hot' or None, got {label_mode!r}.")
        return "multi_hot"
    if label_mode == "multi_hot":
        raise ValueError("label_mode='multi_hot' needs multi-label data: a label table read "
                         "with label_delimiter=... or multi_label=True (pipelines.from_csv).")
    if label_mode is None:
        return "categorical" if plan.soft_labels else "int"
    if label_mode not in ("int", "categorical"):
        raise ValueError(f"label_mode must be 'int' or 'categorical'; got {label_mode!r}.")
    if plan.soft_labels and label_mode != "categorical":
        raise ValueError(f"augment={plan.name!r} mixes labels, which needs "
                         "label_mode='categorical'.")
    return label_mode


def resolve_out_dir(out_dir: str | os.PathLike | None,
                    manifest_dir: str | os.PathLike | None) -> str | os.PathLike | None:
    """``out_dir`` or its other name ``manifest_dir``; both given must name one place."""
    if out_dir is not None and manifest_dir is not None and Path(out_dir) != Path(manifest_dir):
        raise ValueError(f"out_dir={str(out_dir)!r} and manifest_dir={str(manifest_dir)!r} "
                         "name different places; pass one of them.")
    return out_dir if out_dir is not None else manifest_dir


def resolve_options(
    *,
    model: str | None = None,
    weights: Any = None,
    image_size: Sequence[int] | int | None = None,
    crop_fraction: float | None = None,
    interpolation: str | None = None,
    channels: int | None = None,
    augment: Any = "standard",
    seed: int = 0,
    label_mode: str | None = None,
    batch_size: int = 32,
    validation_split: float = 0.2,
    out_dir: str | os.PathLike | None = None,
    manifest_dir: str | os.PathLike | None = None,
    cache: bool | str | os.PathLike = True,
    deterministic: bool | None = None,
    drop_remainder: bool = False,
    imbalance_warning: float | None = None,
    sampling: str = "natural",
    multi_label: bool = False,
    dedupe: str = "warn",
    dedupe_near: bool = False,
) -> Options:
    """Checks the shared options and fills in what they leave to the model and its weights.

    Args:
        model: A zoo model name, or None.
        weights: The model's weights (a catalog tag, a file, or None): their eval
            transform gives the geometry the caller leaves out.
        image_size: Output ``(height, width)`` or one int.
        crop_fraction: Eval centre-crop fraction.
        interpolation: Resize method.
        channels: 3 (RGB) or 1 (grayscale).
        augment: See :func:`pipelines.augment.resolve`.
        seed: Seed of the split, the shuffling and the augmentation.
        label_mode: ``"int"``, ``"categorical"`` or None (the augmentation's default).
        batch_size: Batch size, at least 1.
        validation_split: In [0, 1).
        out_dir: Where to write the split manifest.
        manifest_dir: Another name for ``out_dir``.
        cache: True, False, or a directory for file caches.
        deterministic: Fix the train order under parallel maps.
        drop_remainder: Drop the last partial batch.
        imbalance_warning: Warn at this class-size ratio; None turns it off.
        sampling: ``"natural"`` or ``"balanced"`` (refused for multi-label data).
        multi_label: Whether the data is multi-label.
        dedupe: ``"warn"`` (list validation / test images that duplicate training images),
            ``"drop"`` (also leave them out of validation) or ``"off"``.
        dedupe_near: Also look for near-duplicates (resized, re-encoded copies), not only
            identical files (it decodes a thumbnail of every image).

    Returns:
        The :class:`Options`.

    Raises:
        ValueError: For a value out of range, naming it.
    """
    if not 0 <= validation_split < 1:
        raise ValueError(f"validation_split must be in [0, 1); got {validation_split!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size!r}.")
    geometry = zoo.geometry(model, weights, image_size=image_size,
                            crop_fraction=crop_fraction, interpolation=interpolation,
                            channels=channels)
    sampling = check_sampling(sampling, multi_label)
    dedupe = check_dedupe(dedupe)
    if not isinstance(dedupe_near, bool):
        raise ValueError(f"dedupe_near must be True or False; got {dedupe_near!r}.")
    plan = augment_module.resolve(augment, seed=seed)
    return Options(geometry=geometry, plan=plan,
                   label_mode=resolve_label_mode(label_mode, plan, multi_label),
                   out_dir=resolve_out_dir(out_dir, manifest_dir), batch_size=batch_size,
                   validation_split=validation_split, seed=seed, cache=cache,
                   deterministic=deterministic, drop_remainder=drop_remainder,
                   imbalance_warning=imbalance_warning, sampling=sampling,
                   multi_label=multi_label, dedupe=dedupe,
                   dedupe_near=dedupe_near)


def inside(child: Path, parent: Path) -> bool:
    """Whether ``child`` is ``parent`` or below it, symlinks resolved."""
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def check_writes_outside(root: Path, options: Options) -> None:
    """Refuses a manifest or file-cache directory inside the image folder ``root``.

    Raises:
        ValueError: Naming the directory: nothing is written next to the images.
    """
    out_dir, cache = options.out_dir, options.cache
    if out_dir is not None and inside(Path(out_dir), root):
        raise ValueError(f"out_dir {str(out_dir)!r} is inside the image folder {str(root)!r}; "
                         "nothing is written next to the images. Use a run directory outside it.")
    if isinstance(cache, (str, os.PathLike)) and inside(Path(cache), root):
        raise ValueError(f"cache {str(cache)!r} is inside the image folder {str(root)!r}; "
                         "nothing is written next to the images. Put it in the run directory.")


__all__ = ["Options", "check_writes_outside", "inside", "resolve_label_mode",
           "resolve_options", "resolve_out_dir"]
