from __future__ import annotations

import json

from tuner.storage import RetimedTrial, Retiming, dominated_by, retiming_rows, stored_retiming
from tuner.storage.keys import RETIMED_ATTR

OBJECTIVES = {"accuracy": "maximize", "size_bytes": "minimize", "latency_ms": "minimize"}


def _retiming(**overrides: object) -> Retiming:
    fields: dict[str, object] = {
        "study": "s",
        "machine": "CPU A",
        "at": "2026-12-07T12:00:00+00:00",
        "rounds": 3,
        "reference_ms": 0.17,
        "reference_spread": 0.02,
        "trials": [
            RetimedTrial(4, "torch", 32, {"latency_ms": 0.2}, {"latency_ms": 0.1}, "CPU A"),
            RetimedTrial(9, "torch", 32, {"latency_ms": 0.1}, {"latency_ms": 0.3}, "CPU A"),
        ],
        "skipped": {2: "artifact of trial 2 is missing"},
        "dominated": {9: 4},
    }
    fields.update(overrides)
    return Retiming(**fields)  # type: ignore[arg-type]


def test_a_trial_is_dominated_only_by_one_as_good_everywhere_and_better_somewhere() -> None:
    values = {
        1: {"accuracy": 0.9, "size_bytes": 10.0, "latency_ms": 1.0},
        2: {"accuracy": 0.9, "size_bytes": 10.0, "latency_ms": 2.0},  # slower than 1
        3: {"accuracy": 0.95, "size_bytes": 20.0, "latency_ms": 3.0},  # more accurate
        4: {"accuracy": 0.9, "size_bytes": 10.0, "latency_ms": 1.0},  # the same as 1
        5: {"accuracy": 0.99},  # not every objective: left out
    }
    assert dominated_by(values, OBJECTIVES) == {2: 1}
    assert dominated_by({}, OBJECTIVES) == {}


def test_a_retiming_reads_back_as_kept_and_a_malformed_one_as_none() -> None:
    result = _retiming()
    kept = json.loads(json.dumps(result.as_dict()))  # as the store keeps it
    assert stored_retiming({RETIMED_ATTR: kept}) == result
    assert result.trials[0].change("latency_ms") == -0.5
    assert result.trials[0].change("latency_ms_batch") is None
    assert stored_retiming({}) is None
    assert stored_retiming({RETIMED_ATTR: {"study": "s"}}) is None
    assert stored_retiming({RETIMED_ATTR: "yes"}) is None


def test_rows_name_where_trials_were_timed_only_where_that_differs() -> None:
    rows = retiming_rows(_retiming())
    assert rows[0] == {
        "trial": "4",
        "runtime": "torch",
        "batch 1 ms stored": "0.200",
        "batch 1 ms now": "0.100",
        "batch 1 change": "-50%",
        "batch 32 ms stored": "-",
        "batch 32 ms now": "-",
        "batch 32 change": "-",
    }
    elsewhere = RetimedTrial(
        4, "onnxruntime", 8, {"latency_ms": 1e-4}, {"latency_ms": 0.4}, "CPU B"
    )
    (row,) = retiming_rows(_retiming(trials=[elsewhere]))
    assert row["stored on"] == "CPU B" and row["batch 8 ms now"] == "-"
    assert row["batch 1 change"] == "4,000x"


def test_the_yardstick_the_trials_recorded_is_a_range_per_kind_of_machine() -> None:
    from tuner.storage import retiming_notes

    def trial(number: int, reference: float, machine: str | None) -> RetimedTrial:
        stored = {"latency_ms": 0.2, "latency_reference_ms": reference}
        return RetimedTrial(number, "torch", 32, stored, {"latency_ms": 0.2}, machine)

    def yardstick(result: Retiming) -> str:
        (line,) = [text for _, text in retiming_notes(result) if text.startswith("yardstick")]
        return line

    here = _retiming(trials=[trial(1, 0.171, "CPU A"), trial(2, 0.165, None)], dominated={})
    assert yardstick(here) == (
        "yardstick now 0.170 ms (its rounds within 2%); the trials recorded 0.165-0.171 ms"
    )
    # A GPU's yardstick is not one range with a CPU's.
    mixed = _retiming(
        machine="CPU A / GPU B",
        trials=[trial(1, 0.171, "CPU A"), trial(2, 0.012, "GPU B"), trial(3, 0.168, "CPU A")],
        dominated={},
    )
    assert yardstick(mixed).endswith(
        "; the trials recorded 0.168-0.171 ms on CPU A, 0.012 ms on GPU B"
    )
    assert yardstick(_retiming(trials=[], dominated={})) == (
        "yardstick now 0.170 ms (its rounds within 2%)"
    )
