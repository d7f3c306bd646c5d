"""Warnings attributed to the code that called into pipelines, however deep they are raised.

The entry points are outlines of named steps, so a warning's depth below the caller varies;
a hand-counted ``stacklevel`` would point into this package after the next refactoring.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# Frames that are not the caller's either: the package's own, and a ``with`` block's entry.
_PASSED_OVER = (_PACKAGE_DIR + os.sep, os.path.abspath(contextlib.__file__))


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message)``, with the location of the first frame outside pipelines.

    Args:
        message: The warning.
        category: Its class.
    """
    frame = inspect.currentframe()
    frame = frame.f_back if frame is not None else None  # the frame that calls this
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
            _PASSED_OVER):
        frame = frame.f_back
        level += 1
    del frame  # frames hold their locals alive
    warnings.warn(message, category, stacklevel=level)


__all__ = ["warn_user"]
