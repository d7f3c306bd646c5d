"""Label tables (from_csv, from_dataframe) over real images: the same ImageData as a folder,
bad rows listed or named, split columns, suffixes, TSV, DataFrames."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import make_folder, png_bytes, tree_fingerprint

import pipelines

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from label_tables import write_digit_table  # noqa: E402

SMALL = dict(image_size=24, batch_size=8, augment="none", imbalance_warning=None)


def _write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A class folder of real photo crops and a CSV listing the same files, beside it."""
    base = tmp_path_factory.mktemp("photos")
    root = make_folder(base / "images", {"astronaut": 8, "coffee": 8, "chelsea": 6},
                       size=(32, 28))
    rows = [{"path": str(p.relative_to(root)), "label": p.parent.name}
            for p in sorted(root.rglob("*.jpg"))]
    return root, _write_csv(base / "labels.csv", rows), rows


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Pictures of scikit-learn digits and their CSV (multi-label ``label``, single ``first``)."""
    return write_digit_table(tmp_path_factory.mktemp("digits"), 60)


def test_a_table_gives_the_same_data_as_the_folder_it_lists(photos):
    root, table, _ = photos
    folder = pipelines.from_folder(root, **SMALL)
    from_table = pipelines.from_csv(table, root, **SMALL)
    assert from_table.source == "table" and not from_table.multi_label
    assert from_table.class_names == folder.class_names
    assert from_table.train_files == folder.train_files
    assert from_table.val_files == folder.val_files
    assert from_table.counts == folder.counts
    assert from_table.label_mode == "int"
    (x_t, y_t), (x_f, y_f) = next(iter(from_table.val)), next(iter(folder.val))
    np.testing.assert_array_equal(x_t.numpy(), x_f.numpy())
    np.testing.assert_array_equal(y_t.numpy(), y_f.numpy())


def test_bad_rows_are_skipped_with_the_row_named_and_nothing_is_touched(tmp_path):
    root = make_folder(tmp_path / "images", {"astronaut": 6, "coffee": 6}, size=(32, 28))
    rows = [{"path": str(p.relative_to(root)), "label": p.parent.name}
            for p in sorted(root.rglob("*.jpg"))]
    (tmp_path / "outside.jpg").write_bytes((root / rows[0]["path"]).read_bytes())
    (root / "broken").mkdir()
    (root / "broken" / "cut.png").write_bytes(
        png_bytes(np.full((20, 20, 3), 90, np.uint8))[:60])
    (root / "coffee" / "out-link.jpg").symlink_to(tmp_path / "outside.jpg")
    (root / "coffee" / "in-link.jpg").symlink_to(root / rows[-1]["path"])
    extra = [{"path": "astronaut/missing.jpg", "label": "astronaut"},
             {"path": "../outside.jpg", "label": "coffee"},
             {"path": "broken/cut.png", "label": "coffee"},
             {"path": "coffee/out-link.jpg", "label": "coffee"},
             {"path": "astronaut", "label": "coffee"},
             {"path": "coffee/in-link.jpg", "label": "coffee"}]
    table = _write_csv(tmp_path / "bad.csv", rows + extra)
    before = tree_fingerprint(root)
    with pytest.warns(UserWarning, match="Skipped 5 file"):
        data = pipelines.from_csv(table, root, out_dir=tmp_path / "run", **SMALL)
    reasons = {Path(p).name: r for p, r in data.skipped}
    n = len(rows) + 1  # the header is line 1
    assert reasons["missing.jpg"] == f"bad.csv line {n + 1}: no such file"
    assert reasons["outside.jpg"].startswith(f"bad.csv line {n + 2}: outside the image folder")
    assert "cut.png" in reasons and "line" not in reasons["cut.png"]  # found by the check
    assert reasons["out-link.jpg"].startswith(f"bad.csv line {n + 4}: outside the image")
    assert reasons["astronaut"] == f"bad.csv line {n + 5}: a folder, not an image"
    assert sum(len(batch[1]) for batch in data.train) == len(data.train_files)
    # The link that stays inside root is an image like the others.
    assert len(data.train_files) + len(data.val_files) == len(rows) + 1
    assert tree_fingerprint(root) == before


@pytest.mark.parametrize("rows, message", [
    ([{"file": "a.jpg", "label": "x"}], r"no column 'path' \(path_column\); its columns are "
                                        r"'file', 'label'\. Pass path_column="),
    ([{"path": "astronaut/000.jpg", "label": " "}], r"line 2: the label of "
                                                    r"'astronaut/000.jpg' is empty"),
    ([{"path": "", "label": "x"}], "line 2: the path is empty"),
    ([{"path": "astronaut/000.jpg", "label": "astronaut"},
      {"path": "astronaut/000.jpg", "label": "coffee"}],
     r"line 3 labels 'astronaut/000.jpg' 'coffee', labels.csv line 2 'astronaut'; a "
     r"single-label image has one label"),
])
def test_bad_tables_are_errors_naming_the_row(photos, tmp_path, rows, message):
    root = photos[0]
    table = _write_csv(tmp_path / "labels.csv", rows)
    with pytest.raises(ValueError, match=message):
        pipelines.from_csv(table, root, **SMALL)


def test_unknown_split_value_and_split_conflicts_name_the_row(photos, tmp_path):
    root, _, rows = photos
    odd = [dict(r, split="train") for r in rows[:-1]] + [dict(rows[-1], split="holdout")]
    with pytest.raises(ValueError, match=r"line \d+: split 'holdout' is not one of train, val"):
        pipelines.from_csv(_write_csv(tmp_path / "a.csv", odd), root, split_column="split",
                           **SMALL)
    twice = [dict(rows[0], split="train"), dict(rows[0], split="val")]
    with pytest.raises(ValueError, match="an image belongs to one split"):
        pipelines.from_csv(_write_csv(tmp_path / "b.csv", twice), root, split_column="split",
                           **SMALL)


def test_repeated_rows_with_one_label_count_once(photos, tmp_path):
    root, _, rows = photos
    data = pipelines.from_csv(_write_csv(tmp_path / "t.csv", rows + rows[:3]), root, **SMALL)
    assert len(data.train_files) + len(data.val_files) == len(rows)


def test_split_column_is_honoured(photos, tmp_path):
    root, _, rows = photos
    names = ["train", "Train", "valid", "validation", "val", "test"]
    marked = [dict(r, part=names[i % len(names)]) for i, r in enumerate(rows)]
    data = pipelines.from_csv(_write_csv(tmp_path / "s.csv", marked), root,
                              split_column="part", out_dir=tmp_path / "run", **SMALL)
    expect = {"train": ("train", "Train"), "val": ("valid", "validation", "val"),
              "test": ("test",)}
    for split, files in (("train", data.train_files), ("val", data.val_files),
                         ("test", data.test_files)):
        wanted = sorted(str(root / r["path"]) for r in marked if r["part"] in expect[split])
        assert sorted(p for p, _ in files) == wanted
    assert data.test is not None
    assert "split_method" not in data.manifest  # as the table says, not made here


def test_suffix_tsv_and_numeric_class_order(tmp_path):
    root = make_folder(tmp_path / "imgs", {"2": 5, "10": 5, "1": 5}, size=(24, 20))
    rows = [{"id": str(p.relative_to(root).with_suffix("")), "label": p.parent.name}
            for p in sorted(root.rglob("*.jpg"))]
    table = _write_csv(tmp_path / "ids.tsv", rows, delimiter="\t")
    data = pipelines.from_csv(table, root, path_column="id", suffix=".jpg", **SMALL)
    assert data.class_names == ["1", "2", "10"]  # numbers in number order
    assert len(data.train_files) + len(data.val_files) == 15
    assert all(p.endswith(".jpg") for p, _ in data.train_files)


def test_root_defaults_to_the_tables_folder_and_writes_stay_out_of_the_images(digits,
                                                                             tmp_path):
    images, table = digits
    moved = images.parent / "here.csv"
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    _write_csv(moved, [dict(r, path=f"images/{r['path']}") for r in rows])
    data = pipelines.from_csv(moved, label_column="first", **SMALL)
    assert Path(data.root) == images.parent and data.num_classes == 10
    with pytest.raises(ValueError, match="is inside the image folder"):
        pipelines.from_csv(moved, label_column="first", out_dir=images / "run", **SMALL)


def test_a_class_with_one_image_is_warned(photos, tmp_path):
    root, _, rows = photos
    one = [r for r in rows if r["label"] != "chelsea"] + [
        next(r for r in rows if r["label"] == "chelsea")]
    with pytest.warns(UserWarning, match=r"no validation images: 'chelsea' \(1 image"):
        pipelines.from_csv(_write_csv(tmp_path / "o.csv", one), root, **SMALL)


def test_unknown_keyword_is_named(photos):
    with pytest.raises(TypeError, match=r"from_csv\(\) got unexpected keyword.*'imagesize'"):
        pipelines.from_csv(photos[1], imagesize=24)


def test_dataframe_tables_and_list_valued_labels(digits, monkeypatch):
    import pandas
    images, table = digits
    frame = pandas.read_csv(table)
    frame["path"] = [str(images / p) for p in frame["path"]]  # absolute, root left out
    single = pipelines.from_dataframe(frame, label_column="first", **SMALL)
    assert Path(single.root) == images and not single.multi_label
    relative = frame.assign(path=[f"images/{Path(p).name}" for p in frame["path"]])
    monkeypatch.chdir(images.parent)  # relative paths are taken from the current folder
    assert pipelines.from_dataframe(relative, label_column="first", **SMALL).train_files \
        == single.train_files
    frame["tags"] = [label.split() for label in frame["label"]]
    multi = pipelines.from_dataframe(frame, label_column="tags", **SMALL)
    assert multi.multi_label and multi.label_mode == "multi_hot"
    by_path = dict(multi.train_files + multi.val_files)
    first = frame.iloc[0]
    assert by_path[first["path"]] == tuple(sorted(int(d) for d in first["tags"]))
    frame.loc[3, "first"] = None
    with pytest.raises(ValueError, match="DataFrame row 3: the label of .* is empty"):
        pipelines.from_dataframe(frame, label_column="first", **SMALL)


def test_dataframe_without_pandas_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="from_dataframe needs pandas: pip install pandas"):
        pipelines.from_dataframe({"path": [], "label": []})


@pytest.mark.parametrize("command", ["train", "lr-find", "evaluate"])
def test_cli_passes_a_label_table_as_images_and_label_delimiter(monkeypatch, command):
    # The command line's part only: the recipes' handling of the keywords is tested there.
    import types

    from zoo import cli
    from zoo.recipes import evaluate, finetune

    seen = {}

    def record(*args, **kwargs):
        seen.update(args=args, kwargs=kwargs)
        return types.SimpleNamespace(metrics={"val_accuracy": 0.5}, run_dir="runs/x",
                                     suggestion=0.01, plot="lr.png")

    def record_evaluate(*args, **kwargs):
        record(*args, **kwargs)
        return {"accuracy": 0.5, "num_images": 3, "out_dir": "report"}

    monkeypatch.setattr(finetune, "finetune", record)
    monkeypatch.setattr(finetune, "find_learning_rate", record)
    monkeypatch.setattr(evaluate, "evaluate", record_evaluate)
    model = ["lenet5"] if command == "evaluate" else ["--model", "lenet5"]
    argv = [command, *model, "--data", "labels.csv", "--images", "pics/",
            "--label-delimiter", " "]
    assert cli.main(argv) == 0
    assert "labels.csv" in seen["args"]
    assert seen["kwargs"]["images"] == "pics/" and seen["kwargs"]["label_delimiter"] == " "
    cli.main([command, *model, "--data", "folder/"])
    assert "images" not in seen["kwargs"] and "label_delimiter" not in seen["kwargs"]
