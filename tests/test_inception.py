"""Inception family: parameter counts, MACs, and layer-for-layer parity with the twins."""

from __future__ import annotations

import contextlib
from collections import defaultdict

import keras
import numpy as np
import pytest
from model_inputs import run
from torch_reference import import_torchvision

import zoo
from zoo.architectures.inception import ScaledResidual, without_aux
from zoo.models import get_spec

NAMES = ["googlenet", "inception_v3", "inception_v3_tv", "inception_resnet_v2"]


def pixels(size, batch=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3))


@contextlib.contextmanager
def float64():
    """Builds and runs Keras models in float64.

    Randomly initialised batch-norm networks amplify round-off with depth (about 1,000x
    here, from a one-ulp change of the input; Yang et al. 2019 explain why), so float32
    parity of random twins would measure that noise floor rather than the layout. In
    float64 a wrong padding, order or mapping still shows as an O(1) difference.
    """
    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        yield
    finally:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)


def assert_close_logits(ours, theirs, rel=1e-4):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape
    scale = np.abs(theirs).max()
    # The logits must depend on the image, else agreement would prove little.
    assert np.abs(theirs[0] - theirs[1]).max() > 1e-2 * scale
    diff = np.abs(ours - theirs).max()
    print(f"max |diff| {diff:.3g} = {diff / scale:.3g} x logit scale {scale:.3g}")
    assert diff <= rel * scale


# --- (a) parameter counts and (b) MACs (tests/test_models.py checks them for every model) --


def test_twin_params_are_torchvisions_own_counts():
    _, torchvision = import_torchvision()
    for name, twin in [("googlenet", torchvision.models.googlenet),
                       ("inception_v3_tv", torchvision.models.inception_v3)]:
        reference = twin(aux_logits=False, init_weights=False)
        count = sum(p.numel() for p in reference.parameters())
        assert count == get_spec(name).twin_params["torchvision"]


# --- (c) Keras twins, copied by the order of layers with weights --------------------------


def calibrate_batch_norm(model, x, rng):
    """Gives batch norm the statistics of ``x`` and a random shift.

    Fresh batch norm is nearly the identity and lets the signal fade with depth; real
    statistics keep the logits dependent on the image, so that a mis-ordered copy shows.
    Each variance is floored at its layer's mean: nearly constant channels would otherwise
    be divided by about sqrt(epsilon) and blow up round-off.
    """
    norms = [layer for layer in model.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0  # one training-mode pass stores the batch statistics
        layer.beta.assign(rng.uniform(-0.2, 0.2, layer.beta.shape))
    model(x, training=True)
    for layer in norms:
        variance = keras.ops.convert_to_numpy(layer.moving_variance)
        layer.moving_variance.assign(np.maximum(variance, variance.mean()))


@pytest.mark.parametrize(("name", "application", "module"), [
    ("inception_v3", "InceptionV3", "inception_v3"),
    ("inception_resnet_v2", "InceptionResNetV2", "inception_resnet_v2"),
])
def test_keras_twin_layer_for_layer(name, application, module):
    keras.utils.set_random_seed(0)
    size = 75
    preprocess = getattr(keras.applications, module).preprocess_input
    with float64():
        theirs = getattr(keras.applications, application)(
            weights=None, input_shape=(size, size, 3), classifier_activation=None)
        calibrate_batch_norm(theirs, preprocess(pixels(size, batch=16, seed=1)),
                             np.random.default_rng(1))
        ours = zoo.build(name, input_shape=(size, size, 3), classifier_activation=None)

    # What Keras 3's legacy h5 loader does: pair the layers that have weights by position.
    our_layers = [layer for layer in ours.layers if layer.weights]
    their_layers = [layer for layer in theirs.layers if layer.weights]
    assert len(our_layers) == len(their_layers)
    for mine, other in zip(our_layers, their_layers):
        assert type(mine) is type(other), (mine.name, other.name)
        mine.set_weights(other.get_weights())

    x = pixels(size)
    expected = run(theirs, preprocess(x.copy()))
    assert_close_logits(run(ours, x), expected)
    # Past the normalisation (whose arithmetic differs in the last bit) the two graphs are
    # the same computation; only our float32 output layer rounds.
    body = keras.Model(ours.get_layer("normalize").output, ours.output)
    diff = np.abs(run(body, preprocess(x.copy())) - expected).max()
    assert diff <= 1e-6 * np.abs(expected).max()


# --- (d) torchvision twins, loaded through the documented state-dict naming rule -----------


def load_torchvision_state(model, state_dict):
    """Copies a torchvision state dict by the rule in zoo.architectures.inception's docstring."""
    tensors = defaultdict(dict)
    for key, value in state_dict.items():
        path, tensor = key.rsplit(".", 1)
        if tensor != "num_batches_tracked":
            layer = "predictions" if path == "fc" else path.replace(".", "_")
            tensors[layer][tensor] = value.detach().numpy()
    for layer_name, t in tensors.items():
        layer = model.get_layer(layer_name)
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([t["weight"], t["bias"], t["running_mean"], t["running_var"]])
        elif isinstance(layer, keras.layers.Conv2D):
            layer.set_weights([t["weight"].transpose(2, 3, 1, 0)])
        else:
            layer.set_weights([t["weight"].T, t["bias"]])
    weighted = {layer.name for layer in model.layers if layer.weights}
    assert weighted == set(tensors), weighted ^ set(tensors)


def torchvision_twin(torch, builder, size, *, aux_logits=False, calibration_batch=16):
    """A randomly initialised twin whose batch norm holds real statistics.

    Fresh batch norm lets the signal fade with depth. The statistics come from a batch
    other than the test's, from the same distribution, floored as in
    :func:`calibrate_batch_norm`.
    """
    torch.manual_seed(0)
    net = builder(aux_logits=aux_logits, init_weights=False).double()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one pass gives the batch statistics
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.2, 0.2)
    net.train()
    with torch.no_grad():
        net(torch_input(torch, pixels(size, batch=calibration_batch, seed=1)))
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                variance = module.running_var
                variance.clamp_(min=variance.mean().item())  # as calibrate_batch_norm
    return net.eval()


def torch_input(torch, x):
    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    return torch.from_numpy(((x / 255.0 - mean) / std).transpose(0, 3, 1, 2).copy())


@pytest.mark.parametrize(("name", "twin", "size"), [
    ("googlenet", "googlenet", 112),
    ("inception_v3_tv", "inception_v3", 75),
])
def test_torchvision_twin_layer_for_layer(name, twin, size):
    torch, torchvision = import_torchvision()
    x = pixels(size, batch=4)
    net = torchvision_twin(torch, getattr(torchvision.models, twin), size)
    with float64():
        ours = zoo.build(name, input_shape=(size, size, 3), classifier_activation=None)
    load_torchvision_state(ours, net.state_dict())
    with torch.no_grad():
        expected = net(torch_input(torch, x)).numpy()
    assert_close_logits(run(ours, x), expected)


# --- (e) auxiliary heads ----------------------------------------------------------------


def aux_reference(torch, net, x, taps):
    """torchvision's eval forward plus its auxiliary heads run on the tapped block outputs."""
    seen = {}
    hooks = [getattr(net, tap).register_forward_hook(
        lambda _m, _i, out, tap=tap: seen.__setitem__(tap, out)) for tap in taps]
    with torch.no_grad():
        main = net(x)
        aux = [head(seen[tap]) for tap, head in taps.items()]
    for hook in hooks:
        hook.remove()
    return [main.numpy()] + [a.numpy() for a in aux]


def test_googlenet_aux_heads_match_torchvision():
    torch, torchvision = import_torchvision()
    size = 112  # inception4a is 7x7 here: the 4x4 adaptive pool has windows of 2 and 3
    x = pixels(size, batch=4)
    net = torchvision_twin(torch, torchvision.models.googlenet, size, aux_logits=True)
    with float64():
        ours = zoo.build("googlenet", input_shape=(size, size, 3), classifier_activation=None,
                         aux_logits=True)
    assert ours.output_names == ["output", "output_aux1", "output_aux2"]
    load_torchvision_state(ours, net.state_dict())
    expected = aux_reference(torch, net, torch_input(torch, x),
                             {"inception4a": net.aux1, "inception4d": net.aux2})
    for mine, theirs in zip(run(ours, x), expected):
        assert_close_logits(mine, theirs)

    main_only = without_aux(ours)
    assert len(main_only.outputs) == 1
    assert_close_logits(run(main_only, x), expected[0])
    assert zoo.count_params(main_only) == get_spec("googlenet").twin_params["torchvision"]


def test_inception_v3_tv_aux_head_at_299():
    torch, torchvision = import_torchvision()
    size = 299  # the smallest input the 5x5 / stride 3 pooling of AuxLogits accepts
    with float64():
        ours = zoo.build("inception_v3_tv", num_classes=10, classifier_activation=None,
                         aux_logits=True)
    assert [tuple(o.shape) for o in ours.outputs] == [(None, 10), (None, 10)]
    assert ours.output_names == ["output", "output_aux1"]
    x = pixels(size, batch=2)
    net = torchvision_twin(
        torch, lambda **kw: torchvision.models.inception_v3(num_classes=10, **kw), size,
        aux_logits=True, calibration_batch=8)
    load_torchvision_state(ours, net.state_dict())
    expected = aux_reference(torch, net, torch_input(torch, x), {"Mixed_6e": net.AuxLogits})
    for mine, theirs in zip(run(ours, x), expected):
        assert_close_logits(mine, theirs)


def test_aux_heads_are_off_by_default_and_checked():
    model = zoo.build("googlenet", input_shape=(64, 64, 3), num_classes=5, aux_logits=True)
    assert [tuple(o.shape) for o in model.outputs] == [(None, 5)] * 3
    assert len(zoo.build("googlenet", input_shape=(64, 64, 3)).outputs) == 1
    with pytest.raises(ValueError, match="at least 299x299"):
        zoo.build("inception_v3_tv", input_shape=(160, 160, 3), aux_logits=True)
    with pytest.raises(TypeError, match="unknown option"):
        zoo.build("inception_v3", aux_logits=True)


# --- names, features, serialisation ------------------------------------------------------


def test_layer_names_and_feature_strides():
    googlenet = zoo.build("googlenet", features=True, input_shape=(224, 224, 3))
    assert [tuple(t.shape[1:3]) for t in googlenet.outputs] == [(56, 56), (28, 28), (14, 14),
                                                              (7, 7)]
    names = {layer.name for layer in googlenet.layers}
    assert {"inception3a_branch2_1_conv", "inception3a_branch4_0", "inception5b"} <= names

    keras_v3 = zoo.build("inception_v3", features=True, input_shape=(299, 299, 3))
    assert [t.shape[1] for t in keras_v3.outputs] == [71, 35, 17, 8]
    names = {layer.name for layer in keras_v3.layers}
    assert {"mixed0_branch5x5_1_conv", "mixed9_branch3x3dbl", "mixed10"} <= names


def test_scaled_residual_serialises_without_custom_objects():
    layer = ScaledResidual(0.17, name="block35_1")
    config = keras.saving.serialize_keras_object(layer)
    restored = keras.saving.deserialize_keras_object(config)
    assert isinstance(restored, ScaledResidual) and restored.scale == pytest.approx(0.17)
    out = restored([np.ones((1, 2, 2, 3), "float32"), np.full((1, 2, 2, 3), 2.0, "float32")])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), 1.34, rtol=1e-6)
