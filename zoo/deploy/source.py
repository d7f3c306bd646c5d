"""What an export is made from: the model, its class names, geometry, card and samples.

The run directory, ``.keras`` file or ``keras.Model`` is opened by ``zoo.rundir.open_model``
(the one reader of run directories); this module adds what export asks of it: one image
input of a fixed size, one class name per output, a model card, and a model whose one
output is probabilities.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo import rundir

if TYPE_CHECKING:
    from zoo.registry import Geometry


@dataclass
class Source:
    """The model to export and what goes with it.

    Attributes:
        model: The ``keras.Model``.
        model_name: The zoo name.
        class_names: One name per model output.
        class_names_from: Where the names came from (``"argument"``, the run's file,
            ``"indices"``).
        geometry: The eval geometry the SavedModel serves (``zoo.Geometry``; the image
            size is the model's input).
        card: The model card's Markdown text.
        samples_dir: The run's sample images, or None.
        multi_label: A multi-label run's model: logits out, one sigmoid per class.
        thresholds: Its per-class decision thresholds (the run's), or None.
        temperature: The run's fitted temperature (``run.json`` ``calibration``), or None
            (no run, a multi-label run, a run without a validation split).
        calibrate: Whether the probabilities served apply ``temperature`` (the caller's
            ``calibrate=``); see :attr:`served_temperature`.
    """

    model: Any
    model_name: str
    class_names: list[str]
    class_names_from: str
    geometry: Geometry
    card: str
    samples_dir: Path | None = None
    multi_label: bool = False
    thresholds: list[float] | None = None
    temperature: float | None = None
    calibrate: bool = True

    @property
    def served_temperature(self) -> float | None:
        """The temperature the served probabilities apply: None for the raw softmax."""
        return self.temperature if self.calibrate and not self.multi_label else None


def resolve_source(model_or_run_dir, *, class_names: Sequence[str] | None = None,
                   model_name: str | None = None,
                   model_card: str | os.PathLike | None = None,
                   calibrate: bool = True) -> Source:
    """Opens what is to be exported and checks it can be.

    Args:
        model_or_run_dir: A ``keras.Model``, a ``.keras`` file or a run directory.
        class_names: One name per output; default: the run's, else the class indices
            (with a warning).
        model_name: The zoo name, when the model's own name is not registered.
        model_card: A Markdown file, or the card's text (anything with a line break);
            default: the run's card, else a generated one.
        calibrate: Serve the run's fitted temperature (``run.json`` ``calibration``),
            when it has one.

    Raises:
        ValueError: For a model without one fixed-size image input, class names that do
            not match its outputs or hold line breaks, or an unknown zoo model (a
            ``model_name`` that is no registered name is named with the closest ones).
        FileNotFoundError: For a missing model, run directory file or card file.
    """
    if model_name is not None:
        # Checked first: the typo is what is wrong, not the model it was given for (whose
        # own name open_model would then be asked about). get_spec names the closest names.
        from zoo.models import get_spec

        model_name = get_spec(model_name).name
    opened = rundir.open_model(model_or_run_dir, model_name=model_name)
    model = opened.model
    shape = model.input_shape
    if not isinstance(shape, tuple) or len(shape) != 4 or None in shape[1:]:
        raise ValueError(f"Export needs one image input with a fixed size, (batch, height, "
                         f"width, channels); {model.name!r} takes {shape}.")
    names, origin = _class_names(model, class_names, opened)
    card = _read_card(model_card) if model_card is not None else opened.card
    source = Source(model=model, model_name=opened.model_name, class_names=names,
                    class_names_from=origin, geometry=opened.geometry, card="",
                    samples_dir=opened.samples_dir, multi_label=opened.multi_label,
                    thresholds=(opened.thresholds or [0.5] * len(names)
                                if opened.multi_label else None),
                    temperature=opened.temperature, calibrate=bool(calibrate))
    source.card = card if card is not None else default_card(source)
    return source


def _class_names(model, given: Sequence[str] | None, opened) -> tuple[list[str], str]:
    outputs = model.outputs[0].shape[-1]
    if given is not None:
        names, origin = [str(c) for c in given], "argument"
    elif opened.class_names is not None:
        names, origin = list(opened.class_names), opened.class_names_from
    else:
        warnings.warn(f"No class names given for {model.name!r}; the labels will be the class "
                      f"indices '0'..'{outputs - 1}'. Pass class_names= (--labels FILE).",
                      stacklevel=4)
        names, origin = [str(i) for i in range(outputs)], "indices"
    rundir.check_class_names(names, int(outputs), origin)
    return names, origin


def _read_card(model_card: str | os.PathLike) -> str:
    if isinstance(model_card, str) and "\n" in model_card:
        return model_card  # the card's text itself
    card_path = Path(model_card)
    if not card_path.is_file():
        raise FileNotFoundError(f"No model card file at {card_path}; pass a Markdown file "
                                f"or the card's text (with its line breaks).")
    return card_path.read_text(encoding="utf-8")


def default_card(source: Source) -> str:
    """The card written when none is given: architecture, input, eval transform, classes."""
    from zoo import __version__

    names = ", ".join(source.class_names[:20]) + (" ..." if len(source.class_names) > 20
                                                   else "")
    geometry = source.geometry
    height, width = geometry.image_size
    return (f"# {source.model_name}\n\n"
            f"Exported by zoo {__version__}; no model card was given.\n\n"
            f"- Architecture: `{source.model_name}` (see `zoo info {source.model_name}`)\n"
            f"- Input: {height}x{width}, {geometry.channels} "
            f"channel(s); eval transform: crop fraction {geometry.crop_fraction}, "
            f"{geometry.interpolation}\n"
            f"- Classes ({len(source.class_names)}): {names}\n")


def probability_model(model, multi_label: bool = False, temperature: float | None = None):
    """Returns a model whose one output is probabilities: the first head, softmax if logits.

    Args:
        model: A ``keras.Model`` (softmax or logits; auxiliary heads allowed).
        multi_label: The logits are one sigmoid per class (a multi-label run's), not a
            softmax.
        temperature: A fitted temperature ``T`` (a run's ``calibration``): the
            probabilities ``p`` become ``softmax(log(p) / T)``, as ``zoo evaluate`` measures
            them (:func:`zoo.recipes.calibrate.scale`). The arg-max does not move. None
            leaves them as the model gives them; single-label models only.

    Returns:
        ``model`` itself when it already has one probability output and no temperature is
        given, else a wrapper.

    Raises:
        ValueError: For a temperature with ``multi_label`` (sigmoids are not calibrated) or
            one that is not a positive number.
    """
    import keras

    if temperature is not None and multi_label:
        raise ValueError("A temperature calibrates a softmax; a multi-label model's "
                         "sigmoids are not calibrated (pass temperature=None).")
    outputs = model.outputs
    last = outputs[0]._keras_history[0]  # the layer that made the output
    activation = getattr(getattr(last, "activation", None), "__name__", None)
    if len(outputs) == 1 and activation != "linear" and temperature is None:
        return model
    inputs = keras.Input(model.input_shape[1:], name="pixels")
    result = model(inputs, training=False)
    if isinstance(result, (list, tuple)):
        result = result[0]  # the main head; auxiliary heads only help training
    if activation == "linear":
        result = keras.layers.Activation("sigmoid" if multi_label else "softmax",
                                         dtype="float32", name="probabilities")(result)
    if temperature is not None:
        from zoo.layers import TemperatureScaling

        result = TemperatureScaling(temperature, name="calibrated")(result)
    return keras.Model(inputs, result, name=model.name)
