"""Pretrained weights: catalog, download and cache, readers and converters.

``resolve(spec, weights)`` turns a tag or a path into a :class:`Weights` entry (whose
``preprocessing`` sets the model's ``Normalize`` layer) and ``load_into(model, spec,
weight_set, ...)`` fetches the file and loads it; ``zoo.build`` calls both. The weight sets
themselves are declared in the family files (``Spec.weights``); ``zoo.models.catalog()``
lists them all. This package never imports the families.

Example:
    >>> import zoo
    >>> model = zoo.build("resnet50", weights="imagenet")          # torchvision V2
    >>> model = zoo.build("resnet50", weights="resnet50-11ad3fa6.pth", num_classes=10)
    >>> model = zoo.build("resnet50", weights="hf://timm/resnet50.a1_in1k")  # timm, the Hub
    >>> model = zoo.build("resnet50", weights="path/to/timm-folder")  # config.json + weights
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace

from zoo.registry import Weights
from zoo.weights import download
from zoo.weights import timm as timm_checkpoints
from zoo.weights.catalog import local_entry
from zoo.weights.convert import (
    WeightsMismatchError,
    adapt_first_conv,
    plan_keras,
    plan_torchvision,
    report,
)
from zoo.weights.download import (
    HashMismatchError,
    WeightsUnavailableError,
    is_offline,
    weights_dir,
    zoo_home,
)
from zoo.weights.readers import (
    LayerWeights,
    UnsafePickleError,
    WeightsFileError,
    damaged_file_errors,
    detect_format,
    read_keras_archive,
    read_keras_h5,
    read_safetensors,
    read_torch,
)

__all__ = [
    "HashMismatchError", "UnsafePickleError", "Weights", "WeightsFileError",
    "WeightsMismatchError", "WeightsUnavailableError", "adapt_first_conv", "detect_format",
    "fetch", "is_offline", "load_into", "read_keras_h5", "read_safetensors",
    "read_torch", "resolve", "weights_dir", "zoo_home",
]

logger = logging.getLogger("zoo.weights")

_PATH_SUFFIXES = (".h5", ".hdf5", ".keras", ".pth", ".pt", ".bin", ".safetensors")


def resolve(spec, weights) -> Weights:
    """Resolves a catalog tag or a file path for ``spec`` to a :class:`Weights` entry.

    A path's preprocessing comes from the catalog when the file is a catalog file (same
    name and the publisher's hash), from the Normalize layer of a ``.keras`` file, and
    otherwise from the model's own catalog entry of the file's kind (torch mean/std for
    torchvision state dicts, but "tf" for GoogLeNet and Inception v3, loaded as torchvision
    does with ``transform_input=True``; caffe or tf for keras.applications files). A
    directory is a timm checkpoint folder, and ``hf://owner/repo[@revision]`` one on the
    Hugging Face Hub (fetched here, into the Hub's cache): their ``pretrained_cfg`` gives
    the preprocessing and the eval geometry.

    Args:
        spec: The model's spec.
        weights: A tag of ``spec.weights``, a path, a timm folder, an ``hf://`` address, or
            a :class:`Weights` entry.

    Returns:
        The entry; nothing is downloaded or read in full yet.

    Raises:
        ValueError: For an unknown tag that is not an existing file either.
    """
    if isinstance(weights, Weights):
        if weights.model != spec.name:
            raise ValueError(f"Weights {weights.model}:{weights.tag} are for "
                             f"{weights.model!r}, not {spec.name!r}.")
        return weights
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be None, a tag or a path; got {weights!r}.")
    text = os.fspath(weights)
    if text in spec.weights:
        return spec.weights[text]
    if text.startswith("hf://"):
        return _from_hub(spec, text)
    if os.path.isdir(text):
        return timm_checkpoints.folder_entry(spec, text)
    if os.path.isfile(text):
        return _local(spec, text)
    tags = ", ".join(spec.weights) or "none"
    if os.sep in text or text.lower().endswith(_PATH_SUFFIXES):
        raise FileNotFoundError(f"Weight file {text!r} for {spec.name!r} does not exist.")
    hint = ("" if spec.weights else " Models with pretrained weights: `zoo list --pretrained`.")
    raise ValueError(f"Unknown weights {text!r} for {spec.name!r}: not one of its tags "
                     f"({tags}) and not an existing file.{hint}")


def fetch(entry: Weights, **options) -> str:
    """The local path of a catalog entry's file, fetched if needed (``zoo pull`` uses it).

    Args:
        entry: A catalog entry.
        **options: For publishers' files, :func:`zoo.weights.download.fetch`'s options.

    Returns:
        The file; for timm's Hub sets the checkpoint folder in the Hub's cache.
    """
    if entry.source != timm_checkpoints.TIMM_SOURCE:
        return download.fetch(entry, **options)
    if entry.path:
        return entry.path
    from zoo.registry import registered

    return os.fspath(_fetch_hub(registered()[entry.model], entry).path)


def _from_hub(spec, address: str) -> Weights:
    """A timm checkpoint on the Hub: fetched (config and weights), with its catalog facts."""
    from zoo.weights import hub

    repo_id, revision = hub.parse_hf_uri(address)
    entry = _fetch_hub(spec, Weights(model=spec.name, hub_id=repo_id, revision=revision))
    known = next((e for e in _entries_of(spec) if e.hub_id == repo_id), None)
    if known is None:
        return entry
    catalog_facts = ("tag", "top1", "top5", "metrics_source", "recipe", "licence")
    return replace(entry, **{name: getattr(known, name) for name in catalog_facts})


def _fetch_hub(spec, entry: Weights) -> Weights:
    """Fetches a Hub entry's folder, recording the commit and the weight file's sha256.

    ``revision`` becomes the commit the files came from and ``url`` the ``hf://`` address
    that fetches exactly them again, so a run records a pinned source.
    """
    from zoo.weights import hub

    files = hub.fetch_hub_folder(entry.hub_id, entry.revision)
    digest = files.files[files.weights_file]
    logger.info("%s at commit %s: %s, sha256 %s.", entry.hub_id, files.commit,
                files.weights_file, digest)
    fetched = timm_checkpoints.folder_entry(spec, files.folder, hub_id=entry.hub_id)
    if entry.tag:  # a catalog entry keeps its own facts; the files give path and hash
        fetched = replace(entry, path=fetched.path, file_name=fetched.file_name)
    return replace(fetched, revision=files.commit, url=files.uri, hash=digest,
                   hash_algorithm="sha256")


def _entries_of(spec) -> list[Weights]:
    out = []
    for entry in spec.weights.values():
        for item in (entry, entry.notop):
            if item is not None and item not in out:
                out.append(item)
    return out


def _default_for(spec, source: str) -> Weights | None:
    return next((e for e in _entries_of(spec) if e.source == source), None)


def _local(spec, path: str) -> Weights:
    kind = detect_format(path)
    name = os.path.basename(path)
    for entry in _entries_of(spec):
        if entry.file_name == name:
            if download.verify(path, entry):
                return replace(entry, path=path)
            logger.warning("%s is named like the catalog's %s:%s file but its hash differs; "
                           "loading it as a file of unknown origin.", path, entry.model,
                           entry.tag)
            break
    if kind == "torch":
        return _from_defaults(spec, path, "torchvision", "torchvision")
    if kind == "safetensors":
        return _from_defaults(spec, path, "safetensors", "torchvision"
                              if _torch_style_keys(path) else None)
    if kind == "keras_h5":
        legacy = _is_legacy_h5(path)
        return _from_defaults(spec, path, "keras_h5" if legacy else "keras_weights",
                              "keras_h5" if legacy else None)
    preprocessing = _keras_archive_preprocessing(path)
    return local_entry(spec.name, path, "keras",
                       preprocessing=preprocessing or spec.preprocessing)


def _from_defaults(spec, path: str, source: str, like: str | None) -> Weights:
    default = _default_for(spec, like) if like else None
    preprocessing = default.preprocessing if default else spec.preprocessing
    logger.info("Preprocessing for %s: %s (%s).", path, preprocessing,
                f"as {spec.name}'s {default.tag} weights" if default else
                f"{spec.name}'s default; pass preprocessing= to build() if the file was "
                "trained with another")
    return local_entry(spec.name, path, source, preprocessing=preprocessing,
                       family_options=dict(default.family_options) if default else {})


def _is_legacy_h5(path: str) -> bool:
    import h5py

    with damaged_file_errors(path, "HDF5 weights"), h5py.File(path, "r") as f:
        group = f.get("model_weights", f)
        return "layer_names" in group.attrs


def _torch_style_keys(path: str) -> bool:
    import struct

    with damaged_file_errors(path, "safetensors"), open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        keys = [k for k in json.loads(f.read(size)) if k != "__metadata__"]
    return bool(keys) and not all("/" in k for k in keys)


def _keras_archive_preprocessing(path: str) -> dict | None:
    weights = read_keras_archive(path)
    stack = [weights.config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("class_name") == "Normalize" and isinstance(node.get("config"), dict):
                config = node["config"]
                return {"mean": tuple(config["mean"]), "std": tuple(config["std"]),
                        "channel_order": config.get("channel_order", "rgb")}
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def load_into(model, spec, weight_set: Weights, *, include_top: bool, num_classes: int) -> None:
    """Fetches (if needed), reads, converts and loads a weight set into a built model.

    Everything is checked before anything is assigned: on error the model is unchanged.

    Args:
        model: A model built by ``zoo.build`` for ``spec``.
        spec: Its spec.
        weight_set: From :func:`resolve`.
        include_top: Whether the model has its classifier (with ``False`` a catalog entry's
            smaller ``_notop`` file is used when there is one).
        num_classes: The model's classifier size; when it differs from the file's, the
            classifier is not loaded (and the log says so).

    Raises:
        WeightsMismatchError: The file does not fit, naming the first layer and both shapes.
        WeightsUnavailableError: Not cached and cannot be downloaded.
        UnsafePickleError: A ``.pth`` whose pickle asks for code.
    """
    entry = weight_set
    if entry.source == timm_checkpoints.TIMM_SOURCE:
        _load_timm(model, spec, entry, include_top=include_top)
        return
    if entry.path is None:
        path = None
        if not include_top and entry.notop is not None:
            # Either file will do; prefer one already here, else the smaller one.
            path = download.find_cached(entry.notop) or download.find_cached(entry)
            if path is None:
                entry = entry.notop
        path = path or fetch(entry)
    else:
        path = entry.path
    label = (f"{os.path.basename(path)} ({entry.model}:{entry.tag})" if entry.tag != "file"
             else repr(path))
    kind = detect_format(path)
    drop_head = entry.tag != "file" and entry.num_classes is None and entry.include_top
    if kind == "torch":
        plan = plan_torchvision(model, spec, read_torch(path), include_top=include_top,
                                file_label=label, drop_head=drop_head)
    elif kind == "safetensors":
        tensors, _ = read_safetensors(path)
        if all("/" in key for key in tensors):
            plan = plan_keras(model, _layered(tensors, model), include_top=include_top,
                              file_label=label, layout_kind="keras3")
        else:
            plan = plan_torchvision(model, spec, tensors, include_top=include_top,
                                    file_label=label, drop_head=drop_head)
    else:
        weights = read_keras_h5(path) if kind == "keras_h5" else read_keras_archive(path)
        plan = plan_keras(model, weights.layers, include_top=include_top, file_label=label,
                          layout_kind=weights.layout)
    plan.apply()
    report(plan, model.name, label)


def _load_timm(model, spec, entry: Weights, *, include_top: bool) -> None:
    if entry.path is None:
        entry = _fetch_hub(spec, entry)
    plan, label = timm_checkpoints.load_folder(model, spec, entry, include_top=include_top)
    plan.apply()
    report(plan, model.name, label)


def _layered(tensors: dict, model) -> list[LayerWeights]:
    # safetensors keys "layer/variable": order each layer's arrays as the model's layer has
    # its variables, so the positional matching of Keras files applies.
    layers: dict[str, dict] = {}
    for key, value in tensors.items():
        layer, _, variable = key.rpartition("/")
        layers.setdefault(layer, {})[variable.split(":")[0]] = value
    by_name = {layer.name: layer for layer in model.layers}
    out = []
    for name, variables in layers.items():
        layer = by_name.get(name)
        order = [v.name for v in layer.weights] if layer is not None else sorted(variables)
        if set(order) != set(variables):
            order = sorted(variables)
        out.append(LayerWeights(name, [variables[v] for v in order], order))
    return out
