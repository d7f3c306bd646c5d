"""timm checkpoints in the Hub layout load into zoo's twins: logit parity on real photos
with timm's own eval transform, the eval geometry and normalisation from pretrained_cfg,
the head from num_classes, and clear errors for what does not fit.

The checkpoints are written by timm itself (``save_for_hf``) from random-init models with
non-trivial batch-norm statistics. Run with ``-s`` to see the parity figures.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from model_inputs import assert_close, run
from torch_reference import import_torchvision, randomise_batch_norm

import zoo
from zoo.models import get_spec
from zoo.weights import WeightsFileError, WeightsMismatchError, resolve
from zoo.weights import timm as timm_checkpoints

RELATIVE_TOLERANCE = 1e-4

# (timm architecture, zoo twin, input size): the smallest input each accepts, VGG's
# classifier pooled up to its 7x7 grid on both sides.
FAMILIES = [
    ("resnet18", "resnet18", 64),
    ("resnet50", "resnet50", 64),
    ("vgg11", "vgg11", 64),
    ("vgg16_bn", "vgg16_bn", 64),
    ("inception_v3", "inception_v3_tv", 75),
    ("inception_resnet_v2", "inception_resnet_v2", 75),
]


@pytest.fixture(scope="module")
def timm():
    import_torchvision()  # timm imports torchvision; this makes its pure-Python part load
    return pytest.importorskip("timm")


def timm_model(timm, architecture: str, *, num_classes: int = 1000, seed: int = 0,
               bn_scale: bool = True):
    """A random-init timm model in eval mode with batch-norm statistics away from 0 and 1.

    ``bn_scale=False`` keeps every batch-norm scale at one, as in timm's TF-ported
    Inception-ResNet-v2 weights (TF-slim trains it without a scale).
    """
    import torch

    torch.manual_seed(seed)
    model = timm.create_model(architecture, pretrained=False, num_classes=num_classes).eval()
    randomise_batch_norm(model, seed + 1, scale=bn_scale)
    return model


def save_checkpoint(timm_net, folder, **kwargs) -> str:
    """timm's own hub layout: config.json and model.safetensors (or pytorch_model.bin)."""
    from timm.models import save_for_hf

    save_for_hf(timm_net, str(folder), safe_serialization=kwargs.pop("safe", True), **kwargs)
    return str(folder)


def photos(timm, timm_net, size: int):
    """Real photos through timm's eval transform at ``size``.

    Returns:
        ``(pixels, normalised)``: the cropped images as 0..255 NHWC for zoo (whose model
        normalises), and timm's normalised NCHW tensor for timm.
    """
    import torch
    from PIL import Image
    from skimage import data as samples

    config = timm.data.resolve_data_config({"input_size": (3, size, size)}, model=timm_net)
    transform = timm.data.create_transform(**config)
    *geometry, normalise = transform.transforms
    images = [Image.fromarray(f()) for f in (samples.astronaut, samples.chelsea, samples.coffee)]
    tensors = [_apply(geometry, image) for image in images]
    unit = torch.stack(tensors)
    pixels = (unit.numpy().transpose(0, 2, 3, 1) * 255).astype("float32")
    return pixels, torch.stack([normalise(t) for t in tensors])


def _apply(transforms, image):
    for transform in transforms:
        image = transform(image)
    return image


def timm_logits(timm_net, normalised) -> np.ndarray:
    import torch

    with torch.no_grad():
        return timm_net(normalised).numpy()


def compare(what: str, out: np.ndarray, ref: np.ndarray) -> None:
    assert_close(f"timm parity {what}", out, ref, RELATIVE_TOLERANCE)


@pytest.mark.parametrize(("architecture", "name", "size"), FAMILIES,
                         ids=[a for a, _, _ in FAMILIES])
def test_timm_checkpoint_gives_timm_logits(timm, architecture, name, size, tmp_path):
    net = timm_model(timm, architecture, bn_scale=architecture != "inception_resnet_v2")
    folder = save_checkpoint(net, tmp_path / architecture)
    pixels, normalised = photos(timm, net, size)
    expected = timm_logits(net, normalised)
    model = zoo.build(name, weights=folder, input_shape=(size, size, 3),
                      classifier_activation=None)
    compare(f"{architecture} -> {name}", run(model, pixels), expected)
    # The same photos score the same classes: the top-1 agrees image by image.
    assert (run(model, pixels).argmax(-1) == expected.argmax(-1)).all()


def test_pretrained_cfg_gives_geometry_and_normalisation(timm, tmp_path):
    net = timm_model(timm, "resnet18")  # resnet18.a1_in1k: 224 train, 288 test, bicubic
    folder = save_checkpoint(net, tmp_path / "r18")
    cfg = net.pretrained_cfg
    assert cfg["test_input_size"] == (3, 288, 288) and cfg["interpolation"] == "bicubic"
    geometry = zoo.geometry("resnet18", folder)
    assert geometry.image_size == (288, 288)
    assert geometry.crop_fraction == cfg["test_crop_pct"]
    assert geometry.interpolation == "bicubic"
    entry = resolve(get_spec("resnet18"), folder)
    assert entry.source == "timm" and entry.num_classes == 1000
    assert entry.resize_size == int(288 / cfg["test_crop_pct"])
    normalize = zoo.build("resnet18", weights=folder, input_shape=(64, 64, 3)) \
        .get_layer("normalize").get_config()
    np.testing.assert_allclose(normalize["mean"], np.array(cfg["mean"]) * 255, rtol=1e-6)
    np.testing.assert_allclose(normalize["std"], np.array(cfg["std"]) * 255, rtol=1e-6)


def test_inception_checkpoint_normalisation_is_its_own(timm, tmp_path):
    # timm's inception_v3 takes (x - 0.5) / 0.5, not ImageNet's mean and std.
    net = timm_model(timm, "inception_v3")
    folder = save_checkpoint(net, tmp_path / "v3")
    normalize = zoo.build("inception_v3_tv", weights=folder, input_shape=(75, 75, 3)) \
        .get_layer("normalize").get_config()
    np.testing.assert_allclose(normalize["mean"], [127.5] * 3)
    np.testing.assert_allclose(normalize["std"], [127.5] * 3)
    assert zoo.geometry("inception_v3_tv", folder).image_size == (299, 299)


def test_head_follows_num_classes_and_a_new_count_resets_it(timm, tmp_path, caplog):
    net = timm_model(timm, "resnet18", num_classes=37)
    folder = save_checkpoint(net, tmp_path / "pets",
                             model_config={"label_names": [f"breed{i}" for i in range(37)]})
    pixels, normalised = photos(timm, net, 64)
    model = zoo.build("resnet18", weights=folder, input_shape=(64, 64, 3),
                      classifier_activation=None)
    assert model.output_shape == (None, 37)
    compare("resnet18, 37 classes", run(model, pixels), timm_logits(net, normalised))
    entry = resolve(get_spec("resnet18"), folder)
    assert entry.class_names() == [f"breed{i}" for i in range(37)]

    with caplog.at_level(logging.WARNING, logger="zoo.weights"):
        other = zoo.build("resnet18", weights=folder, num_classes=5, input_shape=(64, 64, 3))
    assert other.output_shape == (None, 5)
    assert "Classifier not loaded" in caplog.text and "37 classes" in caplog.text
    # Everything but the head did load.
    np.testing.assert_array_equal(other.get_layer("conv1_conv").get_weights()[0],
                                  model.get_layer("conv1_conv").get_weights()[0])


def test_pytorch_model_bin_loads_through_the_pickle_safe_reader(timm, tmp_path):
    net = timm_model(timm, "resnet18")
    folder = save_checkpoint(net, tmp_path / "bin", safe=False)
    assert timm_checkpoints.weight_file(folder).endswith("pytorch_model.bin")
    pixels, normalised = photos(timm, net, 64)
    model = zoo.build("resnet18", weights=folder, input_shape=(64, 64, 3),
                      classifier_activation=None)
    compare("resnet18 from .bin", run(model, pixels), timm_logits(net, normalised))


def _config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.fixture(scope="module")
def resnet18_folder(timm, tmp_path_factory):
    return tmp_path_factory.mktemp("timm") / "resnet18", timm_model(timm, "resnet18")


def _copy(resnet18_folder, tmp_path):
    folder, net = resnet18_folder
    if not folder.exists():
        save_checkpoint(net, folder)
    target = tmp_path / "ck"
    shutil.copytree(folder, target)
    return target


@pytest.mark.parametrize("architecture", ["resnet50d", "seresnet50"])
def test_an_architecture_zoo_lacks_is_refused_with_the_supported_list(
        resnet18_folder, tmp_path, architecture):
    folder = _copy(resnet18_folder, tmp_path)
    _config(folder, architecture=architecture)
    with pytest.raises(WeightsMismatchError) as error:
        zoo.build("resnet50", weights=str(folder))
    message = str(error.value)
    assert architecture in message and "no twin in zoo" in message
    for supported in ("resnet18", "resnet152", "vgg16_bn", "inception_v3",
                      "inception_resnet_v2"):
        assert supported in message


def test_another_model_than_the_checkpoint_s_names_both(resnet18_folder, tmp_path):
    folder = _copy(resnet18_folder, tmp_path)
    with pytest.raises(WeightsMismatchError, match=r"timm's 'resnet18'.*'resnet50'"):
        zoo.build("resnet50", weights=str(folder))
    _config(folder, architecture="inception_v3")
    with pytest.raises(WeightsMismatchError, match=r"zoo's 'inception_v3_tv'.*'inception_v3'"):
        zoo.build("inception_v3", weights=str(folder))


def test_damaged_and_incomplete_folders_name_the_file(resnet18_folder, tmp_path):
    folder = _copy(resnet18_folder, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(WeightsFileError, match=r"model\.safetensors.*damaged"):
        zoo.build("resnet18", weights=str(folder), input_shape=(64, 64, 3))
    weights.unlink()
    with pytest.raises(WeightsFileError, match=r"neither model\.safetensors nor "):
        zoo.build("resnet18", weights=str(folder))
    (folder / "config.json").write_text("{not json")
    with pytest.raises(WeightsFileError, match=r"config\.json.*damaged"):
        zoo.build("resnet18", weights=str(folder))
    (folder / "config.json").unlink()
    with pytest.raises(WeightsFileError, match=r"no config\.json"):
        zoo.build("resnet18", weights=str(folder))


def test_a_state_dict_of_another_architecture_is_refused(resnet18_folder, timm, tmp_path):
    # config.json says resnet18, the weights are resnet50's: the first misfit is named.
    folder = _copy(resnet18_folder, tmp_path)
    save_checkpoint(timm_model(timm, "resnet50"), tmp_path / "r50")
    shutil.copy(tmp_path / "r50" / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(WeightsMismatchError, match="does not fit 'resnet18'"):
        zoo.build("resnet18", weights=str(folder), input_shape=(64, 64, 3))


# --- the catalogue against timm's own configs and published results -----------------------


def _timm_entries():
    from zoo.models import catalog

    return [e for e in catalog() if e.source == "timm"]


def test_catalogue_has_every_hub_set_timm_names_for_the_twins(timm):
    from zoo.weights.timm import supported_architectures

    listed = {e.hub_id for e in _timm_entries()}
    named = set()
    for architecture in supported_architectures():
        for full in timm.list_pretrained(f"{architecture}.*"):
            hub_id = timm.models.get_pretrained_cfg(full).hf_hub_id
            if hub_id:
                named.add(hub_id)
    assert listed == named
    assert len(listed) >= 50  # 5 ResNets x 7+, 8 VGGs, 4 Inception v3, 2 Inception-ResNet


def test_catalogue_entries_are_timm_s_configs_unpinned(timm):
    for entry in _timm_entries():
        architecture, tag = entry.hub_id.split("/")[1].split(".", 1)
        assert get_spec(entry.model).timm_rule.architecture == architecture
        assert entry.tag == f"timm_{tag}" and entry.url == f"hf://{entry.hub_id}"
        cfg = timm.models.get_pretrained_cfg(f"{architecture}.{tag}").to_dict()
        fields = timm_checkpoints.weights_fields(cfg)
        for name, value in fields.items():
            assert getattr(entry, name) == value, (entry.tag, name)
        assert entry.num_classes == (cfg["num_classes"] or None)
        assert entry.hash is None and "unpinned" in entry.notes
        assert get_spec(entry.model).weights["imagenet"].source != "timm"


def test_published_top1_is_timm_s_measured_at_the_entry_s_eval_geometry():
    # timm's results file says at which size, crop and interpolation each top-1 was
    # measured: the catalogue's eval geometry must be that one.
    import csv
    from pathlib import Path

    path = Path(__file__).parents[2] / "docs" / "timm_results_imagenet.csv"
    rows = {r["model"]: r for r in csv.DictReader(path.open())}
    with_top1 = [e for e in _timm_entries() if e.top1 is not None]
    assert len(with_top1) == len(rows)
    for entry in with_top1:
        row = rows[entry.hub_id.split("/")[1]]
        assert (entry.top1, entry.top5) == (float(row["top1"]), float(row["top5"]))
        assert entry.input_size[0] == int(row["img_size"])
        assert entry.crop_fraction == pytest.approx(float(row["crop_pct"]), abs=5e-4)
        assert entry.interpolation == row["interpolation"]


# --- through the Hub (the stand-in on 127.0.0.1) -------------------------------------------


def test_hf_address_and_catalogue_tag_load_through_the_hub(timm, tmp_path, monkeypatch):
    import hashlib
    from pathlib import Path

    from hub_server import HubStandIn, point_huggingface_hub_at

    net = timm_model(timm, "resnet18")
    folder = Path(save_checkpoint(net, tmp_path / "ck"))
    files = {n: (folder / n).read_bytes() for n in ("config.json", "model.safetensors")}
    pixels, normalised = photos(timm, net, 64)
    expected = timm_logits(net, normalised)
    spec = get_spec("resnet18")
    with HubStandIn() as hub:
        point_huggingface_hub_at(hub, tmp_path / "hf", monkeypatch)
        commit = hub.add_repo("timm/resnet18.a1_in1k", files)
        model = zoo.build("resnet18", weights="hf://timm/resnet18.a1_in1k",
                          input_shape=(64, 64, 3), classifier_activation=None)
        compare("resnet18 via hf://", run(model, pixels), expected)
        entry = resolve(spec, "hf://timm/resnet18.a1_in1k")
        # The catalogue's facts, the files' commit and sha256.
        assert entry.tag == "timm_a1_in1k" and entry.top1 == spec.weights["timm_a1_in1k"].top1
        assert entry.revision == commit and entry.url == f"hf://timm/resnet18.a1_in1k@{commit}"
        assert entry.hash == hashlib.sha256(files["model.safetensors"]).hexdigest()
        by_tag = zoo.build("resnet18", weights="timm_a1_in1k", input_shape=(64, 64, 3),
                           classifier_activation=None)
        compare("resnet18 via timm_a1_in1k", run(by_tag, pixels), expected)
        # zoo pull fetches a Hub set into the Hub's cache, as for the publishers' files.
        from zoo import cli

        assert cli.main(["pull", "resnet18", "timm_a1_in1k"]) == 0
        assert (Path(entry.path) / "model.safetensors").is_file()
        # A repository outside the catalogue, pinned to a revision, loads from its config.
        pets = hub.add_repo("someone/pets", files, message="pets", tag="v1")
        hub.add_repo("someone/pets", {"README.md": b"later"}, message="later")
        entry = resolve(spec, "hf://someone/pets@v1")
        assert entry.tag == "file" and entry.revision == pets and entry.top1 is None
    assert any("/resolve/" in path for _, path in hub.requests)


def test_zoo_list_and_info_show_the_hub_sets(capsys):
    from zoo import cli

    assert cli.main(["list", "--pretrained", "resnet50"]) == 0
    hub_sets = [t for t in get_spec("resnet50").weights if t.startswith("timm_")]
    assert f"{len(hub_sets)} timm_* (zoo info)" in capsys.readouterr().out
    assert cli.main(["info", "resnet50"]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.startswith("weights:timm_a1_in1k "))
    assert "hf://timm/resnet50.a1_in1k, unpinned" in line and "eval 288 of 288 (bicubic)" in line
    assert "unpinned" not in next(row for row in out.splitlines()
                                  if row.startswith("weights:torchvision_v2"))


def test_a_run_from_a_hub_checkpoint_records_its_commit_and_sha256(timm, tmp_path, monkeypatch):
    # run.json and the model card say exactly which file the run started from.
    import hashlib
    from pathlib import Path

    from hub_server import HubStandIn, point_huggingface_hub_at
    from PIL import Image
    from sklearn.datasets import load_digits

    import pipelines

    digits = load_digits()
    root = tmp_path / "digits"
    for label in (0, 1):
        (root / str(label)).mkdir(parents=True)
        for i in np.flatnonzero(digits.target == label)[:12]:
            pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
            Image.fromarray(pixels).convert("RGB").save(root / str(label) / f"{i}.png")
    folder = Path(save_checkpoint(timm_model(timm, "resnet18"), tmp_path / "ck"))
    files = {n: (folder / n).read_bytes() for n in ("config.json", "model.safetensors")}
    with HubStandIn() as hub:
        point_huggingface_hub_at(hub, tmp_path / "hf", monkeypatch)
        commit = hub.add_repo("someone/r18", files)
        address = f"hf://someone/r18@{commit}"
        data = pipelines.from_folder(root, model="resnet18", weights=address,
                                     image_size=(64, 64), batch_size=8, augment="none",
                                     out_dir=tmp_path / "split")
        result = zoo.finetune("resnet18", data, weights=address, epochs=1, verbose=0,
                              out_dir=tmp_path / "run")
    record = json.loads((result.run_dir / "run.json").read_text())["weights_file"]
    digest = hashlib.sha256(files["model.safetensors"]).hexdigest()
    assert record["revision"] == commit and record["hash"] == digest
    assert record["hash_algorithm"] == "sha256" and record["url"].startswith("hf://someone/r18@")
    card = (result.run_dir / "README.md").read_text()
    assert f"at revision `{commit}`, sha256 `{digest}`" in card
