"""ResNet family: sizes against the twins, and layer-for-layer parity with Keras and torchvision.

Parity tests use random weights with randomised batch-norm statistics and biases (freshly
initialised ones are the identity and zero, which would hide a wrong epsilon or a missing
bias) at a small input, so they run in seconds.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from torch_reference import import_torchvision

import zoo
from zoo.layers import PREPROCESSING
from zoo.models import get_spec

RESNETS = zoo.list_models("resnet*")
KERAS_TWINS = [n for n in RESNETS if "keras" in get_spec(n).twins]
SMALL = (64, 64, 3)


def pixels(shape=SMALL, batch=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, *shape)).astype("float32")


def randomise(model: keras.Model, seed: int = 0) -> None:
    """Gives batch norm non-trivial statistics and every bias a non-zero value."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n),
                               rng.normal(0, 0.1, n), rng.uniform(0.5, 2.0, n)])
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and layer.use_bias:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.05, bias.shape)])


def layer_table(model: keras.Model) -> list[tuple[str, str, dict]]:
    """(name, class, config without name) of every layer but input, normalisation, output."""
    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or layer.name in ("normalize", "output"):
            continue
        config = layer.get_config()
        name = config.pop("name")
        if config.get("axis") == 3:
            config["axis"] = -1  # Keras' channels-last batch-norm axis, spelled positively.
        if name.startswith("max_pooling2d"):
            name = "<unnamed max pooling>"  # Keras leaves the v2 shortcut subsampling unnamed.
        elif name.endswith("_0_pool"):
            name = "<unnamed max pooling>"
        rows.append((name, type(layer).__name__, config))
    return rows


def test_metadata():
    for name in RESNETS:
        spec = get_spec(name)
        assert spec.input_size == (224, 224, 3) and spec.min_input_size == (32, 32)
        assert spec.variant and spec.notes and spec.gmacs_source
        suffix = name.partition("_")[2]
        assert spec.preprocessing == {"": "torch", "v1": "caffe", "v2": "tf"}[suffix], name
    assert get_spec("resnet50").twins == {"torchvision": "resnet50"}
    assert get_spec("resnet101_v1").twins == {"keras": "ResNet101"}
    assert get_spec("resnet152_v2").twins == {"keras": "ResNet152V2"}


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet50_v1", "resnet50_v2"])
def test_features_are_at_strides_4_to_32(name):
    spec = get_spec(name)
    body = spec.builder(keras.Input(SMALL), **spec.config)
    assert body.strides == [4, 8, 16, 32]
    assert [t.shape[1] for t in body.features] == [SMALL[0] // s for s in body.strides]
    names = [t._keras_history.operation.name for t in body.features]
    if name.endswith("_v2"):
        assert names == ["conv2_block2_out", "conv3_block3_out", "conv4_block5_out", "post_relu"]
    else:
        assert names == [f"conv{s}_block{n}_out" for s, n in
                         zip(range(2, 6), spec.config["blocks"])]


@pytest.mark.parametrize("name", KERAS_TWINS)
def test_keras_twin_has_the_same_layers_in_the_same_order(name):
    # Keras 3 loads the legacy h5 files by the order of layers with weights, so the order
    # matters as much as the names; the configs pin strides, padding, biases and epsilons.
    twin = getattr(keras.applications, get_spec(name).twins["keras"])
    theirs = twin(weights=None, input_shape=(32, 32, 3), classifier_activation=None)
    ours = zoo.build(name, input_shape=(32, 32, 3), classifier_activation=None)
    weighted = [layer.name for layer in ours.layers if layer.weights]
    assert weighted == [layer.name for layer in theirs.layers if layer.weights]
    assert layer_table(ours) == layer_table(theirs)


@pytest.mark.parametrize(("name", "module", "twin"), [
    ("resnet50_v1", "resnet", "ResNet50"),
    ("resnet50_v2", "resnet_v2", "ResNet50V2"),
])
def test_keras_twin_gives_the_same_logits(name, module, twin):
    theirs = getattr(keras.applications, twin)(weights=None, input_shape=SMALL,
                                               classifier_activation=None)
    randomise(theirs)
    ours = zoo.build(name, input_shape=SMALL, classifier_activation=None)
    ours.set_weights(theirs.get_weights())
    x = pixels()
    preprocess = getattr(keras.applications, module).preprocess_input
    expected = theirs.predict(preprocess(x.copy()), verbose=0)
    got = ours.predict(x, verbose=0)  # raw pixels: the model normalises them itself
    scale = np.abs(expected).max()
    assert scale > 1e-2  # the comparison would be vacuous on all-zero logits
    np.testing.assert_allclose(got, expected, atol=1e-4 * scale, rtol=0)


def torchvision_state_to_zoo(state_dict) -> dict[str, list[np.ndarray]]:
    """Maps a torchvision ResNet state dict onto zoo layer names (the rule in the docstring)."""
    grouped: dict[str, dict[str, np.ndarray]] = {}
    for key, tensor in state_dict.items():
        module, param = key.rsplit(".", 1)
        if param == "num_batches_tracked":
            continue
        grouped.setdefault(_zoo_layer_name(module), {})[param] = tensor.detach().numpy()
    weights = {}
    for layer, params in grouped.items():
        if layer == "predictions":
            weights[layer] = [params["weight"].T, params["bias"]]
        elif layer.endswith("_conv"):
            weights[layer] = [params["weight"].transpose(2, 3, 1, 0)]
        else:
            weights[layer] = [params[p] for p in ("weight", "bias", "running_mean", "running_var")]
    return weights


def _zoo_layer_name(module: str) -> str:
    stem = {"conv1": "conv1_conv", "bn1": "conv1_bn", "fc": "predictions"}
    if module in stem:
        return stem[module]
    stage, block, part, *index = module.split(".")  # layer1.0.conv1 / layer1.0.downsample.0
    prefix = f"conv{int(stage.removeprefix('layer')) + 1}_block{int(block) + 1}"
    if part == "downsample":
        return f"{prefix}_0_{'conv' if index == ['0'] else 'bn'}"
    return f"{prefix}_{part[-1]}_{part[:-1]}"  # conv2 -> _2_conv, bn2 -> _2_bn


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_twin_gives_the_same_logits(name):
    torch, torchvision = import_torchvision()
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None).eval()
    for module in reference.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    ours = zoo.build(name, input_shape=SMALL, classifier_activation=None)
    weights = torchvision_state_to_zoo(reference.state_dict())
    assert set(weights) == {layer.name for layer in ours.layers if layer.weights}
    for layer_name, arrays in weights.items():
        ours.get_layer(layer_name).set_weights(arrays)

    x = pixels()
    mean = np.array(PREPROCESSING["torch"]["mean"], "float32")
    std = np.array(PREPROCESSING["torch"]["std"], "float32")
    with torch.no_grad():
        expected = reference(torch.from_numpy(((x - mean) / std).transpose(0, 3, 1, 2)))
    expected = expected.numpy()
    got = ours.predict(x, verbose=0)
    scale = np.abs(expected).max()
    assert scale > 1e-2
    np.testing.assert_allclose(got, expected, atol=1e-4 * scale, rtol=0)
