"""From the arrays of a weight file to the layers of a zoo model.

Two kinds of sources:

* **torchvision state dicts** (``.pth``/``.pt``/``.safetensors`` with torch keys): each
  family's rule (``Spec.torchvision_rule``, declared in the family file) maps a module
  path (``layer1.0.conv1``) to a layer name (``conv2_block1_1_conv``).
  Layouts are converted: convolution kernels OIHW -> HWIO, dense kernels (out, in) ->
  (in, out), and the first dense layer after a flatten of a feature map has its inputs
  re-ordered from PyTorch's (C, H, W) flatten to Keras' (H, W, C). Batch norm ``weight,
  bias, running_mean, running_var`` become ``gamma, beta, moving_mean, moving_variance``;
  epsilon is not in a state dict, so the model's is checked against the publisher's.
* **Keras files** (keras.applications' legacy h5, ``.weights.h5``, ``.keras``, and
  safetensors with ``layer/variable`` keys): matched by layer name when the names agree
  (everything zoo writes, and keras.applications' VGG and ResNet files), otherwise by the
  order of the layers that have weights, which is how Keras itself loads legacy files and
  which the Keras twins reproduce.

Then, for either kind, one plan is made and checked before anything is assigned: a file
that does not fit raises an error naming the first layer that does not match, with both
shapes, and the model is left as it was. The classifier is skipped when its class count
differs from the model's, heads the model does not have are ignored, and a first
convolution with other than three input channels is adapted as timm does.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from zoo.registry import TorchvisionRule, registered

logger = logging.getLogger("zoo.weights")


class WeightsMismatchError(ValueError):
    """A weight file does not fit the model it is loaded into."""


def torchvision_rule(spec) -> TorchvisionRule:
    """The state-dict key rule of a spec's torchvision twin (declared in its family file).

    Args:
        spec: A registered spec.

    Returns:
        Its rule.

    Raises:
        WeightsMismatchError: If the model has no torchvision twin.
    """
    if spec.torchvision_rule is not None:
        return spec.torchvision_rule
    tv_models = sorted(n for n, s in registered().items() if s.torchvision_rule is not None)
    raise WeightsMismatchError(
        f"{spec.name!r} has no torchvision twin, so a torchvision state dict cannot load "
        f"into it. Models that take torchvision state dicts: {', '.join(tv_models)}.")


def _has_prefix(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + ".") for p in prefixes)


# --------------------------------------------------------------------------------------
# The model's side: which layers are heads, classifiers, the first convolution
# --------------------------------------------------------------------------------------


def _producer(tensor):
    history = getattr(tensor, "_keras_history", None)
    return history.operation if history is not None else None


def _inputs_of(layer) -> list:
    tensors = []
    for node in getattr(layer, "_inbound_nodes", []):
        tensors.extend(node.input_tensors)
    return tensors


def _ancestors(tensor) -> set[str]:
    seen: set[str] = set()
    stack = [_producer(tensor)]
    while stack:
        layer = stack.pop()
        if layer is None or layer.name in seen:
            continue
        seen.add(layer.name)
        stack.extend(_producer(t) for t in _inputs_of(layer))
    return seen


def _nearest_weighted(tensor):
    # The classifier is the first layer with weights above an output (activations,
    # dropout and casts have none).
    layer = _producer(tensor)
    while layer is not None and not layer.weights:
        inputs = _inputs_of(layer)
        if len(inputs) != 1:
            return None
        layer = _producer(inputs[0])
    return layer


@dataclass
class ModelLayout:
    """What the loader needs to know about a model's layers.

    Attributes:
        layers: Layers with weights, in ``model.layers`` order (Keras' legacy loading order).
        classifiers: Names of the dense layers that produce the outputs' logits.
        optional: Names of layers that may be missing from a file and stay random (the
            classifier's dense layers and auxiliary heads), with a warning.
        aux: Names of layers that belong only to auxiliary heads.
        first_conv: Name of the first convolution, which may be adapted to other channels.
    """

    layers: list
    classifiers: set[str] = field(default_factory=set)
    optional: set[str] = field(default_factory=set)
    aux: set[str] = field(default_factory=set)
    first_conv: str | None = None

    @classmethod
    def of(cls, model, *, include_top: bool) -> ModelLayout:
        from keras import layers as keras_layers

        weighted = [layer for layer in model.layers if layer.weights]
        layout = cls(layers=weighted)
        convs = [layer for layer in weighted if isinstance(layer, keras_layers.Conv2D)]
        layout.first_conv = convs[0].name if convs else None
        if not include_top:
            return layout
        outputs = list(model.outputs)
        main = _ancestors(outputs[0])
        for output in outputs[1:]:
            layout.aux |= _ancestors(output) - main
        for output in outputs:
            layer = _nearest_weighted(output)
            if isinstance(layer, keras_layers.Dense):
                layout.classifiers.add(layer.name)
        for layer in weighted:
            if layer.name in main and isinstance(layer, keras_layers.Dense) \
                    and len(layer.output.shape) == 2:
                layout.optional.add(layer.name)
        layout.optional |= {layer.name for layer in weighted if layer.name in layout.aux}
        return layout


def _flatten_grid(layer) -> tuple[int, int, int] | None:
    """``(h, w, c)`` when a dense layer reads a Keras (H, W, C) flatten of a feature map.

    GoogLeNet's auxiliary heads put a Permute to channels-first before their Flatten, as
    PyTorch flattens; those need no re-ordering.
    """
    from keras import layers as keras_layers

    inputs = _inputs_of(layer)
    source = _producer(inputs[0]) if len(inputs) == 1 else None
    while isinstance(source, (keras_layers.Dropout, keras_layers.Activation)):
        source = _producer(_inputs_of(source)[0])
    if not isinstance(source, keras_layers.Flatten):
        return None
    flatten_input = _inputs_of(source)[0]
    if len(flatten_input.shape) != 4 or isinstance(_producer(flatten_input),
                                                   keras_layers.Permute):
        return None
    _, h, w, c = flatten_input.shape
    return int(h), int(w), int(c)


# --------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------


@dataclass
class SourceLayer:
    """One layer's worth of arrays from the file, ready for a Keras layer.

    Attributes:
        label: How the file names it (``layer1.0.conv1`` or ``block1_conv1``).
        arrays: Arrays in the Keras layer's variable order, in Keras layout.
        head: Part of the file's main classifier.
        aux: Part of an auxiliary head.
        source_shapes: The file's own shapes, for error messages.
    """

    label: str
    arrays: list[np.ndarray]
    head: bool = False
    aux: bool = False
    source_shapes: list[tuple] = field(default_factory=list)


@dataclass
class Plan:
    """Arrays for each layer of a model, checked but not yet assigned."""

    assignments: list = field(default_factory=list)  # (layer, [arrays], label)
    skipped: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    random: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)

    def apply(self) -> None:
        """Assigns every planned array; called only once the whole plan has been checked."""
        for layer, arrays, _ in self.assignments:
            layer.set_weights(arrays)


_TORCH_SLOTS = {
    "Conv2D": {"weight": "kernel", "bias": "bias"},
    "Dense": {"weight": "kernel", "bias": "bias"},
    "BatchNormalization": {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                           "running_var": "moving_variance"},
}


def _variable_names(layer) -> list[str]:
    return [v.name.split("/")[-1].split(":")[0] for v in layer.weights]


def plan_torchvision(model, spec, state_dict: dict[str, np.ndarray], *, include_top: bool,
                     file_label: str, drop_head: bool = False,
                     rule: TorchvisionRule | None = None) -> Plan:
    """Plans loading a torchvision state dict into a zoo model.

    Args:
        model: The zoo model.
        spec: Its spec (for the family's mapping rule).
        state_dict: ``{key: array}`` as in PyTorch.
        include_top: Whether the model has its classifier.
        file_label: The file, for messages.
        drop_head: Never load the file's classifier (it holds no usable values).
        rule: The key rule; by default the spec's torchvision rule (timm checkpoints pass
            their own, see :mod:`zoo.weights.timm`).

    Returns:
        The checked plan.

    Raises:
        WeightsMismatchError: Naming the first layer that does not fit, with both shapes.
    """
    rule = rule or torchvision_rule(spec)
    by_name = {layer.name: layer for layer in model.layers}
    layout = ModelLayout.of(model, include_top=include_top)
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state_dict.items():
        module, _, slot = key.rpartition(".")
        if slot == "num_batches_tracked":
            continue
        groups.setdefault(module, {})[slot] = value

    sources: dict[str, SourceLayer] = {}
    plan = Plan()
    unknown = []
    for module, tensors in groups.items():
        head = _has_prefix(module, rule.head)
        aux = _has_prefix(module, rule.aux)
        if drop_head and head:
            plan.ignored.append(module)
            continue
        target = rule.layer_name(module)
        layer = by_name.get(target) if target else None
        if layer is None:
            if head or aux:
                plan.ignored.append(module)
                continue
            unknown.append((module, target, tensors))
            continue
        sources[layer.name] = _torch_to_keras(layer, module, tensors, rule)
        sources[layer.name].head, sources[layer.name].aux = head, aux
    if unknown:
        module, target, tensors = unknown[0]
        shapes = {slot: tuple(t.shape) for slot, t in tensors.items()}
        where = (f"which would be layer {target!r}, but the model has no such layer"
                 if target else "which no layer of the model takes")
        raise WeightsMismatchError(
            f"{file_label} does not fit {model.name!r}: it has {module!r} {shapes}, {where}"
            f"{' (and ' + str(len(unknown) - 1) + ' more)' if len(unknown) > 1 else ''}. "
            f"Is the file for another architecture?")
    _check_and_plan(plan, layout, sources, model.name, file_label)
    return plan


def _torch_to_keras(layer, module: str, tensors: dict[str, np.ndarray],
                    rule: TorchvisionRule) -> SourceLayer:
    kind = type(layer).__name__
    slots = _TORCH_SLOTS.get(kind)
    if slots is None:
        for base in type(layer).__mro__:
            if base.__name__ in _TORCH_SLOTS:
                slots, kind = _TORCH_SLOTS[base.__name__], base.__name__
                break
    if slots is None:
        raise WeightsMismatchError(
            f"Layer {layer.name!r} ({kind}) cannot take torchvision tensors {sorted(tensors)} "
            f"from {module!r}.")
    if kind == "BatchNormalization" and not math.isclose(layer.epsilon, rule.bn_eps,
                                                         rel_tol=1e-6):
        raise WeightsMismatchError(
            f"Batch norm {layer.name!r} has epsilon {layer.epsilon}, torchvision's "
            f"{module!r} was trained with {rule.bn_eps}: the outputs would differ. The "
            "family file must build it with torchvision's epsilon.")
    converted = {}
    for slot, value in tensors.items():
        name = slots.get(slot)
        if name is None:
            raise WeightsMismatchError(
                f"Unexpected tensor {module}.{slot} {tuple(value.shape)} for layer "
                f"{layer.name!r} ({kind}).")
        value = np.asarray(value, dtype=np.float32)
        if name == "kernel" and kind == "Conv2D":
            if value.ndim != 4:
                raise WeightsMismatchError(
                    f"{module}.{slot} has shape {value.shape}; convolution {layer.name!r} "
                    "needs a 4-D (out, in, h, w) weight.")
            value = _transpose(value, (2, 3, 1, 0))
        elif name == "kernel" and kind == "Dense":
            if value.ndim != 2:
                raise WeightsMismatchError(
                    f"{module}.{slot} has shape {value.shape}; dense {layer.name!r} needs a "
                    "2-D (out, in) weight.")
            grid = _flatten_grid(layer)
            if grid is not None and value.shape[1] == grid[0] * grid[1] * grid[2]:
                h, w, c = grid
                value = _transpose(value.reshape(-1, c, h, w), (2, 3, 1, 0)).reshape(h * w * c,
                                                                                    -1)
            else:
                value = _transpose(value, (1, 0))
        converted[name] = value
    # A BN without scale can take a file whose scale is all ones.
    if kind == "BatchNormalization" and "gamma" in converted and \
            "gamma" not in _variable_names(layer) and \
            not np.allclose(converted.pop("gamma"), 1.0):
        raise WeightsMismatchError(
            f"Batch norm {layer.name!r} has no scale, but {module}.weight is not all ones.")
    names = _variable_names(layer)
    missing = [n for n in names if n not in converted]
    extra = [n for n in converted if n not in names]
    if missing or extra:
        raise WeightsMismatchError(
            f"Layer {layer.name!r} has variables {names}; {module!r} provides "
            f"{sorted(tensors)} (missing {missing}, unexpected {extra}).")
    return SourceLayer(module, [converted[n] for n in names],
                       source_shapes=[tuple(tensors[s].shape) for s in tensors])


def _transpose(value: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    # A contiguous copy. The backend's transpose is multi-threaded: about three times
    # faster than NumPy's on VGG's 100M-weight first dense layer.
    if value.size < 1 << 20:
        return np.ascontiguousarray(value.transpose(axes))
    from keras import ops

    return ops.convert_to_numpy(ops.transpose(value, axes))


def plan_keras(model, layers_in_file: list, *, include_top: bool, file_label: str,
               layout_kind: str = "legacy") -> Plan:
    """Plans loading a Keras weights file's layers into a zoo model.

    Args:
        model: The zoo model.
        layers_in_file: :class:`zoo.weights.readers.LayerWeights` in the file's order.
        include_top: Whether the model has its classifier.
        file_label: The file, for messages.
        layout_kind: ``"legacy"`` (file order is model order) or ``"keras3"``.

    Returns:
        The checked plan.

    Raises:
        WeightsMismatchError: Naming the first layer that does not fit, with both shapes.
    """
    layout = ModelLayout.of(model, include_top=include_top)
    targets = layout.layers
    target_names = {layer.name for layer in targets}
    file_names = [entry.name for entry in layers_in_file]
    plan = Plan()
    pairs: list[tuple] = []
    extra: list = []

    matched = [entry for entry in layers_in_file if entry.name in target_names]
    unmatched = [entry for entry in layers_in_file if entry.name not in target_names]
    trailing_heads = bool(unmatched) and all(_dense_like(e) for e in unmatched) and \
        file_names.index(unmatched[0].name) > max((file_names.index(e.name) for e in matched),
                                                  default=-1)
    if matched and (not unmatched or trailing_heads or layout_kind == "keras3"):
        mode = "name"
        by_name = {layer.name: layer for layer in targets}
        pairs = [(by_name[e.name], e) for e in matched]
        extra = unmatched
    elif layout_kind == "keras3":
        raise WeightsMismatchError(
            f"{file_label} does not fit {model.name!r}: none of its layer names "
            f"({', '.join(file_names[:4])}, ...) is a layer of the model.")
    else:
        # Keras' own rule for legacy files: the i-th layer with weights takes the i-th group.
        mode = "order"
        pairs = list(zip(targets, layers_in_file))
        extra = layers_in_file[len(targets):]
    logger.debug("Matching %s to %s by %s.", file_label, model.name, mode)

    sources: dict[str, SourceLayer] = {}
    for layer, entry in pairs:
        sources[layer.name] = SourceLayer(
            entry.name, [np.asarray(a) for a in entry.arrays],
            source_shapes=[tuple(a.shape) for a in entry.arrays])
    for entry in extra:
        if _dense_like(entry) and not layout.classifiers:
            plan.ignored.append(entry.name)
            continue
        shapes = [tuple(a.shape) for a in entry.arrays]
        raise WeightsMismatchError(
            f"{file_label} does not fit {model.name!r}: the file has layer {entry.name!r} "
            f"with shapes {shapes} beyond the model's {len(targets)} layers with weights"
            f" (matched by {mode}). Is the file for another architecture?")
    _check_and_plan(plan, layout, sources, model.name, file_label)
    return plan


def _dense_like(entry) -> bool:
    # A classifier's arrays: 2-D kernels and 1-D biases, never a convolution.
    return all(np.ndim(a) <= 2 for a in entry.arrays)


def _check_and_plan(plan: Plan, layout: ModelLayout, sources: dict[str, SourceLayer],
                    model_name: str, file_label: str) -> None:
    for layer in layout.layers:
        source = sources.get(layer.name)
        if source is None:
            if layer.name in layout.optional:
                plan.random.append(layer.name)
                continue
            shapes = [tuple(v.shape) for v in layer.weights]
            raise WeightsMismatchError(
                f"{file_label} does not fit {model_name!r}: it has nothing for layer "
                f"{layer.name!r} (shapes {shapes}). Is the file for another architecture?")
        expected = [tuple(v.shape) for v in layer.weights]
        got = [tuple(a.shape) for a in source.arrays]
        if expected == got:
            plan.assignments.append((layer, source.arrays, source.label))
            continue
        if layer.name in layout.classifiers and len(expected) == len(got) and \
                expected[0][:-1] == got[0][:-1]:
            plan.skipped.append(f"{layer.name} (file: {got[0][-1]} classes, model: "
                                f"{expected[0][-1]})")
            continue
        if layer.name == layout.first_conv and len(expected) == len(got) and \
                expected[0][:2] == got[0][:2] and expected[0][3:] == got[0][3:] and \
                expected[1:] == got[1:] and got[0][2] == 3:
            arrays = [adapt_first_conv(source.arrays[0], expected[0][2]), *source.arrays[1:]]
            plan.assignments.append((layer, arrays, source.label))
            plan.adapted.append(f"{layer.name}: 3 -> {expected[0][2]} input channels")
            continue
        raise WeightsMismatchError(
            f"{file_label} does not fit {model_name!r}: layer {layer.name!r} needs shapes "
            f"{expected}, the file's {source.label!r} has {got}"
            + (f" (as stored: {source.source_shapes})" if source.source_shapes != got else "")
            + ". Is the file for another architecture or input size?")


def adapt_first_conv(kernel: np.ndarray, in_channels: int) -> np.ndarray:
    """Adapts an RGB first-convolution kernel (HWIO) to another number of input channels.

    As timm's ``adapt_input_conv``: one channel takes the sum over R, G and B (a grey
    image then gives what the RGB network gave for the same grey in all three channels);
    more channels repeat R, G, B cyclically and scale by ``3 / in_channels``, which keeps
    the activations' magnitude.

    Args:
        kernel: ``(h, w, 3, out)``.
        in_channels: The new input channel count.

    Returns:
        ``(h, w, in_channels, out)``.
    """
    if kernel.shape[2] != 3:
        raise ValueError(f"adapt_first_conv expects an RGB kernel; got shape {kernel.shape}.")
    if in_channels == 1:
        return kernel.sum(axis=2, keepdims=True)
    repeats = -(-in_channels // 3)
    return np.tile(kernel, (1, 1, repeats, 1))[:, :, :in_channels, :] * (3.0 / in_channels)


def torch_state_dict(model, rule) -> dict[str, np.ndarray]:
    """A zoo model's weights as a PyTorch state dict under a key rule: the loading, inverted.

    Convolution kernels go back from HWIO to OIHW, dense kernels from ``(in, out)`` to
    ``(out, in)`` (re-ordered to PyTorch's (C, H, W) flatten after a flatten of a feature
    map), batch norm to ``weight, bias, running_mean, running_var, num_batches_tracked``
    (a scale-less one gets a weight of ones). Auxiliary heads are left out.

    Args:
        model: A zoo model.
        rule: A :class:`~zoo.registry.TimmRule`: ``module_of`` names each layer's module;
            ``conv_dense`` modules are written as convolutions over the whole map.

    Returns:
        ``{key: array}``, float32 (``num_batches_tracked`` int64).

    Raises:
        WeightsMismatchError: A layer the rule has no module for, or a batch norm whose
            epsilon is not the one the rule's architecture is built with.
    """
    layout = ModelLayout.of(model, include_top=True)
    state: dict[str, np.ndarray] = {}
    for layer in layout.layers:
        if layer.name in layout.aux:
            continue
        module = rule.module_of(layer.name)
        if module is None:
            raise WeightsMismatchError(
                f"Layer {layer.name!r} of {model.name!r} has no counterpart in "
                f"{rule.architecture!r}; the model cannot be written as that architecture.")
        values = dict(zip(_variable_names(layer), layer.get_weights()))
        for slot, value in _keras_to_torch(layer, values, rule, module).items():
            state[f"{module}.{slot}"] = value
    return state


def _keras_to_torch(layer, values: dict, rule, module: str) -> dict[str, np.ndarray]:
    from keras import layers as keras_layers

    if isinstance(layer, keras_layers.BatchNormalization):
        if not math.isclose(layer.epsilon, rule.bn_eps, rel_tol=1e-6):
            raise WeightsMismatchError(
                f"Batch norm {layer.name!r} has epsilon {layer.epsilon}; "
                f"{rule.architecture!r} is built with {rule.bn_eps}: the outputs would differ.")
        mean = values["moving_mean"]
        return {"weight": values.get("gamma", np.ones_like(mean)),
                "bias": values.get("beta", np.zeros_like(mean)), "running_mean": mean,
                "running_var": values["moving_variance"],
                "num_batches_tracked": np.zeros((), dtype=np.int64)}
    kernel = values["kernel"]
    if isinstance(layer, keras_layers.Conv2D):
        out = {"weight": _transpose(kernel, (3, 2, 0, 1))}
    elif isinstance(layer, keras_layers.Dense):
        grid = _flatten_grid(layer)
        h, w, c = grid if grid is not None and kernel.shape[0] == math.prod(grid) else \
            (1, 1, kernel.shape[0])
        weight = _transpose(kernel.reshape(h, w, c, -1), (3, 2, 0, 1))  # (out, c, h, w)
        out = {"weight": weight if module in rule.conv_dense else
               weight.reshape(weight.shape[0], -1)}
    else:
        raise WeightsMismatchError(f"Layer {layer.name!r} ({type(layer).__name__}) has no "
                                   "PyTorch counterpart zoo can write.")
    if "bias" in values:
        out["bias"] = values["bias"]
    return out


def report(plan: Plan, model_name: str, file_label: str) -> None:
    """Logs what a plan loaded, skipped, ignored and adapted."""
    logger.info("Loaded %d layers of %r from %s.", len(plan.assignments), model_name,
                file_label)
    if plan.skipped:
        # A warning, as transformers gives one: a random head must be trained before use.
        logger.warning("Classifier not loaded from %s, the class counts differ; it starts "
                       "random and needs training: %s.", file_label, "; ".join(plan.skipped))
    if plan.ignored:
        logger.info("Parts of %s the model does not have, not used: %s.", file_label,
                    ", ".join(plan.ignored))
    if plan.random:
        logger.warning("%s has no weights for %s of %r; they start random.", file_label,
                       ", ".join(plan.random), model_name)
    if plan.adapted:
        logger.info("First convolution adapted: %s.", "; ".join(plan.adapted))
