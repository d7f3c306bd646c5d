"""The run's report as one HTML page (``report.html``), readable offline in a browser.

The plots are inline (base64 PNG data URIs), so the page is one file that can be mailed or
opened from a copied run directory; the CSV tables and the other files of the run are
linked relatively and open beside it. The page is built from what the run directory holds
(``run.json``, ``metrics.json`` and the plots the report wrote), so it can be rebuilt
from a finished run with :func:`write_page`. ``zoo evaluate`` writes the same page into its
report directory (no ``run.json`` there: the evaluated model and data come from its
``metrics.json``, with the test-time augmentation's accuracy and the run's temperature
measured on that data when it recorded them).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from zoo import rundir

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; }
.note { color: #555; }
"""

# The plots in the order the page shows them, with their headings.
_PLOTS = (("training_curves", "Training curves"), ("confusion_matrix", "Confusion matrix"),
          ("precision_recall", "Precision-recall per class"),
          ("top_losses", "Top losses"), ("misclassified", "Misclassified images"),
          ("gradcam", "Grad-CAM"))
_LINKED = (rundir.PER_CLASS_FILE, rundir.CONFUSED_PAIRS_FILE, rundir.SUSPECT_LABELS_FILE,
           rundir.METRICS_FILE, rundir.HISTORY_FILE, rundir.RUN_FILE, rundir.CARD_FILE,
           rundir.CLASS_NAMES_FILE)


def write_page(run_dir: str | Path) -> Path:
    """Writes ``report.html`` into a run directory from its ``run.json`` and metrics.

    Args:
        run_dir: A run directory with ``metrics.json`` (``run.json`` optional: without
            it the page has no run summary and says calibration is unknown).

    Returns:
        The page's path.

    Raises:
        FileNotFoundError: When the directory has no ``metrics.json``.
    """
    import json

    root = Path(run_dir)
    metrics_path = root / rundir.METRICS_FILE
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{root} has no {rundir.METRICS_FILE}: the report page is "
                                f"built from the run's report; finish or re-run the run.")
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    info = rundir.read_info(root) or {}
    return rundir.write_text(root / rundir.REPORT_PAGE, render(root, info, metrics))


def render(root: Path, info: dict, metrics: dict) -> str:
    """The page's HTML for a run directory's ``run.json`` (``info``) and metrics."""
    title = ("Evaluation report" if "evaluated_on" in metrics
             else f"{info.get('model', 'model')} report")
    parts = [f"<h1>{_esc(title)}</h1>", _summary(info, metrics)]
    parts += [_section_plot(root, metrics, key, heading) for key, heading in _PLOTS]
    parts += [_per_class(metrics), _confused(metrics), _suspects(metrics), _tta(metrics),
              _calibration(info, metrics), _files(root, "evaluated_on" in metrics)]
    body = "\n".join(p for p in parts if p)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{_STYLE}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")


def _esc(value) -> str:
    return html.escape(str(value))


def _number(value, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "n/a" if value is None else str(value)


def _table(columns: list[str], rows: list[dict]) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_esc(_number(row.get(c)))}</td>" for c in columns)
                   + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _evaluated_model(metrics: dict) -> str | None:
    """The model ``zoo evaluate`` measured (its ``metrics.json`` ``model``), else None."""
    return metrics.get("model") if "evaluated_on" in metrics else None


def _summary(info: dict, metrics: dict) -> str:
    evaluation = "evaluated_on" in metrics  # zoo evaluate's report, not a training run's
    rows = [("model", info.get("model") or _evaluated_model(metrics)),
            ("weights", info.get("weights")), ("status", info.get("status")),
            ("finished", info.get("finished")),
            ("evaluated on", metrics.get("evaluated_on")),
            ("images" if evaluation else "validation images", metrics.get("num_images"))]
    if metrics.get("multi_label"):
        rows += [("mAP", metrics.get("val_map")), ("F1 micro", metrics.get("val_f1_micro")),
                 ("F1 macro", metrics.get("val_f1_macro"))]
    else:
        rows += [("accuracy", metrics.get("val_accuracy")),
                 ("top-5 accuracy", metrics.get("top5_accuracy")),
                 ("macro F1", metrics.get("macro_f1"))]
    cells = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(_number(v, 4))}</td></tr>"
                    for k, v in rows if v is not None)
    note = ("<p class=\"note\">The run had no validation split: no figure here measures "
            "the model on held-out images.</p>" if metrics.get("validation") == "none"
            else "")
    return f"<h2>Summary</h2><table>{cells}</table>{note}"


def _section_plot(root: Path, metrics: dict, key: str, heading: str) -> str:
    name = (metrics.get("plots") or {}).get(key)
    if not name or not (root / name).is_file():
        return ""
    uri = _data_uri((root / name).read_bytes())
    return (f"<h2>{_esc(heading)}</h2><img src=\"{uri}\" alt=\"{_esc(heading)}\" "
            f"data-file=\"{_esc(name)}\">")


def _per_class(metrics: dict) -> str:
    per_class = metrics.get("per_class")
    if not per_class:
        return ""
    columns = ["class", "precision", "recall", "f1", "support"]
    if metrics.get("multi_label"):
        columns = ["class", "ap", "threshold", "precision", "recall", "f1", "support"]
    rows = [{"class": name, **figures} for name, figures in per_class.items()]
    link = _link(rundir.PER_CLASS_FILE, metrics)
    return f"<h2>Per class</h2>{link}{_table(columns, rows)}"


def _link(name: str, metrics: dict) -> str:
    if name not in (metrics.get("files") or {}).values():
        return ""
    return f"<p>As CSV: <a href=\"{_esc(name)}\">{_esc(name)}</a></p>"


def _confused(metrics: dict) -> str:
    if "confused_pairs" not in metrics:
        return ""
    pairs = metrics["confused_pairs"]
    table = (_table(["true", "predicted", "images", "share_of_true"], pairs) if pairs
             else "<p>No validation image was confused with another class.</p>")
    return (f"<h2>Most-confused class pairs</h2>"
            f"{_link(rundir.CONFUSED_PAIRS_FILE, metrics)}{table}")


def _suspects(metrics: dict) -> str:
    found = metrics.get("suspect_labels")
    if found is None:
        return ""
    images = "evaluated" if "evaluated_on" in metrics else "validation"
    rule = ("whose given label the model rejects with confidence (its probability below the "
            "class's average self-confidence, another class's above its own)")
    if found["count"]:
        intro = (f"<p>{found['count']} {images} image(s) {rule}: candidates for label "
                 f"errors, largest margin first. The first {len(found['top'])} here, all "
                 f"in the CSV.</p>")
    else:
        intro = f"<p>No {images} image {rule}: no candidate for a label error.</p>"
    columns = ["index", "file", "given", "suggested", "p_given", "p_suggested", "margin"]
    table = _table(columns, found["top"]) if found["top"] else ""
    return (f"<h2>Suspect labels</h2>{intro}{_link(rundir.SUSPECT_LABELS_FILE, metrics)}"
            f"{table}")


def _tta(metrics: dict) -> str:
    """``zoo evaluate --tta``'s accuracy with and without the averaged views."""
    record = metrics.get("tta")
    if not record:
        return ""
    row = {"mode": record.get("mode"), "views": record.get("views"),
           "accuracy with TTA": record.get("accuracy"),
           "accuracy without": record.get("accuracy_without")}
    return (f"<h2>Test-time augmentation</h2><p>The probabilities of each image's views "
            f"averaged (<code>tta={_esc(record.get('mode'))}</code>), against the eval crop "
            f"alone, on the same images.</p>{_table(list(row), [row])}")


def _calibration(info: dict, metrics: dict) -> str:
    record = info.get("calibration")
    measured = "calibration" in metrics and "evaluated_on" in metrics
    if measured:
        # zoo evaluate: the run's temperature measured on the evaluated images.
        record = metrics["calibration"]
    elif "evaluated_on" in metrics:
        return ("<h2>Calibration</h2><p>No temperature was measured on these images (the "
                "model has no fitted temperature, or zoo evaluate ran with "
                "--no-calibrate).</p>")
    elif not record or record.get("method") != "temperature":
        reason = (record or {}).get("reason") or "the run records none"
        return (f"<h2>Calibration</h2><p>Calibration was not fitted "
                f"({_esc(reason)}).</p>")
    where = ("the run's temperature (fitted on its validation split), measured on the "
             f"{_esc(record.get('images', 'n/a'))} evaluated images" if measured else
             f"fitted on the validation split ({_esc(record.get('images', 'n/a'))} images)")
    text = (f"<p>Temperature {record['temperature']:.3f}: {where}. Expected calibration "
            f"error ({record.get('bins')} bins): {record['ece_before']:.4f} before, "
            f"{record['ece_after']:.4f} after, on those same images. <code>zoo predict</code> "
            f"and <code>zoo export</code> apply the temperature by default "
            f"(<code>--no-calibrate</code> switches it off).</p>")
    uri = _data_uri(_reliability_png(record))
    return (f"<h2>Calibration</h2>{text}<img src=\"{uri}\" "
            f"alt=\"Reliability diagram\">")


def _reliability_png(record: dict) -> bytes:
    """The reliability diagram before and after scaling, as PNG bytes (not a file)."""
    from zoo.recipes.reports import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), squeeze=False)
    for ax, key, label in zip(axes.flat, ("reliability_before", "reliability_after"),
                              ("before", "after")):
        bins = record.get(key) or {}
        pairs = [(c, a) for c, a, n in zip(bins.get("confidence", []),
                                           bins.get("accuracy", []), bins.get("count", []))
                 if n and c is not None and a is not None]
        if pairs:
            confidence, accuracy = zip(*pairs)
            ax.plot(confidence, accuracy, "o-", label="accuracy per confidence bin")
        ax.plot([0, 1], [0, 1], ":", color="gray", label="perfect calibration")
        ece = record.get(f"ece_{label}")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
               title=f"{label} scaling (ECE {_number(ece, 4)})")
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def _files(root: Path, evaluation: bool = False) -> str:
    present = [name for name in _LINKED if (root / name).is_file()]
    items = "".join(f"<li><a href=\"{_esc(n)}\">{_esc(n)}</a></li>" for n in present)
    heading = "Files of the evaluation" if evaluation else "Files of the run"
    return f"<h2>{heading}</h2><ul>{items}</ul>" if items else ""
