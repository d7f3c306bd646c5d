"""sampling="balanced": every class equally often in a training epoch, of the same length."""

from __future__ import annotations

import numpy as np
import pytest
from pipeline_helpers import make_folder

import pipelines


@pytest.fixture(scope="module")
def skewed(tmp_path_factory):
    """90 images of one class, 10 of the other (real photo crops)."""
    return make_folder(tmp_path_factory.mktemp("skewed") / "images",
                       {"many": 90, "few": 10}, size=(24, 20))


def _epoch_labels(data) -> np.ndarray:
    return np.concatenate([y.numpy() for _, y in data.train])


def _build(root, **kwargs):
    return pipelines.from_folder(root, image_size=16, batch_size=20, validation_split=0,
                                 augment="none", deterministic=True,
                                 imbalance_warning=None, **kwargs)


def test_balanced_sampling_draws_both_classes_about_equally(skewed):
    natural = _build(skewed)
    balanced = _build(skewed, sampling="balanced")
    assert balanced.sampling == "balanced" and natural.sampling == "natural"
    few = natural.class_names.index("few")
    natural_labels = _epoch_labels(natural)
    assert np.mean(natural_labels == few) == pytest.approx(0.1)
    # An epoch is as long as before (steps and schedules do not change)...
    assert balanced.steps_per_epoch == natural.steps_per_epoch == 5
    first, second = _epoch_labels(balanced), _epoch_labels(balanced)
    assert len(first) == len(second) == 100
    # ...and each class is about half of it (binomial: 50 +- 5 at one sigma).
    for labels in (first, second):
        assert 35 <= np.sum(labels == few) <= 65
    # Epochs draw anew: not the same sequence twice.
    assert not np.array_equal(first, second)


def test_balanced_sampling_is_deterministic_under_the_seed(skewed):
    one = _epoch_labels(_build(skewed, sampling="balanced", seed=3))
    again = _epoch_labels(_build(skewed, sampling="balanced", seed=3))
    other = _epoch_labels(_build(skewed, sampling="balanced", seed=4))
    np.testing.assert_array_equal(one, again)
    assert not np.array_equal(one, other)


def test_unknown_sampling_is_refused_by_name(skewed):
    with pytest.raises(ValueError, match="sampling must be 'natural' or 'balanced'.*'even'"):
        _build(skewed, sampling="even")
