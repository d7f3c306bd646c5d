"""Export for deployment: a SavedModel that takes image bytes, TFLite, ONNX, with parity checks.

``zoo.export(model_or_run_dir, out_dir)`` writes one *version* of a model under ``out_dir``,
in TensorFlow Serving's layout, so that a server pointed at ``out_dir`` picks the newest
version up by itself::

    out_dir/
      1/                         one version, written atomically (see below)
        saved_model.pb           the SavedModel; needs only TensorFlow to load and serve
        variables/
        assets/class_names.txt   one class name a line; the graph's label lookup reads it
        assets/README.md         the model card
        export.json              what was exported, the eval transform, the self-check figures
        model.tflite             TFLite, float32            (format "tflite")
        model_fp16.tflite        TFLite, float16 weights    (format "tflite-fp16")
        model_dynamic.tflite     TFLite, int8 weights       (format "tflite-dynamic")
        model_int8.tflite        TFLite, int8 throughout    (format "tflite-int8")
        model.onnx               ONNX via tf2onnx           (format "onnx")

The SavedModel's signatures, all with the outputs ``probabilities`` [B, C] float32,
``scores`` [B, k] float32, ``labels`` [B, k] string and ``class_ids`` [B, k] int32 (the
top ``k`` classes, best first, ``k`` set at export):

- ``serving_default``: ``image_bytes``, a [B] string tensor of encoded images (JPEG, PNG,
  GIF, BMP or WebP). Decoding, the grayscale conversion, the resize, the centre crop and
  the normalisation all happen inside, exactly as at evaluation: the signature runs the
  pipelines' eval path (``pipelines.make_eval_transform``; :func:`bytes_to_pixels`), so a
  JPEG is turned upright by its EXIF orientation and only its crop window is decoded, as in
  ``zoo evaluate``. Through TF Serving's REST API, send the bytes base64-encoded in
  ``{"b64": ...}`` objects: the server decodes them into this string tensor (the ``_bytes``
  suffix is the name other servers, such as Vertex AI, look for).
- ``serving_b64``: ``image_b64``, the same images as base64 *text* (standard or URL-safe
  alphabet, padding and line breaks optional, a ``data:image/...;base64,`` prefix allowed),
  for clients that cannot use the ``{"b64": ...}`` wrapper.
- ``serving_pixels``: ``pixels``, float32 [B, H, W, C] in [0, 255] at the model's input
  size, already decoded and cropped; the Keras model's own input.

A bad image (not an image, empty, truncated) makes the request fail with
``InvalidArgumentError`` and the decoder's message ("Unknown image file format...",
"Input is empty", "Invalid JPEG data..."), as does a file the graph's decoder does not read
("Unsupported BMP (4 bits per pixel, compression 0)...", "Unsupported WebP: an
animation"). TF Serving answers that with HTTP 400 / gRPC ``INVALID_ARGUMENT`` for that
request and goes on serving. TensorFlow has no in-graph way to
catch a failed decode per image, so a batch with one bad image fails as a whole; the client
learns which one by resending singly (``zoo predict`` does that).

TFLite and ONNX files take pixels (the ``serving_pixels`` input) and give probabilities:
neither has an image decoder or string lookups among its builtin operations.

**Atomicity.** A version is written into a hidden staging directory inside ``out_dir``,
loaded back and checked, then renamed into place: a server (or a person) never sees a
half-written version, and a crash leaves at most a ``.zoo-export-*`` directory, which TF
Serving ignores because its name is not a number. An existing version is replaced only with
``overwrite=True``.

**Self-check.** After writing, the artifacts are loaded back and compared with the Keras
model on sample images: the SavedModel's three signatures must agree within
:data:`TOLERANCES` (1e-5 on probabilities), float32 TFLite and ONNX within 1e-4; the
quantised TFLite files' largest difference and top-1 agreement are reported, not enforced.
A failed check raises :class:`ExportCheckError` and nothing is left at the target.

Run directory contract (what :func:`read_run_dir` reads; the fine-tuning recipe writes it)::

    run_dir/
      run.json     {"model": "<zoo name>",               required: the registry spec, which
                                                          gives the eval crop and interpolation
                    "class_names": ["cat", "dog", ...],  required: one per model output
                    "model_file": "best.keras",          optional, this is the default
                    "crop_fraction": 0.875,              optional, default: the spec's
                    "interpolation": "bilinear"}         optional, default: the spec's
      best.keras   the model: raw pixels in [0, 255] in, softmax (or logits) out
      README.md    optional: the model card, copied into the SavedModel's assets
      samples/     optional: a few images of the task, used by the self-check and, when no
                   other folder is given, as the int8 representative dataset

Other keys in ``run.json`` are ignored, so the recipe may add its metrics and settings.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sys
import tempfile
import types
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUN_JSON = "run.json"
DEFAULT_MODEL_FILE = "best.keras"
MODEL_CARD = "README.md"
SAMPLES_DIR = "samples"
REPORT_FILE = "export.json"
CLASS_NAMES_FILE = "class_names.txt"

# Format name -> file name inside the version directory ("savedmodel" is the directory).
FORMATS: dict[str, str] = {
    "savedmodel": ".",
    "tflite": "model.tflite",
    "tflite-fp16": "model_fp16.tflite",
    "tflite-dynamic": "model_dynamic.tflite",
    "tflite-int8": "model_int8.tflite",
    "onnx": "model.onnx",
}

# Largest |probability difference| from the Keras model that the self-check accepts; formats
# not listed (the quantised ones) are measured and reported, not enforced.
TOLERANCES: dict[str, float] = {"savedmodel": 1e-5, "tflite": 1e-4, "onnx": 1e-4}

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")

# How many representative images int8 calibration reads at most; a few hundred is what the
# TFLite documentation recommends, more only costs time.
MAX_REPRESENTATIVE_IMAGES = 300


class ExportCheckError(RuntimeError):
    """An exported artifact does not reproduce the Keras model within tolerance."""


# --------------------------------------------------------------------------- eval transform


def eval_transform(image, image_size: int | Sequence[int], crop_fraction: float = 0.875,
                   interpolation: str = "bilinear"):
    """The evaluation transform on decoded pixels: resize the shorter side, centre crop.

    The pipelines' eval path (``pipelines.transforms.eval_crop``) for an image that is
    already decoded: the centre window that resize-then-crop would keep is cut first
    (``pipelines.transforms.center_crop``), then resized to ``image_size`` with
    antialiasing (as Pillow resizes), clipped to [0, 255] and rounded to whole pixel values.
    With timm's convention the resized shorter side is ``floor(max(height, width) /
    crop_fraction)`` (224 -> 256). Works eagerly and inside a ``tf.function``, on one image
    of any size and channel count.

    Args:
        image: [H, W, C] uint8 or float pixels in [0, 255].
        image_size: Target ``(height, width)`` (or one int for a square).
        crop_fraction: Fraction of the resized shorter side the crop keeps, in (0, 1].
        interpolation: A ``tf.image.resize`` method: ``bilinear``, ``bicubic``,
            ``nearest``, ``area``, ``lanczos3``, ``lanczos5``, ``gaussian`` or
            ``mitchellcubic``.

    Returns:
        float32 [height, width, C] with whole values in [0, 255].
    """
    import tensorflow as tf

    from pipelines import transforms

    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size[:2]
    height, width = int(height), int(width)
    transforms.check_crop_fraction(crop_fraction)
    transforms.check_interpolation(interpolation)
    image = tf.convert_to_tensor(image)
    crop = transforms.center_crop(image, (height, width), crop_fraction)
    resized = transforms.resize_pixels(tf.cast(crop, tf.float32), (height, width),
                                       interpolation, antialias=True)
    return tf.ensure_shape(tf.round(resized), [height, width, image.shape[-1]])


def bytes_to_pixels(encoded, image_size: Sequence[int], channels: int,
                    crop_fraction: float = 0.875, interpolation: str = "bilinear"):
    """Encoded image to model input: the pipelines' eval path, in pure TensorFlow.

    This is the whole of what the ``serving_default`` signature does before the model, and
    it is ``pipelines.make_eval_transform``: the same decode (only the crop window of a
    JPEG, turned upright by its EXIF orientation; ``pipelines.transforms.graph_decode``,
    transparency over white, for PNG, GIF, BMP and WebP), crop, resize and rounding as at
    evaluation and training, so a served model sees exactly the pixels ``zoo evaluate``
    measured.

    Args:
        encoded: A scalar string tensor (JPEG, PNG, GIF, BMP or WebP bytes).
        image_size: ``(height, width)``.
        channels: The model's input channels, 1 or 3.
        crop_fraction: Eval crop fraction.
        interpolation: Eval interpolation.

    Returns:
        float32 [height, width, channels] in [0, 255].

    Raises:
        ValueError: For a model that takes other than 1 or 3 channels.
        tf.errors.InvalidArgumentError: When the bytes are not a decodable image (at run
            time, with the decoder's message).
    """
    from pipelines import transforms

    if channels not in (1, 3):
        raise ValueError(f"Images decode to 1 (grayscale) or 3 (RGB) channels; the model "
                         f"takes {channels}. Export the pixels formats only (tflite, onnx).")
    return transforms.make_eval_transform(image_size, crop_fraction, interpolation,
                                          channels)(encoded)


# ----------------------------------------------------------------------------- run dir


@dataclass
class RunDir:
    """What a run directory holds for export (see the module docstring for the layout).

    Attributes:
        path: The run directory.
        model_name: The registry name, whose spec gives the eval transform.
        class_names: One name per model output.
        model_path: The ``.keras`` file.
        card_path: The model card, or None.
        samples_dir: The sample images folder, or None.
        meta: The whole of ``run.json``.
    """

    path: Path
    model_name: str
    class_names: list[str]
    model_path: Path
    card_path: Path | None = None
    samples_dir: Path | None = None
    meta: dict = field(default_factory=dict)


def read_run_dir(path: str | os.PathLike) -> RunDir:
    """Reads a run directory's ``run.json`` and locates its model, card and samples.

    Args:
        path: A run directory.

    Returns:
        The parsed :class:`RunDir`.

    Raises:
        FileNotFoundError: When ``run.json`` or the model file is missing.
        ValueError: When ``run.json`` lacks ``model`` or ``class_names``.
    """
    root = Path(path)
    meta_path = root / RUN_JSON
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{root} is not a run directory: it has no {RUN_JSON}. A run directory holds "
            f"{RUN_JSON} ({{'model': ..., 'class_names': [...]}}) and {DEFAULT_MODEL_FILE}; "
            f"to export a bare model, pass the .keras file instead.")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{meta_path} is not valid JSON: {error}.") from None
    missing = [key for key in ("model", "class_names") if key not in meta]
    if missing:
        raise ValueError(f"{meta_path} lacks {missing}; it needs 'model' (the zoo name) and "
                         f"'class_names' (one per output).")
    model_path = root / meta.get("model_file", DEFAULT_MODEL_FILE)
    if not model_path.is_file():
        raise FileNotFoundError(f"{meta_path} names the model file {model_path.name!r}, "
                                f"which is not in {root}.")
    card = root / MODEL_CARD
    samples = root / SAMPLES_DIR
    return RunDir(path=root, model_name=str(meta["model"]),
                  class_names=[str(c) for c in meta["class_names"]], model_path=model_path,
                  card_path=card if card.is_file() else None,
                  samples_dir=samples if samples.is_dir() else None, meta=meta)


def load_keras_model(path: str | os.PathLike):
    """Loads a ``.keras`` file with the zoo's custom layers registered.

    Args:
        path: The ``.keras`` file.

    Returns:
        The ``keras.Model``.
    """
    import keras

    import zoo.layers  # noqa: F401  (registers Normalize and the other custom layers)

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No model file at {path}.")
    return keras.saving.load_model(path, compile=False)


@dataclass
class _Source:
    model: Any
    name: str
    class_names: list[str]
    class_names_from: str
    image_size: tuple[int, int]
    channels: int
    crop_fraction: float
    interpolation: str
    card: str
    samples_dir: Path | None


def _resolve_source(model_or_run_dir, class_names, model_name, model_card) -> _Source:
    import keras

    from zoo.registry import get_spec

    run = None
    if isinstance(model_or_run_dir, keras.Model):
        model = model_or_run_dir
    else:
        path = Path(model_or_run_dir)
        if path.is_dir():
            run = read_run_dir(path)
            model = load_keras_model(run.model_path)
        elif path.suffix == ".keras":
            model = load_keras_model(path)
        else:
            raise FileNotFoundError(
                f"{path} is neither a run directory (with {RUN_JSON}) nor a .keras file.")

    name = model_name or (run.model_name if run else model.name)
    try:
        spec = get_spec(name)
    except ValueError:
        raise ValueError(
            f"Cannot tell which zoo model {model.name!r} is, so its eval transform (crop "
            f"fraction, interpolation) is unknown. Pass model_name= (--model-name), e.g. "
            f"'resnet50', or export from a run directory.") from None

    shape = model.input_shape
    if not isinstance(shape, tuple) or len(shape) != 4 or None in shape[1:]:
        raise ValueError(f"Export needs one image input with a fixed size, (batch, height, "
                         f"width, channels); {model.name!r} takes {shape}.")
    outputs = model.outputs[0].shape[-1]
    if class_names is not None:
        names, origin = [str(c) for c in class_names], "argument"
    elif run is not None:
        names, origin = run.class_names, f"{run.path / RUN_JSON}"
    else:
        warnings.warn(f"No class names given for {model.name!r}; the labels will be the class "
                      f"indices '0'..'{outputs - 1}'. Pass class_names= (--labels FILE).",
                      stacklevel=3)
        names, origin = [str(i) for i in range(outputs)], "indices"
    if len(names) != outputs:
        raise ValueError(f"{len(names)} class names for a model with {outputs} outputs "
                         f"({origin}); give one name per output.")
    bad = [c for c in names if "\n" in c or "\r" in c]
    if bad:
        raise ValueError(f"Class names cannot contain line breaks (they are stored one a "
                         f"line): {bad[:3]}.")

    # A run records the eval transform it measured with; the spec's is the default.
    meta = run.meta if run is not None else {}
    if isinstance(model_card, str) and "\n" in model_card:
        card = model_card  # the card's text itself
    elif model_card is not None:
        card_path = Path(model_card)
        if not card_path.is_file():
            raise FileNotFoundError(f"No model card file at {card_path}; pass a Markdown file "
                                    f"or the card's text (with its line breaks).")
        card = card_path.read_text(encoding="utf-8")
    elif run is not None and run.card_path is not None:
        card = run.card_path.read_text(encoding="utf-8")
    else:
        card = None
    source = _Source(model=model, name=spec.name, class_names=names, class_names_from=origin,
                     image_size=(int(shape[1]), int(shape[2])), channels=int(shape[3]),
                     crop_fraction=float(meta.get("crop_fraction", spec.crop_fraction)),
                     interpolation=str(meta.get("interpolation", spec.interpolation)),
                     card="",
                     samples_dir=run.samples_dir if run else None)
    source.card = card if card is not None else _default_card(source)
    return source


def _default_card(source: _Source) -> str:
    from zoo import __version__

    names = ", ".join(source.class_names[:20]) + (" ..." if len(source.class_names) > 20
                                                   else "")
    return (f"# {source.name}\n\n"
            f"Exported by zoo {__version__}; no model card was given.\n\n"
            f"- Architecture: `{source.name}` (see `zoo info {source.name}`)\n"
            f"- Input: {source.image_size[0]}x{source.image_size[1]}, {source.channels} "
            f"channel(s); eval transform: crop fraction {source.crop_fraction}, "
            f"{source.interpolation}\n"
            f"- Classes ({len(source.class_names)}): {names}\n")


def _probability_model(model):
    """Returns a model whose one output is probabilities: the first head, softmax if logits."""
    import keras

    outputs = model.outputs
    output = outputs[0]
    last = output._keras_history[0]  # the layer that made the output
    activation = getattr(getattr(last, "activation", None), "__name__", None)
    if len(outputs) == 1 and activation != "linear":
        return model
    inputs = keras.Input(model.input_shape[1:], name="pixels")
    result = model(inputs, training=False)
    if isinstance(result, (list, tuple)):
        result = result[0]  # the main head; auxiliary heads only help training
    if activation == "linear":
        result = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(result)
    return keras.Model(inputs, result, name=model.name)


# ---------------------------------------------------------------------------- SavedModel


def _write_savedmodel(source: _Source, probability_model, target: Path, top_k: int,
                      scratch: Path) -> None:
    import keras
    import tensorflow as tf

    height, width = source.image_size
    channels = source.channels
    names_file = scratch / CLASS_NAMES_FILE
    names_file.write_text("".join(f"{c}\n" for c in source.class_names), encoding="utf-8")
    # A table initialised from the asset file: the labels the graph returns are the file
    # shipped in assets/, so the two cannot disagree.
    table = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(str(names_file), tf.int64,
                                      tf.lookup.TextFileIndex.LINE_NUMBER, tf.string,
                                      tf.lookup.TextFileIndex.WHOLE_LINE),
        default_value="")
    k = min(top_k, len(source.class_names))

    def outputs(pixels):
        probabilities = probability_model(pixels, training=False)
        scores, class_ids = tf.math.top_k(probabilities, k=k)
        labels = table.lookup(tf.cast(class_ids, tf.int64))
        return {"probabilities": probabilities, "scores": scores, "labels": labels,
                "class_ids": class_ids}

    def pixels_from_bytes(image_bytes):
        def one(encoded):
            return bytes_to_pixels(encoded, (height, width), channels, source.crop_fraction,
                                   source.interpolation)

        return tf.map_fn(one, image_bytes,
                         fn_output_signature=tf.TensorSpec([height, width, channels],
                                                           tf.float32))

    def from_bytes(image_bytes):
        return outputs(pixels_from_bytes(image_bytes))

    def from_b64(image_b64):
        text = tf.strings.regex_replace(image_b64, r"^data:[^,]*,", "")
        text = tf.strings.regex_replace(text, r"\s", "")
        # tf.io.decode_base64 reads the URL-safe alphabet only.
        text = tf.strings.regex_replace(tf.strings.regex_replace(text, r"\+", "-"), "/", "_")
        return from_bytes(tf.io.decode_base64(text))

    archive = keras.export.ExportArchive()
    # The model is deliberately not passed to archive.track(): the endpoints capture its
    # variables anyway, and tracking the Keras wrappers as well stores every weight twice
    # (keras-team/keras#23553: twice the size on disk and in a server's memory).
    archive.track(table)
    archive.add_endpoint("serving_default", from_bytes,
                         [tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.add_endpoint("serving_b64", from_b64,
                         [tf.TensorSpec([None], tf.string, name="image_b64")])
    archive.add_endpoint("serving_pixels", outputs,
                         [tf.TensorSpec([None, height, width, channels], tf.float32,
                                        name="pixels")])
    archive.write_out(str(target), verbose=False)
    # The card is documentation for people and servers' model browsers, not read by the
    # graph, so it goes into assets/ as a plain file.
    (target / "assets").mkdir(exist_ok=True)
    (target / "assets" / MODEL_CARD).write_text(source.card, encoding="utf-8")


# ------------------------------------------------------------------------- sample images


def list_images(folder: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """Lists image files under a folder, recursively, in sorted order.

    Args:
        folder: A directory.
        limit: Keep at most this many, spread evenly over the sorted list (so that every
            class sub-folder is represented).

    Returns:
        The paths.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"No image folder at {root}.")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                   and p.is_file())
    if limit is not None and len(paths) > limit:
        step = len(paths) / limit
        paths = [paths[int(i * step)] for i in range(limit)]
    return paths


def synthetic_images(count: int = 6, seed: int = 0) -> list[bytes]:
    """Encodes a few synthetic images, in every format and in odd sizes, for self-checks.

    Smooth gradients with noise, so that JPEG and GIF compression, the resize and the crop
    all have something to do; sizes are below, at and above typical inputs, in portrait and
    landscape.

    Args:
        count: How many images (formats and sizes cycle).
        seed: Random seed.

    Returns:
        Encoded images (PNG, JPEG, BMP, GIF).
    """
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [(40, 48), (70, 33), (64, 64), (25, 20), (97, 131), (32, 32)]
    formats = ["PNG", "JPEG", "BMP", "GIF"]
    images = []
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([255 * yy / h, 255 * xx / w, 128 + 100 * np.sin(xx / 5.0 + yy / 7.0)],
                        axis=-1)
        pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype("uint8")
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, formats[i % len(formats)])
        images.append(buffer.getvalue())
    return images


def _read_images(paths: Iterable[Path]) -> list[bytes]:
    return [Path(p).read_bytes() for p in paths]


def reference_pixels(images: Sequence[bytes], source_or_size, channels: int | None = None,
                     crop_fraction: float | None = None, interpolation: str | None = None):
    """Decodes and transforms encoded images eagerly, as the bytes signature does in-graph.

    Args:
        images: Encoded images.
        source_or_size: An internal source, or the target ``(height, width)``.
        channels: Model input channels (with a size).
        crop_fraction: Eval crop fraction (with a size).
        interpolation: Eval interpolation (with a size).

    Returns:
        float32 numpy array [N, H, W, C].
    """
    import numpy as np

    if isinstance(source_or_size, _Source):
        s = source_or_size
        size, channels = s.image_size, s.channels
        crop_fraction, interpolation = s.crop_fraction, s.interpolation
    else:
        size = source_or_size
    return np.stack([bytes_to_pixels(b, size, channels, crop_fraction, interpolation).numpy()
                     for b in images])


# -------------------------------------------------------------------------------- checks


def _compare(name: str, got, expected, extra: dict | None = None) -> dict:
    import numpy as np

    got = np.asarray(got, dtype="float64")
    expected = np.asarray(expected, dtype="float64")
    if got.shape != expected.shape:
        raise ExportCheckError(f"{name}: output shape {got.shape} differs from the Keras "
                               f"model's {expected.shape}.")
    result = {
        "max_abs_diff": float(np.max(np.abs(got - expected))) if got.size else 0.0,
        "top1_agreement": float(np.mean(np.argmax(got, -1) == np.argmax(expected, -1))),
        "samples": int(expected.shape[0]),
    }
    tolerance = TOLERANCES.get(name)
    if tolerance is not None:
        result["tolerance"] = tolerance
    result.update(extra or {})
    return result


def _enforce(name: str, check: dict) -> None:
    tolerance = check.get("tolerance")
    if tolerance is not None and not check["max_abs_diff"] <= tolerance:
        raise ExportCheckError(
            f"Self-check failed for {name}: the reloaded artifact's probabilities differ "
            f"from the Keras model's by up to {check['max_abs_diff']:.3g} on "
            f"{check['samples']} sample images (tolerance {tolerance:g}). Nothing was "
            f"written to the target; please report this with the model name and the sample "
            f"images.")


def _check_savedmodel(path: Path, source: _Source, images: Sequence[bytes], pixels,
                      expected) -> dict:
    import base64

    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    signatures = loaded.signatures
    wanted = {"serving_default", "serving_b64", "serving_pixels"}
    if not wanted <= set(signatures):
        raise ExportCheckError(f"The SavedModel at {path} lacks signatures "
                               f"{sorted(wanted - set(signatures))}.")
    results = {
        "serving_default": signatures["serving_default"](
            image_bytes=tf.constant(list(images))),
        "serving_b64": signatures["serving_b64"](
            image_b64=tf.constant([base64.b64encode(b) for b in images])),
        "serving_pixels": signatures["serving_pixels"](pixels=tf.constant(pixels)),
    }
    checks = {}
    for signature, out in results.items():
        check = _compare("savedmodel", out["probabilities"].numpy(), expected)
        # Labels must be the class names of the top-k ids the model itself would give.
        ids = out["class_ids"].numpy()
        labels = [[x.decode("utf-8") for x in row] for row in out["labels"].numpy()]
        names = [[source.class_names[i] for i in row] for row in ids]
        if labels != names:
            raise ExportCheckError(f"Self-check failed for {signature}: its labels {labels[:2]} "
                                   f"do not match the class names of its top-k ids {names[:2]}.")
        _enforce(f"the SavedModel's {signature} signature", check)
        checks[signature] = check
    return {"max_abs_diff": max(c["max_abs_diff"] for c in checks.values()),
            "top1_agreement": min(c["top1_agreement"] for c in checks.values()),
            "samples": len(images), "tolerance": TOLERANCES["savedmodel"],
            "signatures": checks}


# --------------------------------------------------------------------------------- TFLite


def _representative_pixels(folder: Path, source: _Source):
    paths = list_images(folder, limit=MAX_REPRESENTATIVE_IMAGES)
    if not paths:
        raise FileNotFoundError(f"The representative folder {folder} holds no images "
                                f"({', '.join(IMAGE_EXTENSIONS)}).")
    return reference_pixels(_read_images(paths), source)


def _write_tflite(probability_model, variant: str, target: Path, representative=None) -> None:
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
    _quiet_call(lambda: probability_model.export(str(target), format="litert", verbose=False,
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

    interpreter = _tflite_interpreter(model, num_threads)
    return _invoke_tflite(interpreter, np.asarray(pixels, dtype="float32"))


def _tflite_interpreter(model, num_threads=None):
    import tensorflow as tf

    with warnings.catch_warnings():
        # tf.lite.Interpreter warns that it moves to ai-edge-litert; the API is the same.
        warnings.simplefilter("ignore")
        if isinstance(model, bytes):
            return tf.lite.Interpreter(model_content=model, num_threads=num_threads)
        return tf.lite.Interpreter(model_path=str(model), num_threads=num_threads)


def _invoke_tflite(interpreter, pixels):
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


# ----------------------------------------------------------------------------------- ONNX


def _write_onnx(probability_model, target: Path, class_names: Sequence[str]) -> None:
    try:
        import onnx
        import tf2onnx  # noqa: F401
    except ImportError:
        raise ImportError("ONNX export needs the optional extra: pip install 'zoo[onnx]' "
                          "(tf2onnx, onnx, onnxruntime).") from None
    # Keras' own ONNX export drives tf2onnx (and patches it for NumPy 2).
    _quiet_call(lambda: probability_model.export(str(target), format="onnx", verbose=False))
    # tf2onnx names the output after the graph tensor ("Identity:0") and the batch axis
    # "unk__N"; give them the names the other formats use, and carry the class names.
    graph_model = onnx.load(str(target))
    graph = graph_model.graph
    old = graph.output[0].name
    for node in graph.node:
        node.output[:] = ["probabilities" if o == old else o for o in node.output]
    graph.output[0].name = "probabilities"
    for value in (graph.input[0], graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    entry = graph_model.metadata_props.add()
    entry.key, entry.value = "class_names", json.dumps(list(class_names))
    onnx.checker.check_model(graph_model)
    onnx.save(graph_model, str(target))


def run_onnx(path: str | os.PathLike, pixels):
    """Runs an exported ONNX classifier with onnxruntime.

    Args:
        path: The ``.onnx`` file.
        pixels: float32 [N, H, W, C] in [0, 255].

    Returns:
        Probabilities, float32 [N, C].
    """
    import numpy as np

    try:
        import onnxruntime
    except ImportError:
        raise ImportError("Checking ONNX needs onnxruntime: pip install 'zoo[onnx]'.") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.asarray(pixels, dtype="float32")})[0]


def _quiet_call(fn: Callable[[], Any]) -> Any:
    """Calls ``fn`` with converters' progress chatter (Python logging, warnings) lowered."""
    import logging

    loggers = [logging.getLogger(n) for n in ("tf2onnx", "absl", "tensorflow")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# --------------------------------------------------------------------------------- export


class Exported(dict):
    """The paths ``export`` wrote, by format (plus ``"report"``), and the self-check figures.

    Attributes:
        version_dir: The version directory.
        checks: Per format: ``max_abs_diff``, ``top1_agreement``, ``samples`` (and
            ``tolerance`` where enforced).
        report: The whole ``export.json``.
    """

    def __init__(self, paths: dict, version_dir: Path, report: dict):
        super().__init__(paths)
        self.version_dir = version_dir
        self.report = report
        self.checks = report["checks"]


def _parse_formats(formats: str | Sequence[str]) -> list[str]:
    if isinstance(formats, str):
        formats = [f for f in formats.split(",")]
    chosen = [f.strip().lower() for f in formats if f.strip()]
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise ValueError(f"Unknown export format(s) {unknown or formats!r}; choose from "
                         f"{', '.join(FORMATS)}.")
    return list(dict.fromkeys(chosen))


def savedmodel_bytes(version_dir: str | os.PathLike) -> int:
    """Size of the SavedModel's own files in a version directory (not TFLite, ONNX, report)."""
    root = Path(version_dir)
    parts = [root / "saved_model.pb", root / "fingerprint.pb",
             *(p for d in ("variables", "assets") for p in (root / d).rglob("*"))]
    return sum(p.stat().st_size for p in parts if p.is_file())


def existing_versions(out_dir: str | os.PathLike) -> list[int]:
    """Lists the numeric version directories under an export directory, ascending."""
    root = Path(out_dir)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def export(
    model_or_run_dir,
    out_dir: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    formats: str | Sequence[str] = ("savedmodel",),
    version: int | None = None,
    overwrite: bool = False,
    top_k: int = 5,
    model_name: str | None = None,
    model_card: str | os.PathLike | None = None,
    sample_images: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    representative_images: str | os.PathLike | None = None,
) -> Exported:
    """Exports a model for deployment and checks the result against the Keras model.

    Args:
        model_or_run_dir: A ``keras.Model``, a ``.keras`` file or a run directory (see the
            module docstring for its contract).
        out_dir: The export base directory; the version goes into ``out_dir/<version>/``.
        class_names: One name per output; read from the run directory when one is given,
            else the class indices.
        formats: Any of ``savedmodel``, ``tflite``, ``tflite-fp16``, ``tflite-dynamic``,
            ``tflite-int8``, ``onnx``, as a list or a comma-separated string.
        version: The version number; defaults to one more than the highest present (1 in
            an empty directory), which TF Serving then serves.
        overwrite: Replace an existing ``version``.
        top_k: How many labels and scores the signatures return.
        model_name: The zoo name whose spec gives the eval transform, when the model's own
            name is not registered.
        model_card: A model card: a Markdown file, or its text (anything with a line
            break); defaults to the run's README.md, else a generated one.
        sample_images: Images for the self-check (a folder or files); default: the run's
            ``samples/`` folder, else synthetic images in every format.
        representative_images: A folder of task images for int8 calibration (default: the
            run's ``samples/``).

    Returns:
        An :class:`Exported` dict of paths by format, with ``"report"`` (export.json).

    Raises:
        FileExistsError: When ``version`` exists and ``overwrite`` is False.
        ExportCheckError: When an artifact does not reproduce the Keras model.
    """
    import numpy as np

    from zoo import __version__

    chosen = _parse_formats(formats)
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1; got {top_k!r}.")
    out = Path(out_dir)
    if version is not None and (not isinstance(version, int) or version < 0):
        raise ValueError(f"version must be a non-negative integer (TF Serving's version "
                         f"directories are numbers); got {version!r}.")
    if version is None:
        version = (existing_versions(out) or [0])[-1] + 1
    target = out / str(version)
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"Version {version} already exists at {target}. Pass overwrite=True (--overwrite) "
            f"to replace it, or leave the version out to write {existing_versions(out)[-1] + 1}.")

    source = _resolve_source(model_or_run_dir, class_names, model_name, model_card)
    mixed = sorted({layer.dtype_policy.name for layer in source.model.layers
                    if layer.dtype_policy.name != "float32"})
    if mixed and any(f != "savedmodel" for f in chosen):
        raise ValueError(
            f"{source.name!r} computes in {', '.join(mixed)} (mixed precision); TFLite and "
            f"ONNX need a float32 model. Build it again under the float32 policy and copy "
            f"the weights (model.set_weights), or export a run directory, whose best.keras "
            f"is float32.")
    if "tflite-int8" in chosen:
        folder = representative_images or source.samples_dir
        if folder is None:
            raise ValueError("The tflite-int8 format calibrates on real images: pass "
                             "representative_images= (--representative DIR), a folder of a "
                             "few hundred images like those the model will see.")
        representative = _representative_pixels(Path(folder), source)
    else:
        representative = None

    if sample_images is None and source.samples_dir is not None:
        sample_images = source.samples_dir
    if sample_images is None:
        images = synthetic_images()
    elif isinstance(sample_images, (str, os.PathLike)):
        images = _read_images(list_images(sample_images, limit=32))
    else:
        images = _read_images(sample_images)
    if not images:
        raise FileNotFoundError(f"No sample images found in {sample_images}.")

    probability_model = _probability_model(source.model)
    pixels = reference_pixels(images, source)
    expected = np.asarray(probability_model(pixels, training=False), dtype="float32")

    out.mkdir(parents=True, exist_ok=True)
    # Inside out_dir, so the final rename stays on one filesystem and is atomic; the
    # leading dot and the non-numeric name keep TF Serving from loading it.
    staging = Path(tempfile.mkdtemp(prefix=f".zoo-export-{version}-", dir=out))
    try:
        with tempfile.TemporaryDirectory(prefix="zoo-export-scratch-") as scratch:
            checks: dict[str, dict] = {}
            files: dict[str, str] = {}
            for fmt in chosen:
                path = staging / FORMATS[fmt]
                if fmt == "savedmodel":
                    _write_savedmodel(source, probability_model, staging, top_k, Path(scratch))
                    checks[fmt] = _check_savedmodel(staging, source, images, pixels, expected)
                    checks[fmt]["bytes"] = savedmodel_bytes(staging)
                elif fmt.startswith("tflite"):
                    _write_tflite(probability_model, fmt, path, representative)
                    got = run_tflite(path, pixels)
                    checks[fmt] = _compare(fmt, got, expected,
                                           {"bytes": path.stat().st_size})
                    _enforce(fmt, checks[fmt])
                elif fmt == "onnx":
                    _write_onnx(probability_model, path, source.class_names)
                    checks[fmt] = _compare(fmt, run_onnx(path, pixels), expected,
                                           {"bytes": path.stat().st_size})
                    _enforce(fmt, checks[fmt])
                files[fmt] = FORMATS[fmt]
                _after_format_hook(fmt, staging)
            report = {
                "zoo_version": __version__,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"),
                "model": source.name,
                "version": version,
                "class_names": source.class_names,
                "class_names_from": source.class_names_from,
                "input": {"height": source.image_size[0], "width": source.image_size[1],
                          "channels": source.channels, "range": [0, 255]},
                "eval_transform": {"crop_fraction": source.crop_fraction,
                                   "interpolation": source.interpolation, "antialias": True},
                "top_k": min(top_k, len(source.class_names)),
                "signatures": (["serving_default", "serving_b64", "serving_pixels"]
                               if "savedmodel" in chosen else []),
                "files": files,
                "checks": checks,
            }
            (staging / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n",
                                               encoding="utf-8")
        _move_into_place(staging, target, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    paths = {fmt: str(target if rel == "." else target / rel) for fmt, rel in files.items()}
    paths["report"] = str(target / REPORT_FILE)
    return Exported(paths, target, report)


def _after_format_hook(fmt: str, staging: Path) -> None:
    """Called after each format is written; the atomicity tests crash the process here."""


def _move_into_place(staging: Path, target: Path, overwrite: bool) -> None:
    os.chmod(staging, 0o755)  # mkdtemp makes it private; a server may run as another user
    if target.exists():
        if not overwrite:
            raise FileExistsError(f"Version directory {target} appeared while exporting; "
                                  f"the export was not moved there. Export again.")
        # POSIX cannot rename a directory over a non-empty one: move the old version aside
        # first. In between the version is briefly absent, never half-written.
        retired = Path(tempfile.mkdtemp(prefix=f".zoo-retired-{target.name}-",
                                        dir=target.parent))
        os.rename(target, retired / target.name)
        os.rename(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.rename(staging, target)


class _CallableModule(types.ModuleType):
    """Lets ``zoo.export(...)`` work after ``import zoo.export``.

    Importing the submodule makes the package attribute ``zoo.export`` the module, which
    would shadow the function of the same name; the module therefore forwards calls to it.
    """

    def __call__(self, *args, **kwargs):
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
