"""Image folders as ``tf.data`` input: the entry points :func:`from_folder` and :func:`from_files`.

``from_folder(root)`` accepts ``root/<class>/**`` (split here, stratified and seeded) or
``root/train/<class>`` beside ``root/val/<class>`` (or ``valid``, ``validation``, ``test``).
Every file is checked before training; bad ones are listed in ``.skipped`` with a reason,
reported once, and left where they are. The split is written as a JSON manifest into the
directory the caller names, never into ``root``, and passing that manifest back reproduces
the split exactly.

The stages live in their own modules, in the order they run: :mod:`pipelines.scan` (walk
the folder), :mod:`pipelines.probe` (check the files), :mod:`pipelines.split` (split and
manifest), :mod:`pipelines.cache` and :mod:`pipelines.dataset` (the ``tf.data`` graph).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import gc
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zoo
from pipelines import augment as augment_module
from pipelines import transforms
from pipelines.cache import files_cache_key, is_file_cache, within_memory_limit
from pipelines.dataset import (
    EvalFiles,
    build_dataset,
    cached_dtype,
    decoders,
    eval_files,
    records,
)
from pipelines.imagedata import ImageData, warn_if_imbalanced
from pipelines.index import one_look
from pipelines.leakage import Leakage, check_leakage, report_leakage
from pipelines.options import Options, check_writes_outside, resolve_options
from pipelines.probe import ImageFile, check_files, report_skipped
from pipelines.scan import Scan, class_folders_without, scan_tree
from pipelines.split import (
    folder_manifest,
    iterative_split,
    listed_in_manifest,
    stratified_split,
    write_manifest,
)
from pipelines.warn import warn_user

# {split: [(path, class name)]}: files found, before they are numbered by class.
Listing = dict[str, list[tuple[str, str]]]
# from_folder's default, which split folders quietly override (any other value is a choice).
DEFAULT_VALIDATION_SPLIT = 0.2
FOLDER_LAYOUT = ("root/<class>/*.jpg (or .png, .bmp, .gif, .webp), or root/train/<class>/ "
                 "with root/val/<class>/")


@contextlib.contextmanager
def collection_paused():
    """Runs the block with Python's cyclic garbage collector paused (as it was, after).

    A start keeps a few acyclic objects per file (paths, tuples, index entries, records),
    which reference counting frees; in a process that has imported TensorFlow (about
    400,000 tracked objects) they set off full collections that walk every object and
    free nothing: 0.3-0.4 s per 10,000 files here. The collection comes later, while the
    model trains.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def _open_root(root: str | os.PathLike) -> Path:
    # Absolute (symlinks kept): the datasets read these paths later, whatever the cwd.
    root = Path(root).expanduser().absolute()
    if not root.exists():
        raise FileNotFoundError(f"Image folder {str(root)!r} does not exist.")
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} is a file; from_folder needs a folder with one "
                         "sub-folder per class (root/<class>/*.jpg).")
    return root


@dataclass
class Listed:
    """What an entry point found, before the files are checked and split.

    Attributes:
        root: The folder the paths are relative to (in the manifest and in messages).
        files: ``{split: [(path, class name, or a tuple of names when multi-label)]}``,
            the split ``"all"`` when it is made here.
        skipped: ``(path, reason)`` of everything passed over so far; extended later.
        layout: The source's layout, recorded in the manifest.
        expected: What the source should look like, for the error when nothing is usable.
        source: ``ImageData.source``.
        multi_label: Whether images carry tuples of classes.
        class_names: The classes of a manifest read back (None: those of the files).
        loaded: That manifest as read, and ``manifest`` where it was.
        manifest: The manifest path or directory passed in.
        manifest_extra: Fields the source adds to the manifest.
        two_classes: Completes "a classifier needs at least two ...".
        numeric_order: Order class names that are all integers as numbers ("2" < "10").
        empty_classes: For folders: the class folders without any of the given classes.
    """

    root: Path
    files: Listing
    skipped: list
    layout: str
    expected: str
    source: str = "folder"
    multi_label: bool = False
    class_names: list[str] | None = None
    loaded: dict | None = None
    manifest: str | os.PathLike | None = None
    manifest_extra: dict = field(default_factory=dict)
    two_classes: str = "class folders, e.g. root/cats/ and root/dogs/"
    numeric_order: bool = False
    empty_classes: Callable[[set[str]], list[Path]] | None = None


def _classes_of(label: str | tuple) -> tuple:
    return label if isinstance(label, tuple) else (label,)


def _check_listed(listed: Listing, full: bool, skipped: list,
                  digest: bool = False) -> tuple[Listing, dict[str, tuple | str]]:
    """Probes every listed file; bad ones go to ``skipped`` and out of the listing.

    ``digest``: hash the bytes too, for the leakage stage (see ``check_files``).
    """
    all_paths = sorted({p for files in listed.values() for p, _ in files})
    results = check_files(all_paths, full=full, digest=digest)
    for path in all_paths:
        if isinstance(results[path], str):
            skipped.append((path, results[path]))
    good = {split: [(p, c) for p, c in files if not isinstance(results[p], str)]
            for split, files in listed.items()}
    return good, results


def _class_names(listed: Listing, numeric_order: bool) -> list[str]:
    names = {c for files in listed.values() for _, label in files for c in _classes_of(label)}
    if numeric_order and all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _skip_empty_classes(src: Listed, listed: Listing) -> None:
    # Keras makes an empty folder a class the model must predict but never sees; here it is
    # not a class, and it is reported.
    with_images = {c for files in listed.values() for _, c in files}
    for folder in src.empty_classes(with_images):
        if not any(p == str(folder) for p, _ in src.skipped):
            src.skipped.append((str(folder), "class folder without usable images; not a class"))


def _require_classes(src: Listed, class_names: list[str], listed: Listing) -> None:
    total = sum(len(files) for files in listed.values())
    skipped, root = src.skipped, src.root
    if total == 0:
        examples = "; ".join(f"{os.path.relpath(p, root)}: {r}" for p, r in skipped[:3])
        raise ValueError(
            f"No usable images under {str(root)!r}. Expected {src.expected}. "
            f"{len(skipped)} file(s) skipped" + (f", e.g. {examples}." if examples else "."))
    if len(class_names) < 2:
        only = class_names[0] if class_names else "?"
        raise ValueError(
            f"Only one class ({only!r}) has usable images under {str(root)!r}; a classifier "
            f"needs at least two {src.two_classes}.")


def _relative(path: str, root: str) -> str:
    """``os.path.relpath(path, root)``; a plain slice where the path is ``root/<normal rest>``.

    The scan builds its paths so; slicing them is far cheaper than ``relpath`` over a
    hundred thousand files, and any other path takes ``relpath``.
    """
    prefix = root if root.endswith(os.sep) else root + os.sep
    if path.startswith(prefix):
        rest = path[len(prefix):]
        if rest and not rest.startswith(".") and f"{os.sep}." not in rest \
                and os.sep * 2 not in rest and not rest.endswith(os.sep):
            return rest
    return os.path.relpath(path, root)


def _split(src: Listed, listed: Listing, class_names: list[str],
           options: Options) -> tuple[dict[str, list[tuple[str, Any]]], str, dict[str, str]]:
    """The split, made here or as the source says.

    Returns:
        ``({split: [(relative path, label)]}, how, {relative path: path})``.
    """
    index = {name: i for i, name in enumerate(class_names)}
    root = str(src.root)
    where = {_relative(p, root): p for files in listed.values() for p, _ in files}
    relative_of = {p: rel for rel, p in where.items()}

    def indexed(label):
        if src.multi_label:
            return tuple(sorted(index[c] for c in label))
        return index[label]

    if src.loaded is None and "all" in listed:
        relative = [(relative_of[p], indexed(c)) for p, c in listed["all"]]
        split_fn = iterative_split if src.multi_label else stratified_split
        train_rel, val_rel = split_fn(relative, options.validation_split, options.seed)
        return ({"train": train_rel, "val": val_rel},
                "iterative" if src.multi_label else "stratified", where)
    how = "manifest" if src.loaded is not None else "given"
    return {split: sorted((relative_of[p], indexed(c)) for p, c in files)
            for split, files in listed.items()}, how, where


def _check_eval_fully(where: dict[str, str], split_files: dict, results: dict,
                      skipped: list) -> dict:
    # Evaluation files are decoded fully even with the fast check: a validation epoch must
    # be exact (no file silently missing) and they are the smaller part.
    eval_paths = [where[rel] for split in ("val", "test") for rel, _ in split_files.get(split, [])]
    for path, result in check_files(eval_paths, full=True, known=results).items():
        if isinstance(result, str):
            results[path] = result
            skipped.append((path, result))
    return {split: [(rel, label) for rel, label in entries
                    if not isinstance(results[where[rel]], str)]
            for split, entries in split_files.items()}


def _count(files: dict[str, list[ImageFile]], class_names: list[str]) -> dict:
    counts = {split: {name: 0 for name in class_names} for split in files}
    for split, fs in files.items():
        for f in fs:
            for label in (f.label if isinstance(f.label, tuple) else (f.label,)):
                counts[split][class_names[label]] += 1
    for name in class_names:
        if counts["train"][name] == 0:
            warn_user(f"Class {name!r} has no training images (only validation ones).")
    if sum(counts.get("val", {}).values()):
        unseen = [name for name in class_names if not counts["val"][name]]
        if unseen:
            shown = ", ".join(f"{n!r} ({counts['train'][n]} image(s))" for n in unseen[:10])
            more = f" and {len(unseen) - 10} more" if len(unseen) > 10 else ""
            warn_user(f"{len(unseen)} class(es) have no validation images: {shown}{more}. "
                      "A class needs at least 2 images to be split into both; validation "
                      "says nothing about these (support 0 in per-class scores). Add "
                      "images to them, or give them validation images (root/val for "
                      "folders, a split column for tables).")
    return counts


def _datasets(files: dict[str, list[ImageFile]], num_classes: int, options: Options,
              shuffle: bool, source: str | None = None) -> dict:
    """``{"train", "val", "test"}`` datasets of the checked files (None for an empty split)."""
    common = dict(read_files=True, **options.dataset_keywords(num_classes))
    geometry = options.geometry
    per_image = (geometry.image_size[0] * geometry.image_size[1] * geometry.channels
                 * cached_dtype(geometry.channels).size)
    # The budget is for the splits together: each alone may fit where all do not.
    total = (sum(f.nbytes for f in files["train"])
             + per_image * sum(len(files.get(split) or []) for split in ("val", "test")))
    common["cache"] = within_memory_limit(common["cache"], total, "image", source=source)
    file_cache = is_file_cache(options.cache)
    width = num_classes if options.multi_label else None

    def cache_key(fs):
        # Stat'ed only for a file cache, and before it is filled: a file rewritten during the
        # fill can then only leave the cache newer than its key, never older (stat'ed after,
        # the old bytes could be filed under the new file's key).
        return files_cache_key(fs) if file_cache else None

    train_files = files["train"]
    balanced_over = (sorted({f.label for f in train_files})
                     if options.sampling == "balanced" else None)
    out = {"train": build_dataset(
        records(train_files, width), training=True, size=len(train_files),
        cache_bytes=sum(f.nbytes for f in train_files), shuffle=shuffle,
        deterministic=options.deterministic, cache_key=cache_key(train_files),
        balanced_over=balanced_over, **decoders(train_files), **common)}
    for split in ("val", "test"):
        fs = files.get(split) or []
        build = functools.partial(
            build_dataset, records(fs, width), training=False, size=len(fs),
            cache_name=split, cache_key=cache_key(fs), cache_bytes=len(fs) * per_image,
            **decoders(fs), **common)
        # Validation images are decoded into their memory cache in the background: the
        # first train batch need not wait for it, and .val waits for the filled dataset.
        out[split] = (None if not fs else
                      _in_background(build) if split == "val" and common["cache"] is True
                      else build())
    return out


def _in_background(build: Callable[[], Any]) -> concurrent.futures.Future:
    """``build()`` run in a thread of its own; its result (or error) in the future."""
    future: concurrent.futures.Future = concurrent.futures.Future()

    def run():
        try:
            future.set_result(build())
        except BaseException as error:  # noqa: BLE001 - handed to whoever reads .val
            future.set_exception(error)

    # Not a daemon: a process that ends meanwhile lets the fill finish rather than stop
    # TensorFlow mid-op.
    threading.Thread(target=run, name="zoo-val-cache", daemon=False).start()
    return future


def _warn_unused_split(scan: Scan, validation_split: float, manifest) -> None:
    """Warns when ``validation_split`` was chosen but split folders decide the split."""
    if (manifest is not None or scan.layout != "split_folders" or "val" not in scan.files
            or validation_split == DEFAULT_VALIDATION_SPLIT):
        return
    # class_roots holds train/ first, then the folder used for validation.
    val_dir = scan.class_roots[1]
    hint = (" To train without validation, move it out of the folder, or use root/train "
            "alone." if not validation_split else "")
    warn_user(f"validation_split={validation_split!r} is not used: {val_dir} holds the "
              f"validation images (split folders), and they are used as they are.{hint}")


def _checked_split(src: Listed, options: Options, full: bool):
    """``(files by split, class names, split files, how split)``, every file checked."""
    # The leakage stage's byte hashes, unless it will not look or hashes thumbnails too.
    digest = options.dedupe != "off" and not options.dedupe_near
    listed, results = _check_listed(src.files, full, src.skipped, digest)
    class_names = src.class_names or _class_names(listed, src.numeric_order)
    if src.class_names is None and src.empty_classes is not None:
        _skip_empty_classes(src, listed)
    try:
        _require_classes(src, class_names, listed)
    except ValueError:
        report_skipped(src.skipped, src.root)
        raise
    split_files, how, where = _split(src, listed, class_names, options)
    if not full:
        split_files = _check_eval_fully(where, split_files, results, src.skipped)
    root = src.root
    files = {split: [ImageFile(where[rel], label, *results[where[rel]])
                     for rel, label in entries] for split, entries in split_files.items()}
    if not files.get("train"):
        report_skipped(src.skipped, root)
        raise ValueError(f"No training images left under {str(root)!r} after the split "
                         f"({len(src.skipped)} file(s) skipped; see the warning above).")
    return files, class_names, split_files, how


def _without_dropped(leakage: Leakage, split_files: dict, src: Listed) -> tuple[dict, dict]:
    """The checked files and the split's entries less the copies the leakage stage dropped."""
    src.skipped.extend(leakage.dropped)
    dropped = {os.path.relpath(path, src.root) for path, _ in leakage.dropped}
    kept = {split: [(rel, label) for rel, label in entries if rel not in dropped]
            for split, entries in split_files.items()}
    return leakage.files, kept


def build_image_data(src: Listed, options: Options, *, check: str = "fast",
                     shuffle: bool = True) -> ImageData:
    """The shared stages of every file source: check, split, manifest, counts, datasets.

    Args:
        src: The files found (by :func:`from_folder`, or a label table).
        options: The resolved options.
        check: ``"fast"`` or ``"full"``, as in :func:`from_folder`.
        shuffle: Shuffle the training images every epoch.

    Returns:
        The :class:`ImageData`.
    """
    if check not in ("fast", "full"):
        raise ValueError(f"check must be 'fast' or 'full'; got {check!r}.")
    with collection_paused():
        return _build_image_data(src, options, check=check, shuffle=shuffle)


def _build_image_data(src: Listed, options: Options, *, check: str,
                      shuffle: bool) -> ImageData:
    # The check, the evaluation files' full check and the leakage digests look at each
    # file's stat once between them.
    with one_look():
        files, class_names, split_files, how = _checked_split(src, options, check == "full")
        leakage = check_leakage(src.root, files, options.dedupe, options.dedupe_near,
                                src.loaded)
    files, split_files = _without_dropped(leakage, split_files, src)
    extra = dict(src.manifest_extra, multi_label=src.multi_label, leakage=leakage.record)
    if how in ("stratified", "iterative"):
        extra["split_method"] = how
    manifest_dict = folder_manifest(
        root=src.root, layout=src.layout, seed=options.seed,
        validation_split=options.validation_split, class_names=class_names,
        split_files=split_files, skipped=src.skipped, loaded=src.loaded,
        manifest=src.manifest, extra=extra)
    manifest_path = write_manifest(options.out_dir, manifest_dict)
    # After the manifest is written, so that the warning can point to it.
    report_skipped(src.skipped, src.root, listed_in=manifest_path)
    report_leakage(leakage.record, src.root, manifest_path)
    counts = _count(files, class_names)
    warn_if_imbalanced(counts["train"], class_names, options.imbalance_warning,
                       src.multi_label)
    _check_albumentations(options, files["train"][0].path)
    datasets = _datasets(files, len(class_names), options, shuffle, source=str(src.root))
    return ImageData(
        **datasets, class_names=class_names, geometry=options.geometry,
        batch_size=options.batch_size, label_mode=options.label_mode, plan=options.plan,
        skipped=src.skipped, manifest=manifest_dict,
        manifest_path=str(manifest_path) if manifest_path else None,
        train_files=[(f.path, f.label) for f in files["train"]],
        val_files=[(f.path, f.label) for f in files.get("val", [])],
        test_files=[(f.path, f.label) for f in files.get("test", [])],
        counts=counts, source=src.source, root=str(src.root),
        multi_label=src.multi_label, sampling=options.sampling)


def from_folder(
    root: str | os.PathLike,
    *,
    image_size: Sequence[int] | int | None = None,
    batch_size: int = 32,
    validation_split: float = DEFAULT_VALIDATION_SPLIT,
    seed: int = 0,
    augment: Any = "standard",
    model: str | None = None,
    weights: Any = None,
    crop_fraction: float | None = None,
    interpolation: str | None = None,
    channels: int | None = None,
    check: str = "fast",
    out_dir: str | os.PathLike | None = None,
    manifest_dir: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    label_mode: str | None = None,
    cache: bool | str = True,
    shuffle: bool = True,
    deterministic: bool | None = None,
    drop_remainder: bool = False,
    imbalance_warning: float | None = 3.0,
    sampling: str = "natural",
    dedupe: str = "warn",
    dedupe_near: bool = False,
    store: str | os.PathLike | None = None,
) -> ImageData:
    """Train and validation ``tf.data`` pipelines from a folder of images.

    Args:
        root: ``root/<class>/**`` (split here) or ``root/train/<class>`` with
            ``root/val/<class>`` (``valid``, ``validation`` or ``test`` also work; with both
            a validation folder and ``test/``, the latter becomes ``.test``).
        image_size: Output ``(height, width)``; defaults to the model's input size, else
            224x224.
        batch_size: Batch size.
        validation_split: Fraction of each class held out, for the one-folder layout. With
            split folders (``root/train`` and ``root/val``) the validation folder is used
            whatever this says; a value other than the default then warns (``0`` does not
            train without validation there: move ``val/`` aside for that).
        seed: Seed of the split, the shuffling and the augmentation.
        augment: See :func:`pipelines.augment.resolve`.
        model: A zoo model name; with its weights it gives image size, crop fraction,
            interpolation and channels unless given here (``zoo.geometry``).
        weights: The weights the model will use (a catalog tag such as ``"imagenet"``, a
            file, or None): their eval transform comes before the architecture's defaults.
        crop_fraction: Eval centre-crop fraction (default 0.875).
        interpolation: Resize method (default bilinear).
        channels: 3 (RGB) or 1 (grayscale).
        check: ``"fast"`` reads headers and ends of training files (and fully decodes any
            file that looks incomplete, and every validation and test file); ``"full"``
            decodes every file with the decoder training uses.
        out_dir: Where to write the split manifest (``split.json``), usually the run dir.
            It may not be inside ``root``: nothing is written next to the images.
        manifest_dir: Another name for ``out_dir``.
        manifest: A manifest written earlier (file or directory); its split is used
            as it is. Files listed there that are now missing or broken are skipped, files
            added since are ignored, and both are reported.
        label_mode: ``"int"`` (default) or ``"categorical"`` (one-hot float32), for train
            and val alike; mixup and cutmix need and default to ``"categorical"``.
        cache: Cache the train bytes and finished val images in memory (True), in files
            under a directory (a path, e.g. inside the run dir; not inside ``root``), or
            not (False). Caches are filled before they are read: the train split's and
            file caches before this returns, the validation split's memory cache in the
            background (the first read of ``.val`` waits for it). A file cache is named by a
            key over everything that decides its content (each file's path, size, mtime,
            a hash of its bytes, label and decoder; on the val and test splits also image
            size, crop fraction, interpolation, channels and the decoding code), so folders
            and settings can share one directory, and a changed file makes a new cache
            rather than reading the old one. Caches of other keys are left in place (delete
            the directory to reclaim the space); an unfinished cache left by an interrupted
            run is deleted and filled again, and another process filling the same cache is
            waited for.
        shuffle: Shuffle the training images every epoch.
        deterministic: Fix the order of the train path under parallel maps (slower); the
            val path is always in order.
        drop_remainder: Drop the last partial batch.
        imbalance_warning: Warn when the largest class has this many times the images of
            the smallest; None turns the warning off.
        sampling: ``"natural"`` (every training image once per epoch) or ``"balanced"``
            (every class equally often: the train stream is re-sampled with ``tf.data``,
            before decoding, without copying files; one epoch is still as many images as
            the train split holds, and the draws are seeded by ``seed``).
        dedupe: Validation and test images that duplicate training images: ``"warn"``
            lists the pairs in the manifest (``"leakage"``) and warns once; ``"drop"``
            also leaves those images out of validation and test (listed in ``.skipped``,
            never deleted; a manifest passed back drops them again); ``"off"`` does not
            look.
        dedupe_near: Also find near-duplicates (resized, re-encoded copies) by a
            perceptual hash of a thumbnail of every image; the default finds identical
            files only (by their bytes), which costs far less.
        store: A store of ``root`` written by :func:`pipelines.prepare`: the checked split
            is read from it (see :func:`pipelines.store.from_store`; the split, check and
            cache options were fixed when it was prepared).

    Returns:
        An :class:`ImageData`.

    Raises:
        FileNotFoundError: If ``root`` does not exist.
        ValueError: If no usable images or only one class are found, or for bad arguments.
        RuntimeError: If a file cache may be in use by another run and, without file locks
            on this system, that cannot be told from a run that was interrupted.
    """
    root = _open_root(root)
    if store is not None:
        from pipelines.store import from_store_of

        return from_store_of(root, store, image_size=image_size, batch_size=batch_size,
                             seed=seed, augment=augment, model=model, weights=weights,
                             crop_fraction=crop_fraction, interpolation=interpolation,
                             channels=channels, label_mode=label_mode, shuffle=shuffle,
                             deterministic=deterministic, drop_remainder=drop_remainder)
    if check not in ("fast", "full"):
        raise ValueError(f"check must be 'fast' or 'full'; got {check!r}.")
    options = resolve_options(
        model=model, weights=weights, image_size=image_size, crop_fraction=crop_fraction,
        interpolation=interpolation, channels=channels, augment=augment, seed=seed,
        label_mode=label_mode, batch_size=batch_size, validation_split=validation_split,
        out_dir=out_dir, manifest_dir=manifest_dir, cache=cache, deterministic=deterministic,
        drop_remainder=drop_remainder, imbalance_warning=imbalance_warning, sampling=sampling,
        dedupe=dedupe, dedupe_near=dedupe_near)
    check_writes_outside(root, options)
    with collection_paused():
        return _from_scan(root, options, manifest=manifest, check=check, shuffle=shuffle,
                          validation_split=validation_split)


def _from_scan(root: Path, options: Options, *, manifest, check: str, shuffle: bool,
               validation_split: float) -> ImageData:
    scan = scan_tree(root)
    _warn_unused_split(scan, validation_split, manifest)
    src = Listed(root=root, files=scan.files, skipped=list(scan.skipped), layout=scan.layout,
                 expected=FOLDER_LAYOUT, manifest=manifest,
                 empty_classes=lambda with_images: class_folders_without(scan, with_images))
    if manifest is not None:
        src.files, src.class_names, src.loaded = listed_in_manifest(manifest, root, scan.files,
                                                                    src.skipped)
    return build_image_data(src, options, check=check, shuffle=shuffle)


def _check_albumentations(options: Options, sample_path: str) -> None:
    # Tried once on a real image now, so that a pipeline that cannot work fails here with
    # its own message rather than mid-epoch inside tf.data.
    if options.plan.albumentations is not None:
        sample = transforms.pil_decode(Path(sample_path).read_bytes())
        augment_module.check_albumentations(options.plan.albumentations, sample,
                                            options.geometry.image_size)


def from_files(
    paths: Iterable[str | os.PathLike],
    labels: Sequence[int] | None = None,
    *,
    model: str | None = None,
    weights: Any = None,
    image_size: Sequence[int] | int | None = None,
    crop_fraction: float | None = None,
    interpolation: str | None = None,
    channels: int | None = None,
    batch_size: int = 32,
    check: str = "full",
) -> EvalFiles:
    """The eval path (resize shorter side, centre crop) over a list of files, in order.

    Args:
        paths: Image files.
        labels: Optional class index per file; the dataset then yields (pixels, labels).
        model: A zoo model name whose geometry (with ``weights``) gives size, crop fraction,
            interpolation and channels.
        weights: The model's weights (a catalog tag, a file, or None); see
            :func:`from_folder`.
        image_size: ``(height, width)``; overrides the model's.
        crop_fraction: Overrides the model's.
        interpolation: Overrides the model's.
        channels: Overrides the model's.
        batch_size: Batch size.
        check: ``"full"`` (default: every file is decoded once first, so that the dataset
            lines up with ``paths`` and never fails mid-way) or ``"fast"``.

    Returns:
        An :class:`EvalFiles`; unusable files are left out, listed and reported once.
    """
    geometry = zoo.geometry(model, weights, image_size=image_size, crop_fraction=crop_fraction,
                            interpolation=interpolation, channels=channels)
    return eval_files(paths, labels, geometry=geometry, batch_size=batch_size, check=check)


__all__ = ["EvalFiles", "ImageData", "Listed", "build_image_data", "from_files", "from_folder"]
