"""How long the dashboard takes to read and draw a 10,000-trial, 3-objective study.

Builds the study once with Optuna's own API (``study.add_trials``) in a SQLite file
under /tmp (kept between runs), then prints one table: the naive read
(``study.trials``), tuner's bulk read, the study page's data, and the whole study
page rendered by Streamlit's ``AppTest``, each with its ratio to the naive read; and the
Timeline tab's data and figure, which draw every trial.

    .venv/bin/python bench/dashboard_load.py [--trials 10000] [--repeats 3] [--rebuild]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
STUDY = "bench-10k"
OBJECTIVES = {"accuracy": "maximize", "size_bytes": "minimize", "latency_ms": "minimize"}

_DISTRIBUTIONS = {
    "optimizer": CategoricalDistribution(["sgd", "adamw"]),
    "lr": FloatDistribution(1e-3, 0.3, log=True),
    "batch_size": CategoricalDistribution([32, 64, 128]),
    "momentum": FloatDistribution(0.0, 0.99),
    "weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
    "hidden_units": IntDistribution(32, 256, step=32),
    "prune_threshold": FloatDistribution(0.0, 0.95),
    "prune_structure": CategoricalDistribution(["unstructured", "structured"]),
    "quantize": CategoricalDistribution(["none", "int8"]),
}


def _trial(rng: np.random.Generator, i: int, start: dt.datetime) -> optuna.trial.FrozenTrial:
    params: dict[str, Any] = {
        "optimizer": str(rng.choice(["sgd", "adamw"])),
        "lr": float(math.exp(rng.uniform(math.log(1e-3), math.log(0.3)))),
        "batch_size": int(rng.choice([32, 64, 128])),
        "weight_decay": float(math.exp(rng.uniform(math.log(1e-6), math.log(1e-2)))),
        "hidden_units": int(rng.integers(1, 9) * 32),
        "prune_threshold": float(rng.uniform(0, 0.95)),
        "prune_structure": str(rng.choice(["unstructured", "structured"])),
        "quantize": str(rng.choice(["none", "int8"])),
    }
    if params["optimizer"] == "sgd":
        params["momentum"] = float(rng.uniform(0, 0.99))
    dists = {k: _DISTRIBUTIONS[k] for k in params}
    hidden = params["hidden_units"]
    keep = 1 - params["prune_threshold"]
    ceiling = 0.99 - 0.25 * params["prune_threshold"] ** 3 - 0.02 * (params["quantize"] == "int8")
    epochs = 10
    state = TrialState.COMPLETE
    roll = rng.uniform()
    if roll < 0.12:
        state, epochs = TrialState.PRUNED, int(rng.integers(1, 5))
    elif roll < 0.14:
        state, epochs = TrialState.FAIL, int(rng.integers(0, 3))
    curve = [
        float(ceiling * (1 - math.exp(-(e + 1) / 2.5)) + rng.normal(0, 0.01)) for e in range(epochs)
    ]
    accuracy = float(min(0.995, max(0.05, (curve[-1] if curve else 0.1))))
    param_count = int((64 * hidden + hidden * hidden + hidden * 10) * keep)
    size = float(param_count * (1 if params["quantize"] == "int8" else 4) + 600)
    latency = float(0.02 + 4e-7 * param_count * (0.6 if params["quantize"] == "int8" else 1.0))
    latency *= float(rng.lognormal(0, 0.1))
    train_time = 0.4 * epochs * (128 / params["batch_size"]) * (hidden / 128) + 0.2
    attrs: dict[str, Any] = {"curve": curve, "epochs": epochs, "device": "cpu"}
    values = None
    if state == TrialState.COMPLETE:
        attrs.update(
            accuracy=accuracy,
            test_accuracy=accuracy - float(rng.uniform(0, 0.02)),
            accuracy_float=accuracy + 0.003,
            size_bytes=size,
            latency_ms=latency,
            latency_ms_p90=latency * 1.15,
            latency_ms_batch=latency * 6,
            latency_ms_batch_p90=latency * 6.8,
            latency_batch_size=32,
            latency_device="cpu",
            latency_threads=1,
            param_count=param_count,
            sparsity=params["prune_threshold"],
            prune_structure=params["prune_structure"],
            int8_layers=["0", "2"] if params["quantize"] == "int8" else [],
            removed_units=0,
            train_time_s=train_time,
            feasible=accuracy >= 0.8,
        )
        if accuracy < 0.8:
            attrs["constraint_violations"] = [0.8 - accuracy]
        values = [accuracy, size, latency]
    elif state == TrialState.PRUNED:
        attrs["stopped_reason"] = "successive halving: below the median at this rung"
    else:
        attrs["error"] = "RuntimeError: CUDA out of memory (simulated)\n  File objective.py"
    begun = start + dt.timedelta(seconds=5 * i)
    return optuna.trial.FrozenTrial(
        number=i,
        state=state,
        value=None,
        values=values,
        datetime_start=begun,
        datetime_complete=begun + dt.timedelta(seconds=train_time),
        params=params,
        distributions=dists,
        user_attrs=attrs,
        system_attrs={},
        intermediate_values={},
        trial_id=i,
    )


def build(path: Path, n_trials: int) -> str:
    """Create the study in ``path`` (a SQLite file) unless it is already there.

    Optuna creates the schema and the study; the trials go into Optuna's tables with
    one bulk insert per table, because ``study.add_trials`` takes about 0.1 s a
    trial here (15 minutes for 10,000). ``main`` checks that Optuna reads them back.
    """
    from optuna.distributions import distribution_to_json

    from tuner.storage._optuna import rdb_models

    models = rdb_models()

    url = f"sqlite:///{path}"
    if path.exists():
        return url
    tmp = path.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp}")
    study = optuna.create_study(
        study_name=STUDY, storage=storage, directions=["maximize", "minimize", "minimize"]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(OBJECTIVES))
    study.set_user_attr(
        "tuner.spec",
        {"name": STUDY, "objectives": OBJECTIVES, "constraints": {"accuracy": {"min": 0.8}}},
    )
    rng = np.random.default_rng(0)
    start = dt.datetime(2026, 1, 1, 12, 0, 0)
    trials, params, values, attrs = [], [], [], []
    for i in range(n_trials):
        t = _trial(rng, i, start)
        tid = i + 1
        trials.append(
            {
                "trial_id": tid,
                "number": t.number,
                "study_id": study._study_id,
                "state": t.state,
                "datetime_start": t.datetime_start,
                "datetime_complete": t.datetime_complete,
            }
        )
        for name, value in t.params.items():
            dist = t.distributions[name]
            params.append(
                {
                    "trial_id": tid,
                    "param_name": name,
                    "param_value": dist.to_internal_repr(value),
                    "distribution_json": distribution_to_json(dist),
                }
            )
        for k, v in enumerate(t.values or []):
            values.append({"trial_id": tid, "objective": k, "value": v, "value_type": "FINITE"})
        for key, value in t.user_attrs.items():
            attrs.append({"trial_id": tid, "key": key, "value_json": json.dumps(value)})
    value_type = models.TrialValueModel.TrialValueType
    for row in values:
        row["value_type"] = value_type.FINITE
    with storage.engine.begin() as conn:
        conn.execute(models.TrialModel.__table__.insert(), trials)
        conn.execute(models.TrialParamModel.__table__.insert(), params)
        conn.execute(models.TrialValueModel.__table__.insert(), values)
        conn.execute(models.TrialUserAttributeModel.__table__.insert(), attrs)
    storage.engine.dispose()
    tmp.rename(path)
    return url


def _time(fn: Any, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - began)
    return statistics.median(runs)


_ONE_CHART_APP = """
import plotly.graph_objects as go
import streamlit as st

st.title("one chart")
st.plotly_chart(go.Figure(go.Scatter(x=[1, 2, 3], y=[1, 3, 2], mode="markers")))
"""


def _serve(command: list[str], port: int, env: dict[str, str]) -> Any:
    import socket
    import subprocess

    proc = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{command[0]} did not listen on port {port}")


def _stop(proc: Any) -> None:
    import signal

    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=15)


def browser_rows(
    url_big: str, big: int, url_small: str, small: int, repeats: int
) -> list[tuple[str, float]]:
    """Seconds from opening the study page in a new Chromium tab to its first drawn
    Pareto point: the big study, a small one (what the page costs whatever the study),
    and a page with one chart and nothing else (what Streamlit and plotly cost)."""
    import tempfile

    from playwright.sync_api import sync_playwright

    point = '[data-testid="stPlotlyChart"] .scatterlayer .point'
    env = {k: v for k, v in os.environ.items() if k != "TUNER_DASHBOARD_PASSWORD"}
    tuner_cli = [sys.executable, "-m", "tuner._cli", "dashboard", "--port"]
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        one_chart = Path(tmp) / "one_chart.py"
        one_chart.write_text(_ONE_CHART_APP)
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )

        def open_page(address: str) -> float:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            began = time.perf_counter()
            page.goto(address, timeout=60_000, wait_until="commit")
            page.locator(point).first.wait_for(timeout=60_000)
            seconds = time.perf_counter() - began
            page.close()
            return seconds

        cases = [
            (f"{big:,}-trial study page, first view after start", url_big, True),
            (f"{big:,}-trial study page, new tab", url_big, False),
            (f"{small:,}-trial study page, new tab", url_small, False),
        ]
        for port, (label, store, cold) in enumerate(cases, start=8611):
            # A fresh server each time; the overview is opened first, as a user would,
            # so the first study view pays for reading the study, not for imports.
            proc = _serve([*tuner_cli, str(port), "--storage", store], port, env)
            try:
                overview = browser.new_page()
                overview.goto(f"http://127.0.0.1:{port}/", timeout=60_000)
                overview.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=60_000)
                overview.close()
                address = f"http://127.0.0.1:{port}/?study={STUDY}"
                if cold:
                    rows.append((label, open_page(address)))
                else:
                    open_page(address)
                    rows.append(
                        (label, statistics.median(open_page(address) for _ in range(repeats)))
                    )
            finally:
                _stop(proc)
        port = 8619
        streamlit = [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(one_chart),
            "--server.headless",
            "true",
        ]
        proc = _serve([*streamlit, "--server.port", str(port)], port, env)
        try:
            address = f"http://127.0.0.1:{port}/"
            open_page(address)
            rows.append(
                (
                    "one-chart Streamlit page, new tab (reference)",
                    statistics.median(open_page(address) for _ in range(repeats)),
                )
            )
        finally:
            _stop(proc)
        browser.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument(
        "--no-browser", action="store_true", help="skip the timings in Chromium (Playwright)"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from streamlit.testing.v1 import AppTest

    from tuner.dashboard import _figures
    from tuner.dashboard._views import page as pages
    from tuner.dashboard._views.timeline import timeline as build_timeline
    from tuner.storage import open_storage, read_records

    path = Path(f"/tmp/tuner-bench-dashboard-{args.trials}.db")
    if args.rebuild:
        path.unlink(missing_ok=True)
    url = build(path, args.trials)
    storage = open_storage(url, read_only=True, heartbeat=False)
    records = read_records(storage, STUDY)

    # The naive read goes through Optuna's own RDBStorage (tuner's store reads faster).
    plain = optuna.storages.RDBStorage(url, skip_table_creation=True, skip_compatibility_check=True)

    def naive() -> None:
        study = optuna.load_study(study_name=STUDY, storage=plain)
        _ = study.trials

    def fast() -> None:
        read_records(storage, STUDY)

    def first_view() -> None:
        pages.study_page_data(STUDY, read_records(storage, STUDY), OBJECTIVES)

    def every_view() -> None:
        page = pages.study_page_data(STUDY, read_records(storage, STUDY), OBJECTIVES)
        _ = page.hypervolume, page.histories, page.curves, page.table

    timeline_bytes = [0]

    def timeline_view() -> None:
        # The Timeline tab's data and figure for every trial, as sent to the browser.
        tl = build_timeline(records, dt.datetime.now())
        timeline_bytes[0] = len(_figures.timeline(tl).to_json())

    app = str(ROOT / "dashboard" / "app.py")
    os.environ["TUNER_STORAGE"] = url
    os.environ.pop("TUNER_DASHBOARD_PASSWORD", None)
    figure_bytes = [0]

    def render(cold: bool) -> None:
        import streamlit as st

        if cold:
            st.cache_data.clear()
            st.cache_resource.clear()
        at = AppTest.from_file(app, default_timeout=120)
        at.query_params["study"] = STUDY
        at.run()
        if at.exception:
            raise RuntimeError(at.exception[0].message)
        figure_bytes[0] = sum(len(chart.proto.spec) for chart in at.get("plotly_chart"))

    study = optuna.load_study(study_name=STUDY, storage=storage)
    assert len(study.get_trials(deepcopy=False)) == args.trials, "Optuna does not read the study"
    render(True)  # imports and first-run costs out of the way
    rows = [
        ("study.trials (Optuna, naive)", _time(naive, args.repeats)),
        ("read_records (bulk SQL)", _time(fast, args.repeats)),
        ("page data, first view (read + front + hover)", _time(first_view, args.repeats)),
        ("page data, every tab (+ histories, curves, table)", _time(every_view, args.repeats)),
        ("Timeline tab: data and figure, every trial", _time(timeline_view, args.repeats)),
        ("study page rendered, cold cache (AppTest)", _time(lambda: render(True), args.repeats)),
        ("study page rendered, warm cache (AppTest)", _time(lambda: render(False), args.repeats)),
    ]
    base = rows[0][1]
    load = os.getloadavg()[0]
    print(
        f"\n{len(records):,} trials, {len(OBJECTIVES)} objectives, SQLite; median of "
        f"{args.repeats} runs; load average {load:.1f} on {os.cpu_count()} CPUs\n"
    )
    width = max(len(name) for name, _ in rows)
    print(f"{'step':<{width}}  {'seconds':>8}  {'vs naive':>8}")
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds:>8.3f}  {seconds / base:>7.2f}x")
    print(f"\nPareto chart sent to the browser: {figure_bytes[0] / 1e6:.2f} MB")
    print(f"Timeline chart sent to the browser: {timeline_bytes[0] / 1e6:.2f} MB")
    if not args.no_browser and Path("/usr/bin/chromium").exists():
        small = 200
        small_url = build(Path(f"/tmp/tuner-bench-dashboard-{small}.db"), small)
        seen = browser_rows(url, args.trials, small_url, small, args.repeats)
        width = max(len(name) for name, _ in seen)
        print("\nIn Chromium: from opening the page to its first drawn Pareto point")
        print(f"{'page':<{width}}  {'seconds':>8}")
        for name, seconds in seen:
            print(f"{name:<{width}}  {seconds:>8.3f}")
    storage.engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
