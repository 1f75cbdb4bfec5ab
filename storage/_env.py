"""Durations set through environment variables, checked the same way everywhere."""

from __future__ import annotations

import os

from ._errors import StoreError


def seconds_from_env(name: str, default: float, *, minimum: float, whole: bool = False) -> float:
    """``$name`` in seconds, else ``default``.

    Raises:
        StoreError: one line naming the variable, its value and what would be right.
    """
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        value = None
    if value is None or not value >= minimum:
        kind = "a whole number of seconds" if whole else "seconds"
        raise StoreError(f"{name}: got {text!r}; expected {kind} >= {minimum:g}")
    return value
