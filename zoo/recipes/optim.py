"""Optimiser pieces of the recipe: layer-wise learning rates, warm-up and cosine decay."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="zoo")
class LayerwiseAdamW(keras.optimizers.AdamW):
    """AdamW whose learning rate is multiplied per variable, with gradient accumulation.

    Adam normalises the gradient, so scaling gradients would not change the step; the
    multiplier is applied to the learning rate of each variable's update instead. Weight
    decay is not applied to biases and normalisation parameters (any variable of rank <= 1).

    With ``accumulate_steps`` N above 1, each weight update applies the mean gradient of N
    steps. Keras' own ``gradient_accumulation_steps`` chooses between updating and
    accumulating with a conditional, and under a ``tf.distribute`` strategy the
    synchronisation inside it fails ("merge_call called while defining a new graph",
    keras-team/keras#20582). Here every step runs the same operations: the moments, the
    weight decay and the step are multiplied by a gate that is 1 on the N-th step and 0 on
    the others, and the running sum of gradients is kept until the gate opens.

    Args:
        lr_multipliers: ``[(variable, multiplier), ...]``; variables not listed use 1.0.
        accumulate_steps: Steps per weight update (1: every step updates).
        **kwargs: Arguments of ``keras.optimizers.AdamW`` (not ``amsgrad`` or
            ``gradient_accumulation_steps`` together with ``accumulate_steps``).
    """

    def __init__(self, lr_multipliers=None, accumulate_steps: int = 1, **kwargs):
        super().__init__(**kwargs)
        self._pending_multipliers = list(lr_multipliers or [])
        self._multipliers: dict | None = None
        self.accumulate_steps = int(accumulate_steps)
        if self.accumulate_steps > 1 and (self.amsgrad or self.gradient_accumulation_steps):
            raise ValueError("accumulate_steps does not combine with amsgrad or Keras' "
                             "gradient_accumulation_steps.")

    @property
    def iterations(self):
        # Weight updates, not steps: Adam's bias correction and the EMA's first step read it.
        if self.accumulate_steps > 1:
            return keras.ops.floor_divide(self._iterations, self.accumulate_steps)
        return self._iterations

    def build(self, variables):
        super().build(variables)
        # Rank <= 1: biases, BN gamma/beta. Decaying them only shrinks the model's offsets.
        self.exclude_from_weight_decay(var_list=[v for v in variables if len(v.shape) <= 1])
        if self.accumulate_steps > 1:
            self._gradient_sums = [self.add_variable_from_reference(v, name="gradient_sum")
                                   for v in variables]

    def _multiplier(self, variable) -> float:
        if self._multipliers is None:
            self._multipliers = {self._var_key(v): float(m) for v, m in self._pending_multipliers}
        return self._multipliers.get(self._var_key(variable), 1.0)

    def _gate(self, dtype):
        """1 on the step that completes an update, else 0."""
        ops = keras.ops
        return ops.cast(ops.equal((self._iterations + 1) % self.accumulate_steps, 0), dtype)

    def _backend_apply_gradients(self, grads, trainable_variables):
        if self.accumulate_steps == 1:
            return super()._backend_apply_gradients(grads, trainable_variables)
        sums = [self._gradient_sums[self._get_variable_index(v)] for v in trainable_variables]
        totals = [g + keras.ops.cast(s, g.dtype) for g, s in zip(grads, sums)]
        gate = self._gate("float32")
        # The sum becomes the totals, or zero once they are applied. Each replica keeps its
        # own (the gradients are reduced across replicas in the update below).
        self._backend_increment_gradient_accumulators(
            [t * keras.ops.cast(1 - gate, t.dtype) - keras.ops.cast(s, t.dtype)
             for t, s in zip(totals, sums)], sums)
        means = self._clip_gradients([t / self.accumulate_steps for t in totals])
        # Weight decay is gated inside update_step (Keras' own pass has no gate).
        self._backend_update_step(means, trainable_variables, self.learning_rate)
        if self.use_ema:
            self._update_model_variables_moving_average(self._trainable_variables)

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self._multiplier(variable)
        if self.accumulate_steps == 1:
            if multiplier != 1.0:
                learning_rate = learning_rate * multiplier
            return super().update_step(gradient, variable, learning_rate)
        ops = keras.ops
        gate = self._gate(variable.dtype)
        lr = ops.cast(learning_rate, variable.dtype) * gate
        if self.weight_decay is not None and self._use_weight_decay(variable):
            # As AdamW: decoupled, at the schedule's rate without the layer's multiplier.
            self.assign_sub(variable, variable * ops.cast(self.weight_decay, variable.dtype)
                            * lr)
        lr = lr * multiplier
        gradient = ops.cast(gradient, variable.dtype)
        local_step = ops.cast(self.iterations + 1, variable.dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, variable.dtype), local_step)
        beta_2_power = ops.power(ops.cast(self.beta_2, variable.dtype), local_step)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        self.assign_add(m, (gradient - m) * (1 - self.beta_1) * gate)
        self.assign_add(v, (ops.square(gradient) - v) * (1 - self.beta_2) * gate)
        self.assign_sub(variable, m * alpha / (ops.sqrt(v) + self.epsilon))

    def get_config(self) -> dict:
        return {**super().get_config(), "accumulate_steps": self.accumulate_steps}


@keras.saving.register_keras_serializable(package="zoo")
class PerUpdate(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule counted in weight updates under gradient accumulation.

    Keras evaluates an optimizer's schedule at its step counter, which counts batches even
    when ``gradient_accumulation_steps`` applies only every N-th (its ``iterations``
    property, which Adam's bias correction reads, is divided; the schedule's argument is
    not). Dividing here keeps the warm-up and the decay in the units of the updates.

    Args:
        schedule: The schedule in updates.
        steps: Batches per update (``gradient_accumulation_steps``).
    """

    def __init__(self, schedule, steps: int):
        self.schedule = schedule
        self.steps = int(steps)

    def __call__(self, step):
        return self.schedule(keras.ops.floor_divide(step, self.steps))

    def get_config(self) -> dict:
        return {"schedule": keras.saving.serialize_keras_object(self.schedule),
                "steps": self.steps}

    @classmethod
    def from_config(cls, config: dict) -> PerUpdate:
        return cls(keras.saving.deserialize_keras_object(config["schedule"]), config["steps"])


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
