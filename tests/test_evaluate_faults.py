"""Faults on the readers' side: evaluate on a folder with empty class folders, and damaged
model files given to evaluate, export and predict."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import zoo
from zoo import rundir
from zoo.recipes.evaluate import evaluate
from zoo.registry import Geometry

CLASSES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory of an untrained LeNet on three classes (evaluate needs no skill)."""
    model = zoo.build("lenet5", num_classes=len(CLASSES), input_shape=(32, 32, 1))
    return rundir.write_run(tmp_path_factory.mktemp("runs") / "run", model=model,
                            model_name="lenet5", class_names=CLASSES,
                            geometry=Geometry((32, 32), 1.0, "bilinear", 1), status="finished")


def _images(folder: Path, count: int, seed: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, (40, 40), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")


def test_evaluate_skips_an_empty_class_folder_as_training_does(run_dir, tmp_path, caplog):
    data = tmp_path / "data"
    _images(data / "circle", 3, 0)
    _images(data / "square", 2, 1)
    (data / "not-yet-sorted").mkdir()  # empty, and no class of the model
    (data / "triangle").mkdir()  # a class of the model, with no images
    with caplog.at_level(logging.WARNING, logger="zoo"):
        metrics = evaluate(run_dir, data, out_dir=tmp_path / "eval")
    assert metrics["num_images"] == 5
    assert [str(data / "not-yet-sorted"), "class folder without usable images; not a class"] \
        in metrics["skipped"]
    assert "not-yet-sorted" in caplog.text and "without images" in caplog.text
    # The model's class without images is a warning naming it, and has no support.
    assert "1 class(es)" in caplog.text and "triangle" in caplog.text
    assert metrics["per_class"]["triangle"]["support"] == 0
    # A folder with images that is no class of the model is still refused.
    _images(data / "hexagon", 1, 2)
    with pytest.raises(ValueError, match="hexagon"):
        evaluate(run_dir, data, out_dir=tmp_path / "eval2")


# ------------------------------------------------------------------ damaged model files


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def _commands(model: Path, data: Path, out: Path) -> dict[str, list[str]]:
    image = str(next((data / "circle").glob("*.png")))
    return {"evaluate": ["evaluate", str(model), "--data", str(data), "--out", str(out / "eval")],
            "export": ["export", str(model), "--out", str(out / "export"), "--format",
                       "savedmodel", "--model-name", "lenet5"],
            "predict": ["predict", str(model), image, "--model-name", "lenet5"]}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("images")
    for seed, name in enumerate(CLASSES):
        _images(data / name, 2, seed)
    return data


@pytest.mark.parametrize("damage", ["cut", "flip"])
def test_a_damaged_user_keras_file_is_named_by_the_api_and_the_cli(run_dir, images, tmp_path,
                                                                  capsys, damage):
    # A .keras that zoo did not write (no recorded digest): the zip's own checks find it.
    from zoo.cli import main
    from zoo.weights import WeightsFileError

    path = tmp_path / "mine.keras"
    path.write_bytes((run_dir / rundir.MODEL_FILE).read_bytes())
    size = path.stat().st_size
    if damage == "cut":
        path.write_bytes(path.read_bytes()[: size // 2])
        said = "truncated"
    else:
        _flip(path, size // 2)  # inside model.weights.h5's stored bytes
        said = "CRC-32"
    damaged = path.read_bytes()
    with pytest.raises(WeightsFileError) as error:
        rundir.open_model(path, model_name="lenet5")
    assert repr(str(path)) in str(error.value) and said in str(error.value)
    assert "replace it with a good copy" in str(error.value)
    for name, argv in _commands(path, images, tmp_path).items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith(f"zoo {name}: "), err
        assert str(path) in err and said in err, err
    assert path.read_bytes() == damaged  # the user's file is left as it was


def test_a_damaged_model_in_a_run_dir_fails_its_recorded_sha256(run_dir, images, tmp_path,
                                                                 capsys):
    from zoo.cli import main
    from zoo.weights import WeightsFileError
    from zoo.weights.readers import file_sha256

    run = tmp_path / "run"
    run.mkdir()
    for name in (rundir.RUN_FILE, rundir.MODEL_FILE, rundir.MODEL_FILE + ".sha256"):
        (run / name).write_bytes((run_dir / name).read_bytes())
    model = run / rundir.MODEL_FILE
    assert (run / "best.keras.sha256").read_text().split()[0] == file_sha256(model)
    rundir.open_model(run)  # whole: it opens
    _flip(model, model.stat().st_size // 2)
    for source in (run, model):
        with pytest.raises(WeightsFileError, match="sha256") as error:
            rundir.open_model(source)
        assert repr(str(model)) in str(error.value) and "when zoo wrote it" in str(error.value)
    for name, argv in _commands(run, images, tmp_path).items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(model) in err and "sha256" in err, err


def test_a_legacy_h5_model_zoo_did_not_write_is_probed_before_keras_opens_it(tmp_path,
                                                                            monkeypatch):
    # The real hang (byte 2056 of LeNet's .weights.h5) is tested in
    # tests/weights/test_weight_file_faults.py; here a child that never returns stands in
    # for it, to show that opening a whole-model .h5 goes through the same probe.
    from zoo.weights import WeightsFileError, readers

    path = tmp_path / "lenet5.h5"
    zoo.build("lenet5", num_classes=3, input_shape=(32, 32, 1)).save(path)
    rundir.load_model_file(path)  # whole, it opens
    monkeypatch.setattr(readers, "_PROBE", "import time; time.sleep(120)")
    monkeypatch.setattr(readers, "PROBE_TIMEOUT", 2.0)
    with pytest.raises(WeightsFileError, match="did not finish reading its metadata in 2 s"):
        rundir.load_model_file(path)
    path.with_name(path.name + ".sha256").write_text(
        f"{readers.file_sha256(path)}  {path.name}\n")
    rundir.load_model_file(path)  # a file with a matching record needs no probe
