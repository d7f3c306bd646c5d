"""What a run leaves for a person: metrics, plots and the model card."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from zoo import rundir

MAX_GRID = 16


def collect_predictions(model, dataset, max_images: int = 64):
    """Runs ``model`` over ``dataset`` and keeps a few images for the plots.

    Args:
        model: A Keras classifier whose (first) output is probabilities or logits.
        dataset: Batches of ``(pixels, labels)``; labels as class indices or one-hot/soft.
        max_images: How many images to keep, spread over the classes, plus up to
            ``MAX_GRID`` misclassified ones.

    Returns:
        ``(y_true, probabilities, samples, wrong)``; ``samples`` and ``wrong`` are
        ``(images, indices)`` pairs of kept images and their positions in ``y_true``.
    """
    found = _predict(model, dataset, max_images, top_k=0)
    return found["y_true"], found["probs"], found["samples"], found["wrong"]


def _stack(images):
    return np.stack(images) if images else np.zeros((0, 1, 1, 3), "float32")


def _predict(model, dataset, max_images: int, top_k: int) -> dict:
    """:func:`collect_predictions`'s pass, also keeping the ``top_k`` highest-loss images.

    Returns:
        ``y_true``, ``probs``, ``samples``, ``wrong`` (as :func:`collect_predictions`) and
        ``top``: ``(images, indices)`` of the highest cross-entropy, highest first.
    """
    y_true, probs = [], []
    samples, sample_idx, wrong, wrong_idx = [], [], [], []
    top_images, top_idx, top_loss = None, np.zeros(0, "int64"), np.zeros(0, "float32")
    per_class: dict[int, int] = {}
    seen = 0
    for x, y in dataset:
        out = model(x, training=False)
        if isinstance(out, (list, tuple)):
            out = out[0]
        out = np.asarray(out, dtype="float32")
        if out.min() < 0 or not np.allclose(out.sum(axis=1), 1.0, atol=1e-3):
            out = _softmax(out)
        y = np.asarray(y)
        labels = y.argmax(axis=1) if y.ndim == 2 else y
        cap = max(1, max_images // out.shape[1])
        x = np.asarray(x)
        for i, label in enumerate(labels):
            label = int(label)
            if len(samples) < max_images and per_class.get(label, 0) < cap:
                per_class[label] = per_class.get(label, 0) + 1
                samples.append(x[i])
                sample_idx.append(seen + i)
            if len(wrong) < MAX_GRID and out[i].argmax() != label:
                wrong.append(x[i])
                wrong_idx.append(seen + i)
        if top_k:
            # A running top-k: the pass holds k images, never the whole split.
            loss = cross_entropy(labels, out)
            pool = x if top_images is None else np.concatenate([top_images, x])
            losses = np.concatenate([top_loss, loss])
            keep = np.argsort(-losses, kind="stable")[:top_k]
            top_images, top_loss = pool[keep], losses[keep]
            top_idx = np.concatenate([top_idx, seen + np.arange(len(labels))])[keep]
        seen += len(labels)
        y_true.append(labels)
        probs.append(out)
    top = (top_images if top_images is not None else _stack([]), [int(i) for i in top_idx])
    return {"y_true": np.concatenate(y_true).astype("int64"), "probs": np.concatenate(probs),
            "samples": (_stack(samples), sample_idx), "wrong": (_stack(wrong), wrong_idx),
            "top": top}


def cross_entropy(y_true, probs):
    """Per-image cross-entropy ``-log p[true]`` (float32, clipped at ``1e-12``)."""
    picked = np.asarray(probs)[np.arange(len(y_true)), np.asarray(y_true, "int64")]
    return -np.log(np.clip(picked, 1e-12, 1.0)).astype("float32")


def _softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def compute_metrics(y_true, probs, class_names: list[str]) -> dict:
    """Accuracy, top-5 (with more than five classes), and per-class precision/recall/F1.

    Args:
        y_true: True class indices.
        probs: Predicted probabilities ``[N, C]``.
        class_names: Names of the ``C`` classes.

    Returns:
        A JSON-serialisable dict with ``accuracy`` (also as ``val_accuracy``),
        ``top5_accuracy`` when it applies, ``per_class``, ``confusion_matrix`` and
        ``macro_f1``, the mean F1 over the ``macro_f1_classes`` classes that have images
        (a class with support 0 is left out, not counted as F1 0).
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(class_names)))
    y_pred = probs.argmax(axis=1)
    accuracy = float((y_pred == y_true).mean()) if len(y_true) else float("nan")
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    metrics = {
        "accuracy": accuracy,
        "val_accuracy": accuracy,
        "num_images": int(len(y_true)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f),
                   "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        },
        # Classes without validation images have no F1 to speak of: averaging in a 0
        # for each would blame the model for the split.
        "macro_f1": float(np.mean(f1[support > 0])) if (support > 0).any() else float("nan"),
        "macro_f1_classes": int((support > 0).sum()),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
    if len(class_names) > 5:
        top5 = np.argsort(-probs, axis=1)[:, :5]
        metrics["top5_accuracy"] = float((top5 == y_true[:, None]).any(axis=1).mean())
    return metrics

# ------------------------------------------------------------------------ multi-label


def sigmoid(logits):
    """The logistic function, without overflow for large negative logits."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(logits, dtype="float64"))).astype("float32")


def multilabel_predictions(model, dataset):
    """Runs a multi-label model (logits out) over ``dataset``.

    Args:
        model: A Keras model whose (first) output is one logit per class.
        dataset: Batches of ``(pixels, multi-hot labels [B, C])``.

    Returns:
        ``(y_true, probabilities)``: int ``[N, C]`` 0/1 and float32 ``[N, C]``.
    """
    y_true, probs = [], []
    for x, y in dataset:
        out = model(x, training=False)
        if isinstance(out, (list, tuple)):
            out = out[0]
        probs.append(sigmoid(out))
        y_true.append(np.asarray(y) > 0.5)
    if not probs:
        return np.zeros((0, 0), "int64"), np.zeros((0, 0), "float32")
    return np.concatenate(y_true).astype("int64"), np.concatenate(probs)


def average_precisions(y_true, probs) -> tuple[float, list[float | None]]:
    """Average precision per class and their macro mean (the mAP), as scikit-learn's.

    Returns:
        ``(map, per_class)``; a class with no positive has no AP (None) and is left out of
        the mean, which is NaN when no class has one.
    """
    from sklearn.metrics import average_precision_score

    per_class = [float(average_precision_score(y_true[:, c], probs[:, c]))
                 if y_true[:, c].any() else None for c in range(y_true.shape[1])]
    measured = [ap for ap in per_class if ap is not None]
    return (float(np.mean(measured)) if measured else float("nan")), per_class


def choose_thresholds(y_true, probs, default: float = 0.5) -> list[float]:
    """Per class, the probability threshold of the highest F1 on these images.

    The threshold lies midway between the lowest score it accepts and the next lower one.
    A class with no positive among them keeps ``default``.
    """
    from sklearn.metrics import precision_recall_curve

    thresholds = []
    for c in range(y_true.shape[1]):
        if not y_true[:, c].any():
            thresholds.append(default)
            continue
        precision, recall, cuts = precision_recall_curve(y_true[:, c], probs[:, c])
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        cut = cuts[int(np.argmax(f1[:-1]))]
        # Midway to the next lower score: the same F1 here, and no image sits exactly on
        # the threshold, where a rounding difference (another runtime) would flip it.
        below = probs[:, c][probs[:, c] < cut]
        thresholds.append(float((cut + below.max()) / 2 if below.size else cut))
    return thresholds


def multilabel_metrics(y_true, probs, class_names: list[str],
                       thresholds: list[float] | None = None) -> dict:
    """mAP, F1 (micro and macro) at per-class thresholds, and per-class figures.

    Args:
        y_true: 0/1 ``[N, C]``.
        probs: Predicted probabilities ``[N, C]``.
        class_names: Names of the ``C`` classes.
        thresholds: One per class; None chooses them on these images
            (:func:`choose_thresholds`), as a run does on its validation split.

    Returns:
        ``val_map``, ``val_f1_micro``, ``val_f1_macro`` (over classes with a positive),
        ``thresholds``, ``per_class`` (``ap``, ``threshold``, ``precision``, ``recall``,
        ``f1``, ``support``), ``num_images`` and ``multi_label: True``.
    """
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    chosen_here = thresholds is None
    thresholds = choose_thresholds(y_true, probs) if chosen_here else list(thresholds)
    predicted = (probs >= np.asarray(thresholds)[None, :]).astype("int64")
    mean_ap, aps = average_precisions(y_true, probs)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, predicted, average=None, zero_division=0)
    present = support > 0
    return {
        "multi_label": True,
        "val_map": mean_ap,
        "val_f1_micro": float(f1_score(y_true, predicted, average="micro", zero_division=0)),
        "val_f1_macro": float(np.mean(f1[present])) if present.any() else float("nan"),
        "macro_classes": int(present.sum()),
        "thresholds": [float(t) for t in thresholds],
        "thresholds_from": "chosen on these images" if chosen_here else "given",
        "val_accuracy": None,
        "num_images": int(len(y_true)),
        "per_class": {
            name: {"ap": aps[c], "threshold": float(thresholds[c]),
                   "precision": float(precision[c]), "recall": float(recall[c]),
                   "f1": float(f1[c]), "support": int(support[c])}
            for c, name in enumerate(class_names)},
    }


def pyplot():
    """The pyplot module on matplotlib's Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")  # Runs on servers and CI without a display.
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Saves a figure as PNG crash-safely (a crash leaves the last good plot); closes it."""
    try:
        rundir.write_with(lambda staging: fig.savefig(staging, dpi=100), path)
    finally:
        pyplot().close(fig)
    return Path(path)


def plot_history(history: dict, path: Path, metric: str = "accuracy") -> Path:
    """Plots the loss and ``metric`` per epoch (train and validation) to ``path``."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    # Under EMA the validation figures are the averaged weights'; the raw ones go beside.
    averaged = bool(history.get(f"val_{metric}_raw"))
    for ax, key in zip(axes, ("loss", metric)):
        for name, style, label in ((key, "-", "train"),
                                   (f"val_{key}", "--",
                                    "validation (EMA weights)" if averaged else "validation"),
                                   (f"val_{key}_raw", ":", "validation (raw weights)")):
            values = history.get(name)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, label=f"{label} {key}")
        ax.set_xlabel("epoch")
        # Whole epochs only: a short run otherwise gets ticks at 1.2, 1.4, ...
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(key)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_confusion(matrix, class_names: list[str], path: Path) -> Path:
    """Plots a confusion matrix (rows true, columns predicted) to ``path``."""
    plt = pyplot()
    matrix = np.asarray(matrix)
    size = max(4.0, 0.45 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=90)
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(class_names) <= 30:
        threshold = matrix.max() / 2 if matrix.size else 0
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8,
                    color="white" if value > threshold else "black")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_precision_recall(y_true, probs, class_names: list[str], metrics: dict,
                          path: Path) -> Path:
    """Precision-recall curves per class (with AP and the chosen threshold) and the APs.

    Classes without a positive have no curve; beyond 20 classes only the lowest ten and
    highest ten by AP get a curve, all get a bar.
    """
    from sklearn.metrics import precision_recall_curve

    plt = pyplot()
    per_class = metrics["per_class"]
    measured = [c for c, name in enumerate(class_names) if per_class[name]["ap"] is not None]
    measured.sort(key=lambda c: per_class[class_names[c]]["ap"])
    drawn = measured if len(measured) <= 20 else measured[:10] + measured[-10:]
    fig, (curves, bars) = plt.subplots(1, 2, figsize=(12, 5))
    for c in drawn:
        name = class_names[c]
        precision, recall, cuts = precision_recall_curve(y_true[:, c], probs[:, c])
        line, = curves.plot(recall, precision, label=f"{name} (AP {per_class[name]['ap']:.2f})")
        at = int(np.searchsorted(cuts, per_class[name]["threshold"]))
        curves.plot(recall[at], precision[at], "o", color=line.get_color())
    curves.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02),
               title=f"precision-recall per class (dot: threshold), mAP "
                     f"{metrics['val_map']:.3f}")
    curves.legend(fontsize=7, loc="lower left")
    curves.grid(alpha=0.3)
    names = [class_names[c] for c in measured]
    bars.barh(range(len(names)), [per_class[n]["ap"] for n in names], color="tab:blue")
    bars.set_yticks(range(len(names)), names, fontsize=7 if len(names) > 30 else 9)
    bars.set(xlim=(0, 1), xlabel="average precision", title="AP per class")
    bars.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return save_figure(fig, path)


def _show(ax, image):
    image = np.clip(np.asarray(image), 0, 255).astype("uint8")
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray")
    else:
        ax.imshow(image)
    ax.axis("off")


def _image_grid(count: int, row_height: float = 2.8):
    """A figure of four columns with room for ``count`` images, every axis blank.

    Args:
        count: How many images the grid holds (one row at least).
        row_height: The height of each row in inches (taller for longer titles).

    Returns:
        ``(figure, axes)``, the axes a 2-D array.
    """
    plt = pyplot()
    cols = 4
    rows = max(1, math.ceil(count / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * row_height),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes


def plot_misclassified(images, y_true, probs, class_names: list[str], path: Path) -> Path:
    """A grid of images the model got wrong, with true and predicted labels.

    Args:
        images: The misclassified images.
        y_true: Their true labels.
        probs: Their predicted probabilities.
        class_names: Class names.
        path: Where to write the PNG.

    Returns:
        ``path``.
    """
    n = min(len(images), MAX_GRID)
    fig, axes = _image_grid(n)
    for ax, i in zip(axes.flat, range(n)):
        _show(ax, images[i])
        pred = int(probs[i].argmax())
        ax.set_title(f"true {class_names[y_true[i]]}\npred {class_names[pred]} "
                     f"{probs[i][pred]:.2f}", fontsize=8)
    if not n:
        axes.flat[0].set_title("no misclassified images")
    fig.tight_layout()
    return save_figure(fig, path)


def gradcam(model, images, layer_name: str):
    """Grad-CAM heat maps (Selvaraju et al. 2017) for the predicted class of each image.

    Args:
        model: A functional Keras classifier.
        images: Pixels ``[N, H, W, C]`` as the model takes them.
        layer_name: The convolutional layer whose activations are weighted.

    Returns:
        ``[N, h, w]`` maps in [0, 1] at the layer's resolution.
    """
    import keras
    import tensorflow as tf

    output = model.outputs[0] if isinstance(model.outputs, list) else model.output
    probe = keras.Model(model.inputs, [model.get_layer(layer_name).output, output])
    x = tf.convert_to_tensor(images, dtype=tf.float32)
    with tf.GradientTape() as tape:
        activations, predictions = probe(x, training=False)
        predictions = tf.cast(predictions, tf.float32)
        score = tf.reduce_sum(predictions * tf.one_hot(tf.argmax(predictions, axis=1),
                                                       predictions.shape[-1]), axis=1)
    # Gradients are taken at the layer's own output (bfloat16 under mixed precision).
    grads = tf.cast(tape.gradient(score, activations), tf.float32)
    activations = tf.cast(activations, tf.float32)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1)).numpy()
    cam /= np.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-12)
    return cam


def plot_gradcam(model, images, class_names: list[str], layer_name: str, path: Path) -> Path:
    """A grid of images with their Grad-CAM maps overlaid and the predicted label."""
    import tensorflow as tf

    images = np.asarray(images[:8])
    cams = gradcam(model, images, layer_name)
    output = model(images, training=False)
    probs = np.asarray(output[0] if isinstance(output, (list, tuple)) else output)
    # The overlaid map gives the axes no spare height: at the default row height
    # tight_layout put the second row's titles under the first row's images.
    fig, axes = _image_grid(len(images), row_height=3.1)
    for ax, image, cam, p in zip(axes.flat, images, cams, probs):
        _show(ax, image)
        heat = tf.image.resize(cam[..., None], image.shape[:2]).numpy()[..., 0]
        ax.imshow(heat, cmap="jet", alpha=0.4, vmin=0, vmax=1)
        ax.set_title(f"{class_names[int(p.argmax())]} {p.max():.2f}", fontsize=8)
    fig.suptitle(f"Grad-CAM on {layer_name}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def last_conv_layer(model, min_side: int = 4) -> str | None:
    """Name of the deepest layer with a feature map of at least ``min_side`` pixels a side.

    Grad-CAM on a 1x1 map (LeNet's C5) can only say "everywhere"; a deeper map that still
    has some resolution shows where the network looked.
    """
    best, fallback = None, None
    for layer in model.layers:
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) != 4 or layer.name in ("pixels", "normalize"):
            continue
        fallback = layer.name
        if min(shape[1] or 0, shape[2] or 0) >= min_side:
            best = layer.name
    return best or fallback


def suspect_labels(y_true, probs, class_names: list[str],
                   files: list[str] | None = None) -> list[dict]:
    """Validation images whose given label the model rejects with confidence.

    Confident learning's rule (Northcutt et al. 2021, cleanlab's ``confident_joint``):
    class ``j``'s threshold is the mean probability of ``j`` over the images labelled
    ``j`` (its average self-confidence). An image labelled ``y`` is a suspect when
    ``p[y]`` is below ``y``'s threshold and another class ``j`` reaches its own; the
    suggested label is the most probable such ``j``. A class without images has no
    threshold and is never suggested.

    Args:
        y_true: Given class indices ``[N]``.
        probs: Predicted probabilities ``[N, C]`` (held out: the validation split).
        class_names: Names of the ``C`` classes.
        files: The images' paths in the same order, or None.

    Returns:
        Rows (``index``, ``file``, ``given``, ``suggested``, ``p_given``, ``p_suggested``,
        ``margin``), the largest margin ``p_suggested - p_given`` first.
    """
    y_true, probs = np.asarray(y_true, "int64"), np.asarray(probs, "float64")
    classes = probs.shape[1]
    thresholds = np.full(classes, np.inf)
    for c in range(classes):
        if (y_true == c).any():
            thresholds[c] = probs[y_true == c, c].mean()
    rows = []
    for i, (given, p) in enumerate(zip(y_true, probs)):
        above = p >= thresholds
        above[given] = False
        if p[given] >= thresholds[given] or not above.any():
            continue
        suggested = int(np.argmax(np.where(above, p, -1.0)))
        rows.append({"index": i, "file": files[i] if files else "",
                     "given": class_names[given], "suggested": class_names[suggested],
                     "p_given": round(float(p[given]), 6),
                     "p_suggested": round(float(p[suggested]), 6),
                     "margin": round(float(p[suggested] - p[given]), 6)})
    return sorted(rows, key=lambda row: (-row["margin"], row["index"]))


def confused_pairs(matrix, class_names: list[str], count: int = 10) -> list[dict]:
    """The most frequent (true, predicted) pairs off the confusion matrix's diagonal.

    Returns:
        Up to ``count`` rows (``true``, ``predicted``, ``images``, ``share_of_true``: the
        fraction of the true class's images that went to ``predicted``), most first.
    """
    matrix = np.asarray(matrix)
    totals = matrix.sum(axis=1)
    pairs = [(int(matrix[i, j]), i, j) for i, j in zip(*np.nonzero(matrix))
             if i != j]
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [{"true": class_names[i], "predicted": class_names[j], "images": n,
             "share_of_true": round(n / totals[i], 6)} for n, i, j in pairs[:count]]


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> Path:
    """Writes ``rows`` (dicts) as CSV with a header, crash-safely."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return rundir.write_text(path, buffer.getvalue())


def per_class_rows(metrics: dict) -> list[dict]:
    """``metrics["per_class"]`` as rows with a ``class`` column, for the CSV and page."""
    return [{"class": name, **figures} for name, figures in metrics["per_class"].items()]


def plot_top_losses(images, y_true, probs, indices, class_names: list[str],
                    path: Path) -> Path:
    """A grid of the highest-loss images: true, predicted, loss and probabilities.

    Args:
        images: The images, highest loss first.
        y_true: All true labels (indexed by ``indices``).
        probs: All predicted probabilities (indexed by ``indices``).
        indices: The images' positions in the validation split.
        class_names: Class names.
        path: Where to write the PNG.
    """
    n = min(len(images), MAX_GRID)
    fig, axes = _image_grid(n, row_height=3.0)
    for ax, k in zip(axes.flat, range(n)):
        i = indices[k]
        true, pred = int(y_true[i]), int(probs[i].argmax())
        loss = float(cross_entropy([true], probs[i][None])[0])
        _show(ax, images[k])
        ax.set_title(f"#{i} true {class_names[true]} p={probs[i][true]:.2f}\n"
                     f"pred {class_names[pred]} p={probs[i][pred]:.2f}\nloss {loss:.2f}",
                     fontsize=7)
    if not n:
        axes.flat[0].set_title("no validation images")
    fig.suptitle("top losses (cross-entropy of the true class)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def _write_tables(run_dir: Path, metrics: dict, y_true, probs, class_names: list[str],
                  files: list[str] | None) -> None:
    """per_class.csv, confused_pairs.csv, suspect_labels.csv; their names in ``metrics``."""
    write_csv(run_dir / rundir.PER_CLASS_FILE,
              ["class", "precision", "recall", "f1", "support"], per_class_rows(metrics))
    pairs = confused_pairs(metrics["confusion_matrix"], class_names)
    write_csv(run_dir / rundir.CONFUSED_PAIRS_FILE,
              ["true", "predicted", "images", "share_of_true"], pairs)
    suspects = suspect_labels(y_true, probs, class_names,
                              files if files and len(files) == len(y_true) else None)
    write_csv(run_dir / rundir.SUSPECT_LABELS_FILE,
              ["index", "file", "given", "suggested", "p_given", "p_suggested", "margin"],
              suspects)
    metrics["confused_pairs"] = pairs
    metrics["suspect_labels"] = {"count": len(suspects), "top": suspects[:20]}
    metrics["files"] = {"per_class": rundir.PER_CLASS_FILE,
                        "confused_pairs": rundir.CONFUSED_PAIRS_FILE,
                        "suspect_labels": rundir.SUSPECT_LABELS_FILE}


def write_report(run_dir: Path, model, dataset, class_names: list[str],
                 history: dict | None = None, *, multi_label: bool = False,
                 thresholds: list[float] | None = None,
                 files: list[str] | None = None) -> dict:
    """Measures ``model`` on ``dataset`` and writes metrics.json, the plots and tables.

    Besides metrics.json and the PNG plots: per_class.csv, confused_pairs.csv,
    suspect_labels.csv (:func:`suspect_labels`) and top_losses.png; a multi-label run
    writes per_class.csv (with AP and threshold) and the precision-recall plot.

    Args:
        run_dir: Where to write.
        model: The model to measure.
        dataset: Validation batches, or None when the run had no validation split.
        class_names: Class names in label order.
        history: Per-epoch metrics for the training-curve plot.
        multi_label: Multi-hot labels and a logits output: :func:`multilabel_metrics`
            and the precision-recall plot instead of accuracy and the confusion matrix.
        thresholds: Multi-label only: per-class thresholds to measure F1 at (a run's,
            in ``zoo evaluate``); None chooses them on ``dataset``.
        files: The validation images' paths in ``dataset``'s order, named in
            suspect_labels.csv (used only when there is one per image).

    Returns:
        The metrics dict, with the paths of the plots under ``plots``. Without a dataset:
        ``"validation": "none"``, ``"val_accuracy": None``, the training curves and the last
        epoch's training figures (``"last_epoch"``), nothing per class or per image.
    """
    run_dir = Path(run_dir)
    if dataset is None:
        return _write_unmeasured_report(run_dir, history or {})
    if multi_label:
        return _write_multilabel_report(run_dir, model, dataset, class_names, history,
                                        thresholds)
    found = _predict(model, dataset, 64, top_k=MAX_GRID)
    y_true, probs = found["y_true"], found["probs"]
    (samples, sample_idx), (wrong, wrong_idx) = found["samples"], found["wrong"]
    metrics = compute_metrics(y_true, probs, class_names)
    _write_tables(run_dir, metrics, y_true, probs, class_names, files)
    plots = {}
    if len(class_names) <= 50:
        plots["confusion_matrix"] = plot_confusion(metrics["confusion_matrix"], class_names,
                                                   run_dir / "confusion_matrix.png")
    if len(class_names) > 100:
        # A 1000x1000 matrix is megabytes of JSON nobody reads; the per-class figures stay.
        metrics.pop("confusion_matrix")
    if history:
        plots["training_curves"] = plot_history(history, run_dir / "training_curves.png")
    plots["misclassified"] = plot_misclassified(wrong, y_true[wrong_idx], probs[wrong_idx],
                                                class_names, run_dir / "misclassified.png")
    top_images, top_idx = found["top"]
    plots["top_losses"] = plot_top_losses(top_images, y_true, probs, top_idx, class_names,
                                          run_dir / rundir.TOP_LOSSES_PLOT)
    layer = last_conv_layer(model)
    if layer and len(samples):
        # One image per class first, so the grid is not eight pictures of class 0.
        order = np.argsort([y_true[i] for i in sample_idx], kind="stable")
        firsts = [i for k, i in enumerate(order)
                  if k == 0 or y_true[sample_idx[i]] != y_true[sample_idx[order[k - 1]]]]
        picked = (firsts + [i for i in range(len(samples)) if i not in firsts])[:8]
        plots["gradcam"] = plot_gradcam(model, samples[picked], class_names, layer,
                                        run_dir / "gradcam.png")
    metrics["plots"] = {k: str(Path(v).name) for k, v in plots.items()}
    rundir.write_json(run_dir / rundir.METRICS_FILE, metrics)
    return metrics


def _write_multilabel_report(run_dir: Path, model, dataset, class_names: list[str],
                             history: dict | None, thresholds: list[float] | None) -> dict:
    y_true, probs = multilabel_predictions(model, dataset)
    metrics = multilabel_metrics(y_true, probs, class_names, thresholds)
    plots = {"precision_recall": plot_precision_recall(y_true, probs, class_names, metrics,
                                                       run_dir / "precision_recall.png")}
    write_csv(run_dir / rundir.PER_CLASS_FILE,
              ["class", "ap", "threshold", "precision", "recall", "f1", "support"],
              per_class_rows(metrics))
    metrics["files"] = {"per_class": rundir.PER_CLASS_FILE}
    if history:
        plots["training_curves"] = plot_history(history, run_dir / "training_curves.png",
                                                metric="map")
    metrics["plots"] = {k: str(Path(v).name) for k, v in plots.items()}
    rundir.write_json(run_dir / rundir.METRICS_FILE, metrics)
    return metrics


def _write_unmeasured_report(run_dir: Path, history: dict) -> dict:
    # Training figures are running means over augmented batches while the weights move:
    # shown for what they are, never under a validation name.
    metrics = {
        "validation": "none",
        "val_accuracy": None,
        "num_images": 0,
        "last_epoch": {key: values[-1] for key, values in history.items() if values},
    }
    plots = {}
    if history:
        plots["training_curves"] = plot_history(history, run_dir / "training_curves.png")
    metrics["plots"] = {k: str(Path(v).name) for k, v in plots.items()}
    rundir.write_json(run_dir / rundir.METRICS_FILE, metrics)
    return metrics


def model_card(info: dict, metrics: dict) -> str:
    """The run's model card (``README.md``): data, recipe, metrics, preprocessing, loading.

    Args:
        info: What the run writes to ``run.json`` (model, weights, class names, geometry,
            preprocessing, recipe, data, ...).
        metrics: :func:`write_report`'s metrics.

    Returns:
        The Markdown text.
    """
    norm, geometry, data = info["preprocessing"], info["geometry"], info["data"]
    recipe = "\n".join(f"- {k}: {v}" for k, v in info["recipe"].items())
    shape = [*geometry["image_size"], geometry["channels"]]
    return f"""# {info['model']} fine-tuned on {Path(data['root'] or 'data').name}

Trained with zoo on {info['finished']} ({info['strategy']}, {info['replicas']}
replica(s), {info['precision']}), from weights `{info['weights']}`.
{_weights_file_line(info)}{_precision_line(info)}
## Data
- root: `{data['root']}` (fingerprint of names and sizes
  `{data['fingerprint']}`)
- classes ({len(info['class_names'])}): {', '.join(info['class_names'])}
- counts: {data['counts']}
- files skipped as unreadable: {data['skipped']}
{_imbalance_line(info)}{_calibration_line(info)}{_levers_line(info)}
{_metrics_section(metrics)}

## Preprocessing contract
The model takes float32 RGB pixels in [0, 255], shape
`[batch, {', '.join(map(str, shape))}]`, channels last. It normalises
inside (first layer `normalize`: mean {norm['mean']}, std {norm['std']},
{norm['channel_order']}). Evaluation resizes the shorter side to size / crop fraction
({geometry['crop_fraction']}) with {geometry['interpolation']} interpolation and crops
the centre.

## Recipe
{recipe}

## Loading
```python
import keras, zoo  # importing zoo registers its layers
model = keras.saving.load_model("{rundir.MODEL_FILE}")
```
"""


def _levers_line(info: dict) -> str:
    """Gradient accumulation and the weights' EMA, with both EMA figures, when used."""
    lines = ""
    accumulation = info.get("accumulation")
    if accumulation:
        lines += (f"- gradient accumulation: {accumulation['steps']} steps of "
                  f"{accumulation['step_batch']} images per weight update (an update's "
                  f"batch {accumulation['update_batch']})\n")
    ema = info.get("ema")
    if ema:
        figures = ""
        if ema.get("averaged") is not None:
            raw = ema.get("raw_same_epoch")
            figures = (f"; {ema['monitor']} {ema['averaged']:.4f} averaged at the kept epoch "
                       f"{ema['kept_epoch']}" + (f", {raw:.4f} raw" if raw is not None else "")
                       + (f" (raw best {ema['raw_best']:.4f})"
                          if ema.get("raw_best") is not None else ""))
        lines += (f"- weights: exponential moving average, momentum {ema['momentum']} per "
                  f"update (kept and exported){figures}\n")
    return lines


def _calibration_line(info: dict) -> str:
    """The run's temperature and its ECE before and after, or why it has none."""
    record = info.get("calibration")
    if not record:
        return ""
    if record.get("method") != "temperature":
        return f"- calibration: none ({record.get('reason')})\n"
    return (f"- calibration: temperature {record['temperature']:.3f} fitted on the "
            f"validation split ({record['images']} images; ECE {record['ece_before']:.3f} "
            f"before, {record['ece_after']:.3f} after, on those same images)\n")


def _precision_line(info: dict) -> str:
    """Which precision each validation figure was measured under, when they differ."""
    measured = info.get("measured") or {}
    report, history = measured.get("report"), measured.get("history")
    if report is None or history in (None, report):
        return ""
    # Trained in bfloat16, re-measured in float32: rounding can flip a near-tie of the
    # top two classes, so on a few validation images the two may differ by an image.
    return (f"\nThe validation figures below were measured after training, on the saved "
            f"model, in {report}; the per-epoch figures of {rundir.HISTORY_FILE} (and the "
            f"training curves) during training, under {history}. On a small validation "
            f"set they can differ by an image or two.\n")


def _imbalance_line(info: dict) -> str:
    """What the run did about skewed classes, and its output (softmax, or sigmoid logits)."""
    recipe = info["recipe"]
    weights = info.get("class_weights")
    shown = (f"{recipe.get('class_weight')!r} (by index: {weights})" if weights
             else repr(recipe.get("class_weight")))
    line = (f"- class imbalance: class_weight {shown}, loss {recipe.get('loss')}, sampling "
            f"{recipe.get('sampling')}\n")
    if info.get("multi_label"):
        line += ("- multi-label: an image may carry several classes; the model gives one "
                 "logit per class (apply a sigmoid), and a class is predicted when its "
                 "probability reaches its threshold in `run.json` (`thresholds`)\n")
    return line


def _multilabel_section(metrics: dict) -> str:
    def ap(value):
        return "-" if value is None else f"{value:.3f}"

    rows = "\n".join(
        f"| {name} | {ap(m['ap'])} | {m['threshold']:.3f} | {m['precision']:.3f} | "
        f"{m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
        for name, m in metrics["per_class"].items())
    caveat = (" (the thresholds were chosen on these images, so F1 here is optimistic; "
              "`zoo evaluate` on other images is not)"
              if metrics.get("thresholds_from") == "chosen on these images" else "")
    return f"""## Metrics (validation, multi-label)
- mAP (macro mean of the per-class average precision, over the {metrics['macro_classes']}
  classes with a positive image): {metrics['val_map']:.4f}
- F1 at the per-class thresholds: micro {metrics['val_f1_micro']:.4f}, macro
  {metrics['val_f1_macro']:.4f} over {metrics['num_images']} images{caveat}

| class | AP | threshold | precision | recall | F1 | support |
|---|---|---|---|---|---|---|
{rows}

Plots: `training_curves.png`, `precision_recall.png`."""


def _weights_file_line(info: dict) -> str:
    """Where the starting weights came from, with their hash, for the card ('' if none)."""
    record = info.get("weights_file")
    if not record:
        return ""
    where = record.get("url") or record.get("path") or record.get("tag", "")
    revision = f" at revision `{record['revision']}`" if record.get("revision") else ""
    digest = (f", {record.get('hash_algorithm', 'hash')} `{record['hash']}`"
              if record.get("hash") else ", no hash known")
    return f"Starting weights: `{where}`{revision}{digest}.\n"


def _metrics_section(metrics: dict) -> str:
    """The model card's metrics: measured on the validation split, or why there are none."""
    if metrics.get("multi_label"):
        return _multilabel_section(metrics)
    if metrics.get("validation") == "none":
        last = metrics.get("last_epoch", {})
        figures = ", ".join(f"{key} {last[key]:.4f}" for key in ("loss", "accuracy")
                            if key in last)
        trained = ("\n\nThe last epoch on the training images (with the run's "
                   "augmentation, averaged over the epoch while the weights changed): "
                   f"{figures}." if figures else "")
        plots = ", ".join(f"`{name}`" for name in metrics.get("plots", {}).values()) or "none"
        return ("## Metrics\n"
                "No validation split: every image was used for training and nothing was "
                "measured on held-out images, so there are no validation metrics, no early "
                "stopping and no best-epoch selection. `best.keras` holds the model of the "
                f"last epoch.{trained}\n\nPlots: {plots}.")
    per_class = "\n".join(
        f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
        for name, m in metrics["per_class"].items())
    top5 = (f"- top-5 accuracy: {metrics['top5_accuracy']:.4f}\n"
            if "top5_accuracy" in metrics else "")
    return f"""## Metrics (validation)
- accuracy: {metrics['accuracy']:.4f}
{top5}- macro F1: {metrics['macro_f1']:.4f} over {metrics['num_images']} images (the mean
  over the {metrics.get('macro_f1_classes', len(metrics['per_class']))} classes with
  validation images; a class without any is left out)

| class | precision | recall | F1 | support |
|---|---|---|---|---|
{per_class}

Plots: `training_curves.png`, `confusion_matrix.png`, `misclassified.png`, `gradcam.png`."""
