from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import create_trial

from tuner._cli import main
from tuner._measure import machine_name
from tuner._nightly import nightly
from tuner.storage import open_storage
from tuner.storage._locks import acquire_lock
from tuner.storage._nights import nights

TUNER = [sys.executable, "-m", "tuner._cli"]
OTHER_MACHINE = "Example Vendor CPU 8000"


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def test_two_nights_warm_start_from_the_front_and_reruns_add_nothing(
    tmp_path: Path, tiny_spec: Any, sqlite_url: str
) -> None:
    spec = tiny_spec(
        constraints={"latency_ms": {"max": 50.0}},
        budget={"n_trials": 3, "max_epochs": 1},
        sampler={"name": "tpe", "seed": 1},
    )
    reports = tmp_path / "reports"
    first = nightly(spec, date="2025-03-01", storage=sqlite_url, report_dir=reports)
    assert first.study_name == "tiny-2025-03-01" and first.exit_code == 0
    assert first.run.n_finished == 3
    night_one = optuna.load_study(study_name="tiny-2025-03-01", storage=sqlite_url)
    assert night_one.user_attrs["tuner.spec_name"] == "tiny"
    assert night_one.user_attrs["tuner.nightly"]["date"] == "2025-03-01"
    assert night_one.user_attrs["tuner.nightly"]["warm_started_from"] is None
    # With no night before, the first night starts at the middle of the search space.
    starts = [t.user_attrs.get("start") for t in sorted(night_one.trials, key=lambda t: t.number)]
    assert starts == ["center", None, None]

    again = nightly(spec, date="2025-03-01", storage=sqlite_url, report_dir=reports)
    assert again.trials_run == 0
    assert len(optuna.load_study(study_name="tiny-2025-03-01", storage=sqlite_url).trials) == 3

    second = nightly(spec, date="2025-03-02", storage=sqlite_url, report_dir=reports)
    night_two = optuna.load_study(study_name="tiny-2025-03-02", storage=sqlite_url)
    assert night_two.user_attrs["tuner.nightly"]["warm_started_from"] == "tiny-2025-03-01"
    front_one = {_key(r.params) for r in first.report.front}
    assert front_one, "night one has a front to start from"
    first_trials = sorted(night_two.trials, key=lambda t: t.number)[: len(front_one)]
    assert {_key(t.params) for t in first_trials} == front_one
    assert all(
        t.user_attrs["tuner.warm_start_from"].startswith("tiny-2025-03-01#") for t in first_trials
    )
    assert second.report.warm_start_trials == len(front_one)
    assert second.trials_run == 3, "the warm-start trials count as run tonight"
    assert not any("start" in t.user_attrs for t in night_two.trials), "the front is its start"

    nightly(spec, date="2025-03-02", storage=sqlite_url, report_dir=reports)
    assert len(optuna.load_study(study_name="tiny-2025-03-02", storage=sqlite_url).trials) == 3, (
        "a rerun neither runs nor enqueues again"
    )

    store = open_storage(sqlite_url, read_only=True)
    summaries = nights(store, "tiny")
    store.engine.dispose()
    assert [n.date for n in summaries] == ["2025-03-01", "2025-03-02"]
    assert summaries[1].warm_started_from == "tiny-2025-03-01"
    assert all(n.hypervolume is not None and n.hypervolume > 0 for n in summaries)
    assert summaries[1].hypervolume == pytest.approx(second.report.hypervolume)
    assert len(summaries[0].front) == len(first.report.front)

    markdown = (reports / "tiny-2025-03-02.md").read_text()
    # Latency of the same settings moves with the host's load, so either verdict is fair here.
    verdict = "REGRESSED" if second.exit_code == 3 else "as good as last night"
    assert markdown.startswith(f"# Nightly tiny, 2025-03-02: {verdict}")
    assert second.report.drift_settings >= 1 and "Same settings, both nights" in markdown
    assert "Warm-started from `tiny-2025-03-01`" in markdown
    assert "kinds of machine" not in markdown, "both nights ran here"
    # The same machine both nights: its yardstick within a factor of a few (not a timing test).
    assert second.report.machine_speed is not None and 0.2 < second.report.machine_speed < 5
    assert "| hypervolume |" in markdown and "latency_ms ≤ 50.000 ms" in markdown
    assert "(tiny-2025-03-02.html)" in markdown
    page = (reports / "tiny-2025-03-02.html").read_text()
    assert "plotly" in page and "last night" in page


def test_night_killed_midway_resumes_its_remaining_budget(
    tmp_path: Path,
    slow_spec: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Trials of about a second, so the night is killed with one or two of them done.
    spec = _write(tmp_path, slow_spec("tiny", n_trials=3, epochs=2, epoch_s=0.5))
    url = f"sqlite:///{tmp_path / 'night.db'}"
    env = {
        **{k: v for k, v in os.environ.items() if k != "TUNER_STORAGE"},
        "TUNER_HEARTBEAT_INTERVAL_S": "1",
        "TUNER_GRACE_PERIOD_S": "3",
    }
    args = ["nightly", str(spec), "--date", "2025-06-01", "--storage", url]
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen([*TUNER, *args], cwd=tmp_path, env=env, stdout=log, stderr=log)
    engine = sqlalchemy.create_engine(url)
    complete = 0
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            with engine.connect() as conn:
                complete = conn.execute(
                    sqlalchemy.text("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'")
                ).scalar_one()
        except sqlalchemy.exc.OperationalError:
            complete = 0  # tables not created yet
        if complete >= 1:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log.close()
    engine.dispose()
    assert 1 <= complete < 3, (tmp_path / "killed.log").read_text()

    monkeypatch.setenv("TUNER_HEARTBEAT_INTERVAL_S", "1")
    monkeypatch.setenv("TUNER_GRACE_PERIOD_S", "3")
    code = main([*args, "--report-dir", str(tmp_path / "reports")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "took over the lock" in out
    study = optuna.load_study(study_name="tiny-2025-06-01", storage=url)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 3
    assert "RUNNING" not in states and "WAITING" not in states


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_regressed_night_exits_3_says_why_and_posts_the_webhook(
    tmp_path: Path, tiny_spec: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received = []
    data = tiny_spec(
        constraints={"latency_ms": {"max": 0.001}},
        budget={"n_trials": 2, "max_epochs": 1},
        nightly={
            "reference_point": {"accuracy": 0.0, "size_bytes": 20_000, "latency_ms": 1.0},
            "regression_threshold": 0.05,
            "webhook": f"http://127.0.0.1:{server.server_port}/nightly",
        },
    )
    # Last night's front below was int8: tonight's warm start runs its settings again.
    data["search_space"]["quantize"] = {"type": "categorical", "choices": ["none", "int8"]}
    spec = _write(tmp_path, data)
    url = f"sqlite:///{tmp_path / 'nights.db'}"
    # Last night, as the store would hold it: a front far better than a real model
    # reaches (the regression is the scenario under test), meeting the 1 µs bound.
    last = optuna.create_study(
        study_name="tiny-2025-04-01",
        storage=url,
        directions=["maximize", "minimize", "minimize"],
    )
    last.set_metric_names(["accuracy", "size_bytes", "latency_ms"])
    last.set_user_attr("tuner.spec_name", "tiny")
    last.set_user_attr("tuner.nightly", {"date": "2025-04-01", "warm_started_from": None})
    distributions = {
        "optimizer": CategoricalDistribution(["sgd", "adamw"]),
        "lr": FloatDistribution(0.01, 0.1, log=True),
        "batch_size": CategoricalDistribution([64, 128]),
        "prune_threshold": FloatDistribution(0.0, 0.9),
        "quantize": CategoricalDistribution(["none", "int8"]),
    }
    for lr, values in ((0.05, [0.99, 900.0, 0.0005]), (0.02, [0.97, 600.0, 0.0004])):
        last.add_trial(
            create_trial(
                params={
                    "optimizer": "adamw",
                    "lr": lr,
                    "batch_size": 64,
                    "prune_threshold": 0.5,
                    "quantize": "int8",
                },
                distributions=distributions,
                values=values,
                # Last night ran on another kind of machine.
                user_attrs={
                    "feasible": True,
                    "latency_machine": OTHER_MACHINE,
                    # Its yardstick ran over a hundred times faster than any machine here does.
                    "latency_reference_ms": 0.001,
                },
            )
        )

    reports = tmp_path / "reports"
    code = main(
        [
            "nightly",
            str(spec),
            "--date",
            "2025-04-02",
            "--storage",
            url,
            "--report-dir",
            str(reports),
        ]
    )
    server.shutdown()
    out = capsys.readouterr().out
    assert code == 3, out
    assert "REGRESSED" in out
    assert "no trial meets latency_ms ≤ 0.001 ms any more" in out
    assert "hypervolume fell" in out
    markdown = (reports / "tiny-2025-04-02.md").read_text()
    assert markdown.startswith("# Nightly tiny, 2025-04-02: REGRESSED")
    assert "no trial meets latency_ms ≤ 0.001 ms any more" in markdown
    machines = "latencies were measured on 2 kinds of machine: "
    for text in (out, markdown):
        assert machines in text and machine_name("cpu") in text and OTHER_MACHINE in text
    assert "a change in latency may be the machine's" in markdown
    assert len(_Hook.received) == 1
    posted = _Hook.received[0]
    assert posted["machines"].startswith(machines)
    assert posted["machine_speed_ratio"] > 10
    assert "| machine (yardstick) |" in markdown
    assert posted["regressed"] is True and posted["study"] == "tiny-2025-04-02"
    assert posted["previous_study"] == "tiny-2025-04-01"
    assert posted["hypervolume"] < posted["previous_hypervolume"]
    assert len(posted["lost_points"]) == 2, "last night's front is gone"
    tonight = optuna.load_study(study_name="tiny-2025-04-02", storage=url)
    assert sorted(t.params["lr"] for t in tonight.trials[:2]) == [0.02, 0.05]


def test_second_run_of_a_night_exits_at_once_while_the_first_holds_it(
    tmp_path: Path, tiny_spec: Any, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _write(tmp_path, tiny_spec())
    store = open_storage(sqlite_url)
    lock = acquire_lock(store, "nightly:tiny-2025-05-01")  # the first run, alive
    try:
        code = main(["nightly", str(spec), "--date", "2025-05-01", "--storage", sqlite_url])
    finally:
        lock.release()
    assert code == 4
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "night 'tiny-2025-05-01' is already running" in lines[0]
    assert f"pid {os.getpid()} on {socket.gethostname()} since" in lines[0]
    assert "tiny-2025-05-01" not in optuna.get_all_study_names(storage=store)
    store.engine.dispose()


@pytest.mark.parametrize(
    ("args", "change", "words"),
    [
        (["--date", "2025-02-30"], {}, "date: got '2025-02-30'"),
        ([], {"nightly": {"regression_threshold": 5}}, "nightly.regression_threshold"),
        ([], {"nightly": {"reference_point": {"acc": 0}}}, "nightly.reference_point.acc"),
        ([], {"nightly": {"retime": "yes"}}, "nightly.retime': got 'yes'; expected true or false"),
        ([], {"nightly": {"keep_nights": 1}}, "nightly.keep_nights': got 1; expected an integer"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path,
    tiny_spec: Any,
    args: list[str],
    change: dict[str, Any],
    words: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = _write(tmp_path, {**tiny_spec(), **change})
    db = tmp_path / "nights.db"
    reports = tmp_path / "reports"
    code = main(
        ["nightly", str(spec), *args, "--storage", f"sqlite:///{db}", "--report-dir", str(reports)]
    )
    assert code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err
    assert not db.exists() and not reports.exists()


def test_a_night_whose_store_stays_down_exits_with_its_own_code(
    tmp_path: Path,
    tiny_spec: Any,
    pg_proxy: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = _write(tmp_path, tiny_spec())
    monkeypatch.setenv("TUNER_STORE_RETRY_S", "2")
    pg_proxy.cut()  # the database server is down all night
    code = main(["nightly", str(spec), "--date", "2025-07-01", "--storage", pg_proxy.proxied_url])
    assert code == 5
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: study store") and "unreachable for 2 s" in lines[-1], err
    assert "Traceback" not in err


def _copy_timed_faster(
    url: str,
    study_name: str,
    to_url: str,
    factor: float,
    *,
    as_night: tuple[str, dict[str, Any]] | None = None,
) -> float:
    """A copy of a night into ``to_url`` as a worker would have recorded it had the machine
    run ``1 / factor`` times faster: every latency times ``factor``, the kept models the
    same. ``as_night`` stores it under another night's name and record instead. Returns
    the night's first trial's latency as it really was timed."""
    night = optuna.load_study(study_name=study_name, storage=url)
    name, record = as_night or (study_name, night.user_attrs["tuner.nightly"])
    copy = optuna.create_study(study_name=name, storage=to_url, directions=night.directions)
    copy.set_metric_names(night.metric_names)
    for key, value in {**night.user_attrs, "tuner.nightly": record}.items():
        copy.set_user_attr(key, value)
    names = night.metric_names
    for trial in night.trials:
        attrs = {
            k: v * factor if k.startswith("latency_ms") and isinstance(v, float) else v
            for k, v in trial.user_attrs.items()
        }
        values = [v * factor if n == "latency_ms" else v for n, v in zip(names, trial.values)]
        copy.add_trial(
            create_trial(
                params=trial.params,
                distributions=trial.distributions,
                values=values,
                user_attrs=attrs,
            )
        )
    return float(night.trials[0].user_attrs["latency_ms"])


def test_a_night_judged_on_fronts_re_timed_side_by_side_is_not_fooled_by_a_fast_machine(
    tmp_path: Path, tiny_spec: Any
) -> None:
    # One trial a night, night 1's, the same model file both nights: last night's stored as
    # if timed on a machine a hundred times faster, tonight's as if on one ten times slower.
    # Only the machine differs. The latency reference sits far past both timings, so that a
    # loaded host, timing the model slower and less steadily, moves the re-timed
    # hypervolumes by little (with it at 5x, they came out 14% apart on a busy CI host).
    one = {"n_trials": 1, "max_epochs": 5}
    sampler = {"name": "random"}
    space = {
        "optimizer": "adamw",
        "lr": 0.01,
        "batch_size": 64,
        "hidden_units": 32,
        "prune_threshold": 0.0,
        "quantize": "none",
    }
    first = f"sqlite:///{tmp_path / 'first.db'}"
    # Enough timed passes that a trial's own latency is steady.
    measure = {"batch_size": 8, "warmup": 5, "repeats": 30, "compile": "never"}
    night_1 = nightly(
        tiny_spec(budget=one, search_space=space, measure=measure, sampler=sampler),
        date="2025-04-01",
        storage=first,
        report_dir=tmp_path,
    )
    (trial,) = night_1.report.front
    nights_url = f"sqlite:///{tmp_path / 'nights.db'}"
    latency = _copy_timed_faster(first, "tiny-2025-04-01", nights_url, 0.01)
    tonight = {"date": "2025-04-02", "warm_started_from": "tiny-2025-04-01", "warm_start_trials": 1}
    _copy_timed_faster(
        first, "tiny-2025-04-01", nights_url, 10.0, as_night=("tiny-2025-04-02", tonight)
    )
    judged = tiny_spec(
        budget=one,
        search_space=space,
        measure=measure,
        sampler=sampler,
        nightly={
            "retime": True,
            "regression_threshold": 0.1,
            "reference_point": {
                "accuracy": 0.0,
                "size_bytes": 2 * trial.values["size_bytes"],
                "latency_ms": 20 * latency,
            },
        },
    )
    # Tonight's budget is already met: the run trains nothing, then judges the night.
    result = nightly(judged, date="2025-04-02", storage=nights_url, report_dir=tmp_path)
    assert result.trials_run == 0
    report = result.report
    # As each trial timed itself, tonight lost more of last night's hypervolume than the
    # threshold allows ...
    assert report.previous_stored_hypervolume is not None and report.stored_hypervolume
    assert report.stored_hypervolume < 0.9 * report.previous_stored_hypervolume
    # ... but timed side by side the same model is as fast: no regression. Last night was
    # judged on its re-timed latency, not on the stored one a hundred times faster.
    (last,) = report.previous_front
    assert last.values["latency_ms"] > 0.1 * latency
    assert report.previous_hypervolume
    assert abs(report.hypervolume / report.previous_hypervolume - 1) < 0.1
    assert result.exit_code == 0 and report.verdict == "as good as last night", report.reasons
    markdown = (tmp_path / "tiny-2025-04-02.md").read_text()
    assert "Both nights' fronts were timed again side by side on " in markdown
    assert "| hypervolume, re-timed side by side |" in markdown
    assert "| hypervolume as each trial timed itself |" in markdown
    # Each night keeps its re-timing, for the dashboard.
    store = open_storage(nights_url, read_only=True, heartbeat=False)
    for name in ("tiny-2025-04-01", "tiny-2025-04-02"):
        kept = optuna.load_study(study_name=name, storage=store).user_attrs["tuner.retimed"]
        assert [t["number"] for t in kept["trials"]] == [0]
    store.engine.dispose()


def test_re_timed_nights_are_judged_on_their_stored_fronts_alone(tiny_spec: Any) -> None:
    from tuner._report import compare_nights
    from tuner._spec import load_spec
    from tuner.storage import RetimedTrial, Retiming, TrialRecord

    def trial(number: int, accuracy: float, latency: float) -> TrialRecord:
        values = {"accuracy": accuracy, "size_bytes": 1000.0, "latency_ms": latency}
        return TrialRecord(number, "COMPLETE", {"lr": number}, values, {}, None, None)

    def retiming(study: str, latencies: dict[int, float]) -> Retiming:
        trials = [
            RetimedTrial(n, "torch", 8, {}, {"latency_ms": ms}) for n, ms in latencies.items()
        ]
        return Retiming(study, "CPU A", "2025-04-02T03:00:00+00:00", 3, 0.17, 0.0, trials)

    # Last night ran on a machine ten times faster: its front trial 0 (0.1 ms) re-times at
    # 1 ms, like tonight's. Its trial 1, less accurate and dominated, kept a latency from
    # that fast machine (0.2 ms); set beside re-timed figures it would look like a fast model.
    last = [trial(0, 0.9, 0.1), trial(1, 0.85, 0.2)]
    tonight = [trial(0, 0.9, 1.0)]
    spec = load_spec(tiny_spec(nightly={"regression_threshold": 0.05}))
    report = compare_nights(
        spec,
        date="2025-04-02",
        study_name="tiny-2025-04-02",
        records=tonight,
        previous_study="tiny-2025-04-01",
        previous_records=last,
        reference_point={"accuracy": 0.0, "size_bytes": 2000.0, "latency_ms": 2.0},
        retimed=(retiming("tiny-2025-04-02", {0: 1.0}), retiming("tiny-2025-04-01", {0: 1.0})),
    )
    assert [r.number for r in report.previous_front] == [0]
    assert report.previous_front[0].values["latency_ms"] == 1.0
    assert report.hypervolume == report.previous_hypervolume and not report.regressed
    # As stored, last night's front was far ahead.
    assert report.stored_hypervolume is not None and report.previous_stored_hypervolume
    assert report.stored_hypervolume < 0.6 * report.previous_stored_hypervolume
    assert report.machine_speed is None and report.machines is None


def test_keep_nights_deletes_the_older_nights_with_their_files(
    tmp_path: Path, tiny_spec: Any, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tiny_spec(
        budget={"n_trials": 1, "max_epochs": 1},
        artifacts={"keep": "all"},
        nightly={"keep_nights": 2},
    )
    files = {}
    for date in ("2025-03-01", "2025-03-02"):
        night = nightly(spec, date=date, storage=sqlite_url, report_dir=tmp_path)
        assert night.dropped == [] and night.not_dropped == {}  # two nights: both kept
        attrs = optuna.load_study(study_name=night.study_name, storage=sqlite_url).trials[0]
        model = Path(attrs.user_attrs["artifact_store"]) / attrs.user_attrs["artifact_id"]
        files[date] = [model, Path(attrs.user_attrs["tensorboard"])]
        assert all(f.exists() for f in files[date])
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    report_dir = str(tmp_path / "reports")
    args = ["nightly", str(path), "--storage", sqlite_url, "--report-dir", report_dir]
    assert main([*args, "--date", "2025-03-03"]) in (0, 3)
    out = capsys.readouterr().out
    assert (
        "deleted the older night tiny-2025-03-01 (1 trial, nightly.keep_nights): removed 1 "
        "model file and 1 TensorBoard run"
    ) in out
    assert optuna.get_all_study_names(sqlite_url) == ["tiny-2025-03-02", "tiny-2025-03-03"]
    assert not any(f.exists() for f in files["2025-03-01"])
    assert all(f.exists() for f in files["2025-03-02"])
    # A night run for an earlier date deletes none of the nights after it.
    assert main([*args, "--date", "2025-02-01"]) in (0, 3)
    assert "deleted the older night" not in capsys.readouterr().out
    assert len(optuna.get_all_study_names(sqlite_url)) == 3
    # A night cut short before its report (as a crash leaves it) keeps the night it
    # warm-started from, which it compares with once resumed.
    cut = optuna.create_study(
        study_name="tiny-2025-03-04", storage=sqlite_url, directions=["maximize"] * 3
    )
    cut.set_user_attr("tuner.spec_name", "tiny")
    cut.set_user_attr(
        "tuner.nightly", {"date": "2025-03-04", "warm_started_from": "tiny-2025-03-03"}
    )
    assert main([*args, "--date", "2025-03-05"]) in (0, 3)
    captured = capsys.readouterr()
    assert "deleted the older night tiny-2025-02-01" in captured.out
    assert "deleted the older night tiny-2025-03-02" in captured.out
    assert (
        "warning: the older night tiny-2025-03-03 was kept for now: a night kept "
        "warm-started from it"
    ) in captured.err
    assert optuna.get_all_study_names(sqlite_url) == [
        "tiny-2025-03-03",
        "tiny-2025-03-04",
        "tiny-2025-03-05",
    ]
    # Its last night deleted by hand, a night run again is judged as a first night.
    optuna.delete_study(study_name="tiny-2025-03-04", storage=sqlite_url)
    assert main([*args, "--date", "2025-03-05"]) == 0
    captured = capsys.readouterr()
    assert "last night's study 'tiny-2025-03-04' is no longer in the store" in captured.err
    assert "the first night of this spec" in captured.out
