"""The embedded default job: scikit-learn's handwritten digits, LeNet-5, export, predict."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger("zoo")


def write_digits(root: str | Path) -> Path:
    """Writes scikit-learn's 1,797 handwritten digits as an image folder ``root/<digit>/``.

    The images are the real 8x8 scans (16 grey levels) scaled to 8-bit PNGs; nothing is
    resampled here, the pipeline resizes them like any other photo. An existing, complete
    folder is reused.

    Args:
        root: Folder to write into.

    Returns:
        ``root``.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    root = Path(root)
    digits = load_digits()
    # The marker lives beside the folder: anything inside it would be taken for an image.
    marker = root.with_name(root.name + ".complete")
    if marker.exists():
        return root
    for index, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.round(image / 16.0 * 255).astype("uint8")
        Image.fromarray(pixels, mode="L").save(folder / f"digit_{index:04d}.png")
    marker.write_text(json.dumps({"images": int(len(digits.images)), "source":
                                  "sklearn.datasets.load_digits"}))
    return root


def run_demo(out_dir: str | Path = "runs/demo", *, epochs: int | None = None,
             overwrite: bool = True) -> dict:
    """Trains LeNet-5 on the digits, exports it and predicts one image with the export.

    Args:
        out_dir: Where the data, the run and the export go.
        epochs: Overrides the recipe's epochs (tests use a few).
        overwrite: Start a finished demo again (the previous one is kept, renamed).

    Returns:
        A summary dict: validation accuracy, paths and the prediction.
    """
    import zoo
    from zoo.recipes.finetune import finetune

    out_dir = Path(out_dir)
    data_root = write_digits(out_dir / "digits")
    result = finetune("lenet5", data_root, weights=None, epochs=epochs,
                      out_dir=out_dir / "run", overwrite=overwrite, verbose=2)
    summary = {"val_accuracy": result.metrics["val_accuracy"], "run_dir": str(result.run_dir)}
    paths = zoo.export(result.run_dir, out_dir / "export", overwrite=True)
    summary["export"] = {k: str(v) for k, v in paths.items()}
    sample = sorted((data_root / "7").glob("*.png"))[0]
    summary["prediction"] = _predict_with_savedmodel(paths["savedmodel"], sample)
    summary["sample"] = str(sample)
    return summary


def _predict_with_savedmodel(path, image_path: Path) -> dict:
    """Asks the exported SavedModel, loaded with TensorFlow alone, about one image file."""
    import tensorflow as tf

    served = tf.saved_model.load(str(path))
    outputs = served.signatures["serving_default"](
        tf.constant([Path(image_path).read_bytes()]))
    labels = [v.decode() for v in outputs["labels"].numpy()[0]]
    scores = [float(v) for v in outputs["scores"].numpy()[0]]
    return {"labels": labels, "scores": scores}
