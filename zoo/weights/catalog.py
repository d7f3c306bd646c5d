"""The catalog of pretrained weight files, one :class:`Weights` entry per file.

Every entry is data copied from its publisher: the URL, the publisher's own hash (the md5
that keras.applications passes to ``get_file``; the sha256 prefix torchvision puts in its
file names and ``torch.hub`` checks), the evaluation transform and the reference top-1 and
top-5 published beside the file. ``tests/weights/test_catalog.py`` re-reads all of it from
the installed keras and torchvision sources, so a typo here fails CI.

Tags, per model:

* ``imagenet``: the most accurate entry of that model (by the publisher's top-1) that has
  a classifier; the same object as the entry it names.
* ``torchvision_v1``, ``torchvision_v2``: torchvision's ``IMAGENET1K_V1`` and
  ``IMAGENET1K_V2`` (V2 only for ResNet-50/101/152, trained with torchvision's 2021 recipe).
* ``torchvision_features``: VGG-16's ``IMAGENET1K_FEATURES``, the SSD authors' port of the
  original VGG weights: the convolutional part only, the classifier holds no usable values.
* ``keras``, ``keras_notop``: keras.applications' file with and without the classifier.
  ``build(..., weights="keras", include_top=False)`` fetches the smaller ``_notop`` file.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace

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


@dataclass(frozen=True)
class Weights:
    """One pretrained weight file and everything needed to use it right.

    Attributes:
        model: The zoo model the file is for.
        tag: Its tag in the catalog (``"torchvision_v2"``), or ``"file"`` for a local file
            given by path.
        source: File format: ``"keras_h5"`` (keras.applications' legacy HDF5),
            ``"torchvision"`` (a PyTorch state dict), ``"safetensors"``, ``"keras"``
            (``.keras``) or ``"keras_weights"`` (Keras 3 ``.weights.h5``).
        url: Where the publisher serves it (None for a local file).
        file_name: The publisher's file name, also the name in the cache.
        hash: The publisher's hash of the file (hex): a full md5, or a sha256 or a prefix of
            one.
        hash_algorithm: ``"md5"`` or ``"sha256"``.
        preprocessing: What the network was trained on: a preset of
            :data:`zoo.layers.PREPROCESSING` or a ``{mean, std, channel_order}`` dict in
            pixel units; the model's ``Normalize`` layer is set from it.
        input_size: Evaluation input ``(height, width, channels)``.
        resize_size: Shorter side the image is resized to before the centre crop.
        crop_fraction: ``input_size / resize_size``.
        interpolation: Resize interpolation of the publisher's evaluation.
        num_classes: Classifier size in the file; None when the file has no usable
            classifier.
        labels: Name of the label set (``"imagenet-1k"``, see :mod:`zoo.data`).
        top1: The publisher's ImageNet-1k validation top-1 accuracy in percent.
        top5: The same for top-5.
        metrics_source: Where those accuracies are published.
        licence: Licence of the weights as the publisher states it.
        recipe: How they were trained, as a link or a few words.
        include_top: Whether the file holds the classifier.
        notop: The same weights without the classifier (keras.applications' ``_notop``
            file), fetched instead when a model is built with ``include_top=False``.
        family_options: Builder options the weights need (e.g. an architecture variant).
        path: For a local file: its path.
        notes: Anything else a user should know.
    """

    model: str
    tag: str
    source: str
    url: str | None = None
    file_name: str | None = None
    hash: str | None = None
    hash_algorithm: str | None = None
    preprocessing: str | dict = "torch"
    input_size: tuple[int, int, int] = (224, 224, 3)
    resize_size: int = 256
    crop_fraction: float = 0.875
    interpolation: str = "bilinear"
    num_classes: int | None = 1000
    labels: str | None = "imagenet-1k"
    top1: float | None = None
    top5: float | None = None
    metrics_source: str = ""
    licence: str = ""
    recipe: str = ""
    include_top: bool = True
    notop: Weights | None = None
    family_options: dict = field(default_factory=dict)
    path: str | None = None
    notes: str = ""

    def __hash__(self) -> int:
        # The generated hash would fail on the family_options dict.
        return hash((self.model, self.tag, self.file_name, self.path))

    def as_dict(self) -> dict:
        """The entry as plain data, for ``zoo.describe`` and manifests."""
        data = asdict(self)
        data["notop"] = self.notop.tag if self.notop is not None else None
        data["input_size"] = list(self.input_size)
        return data

    def class_names(self) -> list[str] | None:
        """The class names of the file's classifier outputs, in order, if it has one."""
        if self.labels is None or self.num_classes is None:
            return None
        from zoo.data import class_names

        return class_names(self.labels)


def _tv_hash(url: str) -> str:
    # torch.hub's convention: the file name ends in "-<first 8+ hex digits of its sha256>".
    match = re.search(r"-([a-f0-9]{8,})\.\w+$", url)
    if match is None:
        raise ValueError(f"No sha256 prefix in torchvision URL {url!r}.")
    return match.group(1)


_TV_BASE = "https://download.pytorch.org/models/"
_TV_RECIPE = "https://github.com/pytorch/vision/tree/main/references/classification"

# model, tag, file, top-1, top-5, crop, resize, preprocessing, recipe anchor
_TORCHVISION = [
    ("alexnet", "torchvision_v1", "alexnet-owt-7be5be79.pth", 56.522, 79.066, 224, 256,
     "torch", "#alexnet-and-vgg"),
    ("vgg11", "torchvision_v1", "vgg11-8a719046.pth", 69.020, 88.628, 224, 256, "torch",
     "#alexnet-and-vgg"),
    ("vgg11_bn", "torchvision_v1", "vgg11_bn-6002323d.pth", 70.370, 89.810, 224, 256, "torch",
     "#alexnet-and-vgg"),
    ("vgg13", "torchvision_v1", "vgg13-19584684.pth", 69.928, 89.246, 224, 256, "torch",
     "#alexnet-and-vgg"),
    ("vgg13_bn", "torchvision_v1", "vgg13_bn-abd245e5.pth", 71.586, 90.374, 224, 256, "torch",
     "#alexnet-and-vgg"),
    ("vgg16", "torchvision_v1", "vgg16-397923af.pth", 71.592, 90.382, 224, 256, "torch",
     "#alexnet-and-vgg"),
    ("vgg16_bn", "torchvision_v1", "vgg16_bn-6c64b313.pth", 73.360, 91.516, 224, 256, "torch",
     "#alexnet-and-vgg"),
    ("vgg19", "torchvision_v1", "vgg19-dcbb9e9d.pth", 72.376, 90.876, 224, 256, "torch",
     "#alexnet-and-vgg"),
    ("vgg19_bn", "torchvision_v1", "vgg19_bn-c79401a0.pth", 74.218, 91.842, 224, 256, "torch",
     "#alexnet-and-vgg"),
    # transform_input=True, with which torchvision loads these, turns torch mean/std input
    # into (x/255 - 0.5)/0.5: the "tf" preset on raw pixels.
    ("googlenet", "torchvision_v1", "googlenet-1378be20.pth", 69.778, 89.530, 224, 256, "tf",
     "#googlenet"),
    ("inception_v3_tv", "torchvision_v1", "inception_v3_google-0cc3c7bd.pth", 77.294, 93.450,
     299, 342, "tf", "#inception-v3"),
    ("resnet18", "torchvision_v1", "resnet18-f37072fd.pth", 69.758, 89.078, 224, 256, "torch",
     "#resnet"),
    ("resnet34", "torchvision_v1", "resnet34-b627a593.pth", 73.314, 91.420, 224, 256, "torch",
     "#resnet"),
    ("resnet50", "torchvision_v1", "resnet50-0676ba61.pth", 76.130, 92.862, 224, 256, "torch",
     "#resnet"),
    ("resnet50", "torchvision_v2", "resnet50-11ad3fa6.pth", 80.858, 95.434, 224, 232, "torch",
     "https://github.com/pytorch/vision/issues/3995#issuecomment-1013906621"),
    ("resnet101", "torchvision_v1", "resnet101-63fe2227.pth", 77.374, 93.546, 224, 256,
     "torch", "#resnet"),
    ("resnet101", "torchvision_v2", "resnet101-cd907fc2.pth", 81.886, 95.780, 224, 232,
     "torch", "https://github.com/pytorch/vision/issues/3995#new-recipe"),
    ("resnet152", "torchvision_v1", "resnet152-394f9c45.pth", 78.312, 94.046, 224, 256,
     "torch", "#resnet"),
    ("resnet152", "torchvision_v2", "resnet152-f82ba261.pth", 82.284, 96.002, 224, 232,
     "torch", "https://github.com/pytorch/vision/issues/3995#new-recipe"),
]

_TV_NOTES = {
    "googlenet": "torchvision loads these with transform_input=True; here that is the 'tf' "
                 "preprocessing. The file also holds the auxiliary heads (aux1, aux2), "
                 "which load when the model is built with aux_logits=True.",
    "inception_v3_tv": "torchvision loads these with transform_input=True; here that is the "
                       "'tf' preprocessing. Ported from TensorFlow by torchvision. The file "
                       "also holds the auxiliary head (AuxLogits), which loads with "
                       "aux_logits=True.",
    "alexnet": "torchvision's single-tower AlexNet ('one weird trick', Krizhevsky 2014).",
}

_KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"

# model, directory/file stem, md5 with top, md5 without, top-1, top-5, size, preprocessing,
# licence
_KERAS = [
    ("vgg16", "vgg16/vgg16", "64373286793e3c8b2b4e3219cbf3544b",
     "6d6bbae143d832006294945121d1f1fc", 71.3, 90.1, 224, "caffe", LICENCE_KERAS_VGG),
    ("vgg19", "vgg19/vgg19", "cbe5617147190e668d6c5d5026f83318",
     "253f8cb515780f3b799900260a226db6", 71.3, 90.0, 224, "caffe", LICENCE_KERAS_VGG),
    ("resnet50_v1", "resnet/resnet50", "2cb95161c43110f7111970584f804107",
     "4d473c1dd8becc155b73f8504c6f6626", 74.9, 92.1, 224, "caffe", LICENCE_KERAS_RESNET),
    ("resnet101_v1", "resnet/resnet101", "f1aeb4b969a6efcfb50fad2f0c20cfc5",
     "88cf7a10940856eca736dc7b7e228a21", 76.4, 92.8, 224, "caffe", LICENCE_KERAS_RESNET),
    ("resnet152_v1", "resnet/resnet152", "100835be76be38e30d865e96f2aaae62",
     "ee4c566cf9a93f14d82f913c2dc6dd0c", 76.6, 93.1, 224, "caffe", LICENCE_KERAS_RESNET),
    ("resnet50_v2", "resnet/resnet50v2", "3ef43a0b657b3be2300d5770ece849e0",
     "fac2f116257151a9d068a22e544a4917", 76.0, 93.0, 224, "tf", LICENCE_KERAS_UNSTATED),
    ("resnet101_v2", "resnet/resnet101v2", "6343647c601c52e1368623803854d971",
     "c0ed64b8031c3730f411d2eb4eea35b5", 77.2, 93.8, 224, "tf", LICENCE_KERAS_UNSTATED),
    ("resnet152_v2", "resnet/resnet152v2", "a49b44d1979771252814e80f8ec446f9",
     "ed17cf2e0169df9d443503ef94b23b33", 78.0, 94.2, 224, "tf", LICENCE_KERAS_UNSTATED),
    ("inception_v3", "inception_v3/inception_v3", "9a0d58056eeedaa3f26cb7ebd46da564",
     "bcbd6486424b2319ff4ef7d526e38f63", 77.9, 93.7, 299, "tf", LICENCE_KERAS_INCEPTION_V3),
    ("inception_resnet_v2", "inception_resnet_v2/inception_resnet_v2",
     "e693bd0210a403b3192acc6073ad2e96", "d19885ff4a710c122648d3b5c3b684e4", 80.3, 95.3, 299,
     "tf", LICENCE_KERAS_UNSTATED),
]


def _torchvision_entries() -> list[Weights]:
    entries = []
    for model, tag, file_name, top1, top5, crop, resize, prep, recipe in _TORCHVISION:
        url = _TV_BASE + file_name
        entries.append(Weights(
            model=model, tag=tag, source="torchvision", url=url, file_name=file_name,
            hash=_tv_hash(url), hash_algorithm="sha256", preprocessing=prep,
            input_size=(crop, crop, 3), resize_size=resize,
            crop_fraction=round(crop / resize, 4), interpolation="bilinear", top1=top1,
            top5=top5, metrics_source=TORCHVISION_METRICS_SOURCE,
            licence=LICENCE_TORCHVISION,
            recipe=recipe if recipe.startswith("http") else _TV_RECIPE + recipe,
            family_options={"variant": "torchvision"} if model == "alexnet" else {},
            notes=_TV_NOTES.get(model, ""),
        ))
    url = _TV_BASE + "vgg16_features-amdegroot-88682ab5.pth"
    entries.append(Weights(
        model="vgg16", tag="torchvision_features", source="torchvision", url=url,
        file_name=url.rsplit("/", 1)[1], hash=_tv_hash(url), hash_algorithm="sha256",
        # torchvision's mean (0.48235, 0.45882, 0.40784) and std 1/255, in pixel units.
        preprocessing={"mean": (0.48235 * 255, 0.45882 * 255, 0.40784 * 255),
                       "std": (1.0, 1.0, 1.0), "channel_order": "rgb"},
        input_size=(224, 224, 3), resize_size=256, crop_fraction=0.875, num_classes=None,
        labels=None, metrics_source=TORCHVISION_METRICS_SOURCE, licence=LICENCE_TORCHVISION,
        recipe="https://github.com/amdegroot/ssd.pytorch#training-ssd",
        notes="Feature extractor only (ported for SSD): the convolutional layers load; the "
              "classifier in the file holds no usable values and is never loaded.",
    ))
    return entries


def _keras_entries() -> list[Weights]:
    entries = []
    for model, stem, md5_top, md5_notop, top1, top5, size, prep, licence in _KERAS:
        common = dict(
            model=model, source="keras_h5", hash_algorithm="md5", preprocessing=prep,
            input_size=(size, size, 3), resize_size=round(size / 0.875), crop_fraction=0.875,
            interpolation="bilinear", top1=top1, top5=top5,
            metrics_source=KERAS_METRICS_SOURCE, licence=licence,
            recipe="keras.applications",
            notes="Keras publishes no evaluation transform; the 0.875 centre crop is the "
                  "usual convention. Accuracies are rounded to 0.1 by Keras.",
        )
        name = stem.rsplit("/", 1)[1]
        top_file = f"{name}_weights_tf_dim_ordering_tf_kernels.h5"
        notop_file = f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5"
        notop = Weights(tag="keras_notop", url=_KERAS_BASE + stem.rsplit("/", 1)[0] + "/"
                        + notop_file, file_name=notop_file, hash=md5_notop,
                        include_top=False, num_classes=None, **common)
        entries.append(Weights(tag="keras", url=_KERAS_BASE + stem.rsplit("/", 1)[0] + "/"
                               + top_file, file_name=top_file, hash=md5_top, notop=notop,
                               **common))
        entries.append(notop)
    return entries


CATALOG: list[Weights] = _torchvision_entries() + _keras_entries()


def best_entry(entries: list[Weights]) -> Weights | None:
    """The entry ``weights="imagenet"`` picks: the highest top-1 among those with a head.

    Args:
        entries: One model's entries.

    Returns:
        The best, or None when no entry has a classifier.
    """
    usable = [e for e in entries if e.num_classes is not None and e.top1 is not None]
    return max(usable, key=lambda e: e.top1) if usable else None


def entries_by_model() -> dict[str, dict[str, Weights]]:
    """The catalog as ``{model: {tag: Weights}}``, ``imagenet`` first for each model."""
    grouped: dict[str, dict[str, Weights]] = {}
    for entry in CATALOG:
        grouped.setdefault(entry.model, {})[entry.tag] = entry
    result = {}
    for model, tags in grouped.items():
        best = best_entry(list(tags.values()))
        result[model] = ({"imagenet": best} if best is not None else {}) | tags
    return result


_ATTACHED = False


def attach() -> list[str]:
    """Puts every entry on its registered Spec's ``weights`` dict; safe to call again.

    Models of the catalog that are not registered (a family not imported) are skipped and
    returned, so a test can insist that the list is empty.

    Returns:
        The catalog's model names that have no registered spec.
    """
    global _ATTACHED
    from zoo import registry

    registry._ensure_loaded()
    missing = []
    for model, tags in entries_by_model().items():
        spec = registry._REGISTRY.get(model)
        if spec is None:
            missing.append(model)
            continue
        # Catalog tags first, then anything else a user registered by hand.
        others = {t: w for t, w in spec.weights.items() if t not in tags}
        spec.weights.clear()
        spec.weights.update(tags)
        spec.weights.update(others)
    _ATTACHED = not missing
    return missing


def local_entry(model: str, path: str, source: str, **overrides) -> Weights:
    """A Weights entry for a file given by path.

    Args:
        model: The zoo model name.
        path: The file.
        source: Its detected format.
        **overrides: Any other field (preprocessing, num_classes, ...).

    Returns:
        The entry, tagged ``"file"``.
    """
    import os

    base = Weights(model=model, tag="file", source=source, path=os.fspath(path),
                   file_name=os.path.basename(path), num_classes=None, labels=None)
    return replace(base, **overrides)
