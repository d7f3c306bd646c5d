"""The prepared store: prepare writes the checked split once, from_store reads it back."""

from __future__ import annotations

import os

import numpy as np
import pytest
from pipeline_helpers import make_folder, photo, tree_fingerprint

import pipelines
from pipelines import store as store_module


@pytest.fixture
def folder(tmp_path):
    root = make_folder(tmp_path / "photos", {"astronaut": 10, "coffee": 10, "chelsea": 8},
                       size=(96, 72))
    (root / "coffee" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return root


def test_prepare_writes_the_split_and_leaves_the_folder_alone(folder, tmp_path):
    before = tree_fingerprint(folder)
    with pytest.warns(UserWarning, match="broken.jpg"):
        manifest = pipelines.prepare(folder, tmp_path / "store", image_size=32,
                                     short_side=48)
    assert tree_fingerprint(folder) == before
    reference = pipelines.from_folder(folder, image_size=32, out_dir=tmp_path / "ref",
                                      cache=False)
    data = pipelines.from_store(tmp_path / "store", augment=None)
    assert data.class_names == reference.class_names == manifest["class_names"]
    assert data.train_files == sorted(reference.train_files)
    assert data.val_files == sorted(reference.val_files)
    assert data.counts == reference.counts
    assert ["coffee/broken.jpg", data.skipped[0][1]] in manifest["skipped"]
    assert "split" not in manifest["files"]["coffee/broken.jpg"]
    # Stored images are bounded: 96x72 shrunk to a shorter side of 48.
    assert {tuple(f["stored"]) for f in manifest["files"].values() if "stored" in f} == \
        {(48, 64)}
    assert not [p for p in os.listdir(tmp_path) if ".partial-" in p]
    assert len(data.manifest["store_hash"]) == 64


def test_store_pixels_match_files_within_reencoding(folder, tmp_path):
    with pytest.warns(UserWarning):
        pipelines.prepare(folder, tmp_path / "store", image_size=32, short_side=72)
    data = pipelines.from_store(tmp_path / "store", augment=None, crop_fraction=0.875)
    reference = pipelines.from_folder(folder, image_size=32, out_dir=tmp_path / "ref",
                                      cache=False, augment=None, crop_fraction=0.875)
    stored = np.concatenate([x.numpy() for x, _ in data.val])
    files = {p: i for i, (p, _) in enumerate(reference.val_files)}
    raw = np.concatenate([x.numpy() for x, _ in reference.val])
    order = [files[p] for p, _ in data.val_files]
    labels = np.concatenate([y.numpy() for _, y in data.val])
    assert list(labels) == [label for _, label in data.val_files]
    # A short side of 72 keeps the 96x72 JPEGs' own bytes: the same pixels exactly.
    np.testing.assert_array_equal(stored, raw[order])
    train_x, train_y = next(iter(data.train))
    assert train_x.shape[1:] == (32, 32, 3) and train_x.dtype.name == "float32"


def test_changed_folder_is_refused_naming_the_files(folder, tmp_path):
    with pytest.warns(UserWarning):
        pipelines.prepare(folder, tmp_path / "store", image_size=32)
    os.utime(folder / "astronaut" / "000.jpg", ns=(1, 1))  # touched, same bytes: still fine
    pipelines.from_store(tmp_path / "store", augment=None)
    (folder / "chelsea" / "new.jpg").write_bytes((folder / "chelsea" / "000.jpg").read_bytes())
    from PIL import Image
    Image.fromarray(photo("rocket", (96, 72))).save(folder / "astronaut" / "001.jpg")
    (folder / "coffee" / "002.jpg").unlink()
    with pytest.raises(ValueError, match=r"1 added \(e.g. chelsea/new.jpg\); 1 removed "
                                         r"\(e.g. coffee/002.jpg\); 1 changed \(e.g. "
                                         r"astronaut/001.jpg\)"):
        pipelines.from_store(tmp_path / "store")
    assert pipelines.from_store(tmp_path / "store", augment=None,
                                check_source=False).num_classes == 3


def test_bad_arguments_are_refused(folder, tmp_path):
    with pytest.raises(ValueError, match="inside the image folder"):
        pipelines.prepare(folder, folder / "store", image_size=32)
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match="exists already"):
        pipelines.prepare(folder, tmp_path / "taken", image_size=32)
    with pytest.raises(FileNotFoundError, match="not a prepared store"):
        pipelines.from_store(tmp_path / "taken")
    with pytest.warns(UserWarning):
        pipelines.prepare(folder, tmp_path / "store", image_size=32, short_side=40)
    with pytest.raises(ValueError, match="larger than store"):
        pipelines.from_store(tmp_path / "store", image_size=64)
    with pytest.warns(UserWarning, match="upscaled"):
        pipelines.from_store(tmp_path / "store", image_size=40, augment=None)
    assert not (folder / "store").exists()


def test_interrupted_prepare_leaves_no_store(folder, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_module, "_write_split", fail)
    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning):
        pipelines.prepare(folder, tmp_path / "store", image_size=32)
    assert sorted(os.listdir(tmp_path)) == ["photos"]


def test_from_folder_store_keyword(folder, tmp_path):
    with pytest.warns(UserWarning):
        pipelines.prepare(folder, tmp_path / "store", image_size=32)
    data = pipelines.from_folder(folder, store=tmp_path / "store", augment=None)
    assert data.source == "store" and data.num_classes == 3
    with pytest.raises(ValueError, match="was prepared from"):
        pipelines.from_folder(tmp_path, store=tmp_path / "store")


def test_zoo_prepare_command(folder, tmp_path, capsys):
    from zoo import cli

    assert cli.main(["prepare", str(folder), str(tmp_path / "store"), "--image-size", "32",
                     "--seed", "3"]) == 0
    assert "train 22" in capsys.readouterr().out
    assert pipelines.from_store(tmp_path / "store", augment=None).manifest["seed"] == 3
    assert cli.main(["prepare", str(folder), str(folder / "inside")]) == 2
    assert "inside the image folder" in capsys.readouterr().err


def test_fine_tune_from_store_matches_the_folder_run(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    import zoo

    spec = importlib.util.spec_from_file_location(
        "tiny_data", Path(__file__).resolve().parents[2] / "examples" / "tiny_data.py")
    tiny_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny_data)
    digits = tiny_data.digits_folder(tmp_path / "digits", per_class=60)
    pipelines.prepare(digits, tmp_path / "store", image_size=32)
    accuracy = {}
    for name, data in (
            ("folder", pipelines.from_folder(digits, model="lenet5", augment="none", seed=0)),
            ("store", pipelines.from_store(tmp_path / "store", model="lenet5",
                                           augment="none", seed=0))):
        result = zoo.finetune("lenet5", data, weights=None, epochs=4, seed=0, verbose=0,
                              out_dir=tmp_path / name)
        accuracy[name] = result.metrics["val_accuracy"]
    # Same split, same seed; only the re-encoded pixels differ (digit PNGs stored as JPEG).
    assert accuracy["folder"] > 0.8 and abs(accuracy["store"] - accuracy["folder"]) < 0.08
    manifest = store_module.read_manifest(tmp_path / "store")
    recorded = json.loads((Path(result.run_dir) / "run.json").read_text())["data"]
    assert recorded["store"] == str(tmp_path / "store")
    assert recorded["store_hash"] == store_module.manifest_hash(tmp_path / "store")
    assert recorded["root"] == manifest["source_root"]


def test_reencoded_images_are_small_and_cheap_to_decode(tmp_path):
    from PIL import Image, JpegImagePlugin

    assert store_module.default_short_side((224, 224)) == 256  # the eval resize at 0.875
    root = make_folder(tmp_path / "photos", {"astronaut": 2, "coffee": 2}, size=(160, 120))
    manifest = pipelines.prepare(root, tmp_path / "store", image_size=32,
                                 validation_split=0.5)
    assert manifest["short_side"] == 37 and manifest["quality"] == 90
    data = pipelines.from_store(tmp_path / "store", augment=None)
    stored = next(iter(data.val.unbatch().take(1)))[0]
    assert stored.shape == (32, 32, 3)
    encoded, shape = store_module.encode_bounded(
        (root / "astronaut" / "000.jpg").read_bytes(), 37, 90)
    with Image.open(__import__("io").BytesIO(encoded)) as image:
        # 4:2:0 chroma: half the samples of 4:4:4 to decode every epoch.
        assert JpegImagePlugin.get_sampling(image) == 2 and image.size == (49, 37)
    assert shape == [37, 49]


def test_train_crop_pixels_unchanged_by_the_float_resize(tmp_path):
    import io

    import tensorflow as tf
    from PIL import Image

    from pipelines import transforms

    out = io.BytesIO()
    Image.fromarray(photo("chelsea", (97, 75))).save(out, "JPEG", quality=90)
    data = tf.constant(out.getvalue())
    for i in range(4):
        seed = tf.constant([i, 7])
        image = transforms.train_crop(data, tf.constant(transforms.KIND_JPEG), tf.constant(1),
                                      seed, (40, 40), kinds=(transforms.KIND_JPEG,),
                                      oriented=False, dct_scaling=False)
        window = transforms.random_crop_window(tf.io.extract_jpeg_shape(data), seed)
        # What the path gave before it cast the crop: the uint8 crop resized directly.
        reference = tf.image.resize(tf.io.decode_and_crop_jpeg(data, window, channels=3),
                                    (40, 40))
        np.testing.assert_array_equal(image.numpy(), reference.numpy())


def test_zoo_train_from_a_store(tmp_path, capsys):
    import json

    from zoo import cli

    root = make_folder(tmp_path / "photos", {"astronaut": 8, "coffee": 8}, size=(48, 36))
    other = make_folder(tmp_path / "other", {"astronaut": 4, "coffee": 4}, size=(48, 36))
    store = tmp_path / "store"
    pipelines.prepare(root, store, image_size=32, validation_split=0.25)
    train = ["train", "--model", "lenet5", "--weights", "none", "--epochs", "1"]
    assert cli.main(train + ["--data", str(root), "--store", str(store),
                             "--out", str(tmp_path / "run")]) == 0
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["data"]["store"] == str(store)
    assert info["data"]["store_hash"] == store_module.manifest_hash(store)
    assert info["recipe"]["validation_split"] == 0.25
    assert sum(info["data"]["counts"]["val"].values()) == 4
    capsys.readouterr()
    for extra, message in ((["--data", str(other)], "was prepared from"),
                           (["--data", str(root), "--validation-split", "0.5"],
                            "validation_split=0.5 cannot apply to the prepared store"),
                           (["--data", str(root), "--sampling", "balanced"],
                            "sampling='balanced' cannot apply")):
        assert cli.main(train + extra + ["--store", str(store),
                                         "--out", str(tmp_path / "refused")]) == 2
        assert message in capsys.readouterr().err
    assert cli.main(train + ["--data", str(root), "--store", str(tmp_path / "photos"),
                             "--out", str(tmp_path / "refused")]) == 2
    assert "not a prepared store" in capsys.readouterr().err
    assert cli.main(["lr-find", "--model", "lenet5", "--weights", "none", "--data", str(root),
                     "--store", str(store), "--steps", "4", "--batch-size", "4",
                     "--out", str(tmp_path / "lr")]) == 0
    assert "suggested learning rate" in capsys.readouterr().out


def test_grey_and_one_hot_from_a_store_and_what_is_refused(folder, tmp_path):
    with pytest.warns(UserWarning):
        pipelines.prepare(folder, tmp_path / "store", image_size=32, short_side=72)
    grey = pipelines.from_folder(folder, store=tmp_path / "store", channels=1, augment=None,
                                 label_mode="categorical")
    reference = pipelines.from_folder(folder, image_size=32, out_dir=tmp_path / "ref",
                                      cache=False, augment=None, channels=1)
    x, y = next(iter(grey.val))
    assert x.shape[1:] == (32, 32, 1) and y.shape[1:] == (3,)
    assert np.all(y.numpy().sum(axis=1) == 1)
    # The 96x72 JPEGs keep their own bytes (short side 72): the same grey pixels as files.
    files = {p: i for i, (p, _) in enumerate(reference.val_files)}
    raw = np.concatenate([x.numpy() for x, _ in reference.val])
    stored = np.concatenate([x.numpy() for x, _ in grey.val])
    np.testing.assert_allclose(stored, raw[[files[p] for p, _ in grey.val_files]], atol=1e-4)
    with pytest.raises(ValueError, match="multi_hot.*one class an image"):
        pipelines.from_store(tmp_path / "store", label_mode="multi_hot")
    table = tmp_path / "labels.csv"
    table.write_text("path,label\nastronaut/000.jpg,astronaut\n")
    with pytest.raises(ValueError, match="label table .* cannot be prepared yet"):
        pipelines.prepare(table, tmp_path / "store2")
