"""Split leakage: exact and near-duplicate images shared by training and evaluation.

A validation image that is a resized or re-encoded copy of a training image inflates
validation accuracy. :func:`find_duplicates` finds such pairs with a perceptual hash
(``imagehash``'s pHash: the low frequencies of a 32x32 grayscale DCT, 64 bits) computed on
small thumbnails, and with a sha256 of the bytes for exact copies; :func:`check_leakage` is
the stage the entry points run after the split (``dedupe="warn" | "drop" | "off"``). The
entry points compare bytes only unless ``dedupe_near=True``: the thumbnails cost about as
much as the rest of ``from_folder`` (docs/pipelines.md, "Leakage between splits").
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageOps

from pipelines.probe import BYTES_DIGEST
from pipelines.warn import warn_user

DEDUPE_MODES = ("warn", "drop", "off")
# Largest Hamming distance (of 64 bits) counted as a near-duplicate. Measured on crops of
# skimage's photos (docs/pipelines.md, "Leakage between splits"): resized and JPEG q60 copies
# came within 0-10 of their originals, distinct crops 12 or more apart (the distances of
# median-split hashes are nearly always even: 10 is the step below the closest distinct pair).
DEFAULT_MAX_DISTANCE = 10
# The side the JPEG decoder is asked for: draft() decodes at the largest 1/2, 1/4 or 1/8
# scale that keeps both sides at least this big. pHash reads 32x32, but from 64 a resized
# and re-encoded copy drifted 2 bits further (12) than from 128 or a full decode (10).
_THUMBNAIL_SIDE = 128
# Hash pairs compared at once (a block of evaluation hashes against every training hash):
# about 32 MB of XORs, whatever the folder's size.
_BLOCK_PAIRS = 1 << 22
SHOWN_PAIRS = 3


@dataclass(frozen=True)
class Pair:
    """A training image and an evaluation image that look the same.

    Attributes:
        train: Path of the training image.
        other: Path of the validation (or test) image.
        distance: Hamming distance of their 64-bit perceptual hashes (0 to 64).
        exact: Whether the two files hold identical bytes.
    """

    train: str
    other: str
    distance: int
    exact: bool

    @property
    def kind(self) -> str:
        """``"exact"`` (identical bytes) or ``"near"``."""
        return "exact" if self.exact else "near"


def _fingerprint(path: str, near: bool = True) -> tuple[bytes, int] | None:
    """``(sha256 of the bytes, 64-bit pHash or 0 unless near)``; None if unreadable."""
    try:
        data = Path(path).read_bytes()
        if not near:
            return hashlib.sha256(data).digest(), 0
        with Image.open(io.BytesIO(data)) as image:
            # JPEGs decode straight to a small grayscale image (a fraction of a full decode).
            image.draft("L", (_THUMBNAIL_SIDE, _THUMBNAIL_SIDE))
            image = ImageOps.exif_transpose(image)
            bits = imagehash.phash(image).hash.flatten()
    except (OSError, ValueError, SyntaxError):
        # The check has already reported the files it refuses; one that fails only here
        # (changed since) is not compared rather than stopping the run.
        return None
    return hashlib.sha256(data).digest(), int(np.packbits(bits).view(">u8")[0])


def _digest_name(near: bool) -> str:
    """The check index's name for a fingerprint with a perceptual hash: it says what made it."""
    return f"sha256+phash/imagehash-{imagehash.__version__}/{_THUMBNAIL_SIDE}"


def _computed(paths: Sequence[str], near: bool) -> dict[str, tuple[bytes, int]]:
    if not near:
        found = {path: _fingerprint(path, near=False) for path in paths}
    else:
        workers = min(8, 2 * (os.cpu_count() or 1))
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            found = dict(zip(paths, pool.map(_fingerprint, paths)))
    return {path: fp for path, fp in found.items() if fp is not None}


def fingerprints(paths: Sequence[str], near: bool = True,
                 use_index: bool | None = None) -> dict[str, tuple[bytes, int]]:
    """Fingerprints of ``paths``; files that cannot be read are left out.

    Those of files unchanged since they were taken come from the check index
    (:func:`pipelines.index.indexed_digests`, keyed by size, mtime and inode like the
    check's results), so a repeated start reads no file for them. Thumbnails are decoded
    in threads (Pillow's decoders release the GIL); byte hashes alone are taken in order,
    which measured faster here than a pool (0.08 s against 0.11-0.28 s for 2,000 JPEGs,
    83 MB, read from the page cache).

    Args:
        paths: The files.
        near: Also compute the perceptual hash (else only the sha256 of the bytes).
        use_index: Use the check index; None follows ``ZOO_CHECK_INDEX`` (on by default).

    Returns:
        ``{path: (sha256 digest, 64-bit pHash as an int, 0 unless near)}``.
    """
    from pipelines import index

    if use_index is None:
        use_index = index.enabled()
    if not use_index or not paths:
        return _computed(paths, near)

    if not near:
        # The check took these while it read the files (probe.BYTES_DIGEST).
        def compute_bytes(missing):
            return {path: digest.hex() for path, (digest, _) in _computed(missing, False).items()}

        stored = index.indexed_digests(paths, BYTES_DIGEST, compute_bytes)
        return {path: (bytes.fromhex(digest), 0) for path, digest in stored.items()}

    def compute(missing):
        return {path: [digest.hex(), phash]
                for path, (digest, phash) in _computed(missing, near).items()}

    stored = index.indexed_digests(paths, _digest_name(near), compute)
    return {path: (bytes.fromhex(digest), int(phash))
            for path, (digest, phash) in stored.items()}


def _popcount(words: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(words)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[words.view(np.uint8)].reshape(*words.shape, 8).sum(-1)


def _close_pairs(train: np.ndarray, other: np.ndarray,
                 max_distance: int) -> list[tuple[int, int, int]]:
    """``(train index, other index, distance)`` of every hash pair within ``max_distance``."""
    out = []
    rows_per_block = max(1, _BLOCK_PAIRS // max(1, len(train)))
    for start in range(0, len(other), rows_per_block):
        block = other[start:start + rows_per_block]
        distance = _popcount(block[:, None] ^ train[None, :])
        rows, cols = np.nonzero(distance <= max_distance)
        out += [(int(c), start + int(r), int(distance[r, c])) for r, c in zip(rows, cols)]
    return out


def _check_max_distance(max_distance: int) -> None:
    if isinstance(max_distance, bool) or not isinstance(max_distance, (int, np.integer)) \
            or not 0 <= max_distance <= 64:
        raise ValueError(f"max_distance must be an integer from 0 to 64 (bits of the "
                         f"perceptual hash; default {DEFAULT_MAX_DISTANCE}); "
                         f"got {max_distance!r}.")


def find_duplicates(train_paths: Sequence[str | os.PathLike],
                    eval_paths: Sequence[str | os.PathLike], *,
                    max_distance: int = DEFAULT_MAX_DISTANCE,
                    near: bool = True) -> list[Pair]:
    """Every pair of a training image and an evaluation image that look the same.

    Args:
        train_paths: The training images.
        eval_paths: The validation (or test) images.
        max_distance: Largest Hamming distance of the 64-bit perceptual hashes counted as
            a near-duplicate; 0 finds copies whose thumbnails hash alike. Files with
            identical bytes are always found.
        near: Look for near-duplicates (resized, re-encoded copies) with the perceptual
            hash, which decodes a thumbnail of every file; False finds identical files
            only, by the sha256 of their bytes (about a tenth of the cost).

    Returns:
        The pairs, sorted by evaluation path and distance; an evaluation image close to
        several training images appears once with each.

    Raises:
        ValueError: If ``max_distance`` is not an integer from 0 to 64.
    """
    _check_max_distance(max_distance)
    train_paths, eval_paths = [str(p) for p in train_paths], [str(p) for p in eval_paths]
    found = fingerprints(train_paths + eval_paths, near)
    return _pairs(found, train_paths, eval_paths, max_distance, near)


def _pairs(found: dict[str, tuple[bytes, int]], train_paths: Sequence[str],
           eval_paths: Sequence[str], max_distance: int, near: bool) -> list[Pair]:
    """:func:`find_duplicates` over fingerprints already taken."""
    train = [p for p in train_paths if p in found]
    other = [p for p in eval_paths if p in found]
    if not near:
        by_digest: dict[bytes, list[str]] = {}
        for path in train:
            by_digest.setdefault(found[path][0], []).append(path)
        return sorted((Pair(twin, path, 0, True) for path in other
                       for twin in by_digest.get(found[path][0], [])),
                      key=lambda p: (p.other, p.train))
    if not train or not other:
        return []
    train_hashes = np.array([found[p][1] for p in train], dtype=np.uint64)
    other_hashes = np.array([found[p][1] for p in other], dtype=np.uint64)
    # Identical bytes hash alike (distance 0), so exact copies are among the close pairs.
    pairs = [Pair(train[i], other[j], d, found[train[i]][0] == found[other[j]][0])
             for i, j, d in _close_pairs(train_hashes, other_hashes, max_distance)]
    return sorted(pairs, key=lambda p: (p.other, p.distance, p.train))


def check_dedupe(dedupe: str) -> str:
    """``dedupe`` if it is one of :data:`DEDUPE_MODES`.

    Raises:
        ValueError: Naming the allowed values.
    """
    if dedupe not in DEDUPE_MODES:
        raise ValueError(f"dedupe must be one of {', '.join(map(repr, DEDUPE_MODES))} (what to "
                         "do with validation or test images that duplicate training images: "
                         f"list them, leave them out, or not look); got {dedupe!r}.")
    return dedupe


def _reason(pair: Pair, root: Path) -> str:
    train = os.path.relpath(pair.train, root)
    if pair.exact:
        return f"exact duplicate (identical bytes) of train image {train}"
    return f"near-duplicate of train image {train} (hash distance {pair.distance})"


def recorded_drops(loaded: dict | None, root: Path) -> dict[str, str]:
    """``{path: reason}`` of the images a manifest read back says were left out as copies."""
    record = (loaded or {}).get("leakage") or {}
    closest: dict[str, Pair] = {}
    for entry in record.get("pairs", []):
        pair = Pair(str(root / entry["train"]), str(root / entry["other"]),
                    int(entry["distance"]), entry["kind"] == "exact")
        if pair.other not in closest or pair.distance < closest[pair.other].distance:
            closest[pair.other] = pair
    return {str(root / rel): _reason(closest[str(root / rel)], root)
            if str(root / rel) in closest else "duplicate of a train image"
            for rel in record.get("dropped", [])}


@dataclass
class Leakage:
    """What the leakage stage found and did.

    Attributes:
        files: ``{split: files}`` left, each with a ``path`` (the copies dropped if asked).
        dropped: ``(path, reason)`` of the evaluation images left out now.
        record: The manifest's ``"leakage"`` field.
    """

    files: dict[str, list]
    dropped: list[tuple[str, str]]
    record: dict


def _entry(pair: Pair, split: str, root: Path) -> dict:
    return {"train": os.path.relpath(pair.train, root), "other": os.path.relpath(pair.other, root),
            "split": split, "distance": pair.distance, "kind": pair.kind}


def check_leakage(root: Path, files: dict[str, list], dedupe: str, near: bool = False,
                  loaded: dict | None = None) -> Leakage:
    """The stage after the split: pairs of train and val / test images, dropped if asked.

    Args:
        root: Paths are recorded relative to it.
        files: ``{split: files}``, each file with a ``path``; ``"train"`` is compared with
            every other split.
        dedupe: ``"warn"`` (find and record), ``"drop"`` (also leave the evaluation copies
            out) or ``"off"`` (do not look).
        near: Also look for near-duplicates (perceptual hash), not only identical files.
        loaded: The manifest read back, whose recorded pairs and drops are carried over.

    Returns:
        The :class:`Leakage`.
    """
    # The copies an earlier manifest dropped stay dropped (and recorded, with their pairs);
    # the rest is looked at again, so pairs it kept are not carried twice.
    previous = (loaded or {}).get("leakage") or {}
    carried = list(previous.get("dropped", []))
    record = {"dedupe": dedupe, "dropped": carried,
              "pairs": [p for p in previous.get("pairs", []) if p["other"] in set(carried)]}
    if dedupe == "off":
        return Leakage(files, [], record)
    record.update(near=near, **({"max_distance": DEFAULT_MAX_DISTANCE,
                                 "hash": "imagehash.phash, 64 bits"} if near else
                                {"hash": "sha256 of the bytes"}))
    evaluated = {split: [f.path for f in fs] for split, fs in files.items() if split != "train"}
    train = [f.path for f in files.get("train", [])]
    # Fingerprinted once, the training images against every evaluation split.
    taken = fingerprints(train + [p for ps in evaluated.values() for p in ps], near)
    found = {split: _pairs(taken, train, paths, DEFAULT_MAX_DISTANCE, near)
             for split, paths in evaluated.items() if paths}
    record["pairs"] += [_entry(p, split, root) for split, ps in found.items() for p in ps]
    if dedupe != "drop":
        return Leakage(files, [], record)
    closest = {p.other: p for ps in found.values() for p in reversed(ps)}
    dropped = [(path, _reason(pair, root)) for path, pair in sorted(closest.items())]
    record["dropped"] += [os.path.relpath(path, root) for path, _ in dropped]
    kept = {split: [f for f in fs if f.path not in closest] for split, fs in files.items()}
    return Leakage(kept, dropped, record)


def report_leakage(record: dict, root: Path, manifest_path: Path | None) -> None:
    """One warning for pairs found and kept (``dedupe="warn"``): how many, a few, what to do.

    Pairs whose copy a manifest read back had dropped are not warned about again.
    """
    dropped = set(record.get("dropped", []))
    pairs = [p for p in record.get("pairs", []) if p["other"] not in dropped]
    if record.get("dedupe") != "warn" or not pairs:
        return
    others = {p["other"] for p in pairs}
    exact = sum(p["kind"] == "exact" for p in pairs)
    shown = "\n".join(f"  {p['other']} ~ {p['train']} ({p['kind']}, distance {p['distance']})"
                      for p in pairs[:SHOWN_PAIRS])
    if record.get("near"):
        what = f"{exact} exact, perceptual-hash distance <= {record['max_distance']}"
        also = ""
    else:
        what = "identical files"
        also = " dedupe_near=True also finds resized or re-encoded copies."
    more = f"\n  ... and {len(pairs) - SHOWN_PAIRS} more" if len(pairs) > SHOWN_PAIRS else ""
    where = (f"all are listed in {manifest_path} under \"leakage\"" if manifest_path
             else "all are in .manifest[\"leakage\"]")
    warn_user(f"{len(others)} validation/test image(s) under {root} duplicate training images "
              f"({len(pairs)} pair(s), {what}); they inflate validation scores:\n"
              f"{shown}{more}\n{where}. Pass dedupe='drop' to leave them out of validation "
              f"(no file is touched), or dedupe='off' not to look.{also}")


__all__ = ["DEDUPE_MODES", "DEFAULT_MAX_DISTANCE", "Leakage", "Pair", "check_dedupe",
           "check_leakage", "find_duplicates", "fingerprints", "recorded_drops",
           "report_leakage"]
