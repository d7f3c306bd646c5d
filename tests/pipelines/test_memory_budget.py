"""The memory cache stays within a budget: over it, from_folder says so and reads files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pipeline_helpers import make_folder, tree_fingerprint

import pipelines
from pipelines import cache


def _uses_memory_cache(ds) -> bool:
    return b"CacheDataset" in ds._as_serialized_graph().numpy()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("budget") / "photos",
                       {"astronaut": 12, "coffee": 12})


def _load(folder, **keywords):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = pipelines.from_folder(folder, image_size=32, batch_size=8, seed=3, **keywords)
    return data, [str(w.message) for w in caught if "memory" in str(w.message)]


def test_over_the_budget_the_cache_is_left_out_with_a_warning(folder, monkeypatch):
    before = tree_fingerprint(folder)
    monkeypatch.setenv("ZOO_MEMORY_BUDGET", "4096")
    data, messages = _load(folder, cache=True)
    assert len(messages) == 1, messages
    message = messages[0]
    assert str(folder) in message and "ZOO_MEMORY_BUDGET" in message
    assert "cache='<directory>'" in message and "0.00 GiB" in message
    assert not _uses_memory_cache(data.train) and not _uses_memory_cache(data.val)
    uncached, none = _load(folder, cache=False)
    assert none == []
    got = np.concatenate([y.numpy() for _, y in data.val])
    assert np.array_equal(got, np.concatenate([y.numpy() for _, y in uncached.val]))
    assert sum(int(x.shape[0]) for x, _ in data.train) == len(data.train_files)
    assert tree_fingerprint(folder) == before


def test_the_budget_counts_the_splits_together(folder, monkeypatch):
    monkeypatch.setenv("ZOO_MEMORY_BUDGET", str(10 << 20))
    data, messages = _load(folder, cache=True)
    assert messages == []
    assert _uses_memory_cache(data.train) and _uses_memory_cache(data.val)
    train_bytes = sum((folder / path).stat().st_size for path, _ in data.train_files)
    # Enough for the training files alone, not with the validation pixels beside them.
    monkeypatch.setenv("ZOO_MEMORY_BUDGET", str(train_bytes + 100))
    data, messages = _load(folder, cache=True)
    assert len(messages) == 1
    assert not _uses_memory_cache(data.train) and not _uses_memory_cache(data.val)


def test_the_default_budget_is_half_the_available_memory(monkeypatch):
    monkeypatch.delenv("ZOO_MEMORY_BUDGET", raising=False)
    available = cache.available_memory()
    with open("/proc/meminfo") as lines:
        meminfo = dict(line.split(":", 1) for line in lines)
    # Read twice on a shared machine: close, not equal.
    assert abs(available - int(meminfo["MemAvailable"].split()[0]) * 1024) < 0.1 * available
    budget, how = cache.memory_budget()
    assert abs(budget - available * cache.MEMORY_FRACTION) < 0.1 * available
    assert "available" in how
    assert cache.within_memory_limit(True, budget // 2, "train") is True
    assert cache.within_memory_limit("/somewhere", 10 * budget, "train") == "/somewhere"


def test_a_bad_budget_is_refused_with_an_example(monkeypatch):
    monkeypatch.setenv("ZOO_MEMORY_BUDGET", "4 gigabytes")
    with pytest.raises(ValueError, match=r"ZOO_MEMORY_BUDGET must be a number of bytes.*"
                                         r"'4 gigabytes'"):
        cache.memory_budget()
