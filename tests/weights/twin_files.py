"""Genuine weight files of the twins, written in the tests: torchvision state dicts and
keras.applications legacy h5 files of randomly initialised reference models.

torch and torchvision are test-only dependencies.
"""

from __future__ import annotations

import h5py
import keras
import numpy as np
from model_inputs import pixels, small_shape  # noqa: F401 (re-exported)
from torch_reference import import_torchvision, randomise_batch_norm  # noqa: F401 (re-exported)

import zoo
from zoo.models import get_spec

TORCH_MEAN = np.array([0.485, 0.456, 0.406], dtype="float32") * 255
TORCH_STD = np.array([0.229, 0.224, 0.225], dtype="float32") * 255


def twins(library: str) -> list[tuple[str, str]]:
    """``(zoo name, twin name)`` for every registered model with a twin in ``library``."""
    return [(n, get_spec(n).twins[library]) for n in zoo.list_models()
            if library in get_spec(n).twins]


def torchvision_model(twin: str, seed: int = 0):
    """A randomly initialised torchvision model in eval mode, as its pretrained config has it.

    GoogLeNet and Inception v3 are built as torchvision builds them for their pretrained
    weights (``transform_input=True``, auxiliary heads present). Batch-norm statistics and
    affine parameters are randomised too, so that their conversion is tested.
    """
    torch, torchvision = import_torchvision()
    torch.manual_seed(seed)
    kwargs = {}
    if twin in ("googlenet", "inception_v3"):
        kwargs = {"transform_input": True, "aux_logits": True, "init_weights": True}
    model = getattr(torchvision.models, twin)(**kwargs).eval()
    randomise_batch_norm(model, seed + 1)
    return model


def torchvision_logits(model, x: np.ndarray) -> np.ndarray:
    """torchvision's logits on raw pixels with its documented normalisation (torch mean/std)."""
    import torch

    normalised = (x - TORCH_MEAN) / TORCH_STD
    with torch.no_grad():
        out = model(torch.from_numpy(normalised.transpose(0, 3, 1, 2).copy()))
    if isinstance(out, tuple):  # GoogLeNetOutputs / InceptionOutputs in training mode only
        out = out[0]
    return out.numpy()


def save_state_dict(model, path, fmt: str) -> str:
    """Writes ``model.state_dict()`` as ``zip`` or ``legacy`` torch.save, or ``safetensors``."""
    import torch

    state = model.state_dict()
    if fmt == "zip":
        torch.save(state, path)
    elif fmt == "legacy":
        torch.save(state, path, _use_new_zipfile_serialization=False)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        raise ValueError(fmt)
    return str(path)


KERAS_PREPROCESS_MODULES = {
    "VGG16": "vgg16", "VGG19": "vgg19", "ResNet50": "resnet", "ResNet101": "resnet",
    "ResNet152": "resnet", "ResNet50V2": "resnet_v2", "ResNet101V2": "resnet_v2",
    "ResNet152V2": "resnet_v2", "InceptionV3": "inception_v3",
    "InceptionResNetV2": "inception_resnet_v2",
}


def keras_application(twin: str, *, include_top: bool, input_shape, seed: int = 0):
    """A randomly initialised keras.applications model (logits) and its preprocess_input."""
    keras.utils.set_random_seed(seed)
    model = getattr(keras.applications, twin)(
        weights=None, include_top=include_top, input_shape=tuple(input_shape),
        classifier_activation=None)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            values = layer.get_weights()
            # Moving variance last, positive; everything else shifted away from 0 and 1.
            values = [v + rng.uniform(-0.5, 0.5, v.shape).astype("float32")
                      for v in values[:-1]] + [rng.uniform(0.5, 2.0, values[-1].shape)
                                               .astype("float32")]
            layer.set_weights(values)
    module = getattr(keras.applications, KERAS_PREPROCESS_MODULES[twin])
    return model, module.preprocess_input


def save_keras_legacy_h5(model, path, *, keras2_names: bool = False) -> str:
    """Writes the legacy Keras 2 HDF5 layout keras.applications publishes.

    Args:
        model: A Keras model.
        path: Output file.
        keras2_names: Rewrite what the Keras 3 writer puts in the file the way Keras 2 wrote
            the published files: variable names with a ``:0`` suffix and a Keras 2 version.
    """
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    with h5py.File(path, "w") as f:
        save_weights_to_hdf5_group(f, model)
        if keras2_names:
            f.attrs["keras_version"] = b"2.2.4"
            for name in f.attrs["layer_names"]:
                group = f[name.decode() if isinstance(name, bytes) else name]
                old = [w.decode() if isinstance(w, bytes) else w
                       for w in group.attrs["weight_names"]]
                new = [w + ":0" for w in old]
                for o, n in zip(old, new):
                    group.move(o, n)
                group.attrs["weight_names"] = [n.encode() for n in new]
    return str(path)
