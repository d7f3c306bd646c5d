"""The eval geometry has one source: the weights own it, the caller overrides it, and the
data, the run directory, evaluation and the exported SavedModel all use what the data used."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import pipelines
import zoo
from zoo import rundir
from zoo.models import build, get_spec
from zoo.registry import Geometry, Weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from tiny_data import photo_folder  # noqa: E402


def test_the_weights_own_their_geometry_and_the_caller_wins():
    v2 = zoo.geometry("resnet50", "imagenet")
    assert get_spec("resnet50").weights["imagenet"].tag == "torchvision_v2"
    assert v2 == Geometry((224, 224), round(224 / 232, 4), "bilinear", 3)
    assert zoo.geometry("resnet50", "torchvision_v1").crop_fraction == 0.875
    assert zoo.geometry("resnet50").crop_fraction == 0.875  # the architecture's default
    assert zoo.geometry("inception_v3_tv", "imagenet").image_size == (299, 299)
    assert zoo.geometry("lenet5") == Geometry((32, 32), 1.0, "bilinear", 1)
    explicit = zoo.geometry("resnet50", "imagenet", crop_fraction=0.6, image_size=96,
                            interpolation="bicubic")
    assert explicit == Geometry((96, 96), 0.6, "bicubic", 3)
    assert zoo.geometry() == Geometry((224, 224), 0.875, "bilinear", 3)


@pytest.mark.parametrize("bad, words", [
    ({"crop_fraction": 1.5}, "crop_fraction must be in (0, 1]; got 1.5"),
    ({"interpolation": "cubic"}, "Unknown interpolation 'cubic'"),
    ({"channels": 2}, "channels must be 1 or 3; got 2"),
    ({"image_size": (0, 4)}, "image_size is (height, width)"),
])
def test_bad_geometry_values_are_named(bad, words):
    with pytest.raises(ValueError) as error:
        zoo.geometry("resnet18", **bad)
    assert words in str(error.value)


def test_a_weights_option_the_caller_contradicts_is_an_error():
    with pytest.raises(ValueError) as error:
        build("alexnet", variant="paper", weights="imagenet")
    message = str(error.value)
    assert "variant='paper'" in message and "variant='torchvision'" in message
    assert "alexnet:torchvision_v1" in message


@pytest.fixture()
def own_weights(tmp_path, monkeypatch):
    """A resnet18 weight set with an evaluation transform of its own (as torchvision's V2
    sets have), registered under a test tag; its file is written here."""
    path = tmp_path / "resnet18-test.weights.h5"
    build("resnet18", input_shape=(64, 64, 3)).save_weights(path)
    entry = Weights(model="resnet18", tag="test_geometry", source="keras_weights",
                    path=str(path), file_name=path.name, input_size=(64, 64, 3),
                    resize_size=80, crop_fraction=0.8, interpolation="bicubic",
                    labels=None)
    monkeypatch.setitem(get_spec("resnet18").weights, "test_geometry", entry)
    return entry


def _geometry_of_export(version_dir: Path) -> dict:
    return json.loads((version_dir / "export.json").read_text())["eval_transform"]


@pytest.mark.parametrize("crop_fraction", [None, 0.6])
def test_data_run_dir_evaluate_and_export_share_the_geometry(own_weights, tmp_path,
                                                             crop_fraction):
    folder = photo_folder(tmp_path / "photos", per_class=6, size=(96, 72))
    data = pipelines.from_folder(folder, model="resnet18", weights="test_geometry",
                                 crop_fraction=crop_fraction, batch_size=8,
                                 out_dir=tmp_path / "run")
    expected = Geometry((64, 64), crop_fraction or 0.8, "bicubic", 3)
    assert data.geometry == expected

    result = zoo.finetune("resnet18", data, weights="test_geometry", out_dir=tmp_path / "run",
                          head_epochs=1, finetune_epochs=0, batch_size=8, verbose=0)
    run = rundir.read_run(result.run_dir)
    assert run.geometry == expected
    assert rundir.open_model(result.run_dir).geometry == expected

    metrics = zoo.evaluate(result.run_dir, folder, out_dir=tmp_path / "eval")
    assert metrics["num_images"] == 24

    exported = zoo.export(result.run_dir, tmp_path / "export")
    served = _geometry_of_export(Path(exported.version_dir))
    assert served["crop_fraction"] == pytest.approx(expected.crop_fraction)
    assert served["interpolation"] == "bicubic"


def test_finetune_from_a_folder_and_evaluate_by_name_take_the_weights_geometry(own_weights,
                                                                               tmp_path):
    folder = photo_folder(tmp_path / "photos", per_class=4, size=(96, 72))
    expected = Geometry((64, 64), 0.8, "bicubic", 3)
    imagenet_v2 = pipelines.from_folder(folder, model="resnet50", weights="imagenet",
                                        cache=False)
    assert imagenet_v2.geometry == zoo.geometry("resnet50", "imagenet")
    result = zoo.finetune("resnet18", str(folder), weights="test_geometry",
                          out_dir=tmp_path / "run", head_epochs=1, finetune_epochs=0,
                          batch_size=8, verbose=0)
    assert rundir.read_run(result.run_dir).geometry == expected
    assert rundir.open_model("resnet18", weights="test_geometry").geometry == expected
