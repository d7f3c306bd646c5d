"""Logit parity with every twin: genuine torchvision state dicts and keras.applications h5
files of random-init reference models load through ``zoo.build(name, weights=path)`` and
give the reference's outputs on the same raw pixels.

The figures are printed; run with ``-s`` to see them:
    .venv/bin/python -m pytest tests/weights/test_weights_parity.py -s -q
"""

from __future__ import annotations

import gc

import keras
import numpy as np
import pytest
from model_inputs import assert_close, run
from twin_files import (
    keras_application,
    pixels,
    save_keras_legacy_h5,
    save_state_dict,
    small_shape,
    torchvision_logits,
    torchvision_model,
    twins,
)

import zoo
from zoo.models import get_spec
from zoo.weights import load_into, resolve

TORCHVISION_TWINS = twins("torchvision")
KERAS_TWINS = twins("keras")
FORMATS = ("zip", "legacy", "safetensors")
RELATIVE_TOLERANCE = 1e-4


def _compare(name: str, what: str, out: np.ndarray, ref: np.ndarray) -> None:
    assert_close(f"parity {name} {what}", out, ref, RELATIVE_TOLERANCE)


def test_every_twin_is_covered():
    # A model added to the registry with a twin joins these lists by itself; this pins the
    # current ones so that none drops out unnoticed.
    assert len(TORCHVISION_TWINS) == 16
    assert len(KERAS_TWINS) == 10


def _formats(index: int, name: str) -> tuple[str, ...]:
    # Every format for every model would write VGG's 530 MB three times over: the models
    # with over 50M parameters (AlexNet, VGG) take one format each, in turn, so each format
    # still meets their flatten re-ordering; the others take all three.
    big = get_spec(name).twin_params.get("torchvision", 0) > 50_000_000
    return (FORMATS[index % len(FORMATS)],) if big else FORMATS


@pytest.mark.parametrize(("index", "name", "twin"),
                         [(i, n, t) for i, (n, t) in enumerate(TORCHVISION_TWINS)],
                         ids=[n for n, _ in TORCHVISION_TWINS])
def test_torchvision_state_dict_gives_torchvision_logits(index, name, twin, tmp_path):
    """Each file format through zoo.build, on the model's smallest input."""
    shape = small_shape(name)
    reference = torchvision_model(twin)
    x = pixels(shape)
    expected = torchvision_logits(reference, x)
    paths = {fmt: save_state_dict(reference, tmp_path / f"{name}.{fmt}", fmt)
             for fmt in _formats(index, name)}
    del reference
    gc.collect()
    spec = get_spec(name)
    model = None
    for fmt, path in paths.items():
        if model is None:
            # Raw pixels in; the preprocessing comes from the catalog's entry for the model.
            model = zoo.build(name, weights=path, input_shape=shape, classifier_activation=None)
            expected_prep = "tf" if twin in ("googlenet", "inception_v3") else "torch"
            assert resolve(spec, path).preprocessing == expected_prep
        else:
            # The same model object, reloaded from the next format: what build() does.
            for layer in model.layers:
                for variable in layer.weights:
                    variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
            load_into(model, spec, resolve(spec, path), include_top=True, num_classes=1000)
        _compare(name, f"torchvision {fmt}", run(model, x), expected)


def test_every_format_meets_the_flatten_reordering():
    big = [(i, n) for i, (n, _) in enumerate(TORCHVISION_TWINS)
           if get_spec(n).twin_params["torchvision"] > 50_000_000]
    assert {_formats(i, n)[0] for i, n in big} == set(FORMATS)


@pytest.mark.parametrize(("name", "twin"), KERAS_TWINS, ids=[n for n, _ in KERAS_TWINS])
def test_keras_h5_gives_keras_outputs(name, twin, tmp_path):
    """Legacy h5 files with and without the classifier, through zoo.build."""
    # keras.applications' VGG has no adaptive pooling: its classifier needs 224x224.
    shape = (224, 224, 3) if twin.startswith("VGG") else small_shape(name)
    x = pixels(shape)
    reference, preprocess_input = keras_application(twin, include_top=True, input_shape=shape)
    # keras.applications' include_top=False model is this one up to the layer before the
    # head (same layers, names and order): sharing its layers saves building a second one.
    head_input = reference.get_layer("flatten" if twin.startswith("VGG") else "avg_pool").input
    notop = keras.Model(reference.input, head_input)
    files = {True: save_keras_legacy_h5(reference, tmp_path / f"{name}.h5", keras2_names=True),
             False: save_keras_legacy_h5(notop, tmp_path / f"{name}_notop.h5")}
    expected = {True: run(reference, preprocess_input(x.copy())),
                False: run(notop, preprocess_input(x.copy()))}
    del reference, notop
    gc.collect()
    for include_top, path in files.items():
        model = zoo.build(name, weights=path, input_shape=shape, include_top=include_top,
                          classifier_activation=None)
        _compare(name, f"keras h5 include_top={include_top}", run(model, x),
                 expected[include_top])
        del model
        gc.collect()
