"""Metric values as people read them: KB, %, ms."""

from __future__ import annotations

from typing import Any


def show_metric(metric: str, value: Any, *, unit: bool = True) -> str:
    """``value`` of ``metric`` for a table or report; ``unit=False`` drops the "ms"."""
    if value is None:
        return "-"
    if metric == "size_bytes":
        return f"{value / 1024:.1f} KB"
    if "accuracy" in metric or metric == "sparsity":
        return f"{100 * float(value):.1f}%"
    if metric.startswith("latency_ms"):
        ms = float(value)
        # Three decimals, or three significant digits below 0.1 ms (0.00432, not 0.004).
        text = f"{ms:.3f}" if abs(ms) >= 0.1 or ms == 0 else f"{ms:.3g}"
        return text + (" ms" if unit else "")
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def show_epochs(count: int) -> str:
    """``1 epoch``, ``3 epochs``."""
    return f"{count} epoch" if count == 1 else f"{count} epochs"
