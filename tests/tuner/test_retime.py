from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

TUNER = [sys.executable, "-m", "tuner._cli"]


def _tuner(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TUNER, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def _two_widths(tiny_spec: Any, **overrides: Any) -> dict[str, Any]:
    """Two digits MLPs, 16 and 2048 units wide, every model kept: the wide one is timed
    several times slower than the narrow one on any CPU."""
    settings: dict[str, Any] = {
        "search_space": {
            "optimizer": "adamw",
            "lr": 0.01,
            "batch_size": 64,
            "hidden_units": {"type": "categorical", "choices": [16, 2048]},
            "prune_threshold": 0.0,
            "quantize": "none",
        },
        "sampler": {"name": "grid", "seed": 0},
        "budget": {"n_trials": 2, "max_epochs": 1},
        "artifacts": {"keep": "all"},
    }
    return tiny_spec(**{**settings, **overrides})


def _timed_at_a_fast_moment(url: str) -> tuple[int, int]:
    """Add a trial as a worker would have recorded it had it timed the wide model at a
    moment the machine ran far faster: the wide model's params and kept file, a point less
    accurate than the narrow trial, as large, and the fastest of all. It is on the front.

    Returns the numbers of the narrow trial and of the added one.
    """
    study = optuna.load_study(study_name="tiny", storage=url)
    by_width = {t.params["hidden_units"]: t for t in study.trials}
    narrow, wide = by_width[16], by_width[2048]
    accuracy, size, _ = narrow.values
    study.add_trial(
        optuna.trial.create_trial(
            params=wide.params,
            distributions=wide.distributions,
            values=[accuracy - 0.01, size, 1e-4],
            user_attrs={**wide.user_attrs, "latency_ms": 1e-4},
        )
    )
    return narrow.number, len(study.trials) - 1


def test_retime_takes_off_the_front_a_trial_timed_at_a_fast_moment(
    tmp_path: Path, tiny_spec: Any, sqlite_url: str
) -> None:
    import tuner
    from tuner.storage import open_storage, pareto_front, read_records, stored_retiming

    tuner.run(_two_widths(tiny_spec), storage=sqlite_url)
    narrow, fast = _timed_at_a_fast_moment(sqlite_url)
    objectives = {"accuracy": "maximize", "size_bytes": "minimize", "latency_ms": "minimize"}
    store = open_storage(sqlite_url, read_only=True, heartbeat=False)
    before = read_records(store, "tiny")
    front = [r.number for r in pareto_front(before, objectives)]
    assert narrow in front and fast in front

    out = _tuner("retime", "tiny", "--storage", sqlite_url, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    flat = " ".join(out.stdout.split())
    assert "re-timed side by side on" in flat and "(3 rounds," in flat, out.stdout
    assert (
        f"warning: trial {fast} is off the front once timed together: trial {narrow} is as "
        "good on every objective and better on one"
    ) in flat, out.stdout
    assert "round 3/3" in out.stderr and f"trial {fast} ready (torch)" in out.stderr
    # One row per front trial, the stored figure beside the one timed now.
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
        for line in out.stdout.splitlines()
        if line.startswith("│")
    }
    assert set(rows) == {str(n) for n in front}, out.stdout
    assert rows[str(fast)][1] == "0.0001"  # as stored
    assert float(rows[str(fast)][2]) > 20 * 1e-4  # the wide model, timed now

    # Kept on the study; the trials' own figures are left as they were measured.
    kept = stored_retiming(optuna.load_study(study_name="tiny", storage=sqlite_url).user_attrs)
    assert kept is not None and kept.dominated == {fast: narrow}
    assert {t.number for t in kept.trials} == set(front)
    retimed = {t.number: t.retimed["latency_ms"] for t in kept.trials}
    assert retimed[fast] > retimed[narrow] > 0
    after = {r.number: r.values for r in read_records(store, "tiny")}
    assert all(after[r.number] == r.values for r in before)
    # A trial that joins the front later: the most accurate, and the largest and slowest.
    study = optuna.load_study(study_name="tiny", storage=sqlite_url)
    wide = next(t for t in study.trials if t.params["hidden_units"] == 2048)
    accuracy, size, latency = wide.values
    study.add_trial(
        optuna.trial.create_trial(
            params=wide.params,
            distributions=wide.distributions,
            values=[1.0, 10 * size, 10 * latency],
        )
    )
    # The front printed later says what the re-timing found, and what changed since.
    best = _tuner("best", "tiny", "--storage", sqlite_url, cwd=tmp_path)
    flat = " ".join(best.stdout.split())
    assert (
        f"re-timed side by side on {kept.machine} ({kept.when}): {len(front)} of these trials"
        in flat
    )
    assert f"warning: trial {fast} is off the front once timed together with trial {narrow}" in (
        flat
    )
    joined = len(study.trials) - 1
    assert (
        f"trial {joined} joined the front since: tuner retime tiny --storage {sqlite_url} "
        "times it again"
    ) in flat, best.stdout


def test_retime_reports_the_front_trials_it_cannot_time(
    tmp_path: Path, tiny_spec: Any, sqlite_url: str
) -> None:
    import tuner
    from tuner._export import artifact_path
    from tuner.storage import open_storage

    tuner.run(_two_widths(tiny_spec), storage=sqlite_url)
    narrow, fast = _timed_at_a_fast_moment(sqlite_url)
    store = open_storage(sqlite_url, read_only=True, heartbeat=False)
    wide_file = artifact_path(store, "tiny", fast)
    assert wide_file is not None
    wide_file.unlink()

    out = _tuner("retime", "tiny", "--rounds", "1", "--json", "--storage", sqlite_url, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert [t["number"] for t in result["trials"]] == [narrow]
    assert f"{wide_file} does not exist" in result["skipped"][str(fast)]
    assert result["rounds"] == 1 and result["trials"][0]["retimed"]["latency_ms_batch"] > 0

    narrow_file = artifact_path(store, "tiny", narrow)
    assert narrow_file is not None
    narrow_file.unlink()
    out = _tuner("retime", "tiny", "--storage", sqlite_url, cwd=tmp_path)
    assert out.returncode == 1
    *progress, error = out.stderr.strip().splitlines()
    assert error.startswith("error: no front trial of 'tiny' can be re-timed here (trial ")
    assert all(line.startswith("trial ") for line in progress), out.stderr


@pytest.mark.parametrize(
    "measure",
    [
        {"runtime": "onnxruntime"},
        # int8 in the torch runtime is timed compiled, as the trial timed it.
        {"runtime": "torch", "compile": "auto"},
    ],
    ids=["onnxruntime", "torch-compiled-int8"],
)
def test_retime_times_each_runtime_as_the_trial_did(
    tiny_spec: Any, sqlite_url: str, measure: dict[str, Any]
) -> None:
    import tuner

    spec = tiny_spec(
        search_space={"hidden_units": 32, "prune_threshold": 0.5, "quantize": "int8"},
        budget={"n_trials": 1, "max_epochs": 1},
        measure={"batch_size": 8, "warmup": 2, "repeats": 5, **measure},
    )
    tuner.run(spec, storage=sqlite_url)
    lines: list[str] = []
    result = tuner.retime("tiny", storage=sqlite_url, rounds=2, progress=lines.append)
    (trial,) = result.trials
    assert trial.runtime == measure["runtime"] and trial.batch_size == 8
    assert trial.compiled == (measure["runtime"] == "torch")
    for metric in ("latency_ms", "latency_ms_batch"):
        assert trial.retimed[metric] > 0 and trial.stored[metric] > 0
    assert lines == [
        f"trial 0 ready ({measure['runtime']}) [1/1]",
        "round 1/2 done",
        "round 2/2 done",
    ]


def test_bad_rounds_is_one_line() -> None:
    from tuner._exceptions import SpecError
    from tuner._retime import retime_front

    with pytest.raises(SpecError, match=r"^rounds: got 0; expected an integer >= 1$"):
        retime_front(None, "tiny", rounds=0)


def test_a_store_without_the_study_is_one_line_and_left_as_it_was(tmp_path: Path) -> None:
    typo = tmp_path / "typo.db"
    out = _tuner("retime", "tiny", "--storage", f"sqlite:///{typo}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line == f"error: no study store at 'sqlite:///{typo}': {typo} does not exist"
    assert not typo.exists()


def test_a_re_timing_the_store_refuses_to_keep_is_said_and_still_returned(
    tiny_spec: Any, sqlite_url: str
) -> None:
    import tuner
    from tuner._retime import _keep, _prepare
    from tuner.storage import open_storage

    tuner.run(_two_widths(tiny_spec, budget={"n_trials": 1, "max_epochs": 1}), storage=sqlite_url)
    store = open_storage(sqlite_url, heartbeat=False)
    lines: list[str] = []
    front = _prepare(store, "tiny", None, lines.append, "")
    result = tuner.retime("tiny", storage=sqlite_url, rounds=1)
    optuna.delete_study(study_name="tiny", storage=store)  # gone while it was timed
    assert not _keep(store, front, result, lines.append)
    assert lines[-1].startswith("the re-timing of 'tiny' was not kept on the study: ")


def test_a_model_that_fails_as_it_is_timed_again_is_left_out_and_the_others_kept(
    tiny_spec: Any, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tuner
    from tuner import _retime
    from tuner._exceptions import ExportError
    from tuner.storage import stored_retiming

    tuner.run(_two_widths(tiny_spec), storage=sqlite_url)
    narrow, fast = _timed_at_a_fast_moment(sqlite_url)
    real = _retime._candidate
    calls = {"n": 0}

    def fails_in_the_second_round(tm: Any, record: Any) -> Any:
        # A fault no CPU model makes here (a GPU that runs out of memory mid-way): the
        # wide model times once, then raises.
        candidate = real(tm, record)
        if record.number == fast:
            first = candidate.timings["_batch"]

            def timing() -> tuple[float, float]:
                calls["n"] += 1
                if calls["n"] > 1:
                    raise RuntimeError("out of memory\nmore lines")
                return first()

            candidate.timings["_batch"] = timing
        return candidate

    monkeypatch.setattr(_retime, "_candidate", fails_in_the_second_round)
    lines: list[str] = []
    result = tuner.retime("tiny", storage=sqlite_url, rounds=3, progress=lines.append)
    reason = "its model failed as it was timed again: out of memory"
    assert result.skipped[fast] == reason
    retimed = {t.number for t in result.trials}
    assert fast not in retimed and narrow in retimed
    assert f"trial {fast}: not re-timed: {reason}" in lines and "round 3/3 done" in lines
    # The trial it would have dominated is judged without it, and the result is kept.
    assert result.dominated == {}
    kept = stored_retiming(optuna.load_study(study_name="tiny", storage=sqlite_url).user_attrs)
    assert kept is not None and kept.skipped[fast] == reason

    # Every model failing is one line naming each.
    monkeypatch.setattr(
        _retime, "_time_once", lambda c, say: setattr(c, "failed", "its model failed: boom")
    )
    with pytest.raises(ExportError, match=r"^no front model could be timed again: trial \d+: its"):
        tuner.retime("tiny", storage=sqlite_url, rounds=1)


def test_the_target_task_times_the_models_it_can_read_and_its_result_travels_back(
    tiny_spec: Any, sqlite_url: str, tmp_path: Path
) -> None:
    """What a measure.target's node runs, run here: each model as the trials keep it,
    one that cannot be read named, and a result that pickles (Ray sends it back)."""
    import io
    import pickle

    import optuna
    import torch

    import tuner
    from tuner._artifacts import artifact_status, load_trial_model
    from tuner._retime import _time_pool_here
    from tuner.storage import open_storage, read_records

    tuner.run(_two_widths(tiny_spec), storage=sqlite_url)
    study = optuna.load_study(study_name="tiny", storage=sqlite_url)
    store = open_storage(sqlite_url, read_only=True, heartbeat=False)
    records = {r.number: r for r in read_records(store, "tiny")}
    sent = []
    for number in (0, 1):
        buffer = io.BytesIO()
        torch.save(load_trial_model(artifact_status(study, number).path), buffer)
        sent.append((buffer.getvalue(), records[number], f"trial {number}"))
    sent.insert(1, (b"not a model", records[1], "trial 1 (damaged)"))
    said: list[str] = []
    timing = _time_pool_here(sent, 1, [str(tmp_path / "gone")], say=said.append)
    timing = pickle.loads(pickle.dumps(timing))
    assert sorted(timing.trials) == [0, 2] and list(timing.unbuilt) == [1]
    # What the target says (streamed to the terminal that asked), the damaged model too.
    assert said[0].startswith("trial 1 (damaged): not re-timed: ") and said[-1] == "round 1/1 done"
    assert "this node lacks" in timing.unbuilt[1] and str(tmp_path / "gone") in timing.unbuilt[1]
    assert [timing.trials[i].number for i in (0, 2)] == [0, 1]
    assert all(t.retimed["latency_ms"] > 0 for t in timing.trials.values())
    assert timing.machine and len(timing.yardstick) == 1
    store.engine.dispose()


def test_the_front_s_target_is_found_and_a_mixed_front_refused(
    tiny_spec: Any, sqlite_url: str, tmp_path: Path, copy_with_trials: Any
) -> None:
    import tuner
    from tuner._exceptions import SpecError
    from tuner._retime import front_target
    from tuner.storage import open_storage

    tuner.run(tiny_spec(budget={"n_trials": 1, "max_epochs": 1}), storage=sqlite_url)
    store = open_storage(sqlite_url, read_only=True, heartbeat=False)
    assert front_target(store, ["tiny"]) is None
    store.engine.dispose()
    # The same trial once more, as timed on a target: both are on the front.
    mixed = f"sqlite:///{tmp_path / 'mixed.db'}"
    copy_with_trials(sqlite_url, "tiny", mixed, [((1.0, 1.0, 1.0), {"latency_target": "edge"})])
    store = open_storage(mixed, read_only=True, heartbeat=False)
    with pytest.raises(SpecError) as refused:
        front_target(store, ["tiny"])
    store.engine.dispose()
    line = str(refused.value)
    assert line == (
        "the front was timed on more than one machine (trial 0 on the machine it trained on, "
        "trial 1 on 'edge'); `tuner retime --here` times every model on one machine"
    )
