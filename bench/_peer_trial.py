"""tuner's mnist1d-cnn trial as a plain function, for the other tuners in bench/peers.py.

:func:`run_trial` trains, compresses and measures exactly as a tuner trial does (the same
workload, :func:`tuner._objective.measure_trained`, the same seeds), and writes what it
spends to a JSON-lines log: one line per epoch trained and one when the trial ends. The
bench reads every arm's compute from these logs, so a trial a scheduler kills mid-way
still counts the epochs it trained.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

SPEC = "mnist1d_cnn"
OnEpoch = Callable[[int, dict[str, float], Any], bool]


def bench_spec(trials: int, epochs: int, folder: str | Path) -> Any:
    """The shipped mnist1d-cnn spec as every arm runs it: one core, no GPU, models kept."""
    import tuner

    shipped = tuner.load_spec(SPEC)
    return shipped.with_overrides(
        budget={
            "n_trials": trials,
            "max_epochs": epochs,
            "compressions_per_training": shipped.budget.compressions_per_training,
        },
        resources={"cpus": 1, "gpus": 0},
        measure={"batch_size": 32, "warmup": 5, "repeats": 20, "threads": 1},
        artifacts={"keep": "all", "path": str(Path(folder) / "models")},
    )


def active_params(spec: Any, sampled: Mapping[str, Any]) -> dict[str, Any]:
    """What a tuner trial would see for ``sampled``: fixed values added, and parameters
    whose ``when`` condition fails dropped (peers without conditional spaces sample all)."""
    from tuner._space import suggestion_order

    chosen: dict[str, Any] = {}
    for name in suggestion_order(spec.params):
        p = spec.params[name]
        if not all(o in chosen and chosen[o] in values for o, values in p.when.items()):
            continue
        chosen[name] = p.value if p.type == "fixed" else sampled[name]
        if p.type == "int":
            chosen[name] = int(chosen[name])
        elif p.type == "float":
            chosen[name] = float(chosen[name])
    return chosen


def recovery_epochs(params: Mapping[str, Any]) -> int:
    """Epochs the final model trains after compression: the fine-tune after sparsity and
    quantization-aware training (both count as compute, in every arm)."""
    from tuner._shipping import settings_from_params

    s = settings_from_params(params)
    finetune = s.finetune_epochs if s.finetune_epochs > 0 and s.threshold > 0 else 0
    return finetune + (s.qat_epochs if s.qat else 0)


def claim_number(folder: Path) -> int:
    """The next free trial number in ``folder``, safe across processes."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    while True:
        try:
            os.close(os.open(folder / f"trial-{n:05d}.claim", os.O_CREAT | os.O_EXCL))
            return n
        except FileExistsError:
            n += 1


def _log(path: Path, event: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps({"t": time.time(), **event}) + "\n")


def quick_measure(spec: Any, params: Mapping[str, Any], ctx: Any) -> dict[str, float]:
    """Size and latency of the model as it would ship, taken from the model as it stands
    (structure and precision set them, not the trained weights): what a multi-objective
    scheduler that must rank every report can be given without training anything more."""
    import torch

    from tuner._shipping import measure, settings_from_params, ship

    model = copy.deepcopy(ctx.watched_model).eval()
    shipped = ship(
        model,
        settings_from_params(params),
        calibration=ctx.watched_inputs,
        device=torch.device("cpu"),
        runtime=spec.measure.runtime,
    )
    got = measure(shipped, settings=spec.measure, threads=1, example=ctx.watched_val[0][:1])
    return {"size_bytes": float(got["size_bytes"]), "latency_ms": float(got["latency_ms"])}


def run_trial(
    spec: Any,
    sampled: Mapping[str, Any],
    *,
    seed: int,
    folder: Path,
    on_epoch: OnEpoch | None = None,
) -> dict[str, Any] | None:
    """Train, compress and measure one trial; ``None`` when ``on_epoch`` stopped it.

    ``on_epoch(epoch, metrics, ctx)`` runs after each epoch (``metrics`` holds
    ``val_accuracy``); returning True stops the trial there.
    """
    import torch

    from tuner._artifacts import save_trial_model
    from tuner._builtin_workloads import resolve_workload
    from tuner._objective import measure_trained
    from tuner._workloads import TrialContext, TrialStopped

    torch.set_num_threads(1)
    number = claim_number(folder / "claims")
    log = folder / "trials.jsonl"
    params = active_params(spec, sampled)
    ctx = TrialContext(
        device=torch.device("cpu"),
        max_epochs=spec.budget.max_epochs,
        seed=seed * 100_003 + number,
        trial_number=number,
    )

    def report(epoch: int, metrics: dict[str, float]) -> bool:
        _log(log, {"trial": number, "epoch": epoch + 1, "val_accuracy": metrics["val_accuracy"]})
        return bool(on_epoch and on_epoch(epoch, metrics, ctx))

    ctx.on_report = report
    _log(log, {"trial": number, "start": params})
    workload = resolve_workload(spec.workload)
    try:
        trained = workload.fn(params, ctx)
    except TrialStopped:
        _log(log, {"trial": number, "stopped": len(ctx.curve)})
        return None
    model_path = folder / "models" / f"trial-{number:05d}.pt"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    metrics = measure_trained(
        spec,
        params,
        trained,
        device=torch.device("cpu"),
        seed=ctx.seed,
        on_shipped=lambda tm: save_trial_model(tm, model_path),
    )
    values = {name: float(metrics[name]) for name in spec.objectives}
    _log(
        log,
        {
            "trial": number,
            "done": values,
            "test_accuracy": float(metrics["test_accuracy"]),
            "recovery_epochs": recovery_epochs(params),
            "model": str(model_path),
        },
    )
    return {**metrics, "trial": number}


def read_log(folder: Path) -> list[dict[str, Any]]:
    path = folder / "trials.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
