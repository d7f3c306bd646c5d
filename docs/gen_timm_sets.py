"""Writes ``zoo/weights/timm_sets.py``: timm's pretrained sets for zoo's twins, as data.

Run at development time, never at run time (zoo does not depend on timm)::

    .venv/bin/python docs/gen_timm_sets.py

For every registered model with a timm twin (``Spec.timm_rule``) it lists the pretrained
tags the installed timm names (``timm.list_pretrained("<architecture>.*")``) and copies from
each tag's ``pretrained_cfg`` the Hub repository, the class count, the normalisation, the
train and test input sizes, the crop fractions, the interpolation and the licence. The
published top-1 and top-5 come from ``docs/timm_results_imagenet.csv``: the rows for these
architectures of timm's ``results/results-imagenet.csv`` (huggingface/pytorch-image-models,
commit 0173a139a2c66db3a41ebfe1d8ac4fb02483642e), which timm measures at the test size. A
tag without a row there gets no top-1. No hash is known for any of them (the Hub serves
them by name), so all are unpinned.
"""

from __future__ import annotations

import csv
import pprint
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "timm_results_imagenet.csv"
RESULTS_SOURCE = ("timm results/results-imagenet.csv (huggingface/pytorch-image-models "
                  "0173a139a2c6)")
OUTPUT = ROOT / "zoo" / "weights" / "timm_sets.py"
FIELDS = ("hf_hub_id", "num_classes", "mean", "std", "input_size", "test_input_size",
          "crop_pct", "test_crop_pct", "interpolation", "crop_mode", "license", "origin_url",
          "paper_ids")

HEADER = '''"""timm's pretrained sets for zoo's twins, as data. Generated: do not edit.

Written by ``docs/gen_timm_sets.py`` from timm {version}'s pretrained configs and timm's
published results; read by :func:`zoo.weights.catalog.timm_weights`.
"""

TIMM_VERSION = {version!r}
METRICS_SOURCE = {source!r}

# zoo model -> [(timm tag, pretrained_cfg fields, top-1, top-5)]
SETS = '''


def _import_timm():
    # timm imports torchvision, whose compiled ops do not match the CPU torch build; its
    # pure-Python part loads with this module stubbed (see tests/torch_reference.py).
    sys.modules.setdefault("torchvision._meta_registrations",
                           types.ModuleType("torchvision._meta_registrations"))
    import timm

    return timm


def collect(timm) -> dict:
    """``{zoo name: [(tag, cfg, top1, top5)]}`` for every zoo model with a timm twin."""
    sys.path.insert(0, str(ROOT))
    from zoo.models import registered

    with RESULTS.open(newline="") as f:
        results = {row["model"]: row for row in csv.DictReader(f)}
    sets = {}
    for name, spec in registered().items():
        if spec.timm_rule is None:
            continue
        entries = []
        for full in timm.list_pretrained(f"{spec.timm_rule.architecture}.*"):
            cfg = timm.models.get_pretrained_cfg(full).to_dict()
            if not cfg.get("hf_hub_id"):
                continue  # not on the Hub: nothing for hf:// to fetch
            row = results.get(full)
            entries.append((full.split(".", 1)[1],
                            {k: cfg[k] for k in FIELDS if cfg.get(k) is not None},
                            float(row["top1"]) if row else None,
                            float(row["top5"]) if row else None))
        sets[name] = entries
    return sets


def main() -> None:
    """Collects the sets and writes the module."""
    timm = _import_timm()
    text = HEADER.format(version=timm.__version__, source=RESULTS_SOURCE)
    text += pprint.pformat(collect(timm), width=92, sort_dicts=False) + "\n"
    OUTPUT.write_text(text)
    print(f"Wrote {OUTPUT.relative_to(ROOT)}.")


if __name__ == "__main__":
    main()
