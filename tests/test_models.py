"""Registry-wide tests: every registered model, built small, in every mode."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from model_inputs import pixels, run, small_shape

import zoo
from zoo.models import get_spec

ALL = zoo.list_models()
TWIN_TABLE = [
    "lenet5", "alexnet",
    "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
    "googlenet", "inception_v3", "inception_v3_tv", "inception_resnet_v2",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnet50_v1", "resnet101_v1", "resnet152_v1",
    "resnet50_v2", "resnet101_v2", "resnet152_v2",
]


def test_every_name_in_the_twin_table_is_registered():
    assert sorted(TWIN_TABLE) == sorted(ALL)


# Models that differ from another registered one only in how often blocks repeat (depth)
# share every layer type and code path with it; the .keras round trip and max pooling,
# the slowest checks for deep models, run on one model per code path.
REPRESENTATIVES = {"lenet5", "alexnet", "vgg11", "vgg11_bn", "googlenet", "inception_v3",
                   "inception_v3_tv", "inception_resnet_v2", "resnet18", "resnet50",
                   "resnet50_v1", "resnet50_v2"}


def test_representatives_cover_every_family_and_builder():
    builders = {(get_spec(n).family, get_spec(n).builder, tuple(sorted(
        (k, v) for k, v in get_spec(n).config.items() if k not in ("layout", "blocks",
                                                                    "layers"))))
                for n in ALL}
    covered = {(get_spec(n).family, get_spec(n).builder, tuple(sorted(
        (k, v) for k, v in get_spec(n).config.items() if k not in ("layout", "blocks",
                                                                    "layers"))))
               for n in REPRESENTATIVES}
    assert builders == covered


@pytest.mark.parametrize("name", ALL)
def test_builds_classifies_and_round_trips(name, tmp_path):
    shape = small_shape(name)
    model = zoo.build(name, num_classes=7, input_shape=shape)
    x = pixels(shape)
    # predict() traces the model into a graph; once per code path (the representatives)
    # is enough to show every layer works in graph mode.
    out = model.predict(x, verbose=0) if name in REPRESENTATIVES else run(model, x)
    assert out.shape == (2, 7)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert np.isfinite(out).all()
    assert model.layers[1].name == "normalize"
    if name in REPRESENTATIVES:
        path = tmp_path / f"{name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)  # no custom_objects: zoo registers its layers
        np.testing.assert_allclose(run(loaded, x), out, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_headless_features_and_grayscale(name):
    shape = small_shape(name)
    gray = small_shape(name, channels=1)
    avg = zoo.build(name, include_top=False, pooling="avg", input_shape=gray)
    assert run(avg, pixels(gray)).ndim == 2
    feats = zoo.build(name, features=True, input_shape=shape)
    channels = feats.outputs[-1].shape[-1]
    assert avg.output.shape == (None, channels)
    # Feature maps go from shallow to deep: never larger.
    sizes = [t.shape[1] for t in feats.outputs]
    assert len(sizes) >= 2 and sizes == sorted(sizes, reverse=True)
    if name in REPRESENTATIVES:
        mx = zoo.build(name, include_top=False, pooling="max", input_shape=shape)
        fmap = zoo.build(name, include_top=False, input_shape=shape)
        assert mx.output.shape == (None, channels)
        assert fmap.output.shape[-1] == channels and len(fmap.output.shape) == 4


@pytest.mark.parametrize("name", [n for n in ALL if get_spec(n).twin_params
                                  or get_spec(n).published_gmacs])
def test_params_and_gmacs_equal_the_published_figures(name):
    # zoo.describe builds the model at its default input size, where the published figures
    # are, and counts (the documentation's catalogue shows the same measured figures).
    spec, info = get_spec(name), zoo.describe(name)
    if "torchvision" in spec.twin_params:
        assert info["params"] == spec.twin_params["torchvision"]
    if "keras" in spec.twin_params:
        assert info["keras_params"] == spec.twin_params["keras"]
    if spec.published_gmacs:
        assert info["gmacs"] == pytest.approx(spec.published_gmacs, rel=0.05)


def test_flattening_classifiers_work_at_other_sizes():
    for name in ("vgg11", "alexnet"):
        model = zoo.build(name, input_shape=(160, 160, 3), num_classes=4)
        assert model.output.shape == (None, 4)
    lenet = zoo.build("lenet5", input_shape=(48, 48, 1), num_classes=10)
    assert lenet.output.shape == (None, 10)


def test_lenet5_is_the_1998_network():
    model = zoo.build("lenet5", num_classes=10)
    assert model.input.shape == (None, 32, 32, 1)
    # C1 156 + C3 2,416 (full connection table) + C5 48,120 + F6 10,164 + output 850.
    assert model.count_params() == 61_706
    assert model.get_layer("c1").activation.__name__ == "tanh"
    assert isinstance(model.get_layer("s2"), keras.layers.AveragePooling2D)
    modern = zoo.build("lenet5", num_classes=10, modern=True)
    assert isinstance(modern.get_layer("s2"), keras.layers.MaxPooling2D)
    assert modern.get_layer("c1").activation.__name__ == "relu"


def test_alexnet_paper_variant_has_lrn_and_two_towers():
    model = zoo.build("alexnet", variant="paper", input_shape=(96, 96, 3), num_classes=10)
    assert model.get_layer("conv2").groups == 2
    assert model.get_layer("conv1").filters == 96
    assert "conv1_lrn" in [layer.name for layer in model.layers]
    assert zoo.build("alexnet", input_shape=(96, 96, 3)).get_layer("conv2").groups == 1


def test_logits_and_softmax_agree():
    shape = (32, 32, 3)
    logits_model = zoo.build("vgg11", num_classes=6, input_shape=shape,
                             classifier_activation=None)
    probs_model = zoo.build("vgg11", num_classes=6, input_shape=shape)
    probs_model.set_weights(logits_model.get_weights())
    x = pixels(shape)
    logits = logits_model.predict(x, verbose=0)
    probs = probs_model.predict(x, verbose=0)
    np.testing.assert_allclose(probs, keras.ops.convert_to_numpy(keras.ops.softmax(logits)),
                               atol=1e-6)


def test_dropout_option():
    model = zoo.build("vgg11", input_shape=(32, 32, 3), dropout=0.0)
    assert not [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    model = zoo.build("vgg11", input_shape=(32, 32, 3), dropout=0.3)
    rates = {layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)}
    assert rates == {0.3}


def test_normalisation_is_inside_the_model():
    model = zoo.build("vgg11", input_shape=(32, 32, 3), preprocessing="caffe")
    norm = model.get_layer("normalize")
    out = keras.ops.convert_to_numpy(norm(np.full((1, 2, 2, 3), [10.0, 20.0, 30.0],
                                                  dtype="float32")))
    # caffe: RGB -> BGR, minus the BGR ImageNet mean.
    np.testing.assert_allclose(out[0, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68],
                               rtol=1e-5)
    torch_norm = zoo.build("vgg11", input_shape=(32, 32, 3)).get_layer("normalize")
    out = keras.ops.convert_to_numpy(torch_norm(np.full((1, 1, 1, 3), 255.0, "float32")))
    np.testing.assert_allclose(out[0, 0, 0], (1 - np.array([0.485, 0.456, 0.406]))
                               / np.array([0.229, 0.224, 0.225]), rtol=1e-5)


@pytest.mark.parametrize(("name", "expected"), [
    ("ResNet50", ["keras.applications.ResNet50 is 'resnet50_v1'",
                  "'resnet50' is torchvision.models.resnet50"]),
    ("InceptionV3", ["keras.applications.InceptionV3 is 'inception_v3'"]),
    ("VGG16", ["lowercase", "'vgg16'"]),
    ("resnet5O", ["Closest:", "resnet50"]),
])
def test_unknown_names_are_answered_helpfully(name, expected):
    with pytest.raises(ValueError) as info:
        zoo.build(name)
    for text in expected:
        assert text in str(info.value)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"too small for 'resnet50'.*minimum is 32x32"):
        zoo.build("resnet50", input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match=r"too small for 'inception_v3'.*75x75"):
        zoo.build("inception_v3", input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="channels last"):
        zoo.build("vgg11", input_shape=(32, 32))
    with pytest.raises(TypeError, match=r"unknown option.*'aux'"):
        zoo.build("vgg11", aux=True)
    with pytest.raises(ValueError, match="pooling"):
        zoo.build("vgg11", include_top=False, pooling="mean")


def test_list_models_patterns():
    assert zoo.list_models("resnet*_v2") == ["resnet50_v2", "resnet101_v2", "resnet152_v2"]
    assert zoo.list_models("vgg1?") == ["vgg11", "vgg13", "vgg16", "vgg19"]
    assert zoo.list_models("nothing*") == []


def test_describe_reports_measured_figures():
    info = zoo.describe("alexnet")
    assert info["params"] == 61_100_840
    assert info["gmacs"] == pytest.approx(0.71, rel=0.01)
    assert info["twins"] == {"torchvision": "alexnet"}
    assert info["input_size"] == (224, 224, 3)


def _lenet5_params(num_classes: int) -> int:
    def conv(size, inputs, filters):
        return (size * size * inputs + 1) * filters

    def dense(inputs, units):
        return (inputs + 1) * units

    return (conv(5, 1, 6) + conv(5, 6, 16) + conv(5, 16, 120) + dense(120, 84)
            + dense(84, num_classes))


def test_lenet5_defaults_to_the_ten_digits():
    lenet = zoo.build("lenet5")
    assert lenet.output_shape == (None, 10)
    assert lenet.count_params() == _lenet5_params(10)
    info = zoo.describe("lenet5")
    assert info["num_classes"] == 10
    assert info["params"] == info["keras_params"] == _lenet5_params(10)
    # An explicit size still wins, in both directions.
    assert zoo.build("lenet5", num_classes=1000).output_shape == (None, 1000)
    assert zoo.build("lenet5", num_classes=3).count_params() == _lenet5_params(3)
    with pytest.raises(ValueError, match="num_classes must be at least 1; got 0"):
        zoo.build("lenet5", num_classes=0)


def test_imagenet_models_keep_1000_classes_by_default():
    assert zoo.build("resnet18", input_shape=(64, 64, 3)).output_shape[-1] == 1000
    assert zoo.build("resnet18", input_shape=(64, 64, 3), num_classes=5).output_shape == (None, 5)
    assert zoo.describe("resnet18", measure=False)["num_classes"] == 1000
    assert {n for n in ALL if get_spec(n).num_classes != 1000} == {"lenet5"}
