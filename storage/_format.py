"""Metric values as people read them: sizes in KB, accuracies in %, latency in ms.

The one formatter of tuner: the CLI, the nightly report, early stopping's messages
and the dashboard all call :func:`show_metric`, so a metric reads the same wherever
it is shown. :func:`metric_unit` is the unit a metric is drawn and typed in (axes,
budget inputs, table columns), with the factor from the stored value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


def metric_unit(metric: str) -> tuple[str, float]:
    """The unit ``metric`` is shown in, and the factor from the stored value to it.

    ``size_bytes`` is shown in KB, accuracies and sparsity in %, latencies in ms;
    other metrics as stored (``("", 1.0)``).
    """
    if metric == "size_bytes":
        return "KB", 1 / 1024
    if "accuracy" in metric or metric == "sparsity":
        return "%", 100.0
    if _in_ms(metric):
        return "ms", 1.0
    return "", 1.0


def _in_ms(metric: str) -> bool:
    # latency_ms, latency_ms_p90, latency_ms_batch...; latency_reference_ms, any other *_ms.
    return metric.startswith("latency_ms") or metric.endswith("_ms")


def sparsity_kind(
    params: Mapping[str, Any], metrics: Mapping[str, Any]
) -> tuple[str, float | None]:
    """How a trial was sparsified: ``dense``, ``unstructured`` or ``structured``, and the
    fraction it sampled (``None`` where the spec fixed it: a fixed value is no parameter, so
    the kind is read from what the trial recorded)."""
    structure = str(
        params.get("prune_structure") or metrics.get("prune_structure") or "unstructured"
    )
    threshold = params.get("prune_threshold")
    if threshold is not None:
        return (structure, float(threshold)) if float(threshold) > 0 else ("dense", 0.0)
    return (structure if float(metrics.get("sparsity") or 0.0) > 0 else "dense"), None


def sparsity_label(params: Mapping[str, Any], metrics: Mapping[str, Any]) -> str:
    """:func:`sparsity_kind` as people read it, with the fraction sampled: ``structured 50%``."""
    kind, fraction = sparsity_kind(params, metrics)
    return f"{kind} {fraction:.0%}" if fraction else kind


def quantize_mode(params: Mapping[str, Any], metrics: Mapping[str, Any]) -> str:
    """How a trial was asked to quantize (``none``, ``int8``, ``float8``): its parameter,
    else what it recorded (a setting fixed in the spec is no parameter)."""
    return str(params.get("quantize") or metrics.get("quantize") or "none")


def precision(metrics: Mapping[str, Any]) -> str:
    """What the shipped model computes its layers in: ``int8`` or ``float8`` where a trial
    recorded layers that really do, else ``float``."""
    for kind in ("float8", "int8"):
        if metrics.get(f"{kind}_layers"):
            return kind
    return "float"


def mixed_machines(metrics: Iterable[Mapping[str, Any]]) -> str | None:
    """One line saying that the latencies of these trials (their recorded metrics) come
    from more than one kind of machine, naming each with its count; ``None`` where they
    come from one (or trials recorded none)."""
    counts: dict[str, int] = {}
    for m in metrics:
        machine = m.get("latency_machine")
        if machine:
            counts[str(machine)] = counts.get(str(machine), 0) + 1
    if len(counts) < 2:
        return None
    kinds = ", ".join(
        f"{name} ({counted(n, 'trial')})"
        for name, n in sorted(counts.items(), key=lambda item: -item[1])
    )
    return (
        f"latencies were measured on {len(counts)} kinds of machine: {kinds}; "
        "compare latencies within one kind"
    )


def counted(n: int, noun: str) -> str:
    """``1 trial``, ``3 trials``: ``n`` and ``noun``, plural where ``n`` is not 1."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# The machine's speed is said to have moved when the yardstick timed beside the trials'
# latencies (``latency_reference_ms``) spread this much between its 10th and 90th percentile.
SPEED_SPREAD = 0.2


def reference_ms(metrics: Mapping[str, Any]) -> float | None:
    """The yardstick a trial timed beside its latencies (``latency_reference_ms``), where it
    recorded a usable one."""
    value = metrics.get("latency_reference_ms")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def speed_spread(metrics: Iterable[Mapping[str, Any]], *, least: int = 5) -> str | None:
    """One line saying that the machine's speed moved while these trials (their recorded
    metrics) were timed, by how much, and what that means for their latencies; ``None``
    where it held within :data:`SPEED_SPREAD`, or fewer than ``least`` trials timed the
    yardstick on one kind of machine.

    Latencies timed on one kind of machine are compared; of several kinds, the one with the
    most trials speaks (:func:`mixed_machines` says the rest). From ten trials on, the 10th
    and 90th percentile are compared, so that one odd trial does not speak for the study;
    below that, the fastest and the slowest.
    """
    by_machine: dict[str, list[float]] = {}
    for m in metrics:
        reference = reference_ms(m)
        if reference is not None:
            by_machine.setdefault(str(m.get("latency_machine")), []).append(reference)
    if not by_machine:
        return None
    most = max(by_machine.values(), key=len)
    ordered = sorted(most)
    if len(ordered) < least:
        return None
    if len(ordered) >= 10:
        low = ordered[round(0.1 * (len(ordered) - 1))]
        high = ordered[round(0.9 * (len(ordered) - 1))]
        span = "10th to 90th percentile"
    else:
        low, high, span = ordered[0], ordered[-1], "fastest to slowest"
    if high <= low * (1 + SPEED_SPREAD):
        return None
    return (
        f"the machine's speed moved while these trials were timed: a fixed computation timed "
        f"beside each one's latency took {_ms(low)} to {_ms(high)} ms ({span}, "
        f"{high / low - 1:.0%} apart); latency differences smaller than that may be the "
        "machine's, not the model's"
    )


def latency_p90(objectives: Iterable[str]) -> str:
    """The p90 metric that goes beside a study's latency objective.

    A study that minimises latency at its batch size (``latency_ms_batch``) is shown that
    latency's p90, not batch 1's; otherwise ``latency_ms_p90``.
    """
    chosen = set(objectives)
    if "latency_ms_batch" in chosen and "latency_ms" not in chosen:
        return "latency_ms_batch_p90"
    return "latency_ms_p90"


def _ms(value: float) -> str:
    # Three decimals, or three significant digits below 0.1 ms (0.00432, not 0.004).
    return f"{value:.3f}" if abs(value) >= 0.1 or value == 0 else f"{value:.3g}"


def show_metric(metric: str, value: Any, *, unit: bool = True) -> str:
    """``value`` of ``metric`` as a person reads it.

    ``14.3 KB``, ``94.2%``, ``0.250 ms`` (``0.00432 ms`` below 0.1 ms), ``12.3 s`` for
    ``*_s`` metrics, ``3,466`` for whole numbers, ``yes``/``no``, ``-`` for no value.
    ``unit=False`` drops the ``ms`` and ``s`` for a column whose header names them.

    Example:
        >>> show_metric("accuracy", 0.9415)
        '94.2%'
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "none"
    if not isinstance(value, (int, float)):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if metric == "size_bytes":
        return f"{value / 1024:.1f} KB"
    if "accuracy" in metric or metric == "sparsity":
        return f"{100 * value:.1f}%"
    if _in_ms(metric):
        return _ms(value) + (" ms" if unit else "")
    if metric.endswith("_s"):
        return f"{value:.1f}" + (" s" if unit else "")
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.4g}"


def column_format(metric: str, values: Iterable[float | None] = ()) -> str | None:
    """A printf format for a table column of ``metric`` in its unit (see :func:`metric_unit`).

    Gives the digits :func:`show_metric` shows, so a sortable table of numbers reads as
    the formatted values do: ``%.1f`` for KB and %, ``%.3f`` for ms (more decimals when
    ``values``, in ms, go below 0.1 ms). None for other metrics.
    """
    unit = metric_unit(metric)[0]
    if unit in ("KB", "%"):
        return "%.1f"
    if unit != "ms":
        return None
    small = [abs(v) for v in values if v is not None and math.isfinite(v) and 0 < abs(v) < 0.1]
    if not small:
        return "%.3f"
    return f"%.{2 - math.floor(math.log10(min(small)))}f"


def show_param(value: Any) -> str:
    """A hyperparameter value: floats to 4 significant digits, ``not set`` when absent."""
    if value is None:
        return "not set"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def show_duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.5 h``: a span of wall-clock time as people say it."""
    if seconds < 120:
        return f"{max(0.0, seconds):.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.0f} min"
    return f"{seconds / 3600:,.1f} h"


def show_epochs(count: int) -> str:
    """``1 epoch``, ``3 epochs``."""
    return f"{count} epoch" if count == 1 else f"{count} epochs"
