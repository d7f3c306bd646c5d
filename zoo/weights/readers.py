"""Readers for weight files, all returning NumPy arrays and none needing torch.

* PyTorch ``.pth``/``.pt`` state dicts, in the zip format (torch >= 1.6) and the legacy
  pickle stream older torchvision files use (AlexNet's, VGG's). Both are pickles; they are
  read by :class:`RestrictedUnpickler`, which resolves only an allow-list of names to
  harmless stand-ins of our own, so a file can never run code while it is read.
* safetensors files, by a small parser of the format (an 8-byte header length, a JSON
  header, raw little-endian data), which also handles bfloat16.
* Keras HDF5 weights: the legacy Keras 1/2 layout keras.applications publishes (root
  attribute ``layer_names``, one group per layer with ``weight_names``), the same inside a
  whole-model ``.h5`` (``model_weights`` group), Keras 3 ``.weights.h5`` files
  (``layers/<key>/vars/<i>``), and ``.keras`` archives (a zip holding ``model.weights.h5``
  and ``config.json``).
"""

from __future__ import annotations

import _compat_pickle
import collections
import contextlib
import hashlib
import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle asked for something a state dict never needs, and was refused."""


class WeightsFileError(ValueError):
    """A weight file is damaged, of an unknown kind, or not the kind its name says."""


# --------------------------------------------------------------------------------------
# Damaged files
# --------------------------------------------------------------------------------------

# What the libraries raise on a file whose bytes are cut short or changed: h5py an OSError
# ("truncated file", "bad object header"), a KeyError or a RuntimeError when HDF5 cannot
# follow its own addresses; zipfile BadZipFile (no central directory at the end, a member
# failing its CRC-32); zlib.error for a member that does not inflate; struct.error and
# EOFError for a header that ends early; pickle errors and bad UTF-8 or JSON for changed
# bytes inside a header. None of them names the file.
_DAMAGE_ERRORS = (OSError, KeyError, RuntimeError, zipfile.BadZipFile, zlib.error,
                  struct.error, EOFError, pickle.UnpicklingError, UnicodeDecodeError,
                  json.JSONDecodeError)
_HDF5_TRUNCATED = re.compile(r"truncated file: eof = (\d+).*stored_eof = (\d+)")
_BAD_CRC = re.compile(r"Bad CRC-32 for file (.+)$")


@contextlib.contextmanager
def damaged_file_errors(path: str | os.PathLike, kind: str) -> Iterator[None]:
    """Turns a library's error on a damaged file into a :class:`WeightsFileError`.

    Args:
        path: The file being read, named in the message.
        kind: What the file is read as (``"HDF5 weights"``, ``".keras archive"``).

    Raises:
        WeightsFileError: Naming the file, what is wrong with it and what to do.
    """
    try:
        yield
    except (WeightsFileError, FileNotFoundError):
        raise  # already named, or not there at all (the callers say so)
    except PermissionError:
        raise WeightsFileError(
            f"Cannot read the weight file {os.fspath(path)!r}: permission denied. Make it "
            "readable (chmod u+r) or copy it to a place you can read.") from None
    except _DAMAGE_ERRORS as error:
        if isinstance(error, UnsafePickleError):
            raise
        raise WeightsFileError(damage_message(path, kind, error)) from None


def damage_message(path: str | os.PathLike, kind: str, error: BaseException) -> str:
    """The message for a damaged weight file: which file, what is wrong, what to do.

    Args:
        path: The file.
        kind: What it was read as.
        error: What the library raised.

    Returns:
        One line.
    """
    text = str(error)
    truncated = _HDF5_TRUNCATED.search(text)
    bad_crc = _BAD_CRC.search(text)
    cut = "cut short, as an interrupted download, copy or save leaves a file"
    # A stored size past any real disk is a changed byte in the superblock, not a cut.
    if truncated and int(truncated[1]) < int(truncated[2]) < 1 << 44:
        what = (f"it is truncated, {int(truncated[1]):,} of the {int(truncated[2]):,} bytes "
                f"its header records are there ({cut})")
    elif bad_crc:
        what = (f"its member {bad_crc[1]} fails its CRC-32 check: bytes changed after the "
                "file was written (a bit flip on disk or in transfer, or an edit)")
    elif isinstance(error, zipfile.BadZipFile):
        what = (f"the zip directory at its end is missing or unreadable ({text}): the file "
                f"is probably truncated, {cut}")
    elif isinstance(error, (EOFError, struct.error)):
        what = f"it ends early ({text or type(error).__name__}): it is truncated, {cut}"
    else:
        what = (f"its contents are unreadable ({type(error).__name__}: {text}): it was cut "
                "short or its bytes changed")
    return (f"Weight file {os.fspath(path)!r} ({kind}) is damaged: {what}. zoo did not "
            "change it; replace it with a good copy (copy or download it again, or save it "
            "again from the model that wrote it).")


# --------------------------------------------------------------------------------------
# Recorded digests
# --------------------------------------------------------------------------------------

# HDF5 can loop for ever on one changed byte of a file's metadata (reading an attribute of
# a LeNet .weights.h5 written by Keras, its byte 2056 flipped, never returns) and a
# .weights.h5 has no checksum of its own. So every model and weights file zoo writes gets
# its sha256 recorded beside it (zoo.rundir), and is checked before anything parses it.
DIGEST_SUFFIX = ".sha256"


def digest_path(path: str | os.PathLike) -> Path:
    """The file holding ``path``'s recorded sha256 (``<name>.sha256``, sha256sum's format)."""
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, in hex."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def recorded_digests(path: str | os.PathLike) -> list[str] | None:
    """The sha256 digests recorded for ``path`` when zoo wrote it, or None (no record)."""
    try:
        text = digest_path(path).read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return [line.split()[0].lower() for line in text.splitlines() if line.strip()] or None


def verify_recorded(path: str | os.PathLike) -> bool:
    """Checks a file against the sha256 zoo recorded when it wrote it.

    Args:
        path: The file.

    Returns:
        Whether there was a record to check against (False: a file zoo did not write).

    Raises:
        WeightsFileError: When the file's bytes are not the ones zoo wrote, naming the
            file, the record and what to do.
    """
    recorded = recorded_digests(path)
    if recorded is None:
        return False
    actual = file_sha256(path)
    if actual not in recorded:
        raise WeightsFileError(
            f"{os.fspath(path)!r} is damaged: its sha256 {actual[:16]}... is not the "
            f"{recorded[0][:16]}... recorded in {digest_path(path).name} when zoo wrote it "
            f"(cut short, or bytes changed on disk or in a copy). zoo did not change it; "
            f"replace it with a good copy, or train again (--overwrite).")
    return True


# --------------------------------------------------------------------------------------
# Format detection
# --------------------------------------------------------------------------------------

_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# torch's legacy format starts with a pickled magic number (protocol 2: b"\x80\x02\x8a\x0a").
_LEGACY_TORCH_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C


def detect_format(path: str | os.PathLike) -> str:
    """Tells the kind of a weight file from its first bytes (the extension only breaks ties).

    Args:
        path: A local file.

    Returns:
        One of ``"torch"`` (zip or legacy state dict), ``"safetensors"``, ``"keras_h5"``
        (legacy or Keras 3 HDF5 weights) or ``"keras"`` (a ``.keras`` archive).

    A file zoo wrote is checked against its recorded sha256 first (:func:`verify_recorded`).

    Raises:
        FileNotFoundError: If the file does not exist.
        WeightsFileError: If it is none of these, or not what zoo wrote.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Weight file {path!r} does not exist.")
    verify_recorded(path)
    with damaged_file_errors(path, "weight file"), open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise WeightsFileError(
            f"Weight file {path!r} is empty (0 bytes): a download, copy or save that never "
            "wrote it. Replace it with a good copy.")
    if head.startswith(_HDF5_MAGIC):
        return "keras_h5"
    if head.startswith(_ZIP_MAGIC):
        with damaged_file_errors(path, "zip archive: .keras or torch .pth"), \
                zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if "model.weights.h5" in names:
            return "keras"
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        raise WeightsFileError(
            f"{path!r} is a zip archive but neither a .keras file (no model.weights.h5) nor "
            f"a torch state dict (no data.pkl); it holds {names[:5]}.")
    if len(head) >= 9:
        # Before the pickle test: a header length can start with the byte 0x80 too.
        (header_size,) = struct.unpack("<Q", head[:8])
        if 2 <= header_size <= os.path.getsize(path) - 8 and head[8:9] == b"{":
            return "safetensors"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "torch"  # a pickle (PROTO opcode): torch's legacy format
    raise WeightsFileError(
        f"Cannot tell what kind of weight file {path!r} is (first bytes {head[:8]!r}). "
        "zoo reads keras.applications .h5, Keras .weights.h5 and .keras, torch .pth/.pt "
        "state dicts and .safetensors files.")


# --------------------------------------------------------------------------------------
# PyTorch state dicts without torch
# --------------------------------------------------------------------------------------

# Storage classes a state dict may name, and the NumPy type of their elements.
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("float32"),
    "DoubleStorage": np.dtype("float64"),
    "HalfStorage": np.dtype("float16"),
    "BFloat16Storage": np.dtype("uint16"),  # widened to float32 after reading
    "LongStorage": np.dtype("int64"),
    "IntStorage": np.dtype("int32"),
    "ShortStorage": np.dtype("int16"),
    "CharStorage": np.dtype("int8"),
    "ByteStorage": np.dtype("uint8"),
    "BoolStorage": np.dtype("bool"),
}


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.FloatStorage`` and friends: only a name and a dtype."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return _STORAGE_DTYPES[self.name]


@dataclass
class _Storage:
    """A flat buffer of elements, filled when its bytes have been read."""

    key: str
    storage_type: _StorageType
    numel: int | None = None
    data: np.ndarray | None = None
    # For legacy views into another storage: (root storage, element offset).
    view_of: tuple[_Storage, int] | None = None

    def array(self) -> np.ndarray:
        if self.view_of is not None:
            root, offset = self.view_of
            return root.array()[offset:offset + (self.numel or 0)]
        if self.data is None:
            raise WeightsFileError(f"Storage {self.key!r} is referenced but has no data.")
        return self.data


@dataclass
class _LazyTensor:
    """A tensor whose storage may not have been read yet (legacy files store data last)."""

    storage: _Storage
    offset: int
    size: tuple
    stride: tuple

    def materialise(self) -> np.ndarray:
        flat = self.storage.array()
        size = tuple(int(s) for s in self.size)
        stride = tuple(int(s) for s in self.stride)
        if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
            raise WeightsFileError(
                f"Malformed tensor in storage {self.storage.key!r}: size {size}, stride {stride}.")
        count = int(np.prod(size)) if size else 1
        if count == 0:
            return np.zeros(size, dtype=_native(flat.dtype))
        # Bounds check before as_strided, which would otherwise read past the buffer.
        last = self.offset + sum((n - 1) * s for n, s in zip(size, stride))
        if self.offset < 0 or last >= flat.shape[0]:
            raise WeightsFileError(
                f"Tensor of size {size} at offset {self.offset} does not fit its storage "
                f"{self.storage.key!r} of {flat.shape[0]} elements: the file is damaged.")
        if stride == _contiguous_strides(size):
            # The common case: a read-only view of the file's buffer, no copy (copying
            # VGG's 500 MB costs seconds of page faults).
            array = flat[self.offset:self.offset + count].reshape(size)
            array = array.astype(_native(flat.dtype), copy=False)
        else:
            array = np.array(np.lib.stride_tricks.as_strided(
                flat[self.offset:], shape=size, strides=[s * flat.itemsize for s in stride],
                writeable=False), dtype=_native(flat.dtype))
        if self.storage.storage_type.name == "BFloat16Storage":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


def _contiguous_strides(size: tuple) -> tuple:
    strides, step = [], 1
    for n in reversed(size):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def _native(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("=")


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return data


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that knows only what a PyTorch state dict is made of.

    ``find_class`` is the only way a pickle can reach a Python callable, so it resolves an
    allow-list of names (``collections.OrderedDict``, torch's tensor-rebuild functions and
    storage classes) to stand-ins defined in this module, and refuses everything else:
    no torch import happens and nothing from the file is ever executed.

    Args:
        file: A binary file object positioned at the start of a pickle.
        persistent_load: Resolves torch's ``('storage', ...)`` persistent ids.
        source: The file's name, for error messages.
    """

    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
        # torch.Size is a tuple subclass; a plain tuple is what it stands for.
        ("torch", "Size"): tuple,
        **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
    }

    def __init__(self, file, *, persistent_load, source: str):
        super().__init__(file)
        self._persistent_load = persistent_load
        self._source = source

    def find_class(self, module: str, name: str):
        # Protocol 2 pickles name Python 2 modules (__builtin__); report Python 3's names.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        allowed = self._ALLOWED.get((module, name))
        if allowed is not None:
            return allowed
        if module.split(".")[0] in ("torch", "torchvision") and name[:1].isupper():
            hint = ("It looks like a whole pickled model (torch.save(model)); zoo reads "
                    "state dicts only: re-save it with torch.save(model.state_dict(), path).")
        else:
            hint = ("A weights file never needs it: the file may be malicious, or it is not a "
                    "plain state dict.")
        raise UnsafePickleError(
            f"Refused to load {self._source!r}: its pickle asks for {module}.{name}. {hint} "
            "Nothing from the file was run.")

    def persistent_load(self, pid):
        return self._persistent_load(pid)


def _storage_from_pid(pid, storages: dict, source: str) -> _Storage:
    if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
        kind = pid[0] if isinstance(pid, tuple) and pid else pid
        if kind == "module":
            raise UnsafePickleError(
                f"Refused to load {source!r}: it is a whole pickled model with its source "
                "code; zoo reads state dicts only (torch.save(model.state_dict(), path)).")
        raise WeightsFileError(f"{source!r}: unknown persistent id {kind!r} in the pickle.")
    storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], pid[4]
    if not isinstance(storage_type, _StorageType):
        raise WeightsFileError(f"{source!r}: storage {key!r} has unknown type {storage_type!r}.")
    view = pid[5] if len(pid) > 5 else None
    if key not in storages:
        storages[key] = _Storage(key, storage_type, numel=int(numel))
    root = storages[key]
    if view is not None:
        view_key, offset, view_size = view
        if view_key not in storages:
            storages[view_key] = _Storage(str(view_key), storage_type, numel=int(view_size),
                                          view_of=(root, int(offset)))
        return storages[view_key]
    return root


def _materialise(obj):
    if isinstance(obj, _LazyTensor):
        return obj.materialise()
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for key, value in obj.items():
            out[key] = _materialise(value)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v) for v in obj)
    return obj


def read_torch(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict (zip or legacy format) into NumPy arrays, without torch.

    Checkpoints that wrap the state dict (``{"state_dict": ...}``, ``{"model": ...}``) are
    unwrapped, and DataParallel's ``module.`` prefix is removed.

    Args:
        path: A ``.pth``/``.pt`` file written by ``torch.save(state_dict, path)``.

    Returns:
        ``{key: array}`` in the file's order.

    Raises:
        UnsafePickleError: If the pickle asks for anything but tensors, storages and
            containers (a malicious file, or a whole pickled model).
        WeightsFileError: If the file is damaged or holds no tensors.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(_ZIP_MAGIC):
        with damaged_file_errors(path, "torch state dict, zip format"):
            state = _read_torch_zip(path)
    elif tarfile.is_tarfile(path):
        raise WeightsFileError(
            f"{path!r} is in torch's tar format (torch < 0.4), which zoo does not read; load "
            "it with torch and re-save it with torch.save(state_dict, path).")
    else:
        state = _read_torch_legacy(path)
    return _flatten_state_dict(state, path)


def _read_torch_zip(path: str):
    storages: dict[str, _Storage] = {}
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl")]
        if not pickles:
            raise WeightsFileError(f"{path!r} is a zip file without data.pkl: not a torch file.")
        prefix = pickles[0][: -len("data.pkl")]
        if any(n.startswith(prefix + "code/") for n in names):
            raise WeightsFileError(
                f"{path!r} is a TorchScript archive (torch.jit.save), not a state dict; save "
                "the weights with torch.save(model.state_dict(), path) and load that.")
        byteorder = "little"
        if f"{prefix}byteorder" in names:
            byteorder = archive.read(f"{prefix}byteorder").decode().strip()
        with archive.open(pickles[0]) as f:
            unpickler = RestrictedUnpickler(
                f, source=path,
                persistent_load=lambda pid: _storage_from_pid(pid, storages, path))
            state = unpickler.load()
        for key, storage in storages.items():
            if storage.view_of is not None:
                continue
            member = f"{prefix}data/{key}"
            if member not in names:
                raise WeightsFileError(f"{path!r} lacks the data of storage {key!r}.")
            dtype = storage.storage_type.dtype.newbyteorder("<" if byteorder == "little"
                                                            else ">")
            raw = archive.read(member)
            if len(raw) % dtype.itemsize:
                raise WeightsFileError(f"{path!r}: storage {key!r} has a partial element.")
            storage.data = np.frombuffer(raw, dtype=dtype)
    return _materialise(state)


def _read_exact(f, size: int, path: str, key) -> bytes:
    raw = f.read(size)
    if len(raw) != size:
        raise WeightsFileError(f"{path!r} ends inside storage {key!r}: the file is truncated.")
    return raw


def _read_torch_legacy(path: str):
    storages: dict[str, _Storage] = {}

    def load(f, unreadable: str):
        """The next pickled record; ``unreadable`` says what it means if it cannot be read."""
        try:
            return RestrictedUnpickler(
                f, source=path,
                persistent_load=lambda pid: _storage_from_pid(pid, storages, path)).load()
        except (pickle.UnpicklingError, EOFError, ValueError) as error:
            if isinstance(error, UnsafePickleError):
                raise
            raise WeightsFileError(f"{path!r} {unreadable}: {error}") from None

    # After the magic number, a record that cannot be read means the file was cut short.
    damaged = "is a legacy torch file cut short or damaged (truncated): a record cannot be read"
    with open(path, "rb") as f:
        magic = load(f, "is not a torch state dict (zip or legacy format)")
        if magic != _LEGACY_TORCH_MAGIC_NUMBER:
            raise WeightsFileError(
                f"{path!r} is a pickle but not a torch file (no torch magic number).")
        protocol = load(f, damaged)
        if protocol != 1001:
            raise WeightsFileError(f"{path!r}: unsupported legacy torch protocol {protocol!r}.")
        sys_info = load(f, damaged)
        little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) \
            else True
        state = load(f, damaged)
        keys = load(f, damaged)
        for key in keys:
            storage = storages.get(str(key))
            if storage is None:
                raise WeightsFileError(f"{path!r}: data for unknown storage {key!r}.")
            (numel,) = struct.unpack("<q" if little else ">q", _read_exact(f, 8, path, key))
            dtype = storage.storage_type.dtype.newbyteorder("<" if little else ">")
            raw = _read_exact(f, numel * dtype.itemsize, path, key)
            storage.data = np.frombuffer(raw, dtype=dtype)
    return _materialise(state)


def _flatten_state_dict(state, path: str) -> dict[str, np.ndarray]:
    # Common checkpoint wrappers around the state dict.
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict):
        raise WeightsFileError(
            f"{path!r} holds a {type(state).__name__}, not a state dict of tensors.")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, np.ndarray)}
    if not tensors:
        raise WeightsFileError(f"{path!r} holds no tensors.")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


# --------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
    "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Reads a ``.safetensors`` file.

    Args:
        path: The file.

    Returns:
        ``({name: array}, metadata)``; bfloat16 tensors are widened to float32.

    Raises:
        WeightsFileError: If the file is truncated, or the header or the data offsets are
            malformed.
    """
    path = os.fspath(path)
    with damaged_file_errors(path, "safetensors"):
        return _read_safetensors(path)


def _read_safetensors(path: str) -> tuple[dict[str, np.ndarray], dict]:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        (header_size,) = struct.unpack("<Q", f.read(8))
        if header_size > size - 8:
            raise WeightsFileError(f"{path!r}: safetensors header larger than the file.")
        try:
            header = json.loads(f.read(header_size))
        except json.JSONDecodeError as error:
            raise WeightsFileError(f"{path!r}: unreadable safetensors header: {error}") from None
        data = f.read()
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, info in header.items():
        dtype = info.get("dtype")
        if dtype not in _SAFETENSORS_DTYPES:
            raise WeightsFileError(f"{path!r}: tensor {name!r} has unsupported dtype {dtype!r}.")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        itemsize = np.dtype(_SAFETENSORS_DTYPES[dtype]).itemsize
        if not 0 <= begin <= end <= len(data) or end - begin != int(np.prod(shape)) * itemsize:
            raise WeightsFileError(f"{path!r}: tensor {name!r} has bad data offsets.")
        array = np.frombuffer(data, dtype=_SAFETENSORS_DTYPES[dtype], count=(end - begin)
                              // itemsize, offset=begin).reshape(shape)
        if dtype == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = np.array(array, dtype=_native(array.dtype))
    return tensors, metadata


# --------------------------------------------------------------------------------------
# Keras HDF5 and .keras
# --------------------------------------------------------------------------------------


@dataclass
class LayerWeights:
    """The weights one Keras layer had when a file was written.

    Attributes:
        name: The layer's name in the file.
        arrays: Its variables in the layer's order (kernel, bias; gamma, beta, moving
            mean, moving variance).
        variable_names: The file's names of those variables (``"block1_conv1/kernel:0"``).
        key: Keras 3 only: the file's group key (``"conv2d_3"``), which encodes the layer's
            class and its rank among the model's layers of that class.
    """

    name: str
    arrays: list[np.ndarray]
    variable_names: list[str] = field(default_factory=list)
    key: str | None = None


@dataclass
class KerasWeights:
    """What a Keras weights file holds: its layers with weights, in the file's order.

    Attributes:
        layers: Layers with at least one variable.
        layout: ``"legacy"`` (Keras 1/2 HDF5, ordered like the model's layers) or
            ``"keras3"`` (``.weights.h5``: groups sorted by key, not by model order).
        keras_version: As recorded in the file, if at all.
        config: The model config of a ``.keras`` archive (None otherwise).
    """

    layers: list[LayerWeights]
    layout: str
    keras_version: str | None = None
    config: dict | None = None


def _text(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def read_keras_h5(path: str | os.PathLike | io.BytesIO, *, source: str | None = None
                  ) -> KerasWeights:
    """Reads a Keras HDF5 weights file in the legacy layout or the Keras 3 layout.

    Args:
        path: A file name or an open binary file object.
        source: Name of the file for error messages.

    Returns:
        The layers with weights.

    Raises:
        WeightsFileError: If the file is damaged (truncated, changed bytes), or HDF5 but
            not Keras weights.
    """
    import h5py

    if source is None:
        source = "<in-memory file>" if isinstance(path, io.BytesIO) else os.fspath(path)
    if not isinstance(path, io.BytesIO) and not verify_recorded(path):
        probe_hdf5_metadata(path)
    with damaged_file_errors(source, "HDF5 weights"):
        return _read_h5(h5py.File(path, "r"), source)


# Reads every group's and dataset's attributes, not the data: where HDF5 was seen to hang.
_PROBE = """
import sys, h5py
def attrs(name, obj):
    for key in obj.attrs:
        obj.attrs[key]
with h5py.File(sys.argv[1], "r") as f:
    attrs("/", f)
    f.visititems(attrs)
"""
PROBE_TIMEOUT = 60.0


def probe_hdf5_metadata(path: str | os.PathLike, timeout: float | None = None) -> None:
    """Reads an HDF5 file's metadata in a child process first, so a hang is a clear error.

    For files zoo did not write (no recorded sha256). It costs a Python start and an
    h5py import (a fraction of a second), not a read of the data.

    Args:
        path: The HDF5 file.
        timeout: Seconds the metadata may take (None: ``PROBE_TIMEOUT``).

    Raises:
        WeightsFileError: When the HDF5 library does not finish in ``timeout`` seconds or
            crashes on the file. Other failures are left to the real read, which names them.
    """
    timeout = PROBE_TIMEOUT if timeout is None else timeout
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, os.fspath(path)],
                              capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        what = f"the HDF5 library did not finish reading its metadata in {timeout:.0f} s"
    else:
        if done.returncode >= 0:
            return
        what = f"the HDF5 library crashed reading it (signal {-done.returncode})"
    raise WeightsFileError(
        f"Weight file {os.fspath(path)!r} (HDF5 weights) is damaged: {what}, as it does on "
        "changed bytes in a file's metadata. zoo did not change it; replace it with a good "
        "copy (copy or download it again, or save it again from the model that wrote it).")


def _read_h5(file, source: str) -> KerasWeights:
    with file as f:
        group = f.get("model_weights", f)
        if "layer_names" in group.attrs:
            layers = []
            for name in group.attrs["layer_names"]:
                name = _text(name)
                layer_group = group[name]
                weight_names = [_text(w) for w in layer_group.attrs.get("weight_names", [])]
                if weight_names:
                    arrays = [np.asarray(layer_group[w]) for w in weight_names]
                    layers.append(LayerWeights(name, arrays, weight_names))
            version = group.attrs.get("keras_version", f.attrs.get("keras_version"))
            return KerasWeights(layers, "legacy", _text(version) if version is not None
                                else None)
        if "layers" in group:
            layers = []
            _collect_keras3(group["layers"], layers)
            return KerasWeights(layers, "keras3")
    raise WeightsFileError(
        f"{source!r} is an HDF5 file but holds no Keras weights (no 'layer_names' attribute "
        "and no 'layers' group).")


def _collect_keras3(layers_group, out: list[LayerWeights]) -> None:
    for key in layers_group:
        entry = layers_group[key]
        variables = entry.get("vars")
        if variables is not None and len(variables):
            arrays = [np.asarray(variables[str(i)]) for i in range(len(variables))]
            name = _text(variables.attrs.get("name", key))
            out.append(LayerWeights(name, arrays, [str(i) for i in range(len(arrays))], key))
        if "layers" in entry:
            # A nested model: its layers are the model's layers too.
            _collect_keras3(entry["layers"], out)


def read_keras_archive(path: str | os.PathLike) -> KerasWeights:
    """Reads the weights and the config of a ``.keras`` archive.

    Args:
        path: The ``.keras`` file.

    Returns:
        The layers with weights, with ``config`` set to the archive's model config.

    Raises:
        WeightsFileError: If the archive is damaged (truncated, a member failing its CRC)
            or holds no ``model.weights.h5``.
    """
    path = os.fspath(path)
    with damaged_file_errors(path, ".keras archive"), zipfile.ZipFile(path) as archive:
        if "model.weights.h5" not in archive.namelist():
            raise WeightsFileError(f"{path!r} is not a .keras archive (no model.weights.h5).")
        config = json.loads(archive.read("config.json")) if "config.json" in \
            archive.namelist() else None
        weights = read_keras_h5(io.BytesIO(archive.read("model.weights.h5")), source=path)
    weights.config = config
    return weights
