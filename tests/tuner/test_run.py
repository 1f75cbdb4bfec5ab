from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

import tuner
from tuner.storage import open_storage, read_records


def test_run_returns_pareto_front_with_measured_metrics(sqlite_url: str, tiny_spec: Any) -> None:
    spec = tiny_spec()
    spec["search_space"]["quantize"] = {"type": "categorical", "choices": ["none", "int8"]}
    result = tuner.run(spec, storage=sqlite_url)
    assert result.counts.get("COMPLETE") == 3
    assert result.pareto_front, "a finished study has a front"
    for t in result.pareto_front:
        assert set(t.values) == {"accuracy", "size_bytes", "latency_ms"}
        assert 0 < t.values["accuracy"] <= 1
        assert t.values["size_bytes"] > 0 and t.values["latency_ms"] > 0
        for key in (
            "test_accuracy",
            "latency_ms_p90",
            "latency_ms_batch",
            "param_count",
            "sparsity",
            "train_time_s",
        ):
            assert key in t.metrics
        assert t.metrics["latency_ms_p90"] >= t.values["latency_ms"]
        if t.params["quantize"] == "int8":
            assert t.metrics["int8_layers"], "an int8 trial names its int8 layers"
        else:
            assert t.metrics["int8_layers"] == []
        if t.params["optimizer"] == "adamw":
            assert "momentum" not in t.params, "momentum is only sampled for sgd"


def test_plain_optuna_reads_the_study(sqlite_url: str, tiny_spec: Any) -> None:
    tuner.run(tiny_spec(budget={"n_trials": 2, "max_epochs": 1}), storage=sqlite_url)
    study = optuna.load_study(study_name="tiny", storage=sqlite_url)
    assert study.metric_names == ["accuracy", "size_bytes", "latency_ms"]
    assert len(study.directions) == 3
    t = study.trials[0]
    assert {"accuracy", "size_bytes", "latency_ms", "test_accuracy", "sparsity"} <= set(
        t.user_attrs
    )


def test_a_new_study_that_starts_at_the_center_counts_every_trial_it_ran(
    sqlite_url: str, tiny_spec: Any
) -> None:
    # The center is queued before the workers start; running it is running a trial.
    spec = tiny_spec(budget={"n_trials": 2, "max_epochs": 1}, sampler={"name": "tpe", "seed": 0})
    first = tuner.run(spec, storage=sqlite_url)
    assert first.trials_run == 2 and first.n_finished == 2
    study = optuna.load_study(study_name="tiny", storage=sqlite_url)
    assert study.trials[0].user_attrs.get("start") == "center"


def test_rerun_resumes_to_the_total_and_never_reruns(sqlite_url: str, tiny_spec: Any) -> None:
    spec = tiny_spec(budget={"n_trials": 2, "max_epochs": 1})
    first = tuner.run(spec, storage=sqlite_url)
    assert first.trials_run == 2
    again = tuner.run(spec, storage=sqlite_url)
    assert again.trials_run == 0 and again.n_finished == 2
    more = tuner.run(spec, storage=sqlite_url, n_trials=4)
    assert more.trials_run == 2 and more.n_finished == 4
    store = open_storage(sqlite_url)
    records = read_records(store, "tiny")
    assert [r.number for r in records] == [0, 1, 2, 3]
    # The first two trials are the same rows, untouched by the later runs.
    assert [r.datetime_complete for r in records[:2]] == [
        r.datetime_complete for r in read_records(store, "tiny")[:2]
    ]


def test_a_new_study_starts_at_the_middle_of_its_search_space(
    sqlite_url: str, tiny_spec: Any
) -> None:
    spec = tiny_spec(sampler={"name": "tpe", "seed": 3}, budget={"n_trials": 2, "max_epochs": 1})
    tuner.run(spec, storage=sqlite_url)
    trials = optuna.load_study(study_name="tiny", storage=sqlite_url).trials
    assert trials[0].params == {
        "optimizer": "sgd",
        "lr": pytest.approx(0.01**0.5 * 0.1**0.5),
        "momentum": pytest.approx(0.7),
        "batch_size": 64,
        "prune_threshold": pytest.approx(0.45),
        "quantize": "none",
    }
    assert trials[0].user_attrs["start"] == "center"
    assert "start" not in trials[1].user_attrs and trials[1].params != trials[0].params
    # Resumed, the study goes on from the sampler: the middle is not queued again.
    tuner.run(spec, storage=sqlite_url, n_trials=3)
    trials = optuna.load_study(study_name="tiny", storage=sqlite_url).trials
    assert len(trials) == 3 and [t.user_attrs.get("start") for t in trials].count("center") == 1


def test_a_study_may_start_from_the_sampler(sqlite_url: str, tiny_spec: Any) -> None:
    spec = tiny_spec(
        sampler={"name": "tpe", "seed": 3, "start": "sampled"},
        budget={"n_trials": 1, "max_epochs": 1},
    )
    tuner.run(spec, storage=sqlite_url)
    (trial,) = optuna.load_study(study_name="tiny", storage=sqlite_url).trials
    assert "start" not in trial.user_attrs
    assert trial.params["prune_threshold"] != pytest.approx(0.45)


FAILING_WORKLOAD = """
import tuner
from tuner._builtin_workloads import digits_mlp

def flaky(params, ctx):
    if ctx.trial_number in (0, 2):
        raise RuntimeError("CUDA out of memory (simulated by the test workload)")
    return digits_mlp(params, ctx)
"""


def test_failing_trial_is_kept_with_its_error_and_the_study_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str, tiny_spec: Any
) -> None:
    (tmp_path / "flaky_workloads.py").write_text(FAILING_WORKLOAD)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = tiny_spec(workload="flaky_workloads:flaky", budget={"n_trials": 3, "max_epochs": 1})
    result = tuner.run(spec, storage=sqlite_url)
    assert result.n_finished == 3
    records = read_records(open_storage(sqlite_url), "tiny")
    failed = [r for r in records if r.state == "FAIL"]
    assert [r.number for r in failed] == [0, 2]
    assert all("out of memory" in (r.error or "") for r in failed)
    assert sum(r.state == "COMPLETE" for r in records) == 3


def test_nan_loss_fails_the_trial_with_a_clear_reason(sqlite_url: str, tiny_spec: Any) -> None:
    spec = tiny_spec(
        search_space={
            "optimizer": "sgd",
            "lr": 1.0e6,
            "momentum": 0.9,
            "batch_size": 64,
            "hidden_units": 32,
        },
        budget={"n_trials": 1, "max_epochs": 2},
        objectives={"accuracy": "maximize"},
    )
    with pytest.raises(tuner.DispatchError, match="keep failing.*diverged"):
        tuner.run(spec, storage=sqlite_url, n_trials=1)
    records = read_records(open_storage(sqlite_url), "tiny")
    assert "diverged" in (records[0].error or "")
    assert records[0].state == "FAIL"


def test_constraints_mark_infeasible_trials(sqlite_url: str, tiny_spec: Any) -> None:
    spec = tiny_spec(
        constraints={"size_bytes": {"max": 1}}, budget={"n_trials": 2, "max_epochs": 1}
    )
    result = tuner.run(spec, storage=sqlite_url)
    assert result.pareto_front == []
    study = optuna.load_study(study_name="tiny", storage=sqlite_url)
    assert all(t.user_attrs["feasible"] is False for t in study.trials)
    assert all(t.constraints["size_bytes"] > 0 for t in study.trials)


def test_existing_study_with_other_objectives_is_refused(sqlite_url: str, tiny_spec: Any) -> None:
    tuner.run(tiny_spec(budget={"n_trials": 1, "max_epochs": 1}), storage=sqlite_url)
    with pytest.raises(tuner.SpecError, match="already exists"):
        tuner.run(tiny_spec(objectives={"accuracy": "maximize"}), storage=sqlite_url)


def test_run_on_a_database_server(server_url: str, tiny_spec: Any) -> None:
    result = tuner.run(
        tiny_spec(budget={"n_trials": 2, "max_epochs": 1}), storage=server_url, workers=2
    )
    assert result.n_finished == 2
    study = optuna.load_study(study_name="tiny", storage=server_url)
    assert study.metric_names == ["accuracy", "size_bytes", "latency_ms"]
    assert "***" not in result.storage_url or "@" in result.storage_url


def test_retries_left_waiting_once_the_budget_is_met_are_ended(
    sqlite_url: str, tiny_spec: Any
) -> None:
    spec = tiny_spec(budget={"n_trials": 2, "max_epochs": 1})
    tuner.run(spec, storage=sqlite_url)
    storage = open_storage(sqlite_url)
    study = optuna.load_study(study_name="tiny", storage=storage)
    # A trial whose worker died after the budget was met by others: failed, and its retry
    # queued (WAITING) by the heartbeat check. And one trial the user queued by hand.
    dead = study.ask()
    storage.set_trial_state_values(dead._trial_id, optuna.trial.TrialState.FAIL)
    storage.get_heartbeat_stale_trial_callback()(study, storage.get_trial(dead._trial_id))
    study.enqueue_trial({"lr": 0.05})
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == 2
    result = tuner.run(spec, storage=sqlite_url)
    assert result.trials_run == 0 and result.n_finished == 2
    by_number = {t.number: t for t in optuna.load_study(study_name="tiny", storage=storage).trials}
    retry = by_number[waiting[0].number]
    assert retry.state == optuna.trial.TrialState.FAIL
    assert retry.user_attrs["error"].startswith("not run: the study's budget was met")
    assert by_number[waiting[1].number].state == optuna.trial.TrialState.WAITING
    storage.engine.dispose()


def test_each_trial_line_says_what_precision_the_model_shipped_in() -> None:
    from tuner._run import trial_line
    from tuner.storage import TrialRecord

    def line(metrics: dict[str, Any]) -> str:
        record = TrialRecord(
            3,
            "COMPLETE",
            {"prune_threshold": 0.5, "prune_structure": "structured"},
            {"accuracy": 0.9},
            metrics,
            None,
            None,
        )
        return trial_line(record, {"accuracy": "maximize"})

    assert line({"int8_layers": ["fc1"]}).startswith("trial 3 complete (structured 50%, int8):")
    assert line({"float8_layers": ["fc1"], "int8_layers": []}).startswith(
        "trial 3 complete (structured 50%, float8):"
    )
    # Asked for float8 where no layer could take it (sides not multiples of 16): float.
    assert line({"float8_layers": []}).startswith("trial 3 complete (structured 50%):")
