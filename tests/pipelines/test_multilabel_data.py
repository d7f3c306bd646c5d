"""Multi-label tables over real pictures of digits: multi-hot batches, the iterative split,
its manifest, long-format tables, mixup on multi-hot targets, and what is refused."""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import make_folder  # noqa: F401  (puts the project root first)

import pipelines

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from label_tables import write_digit_table  # noqa: E402

SMALL = dict(image_size=(16, 48), batch_size=16, augment="none", imbalance_warning=None)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return write_digit_table(tmp_path_factory.mktemp("digits"), 80)


@pytest.fixture(scope="module")
def data(digits, tmp_path_factory):
    images, table = digits
    return pipelines.from_csv(table, images, label_delimiter=" ",
                              out_dir=tmp_path_factory.mktemp("run"), **SMALL)


def _table_labels(table: Path) -> dict[str, tuple[int, ...]]:
    with open(table, newline="") as handle:
        return {row["path"]: tuple(sorted(int(d) for d in row["label"].split()))
                for row in csv.DictReader(handle)}


def test_multi_label_batches_are_multi_hot_float32(data, digits):
    assert data.multi_label and data.label_mode == "multi_hot" and data.sampling == "natural"
    assert data.class_names == [str(d) for d in range(10)]
    truth = _table_labels(digits[1])
    for path, labels in data.train_files + data.val_files:
        assert labels == truth[Path(path).name]
    for split, files in (("train", data.train_files), ("val", data.val_files)):
        per_class = Counter(c for _, labels in files for c in labels)
        assert data.counts[split] == {str(c): per_class[c] for c in range(10)}
    x, y = next(iter(data.val))
    assert x.shape[1:] == (16, 48, 3) and y.dtype.name == "float32" and y.shape[1] == 10
    expected = np.zeros((len(y), 10), np.float32)
    for row, (_, labels) in enumerate(data.val_files[:len(y)]):
        expected[row, list(labels)] = 1
    np.testing.assert_array_equal(y.numpy(), expected)  # in file order, never smoothed
    _, y_train = next(iter(data.train))
    assert set(np.unique(y_train.numpy())) == {0.0, 1.0}
    assert y_train.numpy().sum(axis=1).min() >= 2 and y_train.numpy().sum(axis=1).max() <= 3


def test_summary_counts_images_not_labels(data):
    summary = data.summary()
    assert "labels=multi_hot, sampling=natural" in summary
    assert f"train: {len(data.train_files)} images" in summary
    assert sum(data.counts["train"].values()) > len(data.train_files)


def test_a_table_takes_the_geometry_of_a_model(digits):
    images, table = digits
    lenet = pipelines.from_csv(table, images, label_delimiter=" ", model="lenet5",
                               batch_size=8, augment="none", imbalance_warning=None)
    assert lenet.input_shape == (32, 32, 1)
    assert next(iter(lenet.val))[0].shape[1:] == (32, 32, 1)


def test_the_split_is_iterative_keeps_every_label_in_validation_and_is_recorded(data):
    assert data.manifest["split_method"] == "iterative" and data.manifest["multi_label"]
    assert all(data.counts["val"][c] >= 1 for c in data.class_names)
    assert len(data.val_files) == round(0.2 * 80)
    written = json.loads(Path(data.manifest_path).read_text())
    assert all(isinstance(label, list) for _, label in written["splits"]["val"])
    assert written["table"]["label_delimiter"] == " "


def test_the_manifest_reproduces_the_split(data, digits):
    images, table = digits
    again = pipelines.from_csv(table, images, label_delimiter=" ",
                               manifest=data.manifest_path, seed=5, **SMALL)
    assert again.val_files == data.val_files and again.train_files == data.train_files
    assert again.manifest["split_method"] == "iterative"
    with pytest.raises(ValueError, match="manifest .* is of multi-label data, this table "
                                         "of single-label"):
        pipelines.from_csv(table, images, label_column="first",
                           manifest=data.manifest_path, **SMALL)


def test_iterative_split_keeps_a_rare_label_that_a_split_by_first_label_loses():
    # Label 9 is on two images only, both of which also carry the common label 0: split by
    # first label alone, hashing puts both in train for this seed; the iterative split puts
    # one in validation.
    items = [(f"{i:03d}.png", (0,)) for i in range(30)]
    items += [(f"{i:03d}.png", (1,)) for i in range(30, 60)]
    items += [("rare-a.png", (0, 9)), ("rare-b.png", (0, 9))]
    train, val = pipelines.iterative_split(items, 0.2, seed=0)
    assert sorted(train + val) == sorted(items)
    assert sum(9 in labels for _, labels in val) == 1
    assert len(val) == round(0.2 * len(items))
    assert pipelines.iterative_split(items, 0.2, seed=0) == (train, val)
    assert pipelines.iterative_split(items, 0.2, seed=1) != (train, val)
    naive_train, naive_val = pipelines.stratified_split(
        [(p, labels[0]) for p, labels in items], 0.2, seed=0)
    assert not any(p.startswith("rare") for p, _ in naive_val)


def test_iterative_split_holds_each_label_near_its_share_unlike_a_random_split():
    # Zipf-like label frequencies over 30 labels, one to three labels per image.
    rng = np.random.default_rng(1)
    frequency = 1 / np.arange(1, 31)
    deviations, lost = {"iterative": [], "random": []}, {"iterative": 0, "random": 0}
    for trial in range(5):
        items = [(f"{i}.png", tuple(sorted(set(rng.choice(
            30, size=rng.integers(1, 4), p=frequency / frequency.sum()).tolist()))))
                 for i in range(300)]
        order = rng.permutation(len(items))
        splits = {"iterative": pipelines.iterative_split(items, 0.2, seed=trial),
                  "random": ([items[i] for i in order[60:]], [items[i] for i in order[:60]])}
        for name, (train, val) in splits.items():
            assert len(val) == 60 and sorted(train + val) == sorted(items)
            total = Counter(c for _, labels in items for c in labels)
            held = Counter(c for _, labels in val for c in labels)
            deviations[name] += [abs(held[c] - 0.2 * total[c]) for c in total]
            lost[name] += sum(1 for c in total if total[c] >= 2 and not held[c])
    assert lost["iterative"] == 0 and lost["random"] > 0
    assert np.mean(deviations["iterative"]) < 0.5 < np.mean(deviations["random"])


def test_one_row_per_image_and_label_is_merged(tmp_path, digits):
    images, table = digits
    long_rows = [{"image": path, "tag": str(d)}
                 for path, labels in _table_labels(table).items() for d in labels]
    long_table = tmp_path / "long.csv"
    with open(long_table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "tag"])
        writer.writeheader()
        writer.writerows(long_rows)
    merged = pipelines.from_csv(long_table, images, path_column="image", label_column="tag",
                                multi_label=True, **SMALL)
    truth = _table_labels(table)
    assert {Path(p).name: labels for p, labels in merged.train_files + merged.val_files} \
        == truth


def test_a_split_column_gives_multi_hot_val_and_test(tmp_path, digits):
    images, table = digits
    truth = _table_labels(table)
    parts = ("train", "train", "train", "val", "test")
    rows = [{"path": path, "tags": ",".join(map(str, labels)), "part": parts[i % 5]}
            for i, (path, labels) in enumerate(sorted(truth.items()))]
    marked = tmp_path / "marked.csv"
    with open(marked, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "tags", "part"])
        writer.writeheader()
        writer.writerows(rows)
    data = pipelines.from_csv(marked, images, label_column="tags", label_delimiter=",",
                              split_column="part", **SMALL)
    assert len(data.test_files) == len(data.val_files) == 16
    assert {Path(p).name: labels for p, labels in data.test_files} == {
        r["path"]: truth[r["path"]] for r in rows if r["part"] == "test"}
    _, y = next(iter(data.test))
    assert y.dtype.name == "float32" and y.shape == (16, 10)
    assert y.numpy().sum() == sum(len(labels) for _, labels in data.test_files)


def test_mixup_mixes_multi_hot_targets(digits):
    images, table = digits
    mixed = pipelines.from_csv(table, images, label_delimiter=" ", augment="mixup",
                               image_size=(16, 48), batch_size=16, imbalance_warning=None)
    assert mixed.label_mode == "multi_hot" and mixed.soft_labels
    y = next(iter(mixed.train))[1].numpy()
    assert y.shape == (16, 10) and y.min() >= 0 and y.max() <= 1 + 1e-6
    assert np.all(y.max(axis=1) >= 0.5 - 1e-6)  # the larger share of each pair's labels
    assert np.any((y > 0.01) & (y < 0.99))  # mixed, not 0/1


@pytest.mark.parametrize("keywords, message", [
    (dict(sampling="balanced"), "sampling='balanced' is not defined for multi-label data"),
    (dict(label_mode="int"), "Multi-label data has multi-hot labels; label_mode must be"),
    (dict(multi_label=False), "label_delimiter=' ' makes the table multi-label, but "
                              "multi_label=False"),
])
def test_what_multi_label_data_refuses_says_why(digits, keywords, message):
    images, table = digits
    with pytest.raises(ValueError, match=message):
        pipelines.from_csv(table, images, label_delimiter=" ", **{**SMALL, **keywords})


def test_multi_hot_label_mode_needs_multi_label_data(digits):
    images, table = digits
    with pytest.raises(ValueError, match="label_mode='multi_hot' needs multi-label data"):
        pipelines.from_csv(table, images, label_column="first", label_mode="multi_hot",
                           **SMALL)
