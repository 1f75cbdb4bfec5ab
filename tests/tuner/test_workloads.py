"""The training loop the built-in workloads share: the learning-rate schedule."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tuner._datasets import digits
from tuner._workloads import evaluate_accuracy, fit


def _distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """How far apart two sets of weights are (L2 over all of them)."""
    return float(sum((x - y).norm() ** 2 for x, y in zip(a, b, strict=True)) ** 0.5)


def _steps_per_epoch_moves(schedule: str) -> tuple[float, float, float]:
    """How far the weights move in the first and in the last of 6 epochs, and the accuracy."""
    data = digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    params = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "lr_schedule": schedule}
    snapshots: list[list[torch.Tensor]] = [[p.detach().clone() for p in model.parameters()]]

    def keep(epoch: int, loss: float) -> None:
        snapshots.append([p.detach().clone() for p in model.parameters()])

    fit(model, data.train, params, epochs=6, device=torch.device("cpu"), seed=0, on_epoch=keep)

    first = _distance(snapshots[0], snapshots[1])
    last = _distance(snapshots[-2], snapshots[-1])
    return first, last, evaluate_accuracy(model, data.val, torch.device("cpu"))


def test_a_cosine_schedule_settles_the_weights_in_the_last_epoch() -> None:
    first, last, acc = _steps_per_epoch_moves("cosine")
    assert last < 0.05 * first, (first, last)
    assert acc > 0.8
    # At a constant rate the last epoch still moves the weights a good part of the first's.
    first, last, _ = _steps_per_epoch_moves("constant")
    assert last > 0.1 * first, (first, last)


def test_the_fine_tune_after_sparsity_runs_at_a_constant_rate() -> None:
    """A trial trained with a cosine schedule still fine-tunes its pruned copy at full rate."""
    from tuner._shipping import Settings, finetuner

    data = digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    params = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "lr_schedule": "cosine"}
    settings = Settings(threshold=0.5, structure="unstructured", quantize="none", finetune_epochs=2)

    def fine_tune_moves(schedule: str) -> float:
        pruned = copy.deepcopy(model)
        before = [p.detach().clone() for p in pruned.parameters()]
        tune = finetuner(
            settings,
            {**params, "lr_schedule": schedule},
            data.train,
            teacher=None,
            device=torch.device("cpu"),
            seed=0,
        )
        tune(pruned)
        return _distance([p.detach() for p in pruned.parameters()], before)

    moves = [fine_tune_moves("cosine"), fine_tune_moves("constant")]
    assert moves[0] == pytest.approx(moves[1])
