"""The registry of architectures: ``Spec``, ``register``, ``build``, ``list_models``, ``describe``.

A family file (``zoo/architectures/<family>.py``) defines a backbone builder and registers
one :class:`Spec` per named model. The builder is a plain function from an already
normalised input tensor and its config to a :class:`Body`; everything every family shares
(input checks, normalisation, the choice between logits, pooled features and feature
maps, the output activation) happens here once.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
from keras import layers

from zoo.layers import Normalize, preprocessing_config


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
    """One registered architecture.

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
        crop_fraction: Centre-crop fraction for evaluation.
        interpolation: Resize interpolation for evaluation.
        preprocessing: Normalisation used when no weights say otherwise.
        num_classes: Classifier size when ``build`` is not given one: 1000 (ImageNet-1k)
            unless the architecture belongs to another data set (LeNet-5: the 10 digits).
            ``describe`` measures params and GMACs with this head.
        weights: Pretrained weight sets by tag, filled in by ``zoo.weights``.
        family_options: Extra options the builder accepts, with their defaults.
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
    weights: dict = field(default_factory=dict)
    family_options: dict = field(default_factory=dict)
    notes: str = ""
    variant: str = ""


_REGISTRY: dict[str, Spec] = {}


def register(spec: Spec) -> Spec:
    """Adds a spec to the registry.

    Args:
        spec: The architecture to register; its name must be new and lowercase.

    Returns:
        The same spec, so that family files can keep a reference.
    """
    if spec.name != spec.name.lower():
        raise ValueError(f"Model names are lowercase; got {spec.name!r}.")
    if spec.name in _REGISTRY:
        raise ValueError(f"Model {spec.name!r} is already registered.")
    _REGISTRY[spec.name] = spec
    return spec


def _twin_aliases() -> dict[str, list[tuple[str, str]]]:
    aliases: dict[str, list[tuple[str, str]]] = {}
    for spec in _REGISTRY.values():
        for library, twin in spec.twins.items():
            aliases.setdefault(twin.lower(), []).append((library, spec.name))
    return aliases


def get_spec(name: str) -> Spec:
    """Returns the registered spec of ``name``.

    Raises:
        ValueError: For an unknown name, with the closest registered names; for another
            library's name of a twin, with the zoo name to use instead.
    """
    _ensure_loaded()
    if not isinstance(name, str):
        raise TypeError(f"A model name is a string; got {name!r} ({type(name).__name__}).")
    if name in _REGISTRY:
        return _REGISTRY[name]
    lines = [f"Unknown model {name!r}."]
    lower = name.lower()
    # Another library's name for a different zoo model (keras' ResNet50 is resnet50_v1).
    others = [(lib, zn) for lib, zn in _twin_aliases().get(lower, []) if zn != lower]
    for library, zoo_name in others:
        lines.append(f"{_qualified(library, _REGISTRY[zoo_name].twins[library])} is "
                     f"{zoo_name!r} here.")
    if lower in _REGISTRY:
        spec = _REGISTRY[lower]
        twin_text = " and ".join(_qualified(lib, tw) for lib, tw in spec.twins.items())
        variant = f", {spec.variant}" if spec.variant else ""
        if others:
            lines.append(f"{lower!r} is {twin_text or 'a different model'}{variant}.")
        else:
            lines.append(f"Model names are lowercase: {lower!r}"
                         + (f" ({twin_text}{variant})." if twin_text else "."))
    if len(lines) == 1:
        close = difflib.get_close_matches(lower, list(_REGISTRY), n=5, cutoff=0.5)
        lines.append(f"Closest: {', '.join(close)}." if close else
                     "See zoo.list_models() or `zoo list` for the registered names.")
    raise ValueError(" ".join(lines))


def _qualified(library: str, twin: str) -> str:
    prefix = {"keras": "keras.applications.", "torchvision": "torchvision.models."}
    return prefix.get(library, f"{library}:") + twin


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Lists registered model names.

    Args:
        pattern: An fnmatch pattern such as ``"resnet*"``.
        pretrained: Only models that have at least one pretrained weight set.

    Returns:
        Sorted names, in natural order (``resnet18`` before ``resnet101``).
    """
    _ensure_loaded()
    names = [n for n, s in _REGISTRY.items()
             if fnmatch.fnmatchcase(n, pattern) and (s.weights or not pretrained)]
    return sorted(names, key=_natural_key)


def _natural_key(name: str):
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _ensure_loaded() -> None:
    # Importing the families registers them; done lazily so `import zoo.registry` is cheap.
    import zoo.architectures  # noqa: F401


def _resolve_input_shape(spec: Spec, input_shape: Sequence[int] | None) -> tuple[int, int, int]:
    if input_shape is None:
        return tuple(spec.input_size)
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(
            f"input_shape for {spec.name!r} must be (height, width, channels), channels last; "
            f"got {input_shape!r}.")
    height, width, channels = shape
    if channels is None or channels < 1:
        raise ValueError(f"input_shape {input_shape!r} for {spec.name!r} needs a channel count.")
    min_h, min_w = spec.min_input_size
    if (height is not None and height < min_h) or (width is not None and width < min_w):
        raise ValueError(
            f"input_shape {shape} is too small for {spec.name!r}: its minimum is "
            f"{min_h}x{min_w} (height x width). Resize the images or pick another model.")
    return shape


def build(
    name: str,
    *,
    weights: str | None = None,
    num_classes: int | None = None,
    include_top: bool = True,
    input_shape: Sequence[int] | None = None,
    pooling: str | None = None,
    classifier_activation: str | None = "softmax",
    features: bool = False,
    dropout: float | None = None,
    preprocessing: str | dict | None = None,
    **family_options,
) -> keras.Model:
    """Builds a registered model that takes raw RGB pixels in [0, 255].

    Args:
        name: A registered name, see :func:`list_models`.
        weights: None (random), a catalog tag such as ``"imagenet"``, or a file path.
        num_classes: Size of the classifier; None is the spec's default
            (``describe(name)["num_classes"]``: 1000 for the ImageNet models, 10 for LeNet-5).
        include_top: Whether to add the classifier.
        input_shape: ``(height, width, channels)``; defaults to the spec's input size.
            Any channel count works (1 for grayscale).
        pooling: With ``include_top=False``: ``"avg"``, ``"max"`` or None (feature map).
        classifier_activation: Output activation; None returns logits.
        features: Return a model with one output per stage (shallow to deep) instead.
        dropout: Dropout before the classifier, for families that have it (None keeps the
            family's default).
        preprocessing: Overrides the normalisation preset (``"torch"``, ``"tf"``,
            ``"caffe"`` or a dict); by default it is the weights' own, else torch mean/std.
        **family_options: Options of the family, see ``describe(name)["family_options"]``.

    Returns:
        A functional ``keras.Model`` named after ``name``.
    """
    spec = get_spec(name)
    unknown = set(family_options) - set(spec.family_options)
    if unknown:
        accepted = ", ".join(sorted(spec.family_options)) or "none"
        raise TypeError(f"{name!r} got unknown option(s) {sorted(unknown)}; "
                        f"its family options are: {accepted}.")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be 'avg', 'max' or None; got {pooling!r}.")
    if num_classes is None:
        num_classes = spec.num_classes
    if include_top and num_classes < 1:
        raise ValueError(f"num_classes must be at least 1; got {num_classes!r}.")
    shape = _resolve_input_shape(spec, input_shape)

    weight_set = None
    if weights is not None:
        from zoo import weights as weights_module

        weight_set = weights_module.resolve(spec, weights)
    if preprocessing is None:
        preprocessing = (weight_set.preprocessing if weight_set is not None
                         else spec.preprocessing)
    norm = preprocessing_config(preprocessing)

    options = {**spec.family_options, **family_options}
    if weight_set is not None:
        options.update(getattr(weight_set, "family_options", {}) or {})

    inputs = keras.Input(shape, name="pixels")
    x = Normalize(**norm, name="normalize")(inputs)
    body = spec.builder(x, **spec.config, **options)

    if features:
        outputs = list(body.features)
    elif include_top:
        logits = body.top(num_classes, dropout)
        outputs = _activate(logits, classifier_activation)
    else:
        outputs = body.features[-1]
        if pooling == "avg":
            outputs = layers.GlobalAveragePooling2D(name=body.pooled_name)(outputs)
        elif pooling == "max":
            outputs = layers.GlobalMaxPooling2D(name="max_pool")(outputs)
    model = keras.Model(inputs, outputs, name=name)

    if weight_set is not None:
        from zoo import weights as weights_module

        weights_module.load_into(model, spec, weight_set, include_top=include_top and
                                 not features, num_classes=num_classes)
    return model


def _activate(logits, activation: str | None):
    # The output is float32 even under a mixed-precision policy: softmax in bfloat16 loses
    # the small probabilities and the loss needs them.
    def one(t, suffix=""):
        return layers.Activation(activation or "linear", dtype="float32",
                                 name=f"output{suffix}")(t)

    if isinstance(logits, (list, tuple)):
        return [one(t, "" if i == 0 else f"_aux{i}") for i, t in enumerate(logits)]
    return one(logits)


def count_params(model: keras.Model) -> int:
    """Counts learnable parameters the way torchvision does (no batch-norm statistics).

    Args:
        model: Any Keras model.

    Returns:
        The number of weights minus batch-norm moving means and variances.
    """
    statistics = 0
    for layer in _all_layers(model):
        if isinstance(layer, layers.BatchNormalization) and layer.built:
            statistics += int(layer.moving_mean.shape[0]) * 2
    return model.count_params() - statistics


def _all_layers(model: keras.Model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


def count_macs(model: keras.Model) -> int:
    """Counts multiply-accumulates of one forward pass of one image.

    Counts convolutions and dense layers, as torchvision's table does; pooling,
    normalisation and activations are left out.

    Args:
        model: A built functional model with a static input size.

    Returns:
        The MAC count.
    """
    macs = 0
    for layer in _all_layers(model):
        if isinstance(layer, layers.Conv2D):
            _, out_h, out_w, out_c = layer.output.shape
            kh, kw, in_per_group, _ = layer.kernel.shape
            macs += out_h * out_w * out_c * kh * kw * in_per_group
        elif isinstance(layer, layers.Dense):
            units_in, units_out = layer.kernel.shape
            # A Dense on a feature map (rare here) is applied at every position.
            positions = 1
            for dim in layer.output.shape[1:-1]:
                positions *= dim
            macs += units_in * units_out * positions
    return int(macs)


@functools.cache
def _measure(name: str) -> tuple[int, int, int]:
    model = build(name)
    result = (count_params(model), model.count_params(), count_macs(model))
    del model
    keras.backend.clear_session()
    return result


def describe(name: str, *, measure: bool = True) -> dict:
    """Describes a model: family, paper, sizes, twins, weights, and measured params and GMACs.

    Args:
        name: A registered name.
        measure: Build the model to count params and GMACs (a few seconds for the largest).

    Returns:
        A plain dict; ``num_classes`` is the default classifier size; ``params``
        excludes batch-norm statistics (torchvision's count), ``keras_params`` is
        ``model.count_params()``; both and ``gmacs`` are at ``input_size`` and
        ``num_classes``.
    """
    spec = get_spec(name)
    info = {
        "name": spec.name,
        "family": spec.family,
        "paper": spec.paper,
        "year": spec.year,
        "input_size": tuple(spec.input_size),
        "min_input_size": tuple(spec.min_input_size),
        "num_classes": spec.num_classes,
        "crop_fraction": spec.crop_fraction,
        "interpolation": spec.interpolation,
        "preprocessing": spec.preprocessing,
        "twins": dict(spec.twins),
        "twin_params": dict(spec.twin_params),
        "published_gmacs": spec.published_gmacs,
        "gmacs_source": spec.gmacs_source,
        "family_options": dict(spec.family_options),
        "notes": spec.notes,
        "weights": {tag: _weights_dict(w) for tag, w in spec.weights.items()},
    }
    if measure:
        params, keras_params, macs = _measure(name)
        info.update(params=params, keras_params=keras_params, gmacs=round(macs / 1e9, 3))
    return info


def _weights_dict(weight_set) -> dict:
    as_dict = getattr(weight_set, "as_dict", None)
    return as_dict() if as_dict else dict(vars(weight_set))
