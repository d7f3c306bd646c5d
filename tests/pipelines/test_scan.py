"""The scanner: one list of image extensions, split-folder names and the hidden-file rule,
used by from_folder, evaluate, export and predict alike."""

from __future__ import annotations

import os

import pipeline_helpers  # noqa: F401  (puts the project root first on sys.path)
import pytest

import pipelines
from pipelines import scan


def _touch(root, *relpaths):
    for rel in relpaths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_list_images_is_sorted_recursive_and_skips_hidden_and_other_files(tmp_path):
    _touch(tmp_path, "b/2.PNG", "a/1.jpg", "a/deep/3.webp", "a/notes.txt", "a/.DS_Store",
           "a/._1.jpg", ".hidden/4.jpg", "__MACOSX/a/5.jpg", "a/Thumbs.db", "c/6.JFIF")
    found = [p.relative_to(tmp_path).as_posix() for p in pipelines.list_images(tmp_path)]
    assert found == ["a/1.jpg", "a/deep/3.webp", "b/2.PNG", "c/6.JFIF"]
    assert len(pipelines.list_images(tmp_path, limit=2)) == 2
    with pytest.raises(FileNotFoundError, match="No image folder"):
        pipelines.list_images(tmp_path / "missing")


def test_the_extension_list_is_the_one_from_folder_accepts(tmp_path):
    assert pipelines.IMAGE_EXTENSIONS is scan.IMAGE_EXTENSIONS
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"} <= pipelines.IMAGE_EXTENSIONS
    assert all(scan.is_image_path(f"x{e.upper()}") for e in pipelines.IMAGE_EXTENSIONS)
    assert not scan.is_image_path("x.tiff") and not scan.is_image_path("jpg")
    assert scan.is_hidden(".ipynb_checkpoints") and scan.is_hidden("desktop.ini")
    assert not scan.is_hidden("cats")


@pytest.mark.parametrize("name", scan.SPLIT_DIRS["val"])
def test_class_folders_prefer_the_validation_folder(tmp_path, name):
    _touch(tmp_path, "train/cat/1.jpg", f"{name}/cat/1.jpg", f"{name}/dog/1.jpg",
           f"{name}/.cache/1.jpg")
    root, folders = pipelines.class_folders(tmp_path)
    assert root == tmp_path / name
    assert [f.name for f in folders] == ["cat", "dog"]


def test_class_folders_of_a_plain_folder_and_of_one_without_classes(tmp_path):
    _touch(tmp_path, "b/1.jpg", "a/1.jpg", "loose.jpg")
    root, folders = pipelines.class_folders(tmp_path)
    assert root == tmp_path and [f.name for f in folders] == ["a", "b"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="has no class folders"):
        pipelines.class_folders(empty)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_walk_follows_a_symlink_loop_once(tmp_path):
    _touch(tmp_path, "a/1.jpg")
    os.symlink(tmp_path / "a", tmp_path / "a" / "loop")
    assert [p.name for p in pipelines.list_images(tmp_path)] == ["1.jpg"]
