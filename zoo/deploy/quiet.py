"""Converters' progress chatter kept out of the user's terminal."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any


def quiet_call(fn: Callable[[], Any]) -> Any:
    """Calls ``fn`` with converters' progress chatter (Python logging, warnings) lowered."""
    import logging

    loggers = [logging.getLogger(n) for n in ("tf2onnx", "absl", "tensorflow")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
