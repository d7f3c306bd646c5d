"""Top-k predictions from a ``.keras`` file, a run directory or an exported SavedModel.

The three inputs run the same evaluation path: for a Keras model (opened by
``zoo.rundir.open_model``) the image bytes go through ``pipelines.make_eval_transform`` at
the run's geometry eagerly (:func:`zoo.deploy.reference_pixels`); a SavedModel's
``serving_default`` signature runs the same function in its graph. Used by ``zoo predict``.

A run's fitted temperature (``run.json`` ``calibration``) is applied to a Keras model's
probabilities by default, as ``zoo export`` bakes it into the SavedModel's signatures, so
the three inputs give the same scores; ``calibrate=False`` gives the raw softmax.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from zoo import rundir
from zoo.deploy import existing_versions, probability_model, reference_pixels, resolve_source
from zoo.deploy.savedmodel import CLASS_NAMES_FILE


class Predictor:
    """A loaded model that answers with top-k labels for image files.

    Args:
        path: A ``.keras`` file, a run directory (with ``run.json``), a SavedModel directory
            (with ``saved_model.pb``) or an export directory of numbered versions (the
            newest is used).
        class_names: Names for a bare ``.keras`` file; ignored for run directories and
            SavedModels, which carry their own.
        model_name: The zoo name, when a ``.keras`` model's own name is not registered.
        calibrate: Scale the probabilities by the run's fitted temperature (a run
            directory, or the ``.keras`` model of one): ``softmax(log(p) / T)``. A
            SavedModel exported calibrated is answered with its export's temperature
            undone when False (``softmax(T * log(q))``, the raw softmax again). The
            ranking of the classes is the same either way.
    """

    def __init__(self, path: str | os.PathLike, *, class_names: Sequence[str] | None = None,
                 model_name: str | None = None, calibrate: bool = True):
        self.path = Path(path)
        #: A multi-label model's per-class thresholds (None for a single-label one).
        self.thresholds: list[float] | None = None
        #: The temperature the probabilities are scaled by (None: the raw softmax).
        self.temperature: float | None = None
        self._undo: float | None = None  # a calibrated SavedModel's T, to take off again
        self.calibrate = bool(calibrate)
        self.kind, self._model, self.class_names = self._load(class_names, model_name)

    def _load(self, class_names, model_name):
        path = self.path
        if path.is_file() and path.suffix == ".keras":
            # A .keras file inside a run directory takes that run's names and model.
            return ("keras", *self._keras_runner(path, class_names, model_name))
        if path.is_dir() and (path / rundir.RUN_FILE).is_file():
            # A run directory carries its own names and model name.
            return ("run", *self._keras_runner(path, None, None))
        savedmodel = _savedmodel_dir(path)
        if savedmodel is not None:
            self.path = savedmodel
            self.thresholds, served = _export_record(savedmodel)
            self.temperature = served if self.calibrate else None
            self._undo = None if self.calibrate else served
            return ("savedmodel", *_load_savedmodel(savedmodel))
        if not path.exists():
            raise FileNotFoundError(f"No model at {path}.")
        raise ValueError(f"{path} is not a .keras file, a run directory (with "
                         f"{rundir.RUN_FILE}) or a SavedModel (with saved_model.pb, "
                         f"or numbered version directories holding one).")

    def _keras_runner(self, path, class_names, model_name):
        import warnings

        with warnings.catch_warnings():
            # Without names the labels are class indices; printing them says as much.
            warnings.simplefilter("ignore")
            source = resolve_source(path, class_names=class_names, model_name=model_name,
                                    calibrate=self.calibrate)
        self.temperature = source.served_temperature
        model = probability_model(source.model, multi_label=source.multi_label,
                                  temperature=self.temperature)
        self.thresholds = source.thresholds

        def run(images: list[bytes]):
            import numpy as np

            pixels = reference_pixels(images, source.geometry)
            return np.asarray(model(pixels, training=False))

        return run, source.class_names

    def probabilities(self, images: Sequence[bytes]):
        """Class probabilities of encoded images, [N, C] float32.

        Raises:
            tf.errors.InvalidArgumentError: When an image cannot be decoded.
        """
        import numpy as np
        import tensorflow as tf

        if self.kind == "savedmodel":
            result = self._model(image_bytes=tf.constant(list(images)))
            probabilities = result["probabilities"].numpy()
            if self._undo is not None:
                from zoo.recipes.calibrate import scale

                # softmax(T * log(q)) of q = softmax(log(p) / T) is p again.
                probabilities = scale(probabilities, 1.0 / self._undo)
            return probabilities
        return np.asarray(self._model(list(images)))

    def predict(self, paths: Sequence[str | os.PathLike], top_k: int = 5) -> list[dict]:
        """Predicts each image file's top-k classes.

        All images go in one batch; when that fails, each is retried alone so that one bad
        file costs only its own answer.

        Args:
            paths: Image files.
            top_k: Classes per image.

        Returns:
            One dict per path: ``{"image", "predictions": [{"label", "score",
            "class_id"}, ...]}``, or ``{"image", "error"}`` for a file that could not be
            read or decoded. A multi-label model's answers add ``"labels"``: the classes
            at or above their thresholds, most probable first (the SavedModel's
            ``predicted_labels``).
        """
        import tensorflow as tf

        if top_k < 1:
            raise ValueError(f"top_k must be at least 1; got {top_k!r}.")
        results: list[dict | None] = [None] * len(paths)
        readable, images = [], []
        for i, p in enumerate(paths):
            try:
                images.append(Path(p).read_bytes())
                readable.append(i)
            except OSError as error:
                results[i] = {"image": str(p), "error": f"cannot read: {error.strerror}"}
        try:
            probabilities = list(self.probabilities(images)) if images else []
        except tf.errors.InvalidArgumentError:
            probabilities = []
            for image in images:
                try:
                    probabilities.append(self.probabilities([image])[0])
                except tf.errors.InvalidArgumentError as error:
                    probabilities.append(_short_message(error))
        for i, probs in zip(readable, probabilities):
            if isinstance(probs, str):
                results[i] = {"image": str(paths[i]), "error": f"not a decodable image: {probs}"}
            else:
                results[i] = {"image": str(paths[i]), "predictions": self._top(probs, top_k)}
                if self.thresholds is not None:
                    results[i]["labels"] = self._above(probs)
        return results

    def _above(self, probs) -> list[str]:
        import numpy as np

        chosen = [i for i in np.argsort(-probs, kind="stable") if probs[i] >= self.thresholds[i]]
        return [self.class_names[i] if self.class_names else str(i) for i in chosen]

    def _top(self, probs, top_k: int) -> list[dict]:
        import numpy as np

        order = np.argsort(-probs, kind="stable")[:top_k]
        names = self.class_names
        return [{"label": names[i] if names else str(i), "score": float(probs[i]),
                 "class_id": int(i)} for i in order]


def _load_savedmodel(savedmodel: Path):
    """The ``serving_default`` signature of a SavedModel and its class names (or None)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(savedmodel))
    if "serving_default" not in loaded.signatures:
        raise ValueError(f"The SavedModel at {savedmodel} has no serving_default "
                         f"signature; export it with zoo export.")
    names_file = savedmodel / "assets" / CLASS_NAMES_FILE
    names = (names_file.read_text(encoding="utf-8").splitlines()
             if names_file.is_file() else None)
    return loaded.signatures["serving_default"], names


def _export_record(savedmodel: Path) -> tuple[list[float] | None, float | None]:
    """A multi-label export's thresholds and the temperature its signatures apply.

    Both come from the export's ``export.json``; None when it has none (or there is no
    ``export.json``, as for a SavedModel zoo did not write).
    """
    import json

    from zoo.deploy import REPORT_FILE

    report = savedmodel / REPORT_FILE
    if not report.is_file():
        return None, None
    found = json.loads(report.read_text(encoding="utf-8"))
    return found.get("thresholds"), (found.get("calibration") or {}).get("temperature")


def _savedmodel_dir(path: Path) -> Path | None:
    if (path / "saved_model.pb").is_file():
        return path
    versions = [v for v in existing_versions(path)
                if (path / str(v) / "saved_model.pb").is_file()]
    return path / str(versions[-1]) if versions else None


def _short_message(error) -> str:
    # TF wraps the decoder's message in graph-execution boilerplate; keep the line that
    # says what is wrong.
    import re

    text = re.sub(r"\{\{[^}]*\}\}", "", str(error.message))  # eager errors' node prefix
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Graph execution error",
                                                              "Detected at node", "<stack",
                                                              "[[", "{{"))]
    text = useful[0] if useful else lines[-1] if lines else "unknown error"
    text = text.split(" [Op:")[0].split("\t")[0].strip()
    # The decoder's own refusals (an unsupported BMP or WebP) come as failed assertions,
    # wrapped differently in a graph and eagerly.
    text = re.sub(r"^assertion failed: \[(.*)\]$", r"\1", text)
    return re.sub(r"^Expected '.*' to be true\. Summarized data: b'(.*)'$", r"\1", text)


def predict(model: str | os.PathLike, images: Sequence[str | os.PathLike], *, top_k: int = 5,
            class_names: Sequence[str] | None = None,
            model_name: str | None = None, calibrate: bool = True) -> list[dict]:
    """Loads a model and predicts the top-k classes of image files.

    Args:
        model: A ``.keras`` file, a run directory or a SavedModel (see :class:`Predictor`).
        images: Image files.
        top_k: Classes per image.
        class_names: Names for a bare ``.keras`` file.
        model_name: The zoo name, when a ``.keras`` model's own name is not registered.
        calibrate: Apply the run's fitted temperature (see :class:`Predictor`).

    Returns:
        One dict per image, see :meth:`Predictor.predict`.
    """
    predictor = Predictor(model, class_names=class_names, model_name=model_name,
                          calibrate=calibrate)
    return predictor.predict(images, top_k=top_k)
