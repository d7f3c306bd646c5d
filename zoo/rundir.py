"""The run directory: its file names, the ``run.json`` schema, writing, reading, opening.

A fine-tuning run leaves everything it made in one directory; this module is the one
place that knows its layout, so the writer (:func:`zoo.finetune`) and the readers
(``zoo evaluate``, ``zoo export``, ``zoo predict``) cannot drift apart::

    run_dir/
      run.json          {"schema": 2, "model": "<zoo name>", "class_names": [...],
                         "geometry": {"image_size": [h, w], "crop_fraction": f,
                                      "interpolation": "bilinear", "channels": 3},
                         ...: what the writer adds (weights, preprocessing, recipe, metrics,
                         data, status, ...)}
      best.keras        the model: raw pixels in [0, 255] in, softmax (or logits) out
      class_names.txt   one class name a line, for tools that read no JSON
      README.md         the model card (optional)
      samples/          a few images of the task, for the export's self-check (optional)
      history.csv       per-epoch metrics (written by Keras' CSVLogger during training)
      metrics.json      the report's figures (zoo.recipes.reports; evaluate writes one too)
      report.html       the report as one page, plots inline, readable offline
                        (zoo.recipes.report_page); it links the CSV files below
      per_class.csv     per-class precision, recall, F1, support (multi-label: and AP)
      confused_pairs.csv  the most-confused (true, predicted) class pairs
      suspect_labels.csv  validation images whose given label the model rejects with
                        confidence (candidate label errors), by margin
      top_losses.png    the validation images of the highest loss
      best.keras.sha256 the model file's sha256 (``sha256sum -c`` reads it), checked before
                        the file is opened; every model and weights file zoo writes has one
      start.json        while a run is unfinished: what it started with (model, weights,
                        recipe, data fingerprint) and the changes made on purpose since
      .zoo.lock         the one writer's lock (``fcntl.flock``; the holder's pid inside)

``geometry`` is the eval transform the data of the run used (``ImageData.geometry``), so
evaluation and export serve exactly what the model was validated with.

Schema 1 (zoo before ``schema`` existed) had no ``schema`` key and kept ``image_size``,
``crop_fraction`` and ``interpolation`` at the top level, each optional; such a run still
opens, the missing fields taken from the architecture's defaults as they were then.

:func:`open_model` opens a model for use from a run directory, a ``.keras`` file, a
``keras.Model`` or a zoo name with weights, and says what it knows about it: class names,
eval geometry, model card, the publisher's reference figures.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.registry import Geometry
from zoo.weights.readers import digest_path, file_sha256, recorded_digests, verify_recorded

log = logging.getLogger("zoo")

RUN_FILE = "run.json"
MODEL_FILE = "best.keras"
CARD_FILE = "README.md"
CLASS_NAMES_FILE = "class_names.txt"
SAMPLES_DIR = "samples"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
REPORT_PAGE = "report.html"
PER_CLASS_FILE = "per_class.csv"
CONFUSED_PAIRS_FILE = "confused_pairs.csv"
SUSPECT_LABELS_FILE = "suspect_labels.csv"
TOP_LOSSES_PLOT = "top_losses.png"
START_FILE = "start.json"
LOCK_FILE = ".zoo.lock"
SCHEMA = 2

# run.json keys write_run sets itself; **info may not override them.
_OWN_KEYS = ("schema", "model", "class_names", "geometry")
# Schema 1's top-level geometry fields.
_SCHEMA1_GEOMETRY = ("image_size", "crop_fraction", "interpolation", "channels")


@dataclass
class Run:
    """A run directory as :func:`read_run` found it.

    Attributes:
        path: The run directory.
        info: The whole of ``run.json`` (schema 1 as it was, schema 2 as written).
        model_name: The zoo model name.
        class_names: One name per model output.
        geometry: The eval geometry the run's data used.
        model_path: The ``.keras`` file.
        card_path: The model card, or None.
        samples_dir: The sample images folder, or None.
        schema: The ``run.json`` schema version it was read as.
    """

    path: Path
    info: dict
    model_name: str
    class_names: list[str]
    geometry: Geometry
    model_path: Path
    card_path: Path | None = None
    samples_dir: Path | None = None
    schema: int = SCHEMA


@dataclass
class Opened:
    """A model opened for use, with what is known about it (see :func:`open_model`).

    Attributes:
        model: The ``keras.Model``.
        model_name: Its zoo name.
        class_names: One name per output, or None when nothing says them.
        class_names_from: Where they came from: the ``run.json`` path, ``"weights"``
            (the weight set's label set) or ``"none"``.
        geometry: The eval geometry; ``image_size`` and ``channels`` are the model input's.
        card: The model card's text, or None.
        samples_dir: The run's sample images, or None.
        run: The run directory it came from, or None.
        description: A short name for messages and reports (a path, or ``name (tag)``).
        reference: The weights' published ``top1``/``top5``/``metrics_source``, or ``{}``.
        wnids: WordNet ids per output for ImageNet label sets, else None.
        multi_label: Whether the model is multi-label (a run's ``multi_label``): its
            outputs are logits, one sigmoid per class, not a softmax.
        thresholds: A multi-label run's per-class decision thresholds, or None.
        temperature: The run's fitted temperature (``run.json`` ``calibration``), or None
            when the model has no run or its run was not calibrated.
    """

    model: Any
    model_name: str
    class_names: list[str] | None
    class_names_from: str
    geometry: Geometry
    card: str | None = None
    samples_dir: Path | None = None
    run: Run | None = None
    description: str = ""
    reference: dict = field(default_factory=dict)
    wnids: list[str] | None = None
    multi_label: bool = False
    thresholds: list[float] | None = None
    temperature: float | None = None


# ------------------------------------------------------------------------------ writing


def write_run(run_dir: str | os.PathLike, *, model, model_name: str,
              class_names: Iterable[str], geometry: Geometry, card: str | None = None,
              samples: Iterable[str | os.PathLike] = (), **info) -> Path:
    """Writes a run directory that :func:`read_run` and :func:`open_model` read back.

    ``run.json`` is written last and atomically: a directory with a ``run.json`` is
    complete.

    Args:
        run_dir: The directory (created if missing).
        model: The ``keras.Model``, saved as ``best.keras``.
        model_name: Its zoo name.
        class_names: One name per model output.
        geometry: The eval geometry the data used.
        card: The model card's Markdown text, written as ``README.md`` (None: no card).
        samples: Image files copied into ``samples/`` (numbered, names kept).
        **info: More ``run.json`` keys (weights, preprocessing, recipe, metrics, data,
            status, ...); values must be JSON data (others are stored as strings).

    Returns:
        The run directory.

    Raises:
        TypeError: When ``info`` sets a key this function owns.
        ValueError: When the class names do not fit the model or cannot be stored.
    """
    clash = sorted(set(info) & set(_OWN_KEYS))
    if clash:
        raise TypeError(f"write_run sets {clash} itself; pass them as its own arguments.")
    if not isinstance(geometry, Geometry):
        raise TypeError(f"geometry must be a zoo.Geometry; got {type(geometry).__name__}.")
    names = [str(c) for c in class_names]
    check_class_names(names, int(model.outputs[0].shape[-1]), "write_run")
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    save_model(model, root / MODEL_FILE)
    write_text(root / CLASS_NAMES_FILE, "".join(f"{c}\n" for c in names))
    if card is not None:
        write_text(root / CARD_FILE, card)
    _copy_samples(samples, root / SAMPLES_DIR)
    document = {"schema": SCHEMA, "model": model_name, "class_names": names,
                "geometry": geometry.as_dict(), **info}
    write_json(root / RUN_FILE, document)
    return root


# ------------------------------------------------------------------- crash-safe writes

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)



def _sync(path: Path) -> None:
    # On the disk before the rename makes it the file: a power cut then leaves the old one.
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _staged(path: Path) -> Path:
    """A temporary name beside ``path`` keeping its suffixes (Keras checks them)."""
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


def _into_place(write, path: str | os.PathLike, digest: bool = False) -> Path:
    """Runs ``write(staging_path)``, then renames the staged file onto ``path``.

    A crash at any moment leaves either the old file or the new one, never half of one;
    a failed write leaves no staging file behind. With ``digest``, the file's sha256 is
    recorded beside it (``zoo.weights.readers.verify_recorded`` checks it).
    """
    path = Path(path)
    staging = _staged(path)
    try:
        write(staging)
        _sync(staging)
        if digest:
            new = file_sha256(staging)
            previous = recorded_digests(path) if path.exists() else None
            _record_digests(path, [new, *(previous or [])[:1]])
        os.replace(staging, path)
        if digest:
            _record_digests(path, [new])
    except OSError as error:
        # h5py reports a full disk as a plain OSError whose text holds errno 28.
        if error.errno in DISK_FULL or "No space left" in str(error):
            raise OSError(errno.ENOSPC, "No space left on device", str(path)) from error
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
    return path


def write_with(write, path: str | os.PathLike) -> Path:
    """Writes ``path`` crash-safely with ``write(staging_path)`` (a plot's ``savefig``).

    The staging name keeps ``path``'s suffix, so writers that infer the format from it
    (matplotlib, Keras) write the right one.
    """
    return _into_place(write, path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes a text file crash-safely (a temporary file renamed into place)."""
    return _into_place(lambda p: p.write_text(text, encoding="utf-8"), path)


def write_json(path: str | os.PathLike, document: Any) -> Path:
    """Writes JSON crash-safely; values that are not JSON data are stored as strings."""
    return write_text(path, json.dumps(document, indent=2, default=str))


def save_model(model, path: str | os.PathLike) -> Path:
    """Saves a ``keras.Model`` as ``.keras`` crash-safely, with its sha256 beside it."""
    return _into_place(model.save, path, digest=True)


def save_weights(model, path: str | os.PathLike) -> Path:
    """Saves a model's weights (``.weights.h5``, optimizer state included) crash-safely.

    Their sha256 is recorded beside them.
    """
    return _into_place(model.save_weights, path, digest=True)


def load_weights(model, path: str | os.PathLike) -> None:
    """Loads weights :func:`save_weights` wrote, checking their recorded sha256 first.

    Raises:
        zoo.weights.WeightsFileError: When the file is not what zoo wrote.
    """
    verify_recorded(path)
    model.load_weights(path)


# ----------------------------------------------------------------- recorded digests


def _record_digests(path: Path, digests: list[str]) -> None:
    # sha256sum's format; a second line holds the previous file's digest while the new
    # file is renamed into place, so a crash between the two renames is no false alarm.
    write_text(digest_path(path), "".join(f"{d}  {path.name}\n" for d in digests))


def free_space_line(error: OSError) -> str:
    """One line for a full disk: where, and how much space is left there.

    Args:
        error: The ``OSError`` (``ENOSPC`` or ``EDQUOT``) a write raised.
    """
    where = Path(error.filename or ".")
    folder = next((p for p in (where, *where.parents) if p.is_dir()), Path("."))
    try:
        free = shutil.disk_usage(folder).free
        left = f"{free / 1e6:.1f} MB free there"
    except OSError:
        left = "free space unknown"
    return (f"no space left on the device writing {where} ({left}). Free some space (or "
            f"choose another --out) and run the same command again to resume.")


# ------------------------------------------------------------------------- one writer


class RunDirBusy(FileExistsError):
    """Another process holds the run directory's lock."""


class RunLock:
    """The one writer's lock of a run directory, held until :meth:`release`.

    ``fcntl.flock`` on ``LOCK_FILE``: the kernel releases it when the process ends in any
    way (SIGKILL included), so a dead run never blocks the next one.

    Attributes:
        run_dir: The run directory.
        created: Whether this lock created the directory (then an empty one is removed
            when the run fails).
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.created = False
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Creates the directory if needed and takes the lock, or refuses at once.

        Raises:
            RunDirBusy: When another process holds it; the message names its pid.
        """
        self.created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirBusy(
                f"{self.run_dir} is in use by another zoo process (pid {holder}); one run "
                f"directory has one writer. Wait for it to finish, stop it (kill {holder}), "
                f"or choose another out_dir (--out).") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def set_aside(self) -> Path:
        """Renames the directory to ``<name>.old-<time>`` and locks a fresh, empty one.

        Returns:
            Where the old directory went.
        """
        kept = self.run_dir.with_name(f"{self.run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        # Still holding the old lock while renaming: no other process can start in between.
        self.run_dir.rename(kept)
        self.release()
        self.acquire()
        return kept

    def release(self, failed: bool = False) -> None:
        """Releases the lock.

        Args:
            failed: The run failed: when nothing but the lock is in the directory, the
                lock file is removed, and the directory too if this lock created it (a
                failed command leaves no empty run folder; a folder that was there stays).
        """
        if self._fd is None:
            return
        if failed:
            with contextlib.suppress(OSError):
                if [p.name for p in self.run_dir.iterdir()] == [LOCK_FILE]:
                    (self.run_dir / LOCK_FILE).unlink()
                    if self.created:
                        self.run_dir.rmdir()
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


@contextlib.contextmanager
def locked(run_dir: str | os.PathLike):
    """Holds the run directory's :class:`RunLock` inside the block.

    A directory the block created is removed again when the block fails and left it
    empty.
    """
    lock = RunLock(run_dir).acquire()
    try:
        yield lock
    except BaseException:
        lock.release(failed=True)
        raise
    lock.release()


# ------------------------------------------------------------------ the start record


def read_start(run_dir: str | os.PathLike) -> dict | None:
    """What an unfinished run started with (``START_FILE``), or None.

    An unreadable record (cut off, edited) counts as none, with a warning: it guards a
    resume, it holds no results.
    """
    path = Path(run_dir) / START_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        log.warning("%s is not valid JSON (%s); the options of the interrupted run cannot "
                    "be checked.", path, error)
        return None
    return record if isinstance(record, dict) else None


def write_start(run_dir: str | os.PathLike, record: dict) -> Path:
    """Writes the start record crash-safely."""
    return write_json(Path(run_dir) / START_FILE, record)


def resume_without_start(run_dir: str | os.PathLike, resume: str | None,
                         traces: Iterable[str], epoch: int) -> list[dict]:
    """What to do with an unfinished run that has no start record (zoo before the guard).

    Such a run's options cannot be checked against this call's, so it is not resumed
    silently: only on purpose (``resume="changed"``), recorded.

    Args:
        run_dir: The run directory (locked).
        resume: The caller's ``resume`` (None or ``"changed"``).
        traces: The names of the files and folders an unfinished run leaves.
        epoch: The epochs its history holds (where the resume starts).

    Returns:
        The changes to record: none when the directory holds no unfinished run; with
        ``resume="changed"``, one at ``epoch`` saying the earlier options are unknown.

    Raises:
        ValueError: For an unfinished run without a start record and no ``resume``,
            naming both ways on.
    """
    found = [name for name in traces if (Path(run_dir) / name).exists()]
    if not found:
        return []
    if resume == "changed":
        log.warning("Resuming %s at epoch %d on purpose; it started before zoo recorded a "
                    "run's options, so the earlier epochs' options are unknown.", run_dir, epoch)
        return [{"epoch": epoch, "options": {},
                 "unchecked": f"the run started before zoo recorded its options (no "
                              f"{START_FILE}); its earlier options are unknown"}]
    raise ValueError(
        f"{run_dir} holds an interrupted run ({', '.join(found)}) that started before zoo "
        f"recorded a run's options (it has no {START_FILE}), so whether this call's model, "
        f"weights, recipe and data are the ones it started with cannot be checked. Continue "
        f"it with this call's options on purpose with resume='changed' (--resume-changed), "
        f"recorded in run.json, or start afresh with overwrite=True (--overwrite), which "
        f"keeps the old run beside it, renamed.")


def differences(started: dict, now: dict, prefix: str = "") -> dict[str, tuple]:
    """The keys whose values differ between two start records, nested keys flattened.

    Args:
        started: The record the run started with.
        now: The record of this call.
        prefix: Prepended to the names (the path of the nested dictionaries).

    Returns:
        ``{name: (then, now)}``, nested keys named with dots (``recipe.batch_size``);
        ``changes`` (the record's own log) is left out.
    """
    found: dict[str, tuple] = {}
    for key in sorted(set(started) | set(now)):
        if key == "changes":
            continue
        then, current = started.get(key), now.get(key)
        if isinstance(then, dict) and isinstance(current, dict):
            found.update(differences(then, current, f"{prefix}{key}."))
        elif then != current:
            found[f"{prefix}{key}"] = (then, current)
    return found


def _copy_samples(samples: Iterable[str | os.PathLike], folder: Path) -> None:
    files = [Path(p) for p in samples]
    if not files:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for index, source in enumerate(files):
        # Numbered: two classes' folders may hold files of the same name.
        shutil.copyfile(source, folder / f"{index:02d}_{source.name}")


def check_class_names(names: list[str], outputs: int, origin: str) -> None:
    """Raises a clear ValueError unless there is one storable name per model output.

    Args:
        names: The class names.
        outputs: The model's output size.
        origin: Where the names came from, for the message.
    """
    if len(names) != outputs:
        raise ValueError(f"{len(names)} class names for a model with {outputs} outputs "
                         f"({origin}); give one name per output.")
    bad = [c for c in names if "\n" in c or "\r" in c]
    if bad:
        raise ValueError(f"Class names cannot contain line breaks (they are stored one a "
                         f"line): {bad[:3]}.")


# ------------------------------------------------------------------------------ reading


def read_info(run_dir: str | os.PathLike) -> dict | None:
    """The parsed ``run.json`` of a directory, or None when it has none.

    Raises:
        ValueError: When ``run.json`` is not readable JSON, saying what to do.
    """
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}); the run may have been cut off while "
            f"writing it, or the file was edited. Run the training again with "
            f"overwrite=True (--overwrite), or restore the file, or open the model file "
            f"{Path(run_dir) / MODEL_FILE} directly with model_name= (--model-name) and "
            f"class names (--labels).") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path} holds a JSON {type(info).__name__}, not the object a "
                         f"run.json is; restore the file or run the training again.")
    return info


def read_run(run_dir: str | os.PathLike) -> Run:
    """Reads a run directory: ``run.json`` (schema 2 or 1) and where its files are.

    Args:
        run_dir: A run directory.

    Returns:
        The :class:`Run`.

    Raises:
        FileNotFoundError: When ``run.json`` or the model file is missing.
        ValueError: When ``run.json`` is not valid JSON, lacks ``model`` or
            ``class_names``, has a bad geometry, or is of a newer schema.
    """
    root = Path(run_dir)
    info = read_info(root)
    if info is None:
        raise FileNotFoundError(
            f"{root} is not a run directory: it has no {RUN_FILE}. A run directory holds "
            f"{RUN_FILE} ({{'model': ..., 'class_names': [...]}}) and {MODEL_FILE}; "
            f"to use a bare model, pass the .keras file instead.")
    meta_path = root / RUN_FILE
    schema = info.get("schema", 1)
    if not isinstance(schema, int) or not 1 <= schema <= SCHEMA:
        raise ValueError(f"{meta_path} has schema {schema!r}; this zoo reads schemas 1 to "
                         f"{SCHEMA}. Upgrade zoo to read a run written by a newer one.")
    missing = [key for key in ("model", "class_names") if key not in info]
    if missing:
        raise ValueError(f"{meta_path} lacks {missing}; it needs 'model' (the zoo name) and "
                         f"'class_names' (one per output).")
    model_path = root / info.get("model_file", MODEL_FILE)
    if not model_path.is_file():
        raise FileNotFoundError(f"{meta_path} names the model file {model_path.name!r}, "
                                f"which is not in {root}.")
    card, samples = root / CARD_FILE, root / SAMPLES_DIR
    return Run(path=root, info=info, model_name=str(info["model"]),
               class_names=[str(c) for c in info["class_names"]],
               geometry=_run_geometry(info, schema, meta_path), model_path=model_path,
               card_path=card if card.is_file() else None,
               samples_dir=samples if samples.is_dir() else None, schema=schema)


def _run_geometry(info: dict, schema: int, meta_path: Path) -> Geometry:
    try:
        if schema >= 2:
            if not isinstance(info.get("geometry"), dict):
                raise ValueError("it has no 'geometry' object")
            return Geometry.from_dict(info["geometry"])
        # Schema 1 recorded what it had at the top level; the rest was the spec's then.
        import zoo

        recorded = {k: info[k] for k in _SCHEMA1_GEOMETRY if info.get(k) is not None}
        if "image_size" in recorded:
            # Schema 1 wrote the input shape, [height, width, channels].
            shape = tuple(recorded["image_size"])
            recorded["image_size"] = shape[:2]
            if len(shape) == 3:
                recorded.setdefault("channels", shape[2])
        return zoo.geometry(str(info["model"]), **recorded)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{meta_path}: cannot read the eval geometry: {error}. Fix the "
                         f"file or run the training again.") from None


# ------------------------------------------------------------------------------ opening


def load_model_file(path: str | os.PathLike):
    """Loads a ``.keras`` file (uncompiled) with zoo's custom layers registered.

    A file zoo wrote is checked against its recorded sha256 first
    (``zoo.weights.readers.verify_recorded``); a damaged file is a ``WeightsFileError``
    naming it.

    Raises:
        FileNotFoundError: When there is no file at ``path``.
        zoo.weights.WeightsFileError: When the file is damaged (truncated, changed bytes).
    """
    import keras

    import zoo.layers  # noqa: F401  (registers Normalize and the other custom layers)
    from zoo.weights.readers import damaged_file_errors, detect_format, probe_hdf5_metadata

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No model file at {path}.")
    # The recorded digest is checked, and a cut zip named as such (Keras would call it
    # "File not found"). A legacy .h5 model zoo did not write may hang HDF5: probed first.
    if detect_format(path) == "keras_h5" and recorded_digests(path) is None:
        probe_hdf5_metadata(path)
    with damaged_file_errors(path, ".keras model"):
        return keras.saving.load_model(path, compile=False)


def open_model(source, *, model_name: str | None = None, weights=None) -> Opened:
    """Opens a model for use, with its class names, eval geometry and model card.

    Args:
        source: A run directory, a ``.keras`` file (its directory's ``run.json`` is used
            when that run holds this file), a ``keras.Model``, or a zoo model name (then
            ``weights`` is needed).
        model_name: The zoo name, when the model's own name is not registered (a bare
            ``.keras`` file or ``keras.Model``); it also overrides a run's.
        weights: With a zoo name: a catalog tag or a weights file. With a bare model: the
            weights it carries, whose eval geometry then applies.

    Returns:
        The :class:`Opened` model.

    Raises:
        FileNotFoundError: For a path that is neither a run directory nor a ``.keras`` file.
        ValueError: For a model whose zoo name is unknown (pass ``model_name=``), a zoo
            name without weights, or a run directory that cannot be read.
    """
    import keras

    if isinstance(source, keras.Model):
        return _open_bare(source, model_name, weights, source.name)
    path = Path(source)
    if path.is_dir():
        return _open_run(read_run(path), model_name)
    if path.suffix == ".keras":
        run = _run_holding(path)
        if run is not None:
            return _open_run(run, model_name, load_model_file(path))
        return _open_bare(load_model_file(path), model_name, weights, str(path))
    if path.exists() or os.sep in str(source) or path.suffix:
        raise FileNotFoundError(f"{path} is neither a run directory (with {RUN_FILE}) nor "
                                f"a .keras file.")
    return _open_zoo_name(str(source), weights)


def _run_holding(model_path: Path) -> Run | None:
    """The run directory ``model_path`` is the model of, if it is one."""
    if read_info(model_path.parent) is None:
        return None
    run = read_run(model_path.parent)
    return run if run.model_path.resolve() == model_path.resolve() else None


def _fitted(geometry: Geometry, model) -> Geometry:
    """The geometry with the model input's size and channels, when the input fixes them."""
    shape = tuple(model.input_shape)
    if len(shape) != 4:
        return geometry
    size = (shape[1], shape[2]) if None not in shape[1:3] else None
    return geometry.replace(image_size=size, channels=shape[3])


def _open_run(run: Run, model_name: str | None, model=None) -> Opened:
    model = model if model is not None else load_model_file(run.model_path)
    name = model_name or run.model_name
    card = run.card_path.read_text(encoding="utf-8") if run.card_path else None
    return Opened(model=model, model_name=name, class_names=list(run.class_names),
                  class_names_from=str(run.path / RUN_FILE),
                  geometry=_fitted(run.geometry, model), card=card,
                  samples_dir=run.samples_dir, run=run, description=str(run.model_path),
                  multi_label=bool(run.info.get("multi_label", False)),
                  thresholds=run.info.get("thresholds"), temperature=_temperature(run.info))


def _temperature(info: dict) -> float | None:
    """A run's fitted temperature: ``calibration.temperature`` when its method is one."""
    record = info.get("calibration") or {}
    if record.get("method") != "temperature":
        return None  # not calibrated (multi-label, no validation split) or an older run
    return float(record["temperature"])


def _registered_name(name: str, shown: str) -> str:
    from zoo.models import get_spec

    try:
        return get_spec(name).name
    except ValueError:
        raise ValueError(
            f"Cannot tell which zoo model {shown!r} is, so its eval transform (crop "
            f"fraction, interpolation) is unknown. Pass model_name= (--model-name), e.g. "
            f"'resnet50', or use a run directory.") from None


def _open_bare(model, model_name: str | None, weights, description: str) -> Opened:
    import zoo

    name = _registered_name(model_name or model.name, model_name or model.name)
    geometry = _fitted(zoo.geometry(name, weights), model)
    return Opened(model=model, model_name=name, class_names=None, class_names_from="none",
                  geometry=geometry, description=description)


def _open_zoo_name(name: str, weights) -> Opened:
    import zoo
    from zoo import weights as weights_module
    from zoo.models import get_spec

    spec = get_spec(name)
    if weights is None:
        raise ValueError(f"Opening the zoo model {name!r} needs weights (--weights imagenet, "
                         "another tag, or a file): a random network has nothing to measure "
                         "or serve.")
    weight_set = weights_module.resolve(spec, weights)
    # The weights say at which size they were evaluated; a local file gets the spec's.
    geometry = zoo.geometry(spec.name, weight_set)
    model = zoo.build(spec.name, weights=weight_set,
                      input_shape=(*geometry.image_size, geometry.channels))
    names, wnids, origin = weight_set.class_names(), None, "weights"
    outputs = int(model.outputs[0].shape[-1])
    if weight_set.labels == "imagenet-1k" or (names is None and outputs == 1000):
        from zoo.data import imagenet_class_names, imagenet_wnids

        if names is None:
            log.info("The weights name no label set; their 1000 outputs are taken to be "
                     "ImageNet-1k's classes.")
        names, wnids = imagenet_class_names(), imagenet_wnids()
    if names is None:
        origin = "none"
    reference = {k: getattr(weight_set, k) for k in ("top1", "top5", "metrics_source")}
    return Opened(model=model, model_name=spec.name, class_names=names,
                  class_names_from=origin,
                  geometry=_fitted(geometry, model),
                  description=f"{spec.name} ({weight_set.tag})", reference=reference,
                  wnids=wnids)
