"""Temperature scaling on real data: scikit-learn's digits, and a LeNet-5 run on them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from zoo.recipes import calibrate


@pytest.fixture(scope="module")
def digits_scores():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    xtr, xva, ytr, yva = train_test_split(digits.data / 16.0, digits.target, test_size=0.3,
                                          stratify=digits.target, random_state=0)
    clf = LogisticRegression(max_iter=200).fit(xtr, ytr)
    return clf.decision_function(xva), yva


def test_fitted_temperature_undoes_a_known_sharpening(digits_scores):
    logits, labels = digits_scores
    base = calibrate.fit_temperature(logits, labels)
    # Multiplying the logits by 4 must be undone by a temperature 4 times as large.
    assert calibrate.fit_temperature(4 * logits, labels) == pytest.approx(4 * base, rel=1e-2)


def test_temperature_lowers_ece_and_keeps_the_argmax(digits_scores):
    logits, labels = digits_scores
    sharp = calibrate._softmax(5 * logits)
    record = calibrate.calibration_record(sharp, labels)
    assert record["ece_after"] < 0.75 * record["ece_before"]
    after = calibrate.scale(sharp, record["temperature"])
    np.testing.assert_array_equal(after.argmax(1), sharp.argmax(1))
    assert record["images"] == len(labels) and record["bins"] == 15
    assert sum(record["reliability_after"]["count"]) == len(labels)


def test_ece_and_reliability_by_hand():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 0, 1])
    table = calibrate.reliability(probs, labels, bins=10)
    assert table["count"] == [0, 0, 0, 0, 0, 1, 1, 0, 2, 0]
    assert table["accuracy"][8] == 0.5 and table["confidence"][8] == pytest.approx(0.9)
    assert table["confidence"][0] is None
    # (2 * |0.5 - 0.9| + |1 - 0.6| + |1 - 0.7|) / 4
    assert calibrate.expected_calibration_error(probs, labels, bins=10) == pytest.approx(
        (0.8 + 0.4 + 0.3) / 4)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "hot"])
def test_bad_temperature_is_refused(bad):
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        calibrate.scale(np.array([[0.5, 0.5]]), bad)


def test_labels_outside_the_classes_are_refused():
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\)"):
        calibrate.fit_temperature(np.zeros((2, 2)), [0, 2])


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from zoo.cli import main
    from zoo.recipes.demo import write_digits

    root = write_digits(tmp_path_factory.mktemp("data") / "digits")
    run = tmp_path_factory.mktemp("runs") / "lenet"
    assert main(["train", "--data", str(root), "--model", "lenet5", "--weights", "none",
                 "--epochs", "3", "--out", str(run)]) == 0
    return root, run


def test_run_records_its_temperature(digits_run):
    _, run = digits_run
    record = json.loads((run / "run.json").read_text())["calibration"]
    assert record["method"] == "temperature" and record["fitted_on"] == "validation"
    assert record["temperature"] > 0 and record["ece_after"] < record["ece_before"]
    assert set(record["reliability_before"]) == {"confidence", "accuracy", "count"}
    assert sum(record["reliability_before"]["count"]) == record["images"]


def test_evaluate_measures_the_temperature_and_flip_tta(digits_run, tmp_path, capsys):
    from zoo.cli import main

    root, run = digits_run
    assert main(["evaluate", str(run), "--data", str(root), "--out", str(tmp_path / "e"),
                 "--tta", "flip"]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["tta"]["accuracy_without"] == pytest.approx(metrics["accuracy"])
    assert 0 < metrics["tta"]["accuracy"] <= 1
    assert metrics["calibration"]["ece_after"] < metrics["calibration"]["ece_before"]
    assert "with tta=flip" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--data", str(root), "--out", str(tmp_path / "n"),
                 "--no-calibrate"]) == 0
    assert "calibration" not in json.loads((tmp_path / "n" / "metrics.json").read_text())
