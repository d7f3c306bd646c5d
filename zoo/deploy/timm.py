"""The ``timm`` export format: a zoo twin written as timm's Hugging Face Hub layout.

``<version>/timm/`` holds what ``timm``'s ``save_for_hf`` writes, so that PyTorch users load
the model without ONNX::

    config.json         architecture, num_classes, label_names, pretrained_cfg (mean, std,
                        interpolation, crop_pct, input_size: the run's eval transform)
    model.safetensors   the state dict under timm's module names (written with NumPy)
    README.md           the model card, with the Hub's YAML metadata in front

and loads with ``timm.create_model("local-dir:<folder>", pretrained=True)`` or, from the
Hub after ``zoo push``, ``timm.create_model("hf-hub:<owner>/<repo>", pretrained=True)``.
The folder is checked before the version is moved into place: zoo reads it back through
its own timm loader and the logits must match the model's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from zoo.weights.timm import CONFIG_NAME, SAFETENSORS_NAME

FOLDER = "timm"
# The same arithmetic in the same framework: the read-back probabilities agree to rounding.
TOLERANCE = 1e-5
CARD_NAME = "README.md"
# tf.image.resize's names -> timm's.
_INTERPOLATIONS = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest",
                   "lanczos3": "lanczos", "area": "box"}


def rule_of(model_name: str):
    """The spec and timm key rule of a zoo model, or a clear error when it has no timm twin."""
    from zoo.models import get_spec
    from zoo.weights.timm import supported_architectures

    spec = get_spec(model_name)
    if spec.timm_rule is None:
        twins = ", ".join(sorted(set(supported_architectures().values())))
        raise ValueError(f"{model_name!r} has no timm twin, so it cannot be exported as a "
                         f"timm checkpoint. Models that can: {twins}. Export it as "
                         "savedmodel, tflite or onnx instead.")
    return spec, spec.timm_rule


def write(source, folder: Path, metrics: dict | None = None) -> Path:
    """Writes ``source``'s model as a timm checkpoint folder.

    Args:
        source: The :class:`zoo.deploy.source.Source`.
        folder: The folder to create (inside the export's staging directory).
        metrics: The run's ``metrics.json``, for the card's results, if any.

    Returns:
        The folder.

    Raises:
        ValueError: A model without a timm twin, or with a normalisation timm cannot state.
    """
    from safetensors.numpy import save_file

    from zoo.weights.convert import torch_state_dict

    _, rule = rule_of(source.model_name)
    folder.mkdir(parents=True)
    state = torch_state_dict(source.model, rule)
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()},
              str(folder / SAFETENSORS_NAME), metadata={"format": "pt"})
    config = timm_config(source, rule)
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (folder / CARD_NAME).write_text(model_card(source, rule, metrics), encoding="utf-8")
    return folder


def timm_config(source, rule) -> dict:
    """``config.json`` as timm's ``save_for_hf`` writes it, from the model and its geometry."""
    normalize = source.model.get_layer("normalize").get_config()
    if normalize.get("channel_order", "rgb") != "rgb":
        raise ValueError(f"{source.model_name!r} takes BGR input (caffe preprocessing); "
                         "timm models take RGB, so its timm checkpoint would be wrong.")
    geometry = source.geometry
    if geometry.interpolation not in _INTERPOLATIONS:
        raise ValueError(f"The run's interpolation {geometry.interpolation!r} has no timm "
                         f"name; timm knows {', '.join(_INTERPOLATIONS)}.")
    classifier = _classifier(source.model)
    num_classes = int(classifier.kernel.shape[-1])
    height, width = geometry.image_size
    return {
        "architecture": rule.architecture,
        "num_classes": num_classes,
        "num_features": int(classifier.kernel.shape[0]),
        "global_pool": "avg",
        "label_names": list(source.class_names),
        "pretrained_cfg": {
            "tag": "zoo", "custom_load": False,
            "input_size": [geometry.channels, height, width], "fixed_input_size": False,
            "interpolation": _INTERPOLATIONS[geometry.interpolation],
            "crop_pct": geometry.crop_fraction, "crop_mode": "center",
            "mean": [m / 255 for m in normalize["mean"]],
            "std": [s / 255 for s in normalize["std"]],
            "num_classes": num_classes,
            "first_conv": rule.module_of(_first_conv(source.model)),
            "classifier": rule.head[0],
        },
    }


def _classifier(model):
    from zoo.weights.convert import ModelLayout

    names = ModelLayout.of(model, include_top=True).classifiers
    main = [layer for layer in model.layers if layer.name in names and layer.name ==
            "predictions"]
    if not main:
        raise ValueError(f"{model.name!r} has no classifier ('predictions'): a timm "
                         "checkpoint needs the model with its head (include_top=True).")
    return main[0]


def _first_conv(model) -> str:
    from zoo.weights.convert import ModelLayout

    return ModelLayout.of(model, include_top=True).first_conv


def model_card(source, rule, metrics: dict | None) -> str:
    """The card: the Hub's YAML metadata, how to load it with timm, then zoo's own card."""
    import yaml

    accuracy = (metrics or {}).get("accuracy")
    meta = {
        "library_name": "timm",
        "pipeline_tag": "image-classification",
        "tags": ["image-classification", "timm", "zoo", rule.architecture],
        "metrics": ["accuracy"],
        "label_names": list(source.class_names),
    }
    if accuracy is not None:
        meta["model-index"] = [{"name": source.model_name, "results": [{
            "task": {"type": "image-classification"},
            "dataset": {"type": "imagefolder", "name": "validation split of the run"},
            "metrics": [{"type": "accuracy", "value": float(accuracy)}]}]}]
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    usage = (f"\n## Use with timm\n\n```python\nimport timm\n\nmodel = timm.create_model("
             f"\"local-dir:<this folder>\", pretrained=True)  # or \"hf-hub:<owner>/<repo>\"\n"
             "config = timm.data.resolve_data_config(model=model)\n"
             "transform = timm.data.create_transform(**config)\n```\n\n"
             f"timm architecture `{rule.architecture}`, {len(source.class_names)} classes "
             "(`label_names` in config.json); written by zoo from its twin.\n\n")
    return f"---\n{front}---\n{source.card.rstrip()}\n{usage}"


def check(folder: Path, source, pixels: np.ndarray, expected: np.ndarray) -> dict:
    """Reads the folder back through zoo's timm loader; it must give the model's outputs.

    Args:
        folder: The written folder.
        source: What was exported.
        pixels: Reference pixels at the model's input size.
        expected: The model's probabilities on them.

    Returns:
        The figures (``max_abs_diff``, ``top1_agreement``, ``samples``, ``tolerance``).

    Raises:
        ExportCheckError: When they differ by more than :data:`TOLERANCE`.
    """
    from zoo.deploy import parity
    from zoo.models import build

    spec, _ = rule_of(source.model_name)
    reread = build(spec.name, weights=str(folder), input_shape=source.model.input_shape[1:])
    got = np.asarray(reread(pixels, training=False), dtype="float32")
    size = sum(path.stat().st_size for path in folder.iterdir())
    figures = parity.compare("timm", got, expected, {"tolerance": TOLERANCE, "bytes": size})
    parity.enforce("timm", figures)
    return figures
