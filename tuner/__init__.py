"""tuner: tune PyTorch training and compression together.

Each trial trains a real model with the sampled hyperparameters, sparsifies and
quantizes it, and measures the accuracy, size and latency of the model as it would
ship. Studies live in Optuna's SQL storage (a SQLite file by default, PostgreSQL when
shared), so plain ``optuna`` and ``optuna-dashboard`` can open them too.

Example::

    import tuner

    spec = tuner.load_spec("search_spaces/digits_mlp.yaml")
    result = tuner.run(spec, n_trials=10)
    for trial in result.pareto_front:
        print(trial.number, trial.values)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._exceptions import (
    ArtifactMissing,
    CompressionError,
    DispatchError,
    ExportError,
    NightLocked,
    RankDied,
    SpecError,
    StorageError,
    StoreUnavailableError,
    TrialsKeepFailing,
    TunerError,
    WorkloadError,
)

if TYPE_CHECKING:
    from ._retime import retime
    from ._run import RunResult, run
    from ._spec import StudySpec, load_spec
    from ._workloads import TrainedModel, TrialContext, TrialStopped, train_classifier
    from .storage import TrialRecord


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("tuner")
    except metadata.PackageNotFoundError:  # a checkout that was never installed
        return "0+unknown"


__version__ = _version()

# torch and optuna load on first use, so `import tuner` (and the CLI) start fast.
_LAZY = {
    "RunResult": "._run",
    "run": "._run",
    "retime": "._retime",
    "StudySpec": "._spec",
    "load_spec": "._spec",
    "TrainedModel": "._workloads",
    "TrialContext": "._workloads",
    "TrialStopped": "._workloads",
    "train_classifier": "._workloads",
    "TrialRecord": ".storage",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tuner' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "ArtifactMissing",
    "CompressionError",
    "DispatchError",
    "ExportError",
    "NightLocked",
    "RankDied",
    "RunResult",
    "SpecError",
    "StorageError",
    "StoreUnavailableError",
    "StudySpec",
    "TrainedModel",
    "TrialContext",
    "TrialRecord",
    "TrialStopped",
    "TrialsKeepFailing",
    "TunerError",
    "WorkloadError",
    "load_spec",
    "retime",
    "run",
    "train_classifier",
]
