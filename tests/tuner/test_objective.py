"""Reusing a trained model for more compressions (``budget.compressions_per_training``)."""

from __future__ import annotations

import statistics
from typing import Any

import optuna
import pytest

import tuner
from tuner._builtin_workloads import resolve_workload
from tuner._objective import Objective
from tuner._settings import COMPRESSION_PARAMS
from tuner._spec import spec_from_dict

pytestmark = pytest.mark.slow


def _spec(tiny_spec: Any, name: str, n_trials: int) -> dict[str, Any]:
    spec = tiny_spec(name)
    spec["search_space"]["finetune_epochs"] = 1
    spec["search_space"]["quantize"] = {"type": "categorical", "choices": ["none", "int8"]}
    spec["budget"] = {"n_trials": n_trials, "max_epochs": 2, "compressions_per_training": 3}
    return spec


def _run_one(
    study: optuna.Study, objective: Objective, params: dict[str, Any], **user_attrs: Any
) -> optuna.trial.FrozenTrial:
    """Run the next trial of ``study`` with ``params`` fixed, as a worker would."""
    study.enqueue_trial(params, user_attrs=user_attrs or None)
    trial = study.ask()
    study.tell(trial, objective(trial))
    return study.trials[-1]


def _check_reuse(
    trials: list[optuna.trial.FrozenTrial], max_epochs: int, *, one_worker: bool
) -> int:
    """Checks every compression of a kept model against the trial that trained it;
    returns how many there are."""
    by_number = {t.number: t for t in trials}
    trained = [t for t in trials if t.user_attrs.get("trained_by") is None]
    again = [t for t in trials if t.user_attrs.get("trained_by") is not None]
    for child in again:
        parent = by_number[child.user_attrs["trained_by"]]
        assert parent.user_attrs.get("trained_by") is None, "compressed from a trained model"
        assert parent.number < child.number
        training = {k: v for k, v in parent.params.items() if k not in COMPRESSION_PARAMS}
        assert {k: child.params.get(k) for k in training} == training
        compression = {k: v for k, v in parent.params.items() if k in COMPRESSION_PARAMS}
        assert {k: child.params.get(k) for k in compression} != compression
        # The same trained model, and no epochs spent on it again.
        assert child.user_attrs["accuracy_float"] == parent.user_attrs["accuracy_float"]
        assert child.user_attrs["epochs"] == 0 and child.user_attrs["curve"] == []
        # Its training time is its own fine-tune's alone: the reused training is not
        # counted again.
        assert child.user_attrs["train_time_s"] == child.user_attrs["finetune_time_s"]
        if one_worker:
            # Only a model at least as good as the median trained before it is reused.
            earlier = [t.user_attrs["accuracy_float"] for t in trained if t.number <= parent.number]
            assert parent.user_attrs["accuracy_float"] >= statistics.median(earlier)
    children: dict[int, int] = {}
    for child in again:
        children[child.user_attrs["trained_by"]] = (
            children.get(child.user_attrs["trained_by"], 0) + 1
        )
    assert all(n <= 2 for n in children.values()), children
    epochs = sum(t.user_attrs["epochs"] for t in trials)
    assert epochs == max_epochs * len(trained) < max_epochs * len(trials)
    return len(again)


def test_a_kept_model_is_compressed_again_with_new_settings_and_no_epochs(
    tiny_spec: Any, sqlite_url: str
) -> None:
    spec = _spec(tiny_spec, "again", 8)
    tuner.run(spec, storage=sqlite_url)
    trials = optuna.load_study(study_name="again", storage=sqlite_url).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 8
    assert _check_reuse(trials, 2, one_worker=True) >= 2


def test_two_workers_reusing_models_meet_the_budget_exactly(
    tiny_spec: Any, sqlite_url: str
) -> None:
    spec = _spec(tiny_spec, "again-two", 9)
    tuner.run(spec, storage=sqlite_url, workers=2)
    trials = optuna.load_study(study_name="again-two", storage=sqlite_url).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 9
    assert _check_reuse(trials, 2, one_worker=False) >= 1


def test_a_trial_asked_to_reuse_a_model_this_worker_lacks_trains_its_own(
    tiny_spec: Any,
) -> None:
    spec = spec_from_dict(_spec(tiny_spec, "lacks", 1))
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.enqueue_trial({"optimizer": "adamw"}, user_attrs={"trained_by": 7})
    trial = study.ask()
    values = Objective(spec, resolve_workload(spec.workload))(trial)
    study.tell(trial, values)
    (done,) = study.trials
    assert done.user_attrs["trained_by"] is None
    assert done.user_attrs["epochs"] == 2 and len(done.user_attrs["curve"]) == 2


def test_a_compression_that_cost_much_accuracy_is_tried_again_at_half_the_sparsity(
    tiny_spec: Any,
) -> None:
    data = _spec(tiny_spec, "milder", 2)
    data["search_space"]["prune_threshold"] = {"type": "float", "low": 0.0, "high": 0.99}
    data["search_space"]["finetune_epochs"] = 0
    spec = spec_from_dict(data)
    objective = Objective(spec, resolve_workload(spec.workload))
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    # 98% of the weights gone and no fine-tune: the shipped model loses most of its accuracy.
    # The training is fixed (a rate at which this model learns well in two epochs).
    training = {"optimizer": "adamw", "lr": 0.02, "batch_size": 64}
    first = _run_one(study, objective, {**training, "prune_threshold": 0.98, "quantize": "none"})
    lost = first.user_attrs["accuracy_float"] - first.user_attrs["accuracy"]
    assert lost > 0.2

    again = objective.compress_again(study, first.number)
    assert again is not None
    params, attrs = again
    assert attrs["trained_by"] == first.number
    assert params == {**first.params, "prune_threshold": pytest.approx(0.49)}
    # The trial says why: the page shows it.
    assert attrs["compression_choice"] == (
        f"half the sparsity, as trial {first.number}'s compression cost {100 * lost:.1f} points"
    )
    second = _run_one(study, objective, params, **attrs)
    assert second.user_attrs["trained_by"] == first.number and second.user_attrs["epochs"] == 0
    assert second.user_attrs["compression_choice"] == attrs["compression_choice"]
    # Half the sparsity loses less than half as much.
    assert second.user_attrs["accuracy_float"] - second.user_attrs["accuracy"] < lost / 2
    assert second.user_attrs["size_bytes"] > first.user_attrs["size_bytes"]


def test_a_compression_that_kept_its_accuracy_leaves_the_next_to_the_sampler_and_the_last_is_int8(
    tiny_spec: Any,
) -> None:
    spec = spec_from_dict(_spec(tiny_spec, "sampler-next", 3))
    objective = Objective(spec, resolve_workload(spec.workload))
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    training = {"optimizer": "adamw", "lr": 0.02, "batch_size": 64}
    float_dense = {"prune_threshold": 0.0, "quantize": "none"}
    first = _run_one(study, objective, {**training, **float_dense})
    assert first.user_attrs["accuracy"] == first.user_attrs["accuracy_float"]

    # Not the last compression: the sampler chooses it.
    params, attrs = objective.compress_again(study, first.number) or ({}, {})
    assert params == {k: v for k, v in first.params.items() if k not in COMPRESSION_PARAMS}
    assert attrs["compression_choice"] == "compression settings sampled"
    second = _run_one(study, objective, {**params, **float_dense}, **attrs)
    assert second.user_attrs["trained_by"] == first.number
    assert second.user_attrs["accuracy"] == second.user_attrs["accuracy_float"]

    # The last one, after a float compression that cost nothing: the same settings in int8.
    params, attrs = objective.compress_again(study, second.number) or ({}, {})
    assert params == {**second.params, "quantize": "int8"}
    assert attrs["compression_choice"].startswith("last compression in int8, as trial ")
    third = _run_one(study, objective, params, **attrs)
    assert third.user_attrs["int8_layers"]
    assert third.user_attrs["accuracy_float"] - third.user_attrs["accuracy"] <= 0.02
    assert third.user_attrs["size_bytes"] < second.user_attrs["size_bytes"] / 2
    assert objective.compress_again(study, third.number) is None


def test_a_retry_trains_with_the_seed_of_the_trial_it_repeats(sqlite_url: str) -> None:
    from optuna.trial import TrialState

    from tuner._objective import seed_number
    from tuner.storage import open_storage

    # A retry (its worker died) runs the same parameters; with the same seed it trains as
    # the trial it repeats would have, and a retry of a retry still goes back to that one.
    storage = open_storage(sqlite_url)
    study = optuna.create_study(study_name="retried", storage=storage)
    retry = storage.get_heartbeat_stale_trial_callback()
    first = study.ask()
    assert seed_number(first) == first.number == 0
    current = first
    for _ in range(2):
        study.tell(current, state=TrialState.FAIL)
        retry(study, storage.get_trial(current._trial_id))
        current = study.ask()
        assert current.number > first.number and seed_number(current) == first.number
    fresh = study.ask()
    assert seed_number(fresh) == fresh.number


def test_a_float8_trial_off_a_gpu_that_has_it_fails_before_it_trains(
    sqlite_url: str, tiny_spec: Any
) -> None:
    # The spec asks for GPU trials; this machine has no GPU, so they run on the CPU.
    spec = tiny_spec(budget={"n_trials": 1, "max_epochs": 1}, resources={"gpus": 1})
    spec["search_space"]["quantize"] = "float8"
    with pytest.raises(tuner.TunerError, match="trials keep failing"):
        tuner.run(spec, storage=sqlite_url, backend="inline")
    trials = optuna.load_study(study_name="tiny", storage=sqlite_url).trials
    trial = trials[0]
    assert {t.state for t in trials} == {optuna.trial.TrialState.FAIL}
    assert "float8 runs on a CUDA GPU of compute capability 8.9" in trial.user_attrs["error"]
    assert "train_time_s" not in trial.user_attrs and "curve" not in trial.user_attrs
