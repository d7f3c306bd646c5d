"""The user's path: `zoo train` on a folder with broken files, then `zoo evaluate`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import zoo
from zoo.cli import main
from zoo.recipes.demo import write_digits
from zoo.recipes.evaluate import evaluate


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    root = write_digits(tmp_path_factory.mktemp("data") / "digits")
    # What a real folder has: a zero-byte file, text saved as an image, a hidden file.
    (root / "3" / "empty.png").write_bytes(b"")
    (root / "5" / "notes.png").write_text("not an image")
    (root / "7" / ".DS_Store").write_bytes(b"\0\1\2")
    return root


@pytest.fixture(scope="module")
def trained_run(digits_folder, tmp_path_factory):
    before = sorted(p.name for p in digits_folder.rglob("*"))
    run = tmp_path_factory.mktemp("runs") / "lenet"
    code = main(["train", "--data", str(digits_folder), "--model", "lenet5", "--weights",
                 "none", "--epochs", "3", "--out", str(run)])
    assert code == 0
    # The user's folder is exactly as it was: nothing written, moved or deleted.
    assert sorted(p.name for p in digits_folder.rglob("*")) == before
    return run


def test_train_on_a_folder_skips_broken_files(trained_run):
    info = json.loads((trained_run / "run.json").read_text())
    assert info["data"]["skipped"] == 3
    assert info["class_names"] == [str(i) for i in range(10)]
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["val_accuracy"] > 0.5


def test_finished_run_needs_overwrite(trained_run, digits_folder, capsys):
    code = main(["train", "--data", str(digits_folder), "--model", "lenet5", "--weights",
                 "none", "--epochs", "1", "--out", str(trained_run)])
    assert code == 2
    assert "already holds a finished run" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["run", "keras"])
def test_evaluate_run_dir_and_keras_file(trained_run, digits_folder, tmp_path, which):
    target = trained_run if which == "run" else trained_run / "best.keras"
    metrics = evaluate(target, digits_folder, out_dir=tmp_path / "eval")
    assert metrics["num_images"] == 1797
    assert len(metrics["skipped"]) >= 2
    assert (tmp_path / "eval" / "confusion_matrix.png").exists()
    assert (tmp_path / "eval" / "gradcam.png").exists()
    run_metrics = json.loads((trained_run / "metrics.json").read_text())
    # The whole folder includes the training images: at least as good as validation.
    assert metrics["accuracy"] >= run_metrics["val_accuracy"] - 0.02


def test_evaluate_rejects_unknown_class_folders(trained_run, digits_folder, tmp_path):
    odd = tmp_path / "odd"
    shutil.copytree(digits_folder / "1", odd / "1")
    (odd / "eleven").mkdir()
    Image.fromarray(np.zeros((8, 8), "uint8")).save(odd / "eleven" / "x.png")
    with pytest.raises(ValueError, match=r"not classes of .*eleven.*Rename"):
        evaluate(trained_run, odd, out_dir=tmp_path / "eval")


def test_evaluate_matches_imagenet_wordnet_folders(tmp_path):
    # A weights file of a 1000-class model stands in for a downloaded ImageNet set (LeNet-5
    # would be built with its own default of 10 classes and leave the file's head out).
    model = zoo.build("resnet18")
    weights = tmp_path / "resnet18_imagenet.weights.h5"
    model.save_weights(weights)
    folder = tmp_path / "val"
    for wnid in ("n01440764", "n01443537"):  # tench, goldfish
        (folder / wnid).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((40, 40, 3), 60 * i, "uint8")).save(folder / wnid / f"{i}.png")
    metrics = evaluate("resnet18", folder, weights=str(weights), out_dir=tmp_path / "eval")
    assert metrics["num_images"] == 4
    assert set(metrics["per_class"]) >= {"tench", "goldfish"}
    assert metrics["per_class"]["tench"]["support"] == 2
    assert "confusion_matrix" not in metrics  # 1000 classes: per-class figures only


def test_cli_list_and_info(capsys):
    assert main(["list", "resnet*"]) == 0
    out = capsys.readouterr().out
    assert "resnet50_v1" in out and "keras:ResNet50" in out and "vgg16" not in out
    assert main(["info", "alexnet"]) == 0
    out = capsys.readouterr().out
    assert "61,100,840" in out and "0.714" in out and "torchvision: alexnet" in out
    assert main(["info", "ResNet50"]) == 2
    assert "resnet50_v1" in capsys.readouterr().err


def test_lr_find_command(digits_folder, tmp_path, capsys):
    code = main(["lr-find", "--data", str(digits_folder), "--model", "lenet5", "--weights",
                 "none", "--out", str(tmp_path / "lr"), "--steps", "30"])
    assert code == 0
    assert "suggested learning rate" in capsys.readouterr().out
    assert (tmp_path / "lr" / "lr_find.png").exists()


def test_run_dir_inside_the_data_folder_is_refused(digits_folder):
    with pytest.raises(ValueError, match="inside the data folder"):
        from zoo.recipes.finetune import finetune

        finetune("lenet5", digits_folder, weights=None, epochs=1,
                 out_dir=Path(digits_folder) / "run")


def test_cli_warnings_are_plain_lines_and_the_format_is_restored(monkeypatch):
    # The skipped-files and imbalance warnings are written for the reader: the CLI prints
    # them without the file and line of zoo's code that raised them.
    import warnings

    from zoo import cli

    seen = {}

    def command(args):
        seen["line"] = warnings.formatwarning("Skipped 3 file(s)", UserWarning, "folder.py", 1)
        return 0

    monkeypatch.setattr(cli, "cmd_list", command)
    before = warnings.formatwarning
    assert main(["list"]) == 0
    assert seen["line"] == "UserWarning: Skipped 3 file(s)\n"
    assert warnings.formatwarning is before  # in-process callers keep their own format


def test_train_and_lr_find_without_a_validation_split(digits_folder, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--data", str(digits_folder), "--model", "lenet5", "--weights",
                 "none", "--epochs", "1", "--validation-split", "0", "--out", str(run)])
    assert code == 0
    out = capsys.readouterr().out
    assert "no validation split" in out.lower()
    assert f"run directory: {run}" in out
    info = json.loads((run / "run.json").read_text())
    assert info["validation"] == "none" and info["val_accuracy"] is None
    assert info["recipe"]["validation_split"] == 0
    # Every readable image trained: nothing was held out.
    assert sum(info["data"]["counts"]["train"].values()) == 1797
    assert (run / "best.keras").is_file()
    code = main(["lr-find", "--data", str(digits_folder), "--model", "lenet5", "--weights",
                 "none", "--validation-split", "0", "--out", str(tmp_path / "lr"),
                 "--steps", "5"])
    assert code == 0 and (tmp_path / "lr" / "lr_find.png").is_file()


def test_train_refuses_patience_without_a_validation_split(digits_folder, tmp_path, capsys):
    code = main(["train", "--data", str(digits_folder), "--model", "lenet5", "--weights",
                 "none", "--epochs", "1", "--validation-split", "0", "--patience", "2",
                 "--out", str(tmp_path / "run")])
    assert code == 2
    assert "--validation-split" in capsys.readouterr().err


def test_cli_info_shows_the_default_class_count(capsys):
    assert main(["info", "lenet5"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^num_classes\s+10 ", out, re.MULTILINE), out
    # C1, C3, C5 (5x5 convolutions), F6 and the 10-way output, weights and biases.
    params = (25 * 1 + 1) * 6 + (25 * 6 + 1) * 16 + (25 * 16 + 1) * 120 + 121 * 84 + 85 * 10
    assert f"{params:,}" in out
    assert main(["info", "resnet18"]) == 0
    assert re.search(r"^num_classes\s+1000 ", capsys.readouterr().out, re.MULTILINE)


def test_cli_info_shows_each_weight_set_s_eval_transform(capsys):
    assert main(["info", "resnet50"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^weights:torchvision_v2 .* eval 224 of 232 \(bilinear\)$", out,
                     re.MULTILINE), out
    assert re.search(r"^weights:torchvision_v1 .* eval 224 of 256 \(bilinear\)$", out,
                     re.MULTILINE), out
