"""The catalog against its publishers: every URL, hash, transform and accuracy is re-read
from the installed torchvision and keras sources; the label files against theirs."""

from __future__ import annotations

import ast
import inspect
import pathlib
import re

import pytest
from twin_files import import_torchvision

import zoo
from zoo import cli, data
from zoo.models import catalog, get_spec

# The pinned publishers' files; timm's Hub sets are checked in tests/weights/test_timm.py.
CATALOG = [e for e in catalog() if e.source != "timm"]
TV_ENTRIES = [e for e in CATALOG if e.source == "torchvision"]
KERAS_ENTRIES = [e for e in CATALOG if e.source == "keras_h5"]


def test_every_entry_is_declared_on_its_model_s_spec():
    assert CATALOG and all(entry.model for entry in CATALOG)
    for entry in CATALOG:
        spec = get_spec(entry.model)
        assert spec.weights[entry.tag] is entry
        assert spec.weights["imagenet"].num_classes == 1000


def test_list_pretrained_is_exactly_the_models_with_entries():
    assert set(zoo.list_models(pretrained=True)) == {e.model for e in CATALOG}
    assert "lenet5" not in zoo.list_models(pretrained=True)


def test_imagenet_is_the_most_accurate_set_with_a_head():
    # Among pinned sets: timm's Hub sets carry no published hash and are never the default.
    for name in zoo.list_models(pretrained=True):
        weights = get_spec(name).weights
        best = max((w for w in weights.values() if w.num_classes and w.hash),
                   key=lambda w: w.top1)
        assert weights["imagenet"] is best
    assert get_spec("resnet50").weights["imagenet"].tag == "torchvision_v2"
    assert get_spec("vgg16").weights["imagenet"].tag == "torchvision_v1"


def _torchvision_weights():
    """Every ImageNet weight set torchvision has for the twins, by zoo model name."""
    _, torchvision = import_torchvision()
    found = {}
    for name in zoo.list_models():
        twin = get_spec(name).twins.get("torchvision")
        if twin:
            enum = torchvision.models.get_model_weights(twin)
            found[name] = [w for w in enum if w.name.startswith("IMAGENET1K")]
    return found


def test_torchvision_entries_are_torchvision_s():
    by_url = {e.url: e for e in TV_ENTRIES}
    total = 0
    for name, weight_sets in _torchvision_weights().items():
        for weights in weight_sets:
            total += 1
            entry = by_url.get(weights.url)
            assert entry is not None, f"{name}: torchvision's {weights} is not in the catalog"
            assert entry.model == name
            expected_tag = {"IMAGENET1K_V1": "torchvision_v1", "IMAGENET1K_V2": "torchvision_v2",
                            "IMAGENET1K_FEATURES": "torchvision_features"}[weights.name]
            assert entry.tag == expected_tag
            assert weights.url.split("/")[-1].rsplit(".", 1)[0].endswith("-" + entry.hash)
            metrics = weights.meta["_metrics"]["ImageNet-1K"]
            if entry.num_classes:
                assert entry.top1 == metrics["acc@1"] and entry.top5 == metrics["acc@5"]
                assert data.imagenet_class_names() == list(weights.meta["categories"])
            transform = weights.transforms()
            assert entry.input_size[:2] == (transform.crop_size[0],) * 2
            assert entry.resize_size == transform.resize_size[0]
            assert transform.interpolation.value == entry.interpolation
            # torchvision's own normalisation, unless transform_input re-maps it to "tf".
            if entry.preprocessing == "tf":
                assert name in ("googlenet", "inception_v3_tv")
            else:
                prep = entry.preprocessing
                mean = zoo.layers.preprocessing_config(prep)["mean"]
                std = zoo.layers.preprocessing_config(prep)["std"]
                assert mean == pytest.approx([m * 255 for m in transform.mean])
                assert std == pytest.approx([s * 255 for s in transform.std])
    assert total == len(TV_ENTRIES) == 20


def _keras_source(module: str) -> str:
    import keras

    return pathlib.Path(inspect.getfile(keras.applications)).parents[1].joinpath(
        "src", "applications", f"{module}.py").read_text()


def test_keras_entries_are_keras_applications_files():
    # Joined string literals ("abc" "def" over two lines) so that file names and URLs read
    # as Keras spells them.
    texts = {m: re.sub(r'"\s*\n\s*"', "", _keras_source(m))
             for m in ("vgg16", "vgg19", "resnet", "inception_v3", "inception_resnet_v2")}
    resnet_hashes = ast.literal_eval(re.search(r"WEIGHTS_HASHES = (\{.*?\n\})", texts["resnet"],
                                               re.S).group(1))
    for entry in KERAS_ENTRIES:
        stem = entry.file_name.split("_weights_")[0]
        directory = entry.url.rsplit("/", 2)[1]
        if stem in resnet_hashes:
            text = texts["resnet"]
            assert entry.hash == resnet_hashes[stem][0 if entry.include_top else 1]
            assert entry.file_name == stem + ("_weights_tf_dim_ordering_tf_kernels_notop.h5"
                                              if not entry.include_top else
                                              "_weights_tf_dim_ordering_tf_kernels.h5")
        else:
            text = texts[stem]
            # The hash is passed to get_file right after the file name.
            assert re.search(re.escape(entry.file_name) + r'.{0,200}?file_hash="'
                             + entry.hash + '"', text, re.S), entry
        assert f"keras-applications/{directory}/" in text
    models = {get_spec(e.model).twins["keras"] for e in KERAS_ENTRIES}
    assert models == {get_spec(n).twins["keras"] for n in zoo.list_models()
                      if "keras" in get_spec(n).twins}
    assert len(KERAS_ENTRIES) == 20


def test_every_entry_is_complete():
    for entry in CATALOG:
        assert entry.url.startswith("https://") and entry.url.endswith(entry.file_name)
        assert entry.hash_algorithm in ("md5", "sha256")
        assert len(entry.hash) == 32 if entry.hash_algorithm == "md5" else len(entry.hash) >= 8
        assert entry.licence and entry.metrics_source and entry.recipe
        zoo.layers.preprocessing_config(entry.preprocessing)
        assert entry.crop_fraction == pytest.approx(entry.input_size[0] / entry.resize_size,
                                                    abs=0.01)
        if entry.num_classes:
            assert entry.top1 and entry.top5 and entry.class_names()[0] == "tench"


def test_class_names_and_wordnet_ids_are_the_publishers():
    names, wnids = data.imagenet_class_names(), data.imagenet_wnids()
    assert len(names) == len(wnids) == 1000 == len(set(wnids))
    assert names[:2] == ["tench", "goldfish"] and wnids[:2] == ["n01440764", "n01443537"]
    assert wnids == sorted(wnids)
    import tensorflow_datasets

    labels = pathlib.Path(tensorflow_datasets.__file__).parent.joinpath(
        "datasets", "imagenet2012", "labels.txt").read_text().split()
    assert wnids == labels


def test_describe_and_the_cli_show_the_tags(capsys):
    info = zoo.describe("resnet50", measure=False)
    assert [t for t in info["weights"] if not t.startswith("timm_")] == [
        "imagenet", "torchvision_v1", "torchvision_v2"]
    v2 = info["weights"]["torchvision_v2"]
    assert v2["url"].endswith("resnet50-11ad3fa6.pth") and v2["hash"] == "11ad3fa6"
    assert v2["top1"] == 80.858 and v2["preprocessing"] == "torch"
    assert info["weights"]["imagenet"]["tag"] == "torchvision_v2"
    assert cli.main(["list", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert "lenet5" not in out and "torchvision_v2" in out
