"""Loading behaviour: other class counts, no head, other channel counts, auxiliary heads,
files that do not fit (and leave the model untouched), Keras 3 files, path detection."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import pytest
from twin_files import (
    keras_application,
    pixels,
    save_keras_legacy_h5,
    save_state_dict,
    torchvision_logits,
    torchvision_model,
)

import zoo
from zoo.models import get_spec
from zoo.weights import WeightsMismatchError, load_into, resolve

SHAPE = (32, 32, 3)


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    reference = torchvision_model("resnet18")
    path = save_state_dict(reference, tmp_path_factory.mktemp("tv") / "resnet18.pth", "zip")
    return reference, path


def _weights_of(model) -> dict[str, list[np.ndarray]]:
    return {layer.name: [np.array(v) for v in layer.weights]
            for layer in model.layers if layer.weights}


def test_other_num_classes_loads_all_but_the_classifier(resnet18_file, caplog):
    reference, path = resnet18_file
    caplog.set_level(logging.INFO, logger="zoo.weights")
    model = zoo.build("resnet18", weights=path, num_classes=10, input_shape=SHAPE)
    assert "Classifier not loaded" in caplog.text
    assert "predictions (file: 1000 classes, model: 10)" in caplog.text
    # Everything else did load: the pooled features are torchvision's.
    headless = zoo.build("resnet18", weights=path, include_top=False, pooling="avg",
                         input_shape=SHAPE)
    features = keras.Model(model.input, model.get_layer("avg_pool").output)
    x = pixels(SHAPE)
    np.testing.assert_allclose(np.asarray(features(x)), np.asarray(headless(x)), atol=1e-5)


def test_include_top_false_gives_torchvision_features(resnet18_file, caplog):
    import torch

    reference, path = resnet18_file
    caplog.set_level(logging.INFO, logger="zoo.weights")
    model = zoo.build("resnet18", weights=path, include_top=False, pooling="avg",
                      input_shape=SHAPE)
    assert "not used: fc" in caplog.text
    fc, reference.fc = reference.fc, torch.nn.Identity()
    try:
        expected = torchvision_logits(reference, pixels(SHAPE))
    finally:
        reference.fc = fc
    out = np.asarray(model(pixels(SHAPE)))
    np.testing.assert_allclose(out, expected, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_first_convolution_is_adapted_to_other_channel_counts(resnet18_file, channels, caplog):
    reference, path = resnet18_file
    caplog.set_level(logging.INFO, logger="zoo.weights")
    model = zoo.build("resnet18", weights=path, input_shape=(32, 32, channels))
    assert "First convolution adapted: conv1_conv: 3 -> " in caplog.text
    rgb = reference.conv1.weight.detach().numpy().transpose(2, 3, 1, 0)
    kernel = np.asarray(model.get_layer("conv1_conv").kernel)
    if channels == 1:
        expected = rgb.sum(axis=2, keepdims=True)
    else:
        expected = np.concatenate([rgb, rgb], axis=2)[:, :, :channels] * 3.0 / channels
    np.testing.assert_allclose(kernel, expected, rtol=1e-6, atol=1e-7)
    # The rest loaded as usual.
    np.testing.assert_allclose(np.asarray(model.get_layer("conv5_block2_2_conv").kernel),
                               reference.layer4[1].conv2.weight.detach().numpy()
                               .transpose(2, 3, 1, 0))


def test_wrong_architecture_names_the_layer_and_both_shapes_and_loads_nothing(tmp_path):
    path = save_state_dict(torchvision_model("resnet34"), tmp_path / "resnet34.pth", "zip")
    spec = get_spec("resnet18")
    model = zoo.build("resnet18", input_shape=SHAPE)
    before = _weights_of(model)
    with pytest.raises(WeightsMismatchError) as error:
        load_into(model, spec, resolve(spec, path), include_top=True, num_classes=1000)
    # resnet34's extra blocks: the first one the model lacks.
    assert "layer1.2.conv1" in str(error.value) and "conv2_block3_1_conv" in str(error.value)
    for name, values in _weights_of(model).items():
        for got, want in zip(values, before[name]):
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_wrong_shapes_name_the_first_layer_with_both_shapes(tmp_path):
    import torch

    reference = torchvision_model("resnet18")
    reference.conv1 = torch.nn.Conv2d(3, 64, 5, stride=2, padding=2, bias=False)
    path = save_state_dict(reference, tmp_path / "resnet18_5x5.pth", "zip")
    with pytest.raises(WeightsMismatchError,
                       match=r"'conv1_conv' needs shapes \[\(7, 7, 3, 64\)\].*'conv1' has "
                             r"\[\(5, 5, 3, 64\)\] \(as stored: \[\(64, 3, 5, 5\)\]\)"):
        zoo.build("resnet18", weights=path, input_shape=SHAPE)


def test_keras_file_of_another_depth_is_refused(tmp_path):
    reference, _ = keras_application("ResNet50", include_top=True, input_shape=SHAPE)
    path = save_keras_legacy_h5(reference, tmp_path / "resnet50.h5")
    with pytest.raises(WeightsMismatchError, match="conv4_block7_1_conv"):
        zoo.build("resnet101_v1", weights=path, input_shape=SHAPE)
    with pytest.raises(WeightsMismatchError, match="does not fit 'resnet50_v2'"):
        zoo.build("resnet50_v2", weights=path, input_shape=SHAPE)


def test_torchvision_file_into_a_keras_only_model_is_refused(resnet18_file):
    with pytest.raises(WeightsMismatchError, match="has no torchvision twin"):
        zoo.build("resnet50_v1", weights=resnet18_file[1], input_shape=SHAPE)


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5", ".safetensors"])
def test_zoo_saved_files_load_back(tmp_path, suffix, caplog):
    # A fine-tuned model (10 classes, caffe preprocessing) saved by Keras, loaded by path.
    model = zoo.build("resnet18", num_classes=10, input_shape=SHAPE, preprocessing="caffe",
                      classifier_activation=None)
    path = tmp_path / f"finetuned{suffix}"
    if suffix == ".keras":
        model.save(path)
    elif suffix == ".weights.h5":
        model.save_weights(path)
    else:
        from safetensors.numpy import save_file

        save_file({f"{layer.name}/{v.name}": np.array(v) for layer in model.layers
                   for v in layer.weights}, str(path))
    caplog.set_level(logging.INFO, logger="zoo.weights")
    # A .keras file carries its preprocessing; the others need it said.
    prep = None if suffix == ".keras" else "caffe"
    loaded = zoo.build("resnet18", weights=str(path), num_classes=10, input_shape=SHAPE,
                       preprocessing=prep, classifier_activation=None)
    assert loaded.get_layer("normalize").channel_order == "bgr"
    x = pixels(SHAPE)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-5)
    assert "Classifier not loaded" not in caplog.text


def test_catalog_file_name_with_another_hash_loads_as_unknown_file(resnet18_file, tmp_path,
                                                                     caplog):
    named = tmp_path / "resnet18-f37072fd.pth"
    named.write_bytes(Path(resnet18_file[1]).read_bytes())
    spec = get_spec("resnet18")
    entry = resolve(spec, str(named))
    assert "its hash differs" in caplog.text
    assert entry.tag == "file" and entry.source == "torchvision" and entry.preprocessing == "torch"


def test_unknown_tags_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match=r"not one of its tags \(imagenet, torchvision_v1"):
        zoo.build("resnet50", weights="imagenet21k")
    with pytest.raises(ValueError, match="zoo list --pretrained"):
        zoo.build("lenet5", weights="imagenet")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        zoo.build("resnet18", weights=str(tmp_path / "nothing.pth"))


@pytest.mark.parametrize(("name", "twin", "size", "taps"), [
    ("googlenet", "googlenet", 64, {"aux1": "inception4a", "aux2": "inception4d"}),
    # Inception v3's auxiliary head needs a 17x17 Mixed_6e: the full 299x299 input.
    ("inception_v3_tv", "inception_v3", 299, {"AuxLogits": "Mixed_6e"}),
])
def test_auxiliary_heads_load_and_match_torchvision(tmp_path, name, twin, size, taps):
    import torch

    reference = torchvision_model(twin)
    path = save_state_dict(reference, tmp_path / f"{name}.pth", "zip")
    shape = (size, size, 3)
    model = zoo.build(name, weights=path, input_shape=shape, aux_logits=True,
                      classifier_activation=None)
    captured = {}
    hooks = [getattr(reference, tap).register_forward_hook(
        lambda m, i, o, tap=tap: captured.__setitem__(tap, o)) for tap in taps.values()]
    x = pixels(shape, batch=1)
    expected = [torchvision_logits(reference, x)]
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        expected += [getattr(reference, head)(captured[tap]).numpy()
                     for head, tap in taps.items()]
    outputs = [np.asarray(o) for o in model(x, training=False)]
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())


def test_a_file_without_a_usable_classifier_leaves_the_head_random(resnet18_file, caplog):
    # What the catalog does for VGG-16's torchvision_features file, whose classifier holds
    # no usable values: the head is never read, and the log says it starts random.
    from zoo.weights import read_torch
    from zoo.weights.convert import plan_torchvision

    model = zoo.build("resnet18", input_shape=SHAPE)
    plan = plan_torchvision(model, get_spec("resnet18"), read_torch(resnet18_file[1]),
                            include_top=True, file_label="features-only", drop_head=True)
    assert plan.ignored == ["fc"] and plan.random == ["predictions"]
    assert len(plan.assignments) == len([la for la in model.layers if la.weights]) - 1
