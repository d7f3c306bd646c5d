"""The few custom layers and shared blocks every family uses.

All custom layers are registered as Keras serializable under the ``zoo`` package, so a
``.keras`` file loads with ``keras.saving.load_model`` once ``zoo`` is imported, with no
``custom_objects`` argument.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops

# Mean and standard deviation in pixel units (0..255), per channel in the stated order.
PREPROCESSING: dict[str, dict] = {
    "torch": {
        "mean": (0.485 * 255, 0.456 * 255, 0.406 * 255),
        "std": (0.229 * 255, 0.224 * 255, 0.225 * 255),
        "channel_order": "rgb",
    },
    "tf": {"mean": (127.5, 127.5, 127.5), "std": (127.5, 127.5, 127.5), "channel_order": "rgb"},
    "caffe": {
        # keras.applications' caffe mode: RGB to BGR, then subtract the BGR ImageNet mean.
        "mean": (103.939, 116.779, 123.68),
        "std": (1.0, 1.0, 1.0),
        "channel_order": "bgr",
    },
    "unit": {"mean": (0.0, 0.0, 0.0), "std": (255.0, 255.0, 255.0), "channel_order": "rgb"},
}


def preprocessing_config(preprocessing: str | dict) -> dict:
    """Resolves a preprocessing preset name or dict to ``{mean, std, channel_order}``.

    Args:
        preprocessing: One of ``"torch"``, ``"tf"``, ``"caffe"``, ``"unit"`` or a dict with
            ``mean`` and ``std`` in pixel units (0..255) and optional ``channel_order``.

    Returns:
        A dict usable as the keyword arguments of :class:`Normalize`.
    """
    if isinstance(preprocessing, str):
        if preprocessing not in PREPROCESSING:
            raise ValueError(
                f"Unknown preprocessing {preprocessing!r}; expected one of "
                f"{sorted(PREPROCESSING)} or a dict with 'mean' and 'std' in pixel units."
            )
        return dict(PREPROCESSING[preprocessing])
    missing = {"mean", "std"} - set(preprocessing)
    if missing:
        raise ValueError(f"Preprocessing dict {preprocessing!r} lacks {sorted(missing)}.")
    return {
        "mean": tuple(float(v) for v in preprocessing["mean"]),
        "std": tuple(float(v) for v in preprocessing["std"]),
        "channel_order": preprocessing.get("channel_order", "rgb"),
    }


@keras.saving.register_keras_serializable(package="zoo")
class Normalize(layers.Layer):
    """Maps raw pixels in [0, 255] to what the network was trained on.

    Computes ``(x[..., order] - mean) / std``. It is always the model's first layer, so
    nobody has to call a ``preprocess_input`` and cannot call the wrong one. With an input
    channel count other than the preset's three (grayscale, RGBA, multispectral), the mean
    and std are averaged over the preset's channels and used for every input channel.

    Args:
        mean: Per-channel mean in pixel units.
        std: Per-channel standard deviation in pixel units.
        channel_order: ``"rgb"`` or ``"bgr"``; ``"bgr"`` reverses the input channels first.
    """

    def __init__(
        self,
        mean: Sequence[float] = PREPROCESSING["torch"]["mean"],
        std: Sequence[float] = PREPROCESSING["torch"]["std"],
        channel_order: str = "rgb",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}.")
        if len(mean) != len(std):
            raise ValueError(f"mean {mean} and std {std} differ in length.")
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.channel_order = channel_order

    def build(self, input_shape):
        channels = input_shape[-1]
        mean, std = self.mean, self.std
        if channels != len(mean):
            mean = (sum(mean) / len(mean),) * channels
            std = (sum(std) / len(std),) * channels
        self._flip = self.channel_order == "bgr" and channels == 3
        self._offset = tuple(-m / s for m, s in zip(mean, std))
        self._scale = tuple(1.0 / s for s in std)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self._flip:
            x = ops.flip(x, axis=-1)
        # Converted straight to the compute dtype: a float32 detour would cost float64
        # models (used in parity tests) their last digits.
        scale = ops.convert_to_tensor(self._scale, dtype=x.dtype)
        offset = ops.convert_to_tensor(self._offset, dtype=x.dtype)
        return x * scale + offset

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mean=list(self.mean), std=list(self.std), channel_order=self.channel_order)
        return config


@keras.saving.register_keras_serializable(package="zoo")
class LocalResponseNormalization(layers.Layer):
    """Cross-channel local response normalisation (Krizhevsky et al. 2012, section 3.3).

    Uses PyTorch's convention, which divides ``alpha`` by ``size``; the paper's constants
    (size 5, alpha 1e-4, beta 0.75, k 2) are the defaults.

    Args:
        size: Number of neighbouring channels summed over.
        alpha: Scale of the sum of squares.
        beta: Exponent.
        k: Additive constant.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def call(self, inputs):
        import tensorflow as tf

        # tf.nn's alpha multiplies the raw sum; PyTorch and the paper's form average it.
        return tf.nn.local_response_normalization(
            inputs,
            depth_radius=(self.size - 1) // 2,
            bias=self.k,
            alpha=self.alpha / self.size,
            beta=self.beta,
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size, alpha=self.alpha, beta=self.beta, k=self.k)
        return config


def conv_bn_act(
    x,
    filters: int,
    kernel_size: int | tuple[int, int],
    *,
    name: str,
    strides: int = 1,
    padding: str | int | tuple[int, int] = "same",
    use_bias: bool = False,
    bn_epsilon: float = 1e-5,
    bn_scale: bool = True,
    activation: str | None = "relu",
):
    """Convolution, batch normalisation and activation, named ``{name}_conv/_bn/_relu``.

    Args:
        x: Input tensor.
        filters: Output channels.
        kernel_size: Kernel size.
        name: Prefix of the three layer names.
        strides: Convolution stride.
        padding: ``"same"``, ``"valid"``, or explicit symmetric zero padding (int or
            ``(pad_h, pad_w)``) as in PyTorch, applied by a ``{name}_pad`` layer.
        use_bias: Whether the convolution has a bias.
        bn_epsilon: Batch-norm epsilon (1e-5 for torchvision, 1e-3 for most Keras models).
        bn_scale: Whether batch norm has a learned scale.
        activation: Activation after batch norm, or None.

    Returns:
        The output tensor.
    """
    if not isinstance(padding, str):
        x = layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
        padding = "valid"
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                      use_bias=use_bias, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=bn_epsilon, scale=bn_scale, name=f"{name}_bn")(x)
    if activation:
        x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def torch_pool(x, pool_size: int, strides: int, *, name: str, padding: int = 0,
               ceil_mode: bool = False, kind: str = "max"):
    """A pooling layer with PyTorch's padding and ``ceil_mode`` semantics.

    PyTorch pads max pooling with -inf and, in ceil mode, lets the last window start inside
    the padded input; Keras has neither, so the equivalent padding is added explicitly (with
    a large negative value for max pooling so that padded cells never win).

    Args:
        x: Input tensor.
        pool_size: Window size.
        strides: Stride.
        name: Layer name.
        padding: Symmetric padding as in ``torch.nn.MaxPool2d``.
        ceil_mode: PyTorch's ``ceil_mode``.
        kind: ``"max"`` or ``"avg"``.

    Returns:
        The pooled tensor.
    """
    height, width = x.shape[1], x.shape[2]
    extra = []
    for size in (height, width):
        padded = size + 2 * padding
        if ceil_mode:
            out = -(-(padded - pool_size) // strides) + 1
            # PyTorch drops a last window that would start entirely in the right padding.
            if (out - 1) * strides >= size + padding:
                out -= 1
        else:
            out = (padded - pool_size) // strides + 1
        extra.append(max(0, (out - 1) * strides + pool_size - padded))
    if padding or any(extra):
        pads = ((padding, padding + extra[0]), (padding, padding + extra[1]))
        if kind == "max":
            x = NegInfPadding2D(pads, name=f"{name}_pad")(x)
        else:
            x = layers.ZeroPadding2D(pads, name=f"{name}_pad")(x)
    pool = layers.MaxPooling2D if kind == "max" else layers.AveragePooling2D
    return pool(pool_size, strides=strides, name=name)(x)


@keras.saving.register_keras_serializable(package="zoo")
class NegInfPadding2D(layers.Layer):
    """Spatial padding with -inf, so that padded cells never win a max pooling window.

    Args:
        padding: ``((top, bottom), (left, right))``.
    """

    def __init__(self, padding, **kwargs):
        super().__init__(**kwargs)
        self.padding = tuple(tuple(int(p) for p in pair) for pair in padding)

    def call(self, inputs):
        (top, bottom), (left, right) = self.padding
        return ops.pad(inputs, [[0, 0], [top, bottom], [left, right], [0, 0]],
                       constant_values=float("-inf"))

    def compute_output_shape(self, input_shape):
        (top, bottom), (left, right) = self.padding
        h = None if input_shape[1] is None else input_shape[1] + top + bottom
        w = None if input_shape[2] is None else input_shape[2] + left + right
        return (input_shape[0], h, w, input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(padding=[list(p) for p in self.padding])
        return config


@keras.saving.register_keras_serializable(package="zoo")
class AdaptiveAveragePooling2D(layers.Layer):
    """Average pooling to a fixed output grid, with PyTorch's ``adaptive_avg_pool2d`` windows.

    Output cell ``i`` averages input rows ``floor(i*H/out)`` to ``ceil((i+1)*H/out)``; that
    also covers inputs smaller than the grid (cells repeat), which Keras' own layer rejects
    when the input is 1x1. It is written as two small averaging matrices, so it costs one
    einsum and works for any static input size.

    Args:
        output_size: ``(height, width)`` of the output grid.
    """

    def __init__(self, output_size, **kwargs):
        super().__init__(**kwargs)
        self.output_size = tuple(int(s) for s in output_size)

    @staticmethod
    def _matrix(size_in: int, size_out: int):
        import numpy as np

        matrix = np.zeros((size_out, size_in), dtype="float64")
        for i in range(size_out):
            start, end = (i * size_in) // size_out, -(-((i + 1) * size_in) // size_out)
            matrix[i, start:end] = 1.0 / (end - start)
        return matrix

    def build(self, input_shape):
        if input_shape[1] is None or input_shape[2] is None:
            raise ValueError(f"{self.name} needs a static input height and width; got "
                             f"{input_shape}. Build the model with a fixed input_shape.")
        self._rows = self._matrix(input_shape[1], self.output_size[0])
        self._cols = self._matrix(input_shape[2], self.output_size[1])

    def call(self, inputs):
        rows = ops.convert_to_tensor(self._rows, dtype=inputs.dtype)
        cols = ops.convert_to_tensor(self._cols, dtype=inputs.dtype)
        return ops.einsum("oh,bhwc,pw->bopc", rows, inputs, cols)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(output_size=list(self.output_size))
        return config


@keras.saving.register_keras_serializable(package="zoo")
class TemperatureScaling(layers.Layer):
    """Temperature scaling of softmax probabilities: ``softmax(log(p) / temperature)``.

    ``log(p)`` is the logits up to a per-image constant, which the softmax ignores, so this
    is ``softmax(logits / temperature)`` of the head before its softmax; the arg-max never
    moves. Computed in float32, so it is exact under mixed precision too.

    Args:
        temperature: A positive scalar (a run's ``calibration.temperature``).

    Raises:
        ValueError: For a temperature that is not a finite positive number.
    """

    def __init__(self, temperature: float, **kwargs):
        import math

        try:
            value = float(temperature)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"temperature must be a positive number; got {temperature!r}.")
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.temperature = value

    def call(self, probabilities):
        # The clip is zoo.recipes.calibrate.logits_of's: a probability that underflowed to
        # 0 has no logarithm, and 1e-12 keeps it last among the classes.
        p = ops.clip(ops.cast(probabilities, "float32"), 1e-12, 1.0)
        return ops.softmax(ops.log(p) / self.temperature, axis=-1)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
