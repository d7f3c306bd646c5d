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
        timm/                    timm's Hub layout: config.json, model.safetensors,
                                 README.md (format "timm", see :mod:`zoo.deploy.timm`)

One module per job:

- :mod:`zoo.deploy.source`: what is exported, opened by ``zoo.rundir.open_model`` (a run
  directory, a ``.keras`` file or a ``keras.Model``): the model, its class names, the
  eval geometry the run recorded, the model card, the sample images;
- :mod:`zoo.deploy.savedmodel`: the SavedModel and its signatures (``serving_default`` on
  image bytes, ``serving_b64`` on base64 text, ``serving_pixels``), the bytes path being
  ``pipelines.make_eval_transform`` at the exported geometry;
- :mod:`zoo.deploy.tflite` and :mod:`zoo.deploy.onnx`: the pixels formats (neither has an
  image decoder or string lookups among its builtin operations);
- :mod:`zoo.deploy.parity`: the self-checks, their tolerances, the reference pixels and
  the sample images;
- :mod:`zoo.deploy.layout`: the version directories and the atomic move.

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
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Sequence
from pathlib import Path

from zoo.deploy import layout, onnx, parity, savedmodel, tflite
from zoo.deploy import timm as timm_format
from zoo.deploy.layout import FORMATS, REPORT_FILE, existing_versions, savedmodel_bytes
from zoo.deploy.onnx import run_onnx
from zoo.deploy.parity import (
    TOLERANCES,
    ExportCheckError,
    reference_pixels,
    synthetic_images,
)
from zoo.deploy.source import Source, probability_model, resolve_source
from zoo.deploy.tflite import run_tflite

__all__ = [
    "FORMATS",
    "REPORT_FILE",
    "TOLERANCES",
    "ExportCheckError",
    "Exported",
    "Source",
    "existing_versions",
    "export",
    "probability_model",
    "reference_pixels",
    "resolve_source",
    "run_onnx",
    "run_tflite",
    "savedmodel_bytes",
    "synthetic_images",
]


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


def export(
    model_or_run_dir,
    out_dir: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    formats: str | Sequence[str] = ("savedmodel",),
    version: int | None = None,
    overwrite: bool = False,
    top_k: int = 5,
    calibrate: bool = True,
    model_name: str | None = None,
    model_card: str | os.PathLike | None = None,
    sample_images: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    representative_images: str | os.PathLike | None = None,
    tta: str | None = "none",
) -> Exported:
    """Exports a model for deployment and checks the result against the Keras model.

    Args:
        model_or_run_dir: A ``keras.Model``, a ``.keras`` file or a run directory (read by
            ``zoo.rundir``; the SavedModel serves the eval geometry the run recorded).
        out_dir: The export base directory; the version goes into ``out_dir/<version>/``.
        class_names: One name per output; read from the run directory when one is given,
            else the class indices.
        formats: Any of ``savedmodel``, ``tflite``, ``tflite-fp16``, ``tflite-dynamic``,
            ``tflite-int8``, ``onnx``, ``timm`` (a zoo twin as timm's Hub layout), as a
            list or a comma-separated string.
        version: The version number; defaults to one more than the highest present (1 in
            an empty directory), which TF Serving then serves.
        overwrite: Replace an existing ``version``.
        top_k: How many labels and scores the signatures return.
        calibrate: Apply the run's fitted temperature (``run.json`` ``calibration``): the
            probabilities of every format but ``timm`` (raw weights) are
            ``softmax(log(p) / T)``; the ranking of the classes does not change. Recorded
            in ``export.json`` (``calibration``) and the model card. Without a fitted
            temperature (no run, multi-label, no validation split) there is none to apply.
        model_name: The zoo name whose spec gives the eval transform, when the model's own
            name is not registered.
        model_card: A model card: a Markdown file, or its text (anything with a line
            break); defaults to the run's README.md, else a generated one.
        sample_images: Images for the self-check (a folder or files); default: the run's
            ``samples/`` folder, else synthetic images in every format.
        representative_images: A folder of task images for int8 calibration (default: the
            run's ``samples/``).
        tta: Test-time augmentation baked into the SavedModel's signatures, one of
            ``zoo.recipes.tta.TTA_MODES`` (single-label models only): ``serving_default``
            and ``serving_b64`` average the probabilities of the mode's views, cut from
            the decoded image as ``zoo.evaluate(..., tta=...)`` cuts them;
            ``serving_pixels``, whose pixels are already cropped, applies only the flip
            (see ``savedmodel.pixels_tta``). The other formats are the plain model.
            Recorded in ``export.json`` (``tta``) and the SavedModel's model card.

    Returns:
        An :class:`Exported` dict of paths by format, with ``"report"`` (export.json).

    Raises:
        FileExistsError: When ``version`` exists and ``overwrite`` is False.
        ExportCheckError: When an artifact does not reproduce the Keras model.
    """
    import numpy as np

    from zoo.recipes import tta as tta_module

    tta = tta_module.check_tta(tta)
    chosen = layout.parse_formats(formats)
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1; got {top_k!r}.")
    version, target = layout.version_target(out_dir, version, overwrite)
    source = resolve_source(model_or_run_dir, class_names=class_names,
                            model_name=model_name, model_card=model_card,
                            calibrate=calibrate)
    _check_float32(source, chosen)
    if tta != "none" and source.multi_label:
        raise ValueError(f"tta={tta!r} is for single-label models; {source.model_name!r} "
                         f"is a multi-label run's model (export it with tta='none').")
    representative = _representative(chosen, representative_images, source)
    images = parity.sample_images(sample_images, source.samples_dir)

    if source.temperature is not None:
        source.card = source.card.rstrip("\n") + "\n" + _calibration_card_line(source)
    model = probability_model(source.model, multi_label=source.multi_label,
                              temperature=source.served_temperature)
    pixels = reference_pixels(images, source.geometry)
    expected = np.asarray(model(pixels, training=False), dtype="float32")
    with layout.staged_version(target, overwrite) as staging, \
            layout.scratch_directory() as scratch:
        checks = {}
        for fmt in chosen:
            checks[fmt] = _write_and_check(fmt, staging, source, model, top_k,
                                           representative, Path(scratch),
                                           (images, pixels, expected), tta)
            _after_format_hook(fmt, staging)
        report = _report(source, version, chosen, top_k, checks, tta)
        (staging / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n",
                                           encoding="utf-8")
    paths = {fmt: str(layout.format_path(target, fmt)) for fmt in chosen}
    paths["report"] = str(target / REPORT_FILE)
    return Exported(paths, target, report)


def _check_float32(source: Source, chosen: Sequence[str]) -> None:
    mixed = sorted({layer.dtype_policy.name for layer in source.model.layers
                    if layer.dtype_policy.name != "float32"})
    if mixed and any(f != "savedmodel" for f in chosen):
        raise ValueError(
            f"{source.model_name!r} computes in {', '.join(mixed)} (mixed precision); TFLite "
            f"and ONNX need a float32 model. Build it again under the float32 policy and copy "
            f"the weights (model.set_weights), or export a run directory, whose best.keras "
            f"is float32.")


def _representative(chosen: Sequence[str], folder, source: Source):
    """The int8 calibration pixels, or None when ``tflite-int8`` is not asked for."""
    if "tflite-int8" not in chosen:
        return None
    folder = folder or source.samples_dir
    if folder is None:
        raise ValueError("The tflite-int8 format calibrates on real images: pass "
                         "representative_images= (--representative DIR), a folder of a "
                         "few hundred images like those the model will see.")
    return tflite.representative_pixels(folder, source.geometry)


def _write_and_check(fmt: str, staging: Path, source: Source, model, top_k: int,
                     representative, scratch: Path, samples: tuple,
                     tta: str = "none") -> dict:
    """Writes one format into the staging directory and checks it; returns the figures."""
    images, pixels, expected = samples
    path = layout.format_path(staging, fmt)
    if fmt == "savedmodel":
        savedmodel.write(source, model, staging, top_k, scratch, tta_mode=tta)
        by_bytes, by_pixels = _tta_expected(model, images, pixels, source, tta, expected)
        check = savedmodel.check(staging, source.class_names, images, pixels, by_bytes,
                                 source.thresholds, expected_pixels=by_pixels)
        check["bytes"] = savedmodel_bytes(staging)
        return check
    if fmt == "timm":
        timm_format.write(source, path, _run_metrics(source))
        if source.served_temperature is not None:
            import numpy as np

            # timm's folder holds the weights alone: the raw model, whatever is served.
            raw = probability_model(source.model, multi_label=source.multi_label)
            expected = np.asarray(raw(pixels, training=False), dtype="float32")
        return timm_format.check(path, source, pixels, expected)
    if fmt.startswith("tflite"):
        tflite.write(model, fmt, path, representative)
        got = run_tflite(path, pixels)
    else:
        onnx.write(model, path, source.class_names)
        got = run_onnx(path, pixels)
    check = parity.compare(fmt, got, expected, {"bytes": path.stat().st_size})
    parity.enforce(fmt, check)
    return check


def _tta_expected(model, images, pixels, source: Source, tta: str, expected):
    """The Keras model's probabilities the SavedModel's bytes and pixels signatures owe.

    Computed eagerly by ``zoo.recipes.tta.predict`` on views made by the eval transform
    outside the graph, so the self-check compares the signatures' in-graph TTA with it.
    """
    from zoo.recipes import tta as tta_module

    if tta == "none":
        return expected, expected
    views = reference_pixels(images, source.geometry, five_crop=True) \
        if tta_module.needs_views(tta) else pixels
    return (tta_module.predict(model, views, tta),
            tta_module.predict(model, pixels, savedmodel.pixels_tta(tta)))


def _run_metrics(source: Source) -> dict | None:
    """The run's metrics.json (beside its samples), for the timm card's results."""
    from zoo import rundir

    if source.samples_dir is None:
        return None
    path = Path(source.samples_dir).parent / rundir.METRICS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _report(source: Source, version: int, chosen: Sequence[str], top_k: int,
            checks: dict, tta: str = "none") -> dict:
    """The contents of ``export.json``."""
    from zoo import __version__
    from zoo.recipes import tta as tta_module

    geometry = source.geometry
    return {
        "zoo_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": source.model_name,
        "version": version,
        "class_names": source.class_names,
        "class_names_from": source.class_names_from,
        "input": {"height": geometry.image_size[0], "width": geometry.image_size[1],
                  "channels": geometry.channels, "range": [0, 255]},
        "eval_transform": {"crop_fraction": geometry.crop_fraction,
                           "interpolation": geometry.interpolation, "antialias": True},
        "top_k": min(top_k, len(source.class_names)),
        "calibration": _calibration_record(source),
        "multi_label": source.multi_label,
        **({"thresholds": source.thresholds} if source.multi_label else {}),
        "signatures": list(savedmodel.SIGNATURES) if "savedmodel" in chosen else [],
        # What each signature averages over; the other formats are the plain model.
        "tta": {"mode": tta, "views": tta_module.VIEWS[tta],
                "serving_pixels": savedmodel.pixels_tta(tta),
                "pixels_views": tta_module.VIEWS[savedmodel.pixels_tta(tta)]},
        "files": {fmt: FORMATS[fmt] for fmt in chosen},
        "checks": checks,
    }


def _calibration_record(source: Source) -> dict:
    """``export.json``'s ``calibration``: the temperature the outputs apply, or why none."""
    served = source.served_temperature
    if served is not None:
        return {"temperature": served, "applied_to": "probabilities of every format but "
                "timm: softmax(log(p) / temperature)", "fitted_on": "validation"}
    if source.temperature is not None and not source.multi_label:
        reason = f"exported with calibrate=False; the run's temperature is {source.temperature}"
    elif source.multi_label:
        reason = "multi-label: the sigmoids are not calibrated"
    else:
        reason = "no fitted temperature (no run, or its run.json calibration has none)"
    return {"temperature": None, "reason": reason}


def _calibration_card_line(source: Source) -> str:
    """The model card's line on the run's temperature: applied or switched off."""
    served, fitted = source.served_temperature, source.temperature
    if served is not None:
        return (f"- Exported probabilities: calibrated at temperature {served:.4g} "
                f"(`softmax(log(p) / T)`, fitted on the validation split) in the "
                f"SavedModel, TFLite and ONNX files; divide raw logits (the timm weights) "
                f"by T for the same. `zoo export --no-calibrate` serves the raw softmax.\n")
    if fitted is not None and not source.multi_label:
        return (f"- Exported probabilities: the raw softmax (exported with "
                f"`--no-calibrate`; the run's temperature {fitted:.4g} is not applied).\n")
    return ""  # a multi-label run: its card says why it has no temperature


def _after_format_hook(fmt: str, staging: Path) -> None:
    """Called after each format is written; the atomicity tests crash the process here."""
