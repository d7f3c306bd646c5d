"""A label table against the folder it lists: ``pipelines.from_csv`` vs ``from_folder``.

Builds (once) a folder of small real-photo JPEGs cut from scikit-image's sample photographs
(``benchmarks/pipeline.py``'s crops, 48x36 by default) in ten class folders, writes a
``labels.csv`` (``path,label``) that lists the same files, and times, alternating, the two
calls with the same options until they return (listing, checking every file, the split and
the ``tf.data`` graphs), and then until the first training batch. The file cache and the
memory cache are off on both sides, so each round checks every file again.

    .venv/bin/python benchmarks/tables.py --images 100000 --rounds 3
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_table(root: Path) -> Path:
    """``root``'s listing as ``<root>.csv`` beside it (path relative to root, label)."""
    table = root.with_suffix(".csv")
    if not table.exists():
        rows = sorted((p.relative_to(root).as_posix(), p.parent.name)
                      for p in root.rglob("*.jpg"))
        with open(table, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            writer.writerows(rows)
    return table


def timed(call) -> tuple[float, float]:
    """Seconds until ``call()`` returns its ImageData, and until its first train batch."""
    started = time.perf_counter()
    data = call()
    returned = time.perf_counter() - started
    next(iter(data.train))
    return returned, time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    """Prints the medians per entry point and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=None,
                        help="where the JPEGs go (default: /tmp/zoo-bench-tables-<images>)")
    args = parser.parse_args(argv)

    from pipeline import build_folder

    import pipelines

    root = build_folder(args.folder or Path(f"/tmp/zoo-bench-tables-{args.images}"),
                        args.images, size=(48, 36))
    table = write_table(root)
    options = dict(image_size=(32, 32), batch_size=64, cache=False, augment="none")
    calls = {"from_folder": lambda out: pipelines.from_folder(root, out_dir=out, **options),
             "from_csv": lambda out: pipelines.from_csv(table, root, out_dir=out, **options)}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
    with tempfile.TemporaryDirectory() as scratch:
        # Warm the page cache and the imports; the two must list the same split.
        warm = {name: call(Path(scratch) / f"warm-{name}") for name, call in calls.items()}
        splits = {name: (sorted(d.train_files), sorted(d.val_files))
                  for name, d in warm.items()}
        assert splits["from_folder"] == splits["from_csv"], "the table lists other files"
        for round_ in range(args.rounds):
            order = list(calls) if round_ % 2 == 0 else list(reversed(calls))
            for name in order:
                times[name].append(timed(lambda c=calls[name], r=round_, n=name:
                                         c(Path(scratch) / f"{n}-{r}")))
    print(f"{args.images} JPEGs (48x36) in {root}, {os.cpu_count()} cores, "
          f"medians of {args.rounds} alternating rounds")
    medians = {}
    for name, values in times.items():
        medians[name] = (statistics.median(v[0] for v in values),
                         statistics.median(v[1] for v in values))
        print(f"  {name}: returns in {medians[name][0]:.2f} s, first batch at "
              f"{medians[name][1]:.2f} s (runs: "
              f"{', '.join(f'{a:.2f}/{b:.2f}' for a, b in values)})")
    ratio = medians["from_csv"][0] / medians["from_folder"][0]
    print(f"  from_csv / from_folder, to return: {ratio:.2f}x")


if __name__ == "__main__":
    main()
