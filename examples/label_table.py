"""Label tables: a Kaggle-style CSV (single-label) and a multi-label CSV, with from_csv.

    python examples/label_table.py --table train.csv --images train/ --out runs/table
    python examples/label_table.py --table tags.csv --images imgs/ --label-delimiter " "
    python examples/label_table.py --small --out /tmp/table   # CI: digits written here

A table lists one image per row: a path (relative to ``--images``) and its label, or its
labels joined by a delimiter. ``pipelines.from_csv`` checks every file, lists rows naming
missing or broken files in ``.skipped``, splits the images (stratified, or by iterative
stratification for multi-label data) and writes the split to ``<out>/split.json``.

``--small`` writes 300 of scikit-learn's handwritten digits as PNG files, then two tables
over them: ``digits.csv`` (``id,label``: bare ids, the digit; only 6 zeros; a row naming a
missing file and one a broken file) read with ``suffix=".png"`` and
``sampling="balanced"``, which draws the zeros as often as the other digits; and
``tags.csv`` (each digit with the tags ``even``/``odd`` and ``small``/``large`` beside it,
space-separated) read as multi-label. It prints the counts per split and class, and the
labels one balanced epoch draws.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_tables(images: Path) -> tuple[Path, Path]:
    """Writes ``digits.csv`` and ``tags.csv`` beside the digit folders under ``images``."""
    paths = sorted(images.rglob("*.png"))
    (images / "broken.png").write_bytes(paths[0].read_bytes()[:50])  # cut off
    ids = [(str(p.relative_to(images).with_suffix("")), p.parent.name) for p in paths]
    # Few zeros: a skewed table, for balanced sampling to even out.
    skewed = [row for row in ids if row[1] != "0"] + [row for row in ids if row[1] == "0"][:6]
    single = images.parent / "digits.csv"
    with open(single, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label"])
        writer.writerows(skewed + [("missing", "3"), ("broken", "4")])
    multi = images.parent / "tags.csv"
    with open(multi, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "tags"])
        for name, digit in ids:
            tags = [digit, "even" if int(digit) % 2 == 0 else "odd",
                    "small" if int(digit) < 5 else "large"]
            writer.writerow([f"{name}.png", " ".join(tags)])
    return single, multi


def show(name: str, data) -> None:
    """Prints what a pipeline holds: classes, the counts per split, what was skipped."""
    kind = "multi-label" if data.multi_label else "single-label"
    print(f"{name}: {kind}, {data.num_classes} classes, sampling={data.sampling}, "
          f"{len(data.train_files)} train / {len(data.val_files)} val images, "
          f"{len(data.skipped)} skipped")
    for split, per_class in data.counts.items():
        print(f"  {split}: " + ", ".join(f"{c} {n}" for c, n in per_class.items()))
    for path, reason in data.skipped:
        print(f"  skipped {Path(path).name}: {reason}")
    print(f"  split manifest: {data.manifest_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", help="a CSV or TSV label table")
    parser.add_argument("--images", help="the folder the table's paths are relative to")
    parser.add_argument("--path-column", default="path")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--label-delimiter", default=None)
    parser.add_argument("--model", default=None, help="a zoo model name, for its geometry")
    parser.add_argument("--out", default="runs/table-example")
    parser.add_argument("--small", action="store_true", help="digits written here, for CI")
    args = parser.parse_args()

    import numpy as np

    import pipelines

    out = Path(args.out)
    if not args.small:
        if not args.table:
            parser.error("--table is needed (or --small)")
        data = pipelines.from_csv(
            args.table, args.images, path_column=args.path_column,
            label_column=args.label_column, label_delimiter=args.label_delimiter,
            model=args.model, out_dir=out)
        show(Path(args.table).name, data)
        return

    from tiny_data import digits_folder

    images = digits_folder(out / "data" / "images", per_class=30)
    single, multi = write_tables(images)
    small = dict(image_size=32, batch_size=32, augment="none")
    digits = pipelines.from_csv(single, images, path_column="id", suffix=".png",
                                sampling="balanced", out_dir=out / "digits",
                                imbalance_warning=None, **small)
    show("digits.csv", digits)
    drawn = np.bincount(np.concatenate([y.numpy() for _, y in digits.train]), minlength=10)
    print("one balanced training epoch draws: "
          + ", ".join(f"{c} {n}" for c, n in zip(digits.class_names, drawn)))
    tags = pipelines.from_csv(multi, images, label_column="tags", label_delimiter=" ",
                              out_dir=out / "tags", imbalance_warning=None, **small)
    show("tags.csv", tags)
    _, labels = next(iter(tags.val))
    names = [[tags.class_names[i] for i in row.nonzero()[0]] for row in labels.numpy()[:3]]
    print(f"first validation labels (multi-hot {tuple(labels.shape)}): {names}")


if __name__ == "__main__":
    main()
