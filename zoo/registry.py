"""The registry: what exists. ``Spec``, ``Weights``, ``Geometry``, ``register``.

A leaf: it imports nothing else of zoo. Family files (``zoo/architectures/<family>.py``)
declare their architectures as :class:`Spec` entries, each with its pretrained
:class:`Weights` sets, its torchvision key rule and its recipe defaults, and call
:func:`register`. Building, describing and listing models is :mod:`zoo.models`, which
imports every family; the rule "which eval geometry for this model and these weights"
(:func:`eval_geometry`, caller > weights > spec) is here, as data about data.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

# tf.image.resize's methods.
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area", "lanczos3", "lanczos5",
                  "gaussian", "mitchellcubic")


@dataclass(frozen=True)
class Geometry:
    """How images become model inputs at evaluation: size, centre crop, interpolation.

    Attributes:
        image_size: ``(height, width)`` of the model input.
        crop_fraction: The centre crop keeps this fraction of the shorter side, resized
            to ``max(image_size) / crop_fraction`` first (timm's rule).
        interpolation: A ``tf.image.resize`` method.
        channels: 3 (RGB) or 1 (grayscale).
    """

    image_size: tuple[int, int] = (224, 224)
    crop_fraction: float = 0.875
    interpolation: str = "bilinear"
    channels: int = 3

    def __post_init__(self):
        size = self.image_size
        if isinstance(size, int):
            size = (size, size)
        try:
            size = tuple(int(s) for s in size)
        except (TypeError, ValueError):
            size = ()
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"image_size is (height, width) or one int; got "
                             f"{self.image_size!r}.")
        if not isinstance(self.crop_fraction, (int, float)) or not 0 < self.crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1]; got {self.crop_fraction!r}.")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"Unknown interpolation {self.interpolation!r}; use one of "
                             f"{', '.join(INTERPOLATIONS)}.")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3; got {self.channels!r}.")
        object.__setattr__(self, "image_size", size)
        object.__setattr__(self, "crop_fraction", float(self.crop_fraction))
        object.__setattr__(self, "channels", int(self.channels))

    def as_dict(self) -> dict:
        """Plain data for ``run.json`` and manifests."""
        return {"image_size": list(self.image_size), "crop_fraction": self.crop_fraction,
                "interpolation": self.interpolation, "channels": self.channels}

    @classmethod
    def from_dict(cls, data: Mapping) -> Geometry:
        """The inverse of :meth:`as_dict`; unknown keys are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if k == "image_size" else v)
                      for k, v in data.items() if k in known})

    def replace(self, **changes) -> Geometry:
        """A copy with some fields changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class TorchvisionRule:
    """How a torchvision state dict's keys map onto a family's layers.

    Attributes:
        layer_name: Module path (``layer1.0.conv1``) -> zoo layer name, or None when the
            family has no such layer.
        head: Module-path prefixes of the main classifier.
        aux: Module-path prefixes of auxiliary heads.
        bn_eps: torchvision's batch-norm epsilon for the architecture (a state dict does
            not store it, so the model's is checked against it).
    """

    layer_name: Callable[[str], str | None]
    head: tuple[str, ...]
    aux: tuple[str, ...] = ()
    bn_eps: float = 1e-5


@dataclass(frozen=True)
class TimmRule:
    """How a timm architecture's state dict maps onto a zoo model's layers.

    timm names its modules as a PyTorch module tree (``layer1.0.conv1``); one function
    from a zoo layer name to that path serves both ways, loading a timm checkpoint and
    writing one.

    Attributes:
        architecture: timm's name (``"resnet50"``, ``"inception_v3"``).
        module_of: zoo layer name -> timm module path, or None for a layer timm lacks.
        head: Module paths of the main classifier (timm's ``pretrained_cfg["classifier"]``).
        bn_eps: The batch-norm epsilon timm builds the architecture with.
        conv_dense: Module paths that timm holds as convolutions where zoo has dense layers
            (VGG's ``pre_logits``: a 7x7 convolution on the 7x7 map is a dense layer on its
            flatten).
    """

    architecture: str
    module_of: Callable[[str], str | None]
    head: tuple[str, ...]
    bn_eps: float = 1e-5
    conv_dense: tuple[str, ...] = ()


@dataclass(frozen=True)
class Weights:
    """One pretrained weight file and everything needed to use it right.

    Geometry fields left None (a local file) fall back to the architecture's defaults.

    Attributes:
        model: The zoo model the file is for (filled in by :func:`register`).
        tag: Its tag (``"torchvision_v2"``), or ``"file"`` for a local file given by path.
        source: File format: ``"keras_h5"`` (keras.applications' legacy HDF5),
            ``"torchvision"`` (a PyTorch state dict), ``"safetensors"``, ``"keras"``
            (``.keras``) or ``"keras_weights"`` (Keras 3 ``.weights.h5``).
        url: Where the publisher serves it (None for a local file).
        file_name: The publisher's file name, also the name in the cache.
        hash: The publisher's hash of the file (hex): a full md5, or a sha256 or a prefix.
        hash_algorithm: ``"md5"`` or ``"sha256"``.
        preprocessing: What the network was trained on: a preset of
            :data:`zoo.layers.PREPROCESSING` or a ``{mean, std, channel_order}`` dict in
            pixel units; the model's ``Normalize`` layer is set from it.
        input_size: Evaluation input ``(height, width, channels)``.
        resize_size: Shorter side the image is resized to before the centre crop.
        crop_fraction: ``input_size / resize_size``.
        interpolation: Resize interpolation of the publisher's evaluation.
        num_classes: Classifier size in the file; None when it has no usable classifier.
        labels: Name of the label set (``"imagenet-1k"``, see :mod:`zoo.data`).
        label_names: The class names themselves, when the file carries its own (a timm
            checkpoint fine-tuned on other classes); they take precedence over ``labels``.
        top1: The publisher's ImageNet-1k validation top-1 accuracy in percent.
        top5: The same for top-5.
        metrics_source: Where those accuracies are published.
        licence: Licence of the weights as the publisher states it.
        recipe: How they were trained, as a link or a few words.
        include_top: Whether the file holds the classifier.
        notop: The same weights without the classifier (keras.applications' ``_notop``
            file), fetched instead when a model is built with ``include_top=False``.
        family_options: Builder options the weights need (an architecture variant); a
            caller asking for another value gets an error.
        path: For a local file: its path.
        notes: Anything else a user should know.
        hub_id: For timm's sets: the Hugging Face Hub repository (``"timm/resnet50.a1_in1k"``).
        revision: The Hub revision (a commit, branch or tag) the files come from.
    """

    model: str = ""
    tag: str = ""
    source: str = ""
    url: str | None = None
    file_name: str | None = None
    hash: str | None = None
    hash_algorithm: str | None = None
    preprocessing: str | dict | None = "torch"
    input_size: tuple[int, int, int] | None = None
    resize_size: int | None = None
    crop_fraction: float | None = None
    interpolation: str | None = None
    num_classes: int | None = 1000
    labels: str | None = "imagenet-1k"
    label_names: tuple[str, ...] | None = None
    top1: float | None = None
    top5: float | None = None
    metrics_source: str = ""
    licence: str = ""
    recipe: str = ""
    include_top: bool = True
    notop: Weights | None = None
    family_options: Mapping = field(default_factory=dict)
    path: str | None = None
    notes: str = ""
    hub_id: str | None = None
    revision: str | None = None

    def __hash__(self) -> int:
        # The generated hash would fail on the family_options dict.
        return hash((self.model, self.tag, self.file_name, self.path))

    def as_dict(self) -> dict:
        """The entry as plain data, for ``zoo.describe`` and manifests."""
        data = asdict(replace(self, notop=None))
        data["notop"] = self.notop.tag if self.notop is not None else None
        data["family_options"] = dict(self.family_options)
        data["input_size"] = list(self.input_size) if self.input_size else None
        return data

    def class_names(self) -> list[str] | None:
        """The class names of the file's classifier outputs, in order, if it has one."""
        if self.label_names is not None:
            return list(self.label_names)
        if self.labels is None or self.num_classes is None:
            return None
        from zoo.data import class_names

        return class_names(self.labels)


@dataclass
class Body:
    """What a family builder returns.

    Attributes:
        features: Feature maps, one per stage, shallow to deep; the last one feeds the head.
        strides: The stride of each feature map relative to the input.
        top: Builds the classifier from ``(num_classes, dropout)`` and returns its logits;
            a list of logits when the family has auxiliary heads (main output first).
        pooled_name: Name of the global pooling layer used when ``include_top=False``.
    """

    features: list
    strides: list[int]
    top: Callable[[int, float | None], Any]
    pooled_name: str = "avg_pool"


@dataclass
class Spec:
    """One registered architecture: its defaults, its twins and its weight sets.

    Attributes:
        name: The zoo name (lowercase).
        family: Family name, also the module in ``zoo.architectures``.
        builder: ``builder(x, **config, **family_options) -> Body``.
        config: Keyword arguments that define this model within its family.
        paper: Citation of the paper that introduced the architecture.
        year: Year of the paper.
        input_size: Default input shape ``(height, width, channels)``.
        min_input_size: Smallest ``(height, width)`` the architecture accepts.
        twins: The same network in other libraries, ``{"torchvision": "resnet50"}``.
        twin_params: The twins' published parameter counts at 1000 classes. torchvision
            counts ``parameters()`` (no batch-norm statistics); Keras counts
            ``count_params()`` (batch-norm moving statistics included).
        published_gmacs: Multiply-accumulates of the twin at ``input_size``, in billions,
            from the publisher's table (torchvision's "GFLOPS" column counts MACs), with
            its source in ``gmacs_source``.
        gmacs_source: Where ``published_gmacs`` comes from.
        crop_fraction: Centre-crop fraction for evaluation when no weights say otherwise.
        interpolation: Resize interpolation for evaluation when no weights say otherwise.
        preprocessing: Normalisation used when no weights say otherwise.
        num_classes: Classifier size when ``build`` is not given one: 1000 (ImageNet-1k)
            unless the architecture belongs to another data set (LeNet-5: the 10 digits).
            ``describe`` measures params and GMACs with this head.
        weights: Pretrained weight sets: a list of :class:`Weights` in the family file,
            made ``{tag: Weights}`` by :func:`register`, ``"imagenet"`` first (the most
            accurate set with a classifier).
        family_options: Extra options the builder accepts, with their defaults.
        torchvision_rule: How the torchvision twin's state dicts map onto the layers.
        timm_rule: How the timm twin's state dicts map onto the layers (timm checkpoints
            load into the model, and the model exports as one).
        recipe_defaults: The fine-tuning recipe's departures from its defaults for this
            architecture (fields of ``zoo.Recipe``).
        notes: What a teacher should know about how this model differs from the paper.
        variant: A few words that tell this model from its namesakes ("v1.5: stride in
            the 3x3 convolution").
    """

    name: str
    family: str
    builder: Callable[..., Body]
    config: dict
    paper: str
    year: int
    input_size: tuple[int, int, int] = (224, 224, 3)
    min_input_size: tuple[int, int] = (32, 32)
    twins: dict[str, str] = field(default_factory=dict)
    twin_params: dict[str, int] = field(default_factory=dict)
    published_gmacs: float | None = None
    gmacs_source: str = ""
    crop_fraction: float = 0.875
    interpolation: str = "bilinear"
    preprocessing: str | dict = "torch"
    num_classes: int = 1000
    weights: Any = field(default_factory=dict)
    family_options: dict = field(default_factory=dict)
    torchvision_rule: TorchvisionRule | None = None
    timm_rule: TimmRule | None = None
    recipe_defaults: dict = field(default_factory=dict)
    notes: str = ""
    variant: str = ""


_REGISTRY: dict[str, Spec] = {}


def register(spec: Spec) -> Spec:
    """Adds a spec to the registry, its weight sets keyed by tag.

    Args:
        spec: The architecture to register; its name must be new and lowercase.

    Returns:
        The same spec, so that family files can keep a reference.

    Raises:
        ValueError: For a name that is not lowercase or already registered, or a weight
            set that names another model or repeats a tag.
    """
    if spec.name != spec.name.lower():
        raise ValueError(f"Model names are lowercase; got {spec.name!r}.")
    if spec.name in _REGISTRY:
        raise ValueError(f"Model {spec.name!r} is already registered.")
    spec.weights = _by_tag(spec.name, spec.weights)
    _REGISTRY[spec.name] = spec
    return spec


def _by_tag(model: str, entries) -> dict[str, Weights]:
    if isinstance(entries, Mapping):
        entries = list(entries.values())
    tags: dict[str, Weights] = {}
    for entry in entries:
        if entry.model not in ("", model):
            raise ValueError(f"Weights {entry.model}:{entry.tag} listed under {model!r}.")
        if entry.tag in tags:
            raise ValueError(f"{model!r} lists the weights tag {entry.tag!r} twice.")
        notop = replace(entry.notop, model=model) if entry.notop is not None else None
        tags[entry.tag] = replace(entry, model=model, notop=notop)
    # A notop entry listed on its own is the same object as its parent's.
    for entry in list(tags.values()):
        if entry.notop is not None and entry.notop.tag in tags:
            tags[entry.notop.tag] = entry.notop
    best = best_entry(list(tags.values()))
    return ({"imagenet": best} if best is not None else {}) | tags


def best_entry(entries: Sequence[Weights]) -> Weights | None:
    """The entry ``weights="imagenet"`` picks: the highest top-1 among those with a head.

    Only pinned entries (with the publisher's hash) qualify: a Hub file without a known hash
    can change under the same name, so it is chosen by its own tag, never by default.

    Args:
        entries: One model's entries.

    Returns:
        The best, or None when no entry has a classifier.
    """
    usable = [e for e in entries if e.num_classes is not None and e.top1 is not None
              and e.hash is not None]
    return max(usable, key=lambda e: e.top1) if usable else None


def registered() -> Mapping[str, Spec]:
    """Every registered spec by name (read-only; :mod:`zoo.models` loads the families)."""
    return types.MappingProxyType(_REGISTRY)


def eval_geometry(spec: Spec | None, weight_set: Weights | None = None, *,
                  image_size: int | Sequence[int] | None = None,
                  crop_fraction: float | None = None, interpolation: str | None = None,
                  channels: int | None = None) -> Geometry:
    """The evaluation geometry by precedence: the caller, then the weights, then the spec.

    Args:
        spec: The architecture, or None for ImageNet's usual 224x224 / 0.875 / bilinear.
        weight_set: The weights the model carries, if any; what they leave None (a local
            file) comes from the spec.
        image_size: ``(height, width)`` or one int, given by the caller.
        crop_fraction: Given by the caller.
        interpolation: Given by the caller.
        channels: Given by the caller (1 or 3).

    Returns:
        The geometry, validated.
    """
    geometry = Geometry()
    if spec is not None:
        geometry = Geometry(tuple(spec.input_size[:2]), spec.crop_fraction,
                            spec.interpolation, int(spec.input_size[2]))
    if weight_set is not None:
        size = weight_set.input_size
        geometry = geometry.replace(image_size=tuple(size[:2]) if size else None,
                                    crop_fraction=weight_set.crop_fraction,
                                    interpolation=weight_set.interpolation)
    return geometry.replace(image_size=image_size, crop_fraction=crop_fraction,
                            interpolation=interpolation, channels=channels)

