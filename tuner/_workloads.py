"""Workloads: what one trial trains.

A workload is a function ``(params, ctx) -> TrainedModel``. It builds and trains a
model with the sampled hyperparameters, reports validation accuracy once per epoch
through ``ctx.report``, and hands back the trained float model with its evaluation
data. tuner then sparsifies, quantizes and measures it, so every workload is judged
the same way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ._cv import Folds
from ._exceptions import WorkloadError


class TrialStopped(Exception):
    """Raised by :meth:`TrialContext.report` when early stopping ends the trial.

    Workloads let it propagate; tuner records the trial as stopped (PRUNED).
    """


@dataclass
class TrialContext:
    """What a workload gets besides the hyperparameters.

    Attributes:
        device: where to train (``cuda`` when the trial has a GPU, else ``cpu``).
        max_epochs: the spec's ``budget.max_epochs``.
        seed: a seed for this trial; built-in workloads seed torch with it.
        trial_number: the Optuna trial number.
        folds: with ``cv: {folds: k}`` in the spec, which fold this call trains (see
            :meth:`cv_split`); ``None`` without cross-validation.
        rank, world_size: with ``resources: {workers_per_trial: N}`` the trial trains
            data-parallel in N processes; this one is ``rank`` (0 reports). See
            :meth:`wrap` and :meth:`shard`.
    """

    device: torch.device
    max_epochs: int
    seed: int
    trial_number: int = 0
    folds: Folds | None = None
    split_taken: bool = False
    rank: int = 0
    world_size: int = 1
    stop_reason: str | None = None
    on_report: Callable[[int, dict[str, float]], bool] | None = None
    curve: list[float] = field(default_factory=list)
    watched_model: nn.Module | None = None
    watched_inputs: torch.Tensor | None = None
    watched_val: tuple[torch.Tensor, torch.Tensor] | None = None
    watched_train: tuple[torch.Tensor, torch.Tensor] | None = None

    def watch(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        val_data: tuple[torch.Tensor, torch.Tensor] | None = None,
        train_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """Let early stopping measure ``model`` while it trains.

        Size and latency follow from the architecture and the sampled sparsity and
        quantization, so early stopping can rank a trial by them after its first epochs
        instead of by accuracy alone. With ``val_data`` it also judges accuracy on the
        model as it would ship (pruned and quantized as sampled): a model that trains
        well but loses most of its accuracy to pruning is then seen for what it is.
        With ``train_data`` too, a copy that structured pruning will cut units from gets
        an eighth of an epoch of the fine-tune that follows training before it is judged
        (when the trial fine-tunes at all): such a copy recovers most of its accuracy
        there, and the recovery says far more about what will ship than the cut copy.
        Call it once, before training.

        Args:
            model: the model being trained (early stopping compresses a copy).
            inputs: typical training inputs, a few hundred rows: they calibrate int8
                and one row is timed for latency.
            val_data: (inputs, labels) of the validation split the workload reports on.
            train_data: (inputs, labels) of the training split (what ``TrainedModel``
                returns as ``train_data``, fine-tuned on after sparsity).
        """
        self.watched_model = model
        self.watched_inputs = inputs
        self.watched_val = val_data
        self.watched_train = train_data

    def cv_split(
        self, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """The (train, val) splits this call trains and validates on.

        Without cross-validation, ``train`` and ``val`` as given. With ``cv: {folds: k}``
        they are pooled and this call gets its fold: the other folds to train on and the
        fold to validate on, or all of the pooled data for the model that ships.
        ``train_classifier`` calls it; a workload that trains its own way calls it once
        with its splits before training. The test split never goes in.
        """
        self.split_taken = True
        if self.folds is None:
            return train, val
        return self.folds.split(train, val)

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` on this rank's device, wrapped for data-parallel training when the
        trial has several ranks (``DistributedDataParallel``), else just moved."""
        model = model.to(self.device)
        if self.world_size == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def shard(self, rows: int) -> slice:
        """The rows of a split this rank trains on: every ``world_size``-th, from ``rank``."""
        return slice(self.rank, rows, self.world_size)

    def report(self, epoch: int, **metrics: float) -> None:
        """Report validation metrics after ``epoch`` (0-based); ``val_accuracy`` is required.

        In a data-parallel trial every rank calls it after each epoch: rank 0's numbers
        are recorded, and a stop (decided on rank 0's) ends every rank at this epoch.

        Raises:
            TrialStopped: early stopping decided this trial will not reach the front.
        """
        if self.world_size > 1:
            self._report_together(epoch, metrics)
        else:
            self._report_one(epoch, metrics)

    def _report_one(self, epoch: int, metrics: dict[str, float]) -> None:
        if "val_accuracy" not in metrics:
            raise WorkloadError("ctx.report needs val_accuracy=<float in [0, 1]>")
        acc = float(metrics["val_accuracy"])
        if not math.isfinite(acc):
            raise WorkloadError(f"ctx.report got val_accuracy={acc}; expected a finite number")
        self.curve.append(acc)
        if self.on_report is not None and self.on_report(
            epoch, {k: float(v) for k, v in metrics.items()}
        ):
            raise TrialStopped(f"stopped early after epoch {epoch + 1}")

    def _report_together(self, epoch: int, metrics: dict[str, float]) -> None:
        import torch.distributed as dist

        stop = False
        if self.rank == 0:
            try:
                self._report_one(epoch, metrics)
            except TrialStopped:
                stop = True
        flag = torch.tensor([1 if stop else 0], device=self.device)
        dist.broadcast(flag, src=0)
        if int(flag.item()):
            reason = self.stop_reason or f"stopped early after epoch {epoch + 1}"
            raise TrialStopped(reason if self.rank == 0 else f"{reason} (rank 0's decision)")


Split = tuple[torch.Tensor, torch.Tensor]


@dataclass
class TrainedModel:
    """What a workload returns.

    Attributes:
        model: the trained float model (tuner compresses a copy).
        val_data: (inputs, labels) used to guide the search.
        test_data: (inputs, labels) held out; its accuracy is reported, never optimized.
        train_data: (inputs, labels) for calibration of int8 and sparsity fine-tuning.
        metrics: extra numbers the workload measured (declared in ``fn.metrics``).
    """

    model: nn.Module
    val_data: Split
    test_data: Split
    train_data: Split | None = None
    metrics: dict[str, float] = field(default_factory=dict)


WorkloadFn = Callable[[Mapping[str, Any], TrialContext], TrainedModel]


@dataclass(frozen=True)
class Workload:
    name: str
    fn: WorkloadFn
    extra_metrics: tuple[str, ...] = ()


def make_optimizer(model: nn.Module, params: Mapping[str, Any]) -> torch.optim.Optimizer:
    """The optimizer the sampled ``optimizer``, ``lr``, ``momentum`` and ``weight_decay`` ask for."""
    kind = str(params.get("optimizer", "sgd"))
    lr = float(params.get("lr", 0.05))
    wd = float(params.get("weight_decay", 0.0))
    if kind == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=float(params.get("momentum", 0.0)), weight_decay=wd
        )
    if kind == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    raise WorkloadError(f"optimizer {kind!r} is not supported; expected sgd, adamw or adam")


def make_lr_schedule(
    optimizer: torch.optim.Optimizer, params: Mapping[str, Any], *, steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning-rate schedule the sampled ``lr_schedule`` asks for over ``steps`` steps.

    ``constant`` (the default) keeps ``lr``; ``cosine`` decays it to zero along a half cosine
    over the whole training, one step per batch, so the last epochs settle the weights.
    """
    kind = str(params.get("lr_schedule", "constant"))
    if kind == "constant":
        return None
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    raise WorkloadError(f"lr_schedule {kind!r} is not supported; expected constant or cosine")


def evaluate_accuracy(model: nn.Module, data: Split, device: torch.device) -> float:
    model.eval()
    x, y = data
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), 1024):
            xb = x[start : start + 1024].to(device)
            yb = y[start : start + 1024].to(device)
            correct += int((model(xb).argmax(dim=1) == yb).sum())
    return correct / max(1, len(x))


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Knowledge distillation (Hinton et al., 2015): the label loss mixed with the
    temperature-scaled KL divergence from the teacher's softened outputs.

    ``alpha`` weighs the teacher's term; it is scaled by ``temperature**2`` so its gradients
    keep their size as the temperature changes.
    """
    label_loss = F.cross_entropy(student_logits, labels)
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1.0 - alpha) * label_loss + alpha * temperature**2 * soft


def fit(
    model: nn.Module,
    train: Split,
    params: Mapping[str, Any],
    *,
    epochs: int,
    device: torch.device,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
    teacher: nn.Module | None = None,
    temperature: float = 4.0,
    alpha: float = 0.5,
    rank: int = 0,
    world_size: int = 1,
) -> None:
    """Train ``model`` on ``train`` with the sampled optimizer settings, learning-rate schedule
    (:func:`make_lr_schedule`) and batch size.

    With a ``teacher``, the loss is :func:`distillation_loss` against the teacher's outputs
    (the teacher stays in eval mode and is not trained). ``on_epoch(epoch, train_loss)``
    runs after each epoch with the epoch's mean training loss.

    Data-parallel (``world_size`` > 1, ``model`` wrapped by :meth:`TrialContext.wrap`):
    every rank draws the same shuffled order and trains on its ``rank``-th share of each
    batch of ``batch_size`` rows, so the ranks together take the steps one process would.
    """
    model.to(device)
    optimizer = make_optimizer(model, params)
    loss_fn = nn.CrossEntropyLoss()
    x, y = train
    batch_size = int(params.get("batch_size", 64))
    schedule = make_lr_schedule(optimizer, params, steps=epochs * math.ceil(len(x) / batch_size))
    gen = torch.Generator().manual_seed(seed)
    if teacher is not None:
        teacher.to(device).eval()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = torch.zeros((), device=device)
        batches = 0
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            if world_size > 1:
                # Every rank takes as many rows as the others (the same decision on every
                # rank), so no rank waits on a step the others never take.
                even = len(idx) // world_size * world_size
                if even == 0:
                    continue
                idx = idx[:even][rank::world_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            optimizer.zero_grad(set_to_none=True)
            logits = model(xb)
            if teacher is None:
                loss = loss_fn(logits, yb)
            else:
                with torch.no_grad():
                    target = teacher(xb)
                loss = distillation_loss(logits, target, yb, temperature=temperature, alpha=alpha)
            if not torch.isfinite(loss.detach()):
                raise WorkloadError(
                    f"training diverged: loss is {loss.item()} in epoch {epoch + 1} "
                    f"(lr={params.get('lr')}); a lower lr would help"
                )
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            total += loss.detach()
            batches += 1
        if on_epoch is not None:
            on_epoch(epoch, float(total) / max(1, batches))


def train_classifier(
    model: nn.Module,
    params: Mapping[str, Any],
    ctx: TrialContext,
    *,
    train: Split,
    val: Split,
    test: Split,
) -> TrainedModel:
    """Train a classifier for ``ctx.max_epochs`` epochs and report validation accuracy each epoch.

    It reads the sampled ``optimizer``, ``lr``, ``lr_schedule``, ``momentum``,
    ``weight_decay`` and ``batch_size`` (see :func:`fit`).

    The helper built-in workloads use; user workloads may call it too.
    """
    train, val = ctx.cv_split(train, val)
    torch.manual_seed(ctx.seed)
    started = time.perf_counter()
    ctx.watch(model, train[0][:512], val_data=val, train_data=train)
    wrapped = ctx.wrap(model)

    def after_epoch(epoch: int, train_loss: float) -> None:
        # Rank 0 validates; the other ranks only join in the report (and its stop).
        acc = evaluate_accuracy(model, val, ctx.device) if ctx.rank == 0 else 0.0
        ctx.report(epoch, val_accuracy=acc, train_loss=train_loss)

    fit(
        wrapped,
        train,
        params,
        epochs=ctx.max_epochs,
        device=ctx.device,
        seed=ctx.seed,
        on_epoch=after_epoch,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )
    return TrainedModel(
        model=model,
        val_data=val,
        test_data=test,
        train_data=train,
        metrics={"train_time_s": time.perf_counter() - started},
    )
