"""``zoo export --format timm``: a zoo twin written as timm's Hub layout, which timm loads
with logit parity (``local-dir:`` as from a Hub folder, and ``pretrained_cfg_overlay``).

The zoo models are random-init with batch-norm statistics away from 0 and 1, as a
fine-tuned model's are. Run with ``-s`` to see the parity figures.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import yaml
from model_inputs import run
from test_timm import compare, photos, timm_logits
from torch_reference import import_torchvision

import zoo
from zoo import cli


@pytest.fixture(scope="module")
def timm():
    import_torchvision()
    return pytest.importorskip("timm")


def zoo_model(name: str, size: int, num_classes: int, seed: int = 0, *, bn_scale=True):
    """A zoo model with random weights and non-trivial batch-norm statistics."""
    keras.utils.set_random_seed(seed)
    model = zoo.build(name, num_classes=num_classes, input_shape=(size, size, 3))
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            values = layer.get_weights()
            shifted = [v + rng.uniform(-0.5, 0.5, v.shape).astype("float32")
                       for v in values[:-1]]
            layer.set_weights(shifted + [rng.uniform(0.5, 2.0, values[-1].shape)
                                         .astype("float32")])
    return model


def logits_of(model, pixels) -> np.ndarray:
    return run(keras.Model(model.input, model.get_layer("predictions").output), pixels)


def export_timm(model, out, class_names) -> str:
    exported = zoo.export(model, out, formats=("timm",), class_names=class_names)
    assert exported.checks["timm"]["max_abs_diff"] <= 1e-5
    return exported["timm"]


# (zoo model, input size): one per family; VGG for its pre_logits convolutions,
# Inception-ResNet-v2 for its scale-less batch norms (written as weight 1).
FAMILIES = [("resnet50", 64), ("vgg11", 64), ("inception_v3_tv", 75),
            ("inception_resnet_v2", 75)]


@pytest.mark.parametrize(("name", "size"), FAMILIES, ids=[n for n, _ in FAMILIES])
def test_timm_loads_the_export_with_logit_parity(timm, name, size, tmp_path):
    labels = [f"class {i}" for i in range(7)]
    model = zoo_model(name, size, num_classes=7)
    folder = export_timm(model, tmp_path / "export", labels)
    net = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert net.num_classes == 7
    pixels, normalised = photos(timm, net, size)
    compare(f"export {name} -> timm", timm_logits(net, normalised), logits_of(model, pixels))


def test_export_config_card_and_the_overlay_form(timm, tmp_path):
    labels = ["abyssinian", "bengal", "birman"]
    model = zoo_model("resnet18", 64, num_classes=3)
    folder = export_timm(model, tmp_path / "export", labels)
    config = json.loads((tmp_path / "export" / "1" / "timm" / "config.json").read_text())
    assert config["architecture"] == "resnet18" and config["num_classes"] == 3
    assert config["label_names"] == labels
    cfg = config["pretrained_cfg"]
    normalize = model.get_layer("normalize").get_config()
    np.testing.assert_allclose(cfg["mean"], np.array(normalize["mean"]) / 255)
    np.testing.assert_allclose(cfg["std"], np.array(normalize["std"]) / 255)
    assert cfg["input_size"] == [3, 64, 64] and cfg["classifier"] == "fc"
    assert cfg["first_conv"] == "conv1"

    card = (tmp_path / "export" / "1" / "timm" / "README.md").read_text()
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "timm" and meta["pipeline_tag"] == "image-classification"
    assert {"timm", "image-classification", "resnet18"} <= set(meta["tags"])
    assert meta["metrics"] == ["accuracy"] and meta["label_names"] == labels
    assert "timm.create_model" in body and "# resnet18" in body

    # timm's file overlay: num_classes must be in the overlay too, or timm drops the head.
    net = timm.create_model("resnet18", pretrained=True, num_classes=3, pretrained_cfg_overlay={
        "file": f"{folder}/model.safetensors", "num_classes": 3}).eval()
    pixels, normalised = photos(timm, net, 64)
    compare("export resnet18 via overlay", timm_logits(net, normalised),
            logits_of(model, pixels))
    # Only the version directory is there: the staging directory was renamed into place.
    assert [p.name for p in (tmp_path / "export").iterdir()] == ["1"]


def test_zoo_export_format_timm_from_the_command_line(timm, tmp_path, capsys):
    model = zoo_model("resnet18", 64, num_classes=4)
    path = tmp_path / "resnet18.keras"
    model.save(path)
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nfox\nowl\n")
    assert cli.main(["export", str(path), "--out", str(tmp_path / "out"), "--format", "timm",
                     "--labels", str(labels)]) == 0
    out = capsys.readouterr().out
    assert "timm" in out and "out/1/timm" in out
    net = timm.create_model(f"local-dir:{tmp_path / 'out' / '1' / 'timm'}",
                            pretrained=True).eval()
    pixels, normalised = photos(timm, net, 64)
    compare("zoo export --format timm", timm_logits(net, normalised), logits_of(model, pixels))


@pytest.mark.parametrize("name", ["resnet50_v1", "inception_v3", "alexnet"])
def test_a_model_without_a_timm_twin_is_refused_and_nothing_written(name, tmp_path):
    size = 75 if name == "inception_v3" else 64
    model = zoo.build(name, num_classes=3, input_shape=(size, size, 3))
    with pytest.raises(ValueError, match=rf"{name!r} has no timm twin.*resnet50.*vgg16"):
        zoo.export(model, tmp_path / "out", formats="timm", class_names=list("abc"))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_run_s_export_carries_its_card_geometry_and_validation_accuracy(tmp_path):
    from PIL import Image
    from skimage import data

    from zoo import rundir
    from zoo.registry import Geometry

    model = zoo_model("resnet18", 64, num_classes=3)
    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(photo)
    run_dir = rundir.write_run(
        tmp_path / "run", model=model, model_name="resnet18", class_names=["a", "b", "c"],
        geometry=Geometry((64, 64), 0.9, "bicubic"), card="# pets run\n\nFine-tuned.\n",
        samples=[photo])
    rundir.write_json(run_dir / rundir.METRICS_FILE, {"accuracy": 0.75})
    exported = zoo.export(run_dir, tmp_path / "export", formats="timm")
    from pathlib import Path

    folder = Path(exported["timm"])
    _, front, body = (folder / "README.md").read_text().split("---\n", 2)
    meta = yaml.safe_load(front)
    result = meta["model-index"][0]["results"][0]
    assert result["metrics"] == [{"type": "accuracy", "value": 0.75}]
    assert meta["label_names"] == ["a", "b", "c"] and "# pets run" in body
    cfg = json.loads((folder / "config.json").read_text())["pretrained_cfg"]
    assert (cfg["crop_pct"], cfg["interpolation"]) == (0.9, "bicubic")
