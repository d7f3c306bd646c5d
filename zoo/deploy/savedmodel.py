"""The SavedModel: a graph that takes image bytes, base64 text or pixels, and gives labels.

Its signatures, all with the outputs ``probabilities`` [B, C] float32, ``scores`` [B, k]
float32, ``labels`` [B, k] string and ``class_ids`` [B, k] int32 (the top ``k`` classes,
best first, ``k`` set at export):

- ``serving_default``: ``image_bytes``, a [B] string tensor of encoded images (JPEG, PNG,
  GIF, BMP or WebP). Decoding, the grayscale conversion, the resize, the centre crop and
  the normalisation all happen inside, exactly as at evaluation: the signature runs the
  pipelines' eval path (``pipelines.make_eval_transform``) at the exported geometry, so a
  JPEG is turned upright by its EXIF orientation and only its crop window is decoded, as in
  ``zoo evaluate``. Through TF Serving's REST API, send the bytes base64-encoded in
  ``{"b64": ...}`` objects: the server decodes them into this string tensor (the ``_bytes``
  suffix is the name other servers, such as Vertex AI, look for).
- ``serving_b64``: ``image_b64``, the same images as base64 *text* (standard or URL-safe
  alphabet, padding and line breaks optional, a ``data:image/...;base64,`` prefix allowed),
  for clients that cannot use the ``{"b64": ...}`` wrapper.
- ``serving_pixels``: ``pixels``, float32 [B, H, W, C] in [0, 255] at the model's input
  size, already decoded and cropped; the Keras model's own input. Another size or channel
  count fails with ``InvalidArgumentError`` naming the expected shape, and NaN or infinite
  pixels are refused the same way.

Exported with test-time augmentation (``zoo.export(..., tta=...)``, one of
``zoo.recipes.tta.TTA_MODES``), ``probabilities`` is the mean over the mode's views of each
image, run through the model as one batch (``zoo.recipes.tta.average``): the bytes and
base64 signatures cut them from the decoded image as ``zoo evaluate --tta`` does (the
five-crop views from the resized image before its centre crop); ``serving_pixels``, whose
pixels are already cropped, applies the mode's flip alone (:func:`pixels_tta`).

A multi-label run's model (logits out) is served with a sigmoid per class: its
``probabilities`` are independent per class, and three more outputs give the labels at or
above the per-class thresholds the run chose on its validation split (``run.json``
``thresholds``, also in ``export.json``). TF Serving returns dense tensors only, so the
list is padded: ``predicted_labels`` [B, C] string (the predicted classes, most probable
first, then ``""``), ``predicted_count`` [B] int32 (how many) and ``predicted`` [B, C]
bool (by class id).

A bad image (not an image, empty, truncated) makes the request fail with
``InvalidArgumentError`` and the decoder's message ("Unknown image file format...",
"Input is empty", "Invalid JPEG data..."), as does a file the graph's decoder does not read
("Unsupported BMP (4 bits per pixel, compression 0)...", "Unsupported WebP: an
animation"). TF Serving answers that with HTTP 400 / gRPC ``INVALID_ARGUMENT`` for that
request and goes on serving. TensorFlow has no in-graph way to catch a failed decode per
image, so a batch with one bad image fails as a whole; the client learns which one by
resending singly (``zoo predict`` does that).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from zoo.deploy import parity
from zoo.recipes import tta

SIGNATURES = ("serving_default", "serving_b64", "serving_pixels")
CLASS_NAMES_FILE = "class_names.txt"
MODEL_CARD = "README.md"


def pixels_tta(mode: str) -> str:
    """The TTA ``serving_pixels`` applies under ``mode``: its pixels are already cropped.

    Five-crop views come from the resized image before the centre crop, which a client's
    cropped pixels no longer hold, so only the flip of ``mode`` is applied there.
    """
    return "flip" if tta.flips(mode) else "none"


def tta_card_section(mode: str) -> str:
    """The model card's lines on the test-time augmentation baked into the signatures."""
    if mode == "none":
        return ""
    views = tta.VIEWS[mode]
    what = {"flip": "the eval crop and its left-right mirror",
            "five_crop": "the four corner crops and the centre crop of the image resized "
                         "as the eval transform resizes it (before its centre crop)",
            "flip+five_crop": "the four corner crops and the centre crop of the resized "
                              "image, and their left-right mirrors"}[mode]
    pixels = pixels_tta(mode)
    return (f"\n## Test-time augmentation\n\n"
            f"Exported with `tta={mode}`: `serving_default` and `serving_b64` return the "
            f"mean of the probabilities of {views} views of each image, {what}; each "
            f"request costs {views} forward passes per image. `serving_pixels` takes "
            f"pixels already cropped, so it applies "
            f"{'the flip alone (2 views)' if pixels == 'flip' else 'none (1 view)'}.\n")


def write(source, probability_model, target: Path, top_k: int, scratch: Path,
          tta_mode: str = "none") -> None:
    """Writes the SavedModel with its three signatures, the class names and the card.

    Args:
        source: The :class:`zoo.deploy.source.Source` exported (class names, geometry,
            card).
        probability_model: The Keras model with probabilities as its one output.
        target: The directory to write (the version's staging directory).
        top_k: How many labels and scores the signatures return.
        scratch: A temporary directory for the class-names asset before it is copied.
        tta_mode: Test-time augmentation baked into the signatures (one of
            ``zoo.recipes.tta.TTA_MODES``): the bytes and base64 signatures average the
            probabilities of its views, ``serving_pixels`` those of :func:`pixels_tta`.
    """
    import keras
    import tensorflow as tf

    geometry = source.geometry
    height, width = geometry.image_size
    channels = geometry.channels
    table = _label_table(source.class_names, scratch / CLASS_NAMES_FILE)
    k = min(top_k, len(source.class_names))
    five_crop = tta.needs_views(tta_mode)
    transform = parity.eval_transform(geometry, five_crop=five_crop)
    decoded_shape = ([5] if five_crop else []) + [height, width, channels]

    def outputs(pixels, mode):
        # The views of all images go through the model as one batch (tta.average).
        probabilities = tta.average(lambda x: probability_model(x, training=False),
                                    pixels, mode)
        scores, class_ids = tf.math.top_k(probabilities, k=k)
        labels = table.lookup(tf.cast(class_ids, tf.int64))
        found = {"probabilities": probabilities, "scores": scores, "labels": labels,
                 "class_ids": class_ids}
        if source.multi_label:
            found.update(_above_thresholds(probabilities, source.thresholds, table))
        return found

    def from_bytes(image_bytes):
        pixels = tf.map_fn(transform, image_bytes, fn_output_signature=tf.TensorSpec(
            decoded_shape, tf.float32))
        return outputs(pixels, tta_mode)

    def from_b64(image_b64):
        return from_bytes(tf.io.decode_base64(_urlsafe_base64(image_b64)))

    def from_pixels(pixels):
        # A signature's TensorSpec is not enforced when it is called (nor by TF Serving):
        # without these checks another size is answered silently or fails deep inside a
        # convolution, and NaN pixels give NaN probabilities with a label.
        expected = f"[batch, {height}, {width}, {channels}]"
        tf.debugging.assert_equal(
            tf.shape(pixels)[1:], tf.constant([height, width, channels]),
            message=f"serving_pixels takes float32 pixels of shape {expected} (this model's "
                    "input, already decoded, resized and centre-cropped, values 0..255); "
                    "send images of another size or channel count to serving_default as "
                    "encoded bytes. The shape received")
        tf.debugging.assert_all_finite(
            pixels, message="serving_pixels got NaN or infinite pixels; send finite "
                            "values in 0..255")
        return outputs(pixels, pixels_tta(tta_mode))

    archive = keras.export.ExportArchive()
    # The model is deliberately not passed to archive.track(): the endpoints capture its
    # variables anyway, and tracking the Keras wrappers as well stores every weight twice
    # (keras-team/keras#23553: twice the size on disk and in a server's memory).
    archive.track(table)
    archive.add_endpoint("serving_default", from_bytes,
                         [tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.add_endpoint("serving_b64", from_b64,
                         [tf.TensorSpec([None], tf.string, name="image_b64")])
    archive.add_endpoint("serving_pixels", from_pixels,
                         [tf.TensorSpec([None, height, width, channels], tf.float32,
                                        name="pixels")])
    archive.write_out(str(target), verbose=False)
    # The card is documentation for people and servers' model browsers, not read by the
    # graph, so it goes into assets/ as a plain file.
    (target / "assets").mkdir(exist_ok=True)
    (target / "assets" / MODEL_CARD).write_text(source.card + tta_card_section(tta_mode),
                                                encoding="utf-8")


def _above_thresholds(probabilities, thresholds: Sequence[float], table) -> dict:
    """A multi-label model's predicted classes: those at or above their thresholds.

    TF Serving returns dense tensors only, so the list is padded: ``predicted_labels``
    [B, C] string holds each image's classes at or above their thresholds, most probable
    first, then ``""``; ``predicted_count`` [B] int32 says how many there are, and
    ``predicted`` [B, C] bool marks them by class id.
    """
    import tensorflow as tf

    predicted = probabilities >= tf.constant(thresholds, tf.float32)[None, :]
    # Predicted classes sort before the others (2 + p > any p), each group by probability.
    order = tf.argsort(probabilities + 2.0 * tf.cast(predicted, tf.float32), axis=-1,
                       direction="DESCENDING")
    names = table.lookup(tf.cast(order, tf.int64))
    chosen = tf.gather(predicted, order, batch_dims=1)
    return {"predicted": predicted,
            "predicted_labels": tf.where(chosen, names, tf.constant("")),
            "predicted_count": tf.reduce_sum(tf.cast(predicted, tf.int32), axis=-1)}


def _label_table(class_names: Sequence[str], names_file: Path):
    """A lookup table from class id to name, initialised from an asset file.

    The labels the graph returns are the file shipped in ``assets/``, so the two cannot
    disagree.
    """
    import tensorflow as tf

    names_file.write_text("".join(f"{c}\n" for c in class_names), encoding="utf-8")
    return tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(str(names_file), tf.int64,
                                      tf.lookup.TextFileIndex.LINE_NUMBER, tf.string,
                                      tf.lookup.TextFileIndex.WHOLE_LINE),
        default_value="")


def _urlsafe_base64(text):
    """Base64 text in any common spelling, as the URL-safe alphabet tf.io.decode_base64 reads."""
    import tensorflow as tf

    text = tf.strings.regex_replace(text, r"^data:[^,]*,", "")
    text = tf.strings.regex_replace(text, r"\s", "")
    return tf.strings.regex_replace(tf.strings.regex_replace(text, r"\+", "-"), "/", "_")


def check(path: Path, class_names: Sequence[str], images: Sequence[bytes], pixels,
          expected, thresholds: Sequence[float] | None = None,
          expected_pixels=None) -> dict:
    """Loads the SavedModel back and checks each signature against the Keras model.

    Args:
        path: The SavedModel directory.
        class_names: The class names the labels must be.
        images: The sample images, encoded (for the bytes and base64 signatures).
        pixels: Their eval pixels (for the pixels signature).
        expected: The Keras model's probabilities on ``images`` (under the exported
            TTA: ``zoo.recipes.tta.predict`` on their views).
        thresholds: A multi-label model's per-class thresholds (its predicted labels are
            checked against the Keras model's probabilities at them), or None.
        expected_pixels: The Keras model's probabilities on ``pixels`` under
            :func:`pixels_tta`; default ``expected`` (no TTA).

    Returns:
        The worst figures over the signatures, and each signature's under ``signatures``.

    Raises:
        ExportCheckError: When a signature is missing, differs beyond the tolerance, or
            its labels are not the class names of its top-k ids.
    """
    import base64

    import tensorflow as tf

    signatures = tf.saved_model.load(str(path)).signatures
    missing = sorted(set(SIGNATURES) - set(signatures))
    if missing:
        raise parity.ExportCheckError(f"The SavedModel at {path} lacks signatures {missing}.")
    results = {
        "serving_default": signatures["serving_default"](
            image_bytes=tf.constant(list(images))),
        "serving_b64": signatures["serving_b64"](
            image_b64=tf.constant([base64.b64encode(b) for b in images])),
        "serving_pixels": signatures["serving_pixels"](pixels=tf.constant(pixels)),
    }
    checks = {}
    for signature, out in results.items():
        wanted = expected if expected_pixels is None or signature != "serving_pixels" \
            else expected_pixels
        result = parity.compare("savedmodel", out["probabilities"].numpy(), wanted)
        # Labels must be the class names of the top-k ids the model itself would give.
        labels = [[x.decode("utf-8") for x in row] for row in out["labels"].numpy()]
        names = [[class_names[i] for i in row] for row in out["class_ids"].numpy()]
        if labels != names:
            raise parity.ExportCheckError(
                f"Self-check failed for {signature}: its labels {labels[:2]} do not match "
                f"the class names of its top-k ids {names[:2]}.")
        parity.enforce(f"the SavedModel's {signature} signature", result)
        if thresholds is not None:
            _check_predicted(signature, out, class_names, thresholds, wanted)
        checks[signature] = result
    return {"max_abs_diff": max(c["max_abs_diff"] for c in checks.values()),
            "top1_agreement": min(c["top1_agreement"] for c in checks.values()),
            "samples": len(images), "tolerance": parity.TOLERANCES["savedmodel"],
            "signatures": checks}


def _check_predicted(signature: str, out: dict, class_names: Sequence[str],
                     thresholds: Sequence[float], expected) -> None:
    """A multi-label signature's predicted labels must be the Keras model's at the thresholds.

    A probability within the parity tolerance of its threshold may fall either way; it is
    not counted against the export.
    """
    import numpy as np

    expected = np.asarray(expected)
    limits = np.asarray(thresholds)[None, :]
    close = np.abs(expected - limits) <= parity.TOLERANCES["savedmodel"]
    for row, (labels, count) in enumerate(zip(out["predicted_labels"].numpy(),
                                              out["predicted_count"].numpy())):
        got = {x.decode("utf-8") for x in labels[:count]}
        sure = {class_names[c] for c in np.flatnonzero((expected[row] >= limits[0]) &
                                                       ~close[row])}
        unsure = {class_names[c] for c in np.flatnonzero(close[row])}
        if not sure <= got <= sure | unsure or any(labels[count:]):
            raise parity.ExportCheckError(
                f"Self-check failed for {signature}: image {row}'s predicted labels "
                f"{sorted(got)} are not the Keras model's classes at their thresholds "
                f"{sorted(sure)}.")
