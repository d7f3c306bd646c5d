"""The learning-rate range test (Smith 2017, as fastai's ``lr_find``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np


@dataclass
class LRFindResult:
    """What :func:`lr_find` returns.

    Attributes:
        learning_rates: The rate of each step.
        losses: The smoothed training loss after each step.
        suggestion: The suggested peak learning rate.
        plot: Path of the PNG plot, when one was written.
    """

    learning_rates: list[float]
    losses: list[float]
    suggestion: float
    plot: Path | None = None


class _ExponentialRamp(keras.callbacks.Callback):
    def __init__(self, start: float, end: float, steps: int, smoothing: float = 0.98):
        super().__init__()
        self.factor = (end / start) ** (1.0 / max(1, steps - 1))
        self.lr, self.steps, self.smoothing = start, steps, smoothing
        self.rates: list[float] = []
        self.losses: list[float] = []
        self._average, self._best, self._step = 0.0, math.inf, 0

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(self.lr)

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", math.nan))
        self._step += 1
        self._average = self.smoothing * self._average + (1 - self.smoothing) * loss
        smoothed = self._average / (1 - self.smoothing ** self._step)
        self.rates.append(self.lr)
        self.losses.append(smoothed)
        self._best = min(self._best, smoothed)
        # Past four times the best loss the run has diverged; the rest says nothing.
        if not math.isfinite(smoothed) or smoothed > 4 * self._best or self._step >= self.steps:
            self.model.stop_training = True
        self.lr *= self.factor


def suggest(rates: list[float], losses: list[float]) -> float:
    """The rate of steepest descent of the smoothed loss, before its minimum.

    Args:
        rates: Learning rates, increasing.
        losses: Smoothed losses at those rates.

    Returns:
        The suggested rate; a tenth of the minimum-loss rate when the curve is too short.
    """
    rates_arr, losses_arr = np.asarray(rates), np.asarray(losses)
    finite = np.isfinite(losses_arr)
    rates_arr, losses_arr = rates_arr[finite], losses_arr[finite]
    if len(losses_arr) < 5:
        return float(rates_arr[np.argmin(losses_arr)] / 10) if len(losses_arr) else 1e-3
    end = int(np.argmin(losses_arr)) + 1
    slopes = np.gradient(losses_arr[:end], np.log(rates_arr[:end])) if end > 2 else None
    if slopes is None:
        return float(rates_arr[end - 1] / 10)
    return float(rates_arr[int(np.argmin(slopes))])


def lr_find(model: keras.Model, dataset, *, start: float = 1e-7, end: float = 1.0,
            steps: int = 100, loss=None, plot_path: str | Path | None = None) -> LRFindResult:
    """Runs the range test on a copy of ``model``'s weights, which are restored afterwards.

    Args:
        model: A built model (freeze what you would freeze in the stage you tune).
        dataset: Training batches of ``(pixels, one-hot labels)``.
        start: First learning rate.
        end: Last learning rate.
        steps: Number of steps (batches); the dataset is repeated as needed.
        loss: The loss; categorical cross-entropy by default.
        plot_path: Where to write the loss-versus-rate plot.

    Returns:
        An :class:`LRFindResult`.
    """
    saved = [w.copy() for w in model.get_weights()]
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=start),
                  loss=loss or keras.losses.CategoricalCrossentropy())
    ramp = _ExponentialRamp(start, end, steps)
    try:
        model.fit(dataset.repeat(), steps_per_epoch=steps, epochs=1, callbacks=[ramp],
                  verbose=0)
    finally:
        model.set_weights(saved)
    result = LRFindResult(ramp.rates, ramp.losses, suggest(ramp.rates, ramp.losses))
    if plot_path is not None:
        from zoo.recipes.reports import pyplot

        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(result.learning_rates, result.losses)
        ax.axvline(result.suggestion, color="red", linestyle="--",
                   label=f"suggested {result.suggestion:.2g}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("smoothed training loss")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(plot_path, dpi=100)
        plt.close(fig)
        result.plot = Path(plot_path)
    return result
