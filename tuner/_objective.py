"""One trial: sample, train, sparsify, quantize, measure, record."""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import time
import traceback
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import torch

from ._artifacts import artifacts_root, keep_trial_model, models_in_store, storage_url
from ._compression import check_float8_device
from ._cv import REFIT, Folds
from ._cv import summary as cv_summary
from ._exceptions import WorkloadError
from ._measure import accuracy
from ._settings import COMPRESSION_PARAMS, settings_from_params
from ._shipping import QAT_LR_SCALE, finetuner, measure, ship, trial_model
from ._space import suggest
from ._spec import StudySpec
from ._tensorboard import TrialLog, keep_run, log_folder, scratch_folder
from ._workloads import TrainedModel, TrialContext, TrialStopped, Workload
from .storage import StoreError
from .storage._optuna import study_storage, trial_id
from .storage._rdb import set_trial_user_attrs
from .storage.keys import (
    ARTIFACT_IN_STORE,
    COMPRESSION_CHOICE_ATTR,
    CURVE_ATTR,
    ERROR_ATTR,
    RETRY_OF_ATTR,
    TENSORBOARD_ATTR,
    TRAINED_BY_ATTR,
    VIOLATIONS_ATTR,
)

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


# A compression of a kept model that lost more validation accuracy than this is followed
# by the same compression at half the sparsity (see Objective._next_compression).
MILDER_AFTER_DROP = 0.02


def _compression(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k in COMPRESSION_PARAMS}


@dataclasses.dataclass
class _Kept:
    """A trained model kept for more compressions (``budget.compressions_per_training``)."""

    number: int  # the trial that trained it
    training: dict[str, Any]  # its sampled training parameters
    trained: TrainedModel  # an untouched copy
    accuracy_float: float
    left: int  # compressions still to offer
    latest: int  # the last trial that used it
    compression: dict[str, Any]  # the compression parameters of that trial
    accuracy: float  # and the validation accuracy of the model it shipped
    judged: bool = False


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
        # Where the trial's run is written when the study store keeps it (else None).
        self._scratch: Path | None = None
        self._kept: _Kept | None = None

    def __call__(self, trial: optuna.Trial) -> list[float]:
        self._log = self._trial_log(trial)
        store_failed = False
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except StoreError:
            store_failed = True  # nor would it take the run
            raise  # a store that cannot take the error anyway
        except Exception as exc:
            record_user_attrs(trial, {ERROR_ATTR: _short_error(exc), **self._log_attr()})
            if self._log is not None:
                self._log.finish(
                    trial.params, {"epochs": len(trial.user_attrs.get(CURVE_ATTR) or ())}, "FAIL"
                )
            raise
        finally:
            if self._log is not None:
                self._log.close()
                if self._scratch is not None:
                    keep_run(trial, self._log, self._scratch, upload=not store_failed)
            self._log = None
            self._scratch = None

    def _trial_log(self, trial: optuna.Trial) -> TrialLog | None:
        """The trial's TensorBoard files, unless the spec turns them off: in the study
        store where the models are kept there (written in a scratch folder first)."""
        if not self.spec.artifacts.tensorboard:
            return None
        url = storage_url(study_storage(trial.study))
        if models_in_store(self.spec.artifacts, url):
            try:
                self._scratch = scratch_folder()
            except OSError as exc:  # no scratch space: the trial goes on without its run
                warnings.warn(
                    f"TensorBoard files of trial {trial.number} not written: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                return None
            root = self._scratch
        else:
            root = artifacts_root(self.spec.artifacts.path, url)
        return TrialLog(log_folder(root, trial.study.study_name), self.spec, trial.number)

    def _log_attr(self) -> dict[str, str]:
        """Where the trial's TensorBoard files are, written with its other attributes."""
        if self._log is None:
            return {}
        return {TENSORBOARD_ATTR: ARTIFACT_IN_STORE if self._scratch else str(self._log.folder)}

    def compress_again(
        self, study: optuna.Study, finished: int
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """After trial ``finished`` completed: the parameters and the user attributes of a
        next trial that compresses its trained model anew, or None.

        Only a model at least as accurate (float, on validation) as the median of the
        models trained so far is compressed again; up to ``compressions_per_training - 1``
        times, while each of those trials completes. The training parameters come with the
        next compression settings of :meth:`_next_compression`, where it has any. The
        attributes name the trial that trained the model and why the compression is what
        it is.
        """
        kept = self._kept
        if kept is None or kept.latest != finished or kept.left <= 0:
            return None
        if not kept.judged:
            kept.judged = True
            trained = [
                float(t.user_attrs["accuracy_float"])
                for t in study.get_trials(
                    deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)
                )
                if t.user_attrs.get(TRAINED_BY_ATTR) is None and "accuracy_float" in t.user_attrs
            ]
            if trained and kept.accuracy_float < statistics.median(trained):
                kept.left = 0
                return None
        kept.left -= 1
        compression, choice = self._next_compression(kept)
        attrs = {TRAINED_BY_ATTR: kept.number, COMPRESSION_CHOICE_ATTR: choice}
        return {**kept.training, **compression}, attrs

    def _next_compression(self, kept: _Kept) -> tuple[dict[str, Any], str]:
        """The next compression of a kept model when the last one cost it more than
        ``MILDER_AFTER_DROP`` of its validation accuracy: the same settings at half the
        sparsity (within the spec's range). When it cost less and this is the model's
        last compression: the same settings in int8, if they were float and the space
        offers int8. Otherwise nothing: the sampler chooses.

        The most accurate trainings carry the front; a search that only ever compressed
        them hard would leave the accurate end to weaker models, and one that never
        shipped them in int8 would leave the small end to weaker models. Only the last
        compression goes to int8, since int8 can be slower than float (the torch runtime
        on a CPU) and the front's fast end rests on the float ones.

        Returns:
            The compression parameters to fix (empty: the sampler's), and why, in words.
        """
        drop = kept.accuracy_float - kept.accuracy
        cost = f"trial {kept.latest}'s compression cost {100 * drop:.1f} points"
        sampled: tuple[dict[str, Any], str] = ({}, "compression settings sampled")
        if drop <= MILDER_AFTER_DROP:
            quantize = self.spec.params.get("quantize")
            if (
                kept.left == 0
                and quantize is not None
                and "int8" in quantize.choices
                and kept.compression.get("quantize", "none") == "none"
            ):
                int8 = {**kept.compression, "quantize": "int8"}
                return int8, f"last compression in int8, as {cost}"
            return sampled
        space = self.spec.params.get("prune_threshold")
        last = kept.compression.get("prune_threshold")
        if space is None or space.type != "float" or not isinstance(last, float):
            return sampled
        threshold = max(float(space.low or 0.0), last / 2)
        if threshold >= last:
            return sampled
        return {**kept.compression, "prune_threshold": threshold}, f"half the sparsity, as {cost}"

    def _reusable(self, trial: optuna.Trial) -> _Kept | None:
        """The kept model this trial was asked to compress anew, if this worker holds it."""
        parent = trial.user_attrs.get(TRAINED_BY_ATTR)
        if parent is None:
            return None
        kept = self._kept
        if (
            kept is None
            or kept.number != parent
            or any(trial.params.get(k) != v for k, v in kept.training.items())
        ):
            # Another worker's model, or one no longer here: this trial trains its own.
            record_user_attrs(trial, {TRAINED_BY_ATTR: None, COMPRESSION_CHOICE_ATTR: None})
            return None
        return kept

    def _compress_again(
        self,
        trial: optuna.Trial,
        params: dict[str, Any],
        kept: _Kept,
        device: torch.device,
        seed: int,
    ) -> list[float]:
        """Compress a copy of a model trained by an earlier trial; no epochs are trained."""
        kept.latest = trial.number
        trained = dataclasses.replace(kept.trained, model=copy.deepcopy(kept.trained.model))
        shipped: list[Any] = []
        metrics = measure_trained(
            self.spec, params, trained, device=device, seed=seed, on_shipped=shipped.append
        )
        # Only the fine-tune after compression trained anything.
        metrics["train_time_s"] = float(metrics.get("finetune_time_s", 0.0))
        metrics["epochs"] = 0
        metrics[CURVE_ATTR] = []
        metrics[TRAINED_BY_ATTR] = kept.number
        values = self._record(trial, params, metrics, shipped, device)
        kept.compression = _compression(trial.params)
        kept.accuracy = float(metrics.get("accuracy", kept.accuracy_float))
        return values

    def _run(self, trial: optuna.Trial) -> list[float]:
        spec = self.spec
        params = suggest(trial, spec.params)
        device = trial_device(spec)
        if settings_from_params(params).quantize == "float8":
            check_float8_device(device)  # before the training, not after
        if spec.measure.target:
            from ._target import connected_target

            connected_target(spec.measure.target)  # before the training, not after
        seed = trial_seed(spec, seed_number(trial))
        kept_model = self._reusable(trial)
        if kept_model is not None:
            return self._compress_again(trial, params, kept_model, device, seed)
        reuse = spec.budget.compressions_per_training > 1
        pristine: torch.nn.Module | None = None
        k = spec.cv.folds
        cv_seed = spec.sampler.seed or 0
        # One training without cross-validation; with it, one per fold and the refit.
        calls: list[Folds | None] = [None]
        if k:
            calls = [Folds(k, i, cv_seed) for i in range(k)]
            calls.append(Folds(k, REFIT, cv_seed))
        scores: list[float] = []
        curves: list[list[float]] = []
        train_time = 0.0
        finetune_time = 0.0
        kept: list[Any] = []
        metrics: dict[str, Any] = {}
        curve: list[float] = []
        for fold in calls:
            ctx = TrialContext(
                device=device,
                max_epochs=spec.budget.max_epochs,
                seed=seed,
                trial_number=trial.number,
                folds=fold,
            )
            ctx.on_report = self._reporter(trial, ctx, fold)
            started = time.perf_counter()
            trained = self._train(trial, params, ctx)
            train_time += time.perf_counter() - started
            if fold is not None and not ctx.split_taken:
                raise WorkloadError(
                    f"cv: workload {spec.workload!r} never took its fold; call "
                    "ctx.cv_split(train, val) before training (train_classifier does)"
                )
            shipping = fold is None or fold.refit
            if reuse and fold is None:
                pristine = copy.deepcopy(trained.model)
            metrics = measure_trained(
                spec,
                params,
                trained,
                device=device,
                seed=seed,
                on_shipped=kept.append if shipping else None,
            )
            finetune_time += float(metrics.get("finetune_time_s", 0.0))
            if not shipping:
                scores.append(float(metrics["accuracy"]))
                curves.append(list(ctx.curve))
            else:
                curve = list(ctx.curve)
        if k:
            # The shipped model trained on the validation rows too: only the folds score.
            curve = _mean_curve(curves)
            metrics.update(cv_summary(scores))
            if self._log is not None:
                for epoch, value in enumerate(curve):
                    self._log.epoch(epoch, {"val_accuracy": value})
            # Every training counts: the folds', the refit's, and their fine-tunes.
            metrics["train_time_s"] = train_time + finetune_time
        else:
            # The fine-tune after compression is training too.
            metrics["train_time_s"] = float(metrics.get("train_time_s", train_time)) + finetune_time
        metrics["epochs"] = len(curve) or spec.budget.max_epochs
        metrics[CURVE_ATTR] = curve
        values = self._record(trial, params, metrics, kept, device)
        if pristine is not None:
            self._kept = _Kept(
                number=trial.number,
                training={k: v for k, v in trial.params.items() if k not in COMPRESSION_PARAMS},
                trained=dataclasses.replace(trained, model=pristine),
                accuracy_float=float(metrics["accuracy_float"]),
                left=spec.budget.compressions_per_training - 1,
                latest=trial.number,
                compression=_compression(trial.params),
                accuracy=float(metrics.get("accuracy", metrics["accuracy_float"])),
            )
        return values

    def _reporter(
        self, trial: optuna.Trial, ctx: TrialContext, fold: Folds | None
    ) -> Callable[[int, dict[str, float]], bool]:
        """What ``ctx.report`` calls after each epoch: the live curve, TensorBoard,
        Optuna's report (one objective) and early stopping (never under cross-validation)."""
        single = len(self.spec.objectives) == 1
        last_write = [time.perf_counter()]

        def on_report(epoch: int, metrics: dict[str, float]) -> bool:
            if fold is not None:
                if self._log is not None:
                    # The refit validates on rows it trains on: only its loss is worth a curve.
                    name = "refit" if fold.refit else f"fold{fold.index}"
                    shown = {
                        k: v for k, v in metrics.items() if not (fold.refit and k == "val_accuracy")
                    }
                    self._log.epoch(epoch, {f"{name}/{k}": v for k, v in shown.items()})
                return False
            if self._log is not None:
                self._log.epoch(epoch, metrics)
            # The live curve is written at most every few seconds; the final one goes
            # with the metrics in one transaction.
            now = time.perf_counter()
            if now - last_write[0] >= CURVE_WRITE_S:
                trial.set_user_attr(CURVE_ATTR, list(ctx.curve))
                last_write[0] = now
            if single:
                trial.report(metrics["val_accuracy"], epoch)
            # The rule may raise TrialStopped itself, with the reason it stopped the trial.
            return bool(self._should_stop and self._should_stop(trial, epoch, ctx))

        return on_report

    def _train(
        self, trial: optuna.Trial, params: dict[str, Any], ctx: TrialContext
    ) -> TrainedModel:
        """The workload's trained model; a trial stopped early ends here as PRUNED."""
        try:
            if self.spec.resources.workers_per_trial > 1:
                trained = self._train_data_parallel(params, ctx)
            else:
                trained = self.workload.fn(params, ctx)
        except TrialStopped as stop:
            record_user_attrs(
                trial,
                {
                    CURVE_ATTR: list(ctx.curve),
                    "epochs": len(ctx.curve),
                    "stopped_reason": str(stop),
                    **self._log_attr(),
                },
            )
            if self._log is not None:
                last = {"accuracy": ctx.curve[-1]} if ctx.curve else {}
                self._log.finish(params, {**last, "epochs": len(ctx.curve)}, "PRUNED")
            raise optuna.TrialPruned(str(stop)) from None
        if not isinstance(trained, TrainedModel):
            raise WorkloadError(
                f"workload {self.spec.workload!r} returned {type(trained).__name__}; "
                "expected tuner.TrainedModel"
            )
        return trained

    def _train_data_parallel(self, params: dict[str, Any], ctx: TrialContext) -> TrainedModel:
        """Train on ``workers_per_trial`` ranks: Ray Train inside a Ray worker, torch's
        launcher otherwise. ``ctx`` gets rank 0's reports, as from a one-process run."""
        from ._ddp import RankJob, train_local

        job = RankJob(
            workload=self.spec.workload,
            params=dict(params),
            world_size=self.spec.resources.workers_per_trial,
            use_cuda=ctx.device.type == "cuda",
            max_epochs=ctx.max_epochs,
            seed=ctx.seed,
            trial_number=ctx.trial_number,
            folds=ctx.folds,
        )
        if _inside_ray_actor():
            from ._ray_train import train_on_ray

            return train_on_ray(job, ctx, self.spec.resources)
        return train_local(job, ctx)

    def _record(
        self,
        trial: optuna.Trial,
        params: dict[str, Any],
        metrics: dict[str, Any],
        kept: list[Any],
        device: torch.device,
    ) -> list[float]:
        """Constraints, the artifact, every metric in the store and TensorBoard; the values."""
        spec = self.spec
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
        metrics.update(self._log_attr())
        record_user_attrs(trial, metrics)
        for name, value in zip(spec.objectives, values):
            if not math.isfinite(value):
                raise ValueError(f"metric {name} is {value}")
        if self._log is not None:
            self._log.finish(params, metrics, "COMPLETE")
        return values


def _inside_ray_actor() -> bool:
    import sys

    if "ray" not in sys.modules:
        return False
    import ray

    return bool(ray.is_initialized() and ray.get_runtime_context().get_actor_id())


def _mean_curve(curves: list[list[float]]) -> list[float]:
    """Epoch by epoch, the mean validation accuracy over the folds."""
    length = min((len(c) for c in curves), default=0)
    return [sum(c[e] for c in curves) / len(curves) for e in range(length)]


def record_user_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """Every metric as a user attribute, written in one transaction."""

    set_trial_user_attrs(study_storage(trial.study), trial_id(trial), attrs)


def trial_seed(spec: StudySpec, number: int) -> int:
    """The seed trial ``number`` trains with (see :func:`seed_number` for a retry)."""
    return (spec.sampler.seed or 0) * 100_003 + number


def retried_from(number: int, system_attrs: Mapping[str, Any]) -> int:
    """The trial number a trial's seed comes from: its own, or for a retry (its worker or a
    rank died) that of the trial it repeats, so a retry trains as that trial would have."""
    return int(system_attrs.get(RETRY_OF_ATTR, number))


def seed_number(trial: optuna.Trial) -> int:
    """:func:`retried_from` of a running trial, read from the store."""
    attrs = study_storage(trial.study).get_trial_system_attrs(trial_id(trial))
    return retried_from(trial.number, attrs)


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

        def finetune(m: torch.nn.Module, part: tuple[int, int] = (0, 1)) -> None:
            started = time.perf_counter()
            recover(m, part)
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
