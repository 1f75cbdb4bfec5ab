"""Kept for imports not yet moved: metric formatting lives in ``tuner.storage``."""

from __future__ import annotations

from .storage import show_epochs, show_metric

__all__ = ["show_epochs", "show_metric"]
