"""timm checkpoints in the Hugging Face Hub layout, read into zoo's twins.

A timm checkpoint folder (what ``timm``'s ``save_for_hf`` writes and what a ``timm/<name>``
repository on the Hub holds) has ``config.json`` with ``architecture``, ``num_classes`` and
``pretrained_cfg`` (mean, std, interpolation, crop_pct, input_size, ...), and the weights
as ``model.safetensors`` or ``pytorch_model.bin``. The architecture picks the zoo model
(``Spec.timm_rule``, declared in the family files); ``pretrained_cfg`` becomes the weight
set's eval geometry and normalisation; the state dict goes through the same conversion as
torchvision's (:func:`zoo.weights.convert.plan_torchvision`), with the family's timm key
rule. torch is never imported: safetensors files are read with the ``safetensors``
package's NumPy API and ``.bin`` files with zoo's pickle-safe reader.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace

import numpy as np

from zoo.layers import PREPROCESSING
from zoo.registry import Spec, TimmRule, TorchvisionRule, Weights, registered
from zoo.weights.convert import WeightsMismatchError, plan_torchvision
from zoo.weights.readers import WeightsFileError, damage_message, damaged_file_errors, read_torch

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
PYTORCH_NAME = "pytorch_model.bin"
WEIGHT_NAMES = (SAFETENSORS_NAME, PYTORCH_NAME)
TIMM_SOURCE = "timm"

# timm's interpolation names -> tf.image.resize's.
_INTERPOLATIONS = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest",
                   "lanczos": "lanczos3", "box": "area"}
_LAYOUT = ("A timm checkpoint folder (as timm's save_for_hf and the Hub's timm/<name> "
           "repositories have it) holds config.json (architecture, num_classes, "
           "pretrained_cfg) and model.safetensors or pytorch_model.bin.")


def is_timm_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory with a ``config.json`` (timm's hub layout)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_NAME))


def supported_architectures() -> dict[str, str]:
    """Every timm architecture zoo has a twin of, with the twin's zoo name."""
    return {spec.timm_rule.architecture: name for name, spec in sorted(registered().items())
            if spec.timm_rule is not None}


def read_config(folder: str | os.PathLike) -> dict:
    """Reads a timm folder's ``config.json`` into timm's split form.

    Args:
        folder: The checkpoint folder.

    Returns:
        ``{"architecture", "num_classes", "pretrained_cfg", "label_names", ...}``; a legacy
        single-dict config (no ``pretrained_cfg`` key) is split as timm splits it.

    Raises:
        WeightsFileError: No config.json, unreadable JSON, or no architecture.
    """
    path = os.path.join(os.fspath(folder), CONFIG_NAME)
    if not os.path.isfile(path):
        raise WeightsFileError(f"{os.fspath(folder)!r} is not a timm checkpoint folder: it has "
                               f"no {CONFIG_NAME}. {_LAYOUT}")
    with damaged_file_errors(path, "timm config.json"), open(path, encoding="utf-8") as f:
        config = json.load(f)
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise WeightsFileError(f"{path!r} names no 'architecture': it is not a timm model "
                               f"config. {_LAYOUT}")
    if "pretrained_cfg" not in config:
        rest = {k: v for k, v in config.items() if k != "architecture"}
        config = {"architecture": config["architecture"], "pretrained_cfg": rest,
                  "num_classes": rest.get("num_classes"),
                  "label_names": rest.get("label_names", rest.get("labels"))}
    if not isinstance(config["pretrained_cfg"], dict):
        raise WeightsFileError(f"{path!r}: 'pretrained_cfg' is not an object. {_LAYOUT}")
    return config


def weight_file(folder: str | os.PathLike) -> str:
    """The folder's weight file: ``model.safetensors``, else ``pytorch_model.bin``.

    Raises:
        WeightsFileError: When it has neither.
    """
    for name in WEIGHT_NAMES:
        path = os.path.join(os.fspath(folder), name)
        if os.path.isfile(path):
            return path
    raise WeightsFileError(f"timm checkpoint folder {os.fspath(folder)!r} has {CONFIG_NAME} "
                           f"but no weights: neither {SAFETENSORS_NAME} nor {PYTORCH_NAME}. "
                           "Copy the weight file from the same checkpoint beside it.")


def twin_of(architecture: str, asked: Spec | None = None) -> Spec:
    """The zoo model a timm architecture loads into.

    Args:
        architecture: timm's name, from ``config.json``.
        asked: The model the caller builds, if any; it must be that twin.

    Returns:
        The twin's spec.

    Raises:
        WeightsMismatchError: An architecture zoo has no twin of (listing the supported
            ones), or a twin other than ``asked`` (naming both).
    """
    supported = supported_architectures()
    if architecture not in supported:
        raise WeightsMismatchError(
            f"timm's {architecture!r} has no twin in zoo, so its checkpoint cannot load. "
            f"timm architectures zoo loads: {', '.join(supported)}.")
    spec = registered()[supported[architecture]]
    if asked is not None and asked.name != spec.name:
        raise WeightsMismatchError(
            f"The checkpoint is timm's {architecture!r}, which is zoo's {spec.name!r}; it "
            f"does not fit {asked.name!r}. Build zoo.build({spec.name!r}, weights=...) "
            "instead.")
    return spec


def weights_fields(pretrained_cfg: dict) -> dict:
    """The eval geometry and normalisation of a timm ``pretrained_cfg``, as Weights fields.

    The geometry is the one timm's own validation uses (``validate.py`` takes the test
    size): ``test_input_size`` and ``test_crop_pct`` where the config has them, else
    ``input_size`` and ``crop_pct``; the image is resized to ``floor(size / crop_pct)``
    and centre-cropped, as timm's eval transform does.

    Args:
        pretrained_cfg: timm's config for the weights.

    Returns:
        ``preprocessing``, ``input_size``, ``resize_size``, ``crop_fraction`` and
        ``interpolation``.

    Raises:
        WeightsFileError: An interpolation or crop mode zoo cannot reproduce.
    """
    cfg = pretrained_cfg
    size = tuple(cfg.get("test_input_size") or cfg.get("input_size") or (3, 224, 224))
    crop = float(cfg.get("test_crop_pct") or cfg.get("crop_pct") or 0.875)
    name = cfg.get("interpolation", "bilinear")
    if name not in _INTERPOLATIONS:
        raise WeightsFileError(f"timm's interpolation {name!r} has no tf.image.resize "
                               f"counterpart; zoo knows {', '.join(_INTERPOLATIONS)}.")
    if cfg.get("crop_mode", "center") != "center":
        raise WeightsFileError(f"timm's crop_mode {cfg['crop_mode']!r} is not supported; zoo "
                               "evaluates with a centre crop ('center').")
    mean = tuple(float(v) * 255 for v in cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(float(v) * 255 for v in cfg.get("std", (0.229, 0.224, 0.225)))
    return {"preprocessing": _preset(mean, std),
            "input_size": (int(size[1]), int(size[2]), int(size[0])),
            "resize_size": math.floor(max(size[1:]) / crop), "crop_fraction": crop,
            "interpolation": _INTERPOLATIONS[name]}


def _preset(mean: tuple, std: tuple) -> str | dict:
    # The preset's name where it is one (ImageNet's mean and std, or timm's 0.5 / 0.5).
    for name in ("torch", "tf"):
        preset = PREPROCESSING[name]
        if np.allclose(preset["mean"], mean, rtol=1e-4) and \
                np.allclose(preset["std"], std, rtol=1e-4):
            return name
    return {"mean": mean, "std": std, "channel_order": "rgb"}


def folder_entry(spec: Spec, folder: str | os.PathLike, **fields) -> Weights:
    """The Weights entry of a timm checkpoint folder for ``spec``.

    Args:
        spec: The model asked for; the config's architecture must be its timm twin.
        folder: The checkpoint folder.
        **fields: Other Weights fields (a Hub folder's ``hub_id``, ``revision``, ``hash``).

    Returns:
        The entry (source ``"timm"``, ``path`` the folder); nothing is read but the config.
    """
    config = read_config(folder)
    twin_of(config["architecture"], spec)
    cfg = config["pretrained_cfg"]
    num_classes = config.get("num_classes") or cfg.get("num_classes")
    names = config.get("label_names")
    label_names = tuple(names) if isinstance(names, list) and len(names) == num_classes else None
    entry = Weights(
        model=spec.name, tag="file", source=TIMM_SOURCE, path=os.fspath(folder),
        file_name=os.path.basename(weight_file(folder)),
        num_classes=int(num_classes) if num_classes else None,
        labels="imagenet-1k" if num_classes == 1000 and label_names is None else None,
        label_names=label_names, licence=str(cfg.get("license", "")),
        notes=f"timm {config['architecture']}" + (f".{cfg['tag']}" if cfg.get("tag") else ""),
        **weights_fields(cfg))
    return replace(entry, **fields)


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """A timm weight file's tensors as NumPy arrays (safetensors or a pickled .bin).

    Raises:
        WeightsFileError: A damaged file, naming it.
        UnsafePickleError: A ``.bin`` whose pickle asks for code.
    """
    if not path.endswith(".safetensors"):
        return read_torch(path)
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    with damaged_file_errors(path, "safetensors"):
        try:
            return load_file(path)
        except (SafetensorError, TypeError, ValueError) as error:
            raise WeightsFileError(damage_message(path, "safetensors", error)) from None


def key_rule(model, rule: TimmRule) -> TorchvisionRule:
    """A state-dict key rule for ``model``: timm module path -> the zoo layer holding it."""
    table = {}
    for layer in model.layers:
        path = rule.module_of(layer.name) if layer.weights else None
        if path is not None:
            table[path] = layer.name
    return TorchvisionRule(table.get, head=rule.head, bn_eps=rule.bn_eps)


def load_folder(model, spec: Spec, entry: Weights, *, include_top: bool):
    """Reads a timm checkpoint folder and plans loading it into ``model``.

    Args:
        model: Built by ``zoo.build`` for ``spec``.
        spec: Its spec (with a ``timm_rule``).
        entry: From :func:`folder_entry` (``path`` the folder).
        include_top: Whether the model has its classifier.

    Returns:
        ``(plan, label)``: the checked plan (not yet applied) and the file, for messages.
    """
    path = weight_file(entry.path)
    label = repr(path) + (f" ({entry.hub_id})" if entry.hub_id else "")
    state = read_state_dict(path)
    rule = spec.timm_rule
    for module in rule.conv_dense:
        # A convolution over the whole map is a dense layer over its (C, H, W) flatten,
        # which is torch's flatten order: the converter then re-orders it as for a Linear.
        key = f"{module}.weight"
        if key in state and state[key].ndim == 4:
            state[key] = state[key].reshape(state[key].shape[0], -1)
    plan = plan_torchvision(model, spec, state, include_top=include_top, file_label=label,
                            rule=key_rule(model, rule))
    return plan, label
