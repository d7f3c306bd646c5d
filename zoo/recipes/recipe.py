"""The recipe's options: :class:`Recipe`, and the one rule that fills it in for a model."""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from dataclasses import dataclass, field
from typing import Any

from zoo.distribute import POLICIES, STRATEGIES

LOSSES = ("cross_entropy", "focal")
SAMPLINGS = ("natural", "balanced")
# pipelines.leakage.DEDUPE_MODES, written out: importing pipelines would load TensorFlow
# for every command line (tests/test_imbalance.py checks the two agree).
DEDUPES = ("warn", "drop", "off")
CALIBRATIONS = ("temperature", "none")
# zoo.recipes.features.CHOICES, written out: that module loads TensorFlow.
FEATURE_CACHES = ("auto", "on", "off")


@dataclass
class Recipe:
    """Every knob of the recipe; a family's ``Spec.recipe_defaults`` override some.

    The command line's ``zoo train`` / ``zoo lr-find`` options are made from these fields
    (``--head-lr`` for ``head_lr``), their help from the descriptions below.

    Attributes:
        head_epochs: Epochs of stage 1 (new head, frozen backbone).
        finetune_epochs: Epochs of stage 2 (backbone unfrozen).
        scratch_epochs: Epochs when training from scratch (``weights=None``).
        batch_size: Batch size per replica; the global batch is this times the replicas.
            With ``accumulate_steps`` above 1 it is the batch of one weight update, read
            in ``accumulate_steps`` smaller steps.
        accumulate_steps: Gradient accumulation: each weight update applies the mean
            gradient of this many steps (as Keras' ``gradient_accumulation_steps``, which
            fails under tf.distribute), so a batch too large for memory trains as that
            many smaller ones. When zoo builds the pipeline each step reads
            ``batch_size / accumulate_steps`` images, and the learning rates and the
            schedule's steps follow the update's batch, so the run trains as one of
            ``batch_size`` would (a pipeline you built keeps its batches: an update is
            this many of them). 1 turns it off.
        head_lr: Peak learning rate of stage 1 (per 1 replica; scaled with replicas).
        finetune_lr: Peak learning rate of stage 2 for the last stage and the head.
        scratch_lr: Peak learning rate from scratch.
        layer_decay: Each earlier stage's rate is this times the next one's.
        unfreeze: ``"all"`` or the number of top stages to unfreeze in stage 2.
        warmup_epochs: Linear warm-up at the start of each stage.
        weight_decay: AdamW decoupled weight decay (not applied to biases and BN).
        label_smoothing: Label smoothing of the cross-entropy.
        patience: Early stopping patience in epochs (on validation accuracy; without a
            validation split there is no early stopping).
        dropout: Dropout before the classifier (None keeps the family's default).
        scratch_bn_momentum: Batch-norm momentum from scratch (Keras' convention: the weight
            of the old moving statistics). 0.9 is torchvision's training default
            (``momentum=0.1``); Keras' 0.99 needs several hundred steps before its moving
            statistics fit the weights, so a short run from scratch evaluates at chance.
        augment: Augmentation preset when zoo builds the pipeline from a folder: none,
            light, standard, strong, mixup, cutmix or shift.
        validation_split: Fraction of each class held out for validation when zoo builds
            the pipeline from a one-folder layout (``root/<class>/*``). 0
            trains on every image without validation: the last epoch's model is kept
            (training loss is no model-selection criterion) and nothing stops early. None
            in ``run.json`` when the caller built the pipeline and it does not say.
        precision: Precision policy: auto, float32, mixed_bfloat16 or mixed_float16.
        strategy: Distribution strategy: auto, one, mirrored, multiworker or tpu.
        class_weight: Weights of the classes in the loss, for skewed data: "balanced"
            (``n_images / (n_classes * n_class)`` from the training counts, as
            scikit-learn's), a dict of class (name or index) to weight (on the command
            line JSON or ``name=weight,...``), or None (every image alike).
            Single-label data only.
        loss: The loss: cross_entropy or focal (Keras' focal cross-entropy, gamma 2,
            which lowers the weight of images the model already gets right).
        sampling: How the train stream draws images when zoo builds the pipeline:
            natural (each image once an epoch) or balanced (every class equally often,
            re-sampled without copying files).
        dedupe: Identical files in train and validation (or test) when zoo builds the
            pipeline: warn (listed in split.json and on the console), drop (left out of
            validation, files untouched) or off. Near-duplicates (resized or re-encoded
            copies) are looked for with ``pipelines.from_folder(..., dedupe_near=True)``.
        calibrate: After training, temperature (one scalar fitted on the validation
            split, stored in run.json and applied by evaluate, predict and export) or
            none. Single-label runs with a validation split only.
        ema: Exponential moving average of the weights (Keras' ``use_ema``), e.g. 0.999:
            validated, selected, saved and exported with the averaged weights, while
            training goes on with the raw ones; the raw weights' validation figures are
            logged beside them (``val_accuracy_raw``). None turns it off.
        cache_features: Stage 1 (frozen backbone) on cached features: auto, on or off.
            The backbone's pooled features of each image are computed once, kept in the
            run directory (keyed by the weights, the input, the precision and the files)
            and the head trains on them: one backbone pass instead of one per epoch.
            auto caches when the head stage's train stream is the same every epoch
            (augment none, natural sampling), where the result is the same as without;
            on caches also with augmentation (each image's first augmented view stands
            for it every epoch).
        seed: Seed of the split, the shuffles and the initialisation.
    """

    head_epochs: int = 3
    finetune_epochs: int = 10
    scratch_epochs: int = 30
    batch_size: int = 32
    accumulate_steps: int = 1
    head_lr: float = 1e-3
    finetune_lr: float = 1e-4
    scratch_lr: float = 1e-3
    layer_decay: float = 0.7
    unfreeze: str | int = "all"
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    patience: int = 5
    dropout: float | None = None
    scratch_bn_momentum: float = 0.9
    augment: Any = "standard"
    validation_split: float | None = 0.2
    precision: str = field(default="auto", metadata={"choices": POLICIES})
    strategy: str = field(default="auto", metadata={"choices": STRATEGIES})
    class_weight: Any = None
    loss: str = field(default="cross_entropy", metadata={"choices": LOSSES})
    sampling: str = field(default="natural", metadata={"choices": SAMPLINGS})
    dedupe: str = field(default="warn", metadata={"choices": DEDUPES})
    calibrate: str = field(default="temperature", metadata={"choices": CALIBRATIONS})
    ema: float | None = None
    cache_features: str = field(default="auto", metadata={"choices": FEATURE_CACHES})
    seed: int = 0


def make_recipe(model_name: str, **overrides) -> Recipe:
    """The recipe for a model: defaults, then its family's, then the caller's overrides.

    Args:
        model_name: A registered model name (its Spec's ``recipe_defaults`` apply).
        **overrides: Fields of :class:`Recipe`; None values are left out.

    Raises:
        TypeError: For a name that is not a field.
        ValueError: For an ``unfreeze`` that is neither ``"all"`` nor a number.
    """
    from zoo.models import get_spec

    known = {f.name for f in dataclasses.fields(Recipe)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"Unknown recipe option(s) {sorted(unknown)}; known: {sorted(known)}.")
    values = {**get_spec(model_name).recipe_defaults,
              **{k: v for k, v in overrides.items() if v is not None}}
    recipe = Recipe(**values)
    if isinstance(recipe.unfreeze, str) and recipe.unfreeze != "all":
        try:
            recipe.unfreeze = int(recipe.unfreeze)
        except ValueError as error:
            raise ValueError(f"unfreeze must be 'all' or a number of stages; got "
                             f"{recipe.unfreeze!r}.") from error
    check_recipe(recipe)
    return recipe


# field: (lowest, highest, whether the lowest itself is allowed); None: no bound.
_RANGES = {
    "head_epochs": (0, None, True), "finetune_epochs": (0, None, True),
    "scratch_epochs": (0, None, True), "batch_size": (1, None, True),
    "head_lr": (0, None, False), "finetune_lr": (0, None, False),
    "scratch_lr": (0, None, False), "layer_decay": (0, 1, False),
    "warmup_epochs": (0, None, True), "weight_decay": (0, None, True),
    "label_smoothing": (0, 1, True), "patience": (0, None, True),
    "dropout": (0, 1, True), "scratch_bn_momentum": (0, 1, True),
    "validation_split": (0, 1, True), "ema": (0, 1, False),
}


def check_recipe(recipe: Recipe) -> None:
    """Refuses values no training can use (a negative rate trains to chance silently).

    Raises:
        ValueError: Naming the field, its command-line flag, the value and the range.
    """
    for name, (low, high, low_allowed) in _RANGES.items():
        value = getattr(recipe, name)
        if value is None and name in ("dropout", "validation_split", "ema"):
            continue
        flag = f"--{name.replace('_', '-')}"
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        fits = number and math.isfinite(value) and (
            value > low or (low_allowed and value == low)) and (
            high is None or value <= high if name == "layer_decay" else
            high is None or value < high)
        if not fits:
            if name.endswith("_lr"):
                wanted = "a positive number"
            elif high is None:
                wanted = f"a number of at least {low}" if low_allowed else f"above {low}"
            elif name == "layer_decay":
                wanted = f"a number in ({low}, {high}]"
            elif name == "ema":
                wanted = "a number in (0, 1), such as 0.999, or None (off)"
            else:
                wanted = f"a number in [{low}, {high})"
            raise ValueError(f"{name} ({flag}) must be {wanted}; got {value!r}.")
    steps = recipe.accumulate_steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"accumulate_steps (--accumulate-steps) must be a whole number of "
                         f"at least 1 (1: off); got {steps!r}.")
    for name, allowed in (("loss", LOSSES), ("sampling", SAMPLINGS), ("dedupe", DEDUPES),
                          ("calibrate", CALIBRATIONS),
                          ("cache_features", FEATURE_CACHES)):
        if getattr(recipe, name) not in allowed:
            flag = name.replace("_", "-")
            raise ValueError(f"{name} (--{flag}) must be one of {', '.join(allowed)}; got "
                             f"{getattr(recipe, name)!r}.")
    recipe.class_weight = parse_class_weight(recipe.class_weight)


def parse_class_weight(value: Any) -> str | dict | None:
    """``class_weight`` as given, or parsed from its command-line text.

    Args:
        value: None, ``"balanced"``, a dict ``{class: weight}``, or text: ``"none"``,
            JSON (``'{"cat": 3}'``) or ``"cat=3,dog=1"``.

    Returns:
        None, ``"balanced"`` or ``{class name or index: weight}`` (weights checked
        positive; the classes are matched to the data's when training starts).

    Raises:
        ValueError: Naming the allowed forms.
    """
    import json

    if value is None or value == "balanced" or value == "none":
        return None if value in (None, "none") else value
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("{") else dict(
                item.split("=", 1) for item in text.split(",") if item.strip())
        except ValueError:
            value = None
    if not isinstance(value, dict) or not value:
        raise ValueError(f"class_weight (--class-weight) must be 'balanced', None, or a dict "
                         f"of class to weight ('cat=3,dog=1' or JSON on the command line); "
                         f"got {value!r}.")
    weights = {}
    for key, weight in value.items():
        key = key.strip() if isinstance(key, str) else key
        try:
            weights[key] = float(weight)
        except (TypeError, ValueError):
            weights[key] = math.nan
        if not math.isfinite(weights[key]) or weights[key] < 0:
            raise ValueError(f"class_weight (--class-weight): the weight of class {key!r} "
                             f"must be a number of at least 0; got {weight!r}.")
    return weights


def set_epochs(recipe: Recipe, epochs: int | None, pretrained: bool) -> None:
    """Spreads a total of ``epochs`` over the stages: a quarter (at least 1) to the head.

    Args:
        recipe: The recipe, changed in place (nothing changes for None).
        epochs: Total epochs, or None.
        pretrained: Whether there are two stages (head, then fine-tuning) or one.
    """
    if epochs is None:
        return
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1; got {epochs}.")
    if not pretrained:
        recipe.scratch_epochs = epochs
    else:
        recipe.head_epochs = max(1, epochs // 4)
        recipe.finetune_epochs = epochs - recipe.head_epochs


def field_help() -> dict[str, str]:
    """Each field's description from :class:`Recipe`'s docstring, on one line."""
    doc = inspect.getdoc(Recipe) or ""
    section = doc.split("Attributes:", 1)[-1]
    helps: dict[str, list[str]] = {}
    current = None
    for line in section.splitlines():
        match = re.match(r"^ {4}(\w+): (.*)$", line)
        if match:
            current = match.group(1)
            helps[current] = [match.group(2)]
        elif current and line.startswith(" " * 8):
            helps[current].append(line.strip())
    return {name: " ".join(words).replace("``", "") for name, words in helps.items()}
