"""The trial table and one trial's details."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tuner._settings import settings_from_params
from tuner.storage import (
    DEFAULT_URL,
    Bound,
    TrialRecord,
    column_format,
    commands,
    keys,
    latency_p90,
    metric_value,
    quantize_mode,
    show_metric,
)
from tuner.storage.keys import (
    COMPRESSION_CHOICE_ATTR,
    START_ATTR,
    TRAINED_BY_ATTR,
    VIOLATIONS_ATTR,
)

from .front import budget_unit, display_scale

# Metrics in the order a person reads a trial, with how to show them.
METRICS: dict[str, str] = {
    "accuracy": "validation accuracy",
    "test_accuracy": "test accuracy",
    "accuracy_float": "validation accuracy before compression",
    "size_bytes": "size",
    "latency_ms": "latency p50 (batch 1)",
    "latency_ms_p90": "latency p90 (batch 1)",
    "latency_ms_batch": "latency p50 (batch)",
    "latency_ms_batch_p90": "latency p90 (batch)",
    "latency_batch_size": "latency batch size",
    "sparsity": "sparsity",
    "param_count": "parameters",
    "int8_layers": "int8 layers",
    "float8_layers": "float8 layers",
    "prune_structure": "sparsity structure",
    "removed_units": "removed units",
    "train_time_s": "training time",
    "epochs": "epochs trained",
    "trained_by": "model trained by trial",
    "compression_choice": "why this compression",
    "latency_device": "measured on",
    "latency_machine": "measured on machine",
    "latency_threads": "threads",
    "device": "trained on",
    "feasible": "meets constraints",
    "stopped_reason": "why it stopped early",
}


def table_rows(
    records: Sequence[TrialRecord],
    objectives: Mapping[str, str],
    front: Iterable[int] = (),
) -> list[dict[str, Any]]:
    """One row per trial: number, state, front, constraints, objectives, metrics, params.

    Values stay numbers (sizes in KB, accuracies in %) so the table sorts them.
    """
    on_front = set(front)
    param_names = sorted({p for r in records for p in r.params})
    extra = [m for m in _table_metrics(objectives) if m not in objectives]
    # GPU studies that tried float8 get its column; others no column of zeros.
    float8 = any(r.metrics.get("float8_layers") for r in records)
    rows = []
    for r in records:
        row: dict[str, Any] = {
            "trial": r.number,
            "state": r.state,
            "front": r.number in on_front,
            "meets constraints": r.feasible if r.state == "COMPLETE" else None,
        }
        for name in objectives:
            v = r.values.get(name)
            row[_column(name)] = None if v is None else v * display_scale(name)
        for name in extra:
            v = metric_value(r, name)
            row[_column(name)] = None if v is None else v * display_scale(name)
        row["int8 layers"] = len(r.metrics.get("int8_layers") or [])
        if float8:
            row["float8 layers"] = len(r.metrics.get("float8_layers") or [])
        row["epochs"] = len(r.curve) or r.metrics.get("epochs")
        for name in param_names:
            v = r.params.get(name)
            row[name] = v if isinstance(v, (int, float)) or v is None else str(v)
        row["duration (s)"] = r.duration_s
        row["error"] = (r.error or "").splitlines()[0] if r.error else None
        rows.append(row)
    return rows


def _table_metrics(objectives: Mapping[str, str]) -> list[str]:
    return [*objectives] + [
        m
        for m in (
            "test_accuracy",
            latency_p90(objectives),
            "sparsity",
            "param_count",
            "train_time_s",
        )
        if m not in objectives
    ]


def table_formats(records: Sequence[TrialRecord], objectives: Mapping[str, str]) -> dict[str, str]:
    """A printf format per metric column of :func:`table_rows`, with the digits the text has."""
    out = {}
    for name in _table_metrics(objectives):
        scale = display_scale(name)
        values = [v * scale for r in records if (v := metric_value(r, name)) is not None]
        form = column_format(name, values)
        if form is not None:
            out[_column(name)] = form
    return out


def _column(metric: str) -> str:
    unit = budget_unit(metric)[0]
    return f"{metric} ({unit})" if unit in ("KB", "%") else metric


def trial_metrics(record: TrialRecord) -> list[tuple[str, str, str]]:
    """Every recorded metric of a trial as (metric, what it is, value), known ones first."""
    merged: dict[str, Any] = {**record.metrics, **record.values}
    merged.pop("constraint_violations", None)
    rows = [(m, label, show_metric(m, merged[m])) for m, label in METRICS.items() if m in merged]
    rows += [(m, m, show_metric(m, merged[m])) for m in sorted(merged) if m not in METRICS]
    return rows


def not_exported(record: TrialRecord) -> str | None:
    """Why ``tuner export`` cannot write this trial's model, or ``None`` where it can."""
    if quantize_mode(record.params, record.metrics) == "float8":
        return (
            f"Trial {record.number} shipped float8, which torchao makes for the GPU it ran on; "
            "tuner exports on the CPU, which has no float8 kernels."
        )
    return None


def export_command(study: str, number: int, url: str, retrain: bool = False) -> str:
    """The shell command that exports trial ``number`` of ``study`` to ONNX."""
    storage = None if url == DEFAULT_URL else url
    return commands.export_command(study, number, storage=storage, retrain=retrain)


def kept_model(record: TrialRecord, study_attrs: Mapping[str, Any]) -> tuple[str, bool]:
    """Where a complete trial's model is kept, in words, and whether exporting it needs
    the trial trained again (``--retrain``: it kept none, or its model was dropped)."""
    dropped = study_attrs.get(f"{keys.ARTIFACT_DROPPED_PREFIX}{record.number}")
    if dropped:
        return f"Its model was dropped by {dropped}, once other trials dominated it.", True
    if record.metrics.get(keys.ARTIFACT_ID_ATTR):
        where = record.metrics.get(keys.ARTIFACT_STORE_ATTR)
        if where == keys.ARTIFACT_IN_STORE:
            return "Its model is kept in the study store.", False
        return f"Its model is kept in {where}.", False
    status = str(record.metrics.get(keys.ARTIFACT_STATUS_ATTR) or "")
    if status.startswith("dropped by") or status.startswith("not kept"):
        return f"Its model was {status}.", True
    return "It recorded no model.", True


def tensorboard_run(record: TrialRecord) -> str | None:
    """Where the trial's TensorBoard run is, in words; None where it wrote none."""
    where = record.metrics.get(keys.TENSORBOARD_ATTR)
    if not isinstance(where, str) or not where:
        return None
    if where == keys.ARTIFACT_IN_STORE:
        return "Its TensorBoard run (curves, final metrics, HParams) is kept in the study store."
    return f"Its TensorBoard run (curves, final metrics, HParams) is in {where}."


def tensorboard_command(study: str, url: str) -> str:
    """The shell command that serves ``study``'s TensorBoard runs."""
    return commands.tensorboard_command(study, storage=None if url == DEFAULT_URL else url)


def retime_command(study: str, url: str) -> str:
    """The shell command that times ``study``'s front again side by side."""
    return commands.retime_command(study, storage=None if url == DEFAULT_URL else url)


STATUS = {
    "COMPLETE": "complete",
    "PRUNED": "stopped early",
    "FAIL": "failed",
    "RUNNING": "running",
    "WAITING": "waiting",
}


def trial_tags(record: TrialRecord, front: Iterable[int]) -> list[str]:
    """What a trial is, in words: its state, then front and constraints when complete."""
    tags = [STATUS.get(record.state, record.state.lower())]
    if record.state == "COMPLETE":
        tags.append("on the Pareto front" if record.number in set(front) else "dominated")
        tags.append("meets the constraints" if record.feasible else "breaks a constraint")
    parent = record.metrics.get(TRAINED_BY_ATTR)
    if parent is not None:
        choice = record.metrics.get(COMPRESSION_CHOICE_ATTR)
        why = f" ({choice})" if choice else ""
        tags.append(f"compressed anew from trial {parent}'s trained model{why}")
    if record.metrics.get(START_ATTR) == "center":
        tags.append("the study's first trial: the middle of the space")
    worker = record.metrics.get(keys.WORKER_ATTR)
    if worker:
        tags.append(f"ran on {worker}")
    return tags


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


def recovery_text(record: TrialRecord) -> str | None:
    """How the trial's shipped model was compressed and won its accuracy back, in words;
    None for a trial that recorded no model."""
    if record.state != "COMPLETE":
        return None
    # quantize fixed in the spec is no parameter; the trial recorded it.
    settings = settings_from_params(
        {**record.params, "quantize": quantize_mode(record.params, record.metrics)}
    )
    if not settings.compressed:
        return "Shipped as trained: float, no sparsity."
    # Both recoveries need the workload's training data; the time they took shows they ran.
    trained = float(record.metrics.get("finetune_time_s", 0.0)) > 0
    parts = []
    if settings.threshold > 0:
        text = f"{100 * settings.threshold:.0f}% {settings.structure} sparsity"
        text += f" in {settings.prune_steps} steps" if settings.prune_steps > 1 else ""
        if settings.finetune_epochs > 0 and trained:
            text += f", then {_epochs(settings.finetune_epochs)} of fine-tuning"
            if settings.distill == "kd":
                text += (
                    f" distilled from the trained model (temperature "
                    f"{settings.distill_temperature:g}, teacher weight {settings.distill_alpha:.2f})"
                )
            else:
                text += " on the labels"
        else:
            text += ", not fine-tuned"
        parts.append(text)
    if settings.quantize == "float8":
        parts.append(
            "float8 on the GPU (weights and activations, one scale per tensor)"
            if record.metrics.get("float8_layers")
            else "float8 asked for, but no layer is in float8 (it takes Linear layers whose "
            "sides are multiples of 16, less those kept float)"
        )
    if settings.quantize == "int8":
        parts.append(
            f"int8 learned in {_epochs(settings.qat_epochs)} of quantization-aware training"
            if settings.qat and trained
            else "int8 calibrated after training"
        )
    if settings.quantize != "none":
        kept = record.metrics.get("float_layers") or []
        if kept:
            parts.append("kept in float: " + ", ".join(str(n) for n in kept))
    return "Compressed: " + "; ".join(parts) + "."


def broken_constraints(record: TrialRecord, constraints: Sequence[Bound]) -> list[str]:
    """Each constraint ``record`` breaks, with how far off it is (from what it recorded)."""
    violations = record.metrics.get(VIOLATIONS_ATTR)
    if not violations or record.feasible:
        return []
    return [
        f"{b.describe()} (off by {show_metric(b.metric, v)})"
        for b, v in zip(constraints, violations)
        if v > 0
    ]


def filter_rows(
    rows: Sequence[Mapping[str, Any]],
    *,
    states: Iterable[str],
    front_only: bool = False,
    feasible_only: bool = False,
    outside_budget: Iterable[int] = (),
) -> list[Mapping[str, Any]]:
    """The rows of :func:`table_rows` the viewer asked for; trials in ``outside_budget`` go."""
    chosen, hidden = set(states), set(outside_budget)
    return [
        row
        for row in rows
        if row["state"] in chosen
        and (row["front"] or not front_only)
        and (bool(row["meets constraints"]) or not feasible_only)
        and row["trial"] not in hidden
    ]
