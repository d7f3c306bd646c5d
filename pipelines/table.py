"""Label tables as ``tf.data`` input: :func:`from_csv` and :func:`from_dataframe`.

A table lists one image per row: a path (relative to ``root``) and its label, or its
labels joined by a delimiter (multi-label), and optionally the split it belongs to. The
rows become the same listing a folder scan gives, and from there the stages of
:func:`pipelines.from_folder` run unchanged (check, split, manifest, caches, datasets):
the :class:`~pipelines.imagedata.ImageData` is the same. Rows naming files that do not
exist or lie outside ``root`` are listed in ``.skipped``; a table that cannot be read as
meant (a missing column, an empty label, one image with two different labels) is an
error naming the row.
"""

from __future__ import annotations

import csv
import inspect
import math
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.folder import DEFAULT_VALIDATION_SPLIT, Listed, build_image_data
from pipelines.imagedata import ImageData
from pipelines.options import Options, check_writes_outside, resolve_options
from pipelines.scan import SPLIT_DIRS
from pipelines.split import listed_in_manifest

# Split column values (any case), by the split they name.
SPLIT_VALUES = {name: split for split, names in SPLIT_DIRS.items() for name in names}
# Extensions read as tab-separated; anything else is comma-separated.
TSV_EXTENSIONS = (".tsv", ".tab")
# The keywords of from_folder that are not resolve_options' (they act on the stages).
_STAGE_KEYWORDS = {"check": "fast", "shuffle": True, "manifest": None}


@dataclass
class Row:
    """One row of a table, as read.

    Attributes:
        where: The row named for messages (``"labels.csv line 5"``).
        path: The path cell.
        label: The label cell (a string, or a list in a DataFrame).
        split: The split cell, or None without a split column.
    """

    where: str
    path: Any
    label: Any
    split: Any = None


@dataclass(frozen=True)
class Columns:
    """What the columns of a table mean."""

    path: str = "path"
    label: str = "label"
    split: str | None = None

    def require(self, header: Iterable[str], where: str) -> None:
        """Raises ValueError, naming the column and the keyword, if one is missing."""
        header = list(header)
        for keyword, name in (("path_column", self.path), ("label_column", self.label),
                              ("split_column", self.split)):
            if name is not None and name not in header:
                raise ValueError(f"{where} has no column {name!r} ({keyword}); its columns "
                                 f"are {', '.join(map(repr, header)) or 'none'}. Pass "
                                 f"{keyword}='<column>' (--{keyword.replace('_', '-')} "
                                 "on the command line) to name the right one.")


def _read_csv(csv_path: Path, columns: Columns) -> list[Row]:
    if not csv_path.is_file():
        raise FileNotFoundError(f"Label table {str(csv_path)!r} does not exist.")
    delimiter = "\t" if csv_path.suffix.lower() in TSV_EXTENSIONS else ","
    # utf-8-sig: spreadsheet programs start their CSV files with a byte-order mark.
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
        columns.require(reader.fieldnames, csv_path.name)
        return [Row(f"{csv_path.name} line {reader.line_num}", record[columns.path],
                    record[columns.label],
                    record[columns.split] if columns.split else None)
                for record in reader]


def _is_list(cell: Any) -> bool:
    """Whether a cell holds several values (a list, tuple, set or array of labels)."""
    return isinstance(cell, (list, tuple, set, frozenset)) or getattr(cell, "ndim", 0) > 0


def _text(cell: Any) -> str:
    """A scalar cell as stripped text; empty for a missing value (None, NaN)."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return ""
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))  # pandas turns an integer column with a gap into floats
    return (os.fspath(cell) if isinstance(cell, os.PathLike) else str(cell)).strip()


def _cell_labels(row: Row, delimiter: str | None) -> tuple[str, ...]:
    """The row's labels, stripped, empty ones and repeats left out."""
    if _is_list(row.label):
        values = [_text(v) for v in row.label]
    elif delimiter is not None:
        values = _text(row.label).split(delimiter)
    else:
        values = [_text(row.label)]
    labels = tuple(dict.fromkeys(v.strip() for v in values if v.strip()))
    if not labels:
        raise ValueError(f"{row.where}: the label of {_text(row.path)!r} is empty. Give every "
                         "image a label, or remove the row.")
    return labels


def _multi_label(rows: list[Row], delimiter: str | None, multi_label: bool | None) -> bool:
    listed = any(_is_list(row.label) for row in rows)
    if multi_label is False and delimiter is not None:
        raise ValueError(f"label_delimiter={delimiter!r} makes the table multi-label, but "
                         "multi_label=False was passed; leave one of them out.")
    if multi_label is None:
        return delimiter is not None or listed
    return multi_label


def _split_of(row: Row) -> str | None:
    if row.split is None:
        return None
    value = str(row.split).strip()
    if value.lower() not in SPLIT_VALUES:
        raise ValueError(f"{row.where}: split {value!r} is not one of train, val (or valid, "
                         "validation) or test.")
    return SPLIT_VALUES[value.lower()]


class _Resolver:
    """Rows' paths to files under ``root``: one ``lstat`` a row, each folder resolved once.

    A folder scan pays about as much per file; resolving every path in full
    (``os.path.realpath``) would cost one ``lstat`` per path component instead.
    """

    def __init__(self, root: Path, suffix: str):
        self.root, self.suffix = str(root), suffix
        self.bound = os.path.realpath(root).rstrip(os.sep) + os.sep
        self.real_folders: dict[str, str] = {}

    def __call__(self, row: Row) -> tuple[str, str | None]:
        """``(absolute path, reason to skip it or None)`` of the row's image."""
        value = _text(row.path)
        if not value:
            raise ValueError(f"{row.where}: the path is empty. Name an image in every row, "
                             "or remove the row.")
        path = os.path.normpath(os.path.join(self.root, value + self.suffix))
        folder, name = os.path.split(path)
        if folder not in self.real_folders:
            self.real_folders[folder] = os.path.realpath(folder)
        real = os.path.join(self.real_folders[folder], name)
        try:
            mode = os.lstat(real).st_mode
        except OSError:
            mode = None
        if mode is not None and stat.S_ISLNK(mode):  # a link: where it leads decides
            real = os.path.realpath(real)
            mode = os.stat(real).st_mode if os.path.exists(real) else None
        if not real.startswith(self.bound):
            return path, (f"{row.where}: outside the image folder {self.root} (paths are "
                          "relative to root=, which must hold every image); pass the folder "
                          "that holds them all as root=")
        if mode is None or not stat.S_ISREG(mode):
            what = "a folder, not an image" if mode is not None and stat.S_ISDIR(mode) \
                else "no such file"
            return path, f"{row.where}: {what}"
        return path, None


class _Entry:
    """One image of the table, its rows merged."""

    def __init__(self, row: Row, labels: tuple[str, ...], split: str | None):
        self.where, self.labels, self.split = row.where, labels, split


def _merge(entry: _Entry, row: Row, labels: tuple, split: str | None, multi: bool) -> None:
    if split != entry.split:
        raise ValueError(f"{row.where} puts {_text(row.path)!r} in split {split!r}, "
                         f"{entry.where} in {entry.split!r}; an image belongs to one split.")
    if multi:  # one row per (image, label) is a common way to write multi-label tables
        entry.labels = tuple(dict.fromkeys(entry.labels + labels))
    elif labels != entry.labels:
        raise ValueError(f"{row.where} labels {_text(row.path)!r} {labels[0]!r}, {entry.where} "
                         f"{entry.labels[0]!r}; a single-label image has one label. Remove "
                         "one of the rows, or pass label_delimiter=... / multi_label=True "
                         "if images may carry several labels.")


def _entries(rows: list[Row], root: Path, *, delimiter, multi: bool, suffix: str,
             skipped: list) -> dict[str, _Entry]:
    """``{path: entry}`` of the rows naming images; the others go to ``skipped``."""
    entries: dict[str, _Entry] = {}
    skipped_paths: set[str] = set()
    resolve = _Resolver(root, suffix)
    for row in rows:
        labels = _cell_labels(row, delimiter)
        if not multi and len(labels) > 1:
            raise ValueError(f"{row.where}: {_text(row.path)!r} has several labels "
                             f"{list(labels)}; pass multi_label=True for multi-label data.")
        split = _split_of(row)
        path, reason = resolve(row)
        if reason is not None:
            if path not in skipped_paths:
                skipped_paths.add(path)
                skipped.append((path, reason))
        elif path in entries:
            _merge(entries[path], row, labels, split, multi)
        else:
            entries[path] = _Entry(row, labels, split)
    return entries


def _listing(entries: dict[str, _Entry], multi: bool) -> dict[str, list]:
    """``{split: [(path, label)]}``; ``"all"`` (split here) unless rows name held-out splits."""
    def label(entry):
        return entry.labels if multi else entry.labels[0]

    if any(e.split not in (None, "train") for e in entries.values()):
        out: dict[str, list] = {}
        for path, entry in entries.items():
            out.setdefault(entry.split, []).append((path, label(entry)))
        return out
    return {"all": [(path, label(entry)) for path, entry in entries.items()]}


def _options(keywords: dict, multi: bool, entry_point: str) -> tuple[Options, dict]:
    """The resolved options and the stage keywords (``check``, ``shuffle``, ``manifest``)."""
    keywords = dict(keywords)
    stage = {name: keywords.pop(name, default) for name, default in _STAGE_KEYWORDS.items()}
    known = set(inspect.signature(resolve_options).parameters) - {"multi_label"}
    unknown = sorted(set(keywords) - known)
    if unknown:
        raise TypeError(f"{entry_point}() got unexpected keyword argument(s) {unknown}; it "
                        f"takes the options of from_folder: {', '.join(sorted(known))}, "
                        f"{', '.join(_STAGE_KEYWORDS)}.")
    keywords.setdefault("validation_split", DEFAULT_VALIDATION_SPLIT)
    keywords.setdefault("imbalance_warning", 3.0)
    return resolve_options(multi_label=multi, **keywords), stage


def _image_folder(paths: Iterable[str], root: Path) -> Path:
    """The deepest folder holding every listed image (the writes must stay out of it)."""
    folders = {os.path.dirname(p) for p in paths}
    return Path(os.path.commonpath(sorted(folders))) if folders else root


def _from_rows(rows: list[Row], root: Path, *, table: str, columns: Columns,
               label_delimiter: str | None, suffix: str, multi_label: bool | None,
               entry_point: str, keywords: dict) -> ImageData:
    if not rows:
        raise ValueError(f"The label table {table} has no rows.")
    multi = _multi_label(rows, label_delimiter, multi_label)
    options, stage = _options(keywords, multi, entry_point)
    skipped: list = []
    entries = _entries(rows, root, delimiter=label_delimiter, multi=multi, suffix=suffix,
                       skipped=skipped)
    check_writes_outside(_image_folder(entries, root), options)
    src = Listed(
        root=root, files=_listing(entries, multi), skipped=skipped, layout="table",
        expected=f"rows of {table} whose {columns.path!r} column names an image under "
                 f"{root}", source="table", multi_label=multi, manifest=stage["manifest"],
        two_classes=f"classes in the {columns.label!r} column", numeric_order=True,
        manifest_extra={"table": {
            "file": table, "path_column": columns.path, "label_column": columns.label,
            "label_delimiter": label_delimiter, "split_column": columns.split,
            "suffix": suffix}})
    if stage["manifest"] is not None:
        src.files, src.class_names, src.loaded = listed_in_manifest(
            stage["manifest"], root, src.files, skipped)
        if bool(src.loaded.get("multi_label")) != multi:
            raise ValueError(f"The manifest {stage['manifest']} is of "
                             f"{'multi' if src.loaded.get('multi_label') else 'single'}-label "
                             f"data, this table of {'multi' if multi else 'single'}-label "
                             "data; pass the same label_delimiter / multi_label as then.")
    return build_image_data(src, options, check=stage["check"], shuffle=stage["shuffle"])


def _open_root(root: str | os.PathLike) -> Path:
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder root={str(root)!r} does not exist or is not a "
                                "folder; it is the folder the table's paths are relative to.")
    return root


def from_csv(csv_path: str | os.PathLike, root: str | os.PathLike | None = None, *,
             path_column: str = "path", label_column: str = "label",
             label_delimiter: str | None = None, split_column: str | None = None,
             suffix: str = "", multi_label: bool | None = None,
             **options: Any) -> ImageData:
    """Train and validation ``tf.data`` pipelines from a CSV (or TSV) label table.

    Example:
        >>> data = pipelines.from_csv("train.csv", "train_images/", path_column="id",
        ...                           label_column="tags", label_delimiter=" ",
        ...                           suffix=".jpg", model="resnet50")

    Args:
        csv_path: The table: a header row, then one row per image (or per image and label,
            for multi-label data). ``.tsv`` and ``.tab`` files are tab-separated.
        root: The folder the paths are relative to; default: the table's folder. Rows
            naming files outside it are skipped.
        path_column: The column of image paths (or bare ids, with ``suffix``).
        label_column: The column of labels.
        label_delimiter: Splits a label cell into several labels (``" "`` for
            ``"cat dog"``): the data is then multi-label.
        split_column: A column of ``train`` / ``val`` (``valid``, ``validation``) /
            ``test`` per row, honoured as it is; without it (or when every row says
            ``train``) the split is made here, stratified and seeded.
        suffix: Appended to every path, e.g. ``".jpg"`` for ids.
        multi_label: True for multi-hot labels even without a delimiter (rows repeating an
            image add labels to it); None decides from ``label_delimiter``.
        **options: Every keyword of :func:`pipelines.from_folder` (``image_size``,
            ``batch_size``, ``validation_split``, ``seed``, ``augment``, ``model``,
            ``weights``, ``check``, ``out_dir``, ``manifest``, ``cache``, ``sampling``, ...)
            with the same defaults and meaning.

    Returns:
        An :class:`~pipelines.imagedata.ImageData` with ``source == "table"``; for
        multi-label data ``multi_label`` is True and labels are multi-hot.

    Raises:
        FileNotFoundError: If the table or ``root`` does not exist.
        ValueError: Naming the row, for a missing column, an empty path or label, an
            unknown split, or one image given different labels (single-label) or splits;
            and as :func:`pipelines.from_folder` does.
    """
    csv_path = Path(csv_path).expanduser().absolute()
    columns = Columns(path_column, label_column, split_column)
    rows = _read_csv(csv_path, columns)
    return _from_rows(rows, _open_root(root if root is not None else csv_path.parent),
                      table=str(csv_path), columns=columns, label_delimiter=label_delimiter,
                      suffix=suffix, multi_label=multi_label, entry_point="from_csv",
                      keywords=options)


def _dataframe_rows(df: Any, columns: Columns) -> list[Row]:
    try:
        import pandas
    except ImportError:
        raise ImportError("pipelines.from_dataframe needs pandas: pip install pandas (or use "
                          "pipelines.from_csv, which does not).") from None
    if not isinstance(df, pandas.DataFrame):
        raise TypeError(f"from_dataframe needs a pandas DataFrame; got {type(df).__name__}.")
    columns.require(map(str, df.columns), "The DataFrame")
    splits = df[columns.split] if columns.split else [None] * len(df)
    return [Row(f"DataFrame row {index!r}", path, label, split) for index, path, label, split
            in zip(df.index, df[columns.path], df[columns.label], splits)]


def _as_given(rows: list[Row]) -> tuple[list[Row], Path]:
    """Rows with absolute paths (relative ones from the current directory), and their root.

    The root is the deepest folder that holds every listed path.
    """
    absolute = [Row(r.where, os.path.abspath(_text(r.path)) if _text(r.path) else r.path,
                    r.label, r.split) for r in rows]
    folders = {os.path.dirname(r.path) for r in absolute if _text(r.path)}
    return absolute, Path(os.path.commonpath(sorted(folders))) if folders else Path.cwd()


def from_dataframe(df: Any, root: str | os.PathLike | None = None, *,
                   path_column: str = "path", label_column: str = "label",
                   label_delimiter: str | None = None, split_column: str | None = None,
                   suffix: str = "", multi_label: bool | None = None,
                   **options: Any) -> ImageData:
    """Train and validation ``tf.data`` pipelines from a pandas DataFrame label table.

    As :func:`from_csv`, with two differences: a label cell may be a list (or tuple, set,
    array) of labels, which makes the data multi-label; and without ``root`` the paths are
    taken as they are (relative ones from the current directory), ``root`` then being the
    deepest folder that holds them all.

    Args:
        df: One row per image (or per image and label).
        root: The folder the paths are relative to.
        path_column: As in :func:`from_csv`.
        label_column: As in :func:`from_csv`.
        label_delimiter: As in :func:`from_csv`.
        split_column: As in :func:`from_csv`.
        suffix: As in :func:`from_csv`.
        multi_label: As in :func:`from_csv`; None also decides from list-valued cells.
        **options: Every keyword of :func:`pipelines.from_folder`.

    Returns:
        An :class:`~pipelines.imagedata.ImageData` with ``source == "table"``.

    Raises:
        ImportError: If pandas is not installed.
        TypeError: If ``df`` is not a DataFrame.
        ValueError: As :func:`from_csv` does, naming the row by its index.
    """
    columns = Columns(path_column, label_column, split_column)
    rows = _dataframe_rows(df, columns)
    if root is None:
        rows, root = _as_given(rows)
    else:
        root = _open_root(root)
    return _from_rows(rows, root, table="DataFrame", columns=columns,
                      label_delimiter=label_delimiter, suffix=suffix,
                      multi_label=multi_label, entry_point="from_dataframe",
                      keywords=options)


__all__ = ["Columns", "Row", "from_csv", "from_dataframe"]
