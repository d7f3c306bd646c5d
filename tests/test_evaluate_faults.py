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
