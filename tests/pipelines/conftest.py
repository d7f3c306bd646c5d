"""Fixtures of the pipeline tests: tiny folders of real photos."""

from __future__ import annotations

import sys
from pathlib import Path

# pytest puts tests/ on sys.path (tests/ has no __init__.py), where this folder would pass
# for the `pipelines` package as a namespace package; the project root must come first.
_ROOT = str(Path(__file__).resolve().parents[2])
if sys.path[:1] != [_ROOT]:
    sys.path.insert(0, _ROOT)
if "pipelines" in sys.modules and getattr(sys.modules["pipelines"], "__file__", None) is None:
    del sys.modules["pipelines"]

import pytest  # noqa: E402
from pipeline_helpers import make_folder  # noqa: E402


@pytest.fixture(scope="session")
def small_folder(tmp_path_factory) -> Path:
    """Three classes of 10, 10 and 8 real-photo JPEGs."""
    return make_folder(tmp_path_factory.mktemp("folder"),
                       {"astronaut": 10, "coffee": 10, "chelsea": 8})
