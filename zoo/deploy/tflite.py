"""TFLite: float32, float16 weights, int8 weights (dynamic range), int8 throughout.

TFLite files take pixels (the ``serving_pixels`` input) and give probabilities: TFLite has
no image decoder or string lookups among its builtin operations.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.deploy import parity
from zoo.deploy.quiet import quiet_call

if TYPE_CHECKING:
    from zoo.registry import Geometry

VARIANTS = ("tflite", "tflite-fp16", "tflite-dynamic", "tflite-int8")

# How many representative images int8 calibration reads at most; a few hundred is what the
# TFLite documentation recommends, more only costs time.
MAX_REPRESENTATIVE_IMAGES = 300


def representative_pixels(folder: str | os.PathLike, geometry: Geometry):
    """The int8 calibration set: a folder's images (at most a few hundred) as eval pixels.

    Raises:
        FileNotFoundError: When the folder holds no images.
    """
    from pipelines import IMAGE_EXTENSIONS, list_images

    paths = list_images(folder, limit=MAX_REPRESENTATIVE_IMAGES)
    if not paths:
        raise FileNotFoundError(f"The representative folder {folder} holds no images "
                                f"({', '.join(sorted(IMAGE_EXTENSIONS))}).")
    return parity.reference_pixels(parity.read_images(paths), geometry)


def write(probability_model, variant: str, target: Path, representative=None) -> None:
    """Converts the probability model to one TFLite variant.

    Args:
        probability_model: The Keras model with probabilities as its one output.
        variant: One of :data:`VARIANTS`.
        target: The ``.tflite`` file to write.
        representative: Eval pixels [N, H, W, C] to calibrate on (``tflite-int8`` only).
    """
    import tensorflow as tf

    kwargs: dict[str, Any] = {
        # Builtin operations only: the file must run on the plain interpreter and on
        # devices, without the Flex (select TF ops) delegate.
        "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]},
    }
    if variant == "tflite-fp16":
        kwargs.update(optimizations=[tf.lite.Optimize.DEFAULT],
                      target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS],
                                   "supported_types": [tf.float16]})
    elif variant == "tflite-dynamic":
        kwargs.update(optimizations=[tf.lite.Optimize.DEFAULT])
    elif variant == "tflite-int8":
        def dataset():
            for image in representative:
                yield [image[None].astype("float32")]

        kwargs.update(
            optimizations=[tf.lite.Optimize.DEFAULT], representative_dataset=dataset,
            target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
            # Raw pixels are whole numbers in [0, 255]: uint8 carries them losslessly.
            # Probabilities leave as float32 so that callers need no dequantisation.
            inference_input_type=tf.uint8, inference_output_type=tf.float32)
    quiet_call(lambda: probability_model.export(str(target), format="litert", verbose=False,
                                                **kwargs))


def run_tflite(model: str | os.PathLike | bytes, pixels, num_threads: int | None = None):
    """Runs a TFLite classifier on float pixels, quantising the input if the file wants it.

    Args:
        model: A ``.tflite`` path or its contents.
        pixels: float32 [N, H, W, C] in [0, 255].
        num_threads: Interpreter threads (None: TFLite's default).

    Returns:
        Probabilities, float32 [N, C].
    """
    import numpy as np

    return invoke(load_interpreter(model, num_threads), np.asarray(pixels, dtype="float32"))


def load_interpreter(model: str | os.PathLike | bytes, num_threads: int | None = None):
    """A ``tf.lite.Interpreter`` for a ``.tflite`` path or its contents, without its warning."""
    import tensorflow as tf

    with warnings.catch_warnings():
        # tf.lite.Interpreter warns that it moves to ai-edge-litert; the API is the same.
        warnings.simplefilter("ignore")
        if isinstance(model, bytes):
            return tf.lite.Interpreter(model_content=model, num_threads=num_threads)
        return tf.lite.Interpreter(model_path=str(model), num_threads=num_threads)


def invoke(interpreter, pixels):
    """Runs a loaded interpreter on float pixels: (de)quantises, resizes its input if needed.

    Kept separate from :func:`run_tflite` so that a benchmark can time the call on an
    interpreter it holds, without the loading.

    Args:
        interpreter: A ``tf.lite.Interpreter`` (see :func:`load_interpreter`).
        pixels: float32 numpy array [N, H, W, C] in [0, 255].

    Returns:
        Probabilities, float32 [N, C].
    """
    import numpy as np

    inp = interpreter.get_input_details()[0]
    if tuple(inp["shape"]) != pixels.shape:
        interpreter.resize_tensor_input(inp["index"], pixels.shape)
        interpreter.allocate_tensors()
        inp = interpreter.get_input_details()[0]
    elif not getattr(interpreter, "_zoo_allocated", False):
        interpreter.allocate_tensors()
    interpreter._zoo_allocated = True
    data = pixels
    if inp["dtype"] in (np.uint8, np.int8):
        scale, zero_point = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        data = np.clip(np.round(pixels / scale + zero_point), info.min, info.max)
    interpreter.set_tensor(inp["index"], data.astype(inp["dtype"]))
    interpreter.invoke()
    out = interpreter.get_output_details()[0]
    result = interpreter.get_tensor(out["index"])
    if out["dtype"] in (np.uint8, np.int8):
        scale, zero_point = out["quantization"]
        result = (result.astype("float32") - zero_point) * scale
    return result.astype("float32")
