"""The report's interpretation tables: suspect labels and the most-confused pairs."""

import numpy as np

from zoo.recipes import reports


def test_suspect_labels_follow_the_per_class_thresholds():
    # Class 0's images average p0 = 0.7 and class 1's p1 = 0.8: image 2 (labelled 0,
    # p0 0.2 < 0.7, p1 0.8 >= 0.8) is a suspect; image 1 (p1 0.5 < 0.8) is not.
    probs = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [1.0, 0.0],
                      [0.2, 0.8], [0.2, 0.8]])
    y_true = np.array([0, 0, 0, 0, 1, 1])
    rows = reports.suspect_labels(y_true, probs, ["a", "b"])
    assert [(r["index"], r["given"], r["suggested"]) for r in rows] == [(2, "a", "b")]
    assert abs(rows[0]["margin"] - 0.6) < 1e-6


def test_confused_pairs_are_the_off_diagonal_counts_most_first():
    matrix = [[5, 3, 0], [1, 4, 0], [0, 2, 6]]
    pairs = reports.confused_pairs(matrix, ["a", "b", "c"])
    assert [(p["true"], p["predicted"], p["images"]) for p in pairs] == [
        ("a", "b", 3), ("c", "b", 2), ("b", "a", 1)]
    assert abs(pairs[0]["share_of_true"] - 3 / 8) < 1e-6
