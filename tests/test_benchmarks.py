"""The pipeline benchmarks run end to end on a small folder, so that they never rot.

Only that they run and report every alternative is checked here: speed is never asserted
in a test (the figures are in BENCHMARKS.md, with the commands that give them).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table_rows(output: str) -> dict[str, list[float]]:
    """The printed Markdown tables' rows, by first cell: their leading numeric cells."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        numbers = []
        for cell in cells[1:]:
            if not re.fullmatch(r"[\d.]+x?", cell):
                break
            numbers.append(float(cell.rstrip("x")))
        if len(numbers) >= 2:
            rows[cells[0]] = numbers
    return rows


def test_pipeline_benchmark_measures_every_alternative(tmp_path, capsys):
    # Each epoch asserts it saw every image once: a pipeline that dropped or repeated
    # images would fail here.
    assert load("pipeline").main(["--images", "40", "--rounds", "1", "--large", "0",
                                  "--workdir", str(tmp_path)]) == 0
    rows = table_rows(capsys.readouterr().out)
    for name in ("read + full decode (ceiling)", 'ours, augment="standard"',
                 "ours, albumentations RandomResizedCrop + HorizontalFlip",
                 "keras baseline with tf.data autotuning off"):
        assert name in rows and all(v > 0 for v in rows[name]), (name, rows)
    assert all(v > 0 for v in rows["ours / Keras baseline"]), rows
    # The folder is real photos cut from scikit-image's samples: 10 classes.
    assert len([p for p in (tmp_path / "photos-40").iterdir() if p.is_dir()]) == 10


def test_pipeline_pieces_benchmark_measures_every_piece(tmp_path, capsys):
    assert load("pipeline_pieces").main(["--images", "40", "--rounds", "1",
                                         "--workdir", str(tmp_path)]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert len(rows) == 8 and all(v[1] > 0 for v in rows.values()), rows
    assert 'ours, augment="standard" (all of it)' in rows


def test_decode_benchmark_measures_both_decoders(tmp_path, capsys):
    # Both train paths must see every image once per epoch (asserted inside), each with the
    # decoder it names (asserted on its files' kinds).
    assert load("decode").main(["--images", "16", "--rounds", "1",
                                "--workdir", str(tmp_path)]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert all(v > 0 for v in rows["ours: TensorFlow decoders (graph_decode)"]), rows
    assert all(v > 0 for v in rows["Pillow in tf.numpy_function"]), rows
    assert all(v > 0 for v in rows["ours / Pillow"]), rows
    suffixes = {p.suffix for p in (tmp_path / "mixed-16").glob("class_*/*")}
    assert suffixes == {".png", ".gif", ".webp"}, suffixes


def test_tables_benchmark_times_a_table_beside_its_folder(tmp_path, capsys):
    # Inside, the two entry points must give the same split of the same files.
    load("tables").main(["--images", "40", "--rounds", "1", "--folder",
                         str(tmp_path / "photos")])
    out = capsys.readouterr().out
    assert re.search(r"from_folder: returns in [\d.]+ s", out), out
    assert re.search(r"from_csv / from_folder, to return: [\d.]+x", out), out


def test_levers_benchmark_times_every_path(tmp_path, capsys):
    assert load("levers").main(["--model", "lenet5", "--size", "32", "--batch", "8",
                                "--images", "16", "--rounds", "1",
                                "--data", str(tmp_path / "photos")]) == 0
    rows = table_rows(capsys.readouterr().out)
    for name in ("recipe, batch 8", "ema=0.999, batch 8", "accumulate_steps=4, steps of 2",
                 "plain steps of 2"):
        assert name in rows and all(v > 0 for v in rows[name]), (name, rows)
