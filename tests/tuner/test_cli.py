from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

TUNER = [sys.executable, "-m", "tuner._cli"]


def _tuner(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("TUNER_STORAGE", None) if env is None or "TUNER_STORAGE" not in env else None
    return subprocess.run(
        [*TUNER, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300
    )


def _write(tmp_path: Path, data: dict[str, Any], name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_run_best_status_round_trip(tmp_path: Path, tiny_spec: Any) -> None:
    spec = _write(tmp_path, tiny_spec(budget={"n_trials": 2, "max_epochs": 1}))
    run = _tuner("run", str(spec), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Pareto front" in run.stdout and "tuner best tiny" in run.stdout
    # Output to a pipe draws no bar: each trial that ends gets a line, with the count so far.
    ended = [line for line in run.stderr.splitlines() if line.startswith("tuner: trial ")]
    assert len(ended) == 2, run.stderr
    for count, line in enumerate(ended, start=1):
        assert re.match(r"tuner: trial \d complete \([a-z]+[^)]*\): ", line), line
        assert line.endswith(f"({count}/2)"), line
        for value in (r"accuracy [\d.]+%", r"size_bytes [\d.]+ KB", r"latency_ms [\d.]+ ms"):
            assert re.search(value, line), line
    assert (tmp_path / "tuner.db").exists(), "the default store is ./tuner.db"
    best = _tuner("best", "tiny", "--json", cwd=tmp_path)
    assert best.returncode == 0, best.stderr
    front = json.loads(best.stdout)
    assert front and {"number", "params", "values"} <= set(front[0])
    assert set(front[0]["values"]) == {"accuracy", "size_bytes", "latency_ms"}
    status = _tuner("status", cwd=tmp_path)
    assert status.returncode == 0 and "tiny" in status.stdout
    one = _tuner("status", "tiny", cwd=tmp_path)
    assert one.returncode == 0 and "2 complete" in one.stdout
    # The same, for scripts.
    every = json.loads(_tuner("status", "--json", cwd=tmp_path).stdout)
    assert [(s["study"], s["state"], s["counts"]["complete"]) for s in every] == [
        ("tiny", "idle", 2)
    ]
    mine = json.loads(_tuner("status", "tiny", "--json", cwd=tmp_path).stdout)
    assert mine["counts"] == {"complete": 2, "pruned": 0, "fail": 0, "running": 0, "waiting": 0}
    assert mine["epochs"] == 2 and mine["epochs_saved"] == 0
    assert [t["number"] for t in mine["front"]] == [t["number"] for t in front]


def test_n_trials_flag_and_env_storage(tmp_path: Path, tiny_spec: Any) -> None:
    spec = _write(tmp_path, tiny_spec(budget={"n_trials": 5, "max_epochs": 1}))
    url = f"sqlite:///{tmp_path / 'env.db'}"
    run = _tuner("run", str(spec), "--n-trials", "1", cwd=tmp_path, env={"TUNER_STORAGE": url})
    assert run.returncode == 0, run.stderr
    assert len(optuna.load_study(study_name="tiny", storage=url).trials) == 1
    assert not (tmp_path / "tuner.db").exists()
    # Resumed, a run tells only of the trials it ran.
    more = _tuner("run", str(spec), "--n-trials", "2", cwd=tmp_path, env={"TUNER_STORAGE": url})
    assert more.returncode == 0, more.stderr
    ended = [line for line in more.stderr.splitlines() if line.startswith("tuner: trial ")]
    assert len(ended) == 1 and ended[0].startswith("tuner: trial 1 complete ("), more.stderr
    assert ended[0].endswith("(2/2)")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"budget": {"n_trials": -1}}, "budget.n_trials"),
        ({"sampler": {"name": "bayes"}}, "sampler.name"),
        ({"objectives": {"acc": "maximize"}}, "objectives.acc"),
        ({"workload": "no_such_module:fn"}, "workload"),
        ({"extra": 1}, "'extra'"),
    ],
)
def test_bad_spec_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, tiny_spec: Any, change: dict[str, Any], words: str
) -> None:
    spec = _write(tmp_path, {**tiny_spec(), **change})
    run = _tuner("run", str(spec), cwd=tmp_path)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], run.stderr
    assert not (tmp_path / "tuner.db").exists(), "no store or study is created"


def test_bad_flags_exit_2(tmp_path: Path, tiny_spec: Any) -> None:
    spec = _write(tmp_path, tiny_spec())
    run = _tuner("run", str(spec), "--workers", "0", cwd=tmp_path)
    assert run.returncode == 2 and "--workers" in run.stderr and "Traceback" not in run.stderr


def test_malformed_storage_url(tmp_path: Path, tiny_spec: Any) -> None:
    spec = _write(tmp_path, tiny_spec())
    run = _tuner("run", str(spec), "--storage", "not a url", cwd=tmp_path)
    assert run.returncode == 2
    assert "malformed" in run.stderr and "Traceback" not in run.stderr


def test_unreachable_postgres_is_one_line_with_password_masked(
    tmp_path: Path, tiny_spec: Any
) -> None:
    spec = _write(tmp_path, tiny_spec())
    url = "postgresql+psycopg://alice:s3cr3t-pw@127.0.0.1:1/nowhere"
    # Nothing listens there: the run waits for the server (here 1 s), saying so, then
    # stops with one line and the store's own exit code.
    run = _tuner("run", str(spec), "--storage", url, cwd=tmp_path, env={"TUNER_STORE_RETRY_S": "1"})
    assert run.returncode == 5
    assert "s3cr3t-pw" not in run.stderr + run.stdout
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in run.stderr, run.stderr
    assert "alice:***@127.0.0.1:1" in lines[0] and "retrying for up to 1 s" in lines[0]
    assert lines[1].startswith("error: study store 'postgresql+psycopg://alice:***@127.0.0.1:1")
    assert "unreachable for 1 s" in lines[1]


def test_unknown_study_lists_known_ones(tmp_path: Path) -> None:
    optuna.create_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'tuner.db'}")
    best = _tuner("best", "nope", cwd=tmp_path)
    assert best.returncode == 2 and "'nope'" in best.stderr and "tiny" in best.stderr


README_WORKLOAD = Path(__file__).parents[2] / "README.md"


def _readme_block(marker: str) -> str:
    text = README_WORKLOAD.read_text()
    start = text.index(marker)
    body = text[text.index("```python", start) + len("```python") :]
    return body[: body.index("```")]


def test_readme_user_workload_runs_from_the_cli(tmp_path: Path, tiny_spec: Any) -> None:
    (tmp_path / "my_workloads.py").write_text(_readme_block("<!-- user-workload -->"))
    spec = tiny_spec(workload="my_workloads:wine_mlp", budget={"n_trials": 2, "max_epochs": 2})
    spec["search_space"].pop("hidden_units")
    path = _write(tmp_path, spec)
    run = _tuner("run", str(path), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'tuner.db'}")
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert all(0 < t.values[0] <= 1 for t in study.trials)


def test_a_run_whose_trials_keep_failing_exits_6_with_the_last_error(
    tmp_path: Path, tiny_spec: Any
) -> None:
    (tmp_path / "broken_workloads.py").write_text(
        "def broken(params, ctx):\n    raise RuntimeError('the data loader is broken')\n"
    )
    spec = _write(tmp_path, tiny_spec(workload="broken_workloads:broken"))
    run = _tuner("run", str(spec), "--storage", f"sqlite:///{tmp_path / 's.db'}", cwd=tmp_path)
    assert run.returncode == 6, run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("error: study 'tiny' stopped at 0/3")
    assert "the data loader is broken" in run.stderr and "Traceback" not in run.stderr
    assert "tuner: trial 0 failed: RuntimeError: the data loader is broken (0/3)" in run.stderr


def test_version_is_the_installed_distribution_version(tmp_path: Path) -> None:
    from importlib import metadata

    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    shown = _tuner("--version", cwd=tmp_path)
    assert shown.stdout.strip() == f"tuner {metadata.version('tuner')}"
    assert metadata.version("tuner") == pyproject["project"]["version"]


def test_the_front_says_how_a_trial_was_sparsified_when_the_spec_fixed_it(
    tmp_path: Path, tiny_spec: Any
) -> None:
    # Values fixed in the spec are no Optuna parameters; the table reads what the trial did.
    data = tiny_spec(budget={"n_trials": 1, "max_epochs": 1})
    data["search_space"].update(
        {"prune_threshold": 0.5, "prune_structure": "structured", "quantize": "none"}
    )
    run = _tuner("run", str(_write(tmp_path, data)), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    row = next(line for line in run.stdout.splitlines() if line.startswith("│     0 "))
    assert "structured" in row and "dense" not in row


def test_the_front_shows_the_p90_of_the_latency_it_minimises(
    tmp_path: Path, tiny_spec: Any, sqlite_url: str
) -> None:
    import tuner

    # Latency at the measuring batch size is the objective: its p90 goes beside it, not
    # batch 1's (which would read smaller than the p50 it stands next to).
    spec = tiny_spec(
        name="batched",
        objectives={"accuracy": "maximize", "latency_ms_batch": "minimize"},
        budget={"n_trials": 1, "max_epochs": 1},
    )
    tuner.run(spec, storage=sqlite_url)
    best = _tuner("best", "batched", "--storage", sqlite_url, cwd=tmp_path)
    assert best.returncode == 0, best.stderr
    lines = best.stdout.splitlines()
    header = [c.strip() for c in next(line for line in lines if line.startswith("┃")).split("┃")]
    row = [
        c.strip() for c in next(line for line in lines if line.startswith("│     0 ")).split("│")
    ]
    assert "batch ms ↓" in header and "batch p90 ms" in header, header
    assert "p90 ms" not in header, header
    p50 = float(row[header.index("batch ms ↓")])
    p90 = float(row[header.index("batch p90 ms")])
    assert p90 >= p50 > 0


def test_a_front_timed_while_the_machine_slowed_says_by_how_much(
    tmp_path: Path, tiny_spec: Any, sqlite_url: str, copy_with_trials: Any
) -> None:
    import tuner

    tuner.run(tiny_spec(budget={"n_trials": 1, "max_epochs": 1}), storage=sqlite_url)
    # Two more trials on the front, one timed while the machine ran four times faster
    # than when the other was.
    moved = f"sqlite:///{tmp_path / 'moved.db'}"
    copy_with_trials(
        sqlite_url,
        "tiny",
        moved,
        [
            ((0.99, 0.5, 0.5), {"latency_reference_ms": 0.05}),
            ((0.98, 0.25, 0.25), {"latency_reference_ms": 0.2}),
        ],
    )
    best = _tuner("best", "tiny", "--storage", moved, cwd=tmp_path)
    assert best.returncode == 0, best.stderr
    flat = " ".join(best.stdout.split())
    assert "note: the machine's speed moved while these trials were timed" in flat, best.stdout
    assert "(fastest to slowest, " in flat
    assert f"tuner retime tiny --storage {moved} times the front again side by side here" in flat


def test_a_front_measured_on_two_kinds_of_machine_says_so(
    tmp_path: Path, tiny_spec: Any, sqlite_url: str, measured_elsewhere: Any
) -> None:
    import tuner
    from tuner._measure import machine_name
    from tuner.storage import open_storage, read_records

    tuner.run(tiny_spec(budget={"n_trials": 1, "max_epochs": 1}), storage=sqlite_url)
    records = read_records(open_storage(sqlite_url, read_only=True, heartbeat=False), "tiny")
    assert records[0].metrics["latency_machine"] == machine_name("cpu") != ""
    assert records[0].metrics["latency_reference_ms"] > 0
    alone = _tuner("best", "tiny", "--storage", sqlite_url, cwd=tmp_path)
    assert alone.returncode == 0 and "kinds of machine" not in alone.stdout, alone.stdout
    assert "tuner retime" not in alone.stdout

    mixed_url = f"sqlite:///{tmp_path / 'mixed.db'}"
    measured_elsewhere(sqlite_url, "tiny", mixed_url)
    best = _tuner("best", "tiny", "--storage", mixed_url, cwd=tmp_path)
    assert best.returncode == 0, best.stderr
    flat = " ".join(best.stdout.split())
    assert (
        f"warning: latencies were measured on 2 kinds of machine: {machine_name('cpu')} "
        "(1 trial), Example Vendor CPU 9000 (1 trial)"
    ) in flat, best.stdout


def test_compare_two_studies_on_the_objectives_they_share(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'two.db'}"
    objectives = {"accuracy": "maximize", "size_bytes": "minimize", "latency_ms": "minimize"}
    # (accuracy, size_bytes, latency_ms): the Transformer's second point is better than the
    # CNN's on every objective; the CNN keeps the smallest model.
    points = {
        "cnn": [(0.80, 10_000.0, 0.2), (0.90, 50_000.0, 0.5)],
        "transformer": [(0.85, 20_000.0, 0.2), (0.95, 50_000.0, 0.4)],
    }
    for name, values in points.items():
        study = optuna.create_study(
            study_name=name, storage=url, directions=list(objectives.values())
        )
        study.set_metric_names(list(objectives))
        for v in values:
            study.add_trial(optuna.trial.create_trial(values=list(v)))
    other = optuna.create_study(study_name="batch", storage=url, directions=["maximize"] * 2)
    other.set_metric_names(["accuracy", "latency_ms"])  # latency the other way round

    out = _tuner("compare", "cnn", "transformer", "--storage", url, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
        for line in out.stdout.splitlines()
        if line.startswith("│")
    }
    assert rows["cnn"][:3] == ["2", "2", "1 of 3"] and rows["transformer"][2] == "2 of 3"
    assert float(rows["transformer"][3]) > float(rows["cnn"][3]) > 0
    flat = " ".join(out.stdout.split())
    assert "joint front: 3 trials" in flat and "transformer holds 2, cnn holds 1" in flat

    data = json.loads(_tuner("compare", "cnn", "transformer", "--json", "--storage", url,
                             cwd=tmp_path).stdout)  # fmt: skip
    assert data["objectives"] == objectives
    assert [(s["study"], s["joint_front"]) for s in data["studies"]] == [
        ("cnn", [0]),
        ("transformer", [0, 1]),
    ]

    for args, line in (
        (["cnn"], "error: studies: got ['cnn']; expected two or more study names"),
        (["cnn", "rnn"], "error: no study named 'rnn'; studies in this store: batch, cnn, "),
        (["cnn", "batch"], "error: studies: cnn, batch share fewer than two objectives the "),
    ):
        bad = _tuner("compare", *args, "--storage", url, cwd=tmp_path)
        assert bad.returncode == 2 and bad.stderr.startswith(line), bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1


def test_a_file_named_like_a_library_in_the_working_folder_is_one_line(
    tmp_path: Path, tiny_spec: Any
) -> None:
    # A user's own yaml.py beside their spec would be imported in place of PyYAML (the
    # folder is searched first, for workloads): one line, before anything runs.
    path = _write(tmp_path, tiny_spec(budget={"n_trials": 1, "max_epochs": 1}))
    (tmp_path / "yaml.py").write_text("raise ImportError('the folder\\'s yaml.py')\n")
    run = _tuner("run", str(path), cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip() == (
        f"error: {tmp_path / 'yaml.py'} would be imported in place of the installed yaml that "
        "tuner uses (workloads are imported from the working folder first); rename it, or run "
        "tuner from another folder"
    )
    assert not (tmp_path / "tuner.db").exists()
    # A package folder of that name too; a workload module of another name is fine.
    (tmp_path / "yaml.py").unlink()
    (tmp_path / "optuna").mkdir()
    (tmp_path / "optuna" / "__init__.py").write_text("")
    assert _tuner("status", cwd=tmp_path).stderr.startswith(f"error: {tmp_path / 'optuna'} ")


def test_status_says_where_trials_run_and_on_which_machine_they_fail(
    tmp_path: Path, tiny_spec: Any
) -> None:
    import socket

    import optuna

    spec = _write(tmp_path, tiny_spec(budget={"n_trials": 2, "max_epochs": 1}))
    assert _tuner("run", str(spec), cwd=tmp_path).returncode == 0
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    here = socket.gethostname()
    # What a second machine's workers would have written: two failed trials, one running.
    study = optuna.load_study(study_name="tiny", storage=url)
    first = study.trials[0]
    for _ in range(2):
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.FAIL,
                params=first.params,
                distributions=first.distributions,
                user_attrs={"worker": "node-b (pid 7)", "error": "RuntimeError: CUDA error"},
            )
        )
    running = study.ask()
    study._storage.set_trial_user_attr(running._trial_id, "worker", "node-b (pid 8)")

    out = _tuner("status", "tiny", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # rich wraps long lines
    assert "trial 3 failed on node-b: RuntimeError: CUDA error" in text
    assert re.search(r"trial 4 running on node-b \(pid 8\) for \d+ s", text), text
    assert f"machines: {here} 2 trials, node-b 3 trials (2 failed)" in text
    data = json.loads(_tuner("status", "tiny", "--json", cwd=tmp_path).stdout)
    assert data["machines"] == {
        here: {"trials": 2, "failed": 0},
        "node-b": {"trials": 3, "failed": 2},
    }
    assert [(r["number"], r["worker"]) for r in data["running"]] == [(4, "node-b (pid 8)")]
