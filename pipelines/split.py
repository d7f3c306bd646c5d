"""Splitting images into train and validation, and the split manifest (``split.json``).

The split is stratified and seeded by a hash of each path, so it is the same on every
machine; the manifest records it, and passing the manifest back reproduces it exactly.
Single-label data is split class by class (:func:`stratified_split`); multi-label data by
iterative stratification (:func:`iterative_split`), which keeps every label in validation
where its images allow.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from pipelines.leakage import recorded_drops
from pipelines.warn import warn_user

MANIFEST_NAME = "split.json"
MANIFEST_FORMAT = "zoo.pipelines.split/1"


def _split_key(seed: int, relpath: str) -> str:
    # surrogateescape: a file name that is not valid UTF-8 hashes as its bytes (valid names
    # encode as before, so their split is unchanged).
    return hashlib.sha256(f"{seed}:{relpath}".encode("utf-8", "surrogateescape")).hexdigest()


def stratified_split(items: Sequence[tuple[str, int]], validation_split: float,
                     seed: int) -> tuple[list, list]:
    """Splits ``(relpath, label)`` items per class, by a seeded hash of each path.

    Written by hand rather than with scikit-learn's ``train_test_split`` because the split
    must be the same on every machine and library version for a seed (a hash of the path
    is; a generator's stream is not promised to be), classes with one image must not raise,
    and adding files must not reshuffle the others.

    Args:
        items: ``(relative path, label)`` pairs.
        validation_split: Fraction of each class for validation, in [0, 1).
        seed: Split seed.

    Returns:
        ``(train, val)`` lists of ``(relpath, label)``, each sorted by path.
    """
    by_class: dict[int, list[str]] = {}
    for relpath, label in items:
        by_class.setdefault(label, []).append(relpath)
    train, val = [], []
    for label, paths in sorted(by_class.items()):
        ordered = sorted(paths, key=lambda p: _split_key(seed, p))
        n_val = _held_out(len(ordered), validation_split)
        val += [(p, label) for p in ordered[:n_val]]
        train += [(p, label) for p in ordered[n_val:]]
    return sorted(train), sorted(val)


def _held_out(count: int, validation_split: float) -> int:
    """Images of a class (or label) of ``count`` to hold out: both sides see it if it can."""
    if validation_split <= 0 or count < 2:
        return 0
    return min(max(int(round(count * validation_split)), 1), count - 1)


def iterative_split(items: Sequence[tuple[str, tuple[int, ...]]], validation_split: float,
                    seed: int) -> tuple[list, list]:
    """Splits multi-label ``(relpath, labels)`` items by iterative stratification.

    The algorithm of Sechidis, Tsoumakas and Vlahavas (2011), "On the stratification of
    multi-label data", as scikit-multilearn's ``IterativeStratification`` runs it, made
    deterministic: each label wants :func:`_held_out` of its images in validation (at least
    one when it has two). The label with the fewest images still unassigned goes first;
    each of its images, in the seeded hash order of their paths, joins the side that wants
    that label most (ties: the side that wants more images, then train), and counts against
    every label it carries. A side that has its share of images takes no more while the
    other still wants some, so validation holds ``round(n * validation_split)`` images.
    Rare labels are placed before common ones can use up the validation share, so each
    label with two images or more lands in validation unless the labels it shares images
    with leave no room.

    Args:
        items: ``(relative path, tuple of label indices)`` pairs.
        validation_split: Fraction for validation, in [0, 1).
        seed: Split seed.

    Returns:
        ``(train, val)`` lists of ``(relpath, labels)``, each sorted by path.
    """
    remaining = sorted(items, key=lambda item: _split_key(seed, item[0]))
    if validation_split <= 0:
        return sorted(remaining), []
    per_label = Counter(label for _, labels in remaining for label in labels)
    wanted = [{}, {}]  # by side (train, val): images still wanted per label
    for label, count in per_label.items():
        wanted[1][label] = _held_out(count, validation_split)
        wanted[0][label] = count - wanted[1][label]
    n_val = int(round(len(remaining) * validation_split))
    total = [len(remaining) - n_val, n_val]
    sides: tuple[list, list] = ([], [])
    while remaining:
        left = Counter(label for _, labels in remaining for label in labels)
        if not left:  # images without labels: wherever more images are wanted
            for item in remaining:
                side = int(total[1] > total[0])
                sides[side].append(item)
                total[side] -= 1
            break
        rarest = min(left, key=lambda label: (left[label], label))
        kept = []
        for item in remaining:
            if rarest not in item[1]:
                kept.append(item)
                continue
            side = max((0, 1),
                       key=lambda s: (total[s] > 0, wanted[s][rarest], total[s], -s))
            sides[side].append(item)
            total[side] -= 1
            for label in item[1]:
                wanted[side][label] -= 1
        remaining = kept
    return sorted(sides[0]), sorted(sides[1])


def label_names(label: int | Sequence[int], class_names: Sequence[str]) -> str | tuple:
    """A label of the manifest (an index, or a list of them) as class names."""
    if isinstance(label, (list, tuple)):
        return tuple(class_names[i] for i in label)
    return class_names[label]


def read_manifest(path: str | os.PathLike) -> dict:
    """Reads a split manifest written by :func:`pipelines.from_folder`.

    Raises:
        ValueError: If the file is not such a manifest.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"No split manifest at {path}; pass the {MANIFEST_NAME} "
                                "written by an earlier from_folder(out_dir=...).") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not a JSON split manifest ({error}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not a split manifest of format {MANIFEST_FORMAT!r}.")
    return manifest


def write_manifest(out_dir: str | os.PathLike | None, manifest: dict) -> Path | None:
    """Writes ``manifest`` as ``<out_dir>/split.json``; nothing when ``out_dir`` is None.

    Returns:
        The file written, or None.
    """
    if out_dir is None:
        return None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=1))
    return path


def listed_in_manifest(manifest: str | os.PathLike, root: Path,
                       scanned: dict[str, list[tuple[str, str]]],
                       skipped: list[tuple[str, str]]) -> tuple[dict, list[str], dict]:
    """The files of a manifest written earlier that are still on disk, split as it says.

    Files listed there but missing now are added to ``skipped``; files on disk that it does
    not list are left out, with one warning.

    Args:
        manifest: The manifest file (or its directory).
        root: The image folder.
        scanned: What the scan found, ``{split: [(path, class name)]}``.
        skipped: Extended in place.

    Returns:
        ``({split: [(path, class name)]}, class names, the manifest as read)``.
    """
    loaded = read_manifest(manifest)
    class_names = list(loaded["class_names"])
    listed = {split: [(str(root / rel), label_names(label, class_names))
                      for rel, label in entries]
              for split, entries in loaded["splits"].items()}
    on_disk = {p for files in scanned.values() for p, _ in files}
    in_manifest = {p for files in listed.values() for p, _ in files}
    # Copies of training images the manifest's run left out (dedupe="drop") are left out
    # again, with their reason, rather than reported as new.
    dropped = recorded_drops(loaded, root)
    skipped.extend((path, reason) for path, reason in dropped.items() if path in on_disk)
    new = sorted(on_disk - in_manifest - set(dropped))
    if new:
        warn_user(f"{len(new)} image(s) under {root} are not in the manifest "
                  f"{manifest} and are left out, e.g. {os.path.relpath(new[0], root)}.")
    for path in sorted(in_manifest - on_disk):
        skipped.append((path, "listed in the manifest but missing now"))
    listed = {split: [(p, c) for p, c in files if p in on_disk]
              for split, files in listed.items()}
    return listed, class_names, loaded


def folder_manifest(*, root: Path, layout: str, seed: int, validation_split: float,
                    class_names: Sequence[str], split_files: dict[str, list],
                    skipped: Sequence[tuple[str, str]], loaded: dict | None = None,
                    manifest: str | os.PathLike | None = None,
                    extra: dict | None = None) -> dict:
    """The manifest of a folder's split (format :data:`MANIFEST_FORMAT`).

    Args:
        root: The image folder.
        layout: The scan's layout.
        seed: The split seed.
        validation_split: The fraction held out.
        class_names: Class names, by label.
        split_files: ``{split: [(relative path, label)]}``, the label a class index or
            (multi-label) a tuple of them, written as a list.
        skipped: ``(path, reason)`` of the files left out.
        loaded: The manifest this split was read from, if any.
        manifest: Where that manifest was.
        extra: More fields of the source (a label table's columns, ``multi_label``,
            ``split_method``).

    Returns:
        The manifest as a dict.
    """
    out = {
        "format": MANIFEST_FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "root": str(root.resolve()),
        "layout": layout,
        "seed": seed,
        "validation_split": validation_split,
        "class_names": list(class_names),
        "splits": {split: [[rel, list(label) if isinstance(label, tuple) else label]
                           for rel, label in entries]
                   for split, entries in split_files.items()},
        "skipped": [[os.path.relpath(p, root), r] for p, r in skipped],
        **(extra or {}),
    }
    if loaded is not None:
        out["from_manifest"] = str(Path(manifest).resolve())
        out["seed"] = loaded.get("seed", seed)
        out["validation_split"] = loaded.get("validation_split", validation_split)
        if "split_method" in loaded:
            out["split_method"] = loaded["split_method"]
    return out


__all__ = ["MANIFEST_FORMAT", "MANIFEST_NAME", "folder_manifest", "iterative_split",
           "label_names", "listed_in_manifest", "read_manifest", "stratified_split",
           "write_manifest"]
