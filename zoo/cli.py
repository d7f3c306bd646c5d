"""The ``zoo`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import sys
import warnings


def _quiet_tensorflow() -> None:
    """Imports TensorFlow with its C++ start-up banner silenced (``ZOO_VERBOSE=1`` keeps it).

    The banner (oneDNN and CPU-feature notices) is written to file descriptor 2 by C++ code
    before logging is configured, so neither ``TF_CPP_MIN_LOG_LEVEL`` nor Python's logging
    reaches it; it would drown the tables the CLI prints. Python exceptions still surface.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("ZOO_VERBOSE") or "tensorflow" in sys.modules:
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _format_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace) -> int:
    """Prints registered models, one a line, with family, year, input size and twins."""
    import zoo
    from zoo.models import get_spec

    names = zoo.list_models(args.pattern, pretrained=args.pretrained)
    if not names:
        print(f"No model matches {args.pattern!r}.", file=sys.stderr)
        return 1
    rows = []
    for name in names:
        spec = get_spec(name)
        twins = ", ".join(f"{lib}:{tw}" for lib, tw in spec.twins.items()) or "-"
        size = "x".join(str(s) for s in spec.input_size)
        rows.append([name, spec.family, spec.year, size, _tags(spec.weights) or "-", twins])
    print(_format_table(rows, ["model", "family", "year", "input", "weights", "twins"]))
    return 0


def _tags(weights: dict) -> str:
    # timm's many Hub sets would make the line run on: counted here, listed by `zoo info`.
    tags = [tag for tag in weights if not tag.startswith("timm_")]
    hub = len(weights) - len(tags)
    return ", ".join(tags + ([f"{hub} timm_* (zoo info)"] if hub else []))


def cmd_info(args: argparse.Namespace) -> int:
    """Prints one model's description as a readable table."""
    import zoo

    info = zoo.describe(args.name)
    twin_counts = ", ".join(f"{lib} {n:,}" for lib, n in info["twin_params"].items())
    published = (f"{info['published_gmacs']} ({info['gmacs_source']})"
                 if info["published_gmacs"] else "-")
    rows = [
        ["family", info["family"]],
        ["paper", f"{info['paper']} ({info['year']})"],
        ["num_classes", f"{info['num_classes']} (the default classifier size; the params and "
         "GMACs are with it)"],
        ["params", f"{info['params']:,} (Keras count_params: {info['keras_params']:,})"],
        ["twins' params", twin_counts or "-"],
        ["GMACs", f"{info['gmacs']} at {'x'.join(map(str, info['input_size'][:2]))}"],
        ["published GMACs", published],
        ["input size", "x".join(map(str, info["input_size"]))
         + f" (minimum {'x'.join(map(str, info['min_input_size']))})"],
        ["eval transform", f"crop fraction {info['crop_fraction']}, {info['interpolation']}"
         + (" (without weights; each weight set has its own)" if info["weights"] else "")],
        ["preprocessing", str(info["preprocessing"])],
        ["twins", ", ".join(f"{lib}: {tw}" for lib, tw in info["twins"].items()) or "-"],
        ["options", ", ".join(f"{k}={v!r}" for k, v in info["family_options"].items()) or "-"],
        ["recipe defaults", ", ".join(f"{k}={v!r}" for k, v in
                                      info.get("recipe_defaults", {}).items()) or "-"],
    ]
    if info["weights"]:
        for tag, meta in info["weights"].items():
            top1 = meta.get("top1")
            alias = f"= {meta['tag']}, " if meta.get("tag") not in (None, tag) else ""
            rows.append([f"weights:{tag}",
                         f"{alias}{meta.get('source', '?')}"
                         + (f", top-1 {top1}" if top1 is not None else "")
                         + (f", {meta.get('preprocessing')}" if meta.get("preprocessing") else "")
                         + _weights_transform(meta)
                         + (f", hf://{meta['hub_id']}" if meta.get("hub_id") else "")
                         + (", unpinned" if meta.get("url") and not meta.get("hash") else "")])
    else:
        rows.append(["weights", "none"])
    print(_format_table(rows, ["", args.name]))
    if info["notes"]:
        import textwrap

        print("\n" + textwrap.fill(" ".join(info["notes"].split()), width=96))
    return 0


def _weights_transform(meta: dict) -> str:
    """A weight set's eval transform in torchvision's terms: crop of resize, interpolation."""
    if not meta.get("input_size") or not meta.get("resize_size"):
        return ""
    return (f", eval {meta['input_size'][0]} of {meta['resize_size']} "
            f"({meta.get('interpolation') or 'bilinear'})")


def cmd_pull(args: argparse.Namespace) -> int:
    """Downloads pretrained weights ahead of time, writes a manifest, or fills the cache."""
    from zoo import models, weights

    if args.name is None and not (args.manifest or args.from_dir):
        print("zoo pull: name a model or a pattern ('resnet*'), or use --manifest or --from.",
              file=sys.stderr)
        return 2
    tag = args.tag or ("imagenet" if args.name else "all")
    entries = models.weight_entries(args.name or "*", None if tag == "all" else tag)
    if args.manifest:
        data = weights.download.write_manifest(entries, args.manifest)
        present = sum(f["present"] for f in data["files"])
        print(f"Wrote {args.manifest}: {len(data['files'])} files ({present} already in "
              f"{weights.weights_dir()}).")
        return 0
    if args.from_dir:
        installed, missing = weights.download.fill_from(args.from_dir, entries)
        print(f"{len(installed)} files verified and in {weights.weights_dir()}.")
        for name in missing:
            print(f"missing or wrong hash in {args.from_dir}: {name}", file=sys.stderr)
        return 1 if missing else 0
    for entry in entries:
        path = weights.fetch(entry)
        print(f"{entry.model}:{entry.tag}  {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Runs the main job: digits as an image folder, LeNet-5, export, one prediction."""
    from zoo.recipes.demo import run_demo

    summary = run_demo(args.out, epochs=args.epochs)
    print(f"\nvalidation accuracy: {summary['val_accuracy']:.4f}  (run: {summary['run_dir']})")
    print(f"exported: {summary['export'].get('savedmodel')}")
    pred = summary["prediction"]
    print(f"the export says {summary['sample']} is {pred['labels'][0]} "
          f"({pred['scores'][0]:.3f})")
    return 0


def _recipe_options(args: argparse.Namespace) -> dict:
    """The recipe fields given on the command line (left out: the recipe's own default)."""
    from zoo.recipes.recipe import Recipe

    names = (f.name for f in dataclasses.fields(Recipe))
    return {name: getattr(args, name) for name in names
            if getattr(args, name, None) is not None}


def _table_options(args: argparse.Namespace) -> dict:
    """A --data label table's options (``images``, ``label_column``, ...) when given."""
    from zoo.recipes.finetune import TABLE_KEYWORDS

    return {name: getattr(args, name) for name in TABLE_KEYWORDS
            if getattr(args, name, None) is not None}


def cmd_train(args: argparse.Namespace) -> int:
    """Fine-tunes a model on a folder of images."""
    from zoo.recipes.finetune import default_run_dir, finetune

    weights = None if args.weights in ("none", "None", "") else args.weights
    try:
        result = finetune(args.model, args.data, weights=weights, epochs=args.epochs,
                          out_dir=args.out, overwrite=args.overwrite, store=args.store,
                          resume="changed" if args.resume_changed else None,
                          **_table_options(args), **_recipe_options(args))
    except KeyboardInterrupt:
        # Ctrl-C: the state of the last finished epoch is saved (crash-safe) in the run dir.
        run_dir = args.out or default_run_dir(args.model, args.data)
        print(f"\nzoo train: interrupted. The state at the end of the last finished epoch is "
              f"saved in {run_dir}; run the same command again to resume from there.",
              file=sys.stderr)
        return 130
    from zoo.distribute import is_chief

    if result.metrics.get("multi_label"):
        print(f"\nvalidation {_multilabel_line(result.metrics)}")
    elif result.metrics.get("val_accuracy") is None:
        print("\nno validation split: no validation accuracy; best.keras holds the model of "
              "the last epoch")
    else:
        # The report re-measures the kept model in float32 (run.json "measured"); the
        # progress bar's figures were measured under the training policy.
        print(f"\nvalidation accuracy: {result.metrics['val_accuracy']:.4f} (the kept model, "
              "measured in float32)")
    ema = result.metrics.get("ema") or {}
    if ema.get("raw_same_epoch") is not None:
        print(f"EMA (momentum {ema['momentum']}): the kept model holds the averaged weights "
              f"of epoch {ema['kept_epoch']}; the raw weights scored {ema['raw_same_epoch']:.4f} "
              f"there, {ema['raw_best']:.4f} at their best ({ema['monitor']})")
    if is_chief():
        print(f"run directory: {result.run_dir}")
    else:
        print("this worker wrote nothing; the chief writes the run directory")
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    """Runs the learning-rate range test and prints the suggested rate."""
    from zoo.recipes.finetune import find_learning_rate

    weights = None if args.weights in ("none", "None", "") else args.weights
    result = find_learning_rate(args.model, args.data, weights=weights, out_dir=args.out,
                                steps=args.steps, store=args.store, **_table_options(args),
                                **_recipe_options(args))
    print(f"suggested learning rate: {result.suggestion:.3g}  (plot: {result.plot})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluates a model, .keras file or run directory on a folder."""
    from zoo.recipes.evaluate import evaluate

    metrics = evaluate(args.model, args.data, out_dir=args.out, weights=args.weights,
                       batch_size=args.batch_size or 32, tta=args.tta,
                       calibrate=args.calibrate, **_table_options(args))
    line = (_multilabel_line(metrics) if metrics.get("multi_label")
            else f"accuracy {metrics['accuracy']:.4f}")
    if "top5_accuracy" in metrics:
        line += f", top-5 {metrics['top5_accuracy']:.4f}"
    print(f"{line} on {metrics['num_images']} images; report in {metrics['out_dir']}")
    if "tta" in metrics:
        print(f"with tta={metrics['tta']['mode']}: accuracy {metrics['tta']['accuracy']:.4f} "
              f"(without: {metrics['tta']['accuracy_without']:.4f})")
    if "calibration" in metrics:
        c = metrics["calibration"]
        print(f"temperature {c['temperature']:.3f}: ECE {c['ece_before']:.4f} without, "
              f"{c['ece_after']:.4f} with")
    return 0


def _multilabel_line(metrics: dict) -> str:
    return (f"mAP {metrics['val_map']:.4f}, F1 micro {metrics['val_f1_micro']:.4f}, "
            f"macro {metrics['val_f1_macro']:.4f} (at the per-class thresholds)")


def _read_labels(path: str | None) -> list[str] | None:
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\r\n") for line in handle if line.strip()]


def cmd_export(args: argparse.Namespace) -> int:
    """Exports a run directory or .keras file: SavedModel, TFLite, ONNX, then checks them."""
    from zoo.deploy import ExportCheckError, export

    try:
        paths = export(args.model, args.out, formats=args.format, version=args.version,
                       overwrite=args.overwrite, top_k=args.top_k, calibrate=args.calibrate,
                       class_names=_read_labels(args.labels), model_name=args.model_name,
                       model_card=args.card, sample_images=args.samples,
                       representative_images=args.representative, tta=args.tta)
    except (ExportCheckError, ImportError) as error:
        print(f"zoo export: {error}", file=sys.stderr)
        return 1
    rows = []
    for fmt, check in paths.checks.items():
        agreement = f"{check['top1_agreement']:.0%}"
        limit = f" (<= {check['tolerance']:g})" if "tolerance" in check else ""
        rows.append([fmt, paths[fmt], f"{check['bytes'] / 1e6:.2f} MB",
                     f"{check['max_abs_diff']:.2e}{limit}", agreement])
    print(_format_table(rows, ["format", "path", "size", "max |dp| vs Keras",
                               "top-1 agreement"]))
    print(f"\nversion {paths.version_dir.name} written to {paths.version_dir} "
          f"(report: {paths['report']})")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Prints the top-k labels of images from a .keras file, a run directory or a SavedModel."""
    import json

    from zoo.predict import Predictor

    predictor = Predictor(args.model, class_names=_read_labels(args.labels),
                          model_name=args.model_name, calibrate=args.calibrate)
    results = predictor.predict(args.images, top_k=args.top_k)
    if predictor.temperature is not None:
        # On stderr: stdout stays the predictions alone, for scripts that read them.
        print(f"zoo predict: scores calibrated at temperature {predictor.temperature:.3f} "
              f"(run.json calibration); --no-calibrate gives the raw softmax",
              file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            print(result["image"])
            if "error" in result:
                print(f"  error: {result['error']}")
                continue
            width = max(len(p["label"]) for p in result["predictions"])
            for p in result["predictions"]:
                print(f"  {p['label'].ljust(width)}  {p['score']:.4f}")
            if "labels" in result:  # multi-label: the classes at or above their thresholds
                print(f"  labels: {', '.join(result['labels']) or '(none)'}")
    failed = [r["image"] for r in results if "error" in r]
    if failed:
        print(f"zoo predict: {len(failed)} of {len(results)} image(s) could not be read: "
              f"{', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


# Recipe fields that shape a whole training run only; lr-find runs a few steps of one stage.
_TRAIN_ONLY = ("head_epochs", "finetune_epochs", "scratch_epochs", "warmup_epochs",
               "precision", "strategy", "accumulate_steps", "ema")
# Annotation (a string: the module uses postponed annotations) -> argparse type.
_FLAG_TYPES = {"int": int, "float": float, "float | None": float}


def _add_data_arguments(p: argparse.ArgumentParser, *, split: bool = True) -> None:
    """``--data`` (a folder or a label table), and the table's ``--images``, columns, ...

    ``split`` adds ``--split-column`` (evaluate measures every row, so it has none).
    """
    p.add_argument("--data", required=True, help="image folder (root/<class>/* or "
                   "root/train|val/<class>/*), or a label table (.csv, .tsv) with a path "
                   "and a label column")
    p.add_argument("--images", default=None, metavar="DIR",
                   help="with a label table: the folder its paths are relative to "
                   "(default: the table's folder)")
    p.add_argument("--label-delimiter", default=None, dest="label_delimiter", metavar="TEXT",
                   help="with a label table: splits a label cell into several labels "
                   "(multi-label), e.g. ' '")
    p.add_argument("--path-column", default=None, metavar="NAME",
                   help="with a label table: the column of image paths (default: path)")
    p.add_argument("--label-column", default=None, metavar="NAME",
                   help="with a label table: the column of labels (default: label)")
    p.add_argument("--suffix", default=None, metavar="EXT",
                   help="with a label table: appended to bare ids, e.g. .jpg")
    if split:
        p.add_argument("--split-column", default=None, metavar="NAME",
                       help="with a label table: a column of train/val/test values, used "
                       "as the split")


def _add_recipe_arguments(p: argparse.ArgumentParser, *, train: bool) -> None:
    """The data and model arguments, then one ``--flag`` per :class:`Recipe` field.

    Flags default to None, so the recipe (and the family's defaults) decides what is not
    given; types come from the fields' annotations, help from the Recipe's docstring.
    """
    from zoo.recipes.recipe import Recipe, field_help

    _add_data_arguments(p)
    p.add_argument("--model", required=True, help="a name from `zoo list`")
    p.add_argument("--weights", default="imagenet", help="catalog tag, file, or 'none'")
    p.add_argument("--out", default=None, help="run directory")
    helps = field_help()
    for spec in dataclasses.fields(Recipe):
        if spec.name in _TRAIN_ONLY and not train:
            continue
        default = "" if spec.default is None else f" (recipe default: {spec.default})"
        p.add_argument(f"--{spec.name.replace('_', '-')}", dest=spec.name,
                       type=_FLAG_TYPES.get(str(spec.type), str),
                       choices=spec.metadata.get("choices"),
                       help=(helps.get(spec.name, "") + default).replace("%", "%%"))


def _add_model_commands(sub) -> None:
    """``list``, ``info`` and ``pull``: what exists and its weights."""
    p = sub.add_parser("list", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'resnet*'")
    p.add_argument("--pretrained", action="store_true", help="only models with weights")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="describe one model: params, GMACs, paper, twins, weights")
    p.add_argument("name")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "pull", help="download pretrained weights ahead of time (for offline use)",
        description="Downloads and verifies weight files into the cache (ZOO_HOME). With "
                    "--manifest, writes a JSON list of files, URLs and hashes instead; with "
                    "--from DIR, copies verified files from a copy made on another machine.")
    p.add_argument("name", nargs="?", help="model name or fnmatch pattern, e.g. 'resnet*'")
    p.add_argument("tag", nargs="?",
                   help="weights tag (default imagenet; 'all' for every tag; see `zoo info`)")
    p.add_argument("--manifest", metavar="PATH", help="write a manifest with hashes, no download")
    p.add_argument("--from", dest="from_dir", metavar="DIR",
                   help="fill the cache from files copied from another machine")
    p.set_defaults(func=cmd_pull)


def _add_store_argument(p: argparse.ArgumentParser) -> None:
    """``--store``: the commands that read the --data folder can read its prepared store."""
    p.add_argument("--store", default=None, metavar="DIR",
                   help="read the images from this prepared store of the --data folder "
                   "(`zoo prepare`): smaller images, decoded faster, with the store's split")


def _add_recipe_commands(sub) -> None:
    """``demo``, ``train``, ``lr-find`` and ``evaluate``: the recipes."""
    p = sub.add_parser("demo", help="run the main job on the embedded default data "
                       "(digits, LeNet-5, export, predict)")
    p.add_argument("--out", default="runs/demo", help="where data, run and export go")
    p.add_argument("--epochs", type=int, default=None)
    p.set_defaults(func=cmd_demo)

    families = ("Recipe options left out take the recipe's defaults, with the model "
                "family's departures from them (`zoo info MODEL` lists those).")
    p = sub.add_parser("train", help="fine-tune a model on a folder of images",
                       description=families)
    _add_recipe_arguments(p, train=True)
    p.add_argument("--epochs", type=int, default=None,
                   help="total epochs; with weights, a quarter (at least 1) trains the head")
    p.add_argument("--overwrite", action="store_true",
                   help="start again over a run, finished or not (the old one is kept, "
                   "renamed)")
    p.add_argument("--resume-changed", action="store_true", dest="resume_changed",
                   help="resume an interrupted run with other options on purpose (the "
                   "change and its epoch are recorded in run.json)")
    _add_store_argument(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("lr-find", help="learning-rate range test with plot and suggestion",
                       description=families)
    _add_recipe_arguments(p, train=False)
    p.add_argument("--steps", type=int, default=100)
    _add_store_argument(p)
    p.set_defaults(func=cmd_lr_find)

    from zoo.recipes.tta import TTA_MODES

    p = sub.add_parser("evaluate", help="metrics and plots of a model on a folder")
    p.add_argument("model", help="zoo model name, .keras file, or run directory")
    _add_data_arguments(p, split=False)
    p.add_argument("--weights", default=None, help="with a model name: catalog tag or file")
    p.add_argument("--out", default=None, help="report directory")
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--tta", default="none", choices=TTA_MODES,
                   help="test-time augmentation: flip averages the crop and its mirror, "
                   "five_crop the four corners and the centre of the resized image, "
                   "flip+five_crop those ten views; the report gives accuracy with and "
                   "without (default none)")
    p.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                   help="do not measure the run's temperature (run.json calibration)")
    p.set_defaults(func=cmd_evaluate)


def _add_deploy_commands(sub) -> None:
    """``export`` and ``predict``: using a trained model."""
    from zoo.recipes.tta import TTA_MODES

    p = sub.add_parser("export", help="SavedModel (bytes, base64 and pixels signatures), "
                       "TFLite, ONNX; each checked against the Keras model")
    p.add_argument("model", help="run directory or .keras file")
    p.add_argument("--out", required=True, help="export directory; the version goes in "
                   "OUT/<version>/ (TF Serving's layout)")
    p.add_argument("--format", default="savedmodel",
                   help="comma-separated: savedmodel, tflite, tflite-fp16, tflite-dynamic, "
                   "tflite-int8, onnx, timm (timm's Hub layout, for zoo's timm twins) "
                   "(default: savedmodel)")
    p.add_argument("--version", type=int, default=None,
                   help="version number (default: one more than the highest present)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version")
    p.add_argument("--top-k", type=int, default=5, dest="top_k",
                   help="labels and scores the signatures return (default 5)")
    p.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                   help="serve the raw softmax, not the run's temperature-scaled "
                   "probabilities (run.json calibration)")
    p.add_argument("--labels", help="class names, one a line (for a bare .keras file)")
    p.add_argument("--model-name", dest="model_name",
                   help="zoo model name, when the .keras model's own name is not registered")
    p.add_argument("--card", help="model card file (default: the run's README.md)")
    p.add_argument("--samples", help="folder of images for the self-check (default: the "
                   "run's samples/, else synthetic images)")
    p.add_argument("--representative", help="folder of task images to calibrate "
                   "tflite-int8 (a few hundred)")
    p.add_argument("--tta", default="none", choices=TTA_MODES,
                   help="test-time augmentation baked into the SavedModel's bytes and base64 "
                   "signatures (serving_pixels applies only the flip): the probabilities "
                   "of the views averaged, as zoo evaluate --tta (default none)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="top-k labels of images from a .keras file, a run "
                       "directory or a SavedModel")
    p.add_argument("model", help=".keras file, run directory, SavedModel or export directory")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--top-k", type=int, default=5, dest="top_k")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                   help="the raw softmax, not the run's temperature-scaled probabilities "
                   "(run.json calibration; for a SavedModel, its export's temperature "
                   "taken off)")
    p.add_argument("--labels", help="class names, one a line (for a bare .keras file)")
    p.add_argument("--model-name", dest="model_name",
                   help="zoo model name, when the .keras model's own name is not registered")
    p.set_defaults(func=cmd_predict)


def cmd_push(args: argparse.Namespace) -> int:
    """Uploads a run's export to a Hugging Face Hub model repository."""
    from zoo.push import push

    pushed = push(args.source, args.repo, revision=args.revision, private=args.private,
                  message=args.message)
    print(f"pushed {pushed.kind} export {pushed.folder} ({len(pushed.files)} files) to "
          f"{pushed.repo_id}@{pushed.revision}, commit {pushed.commit}\n{pushed.url}")
    return 0


def _add_push_command(sub) -> None:
    """``push``: an export to the Hugging Face Hub."""
    p = sub.add_parser("push", help="upload a run's export (timm's layout, else the "
                       "SavedModel) to a Hugging Face Hub model repository")
    p.add_argument("source", help="run directory, export directory (zoo export --out) or "
                   "export folder")
    p.add_argument("repo", help="hf://owner/repo or hf://owner/repo@branch")
    p.add_argument("--revision", help="branch to push to (created if missing; default main)")
    p.add_argument("--private", action="store_true",
                   help="create the repository as private (an existing one is unchanged)")
    p.add_argument("--message", help="commit message (default: what was pushed)")
    p.set_defaults(func=cmd_push)


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser of the ``zoo`` command."""
    parser = argparse.ArgumentParser(
        prog="zoo", description="Classic image networks for Keras 3: build, fine-tune, export.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_model_commands(sub)
    _add_recipe_commands(sub)
    _add_deploy_commands(sub)
    _add_push_command(sub)
    _add_prepare_command(sub)
    return parser


def _add_prepare_command(sub) -> None:
    p = sub.add_parser(
        "prepare", help="write a folder's checked images once into a prepared store",
        description="Checks and splits ROOT as `zoo train` does, then writes every usable "
                    "image, re-encoded at a bounded shorter side, into TFRecord shards under "
                    "STORE with its label, split and a manifest (ROOT is only read). Train "
                    "from it with pipelines.from_store(STORE) or from_folder(ROOT, store=).")
    p.add_argument("root", help="the image folder")
    p.add_argument("store", help="the store to create (a new folder outside ROOT)")
    p.add_argument("--image-size", type=int, default=224,
                   help="the largest training size the store is for (default 224)")
    p.add_argument("--short-side", type=int, default=None,
                   help="stored shorter side at most (default image size / 0.875, 256 for 224)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    p.add_argument("--validation-split", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", choices=("fast", "full"), default="fast")
    p.set_defaults(func=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    """Writes a prepared store of a folder."""
    import pipelines

    manifest = pipelines.prepare(
        args.root, args.store, image_size=args.image_size, short_side=args.short_side,
        quality=args.quality, validation_split=args.validation_split, seed=args.seed,
        check=args.check)
    counts = ", ".join(f"{split} {n}" for split, n in manifest["counts"].items())
    print(f"Wrote {args.store}: {counts} images of {len(manifest['class_names'])} classes, "
          f"shorter side at most {manifest['short_side']}; {len(manifest['skipped'])} "
          "skipped.")
    return 0


def _format_warning(message, category, filename, lineno, line=None) -> str:
    # zoo's warnings are written for the reader (skipped files, imbalance, caching): the
    # default format would add the file and line of zoo's code that raised them.
    return f"{category.__name__}: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``zoo`` command.

    Args:
        argv: Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The process exit code.
    """
    _quiet_tensorflow()
    args = build_parser().parse_args(argv)
    previous, warnings.formatwarning = warnings.formatwarning, _format_warning
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError) as error:
        # Errors of the user's making get one clear line, not a traceback.
        print(f"zoo {args.command}: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        from zoo.rundir import DISK_FULL, free_space_line

        # A full or read-only disk is the machine's state, not a bug: say where, one line.
        if error.errno in DISK_FULL:
            print(f"zoo {args.command}: {free_space_line(error)}", file=sys.stderr)
        elif error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            print(f"zoo {args.command}: cannot write {error.filename} ({error.strerror}); "
                  "choose a folder you can write to (--out).", file=sys.stderr)
        else:
            raise
        return 1
    finally:
        warnings.formatwarning = previous


if __name__ == "__main__":
    sys.exit(main())
