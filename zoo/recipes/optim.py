"""Optimiser pieces of the recipe: layer-wise learning rates, warm-up and cosine decay."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="zoo")
class LayerwiseAdamW(keras.optimizers.AdamW):
    """AdamW whose learning rate is multiplied per variable (earlier stages learn slower).

    Adam normalises the gradient, so scaling gradients would not change the step; the
    multiplier is applied to the learning rate of each variable's update instead. Weight
    decay is not applied to biases and normalisation parameters (any variable of rank <= 1).

    Args:
        lr_multipliers: ``[(variable, multiplier), ...]``; variables not listed use 1.0.
        **kwargs: Arguments of ``keras.optimizers.AdamW``.
    """

    def __init__(self, lr_multipliers=None, **kwargs):
        super().__init__(**kwargs)
        self._pending_multipliers = list(lr_multipliers or [])
        self._multipliers: dict | None = None

    def build(self, variables):
        super().build(variables)
        # Rank <= 1: biases, BN gamma/beta. Decaying them only shrinks the model's offsets.
        self.exclude_from_weight_decay(var_list=[v for v in variables if len(v.shape) <= 1])

    def _multiplier(self, variable) -> float:
        if self._multipliers is None:
            self._multipliers = {self._var_key(v): float(m) for v, m in self._pending_multipliers}
        return self._multipliers.get(self._var_key(variable), 1.0)

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self._multiplier(variable)
        if multiplier != 1.0:
            learning_rate = learning_rate * multiplier
        return super().update_step(gradient, variable, learning_rate)


def warmup_cosine(peak_lr: float, total_steps: int, warmup_steps: int,
                  final_fraction: float = 0.01) -> keras.optimizers.schedules.CosineDecay:
    """Linear warm-up from zero to ``peak_lr``, then cosine decay to ``final_fraction`` of it.

    Args:
        peak_lr: Learning rate at the end of the warm-up.
        total_steps: Steps of the whole stage, warm-up included.
        warmup_steps: Steps of linear warm-up.
        final_fraction: Floor of the decay as a fraction of ``peak_lr``.

    Returns:
        A Keras learning-rate schedule.
    """
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else peak_lr,
        decay_steps=max(1, total_steps - warmup_steps),
        alpha=final_fraction,
        warmup_target=peak_lr if warmup_steps else None,
        warmup_steps=warmup_steps,
    )
