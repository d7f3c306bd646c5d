"""The split leakage check over real photos: copies of training images in validation are
found (resized, re-encoded, byte copies), distinct crops are not, and dedupe="drop" leaves
the copies out without touching a file, reproducibly through the manifest."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image
from pipeline_helpers import jpeg_bytes, photo, tree_fingerprint

import pipelines
from pipelines.leakage import find_duplicates

SMALL = dict(image_size=24, batch_size=8, augment="none", imbalance_warning=None, cache=False)
CROP = (128, 96)
# Photo, its size (width, height) as the crops are cut from it; non-overlapping grid cells.
SOURCES = {"astronaut": (512, 512), "coffee": (600, 400), "chelsea": (451, 300)}


def _grid_crops(name: str, size: tuple[int, int], count: int) -> list[Image.Image]:
    image = Image.fromarray(photo(name, size))
    cells = [(x, y) for y in range(0, size[1] - CROP[1] + 1, CROP[1])
             for x in range(0, size[0] - CROP[0] + 1, CROP[0])]
    return [image.crop((x, y, x + CROP[0], y + CROP[1])) for x, y in cells[:count]]


def _resized(path, scale: float, quality: int = 90) -> bytes:
    with Image.open(path) as image:
        small = image.resize((int(image.width * scale), int(image.height * scale)),
                             Image.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _reencoded(path, quality: int) -> bytes:
    return _resized(path, 1.0, quality)


def _cut(path, fraction: float) -> bytes:
    with Image.open(path) as image:
        dx, dy = int(image.width * fraction), int(image.height * fraction)
        cut = image.crop((dx, dy, image.width - dx, image.height - dy))
    buffer = io.BytesIO()
    cut.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def leaky(tmp_path_factory):
    """``root/train`` and ``root/val``: 5 train and 3 distinct val crops per class, and 5 val
    copies of train images (resized, re-encoded, both, 3% cut at each border, bytes).
    Returns ``(root, {copy relpath: its train relpath})``."""
    root = tmp_path_factory.mktemp("leaky") / "photos"
    for name, size in SOURCES.items():
        crops = _grid_crops(name, size, 8)
        for split, part in (("train", crops[:5]), ("val", crops[5:])):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, crop in enumerate(part):
                (folder / f"{i}.jpg").write_bytes(jpeg_bytes(np.asarray(crop)))
    copies = {
        "val/astronaut/resized_half.jpg": ("train/astronaut/0.jpg", _resized, (0.5, 60)),
        "val/chelsea/cut_edges.jpg": ("train/chelsea/0.jpg", _cut, (0.03,)),
        "val/coffee/quality60.jpg": ("train/coffee/1.jpg", _reencoded, (60,)),
        "val/chelsea/resized_q60.jpg": ("train/chelsea/2.jpg", _resized, (0.75, 60)),
    }
    for rel, (original, make, args) in copies.items():
        (root / rel).write_bytes(make(root / original, *args))
    shutil.copyfile(root / "train/coffee/3.jpg", root / "val/coffee/byte_copy.jpg")
    expected = {rel: original for rel, (original, _, _) in copies.items()}
    expected["val/coffee/byte_copy.jpg"] = "train/coffee/3.jpg"
    return root, expected


def _all(root, split):
    return sorted(str(p) for p in (root / split).rglob("*.jpg"))


def test_find_duplicates_finds_every_copy_and_no_distinct_crop(leaky):
    root, expected = leaky
    pairs = find_duplicates(_all(root, "train"), _all(root, "val"))
    found = {os.path.relpath(p.other, root): os.path.relpath(p.train, root) for p in pairs}
    assert found == expected
    kinds = {os.path.basename(p.other): p.kind for p in pairs}
    assert kinds["byte_copy.jpg"] == "exact" and kinds["resized_half.jpg"] == "near"
    assert all(0 <= p.distance <= 10 for p in pairs)
    assert max(p.distance for p in pairs) > 0  # the threshold is exercised, not only 0
    assert [p for p in pairs if p.exact][0].distance == 0


def test_without_near_only_identical_files_are_paired(leaky):
    root, _ = leaky
    pairs = find_duplicates(_all(root, "train"), _all(root, "val"), near=False)
    assert [(os.path.relpath(p.other, root), os.path.relpath(p.train, root), p.kind)
            for p in pairs] == [("val/coffee/byte_copy.jpg", "train/coffee/3.jpg", "exact")]


def test_max_distance_out_of_range_is_refused(leaky):
    root, _ = leaky
    with pytest.raises(ValueError, match="max_distance must be an integer from 0 to 64"):
        find_duplicates(_all(root, "train"), _all(root, "val"), max_distance=65)


def test_the_default_warns_of_identical_files_and_says_how_to_find_more(leaky):
    root, _ = leaky
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = pipelines.from_folder(root, **SMALL)
    found = [str(w.message) for w in caught if "duplicate training images" in str(w.message)]
    assert len(found) == 1 and "1 validation/test image(s)" in found[0]
    assert "identical files" in found[0] and "dedupe_near=True" in found[0]
    record = data.manifest["leakage"]
    assert record["near"] is False
    assert [(p["other"], p["kind"]) for p in record["pairs"]] == [
        ("val/coffee/byte_copy.jpg", "exact")]


def test_near_warns_once_and_records_the_pairs(leaky, tmp_path):
    root, expected = leaky
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = pipelines.from_folder(root, out_dir=tmp_path, dedupe_near=True, **SMALL)
    found = [w for w in caught if "duplicate training images" in str(w.message)]
    assert len(found) == 1 and found[0].filename == __file__  # names the caller's line
    leakage = [str(w.message) for w in found]
    assert f"{len(expected)} validation/test image(s)" in leakage[0]
    assert "dedupe='drop'" in leakage[0]
    assert str(tmp_path / "split.json") in leakage[0]
    record = json.loads((tmp_path / "split.json").read_text())["leakage"]
    assert record["dedupe"] == "warn" and record["dropped"] == []
    assert {p["other"]: p["train"] for p in record["pairs"]} == expected
    assert {p["split"] for p in record["pairs"]} == {"val"}
    # Warned, not dropped: the copies are still validation images.
    assert len(data.val_files) == 9 + len(expected)


def test_drop_leaves_the_copies_out_untouched_and_the_manifest_reproduces_it(leaky, tmp_path):
    root, expected = leaky
    before = tree_fingerprint(root)
    data = pipelines.from_folder(root, dedupe="drop", dedupe_near=True, out_dir=tmp_path,
                                 **SMALL)
    assert tree_fingerprint(root) == before
    val = {os.path.relpath(p, root) for p, _ in data.val_files}
    assert len(val) == 9 and not val & set(expected)
    reasons = {os.path.relpath(p, root): r for p, r in data.skipped}
    assert reasons["val/astronaut/resized_half.jpg"] == (
        "near-duplicate of train image train/astronaut/0.jpg (hash distance "
        f"{_distance(data, 'val/astronaut/resized_half.jpg')})")
    assert reasons["val/coffee/byte_copy.jpg"] == (
        "exact duplicate (identical bytes) of train image train/coffee/3.jpg")
    assert sorted(data.manifest["leakage"]["dropped"]) == sorted(expected)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = pipelines.from_folder(root, manifest=tmp_path / "split.json",
                                      out_dir=tmp_path / "again", **SMALL)
    assert not [w for w in caught if "not in the manifest" in str(w.message)]
    assert not [w for w in caught if "duplicate training images" in str(w.message)]
    assert again.val_files == data.val_files and again.train_files == data.train_files
    assert sorted(again.skipped) == sorted(data.skipped)
    assert sorted(again.manifest["leakage"]["dropped"]) == sorted(expected)
    assert tree_fingerprint(root) == before


def _distance(data, rel):
    return next(p["distance"] for p in data.manifest["leakage"]["pairs"] if p["other"] == rel)


def test_off_does_not_look(leaky):
    root, _ = leaky
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = pipelines.from_folder(root, dedupe="off", **SMALL)
    assert not [w for w in caught if "duplicate training images" in str(w.message)]
    assert data.manifest["leakage"] == {"dedupe": "off", "dropped": [], "pairs": []}
    assert len(data.val_files) == 9 + 5


def test_a_label_table_drops_the_same_copies(leaky, tmp_path):
    root, expected = leaky
    table = tmp_path / "labels.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for path in sorted(root.rglob("*.jpg")):
            rel = path.relative_to(root)
            writer.writerow([str(rel), rel.parts[1], rel.parts[0]])
    data = pipelines.from_csv(table, root, split_column="split", dedupe="drop",
                             dedupe_near=True, **SMALL)
    val = {os.path.relpath(p, root) for p, _ in data.val_files}
    assert len(val) == 9 and not val & set(expected)


@pytest.mark.parametrize("entry", ["folder", "table"])
def test_an_unknown_dedupe_is_refused_naming_the_allowed_values(leaky, tmp_path, entry):
    root, _ = leaky
    message = "dedupe must be one of 'warn', 'drop', 'off'.*got 'remove'"
    with pytest.raises(ValueError, match=message):
        if entry == "folder":
            pipelines.from_folder(root, dedupe="remove", **SMALL)
        else:
            table = tmp_path / "t.csv"
            table.write_text("path,label\ntrain/coffee/0.jpg,coffee\n")
            pipelines.from_csv(table, root, dedupe="remove", **SMALL)


def test_dedupe_near_must_be_a_bool(leaky):
    root, _ = leaky
    with pytest.raises(ValueError, match="dedupe_near must be True or False; got 'yes'"):
        pipelines.from_folder(root, dedupe_near="yes", **SMALL)


def test_test_split_copies_are_found_and_dropped_too(leaky, tmp_path):
    root = tmp_path / "photos"
    shutil.copytree(leaky[0], root)
    (root / "test" / "astronaut").mkdir(parents=True)
    # A copy of a validation image: val and test are not compared, only each with train.
    shutil.copyfile(root / "val/astronaut/0.jpg", root / "test/astronaut/distinct.jpg")
    shutil.copyfile(root / "train/astronaut/1.jpg", root / "test/astronaut/copy.jpg")
    data = pipelines.from_folder(root, dedupe="drop", **SMALL)
    test_pairs = [p for p in data.manifest["leakage"]["pairs"] if p["split"] == "test"]
    assert [(p["other"], p["train"]) for p in test_pairs] == [
        ("test/astronaut/copy.jpg", "train/astronaut/1.jpg")]
    assert [os.path.relpath(p, root) for p, _ in data.test_files] == [
        "test/astronaut/distinct.jpg"]


def test_zoo_train_drops_byte_copies_with_the_dedupe_flag(leaky, tmp_path):
    # The recipe's dedupe reaches the pipeline finetune builds; a caller's pipeline refuses it.
    from pipelines.leakage import DEDUPE_MODES
    from zoo.cli import main
    from zoo.recipes.recipe import DEDUPES

    assert DEDUPES == DEDUPE_MODES
    root, _ = leaky
    before = tree_fingerprint(root)
    out = tmp_path / "run"
    assert main(["train", "--data", str(root), "--model", "lenet5", "--weights", "none",
                 "--epochs", "1", "--dedupe", "drop", "--out", str(out)]) == 0
    split = json.loads((out / "split.json").read_text())
    assert any(pair["other"] == "val/coffee/byte_copy.jpg" for pair in split["leakage"]["pairs"]
               ), split["leakage"]
    assert "val/coffee/byte_copy.jpg" not in [rel for rel, _ in split["splits"]["val"]]
    assert tree_fingerprint(root) == before
    import zoo

    data = pipelines.from_folder(root, **SMALL, out_dir=tmp_path / "built")
    with pytest.raises(ValueError, match="dedupe='drop' applies when finetune builds"):
        zoo.finetune("lenet5", data, weights=None, dedupe="drop", out_dir=tmp_path / "r2")
