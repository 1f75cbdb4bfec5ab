from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from torch import nn

import tuner
from tuner._cli import main
from tuner._compression import compress
from tuner._early_stopping import (
    EarlyStopping,
    bracket_rungs,
    median_stops,
    non_dominated_ranks,
    rank_at_rung,
    rung_epochs,
    rung_metrics,
)
from tuner._measure import size_bytes
from tuner._spec import EarlyStoppingSpec
from tuner._workloads import TrialContext, TrialStopped
from tuner.storage import open_storage, read_records

ACC_SIZE = ("maximize", "minimize")


# --- rung decisions on made-up records -------------------------------------------------


def test_rungs_grow_by_the_reduction_factor_while_the_next_level_fits() -> None:
    assert rung_epochs(1, 3, 27) == (1, 3, 9)
    assert rung_epochs(1, 3, 30) == (1, 3, 9)
    assert rung_epochs(3, 3, 30) == (3, 9)  # not 27: a promoted trial would gain 3 epochs
    assert rung_epochs(2, 2, 16) == (2, 4, 8)
    assert rung_epochs(1, 3, 9) == (1, 3)
    assert rung_epochs(1, 3, 2) == ()
    es = EarlyStoppingSpec(name="hyperband", min_epochs=1, reduction_factor=3)
    # Four brackets: first rung at 1, 3 or 9 epochs, and one that stops nothing.
    assert [bracket_rungs(es, 27, n) for n in range(5)] == [(1, 3, 9), (3, 9), (9,), (), (1, 3, 9)]
    asha = EarlyStoppingSpec(name="asha", min_epochs=1, reduction_factor=3)
    assert {bracket_rungs(asha, 27, n) for n in range(5)} == {(1, 3, 9)}


def _dominates(a: np.ndarray, b: np.ndarray, directions: tuple[str, ...]) -> bool:
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return bool(np.all(a * signs <= b * signs) and np.any(a * signs < b * signs))


def test_non_dominated_sorting_matches_the_definition() -> None:
    points = np.array([[0.9, 30.0], [0.8, 10.0], [0.7, 20.0], [0.5, 40.0], [0.9, 30.0]])
    assert non_dominated_ranks(points, ACC_SIZE).tolist() == [0, 0, 1, 2, 0]
    rng = np.random.default_rng(0)
    directions = ("maximize", "minimize", "minimize")
    for _ in range(20):
        pts = rng.integers(0, 5, size=(15, 3)).astype(float)  # ties and duplicates included
        ranks = non_dominated_ranks(pts, directions)
        for i, j in itertools.permutations(range(len(pts)), 2):
            if _dominates(pts[j], pts[i], directions):
                assert ranks[j] < ranks[i]
        for i in np.flatnonzero(ranks > 0):
            assert any(
                _dominates(pts[j], pts[i], directions)
                for j in np.flatnonzero(ranks == ranks[i] - 1)
            )


def test_a_small_model_with_lower_accuracy_goes_on_where_accuracy_alone_would_stop_it() -> None:
    others = [[0.90, 50_000.0], [0.88, 52_000.0], [0.85, 60_000.0]]
    small = [0.70, 8_000.0]
    assert rank_at_rung(small, others, ACC_SIZE, reduction_factor=2).promote
    acc_only = rank_at_rung([small[0]], [[o[0]] for o in others], ("maximize",), reduction_factor=2)
    assert not acc_only.promote and acc_only.position == 4
    dominated = [0.80, 55_000.0]
    decision = rank_at_rung(dominated, others, ACC_SIZE, reduction_factor=2)
    assert not decision.promote and (decision.recorded, decision.keep) == (4, 2)


def test_a_trial_no_other_dominates_goes_on_beyond_the_quota() -> None:
    # Five trials at the rung, best 2 go on by rank; all five are non-dominated.
    front = [[0.95, 100.0], [0.05, 1.0], [0.80, 20.0], [0.30, 10.0]]
    flat = [0.29, 9.9]  # adds almost nothing next to [0.30, 10.0], but nothing beats it
    assert non_dominated_ranks(np.array([*front, flat]), ACC_SIZE).tolist() == [0] * 5
    decision = rank_at_rung(flat, front, ACC_SIZE, reduction_factor=3)
    assert decision.promote and decision.on_front
    assert decision.position > decision.keep == 2
    assert "no trial at the rung dominates it" in decision.describe("asha", 3)
    # Once another trial dominates it, the quota decides again.
    decision = rank_at_rung(flat, [*front, [0.31, 9.0]], ACC_SIZE, reduction_factor=3)
    assert not decision.promote and not decision.on_front
    assert decision.describe("asha", 3).endswith("(best 2 go on); stopped")
    # Where the front is not kept (the first rung), the quota alone decides.
    decision = rank_at_rung(flat, front, ACC_SIZE, reduction_factor=3, keep_front=False)
    assert not decision.promote and decision.on_front
    assert decision.describe("asha", 1).endswith("(best 2 go on); stopped")


def test_a_latency_within_the_tolerance_does_not_put_a_trial_on_the_front() -> None:
    directions = ("maximize", "minimize", "minimize")
    front = [[0.95, 100.0, 0.30], [0.05, 1.0, 0.01], [0.30, 10.0, 0.05]]
    mine = [0.78, 21.0, 0.100]
    # Better on accuracy and size, 5% slower: without a tolerance, that makes it a trade-off.
    close = [0.80, 20.0, 0.105]
    decision = rank_at_rung(mine, [*front, close], directions, reduction_factor=3)
    assert decision.promote and decision.on_front
    ties = [0.0, 0.0, 0.1]
    decision = rank_at_rung(mine, [*front, close], directions, reduction_factor=3, tolerance=ties)
    assert not decision.promote and not decision.on_front
    # 20% slower is more than the noise: the trial holds a trade-off again.
    slow = [0.80, 20.0, 0.120]
    decision = rank_at_rung(mine, [*front, slow], directions, reduction_factor=3, tolerance=ties)
    assert decision.promote and decision.on_front
    # A trial is never covered by one that is only as good (a duplicate).
    decision = rank_at_rung(mine, [*front, mine], directions, reduction_factor=3, tolerance=ties)
    assert decision.on_front


def test_within_a_dominated_front_its_ends_then_the_larger_hypervolume_contribution_go_on() -> None:
    best = [0.99, 1.0]  # dominates everything below
    a, b, c = [0.90, 100.0], [0.10, 10.0], [0.89, 99.0]  # c adds almost nothing next to a
    assert non_dominated_ranks(np.array([best, a, b, c]), ACC_SIZE).tolist() == [0, 1, 1, 1]
    # Four trials, best 2 go on: `best`, then an end of the second front.
    decision = rank_at_rung(c, [best, a, b], ACC_SIZE, reduction_factor=2)
    assert (decision.promote, decision.position, decision.on_front) == (False, 4, False)
    # Six trials, best 3 go on: `best` and the second front's two ends.
    assert rank_at_rung(
        b, [best, a, c, [0.0, 200.0], [0.01, 300.0]], ACC_SIZE, reduction_factor=2
    ).promote
    assert rank_at_rung(
        a, [best, b, c, [0.0, 200.0], [0.01, 300.0]], ACC_SIZE, reduction_factor=2
    ).promote
    decision = rank_at_rung(
        c, [best, a, b, [0.0, 200.0], [0.01, 300.0]], ACC_SIZE, reduction_factor=2
    )
    assert (decision.promote, decision.position, decision.keep) == (False, 4, 3)
    # Inside a front, after its two ends, the point that adds more hypervolume goes on.
    ends, worst = [[0.95, 100.0], [0.05, 1.0]], [0.0, 500.0]
    bulging, flat = [0.80, 20.0], [0.30, 10.0]
    others = [best, *ends, [0.0, 400.0], worst]
    assert rank_at_rung(bulging, [*others, flat], ACC_SIZE, reduction_factor=2).promote
    decision = rank_at_rung(flat, [*others, bulging], ACC_SIZE, reduction_factor=2)
    assert (decision.promote, decision.position, decision.keep) == (False, 5, 4)


def test_the_smallest_model_at_chance_accuracy_is_not_kept_for_being_smallest() -> None:
    # First rung (the front is not kept), four trials, best 2 go on. The newcomer is the
    # smallest yet, at chance accuracy: on the front, but it adds little hypervolume.
    others = [[0.90, 50_000.0], [0.60, 20_000.0], [0.85, 30_000.0]]
    tiny = [0.10, 15_000.0]
    assert non_dominated_ranks(np.array([tiny, *others]), ACC_SIZE).tolist() == [0] * 4
    every_end = rank_at_rung(tiny, others, ACC_SIZE, reduction_factor=3, keep_front=False)
    assert every_end.promote and every_end.position == 1
    decision = rank_at_rung(
        tiny, others, ACC_SIZE, reduction_factor=3, keep_front=False, anchors=[True, False]
    )
    assert not decision.promote and decision.position > decision.keep == 2
    # From the second rung on, it goes on all the same: nothing at the rung dominates it.
    assert rank_at_rung(tiny, others, ACC_SIZE, reduction_factor=3, anchors=[True, False]).promote
    # The most accurate trial is an end and always ranks first in its front.
    top = [0.95, 90_000.0]
    decision = rank_at_rung(
        top, others, ACC_SIZE, reduction_factor=3, keep_front=False, anchors=[True, False]
    )
    assert decision.promote and decision.position == 1


def test_early_arrivals_and_the_grace_of_min_trials() -> None:
    assert rank_at_rung([0.1, 9e9], [], ACC_SIZE, reduction_factor=3).promote
    worse = [0.1, 9e9]
    better = [[0.9, 1.0], [0.8, 2.0]]
    assert rank_at_rung(worse, better, ACC_SIZE, reduction_factor=3, min_trials=2).keep == 1
    assert not rank_at_rung(worse, better, ACC_SIZE, reduction_factor=3, min_trials=2).promote
    assert rank_at_rung(worse, better, ACC_SIZE, reduction_factor=3, min_trials=3).promote


def test_asynchronous_successive_halving_on_made_up_curves() -> None:
    """Nine trials arrive one by one; each rung keeps about a third of what it has seen."""
    finals = [0.60, 0.90, 0.50, 0.70, 0.95, 0.40, 0.80, 0.30, 0.85]

    def curve(final: float, epochs: int) -> float:
        return final * (1 - math.exp(-epochs / 2))

    rungs = rung_epochs(1, 3, 27)
    recorded: dict[int, list[list[float]]] = {r: [] for r in rungs}
    reached_end = []
    for final in finals:
        for rung in rungs:
            mine = [curve(final, rung)]
            decision = rank_at_rung(mine, recorded[rung], ("maximize",), reduction_factor=3)
            recorded[rung].append(mine)
            if not decision.promote:
                break
        else:
            reached_end.append(final)
    assert len(recorded[1]) == 9
    assert len(recorded[3]) < 9 and len(recorded[9]) < len(recorded[3])
    assert 0.95 in reached_end, "the best trial is never stopped"
    assert not {0.30, 0.40, 0.50} & set(reached_end)


def test_median_rule_and_what_a_rung_knows() -> None:
    assert median_stops(0.5, [0.6, 0.7, 0.4], min_trials=3)
    assert not median_stops(0.65, [0.6, 0.7, 0.4], min_trials=3)
    assert not median_stops(0.1, [0.6, 0.7], min_trials=3), "too few others to judge"
    objectives = {"accuracy": "maximize", "size_bytes": "minimize", "train_time_s": "minimize"}
    assert rung_metrics(objectives) == {"accuracy": "maximize", "size_bytes": "minimize"}
    assert rung_metrics({"train_time_s": "minimize"}) == {"accuracy": "maximize"}


# --- spec ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"name": "ashaa"}, ["early_stopping.name", "'ashaa'", "did you mean 'asha'"]),
        ({"name": "asha", "min_epochs": 0}, ["early_stopping.min_epochs", "0", ">= 1"]),
        ({"name": "asha", "reduction_factor": 1}, ["early_stopping.reduction_factor", ">= 2"]),
        ({"name": "asha", "reduction_factor": 2.5}, ["early_stopping.reduction_factor", "integer"]),
        ({"name": "median", "min_trials": -1}, ["early_stopping.min_trials", ">= 0"]),
        ({"name": "asha", "grace": 2}, ["early_stopping.grace", "unknown key"]),
        ({"name": "asha", "min_epochs": 6}, ["early_stopping.min_epochs", "budget.max_epochs (6)"]),
    ],
)
def test_bad_early_stopping_fields_are_named(value: Any, words: list[str], tiny_spec: Any) -> None:
    data = tiny_spec(early_stopping=value, budget={"n_trials": 3, "max_epochs": 6})
    with pytest.raises(tuner.SpecError) as err:
        tuner.load_spec(data)
    message = str(err.value)
    assert "\n" not in message
    for w in words:
        assert w in message, message


def test_early_stopping_spec_round_trips(tiny_spec: Any) -> None:
    spec = tuner.load_spec(tiny_spec(early_stopping="hyperband", budget={"max_epochs": 9}))
    assert spec.early_stopping == EarlyStoppingSpec("hyperband", 1, 3, 3)
    again = tuner.load_spec(spec.to_dict())
    assert again.early_stopping == spec.early_stopping
    es = {"name": "asha", "min_epochs": 2, "reduction_factor": 2, "min_trials": 0}
    data = tiny_spec(early_stopping=es, budget={"max_epochs": 6})
    assert tuner.load_spec(data).to_dict()["early_stopping"] == es


# --- the rule on a real store, with real models ------------------------------------------


def _study_and_rule(
    url: str, spec_data: dict[str, Any], name: str
) -> tuple[optuna.Study, EarlyStopping]:
    """An empty study on the store and an ``asha`` rule (factor 2, no grace) bound to it."""
    spec_data.update(
        early_stopping={"name": "asha", "reduction_factor": 2, "min_trials": 0},
        budget={"n_trials": 2, "max_epochs": 4},
    )
    spec = tuner.load_spec(spec_data)
    storage = open_storage(url, heartbeat=False)
    optuna.create_study(storage=storage, study_name=name, directions=spec.directions)
    study = optuna.load_study(study_name=name, storage=storage)
    return study, EarlyStopping(spec, storage, storage.get_study_id_from_name(name))


def test_the_first_rung_measures_the_compressed_model(sqlite_url: str, tiny_spec: Any) -> None:
    study, rule = _study_and_rule(sqlite_url, tiny_spec(), "rungs")
    inputs = torch.randn(128, 64)

    def start(model: nn.Module, accuracy: float) -> tuple[optuna.Trial, TrialContext]:
        trial = study.ask()
        trial.suggest_float("prune_threshold", 0.5, 0.5)
        ctx = TrialContext(device=torch.device("cpu"), max_epochs=4, seed=0)
        ctx.watch(model, inputs)
        ctx.curve.append(accuracy)
        return trial, ctx

    small = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    trial, ctx = start(small, 0.9)
    assert rule(trial, 0, ctx) is False
    record = trial.user_attrs["rungs"]["1"]
    _, shipped, _ = compress(
        small, threshold=0.5, structure="unstructured", quantize="none", calibration_inputs=inputs
    )
    assert record["size_bytes"] == size_bytes(shipped), "the size that will ship"
    assert record["accuracy"] == 0.9 and record["latency_ms"] > 0
    # Larger, slower and less accurate: behind on all three, so it is stopped.
    big = nn.Sequential(nn.Linear(64, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.Linear(1024, 10))
    trial, ctx = start(big, 0.5)
    with pytest.raises(TrialStopped, match="ranked 2 of 2"):
        rule(trial, 0, ctx)
    assert trial.user_attrs["rungs"]["1"]["latency_ms"] > record["latency_ms"]


def test_the_front_is_kept_from_the_second_rung_on(sqlite_url: str, tiny_spec: Any) -> None:
    spec = tiny_spec(objectives={"accuracy": "maximize", "size_bytes": "minimize"})
    study, rule = _study_and_rule(sqlite_url, spec, "front")  # rungs at 1 and 2 epochs
    inputs = torch.randn(128, 64)

    def reach(hidden: int, curve: list[float]) -> str:
        """Train a made-up trial through ``curve``; what the rule said, if it stopped it."""
        trial = study.ask()
        ctx = TrialContext(device=torch.device("cpu"), max_epochs=4, seed=0)
        ctx.watch(nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10)), inputs)
        for epoch, accuracy in enumerate(curve):
            ctx.curve.append(accuracy)
            try:
                rule(trial, epoch, ctx)
            except TrialStopped as stop:
                return str(stop)
        return "went on"

    assert reach(16, [0.50, 0.50]) == "went on"  # the smallest
    assert reach(256, [0.95, 0.95]) == "went on"  # the most accurate
    # In between on both, it adds more hypervolume than the smallest: 2nd of 3, best 2 go on.
    assert reach(64, [0.80, 0.80]) == "went on"
    # In between too, nothing dominates it, but it adds the least: at the first rung the
    # quota decides.
    said = reach(32, [0.60, 0.60])
    assert said.startswith("asha rung at 1 epoch (") and said.endswith("(best 2 go on); stopped")
    # The most accurate at the first rung, in between at the second, where the front goes on.
    assert reach(64, [0.99, 0.80]) == "went on"
    rungs = [sorted(t.user_attrs["rungs"]) for t in study.get_trials()]
    assert rungs == [["1", "2"], ["1", "2"], ["1", "2"], ["1"], ["1", "2"]]


@pytest.fixture(scope="module")
def digits_model() -> tuple[nn.Sequential, Any, float]:
    """An MLP trained on digits, its data, and its float validation accuracy."""
    from tuner._datasets import digits
    from tuner._workloads import evaluate_accuracy, fit

    data = digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    fit(
        model,
        data.train,
        {"optimizer": "adamw", "lr": 0.01},
        epochs=15,
        device=torch.device("cpu"),
        seed=0,
    )
    float_accuracy = evaluate_accuracy(model, data.val, torch.device("cpu"))
    assert float_accuracy > 0.9
    return model, data, float_accuracy


def _reach_first_rung(
    study: optuna.Study,
    rule: EarlyStopping,
    model: nn.Module,
    data: Any,
    float_accuracy: float,
    threshold: float,
    *,
    train: bool = False,
) -> optuna.Trial:
    trial = study.ask()
    trial.suggest_float("prune_threshold", threshold, threshold)
    trial.suggest_categorical("prune_structure", ["structured"])
    trial.suggest_int("finetune_epochs", 1, 1)
    # How it trained, and so how it fine-tunes: 8 steps of 16 rows for an eighth of an epoch.
    trial.suggest_categorical("optimizer", ["adamw"])
    trial.suggest_float("lr", 0.01, 0.01)
    trial.suggest_categorical("batch_size", [16])
    ctx = TrialContext(device=torch.device("cpu"), max_epochs=4, seed=0)
    ctx.watch(
        model, data.train[0][:256], val_data=data.val, train_data=data.train if train else None
    )
    ctx.curve.append(float_accuracy)
    rule(trial, 0, ctx)
    return trial


def test_a_rung_judges_accuracy_on_the_model_as_it_would_ship(
    sqlite_url: str, tiny_spec: Any, digits_model: tuple[nn.Sequential, Any, float]
) -> None:
    from tuner._measure import accuracy

    model, data, float_accuracy = digits_model
    study, rule = _study_and_rule(
        sqlite_url, tiny_spec(objectives={"accuracy": "maximize"}), "ship"
    )
    dense = _reach_first_rung(study, rule, model, data, float_accuracy, 0.0)
    assert dense.user_attrs["rungs"]["1"]["accuracy"] == pytest.approx(float_accuracy)
    # The same trained weights, but 90% of the hidden units will be cut before it ships:
    # the float model's accuracy says nothing about that; the shipped model's does.
    _, shipped, _ = compress(
        model,
        threshold=0.9,
        structure="structured",
        quantize="none",
        calibration_inputs=data.train[0][:512],
    )
    shipped_accuracy = accuracy(shipped, *data.val)
    assert shipped_accuracy < float_accuracy - 0.2
    with pytest.raises(TrialStopped, match="ranked 2 of 2") as stopped:
        _reach_first_rung(study, rule, model, data, float_accuracy, 0.9)
    # The reason says what the trial was ranked by, and that pruning is what cost it.
    assert (
        f"accuracy {100 * shipped_accuracy:.1f}% as it would ship, "
        f"{100 * float_accuracy:.1f}% before compression" in str(stopped.value)
    )
    cut = study.trials[-1]
    assert cut.user_attrs["rungs"]["1"]["accuracy"] == pytest.approx(shipped_accuracy)
    assert "finetune_epochs" not in cut.user_attrs["rungs"]["1"], "no training data, no fine-tune"
    assert model[0].weight.count_nonzero() == model[0].weight.numel(), "the model is not touched"


def test_a_structured_cut_is_fine_tuned_briefly_before_it_is_judged(
    sqlite_url: str, tiny_spec: Any, digits_model: tuple[nn.Sequential, Any, float]
) -> None:
    from tuner._measure import accuracy

    model, data, float_accuracy = digits_model
    before = [p.detach().clone() for p in model.parameters()]
    study, rule = _study_and_rule(
        sqlite_url, tiny_spec(objectives={"accuracy": "maximize"}), "tuned"
    )
    _, shipped, _ = compress(
        model,
        threshold=0.9,
        structure="structured",
        quantize="none",
        calibration_inputs=data.train[0][:512],
    )
    cut_accuracy = accuracy(shipped, *data.val)
    # With the training data, the cut copy first gets an eighth of an epoch of its own
    # fine-tune, as it would after training, and is judged on what that recovers.
    tuned = _reach_first_rung(study, rule, model, data, float_accuracy, 0.9, train=True)
    record = tuned.user_attrs["rungs"]["1"]
    assert record["accuracy"] > cut_accuracy + 0.1, (record, cut_accuracy)
    assert record["finetune_epochs"] == pytest.approx(0.125)
    with pytest.raises(TrialStopped, match="after 1/8 epoch of fine-tuning"):
        # A later trial ranked behind it says how it was judged.
        _reach_first_rung(study, rule, model, data, 0.2, 0.95, train=True)
    # Dense trials are not fine-tuned: there is nothing cut to recover.
    dense = _reach_first_rung(study, rule, model, data, float_accuracy, 0.0, train=True)
    assert "finetune_epochs" not in dense.user_attrs["rungs"]["1"]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "not touched"


# --- real studies ---------------------------------------------------------------------------

MAX_EPOCHS = 6


def _asha_spec(tiny_spec: Any) -> dict[str, Any]:
    # Two sizes of model and a wide range of learning rates: some trials are clearly behind.
    # Latency is left out of these studies so that the decisions do not hang on timing noise.
    return tiny_spec(
        objectives={"accuracy": "maximize", "size_bytes": "minimize"},
        search_space={
            "lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
            "hidden_units": 32,
            "prune_threshold": {"type": "categorical", "choices": [0.0, 0.5]},
        },
        early_stopping={"name": "asha", "min_epochs": 1, "reduction_factor": 2, "min_trials": 1},
        budget={"n_trials": 8, "max_epochs": MAX_EPOCHS},
    )


def _check_stopped_trials(url: str, name: str = "tiny") -> list[Any]:
    records = read_records(open_storage(url), name)
    states = [r.state for r in records]
    assert "FAIL" not in states and states.count("COMPLETE") + states.count("PRUNED") == 8
    stopped = [r for r in records if r.state == "PRUNED"]
    assert stopped, "some trials are stopped early"
    for r in stopped:
        assert 1 <= len(r.curve) < MAX_EPOCHS
        assert r.metrics["epochs"] == len(r.curve)
        assert str(len(r.curve)) in r.metrics["rungs"], "stopped at a rung"
        assert "rung" in r.metrics["stopped_reason"] and "stopped" in r.metrics["stopped_reason"]
        assert r.values == {} and "size_bytes" not in r.metrics, "never measured as finished"
    for r in records:
        if r.state == "COMPLETE":
            assert len(r.curve) == MAX_EPOCHS
    study = optuna.load_study(study_name=name, storage=url)
    assert study.best_trials and all(
        t.state == optuna.trial.TrialState.COMPLETE for t in study.best_trials
    )
    return records


def test_a_study_stops_trials_early_and_keeps_their_curves(
    sqlite_url: str, tiny_spec: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    result = tuner.run(_asha_spec(tiny_spec), storage=sqlite_url)
    records = _check_stopped_trials(sqlite_url)
    complete = {r.number for r in records if r.state == "COMPLETE"}
    assert result.pareto_front and {t.number for t in result.pareto_front} <= complete
    # A rung record holds what is known early: accuracy so far (of the model as it would
    # ship: the float model's where nothing is pruned) and the shipped size.
    for r in records:
        first_rung = r.metrics["rungs"]["1"]
        if r.params["prune_threshold"] == 0.0:
            assert first_rung["accuracy"] == pytest.approx(r.curve[0])
        if r.state == "COMPLETE":
            assert first_rung["size_bytes"] == r.values["size_bytes"]

    assert main(["status", "tiny", "--storage", sqlite_url]) == 0
    out = capsys.readouterr().out
    trained = sum(len(r.curve) for r in records)
    n_stopped = sum(r.state == "PRUNED" for r in records)
    assert f"{n_stopped} stopped early" in out
    assert f"{trained} epochs trained, {MAX_EPOCHS * 8 - trained} saved by early stopping" in out
    last = [r for r in records if r.state == "PRUNED"][-1]
    after = "1 epoch" if len(last.curve) == 1 else f"{len(last.curve)} epochs"
    assert f"trial {last.number} stopped after {after}:" in out


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_two_workers_share_the_rungs_through_the_store(
    backend: str, sqlite_url: str, tiny_spec: Any, request: pytest.FixtureRequest
) -> None:
    if backend == "ray":
        request.getfixturevalue("ray_local")  # the session's one local Ray
    spec = _asha_spec(tiny_spec)
    # One size of model: the rungs rank by accuracy alone, so with two workers racing to the
    # first rungs some trial is still clearly behind (two sizes let each size's best pass).
    spec["search_space"]["prune_threshold"] = 0.0
    result = tuner.run(spec, storage=sqlite_url, workers=2, backend=backend)
    assert result.n_finished == 8
    _check_stopped_trials(sqlite_url)


def test_single_objective_median_rule(sqlite_url: str, tiny_spec: Any) -> None:
    spec = tiny_spec(
        objectives={"accuracy": "maximize"},
        search_space={
            "lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
            "hidden_units": 32,
        },
        early_stopping={"name": "median", "min_epochs": 1, "min_trials": 2},
        budget={"n_trials": 8, "max_epochs": MAX_EPOCHS},
    )
    tuner.run(spec, storage=sqlite_url)
    study = optuna.load_study(study_name="tiny", storage=sqlite_url)
    pruned = study.get_trials(states=(optuna.trial.TrialState.PRUNED,))
    assert pruned and not study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    for t in pruned:
        assert len(t.user_attrs["curve"]) < MAX_EPOCHS
        assert len(t.intermediate_values) == len(t.user_attrs["curve"])
        assert "below the median" in t.user_attrs["stopped_reason"]
    assert study.best_trial.state == optuna.trial.TrialState.COMPLETE
