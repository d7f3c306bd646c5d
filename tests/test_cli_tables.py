"""``zoo train`` / ``zoo evaluate`` on a Kaggle-style table: other column names, bare ids."""

import csv
import json

from label_tables import write_digit_table

from zoo.cli import main


def _kaggle_table(tmp_path):
    """The multi-digit pictures listed as ``id,tags`` with ids that lack the extension."""
    images, table = write_digit_table(tmp_path / "data", 90, seed=3)
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    kaggle = tmp_path / "data" / "train.csv"
    with open(kaggle, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "tags"])
        writer.writerows((row["path"].removesuffix(".png"), row["label"]) for row in rows)
    return images, kaggle


def test_train_and_evaluate_read_a_table_by_its_column_names(tmp_path, capsys):
    images, table = _kaggle_table(tmp_path)
    before = sorted(p.name for p in images.iterdir())
    columns = ["--images", str(images), "--path-column", "id", "--label-column", "tags",
               "--suffix", ".png", "--label-delimiter", " "]
    out = tmp_path / "run"
    assert main(["train", "--data", str(table), *columns, "--model", "lenet5",
                 "--weights", "none", "--epochs", "1", "--out", str(out)]) == 0
    assert "validation mAP" in capsys.readouterr().out
    run = json.loads((out / "run.json").read_text())
    assert run["multi_label"] and sorted(run["class_names"]) == [str(d) for d in range(10)]
    assert main(["evaluate", str(out), "--data", str(table), *columns,
                 "--out", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    assert "mAP" in printed and "on 90 images" in printed
    # Without the column names, the table's columns are named in a one-line error.
    assert main(["evaluate", str(out), "--data", str(table), "--images", str(images)]) != 0
    err = capsys.readouterr().err
    assert "its columns are 'id', 'tags'" in err and "--path-column" in err
    assert sorted(p.name for p in images.iterdir()) == before
