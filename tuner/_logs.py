"""Quieter library logs for a block of code."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

__all__ = ["logs_below"]


@contextlib.contextmanager
def logs_below(level: int, *names: str) -> Iterator[None]:
    """Drop records under ``level`` from the named loggers (``""`` is the root) in the block.

    The loggers' own levels are restored afterwards. Process-wide: hold a lock where other
    threads may log through the same loggers.
    """
    loggers = [logging.getLogger(name or None) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, previous in zip(loggers, levels):
            logger.setLevel(previous)
