"""The models: build, describe and list every registered architecture.

Importing this module imports every family (``zoo.architectures``), which registers them;
:mod:`zoo.registry` below it holds the data and imports nothing back.

Example:
    >>> import zoo
    >>> model = zoo.build("resnet50", weights="imagenet")
    >>> zoo.geometry("resnet50", "imagenet")     # torchvision's V2 eval transform
    Geometry(image_size=(224, 224), crop_fraction=0.9655, interpolation='bilinear', channels=3)
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import re
from collections.abc import Sequence

import keras
from keras import layers

import zoo.architectures  # noqa: F401  (registers every family)
from zoo import weights as weights_module
from zoo.layers import Normalize, preprocessing_config
from zoo.registry import Geometry, Spec, Weights, best_entry, eval_geometry, registered


def get_spec(name: str) -> Spec:
    """Returns the registered spec of ``name``.

    Raises:
        ValueError: For an unknown name, with the closest registered names; for another
            library's name of a twin, with the zoo name to use instead.
    """
    if not isinstance(name, str):
        raise TypeError(f"A model name is a string; got {name!r} ({type(name).__name__}).")
    specs = registered()
    if name in specs:
        return specs[name]
    raise ValueError(" ".join(_unknown_name(name, specs)))


def _unknown_name(name: str, specs) -> list[str]:
    lines = [f"Unknown model {name!r}."]
    lower = name.lower()
    # Another library's name for a different zoo model (keras' ResNet50 is resnet50_v1).
    others = [(lib, zn) for lib, zn in _twin_aliases(specs).get(lower, []) if zn != lower]
    for library, zoo_name in others:
        lines.append(f"{_qualified(library, specs[zoo_name].twins[library])} is "
                     f"{zoo_name!r} here.")
    if lower in specs:
        spec = specs[lower]
        twin_text = " and ".join(_qualified(lib, tw) for lib, tw in spec.twins.items())
        variant = f", {spec.variant}" if spec.variant else ""
        if others:
            lines.append(f"{lower!r} is {twin_text or 'a different model'}{variant}.")
        else:
            lines.append(f"Model names are lowercase: {lower!r}"
                         + (f" ({twin_text}{variant})." if twin_text else "."))
    if len(lines) == 1:
        close = difflib.get_close_matches(lower, list(specs), n=5, cutoff=0.5)
        lines.append(f"Closest: {', '.join(close)}." if close else
                     "See zoo.list_models() or `zoo list` for the registered names.")
    return lines


def _twin_aliases(specs) -> dict[str, list[tuple[str, str]]]:
    aliases: dict[str, list[tuple[str, str]]] = {}
    for spec in specs.values():
        for library, twin in spec.twins.items():
            aliases.setdefault(twin.lower(), []).append((library, spec.name))
    return aliases


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
    names = [n for n, s in registered().items()
             if fnmatch.fnmatchcase(n, pattern) and (s.weights or not pretrained)]
    return sorted(names, key=_natural_key)


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def geometry(model: str | None = None, weights: str | Weights | None = None, *,
             image_size: int | Sequence[int] | None = None, crop_fraction: float | None = None,
             interpolation: str | None = None, channels: int | None = None) -> Geometry:
    """Which input size, centre crop and interpolation a model with these weights uses.

    Precedence: what the caller gives, then the weight set's own evaluation transform (as
    torchvision's ``Weights.transforms``), then the architecture's defaults. The pipelines,
    the recipe, evaluation and export all ask here, and record what they used.

    Args:
        model: A registered name, or None for ImageNet's usual 224x224 / 0.875 / bilinear.
        weights: None, a catalog tag (``"imagenet"``), a weights file, or a Weights entry.
        image_size: ``(height, width)`` or one int.
        crop_fraction: The eval centre-crop fraction, in (0, 1].
        interpolation: A ``tf.image.resize`` method.
        channels: 1 or 3.

    Returns:
        The :class:`~zoo.registry.Geometry`.

    Raises:
        ValueError: For weights without a model, or an invalid value (naming it).
    """
    spec = get_spec(model) if model is not None else None
    weight_set = None
    if weights is not None:
        if spec is None:
            raise ValueError(f"weights={weights!r} needs a model name: weights belong to one "
                             "architecture.")
        weight_set = weights_module.resolve(spec, weights)
    return eval_geometry(spec, weight_set, image_size=image_size,
                         crop_fraction=crop_fraction, interpolation=interpolation,
                         channels=channels)


def catalog() -> list[Weights]:
    """Every registered weight file, in registration order (tag aliases listed once)."""
    out: list[Weights] = []
    for spec in registered().values():
        for entry in spec.weights.values():
            if entry not in out:
                out.append(entry)
    return out


def weight_entries(pattern: str = "*", tag: str | None = "imagenet") -> list[Weights]:
    """Weight sets of the models matching ``pattern`` (what ``zoo pull`` fetches).

    Args:
        pattern: fnmatch pattern of zoo model names.
        tag: One tag, or None (or ``"all"``) for every entry of those models.

    Returns:
        Entries, aliases listed once, in catalog order.

    Raises:
        ValueError: If no model with weights matches, or a model lacks the tag.
    """
    by_model: dict[str, dict[str, Weights]] = {}
    for entry in catalog():
        by_model.setdefault(entry.model, {})[entry.tag] = entry
    for model, tags in by_model.items():
        best = best_entry(list(tags.values()))
        by_model[model] = ({"imagenet": best} if best is not None else {}) | tags
    models = [m for m in by_model if fnmatch.fnmatchcase(m, pattern)]
    if not models:
        raise ValueError(f"No model with pretrained weights matches {pattern!r}; see "
                         "`zoo list --pretrained`.")
    out: list[Weights] = []
    for model in models:
        tags = by_model[model]
        if tag in (None, "all"):
            chosen = list(tags.values())
        elif tag in tags:
            chosen = [tags[tag]]
        elif len(models) == 1:
            raise ValueError(f"{model!r} has no weights tagged {tag!r}; its tags: "
                             f"{', '.join(tags)}.")
        else:
            chosen = []
        out.extend(entry for entry in chosen if entry not in out)
    return out


def build(
    name: str,
    *,
    weights: str | Weights | None = None,
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
        weights: None (random), a catalog tag such as ``"imagenet"``, a file path, a timm
            checkpoint folder (``config.json`` and ``model.safetensors``) or a timm
            checkpoint on the Hugging Face Hub (``"hf://timm/resnet50.a1_in1k"``,
            ``"hf://owner/repo@revision"``).
        num_classes: Size of the classifier; None is the weights' class count, else the
            spec's default (``describe(name)["num_classes"]``: 1000 for the ImageNet
            models, 10 for LeNet-5). Another count than the weights' starts a new head.
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
            An option the weights need another value of is an error.

    Returns:
        A functional ``keras.Model`` named after ``name``.
    """
    spec = get_spec(name)
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be 'avg', 'max' or None; got {pooling!r}.")
    shape = _input_shape(spec, input_shape)
    weight_set = weights_module.resolve(spec, weights) if weights is not None else None
    if num_classes is None:
        # A checkpoint fine-tuned on 37 classes builds with 37, unless asked otherwise.
        num_classes = (weight_set.num_classes if weight_set is not None and
                       weight_set.num_classes else spec.num_classes)
    if include_top and num_classes < 1:
        raise ValueError(f"num_classes must be at least 1; got {num_classes!r}.")
    options = _family_options(spec, family_options, weight_set)
    if preprocessing is None:
        preprocessing = (weight_set.preprocessing if weight_set is not None
                         else spec.preprocessing)

    inputs = keras.Input(shape, name="pixels")
    x = Normalize(**preprocessing_config(preprocessing), name="normalize")(inputs)
    body = spec.builder(x, **spec.config, **options)
    outputs = _outputs(body, features=features, include_top=include_top,
                       num_classes=num_classes, dropout=dropout, pooling=pooling,
                       activation=classifier_activation)
    model = keras.Model(inputs, outputs, name=name)
    if weight_set is not None:
        weights_module.load_into(model, spec, weight_set, include_top=include_top and
                                 not features, num_classes=num_classes)
    return model


def _family_options(spec: Spec, given: dict, weight_set: Weights | None) -> dict:
    """The builder's options: the spec's defaults, the weights' needs, the caller's."""
    unknown = set(given) - set(spec.family_options)
    if unknown:
        accepted = ", ".join(sorted(spec.family_options)) or "none"
        raise TypeError(f"{spec.name!r} got unknown option(s) {sorted(unknown)}; "
                        f"its family options are: {accepted}.")
    needed = dict(weight_set.family_options) if weight_set is not None else {}
    for key, value in given.items():
        if key in needed and needed[key] != value:
            raise ValueError(
                f"{spec.name!r} with {key}={value!r} cannot take the weights "
                f"{weight_set.model}:{weight_set.tag}, which are for {key}={needed[key]!r}. "
                f"Drop {key}= to use them, or build without weights.")
    return {**spec.family_options, **needed, **given}


def _input_shape(spec: Spec, input_shape: Sequence[int] | None) -> tuple[int, int, int]:
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


def _outputs(body, *, features: bool, include_top: bool, num_classes: int,
             dropout: float | None, pooling: str | None, activation: str | None):
    """The one head every family shares: stage outputs, classifier, or pooled features."""
    if features:
        return list(body.features)
    if include_top:
        return _activate(body.top(num_classes, dropout), activation)
    outputs = body.features[-1]
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name=body.pooled_name)(outputs)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")(outputs)
    return outputs


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
        A plain dict; ``num_classes`` is the default classifier size; ``crop_fraction``
        and ``interpolation`` are the architecture's defaults (each weight set has its
        own); ``params`` excludes batch-norm statistics (torchvision's count),
        ``keras_params`` is ``model.count_params()``; both and ``gmacs`` are at
        ``input_size`` and ``num_classes``.
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
        "recipe_defaults": dict(spec.recipe_defaults),
        "notes": spec.notes,
        "weights": {tag: w.as_dict() for tag, w in spec.weights.items()},
    }
    if measure:
        params, keras_params, macs = _measure(name)
        info.update(params=params, keras_params=keras_params, gmacs=round(macs / 1e9, 3))
    return info
