from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

STUDY = "tiny"

# Trial 1 fails, so the store holds a failed trial with its error next to the
# complete and early-stopped ones.
_WORKLOAD = """
from tuner._builtin_workloads import digits_mlp


def flaky_digits(params, ctx):
    if ctx.trial_number == 1:
        raise RuntimeError("simulated failure in trial 1")
    return digits_mlp(params, ctx)
"""


def dashboard_spec(name: str = STUDY) -> dict[str, Any]:
    """Six finished digits trials: early stopping on, sparsity capped by a constraint."""
    return {
        "name": name,
        "workload": "dashboard_workloads:flaky_digits",
        "objectives": {"accuracy": "maximize", "size_bytes": "minimize", "latency_ms": "minimize"},
        "constraints": {"sparsity": {"max": 0.5}},
        "search_space": {
            "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
            "lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True},
            "momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"optimizer": "sgd"}},
            "batch_size": {"type": "categorical", "choices": [64, 128]},
            "hidden_units": {"type": "categorical", "choices": [16, 32]},
            "prune_threshold": {"type": "float", "low": 0.0, "high": 0.9},
            "quantize": {"type": "categorical", "choices": ["none", "int8"]},
        },
        "sampler": {"name": "random", "seed": 1},
        # The median rule judges the float learning curve alone, which seeded training
        # makes the same on every run; asha also ranks by measured latency, whose noise
        # can leave every trial on its rung's front, and then nothing would be stopped.
        "early_stopping": {"name": "median", "min_epochs": 1, "min_trials": 4},
        "budget": {"n_trials": 6, "max_epochs": 3},
        # int8 uncompiled: the pages show int8 trials without paying for torch.compile.
        "measure": {"batch_size": 8, "warmup": 2, "repeats": 5, "compile": "never"},
    }


@pytest.fixture(scope="session")
def dashboard_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SQLite store filled by a real ``tuner.run``: complete, stopped and failed trials."""
    import tuner

    folder = tmp_path_factory.mktemp("dashboard")
    (folder / "dashboard_workloads.py").write_text(_WORKLOAD)
    sys.path.insert(0, str(folder))
    try:
        url = f"sqlite:///{folder / 'study.db'}"
        tuner.run(dashboard_spec(), storage=url)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("dashboard_workloads", None)
    yield url


@pytest.fixture
def app_path() -> Path:
    return Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
