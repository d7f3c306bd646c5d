"""The publishers' conventions, for the weight sets the family files declare.

Every weight set is declared in its family file (``zoo/architectures/<family>.py``) as data
copied from its publisher: the URL, the publisher's own hash (the md5 that
keras.applications passes to ``get_file``; the sha256 prefix torchvision puts in its file
names and ``torch.hub`` checks), the evaluation transform and the reference top-1 and top-5
published beside the file. The constructors here fill in what follows from the publisher
(base URL, file-name pattern, hash from the name, licence, metrics source), so an entry
states only what is its own. ``tests/weights/test_weights_catalog.py`` re-reads all of it
from the installed keras and torchvision sources, so a typo fails CI.

Tags, per model:

* ``imagenet``: the most accurate entry of that model (by the publisher's top-1) that has
  a classifier; the same object as the entry it names (chosen by ``zoo.registry.register``).
* ``torchvision_v1``, ``torchvision_v2``: torchvision's ``IMAGENET1K_V1`` and
  ``IMAGENET1K_V2`` (V2 only for ResNet-50/101/152, trained with torchvision's 2021 recipe).
* ``torchvision_features``: VGG-16's ``IMAGENET1K_FEATURES``, the SSD authors' port of the
  original VGG weights: the convolutional part only, the classifier holds no usable values.
* ``keras``, ``keras_notop``: keras.applications' file with and without the classifier.
  ``build(..., weights="keras", include_top=False)`` fetches the smaller ``_notop`` file.
* ``timm_<tag>``: timm's set ``<architecture>.<tag>`` on the Hugging Face Hub
  (``timm_a1_in1k`` is ``hf://timm/resnet50.a1_in1k``), from the data
  ``docs/gen_timm_sets.py`` wrote (:mod:`zoo.weights.timm_sets`). No hash is published for
  them, so they are unpinned: never picked as ``imagenet``; fetching one records the commit
  and the sha256 of its files in the resolved entry (``revision``, ``hash``).
"""

from __future__ import annotations

import os
import re
from dataclasses import replace

from zoo.registry import Weights

# Where the publishers state the reference accuracies.
KERAS_METRICS_SOURCE = "https://keras.io/api/applications/ (table of available models)"
TORCHVISION_METRICS_SOURCE = "torchvision.models.*_Weights.meta['_metrics'] (torchvision 0.28)"

LICENCE_TORCHVISION = (
    "BSD-3-Clause (torchvision); torchvision notes that pretrained weights may carry the "
    "terms of their training data (ImageNet-1k: non-commercial research)")
LICENCE_KERAS_VGG = "CC BY 4.0 (VGG group, University of Oxford), ported by Keras"
LICENCE_KERAS_RESNET = "MIT (Kaiming He's Caffe release), ported by Keras"
LICENCE_KERAS_INCEPTION_V3 = "MIT (trained by the Keras authors)"
LICENCE_KERAS_UNSTATED = (
    "not stated by the publisher; distributed with keras.applications (Keras: Apache-2.0)")

TORCHVISION_BASE = "https://download.pytorch.org/models/"
TORCHVISION_RECIPE = "https://github.com/pytorch/vision/tree/main/references/classification"
KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"


def torchvision_hash(url: str) -> str:
    """The sha256 prefix torch.hub reads from a file name ending in ``-<hex digits>``."""
    match = re.search(r"-([a-f0-9]{8,})\.\w+$", url)
    if match is None:
        raise ValueError(f"No sha256 prefix in torchvision URL {url!r}.")
    return match.group(1)


def torchvision_weights(tag: str, file_name: str, *, top1: float | None, top5: float | None,
                        recipe: str, crop: int = 224, resize: int = 256,
                        preprocessing: str | dict = "torch", **fields) -> Weights:
    """A weight set torchvision publishes (``IMAGENET1K_V1`` and the like).

    Args:
        tag: The zoo tag (``"torchvision_v1"``).
        file_name: The file name under torchvision's download URL.
        top1: torchvision's ``meta["_metrics"]`` top-1.
        top5: The same for top-5.
        recipe: An anchor of torchvision's reference recipes page (``"#resnet"``) or a URL.
        crop: The evaluation crop (``transforms().crop_size``).
        resize: The evaluation resize (``transforms().resize_size``).
        preprocessing: The normalisation the weights expect on raw pixels.
        **fields: Any other :class:`~zoo.registry.Weights` field (notes, num_classes, ...).

    Returns:
        The entry (its ``model`` is filled in when the family registers it).
    """
    url = TORCHVISION_BASE + file_name
    return Weights(
        tag=tag, source="torchvision", url=url, file_name=file_name,
        hash=torchvision_hash(url), hash_algorithm="sha256", preprocessing=preprocessing,
        input_size=(crop, crop, 3), resize_size=resize,
        crop_fraction=round(crop / resize, 4), interpolation="bilinear", top1=top1,
        top5=top5, metrics_source=TORCHVISION_METRICS_SOURCE, licence=LICENCE_TORCHVISION,
        recipe=recipe if recipe.startswith("http") else TORCHVISION_RECIPE + recipe,
        **fields)


def keras_weights(stem: str, *, md5: str, md5_notop: str, top1: float, top5: float,
                  size: int, preprocessing: str, licence: str) -> list[Weights]:
    """keras.applications' two files of one model: with the classifier, and ``_notop``.

    Args:
        stem: ``directory/name`` under Keras' bucket (``"resnet/resnet50"``).
        md5: The hash keras.applications passes to ``get_file`` for the full file.
        md5_notop: The same for the ``_notop`` file.
        top1: Keras' table's top-1.
        top5: Keras' table's top-5.
        size: The input size.
        preprocessing: The model's ``preprocess_input`` mode.
        licence: The weights' licence.

    Returns:
        ``[keras, keras_notop]``; the first's ``notop`` is the second.
    """
    directory, name = stem.rsplit("/", 1)
    common = dict(
        source="keras_h5", hash_algorithm="md5", preprocessing=preprocessing,
        input_size=(size, size, 3), resize_size=round(size / 0.875), crop_fraction=0.875,
        interpolation="bilinear", top1=top1, top5=top5,
        metrics_source=KERAS_METRICS_SOURCE, licence=licence, recipe="keras.applications",
        notes="Keras publishes no evaluation transform; the 0.875 centre crop is the "
              "usual convention. Accuracies are rounded to 0.1 by Keras.",
    )
    top_file = f"{name}_weights_tf_dim_ordering_tf_kernels.h5"
    notop_file = f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    notop = Weights(tag="keras_notop", url=f"{KERAS_BASE}{directory}/{notop_file}",
                    file_name=notop_file, hash=md5_notop, include_top=False, num_classes=None,
                    **common)
    top = Weights(tag="keras", url=f"{KERAS_BASE}{directory}/{top_file}", file_name=top_file,
                  hash=md5, notop=notop, **common)
    return [top, notop]


def timm_weights(model: str) -> list[Weights]:
    """The pretrained sets timm publishes for one zoo model (from its configs and results).

    Args:
        model: The zoo model name.

    Returns:
        One unpinned entry per set, tagged ``timm_<tag>``, with the eval geometry and
        normalisation of its ``pretrained_cfg``; none when timm has no set for it.
    """
    from zoo.weights import timm as timm_checkpoints
    from zoo.weights import timm_sets

    entries = []
    for tag, cfg, top1, top5 in timm_sets.SETS.get(model, []):
        classes = cfg.get("num_classes") or None
        entries.append(Weights(
            tag=f"timm_{tag}", source=timm_checkpoints.TIMM_SOURCE,
            url=f"hf://{cfg['hf_hub_id']}", hub_id=cfg["hf_hub_id"],
            file_name=timm_checkpoints.SAFETENSORS_NAME, num_classes=classes,
            labels="imagenet-1k" if classes == 1000 else None, top1=top1, top5=top5,
            metrics_source=timm_sets.METRICS_SOURCE if top1 is not None else "",
            licence=cfg.get("license", "not stated in timm's config"),
            recipe=cfg.get("origin_url") or cfg.get("paper_ids") or "timm",
            notes=f"timm {timm_sets.TIMM_VERSION}'s {cfg['hf_hub_id'].split('/')[-1]}; "
                  "unpinned (the Hub publishes no hash beforehand).",
            **timm_checkpoints.weights_fields(cfg)))
    return entries


def local_entry(model: str, path: str, source: str, **overrides) -> Weights:
    """A Weights entry for a file given by path; its geometry is the architecture's.

    Args:
        model: The zoo model name.
        path: The file.
        source: Its detected format.
        **overrides: Any other field (preprocessing, num_classes, ...).

    Returns:
        The entry, tagged ``"file"``.
    """
    base = Weights(model=model, tag="file", source=source, path=os.fspath(path),
                   file_name=os.path.basename(path), num_classes=None, labels=None)
    return replace(base, **overrides)
