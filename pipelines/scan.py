"""Walking image folders: the one list of image extensions, split folders and hidden files.

Everything in zoo that looks for images on disk (the pipelines, ``zoo evaluate``, export's
sample images, ``zoo predict``) asks this module, so that they agree on what an image file
is. Nothing here opens a file: :mod:`pipelines.probe` checks the files found.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif", ".webp"})
# Split folder names, by the split they hold, in order of preference.
SPLIT_DIRS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
# What operating systems and tools leave in folders of photos (besides dot files).
_HIDDEN_NAMES = ("thumbs.db", "desktop.ini", "__macosx")


def is_hidden(name: str) -> bool:
    """Whether a file or folder name is hidden: such entries are reported as skipped, not used.

    ``.DS_Store``, ``._IMG_0001.jpg`` (macOS AppleDouble), ``.ipynb_checkpoints``,
    ``Thumbs.db``, ``desktop.ini`` and ``__MACOSX`` are.
    """
    return name.startswith(".") or name.lower() in _HIDDEN_NAMES


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether the file name has one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def _inside(real: str, bound: str) -> bool:
    return real == bound or real.startswith(bound.rstrip(os.sep) + os.sep)


def _link_outside(path: str, bound: str) -> str | None:
    """The reason to pass over ``path`` if it is a link that leads outside ``bound``."""
    if not os.path.islink(path) or not os.path.exists(path):
        return None  # not a link, or a broken one (the check reports it as unreadable)
    target = os.path.realpath(path)
    if _inside(target, bound):
        return None
    return (f"symbolic link leading outside its folder ({os.path.basename(bound)}/) to "
            f"{target}; not followed, so that no image counts in another class or twice. "
            "Copy the file in, or link the whole class folder instead")


def _walk_files(current: str, real_current: str, files: list[os.DirEntry], bound: str,
                first_seen: dict[str, str]) -> Iterator[tuple[str, str | None]]:
    for entry in sorted(files, key=lambda e: e.name):
        name = entry.name
        path = os.path.join(current, name)
        if is_hidden(name):
            yield path, "hidden file"
        elif not is_image_path(name):
            extension = os.path.splitext(name)[1] or "no extension"
            yield path, (f"not an image file name ({extension}); accepted: "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS))}")
        elif _is_link(entry) and (outside := _link_outside(path, bound)) is not None:
            yield path, outside
        else:
            # A file that is no link is where its folder really is: one realpath per
            # folder, not per file (a tenth of a second per 10,000 files).
            real = os.path.realpath(path) if _is_link(entry) else os.path.join(real_current,
                                                                              name)
            if real in first_seen:
                yield path, (f"the same file as {first_seen[real]} (reached twice through a "
                             "link); counted once")
            else:
                first_seen[real] = path
                yield path, None


def _is_link(entry: os.DirEntry) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links, as os.walk(followlinks=True) does
    except OSError:
        return False


def _walk_folder(current: str, real_current: str, bound: str, seen: set[str],
                 first_seen: dict[str, str]) -> Iterator[tuple[str, str | None]]:
    """:func:`walk` below one folder whose resolved path is ``real_current``."""
    if real_current in seen:  # a symlink loop inside the folder
        return
    seen.add(real_current)
    try:
        with os.scandir(current) as listing:
            entries = list(listing)
    except OSError:  # unreadable: passed over, as os.walk does
        return
    dirs = sorted((e for e in entries if _is_dir(e)), key=lambda e: e.name)
    files = [e for e in entries if not _is_dir(e)]
    entered = []
    for entry in dirs:
        path = os.path.join(current, entry.name)
        if is_hidden(entry.name):
            yield path, "hidden folder"
        elif _is_link(entry) and (outside := _link_outside(path, bound)) is not None:
            yield path, outside
        else:
            entered.append((path, entry))
    yield from _walk_files(current, real_current, files, bound, first_seen)
    for path, entry in entered:
        real = (os.path.realpath(path) if _is_link(entry)
                else os.path.join(real_current, entry.name))
        yield from _walk_folder(path, real, bound, seen, first_seen)


def walk(folder: str | os.PathLike) -> Iterator[tuple[str, str | None]]:
    """Every file and hidden folder below ``folder``, sorted, symlinks followed once.

    Links are followed only while they stay inside ``folder`` (resolved, so a class folder
    that is itself a link works): a link out of it (``cats/loop -> ..``, or a file linked
    in from another class or from outside the root) would put other folders' images here.

    Yields:
        ``(path, None)`` for an image file name, ``(path, reason)`` for anything passed
        over: hidden files and folders (not entered), other file names, links leading
        outside ``folder`` (not followed), and a file reached a second time through a link.
    """
    folder = os.fspath(folder)
    bound = os.path.realpath(folder)
    yield from _walk_folder(folder, bound, bound, set(), {})


def list_images(folder: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """Lists image files under a folder, recursively, in sorted order, hidden ones left out.

    Args:
        folder: A directory.
        limit: Keep at most this many, spread evenly over the sorted list (so that every
            class sub-folder is represented).

    Returns:
        The paths.

    Raises:
        FileNotFoundError: If ``folder`` is not a directory.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"No image folder at {root}.")
    paths = sorted(Path(p) for p, reason in walk(root) if reason is None)
    if limit is not None and len(paths) > limit:
        step = len(paths) / limit
        paths = [paths[int(i * step)] for i in range(limit)]
    return paths


def class_folders(root: str | os.PathLike) -> tuple[Path, list[Path]]:
    """The class folders to evaluate on: ``root/val/<class>`` if there is one, else ``root/*``.

    ``valid`` and ``validation`` count as ``val``; hidden folders are not classes.

    Args:
        root: An image folder.

    Returns:
        ``(the folder used, its class folders sorted by name)``.

    Raises:
        FileNotFoundError: If ``root`` is not a directory.
        ValueError: If it has no class folders.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"No image folder at {root}.")
    for name in SPLIT_DIRS["val"]:
        if (root / name).is_dir():
            root = root / name
            break
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p.name))
    if not folders:
        raise ValueError(f"{root} has no class folders; expected root/<class>/<images> "
                         "(or root/val/<class>/<images>).")
    return root, folders


# --------------------------------------------------------------------------------------
# A training folder's layout
# --------------------------------------------------------------------------------------

@dataclass
class Scan:
    """What a walk of a training folder found.

    Attributes:
        files: ``{split: [(path, class name)]}``, the split ``"all"`` before splitting.
        skipped: ``(path, reason)`` of everything passed over.
        layout: ``"class_folders"``, ``"train_folder"`` or ``"split_folders"``.
        class_roots: The folders whose sub-folders are the classes.
    """

    files: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    layout: str = "class_folders"
    class_roots: list[Path] = field(default_factory=list)


def _subdirs(folder: Path, skipped: list) -> list[Path]:
    out = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if is_hidden(entry.name):
            skipped.append((str(entry), "hidden file" if entry.is_file() else "hidden folder"))
        elif entry.is_dir():
            out.append(entry)
        else:
            reason = ("not inside a class folder: images go in root/<class>/"
                      if is_image_path(entry.name) else "not inside a class folder")
            skipped.append((str(entry), reason))
    return out


def _scan_classes(folder: Path, scan: Scan, top: list[Path] | None = None) -> list:
    classes = top if top is not None else _subdirs(folder, scan.skipped)
    files = []
    for class_dir in classes:
        for path, reason in walk(class_dir):
            if reason is None:
                files.append((path, class_dir.name))
            else:
                scan.skipped.append((path, reason))
    return files


def _scan_split_folders(names: dict[str, Path], scan: Scan) -> None:
    scan.layout = "split_folders"
    val_like = [names[c] for c in SPLIT_DIRS["val"] if c in names]
    test_dir = names.get("test")
    if not val_like and test_dir is not None:
        val_like, test_dir = [test_dir], None  # test/ is the only held-out folder
    for extra in val_like[1:]:
        scan.skipped.append((str(extra), f"second validation folder; {val_like[0].name}/ "
                                         "is used"))
    chosen = {"train": names["train"], "val": val_like[0] if val_like else None,
              "test": test_dir}
    for split, folder in chosen.items():
        if folder is not None:
            scan.class_roots.append(folder)
            scan.files[split] = _scan_classes(folder, scan)


def scan_tree(root: Path) -> Scan:
    """Walks a training folder: ``root/<class>/**``, or split folders ``root/train/<class>``.

    Args:
        root: The image folder.

    Returns:
        The :class:`Scan`.
    """
    scan = Scan()
    top = _subdirs(root, scan.skipped)
    names = {d.name.lower(): d for d in top}
    split_names = {n for names_ in SPLIT_DIRS.values() for n in names_}
    if names and set(names) == {"train"}:
        # Only root/train/<class>: split it here, like the one-folder layout.
        scan.layout = "train_folder"
        scan.class_roots = [names["train"]]
        scan.files["all"] = _scan_classes(names["train"], scan)
    elif "train" in names and set(names) <= split_names:
        _scan_split_folders(names, scan)
    else:
        scan.class_roots = [root]
        scan.files["all"] = _scan_classes(root, scan, top=top)
    return scan


def class_folders_without(scan: Scan, with_images: set[str]) -> list[Path]:
    """The class folders of a scan that hold none of ``with_images``' class names, sorted."""
    folders = set()
    for split_dir in scan.class_roots:
        for class_dir in split_dir.iterdir():
            if class_dir.is_dir() and not is_hidden(class_dir.name):
                folders.add(class_dir)
    return sorted(f for f in folders if f.name not in with_images)


__all__ = ["IMAGE_EXTENSIONS", "SPLIT_DIRS", "Scan", "class_folders", "class_folders_without",
           "is_hidden", "is_image_path", "list_images", "scan_tree", "walk"]
