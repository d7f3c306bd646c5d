"""Every script in examples/ runs in its small mode, and leaves what it says it leaves.

Each example runs as a user would run it (a separate process, ``python examples/x.py
--small --out DIR``), so that the examples never rot; the checks read the files the
example wrote and the figures it printed.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
TIMEOUT = 600
# Two examples run at a time: much of each run is single-threaded (imports, tracing), so
# on a small machine the pair finishes well before the two would one after the other.
PARALLEL = 2


class ExampleRuns:
    """Starts the selected tests' examples ahead of time, ``PARALLEL`` at a time, in order."""

    def __init__(self, names: list[str], root: Path):
        self.queue, self.root = list(names), root
        self.running: dict[str, tuple[subprocess.Popen, Path, float]] = {}
        self.done: dict[str, tuple[int | str, str]] = {}

    def _start(self, name: str) -> None:
        out = self.root / name
        out.mkdir(parents=True)
        env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
        log = out.with_suffix(".log")
        with open(log, "w") as handle:
            proc = subprocess.Popen(
                [sys.executable, str(EXAMPLES / f"{name}.py"), "--small", "--out",
                 str(out / "out")], cwd=out, env=env, stdout=handle,
                stderr=subprocess.STDOUT, text=True)
        self.running[name] = (proc, log, time.monotonic())

    def _fill(self, wanted: str) -> None:
        if wanted not in self.running and wanted not in self.done:
            self.queue.remove(wanted)
            self._start(wanted)
        while self.queue and len(self.running) < PARALLEL:
            self._start(self.queue.pop(0))

    def result(self, name: str) -> tuple[Path, str]:
        """Waits for ``examples/<name>.py --small``; returns its out dir and its output."""
        self._fill(name)
        while name not in self.done:
            for other, (proc, log, started) in list(self.running.items()):
                code = proc.poll()
                if code is None and time.monotonic() - started > TIMEOUT:
                    proc.kill()
                    proc.wait()
                    code = f"killed after {TIMEOUT} s"
                if code is not None:
                    del self.running[other]
                    self.done[other] = (code, log.read_text())
                    self._fill(name)
            time.sleep(0.2)
        code, output = self.done[name]
        assert code == 0, f"examples/{name}.py --small failed ({code}):\n{output[-4000:]}"
        return self.root / name / "out", output

    def stop(self) -> None:
        for proc, _, _ in self.running.values():
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def examples(request, tmp_path_factory):
    names = [item.name[len("test_"):] for item in request.session.items
             if item.module is sys.modules[__name__]]
    names = [n for n in names if (EXAMPLES / f"{n}.py").is_file()]
    if importlib.util.find_spec("torch") is None:  # test-only dependency: that test skips
        names = [n for n in names if n != "torchvision_checkpoint"]
    if importlib.util.find_spec("timm") is None:  # test-only dependency: that test skips
        names = [n for n in names if n != "timm_checkpoint"]
    runs = ExampleRuns(names, tmp_path_factory.mktemp("examples"))
    yield runs
    runs.stop()


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in output:\n{text[-3000:]}"
    return float(match.group(1))


def test_every_example_is_tested_and_documented():
    scripts = {p.stem for p in EXAMPLES.glob("*.py")} - {"tiny_data"}
    tested = {name[len("test_"):] for name in globals() if name.startswith("test_")}
    assert scripts <= tested, f"examples without a test: {sorted(scripts - tested)}"
    page = (REPO / "docs" / "examples.md").read_text()
    for script in scripts:
        assert f"examples/{script}.py" in page, f"{script} is not on docs/examples.md"


def test_finetune_folder(examples):
    out, stdout = examples.result("finetune_folder")
    accuracy = number(r"validation accuracy: ([\d.]+)", stdout)
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    assert metrics["val_accuracy"] == pytest.approx(accuracy, abs=1e-4)
    run = json.loads((out / "run" / "run.json").read_text())
    assert run["status"] == "finished" and run["model"] == "resnet18"
    assert run["class_names"] == [str(i) for i in range(10)]
    # Both stages ran: one head epoch, one fine-tuning epoch.
    assert len((out / "run" / "history.csv").read_text().splitlines()) == 3
    assert (out / "run" / "best.keras").is_file() and (out / "run" / "README.md").is_file()
    assert (out / "export" / "1" / "saved_model.pb").is_file()
    label = re.search(r"the export says (\S+) \(", stdout)
    assert label and label.group(1) in run["class_names"]


def test_feature_extraction(examples):
    out, stdout = examples.result("feature_extraction")
    features = np.load(out / "features.npz")
    assert features["x_train"].shape == (320, 512) and features["x_val"].shape == (80, 512)
    assert np.isfinite(features["x_train"]).all()
    assert sorted(set(features["y_val"].tolist())) == list(range(10))
    # Even random convolutional features separate digits far better than chance (0.1).
    assert number(r"validation accuracy ([\d.]+)", stdout) > 0.3


def test_albumentations_pipeline(examples):
    out, stdout = examples.result("albumentations_pipeline")
    from PIL import Image

    with Image.open(out / "augmented.png") as grid:
        assert grid.size == (8 * 64, 2 * 64)
    low, high = re.search(r"pixel range \[(\d+), (\d+)\]", stdout).groups()
    assert 0 <= int(low) < int(high) <= 255
    assert number(r"one pass over the training set: (\d+) images", stdout) == 40
    run = json.loads((out / "run" / "run.json").read_text())
    assert run["status"] == "finished" and run["model"] == "resnet18"
    assert 0 <= number(r"validation accuracy: ([\d.]+)", stdout) <= 1


def test_tfds_dataset(examples):
    out, stdout = examples.result("tfds_dataset")
    assert "tf_flowers: 5 classes (dandelion, daisy, tulips, sunflowers, roses)" in stdout
    split = json.loads((out / "run" / "split.json").read_text())
    assert split["splits"] == {"train": "train[:80%]", "val": "train[80%:]"}
    run = json.loads((out / "run" / "run.json").read_text())
    assert run["status"] == "finished" and len(run["class_names"]) == 5
    assert 0 <= number(r"validation accuracy: ([\d.]+)", stdout) <= 1


def test_label_table(examples):
    out, stdout = examples.result("label_table")
    assert "digits.csv: single-label, 10 classes, sampling=balanced" in stdout
    assert "skipped missing.png: digits.csv line" in stdout and "skipped broken.png" in stdout
    drawn = re.search(r"one balanced training epoch draws: (.*)", stdout).group(1)
    zeros = int(re.search(r"\b0 (\d+)", drawn).group(1))
    assert zeros > 10  # 5 zeros among 221 training images: drawn about a tenth of the time
    assert "tags.csv: multi-label, 14 classes" in stdout
    split = json.loads((out / "tags" / "split.json").read_text())
    assert split["split_method"] == "iterative" and split["multi_label"]


def test_two_workers(examples):
    out, stdout = examples.result("two_workers")
    for index in (0, 1):
        assert (f"[worker {index}] worker {index}: MultiWorkerMirroredStrategy, 2 replicas "
                f"in sync, chief: {index == 0}") in stdout
    accuracies = [number(rf"\[worker {i}\] validation accuracy: ([\d.]+)", stdout)
                  for i in (0, 1)]
    # Synchronous training: both workers hold the same model.
    assert accuracies[0] == accuracies[1] > 0.3
    run = json.loads((out / "run" / "run.json").read_text())
    # Each worker measured the whole validation split (a truncated in-memory cache once
    # cost one worker a few images, nondeterministically).
    val_images = sum(run["data"]["counts"]["val"].values())
    for index in (0, 1):
        assert number(rf"\[worker {index}\] validation accuracy: [\d.]+ over (\d+) images",
                      stdout) == val_images
    assert run["strategy"] == "MultiWorkerMirroredStrategy" and run["replicas"] == 2
    assert run["recipe"]["batch_size"] == 32


def test_export_and_query(examples):
    out, stdout = examples.result("export_and_query")
    version = out / "export" / "1"
    assert (version / "saved_model.pb").is_file() and (version / "model.tflite").is_file()
    report = json.loads((version / "export.json").read_text())
    assert report["signatures"][0] == "serving_default"
    body = json.loads((out / "request.json").read_text())
    assert body["signature_name"] == "serving_default" and len(body["instances"]) == 2
    assert base64.b64decode(body["instances"][0]["b64"])[:4] == b"\x89PNG"
    saved = re.findall(r"SavedModel: \S+ -> (\S+) \(", stdout)
    tflite = re.findall(r"TFLite: \S+ -> (\S+) \(", stdout)
    assert len(saved) == 2 and saved == tflite
    served = re.findall(r"labels \['(\w+)'", stdout)
    assert served == saved
    assert number(r"TFLite and SavedModel probabilities: ([\d.e+-]+)", stdout) < 1e-4


def test_torchvision_checkpoint(examples):
    pytest.importorskip("torch")
    out, stdout = examples.result("torchvision_checkpoint")
    assert (out / "resnet18_10_classes.pth").is_file() and (out / "resnet18.keras").is_file()
    assert number(r"largest difference from torchvision \(log-probabilities\): ([\d.e+-]+)",
                  stdout) < 1e-3
    assert "same top-1 as torchvision on 4 inputs: True" in stdout
    assert re.search(r"astronaut\.jpg: class \d+ \(", stdout)


def test_timm_checkpoint(examples):
    if importlib.util.find_spec("timm") is None:  # not imported here: it needs torchvision
        pytest.skip("timm is not installed (make test installs it)")
    out, stdout = examples.result("timm_checkpoint")
    assert (out / "resnet18_timm" / "config.json").is_file()
    assert (out / "export" / "1" / "timm" / "model.safetensors").is_file()
    assert "loaded: resnet18, 10 classes" in stdout
    assert "image_size=(288, 288), crop_fraction=1.0, interpolation='bicubic'" in stdout
    assert number(r"zoo vs timm, largest logit difference \(relative\): ([\d.e+-]+)",
                  stdout) < 1e-4
    assert number(r"timm on zoo's export, largest logit difference \(relative\): "
                  r"([\d.e+-]+)", stdout) < 1e-4
