"""Export a trial's compressed model and re-measure the exported file.

The formats and how each is built live in ``tuner._formats``; this module finds the
trial's kept model (or trains it again with ``--retrain``), writes the file and checks
its accuracy, size and latency against the trial's stored figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ._artifacts import (
    ArtifactMissing,
    TrialModel,
    artifact_status,
    load_program,
    load_trial_model,
)
from ._builtin_workloads import resolve_workload
from ._compression import int8_layer_names, weight_sparsity
from ._exceptions import ExportError, SpecError, storage_error
from ._formats import (
    DECODE_DOMAIN,
    OnnxRunner,
    check_exportable,
    check_format,
    export_trial_model,
    onnx_int8_nodes,
)
from ._measure import accuracy, measure_latency
from ._objective import measure_trained, retried_from, trial_device, trial_seed
from ._settings import settings_from_params
from ._space import suggest
from ._spec import spec_from_dict
from ._workloads import TrainedModel, TrialContext
from .storage import StoreError, load_study_readonly
from .storage.keys import SPEC_ATTR


@dataclass(frozen=True)
class Figure:
    """One figure of the exported file next to the trial's stored one."""

    metric: str
    stored: float | None
    exported: float | None
    tolerance: str
    differs: bool

    @property
    def change(self) -> float | None:
        if self.stored is None or self.exported is None:
            return None
        if self.metric.endswith("accuracy"):
            return self.exported - self.stored
        return (self.exported - self.stored) / self.stored if self.stored else math.inf


@dataclass(frozen=True)
class ExportReport:
    """What ``tuner export`` wrote and how it compares with the trial's figures."""

    study: str
    trial: int
    format: str
    path: Path
    figures: list[Figure]
    int8_nodes: list[str]
    sparsity: float | None
    stored_runtime: str
    stored_size_format: str
    stored_target: str | None = None

    @property
    def warnings(self) -> list[Figure]:
        return [f for f in self.figures if f.differs]


def _figure(metric: str, stored: Any, exported: float | None) -> Figure:
    value = float(stored) if isinstance(stored, (int, float)) else None
    if value is None or exported is None:
        return Figure(metric, value, exported, "", False)
    if metric.endswith("accuracy"):
        return Figure(metric, value, exported, "1 point", abs(exported - value) > 0.01 + 1e-9)
    differs = abs(exported - value) > 0.05 * abs(value)
    return Figure(metric, value, exported, "5%", differs)


def _onnx_sparsity(proto: Any) -> float:
    """Fraction of zero weights over the float/int8 weight matrices the graph decodes or holds."""
    from onnx import numpy_helper

    zeros = total = 0
    inits = {i.name: i for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.domain == DECODE_DOMAIN:
            mask = numpy_helper.to_array(inits[node.input[0]])
            count = int(np.prod(numpy_helper.to_array(inits[node.input[2]])))
            bits = np.unpackbits(mask, count=count, bitorder="little")
            zeros += int(count - bits.sum())
            total += count
    for init in proto.graph.initializer:
        if len(init.dims) >= 2 and init.data_type in (1, 3):  # FLOAT, INT8 weight matrices
            array = numpy_helper.to_array(init)
            zeros += int((array == 0).sum())
            total += array.size
    return zeros / total if total else 0.0


def remeasure(
    tm: TrialModel, fmt: str, path: Path, data: bytes
) -> tuple[dict[str, float | None], list[str], float | None]:
    """Test accuracy, file size and latency of the exported file, read back from ``path``."""
    measure = tm.measure
    threads = int(measure.get("threads") or 1)
    warmup = int(measure.get("warmup", 10))
    repeats = int(measure.get("repeats", 50))
    figures: dict[str, float | None] = {"size_bytes": float(path.stat().st_size)}
    if fmt == "onnx":
        import onnx

        proto = onnx.load(str(path))
        try:
            onnx.checker.check_model(proto, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"{path} does not pass onnx.checker: {exc}") from exc
        runner = OnnxRunner(path, threads=threads)
        figures["test_accuracy"] = runner.accuracy(*tm.test_data)
        figures["latency_ms"] = runner.latency(
            tm.example, batch_size=1, warmup=warmup, repeats=repeats
        )[0]
        return figures, onnx_int8_nodes(proto), _onnx_sparsity(proto)

    if fmt == "pt2":
        try:
            program: nn.Module = load_program(str(path))
        except Exception as exc:
            raise ExportError(f"{path} cannot be loaded by torch.export.load: {exc}") from exc
        compile_mode = str(measure.get("compile", "auto"))
        compiled = compile_mode == "always" or (compile_mode == "auto" and tm.quantize == "int8")
        figures["test_accuracy"] = accuracy(program, *tm.test_data)
        figures["latency_ms"] = measure_latency(
            program,
            tm.example,
            batch_size=1,
            warmup=warmup,
            repeats=repeats,
            threads=threads,
            compile=compiled,
        ).p50_ms

        # What the file runs in int8 (an ONNX Runtime trial recorded ONNX's layers).
        return figures, list(int8_layer_names(program)) or list(tm.int8_layers), None
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    model = tm.shipped_torch()
    model.load_state_dict(state)
    figures["test_accuracy"] = accuracy(model, *tm.test_data)
    figures["latency_ms"] = None
    return figures, list(tm.int8_layers), weight_sparsity(model)


def _open_study(storage: Any, study_name: str) -> Any:

    try:
        return load_study_readonly(storage, study_name)
    except StoreError as exc:
        raise storage_error(exc) from exc


def artifact_path(
    storage: Any, study_name: str, trial: int, *, folder: str | Path | None = None
) -> Path | None:
    """The model file kept for a trial, or ``None`` when there is none.

    Args:
        storage: an open Optuna storage (``tuner.storage.open_storage(url, read_only=True)``).
        study_name: the study.
        trial: the trial number.
        folder: the artifacts root, when it moved since the trial ran.
    """
    status = artifact_status(_open_study(storage, study_name), trial, folder=folder)
    return status.path


def load_trial(
    storage: Any, study_name: str, trial: int, *, folder: str | Path | None = None
) -> tuple[TrialModel, Any]:
    """The trial's kept model and its frozen trial; :class:`ArtifactMissing` says why not."""
    study = _open_study(storage, study_name)
    status = artifact_status(study, trial, folder=folder)
    if status.path is None:
        raise ArtifactMissing(status.reason or f"trial {trial} has no artifact")
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial)
    return load_trial_model(status.path), frozen


def export_bytes(
    storage: Any,
    study_name: str,
    trial: int,
    fmt: str = "onnx",
    *,
    folder: str | Path | None = None,
) -> bytes:
    """The exported file of a trial as bytes (what a download offers).

    Raises:
        ArtifactMissing: the trial kept no model, or it was dropped (the message says which).
        ExportError: the model cannot be exported in ``fmt``.
    """
    tm, _ = load_trial(storage, study_name, trial, folder=folder)
    return export_trial_model(tm, fmt)


def export_trial(
    storage: Any,
    study_name: str,
    trial: int,
    fmt: str,
    out: str | Path,
    *,
    folder: str | Path | None = None,
    tm: TrialModel | None = None,
) -> ExportReport:
    """Write trial ``trial``'s model as ``fmt`` to ``out`` and re-measure the file.

    Args:
        storage: an open Optuna storage.
        study_name: the study.
        trial: the trial number.
        fmt: ``onnx``, ``pt2`` or ``state_dict``.
        out: the file to write (its folder must exist).
        folder: the artifacts root, when it moved since the trial ran.
        tm: a model rebuilt by re-running the trial, instead of the kept one.

    Returns:
        The re-measured figures next to the stored ones.
    """
    check_format(fmt)
    target = Path(out)
    if not target.parent.exists():
        raise SpecError(f"out: folder {target.parent} does not exist; expected a writable path")
    if tm is None:
        tm, frozen = load_trial(storage, study_name, trial, folder=folder)
    else:
        study = _open_study(storage, study_name)
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial)
    attrs = dict(frozen.user_attrs)
    data = export_trial_model(tm, fmt)
    target.write_bytes(data)
    measured, int8_nodes, sparsity = remeasure(tm, fmt, target, data)
    figures = [
        _figure(metric, attrs.get(metric), measured.get(metric))
        for metric in ("test_accuracy", "size_bytes", "latency_ms")
    ]
    return ExportReport(
        study=study_name,
        trial=trial,
        format=fmt,
        path=target,
        figures=figures,
        int8_nodes=int8_nodes,
        sparsity=sparsity if sparsity is not None else attrs.get("sparsity"),
        stored_runtime=str(attrs.get("latency_runtime", "torch")),
        stored_size_format=str(attrs.get("size_format", "tuner")),
        stored_target=attrs.get("latency_target"),
    )


def rerun_trial(storage: Any, study_name: str, trial: int) -> tuple[TrialModel, dict[str, Any]]:
    """Train trial ``trial`` again (same spec, params and seed) and compress it as it was.

    For trials whose model was not kept. Training on CPU with the same seed and thread
    count repeats the trial; the figures it gives are returned to compare with the stored
    ones.
    """
    import optuna

    study = _open_study(storage, study_name)
    frozen = next((t for t in study.get_trials(deepcopy=False) if t.number == trial), None)
    if frozen is None:
        raise SpecError(f"trial: study {study_name!r} has no trial {trial}")
    raw = study.user_attrs.get(SPEC_ATTR)
    if not isinstance(raw, dict):
        raise ArtifactMissing(f"study {study_name!r} has no spec recorded; cannot re-run trial")
    spec = spec_from_dict(raw)
    if spec.measure.target:
        # Timed here, beside the stored figures, whatever node the study timed it on.
        spec = spec.with_overrides(measure=replace(spec.measure, target=None))
    device = trial_device(spec)
    # FixedTrial answers every suggest call with the recorded value, like the trial did.
    fixed = cast(optuna.Trial, optuna.trial.FixedTrial(dict(frozen.params), number=trial))
    params = suggest(fixed, spec.params)
    check_exportable(settings_from_params(params).quantize)  # before the training it needs
    ctx = TrialContext(
        device=device,
        max_epochs=spec.budget.max_epochs,
        seed=trial_seed(spec, retried_from(trial, frozen.system_attrs)),
        trial_number=trial,
    )
    trained = resolve_workload(spec.workload).fn(params, ctx)
    if not isinstance(trained, TrainedModel):
        raise ArtifactMissing(f"workload {spec.workload!r} did not return a TrainedModel")
    kept: list[TrialModel] = []
    metrics = measure_trained(
        spec, params, trained, device=device, seed=ctx.seed, on_shipped=kept.append
    )
    return kept[0], metrics
