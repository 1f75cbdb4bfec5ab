"""One trial: sample, train, sparsify, quantize, measure, record."""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna
import torch

from ._artifacts import artifacts_root, keep_trial_model, storage_url
from ._exceptions import WorkloadError
from ._measure import accuracy
from ._shipping import QAT_LR_SCALE, finetuner, measure, settings_from_params, ship, trial_model
from ._space import suggest
from ._spec import StudySpec
from ._tensorboard import TrialLog, log_folder
from ._workloads import TrainedModel, TrialContext, TrialStopped, Workload
from .storage import StoreError, set_trial_user_attrs
from .storage._optuna import study_storage, trial_id
from .storage.keys import CURVE_ATTR, ERROR_ATTR, TENSORBOARD_ATTR, VIOLATIONS_ATTR

if TYPE_CHECKING:
    from ._artifacts import TrialModel

CURVE_WRITE_S = 2.0


def trial_device(spec: StudySpec) -> torch.device:
    if spec.resources.gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _short_error(exc: BaseException) -> str:
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    tail = "".join(lines[-6:])
    return f"{type(exc).__name__}: {exc}\n{tail}"[:4000]


class Objective:
    """The callable handed to ``study.optimize``; one instance per worker."""

    def __init__(
        self,
        spec: StudySpec,
        workload: Workload,
        *,
        should_stop: Callable[[optuna.Trial, int, TrialContext], bool] | None = None,
    ) -> None:
        self.spec = spec
        self.workload = workload
        self._should_stop = should_stop
        self._log: TrialLog | None = None

    def __call__(self, trial: optuna.Trial) -> list[float]:
        self._log = self._trial_log(trial)
        try:
            return self._run(trial)
        except (optuna.TrialPruned, StoreError):
            raise  # a stop, or a store that cannot take the error anyway
        except Exception as exc:
            trial.set_user_attr(ERROR_ATTR, _short_error(exc))
            if self._log is not None:
                self._log.finish(
                    trial.params, {"epochs": len(trial.user_attrs.get(CURVE_ATTR) or ())}, "FAIL"
                )
            raise
        finally:
            if self._log is not None:
                self._log.close()
            self._log = None

    def _trial_log(self, trial: optuna.Trial) -> TrialLog | None:
        """The trial's TensorBoard files, unless the spec turns them off."""
        if not self.spec.artifacts.tensorboard:
            return None
        root = artifacts_root(self.spec.artifacts.path, storage_url(study_storage(trial.study)))
        log = TrialLog(log_folder(root, trial.study.study_name), self.spec, trial.number)
        trial.set_user_attr(TENSORBOARD_ATTR, str(log.folder))
        return log

    def _run(self, trial: optuna.Trial) -> list[float]:
        spec = self.spec
        params = suggest(trial, spec.params)
        device = trial_device(spec)
        single = len(spec.objectives) == 1
        ctx = TrialContext(
            device=device,
            max_epochs=spec.budget.max_epochs,
            seed=trial_seed(spec, trial),
            trial_number=trial.number,
        )

        last_write = [time.perf_counter()]

        def on_report(epoch: int, metrics: dict[str, float]) -> bool:
            # The live curve is written at most every few seconds; the final one goes
            # with the metrics in one transaction.
            if self._log is not None:
                self._log.epoch(epoch, metrics)
            now = time.perf_counter()
            if now - last_write[0] >= CURVE_WRITE_S:
                trial.set_user_attr(CURVE_ATTR, list(ctx.curve))
                last_write[0] = now
            if single:
                trial.report(metrics["val_accuracy"], epoch)
            # The rule may raise TrialStopped itself, with the reason it stopped the trial.
            return bool(self._should_stop and self._should_stop(trial, epoch, ctx))

        ctx.on_report = on_report
        started = time.perf_counter()
        try:
            trained = self.workload.fn(params, ctx)
        except TrialStopped as stop:
            record_user_attrs(
                trial,
                {
                    CURVE_ATTR: list(ctx.curve),
                    "epochs": len(ctx.curve),
                    "stopped_reason": str(stop),
                },
            )
            if self._log is not None:
                last = {"accuracy": ctx.curve[-1]} if ctx.curve else {}
                self._log.finish(params, {**last, "epochs": len(ctx.curve)}, "PRUNED")
            raise optuna.TrialPruned(str(stop)) from None
        train_time = time.perf_counter() - started
        if not isinstance(trained, TrainedModel):
            raise WorkloadError(
                f"workload {spec.workload!r} returned {type(trained).__name__}; expected tuner.TrainedModel"
            )
        kept: list[Any] = []
        metrics = measure_trained(
            spec, params, trained, device=device, seed=ctx.seed, on_shipped=kept.append
        )
        # The fine-tune after compression is training too.
        metrics["train_time_s"] = float(metrics.get("train_time_s", train_time)) + float(
            metrics.get("finetune_time_s", 0.0)
        )
        metrics["epochs"] = len(ctx.curve) or spec.budget.max_epochs
        metrics[CURVE_ATTR] = list(ctx.curve)
        violations = [c.violation(float(metrics[c.metric])) for c in spec.constraints]
        if violations:
            metrics[VIOLATIONS_ATTR] = violations
            for c, v in zip(spec.constraints, violations):
                trial.set_constraint(c.metric, v)
        metrics["feasible"] = all(v <= 0 for v in violations)
        metrics["device"] = str(device)
        values = [float(metrics[name]) for name in spec.objectives]
        finite = all(math.isfinite(v) for v in values)
        if kept and finite:
            metrics.update(
                keep_trial_model(
                    trial, kept[0], spec=spec, values=values, feasible=metrics["feasible"]
                )
            )
        record_user_attrs(trial, metrics)
        for name, value in zip(spec.objectives, values):
            if not math.isfinite(value):
                raise ValueError(f"metric {name} is {value}")
        if self._log is not None:
            self._log.finish(params, metrics, "COMPLETE")
        return values


def record_user_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """Every metric as a user attribute, written in one transaction."""

    set_trial_user_attrs(study_storage(trial.study), trial_id(trial), attrs)


def trial_seed(spec: StudySpec, trial: optuna.Trial) -> int:
    return (spec.sampler.seed or 0) * 100_003 + trial.number


def measure_trained(
    spec: StudySpec,
    params: dict[str, Any],
    trained: TrainedModel,
    *,
    device: torch.device,
    seed: int,
    on_shipped: Callable[[TrialModel], None] | None = None,
) -> dict[str, Any]:
    """Compress the trained model as sampled and measure what would ship.

    ``on_shipped`` gets what the trial keeps as its artifact (the float sparse model,
    the compression settings, calibration and test data).
    """

    settings = settings_from_params(params)
    model = trained.model.to("cpu").eval()
    float_val_acc = accuracy(model, *trained.val_data)
    finetune = None
    fine_tune_s = [0.0]
    if settings.finetune_epochs > 0 and settings.threshold > 0 and trained.train_data is not None:
        recover = finetuner(
            settings, params, trained.train_data, teacher=model, device=device, seed=seed
        )

        def finetune(m: torch.nn.Module) -> None:
            started = time.perf_counter()
            recover(m)
            fine_tune_s[0] += time.perf_counter() - started

    qat = None
    if settings.qat and trained.train_data is not None:
        learn = finetuner(
            settings,
            params,
            trained.train_data,
            teacher=model,
            device=device,
            seed=seed + 7,
            epochs=settings.qat_epochs,
            lr_scale=QAT_LR_SCALE,
        )

        def qat(m: torch.nn.Module) -> None:
            started = time.perf_counter()
            learn(m)
            fine_tune_s[0] += time.perf_counter() - started

    shipped = ship(
        model,
        settings,
        calibration=calibration_inputs(trained),
        device=device,
        finetune=finetune,
        runtime=spec.measure.runtime,
        qat=qat,
    )
    threads = measure_threads(spec)
    metrics = measure(
        shipped,
        settings=spec.measure,
        threads=threads,
        example=trained.val_data[0][:1],
        val_data=trained.val_data,
        test_data=trained.test_data,
    )
    metrics["accuracy_float"] = float_val_acc
    metrics["finetune_time_s"] = fine_tune_s[0]
    if on_shipped is not None:
        on_shipped(
            trial_model(shipped, test_data=trained.test_data, measure=spec.measure, threads=threads)
        )
    metrics.update({k: float(v) for k, v in trained.metrics.items()})
    return metrics


def calibration_inputs(trained: TrainedModel) -> torch.Tensor:
    """Typical inputs int8 is calibrated on: training rows, else validation rows."""
    rows = trained.train_data if trained.train_data is not None else trained.val_data
    return rows[0][:512]


def measure_threads(spec: StudySpec) -> int:
    """CPU threads inference is measured with: ``measure.threads``, else the trial's CPUs."""
    return spec.measure.threads or max(1, int(spec.resources.cpus))
