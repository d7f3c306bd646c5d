"""Warnings name the caller's line, however deep in the pipelines' steps they are raised."""

from __future__ import annotations

import warnings

from pipeline_helpers import make_folder

import pipelines


def test_warnings_point_at_the_line_that_called_the_pipelines(tmp_path):
    root = make_folder(tmp_path / "images", {"common": 8, "rare": 2})
    (root / "common" / "notes.txt").write_text("not an image")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipelines.from_folder(root, image_size=16, augment="none", cache=False)
    messages = [str(w.message) for w in caught]
    assert any(m.startswith("Skipped 1 file(s)") for m in messages), messages
    assert any(m.startswith("Classes are imbalanced") for m in messages), messages
    assert [w.filename for w in caught] == [__file__] * len(caught), messages
