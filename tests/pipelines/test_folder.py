"""from_folder: layouts, the seeded stratified split, the manifest, counts and outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from pipeline_helpers import jpeg_bytes, make_folder, photo, small_folder_at, tree_fingerprint

import pipelines


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    return small_folder_at(tmp_path_factory.mktemp("folder"))


def test_train_and_val_batches_follow_the_contract(small_folder, tmp_path):
    before = tree_fingerprint(small_folder)
    data = pipelines.from_folder(small_folder, image_size=(40, 32), batch_size=5,
                                 out_dir=tmp_path / "run")
    assert data.class_names == ["astronaut", "chelsea", "coffee"]
    assert data.num_classes == 3 and data.image_size == (40, 32) and data.input_shape == (40, 32, 3)
    assert data.label_mode == "int" and not data.soft_labels
    seen = 0
    for images, labels in data.train:
        assert images.dtype == tf.float32 and labels.dtype == tf.int32
        assert images.shape[1:] == (40, 32, 3)
        assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 255.0
        # Real pixels, not a normalised or blank image.
        assert float(tf.reduce_max(images)) > 100
        seen += int(labels.shape[0])
    assert seen == len(data.train_files) == sum(data.counts["train"].values())
    # Known cardinality: Keras' progress and the recipe's learning-rate schedule use it.
    assert int(data.train.cardinality()) == data.steps_per_epoch == -(-seen // 5)
    val_labels = np.concatenate([y.numpy() for _, y in data.val])
    assert val_labels.tolist() == [label for _, label in data.val_files]  # in file order
    assert tree_fingerprint(small_folder) == before  # nothing written next to the images
    assert not any(p.name == "split.json" for p in small_folder.rglob("*"))


def test_split_is_stratified_deterministic_and_seeded(small_folder):
    one = pipelines.from_folder(small_folder, image_size=32, validation_split=0.25, seed=1)
    again = pipelines.from_folder(small_folder, image_size=32, validation_split=0.25, seed=1)
    other = pipelines.from_folder(small_folder, image_size=32, validation_split=0.25, seed=2)
    assert one.val_files == again.val_files and one.train_files == again.train_files
    assert one.val_files != other.val_files
    # round(10 * 0.25) = 2 (banker's rounding of 2.5), 8 * 0.25 = 2 per class, in both seeds.
    assert one.counts["val"] == {"astronaut": 2, "chelsea": 2, "coffee": 2}
    assert one.counts["train"] == {"astronaut": 8, "chelsea": 6, "coffee": 8}
    assert not set(one.val_files) & set(one.train_files)


def test_stratified_split_keeps_every_class_on_both_sides():
    items = [("a/1.jpg", 0), ("a/2.jpg", 0), ("b/1.jpg", 1), ("c/1.jpg", 2)]
    train, val = pipelines.stratified_split(items, 0.1, seed=0)
    assert [label for _, label in val] == [0]  # 2 images: 1 each side; 1 image: train only
    assert sorted(label for _, label in train) == [0, 1, 2]
    # Adding a file to one class leaves the other classes' split as it was.
    train2, val2 = pipelines.stratified_split(items + [("b/2.jpg", 1)], 0.1, seed=0)
    assert ("a/1.jpg", 0) in val2 or ("a/2.jpg", 0) in val2
    assert [p for p, label in val2 if label == 0] == [p for p, _ in val]


def test_manifest_is_written_where_asked_and_reproduces_the_split(tmp_path):
    root = make_folder(tmp_path / "images", {"cats": 8, "dogs": 8})
    first = pipelines.from_folder(root, image_size=32, seed=3, out_dir=tmp_path / "run1")
    manifest = json.loads((tmp_path / "run1" / "split.json").read_text())
    assert first.manifest_path == str(tmp_path / "run1" / "split.json")
    assert manifest["class_names"] == ["cats", "dogs"] and manifest["seed"] == 3
    assert [[str(Path(p).relative_to(root)), y] for p, y in first.val_files] == \
        manifest["splits"]["val"]
    # New images arrive; the manifest (with another seed argument) still gives the old split.
    (root / "cats" / "new.jpg").write_bytes(jpeg_bytes(photo("coffee")))
    with pytest.warns(UserWarning, match="not in the manifest"):
        again = pipelines.from_folder(root, image_size=32, seed=99,
                                      manifest=tmp_path / "run1" / "split.json",
                                      out_dir=tmp_path / "run2")
    assert again.val_files == first.val_files and again.train_files == first.train_files
    # A file of the manifest that disappeared is reported, not fatal.
    removed = first.train_files[0][0]
    shutil.move(removed, tmp_path / "moved.jpg")
    with pytest.warns(UserWarning, match="missing now"):
        third = pipelines.from_folder(root, image_size=32, manifest=tmp_path / "run1")
    assert removed not in [p for p, _ in third.train_files]
    assert any(p == removed and "missing" in r for p, r in third.skipped)


def test_out_dir_inside_the_image_folder_is_refused(small_folder):
    with pytest.raises(ValueError, match="inside the image folder"):
        pipelines.from_folder(small_folder, out_dir=small_folder / "run")


def test_not_a_manifest_is_a_clear_error(small_folder, tmp_path):
    bad = tmp_path / "split.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not a split manifest"):
        pipelines.from_folder(small_folder, manifest=bad)
    with pytest.raises(FileNotFoundError, match="No split manifest"):
        pipelines.from_folder(small_folder, manifest=tmp_path / "nowhere.json")


@pytest.mark.parametrize("val_name", ["val", "valid", "validation", "test"])
def test_train_val_layout(tmp_path, val_name):
    make_folder(tmp_path / "train", {"cats": 4, "dogs": 3})
    make_folder(tmp_path / val_name, {"cats": 2, "dogs": 2})
    data = pipelines.from_folder(tmp_path, image_size=32, batch_size=4)
    assert data.manifest["layout"] == "split_folders"
    assert data.counts == {"train": {"cats": 4, "dogs": 3}, "val": {"cats": 2, "dogs": 2}}
    assert all(f"/{val_name}/" in p for p, _ in data.val_files)
    assert data.test is None


def test_train_val_and_test_layout_gives_a_test_split(tmp_path):
    for split, n in (("train", 3), ("val", 2), ("test", 2)):
        make_folder(tmp_path / split, {"cats": n, "dogs": n})
    data = pipelines.from_folder(tmp_path, image_size=32)
    assert data.counts["test"] == {"cats": 2, "dogs": 2}
    assert sum(int(y.shape[0]) for _, y in data.test) == 4


def test_only_a_train_folder_is_split_here(tmp_path):
    make_folder(tmp_path / "train", {"cats": 5, "dogs": 5})
    data = pipelines.from_folder(tmp_path, image_size=32, validation_split=0.2)
    assert data.counts["val"] == {"cats": 1, "dogs": 1}


def test_nested_folders_count_for_their_class(tmp_path):
    make_folder(tmp_path / "cats" / "2023" / "summer", {"x": 3})
    make_folder(tmp_path / "dogs", {"y": 3})
    data = pipelines.from_folder(tmp_path, image_size=32, validation_split=0)
    assert data.class_names == ["cats", "dogs"]
    assert data.counts["train"] == {"cats": 3, "dogs": 3}
    assert data.val is None


def test_imbalance_warns_with_class_weights(tmp_path):
    root = make_folder(tmp_path, {"common": 16, "rare": 4})
    with pytest.warns(UserWarning, match=r"imbalanced.*class_weight=\{common: 0\.\d+, rare: 2"):
        data = pipelines.from_folder(root, image_size=32, validation_split=0)
    assert data.class_weights == {0: 0.625, 1: 2.5}  # 20 / (2 * 16), 20 / (2 * 4)


def test_model_name_gives_size_crop_and_channels():
    from pipelines.options import resolve_options
    from zoo.models import get_spec

    root_spec = get_spec("lenet5")
    geometry = resolve_options(model="lenet5").geometry
    assert geometry.image_size == tuple(root_spec.input_size[:2])
    assert geometry.channels == root_spec.input_size[2]
    assert geometry.crop_fraction == root_spec.crop_fraction
    geometry = resolve_options(model="resnet50", image_size=(96, 96)).geometry
    assert geometry.image_size == (96, 96)
    assert geometry.crop_fraction == get_spec("resnet50").crop_fraction


def test_grayscale_model_gets_one_channel(small_folder):
    data = pipelines.from_folder(small_folder, model="lenet5", batch_size=4)
    images, _ = next(iter(data.train))
    assert images.shape[1:] == (32, 32, 1)
    images, _ = next(iter(data.val))
    assert images.shape[1:] == (32, 32, 1)


def test_deterministic_option_repeats_order_and_crops(small_folder):
    def first_batches(seed):
        data = pipelines.from_folder(small_folder, image_size=32, batch_size=6, seed=seed,
                                     deterministic=True)
        return [(x.numpy(), y.numpy()) for x, y in data.train.take(2)]

    a, b, c = first_batches(5), first_batches(5), first_batches(6)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_allclose(xa, xb)
    assert not all(np.array_equal(ya, yc) for (_, ya), (_, yc) in zip(a, c))


def test_epochs_differ(small_folder):
    data = pipelines.from_folder(small_folder, image_size=32, batch_size=64, deterministic=True)
    epoch1 = next(iter(data.train))
    epoch2 = next(iter(data.train))
    assert not np.array_equal(epoch1[1].numpy(), epoch2[1].numpy()) or not np.allclose(
        epoch1[0].numpy(), epoch2[0].numpy())


@pytest.mark.parametrize("bad, match", [
    (dict(validation_split=1.0), "validation_split"),
    (dict(check="thorough"), "check must be"),
    (dict(augment="heavy"), "Unknown augment preset 'heavy'"),
    (dict(augment=42), "augment must be"),
    (dict(label_mode="binary"), "label_mode"),
    (dict(augment="mixup", label_mode="int"), "categorical"),
    (dict(interpolation="cubic"), "Unknown interpolation 'cubic'"),
    (dict(model="ResNet50"), "resnet50_v1"),
])
def test_bad_arguments_are_clear(small_folder, bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        pipelines.from_folder(small_folder, **bad)


def test_file_cache_goes_where_asked(small_folder, tmp_path):
    before = tree_fingerprint(small_folder)
    data = pipelines.from_folder(small_folder, image_size=32, cache=tmp_path / "cache")
    for _ in range(2):
        first = [y.numpy().tolist() for _, y in data.val]
    assert first == [[label for _, label in data.val_files]]
    for _ in data.train:
        pass
    names = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert any(n.startswith("train.cache") for n in names)
    assert any(n.startswith("val.cache") for n in names)
    assert tree_fingerprint(small_folder) == before
    with pytest.raises(ValueError, match="cache .* is inside the image folder"):
        pipelines.from_folder(small_folder, cache=small_folder / "cache")


@pytest.mark.parametrize("cache", ["memory", "files", "none"])
def test_caches_are_filled_before_from_folder_returns(small_folder, tmp_path, cache):
    # A cache first filled under a distribution strategy once kept only part of a split;
    # filled up front, it is complete. Seen here by deleting the (copied) files after
    # from_folder returns; the validation split's memory cache is filled in the background
    # by the time .val is first read.
    root = tmp_path / "images"
    shutil.copytree(small_folder, root)
    option = {"memory": True, "files": tmp_path / "cache", "none": False}[cache]
    data = pipelines.from_folder(root, image_size=32, batch_size=4, cache=option,
                                 out_dir=tmp_path / "run")
    assert data.val is not None
    shutil.rmtree(root)
    if cache == "none":  # every pass reads the files, which are gone
        with pytest.raises(tf.errors.NotFoundError):
            list(data.val)
        return
    val_labels = np.concatenate([y.numpy() for _, y in data.val])
    assert val_labels.tolist() == [label for _, label in data.val_files]
    train_labels = np.concatenate([y.numpy() for _, y in data.train])
    assert sorted(train_labels.tolist()) == sorted(label for _, label in data.train_files)
