from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import sqlalchemy
from streamlit.testing.v1 import AppTest

from tuner.dashboard._views import front as fronts
from tuner.dashboard._views import trials as trial_views
from tuner.storage import open_storage, read_records

OBJ = {"accuracy": "maximize", "size_bytes": "minimize", "latency_ms": "minimize"}


def _run(app_path: Path, url: str, monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    monkeypatch.setenv("TUNER_STORAGE", url)
    monkeypatch.delenv("TUNER_DASHBOARD_PASSWORD", raising=False)
    at = AppTest.from_file(str(app_path), default_timeout=60)
    at.query_params.update(params)
    at.run()
    assert not at.exception, at.exception[0].message if at.exception else ""
    return at


def _fastest_and_its_limit(url: str) -> tuple[Any, float]:
    """The fastest feasible trial, and a latency budget only it (and ties) fits."""
    feasible = [r for r in _records(url) if r.state == "COMPLETE" and r.feasible]
    fastest = min(feasible, key=lambda r: r.values["latency_ms"])
    return fastest, fastest.values["latency_ms"] * 1.0001


def _nodes(node: Any) -> Iterator[Any]:
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _nodes(child)


def _page_text(at: AppTest) -> str:
    """Everything the page sends to the browser, as text (figures included)."""
    return "\n".join(str(n.proto) for n in _nodes(at._tree) if getattr(n, "proto", None))


def _figures(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def _numbers(value: Any) -> list[float]:
    """A figure's array as sent to the browser: a list, or plotly's typed-array encoding."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    return list(value)


def _records(url: str) -> list[Any]:
    storage = open_storage(url, read_only=True, heartbeat=False)
    try:
        return read_records(storage, "tiny")
    finally:
        storage.engine.dispose()


def test_overview_lists_the_study_with_its_counts(
    app_path: Path, dashboard_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _run(app_path, dashboard_store, monkeypatch)
    assert at.title[0].value == "Studies"
    table = at.dataframe[0].value
    row = table[table["study"] == "tiny"].iloc[0]
    records = _records(dashboard_store)
    assert row["complete"] == sum(r.state == "COMPLETE" for r in records)
    assert row["stopped early"] == sum(r.state == "PRUNED" for r in records)
    assert row["failed"] == 1 and row["state"] == "finished"
    assert "accuracy" in row["best"]


def test_study_page_draws_the_front_and_the_best_trial(
    app_path: Path, dashboard_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _run(app_path, dashboard_store, monkeypatch, study="tiny")
    records = _records(dashboard_store)
    info = fronts.front_info(records, OBJ)
    best = fronts.best_within_budget(info).best
    assert best is not None
    assert at.title[0].value == "tiny"
    # What the figure marks is checked on the figure itself (test_figures.py); here, that
    # the page sends it with the front and one point per trial to hover.
    (figure,) = _figures(at)
    traces = {t["name"].split(" (")[0]: t for t in figure["data"]}
    assert sorted(c[0] for c in traces["Pareto front"]["customdata"]) == sorted(info.front_numbers)
    assert f"trial {best.number}" in " ".join(m.value for m in at.markdown)
    assert at.code[0].value.startswith(f"tuner export tiny --trial {best.number} --format onnx")


def test_budget_from_the_url_restricts_the_front(
    app_path: Path, dashboard_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fastest, limit = _fastest_and_its_limit(dashboard_store)
    at = _run(app_path, dashboard_store, monkeypatch, study="tiny", max_latency_ms=f"{limit}")
    assert at.number_input(key="max_latency_ms").value == pytest.approx(limit)
    text = " ".join(m.value for m in at.markdown)
    assert f"Best trial within the budget: trial {fastest.number}" in text
    names = [t["name"] for t in _figures(at)[0]["data"]]
    assert any(n.startswith("front within budget") for n in names)

    at = _run(app_path, dashboard_store, monkeypatch, study="tiny", max_latency_ms="0.000001")
    assert "No feasible trial fits this budget" in at.warning[0].value


@pytest.mark.parametrize(
    "view",
    _data_views := [
        "3-D",
        "Parallel coordinates",
        "History",
        "Timeline",
        "Hypervolume",
        "Importance",
        "Parameters",
        "Learning curves",
    ],
)
def test_every_view_draws_a_chart(
    view: str, app_path: Path, dashboard_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _run(app_path, dashboard_store, monkeypatch, study="tiny", view=view)
    figures = _figures(at)
    assert len(figures) == 1 and figures[0]["data"]
    if view == "Learning curves":
        names = [t.get("name") for t in figures[0]["data"]]
        assert "stopped early" in names  # early-stopped trials are visible
    if view == "Timeline":  # a bar for every trial that ran, by state
        bars = [t for t in figures[0]["data"] if "customdata" in t]
        numbers = {int(n) for t in bars for n in _numbers(t["customdata"]) if n is not None}
        assert numbers == {r.number for r in _records(dashboard_store) if r.datetime_start}
        assert "stopped early" in {t["name"] for t in bars}


def test_timeline_puts_each_worker_on_a_row_of_its_own(
    app_path: Path, dashboard_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _run(
        app_path,
        dashboard_store,
        monkeypatch,
        study="tiny",
        view="Timeline",
        **{"timeline-rows": "worker"},
    )
    (figure,) = _figures(at)
    rows = {y for t in figure["data"] if "customdata" in t for y in t["y"] if y is not None}
    workers = {r.metrics["worker"] for r in _records(dashboard_store) if r.datetime_start}
    assert rows == workers and all(" (pid " in w for w in workers)


def test_parameters_view_colours_by_the_choice_in_the_url(
    app_path: Path, dashboard_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _run(
        app_path,
        dashboard_store,
        monkeypatch,
        study="tiny",
        view="Parameters",
        **{"slice-y": "latency_ms", "slice-colour": "quantize"},
    )
    assert at.selectbox(key="slice-y").value == "latency_ms"
    assert "quantize" in at.selectbox(key="slice-colour").options
    (figure,) = _figures(at)
    complete = {r.number: r for r in _records(dashboard_store) if r.state == "COMPLETE"}
    legend = {t["name"] for t in figure["data"] if t.get("showlegend", True)}
    assert legend == {r.params["quantize"] for r in complete.values()}
    for trace in figure["data"]:
        for y, tip in zip(_numbers(trace["y"]), trace["customdata"]):
            assert y == pytest.approx(complete[tip[0]].values["latency_ms"])
    assert "latency_ms against each parameter" in " ".join(c.value for c in at.caption)


def test_trial_table_lists_every_trial(
    app_path: Path, dashboard_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _run(app_path, dashboard_store, monkeypatch, study="tiny", view="Trials")
    table = at.dataframe[0].value
    assert sorted(table["trial"]) == sorted(r.number for r in _records(dashboard_store))
    assert set(table["state"]) >= {"COMPLETE", "PRUNED", "FAIL"}


def test_trial_page_shows_params_metrics_curve_and_export(
    app_path: Path, dashboard_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _records(dashboard_store)
    done = next(r for r in records if r.state == "COMPLETE")
    at = _run(app_path, dashboard_store, monkeypatch, study="tiny", trial=str(done.number))
    assert at.title[0].value == f"Trial {done.number} of tiny"
    params, metrics = at.dataframe[0].value, at.dataframe[1].value
    assert set(params["parameter"]) == set(done.params)
    # How its shipped model was compressed and recovered, in words.
    assert trial_views.recovery_text(done) in [t.value for t in at.text]
    shown = set(metrics["metric"])
    assert {"accuracy", "test_accuracy", "size_bytes", "latency_ms", "latency_ms_p90"} <= shown
    assert {"latency_ms_batch", "sparsity", "param_count", "train_time_s", "int8_layers"} <= shown
    assert len(at.get("plotly_chart")) == 1  # learning curve
    assert at.code[-1].value.startswith(
        f"tuner export tiny --trial {done.number} --format onnx --out model.onnx"
    )
    # Where its model is kept, and whether the command must train it again.
    storage = open_storage(dashboard_store, read_only=True, heartbeat=False)
    try:
        study_attrs = optuna.load_study(study_name="tiny", storage=storage).user_attrs
    finally:
        storage.engine.dispose()
    kept, retrain = trial_views.kept_model(done, study_attrs)
    assert any(kept in c.value for c in at.caption)
    assert at.code[-1].value.endswith("--retrain") == retrain
    assert f"ran on {done.metrics['worker']}" in at.caption[0].value
    # Where its TensorBoard run is, and the command that opens the study's runs.
    assert any(str(trial_views.tensorboard_run(done)) in c.value for c in at.caption)
    assert "tuner tensorboard tiny --serve --storage " in at.code[-2].value


def test_failed_and_stopped_trials_say_why(
    app_path: Path, dashboard_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _records(dashboard_store)
    failed = next(r for r in records if r.state == "FAIL")
    at = _run(app_path, dashboard_store, monkeypatch, study="tiny", trial=str(failed.number))
    assert "simulated failure in trial 1" in at.code[0].value
    stopped = next(r for r in records if r.state == "PRUNED")
    at = _run(app_path, dashboard_store, monkeypatch, study="tiny", trial=str(stopped.number))
    assert at.warning[0].value.startswith(f"Stopped early after {len(stopped.curve)} epoch")


def test_unknown_study_and_trial_are_named(
    app_path: Path, dashboard_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _run(app_path, dashboard_store, monkeypatch, study="nope")
    assert "No study named 'nope'" in at.error[0].value and "tiny" in at.error[0].value
    at = _run(app_path, dashboard_store, monkeypatch, study="tiny", trial="999")
    assert "has no trial 999" in at.error[0].value
    at = _run(app_path, dashboard_store, monkeypatch, study="nope", trial="1")
    assert "No study named 'nope'" in at.error[0].value


def test_password_gate_blocks_until_the_password_is_given(
    app_path: Path, dashboard_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNER_STORAGE", dashboard_store)
    monkeypatch.setenv("TUNER_DASHBOARD_PASSWORD", "open sesame")
    at = AppTest.from_file(str(app_path), default_timeout=60)
    at.query_params["study"] = "tiny"
    at.run()
    assert not at.get("plotly_chart") and not at.dataframe
    assert "tiny" not in [t.value for t in at.title]
    at.text_input[0].input("wrong")
    at.button[0].click().run()
    assert at.error[0].value == "Wrong password."
    assert not at.get("plotly_chart")
    at.text_input[0].input("open sesame")
    at.button[0].click().run()
    assert not at.exception
    assert at.title[0].value == "tiny" and at.get("plotly_chart")


def test_secrets_password_gates_too(
    app_path: Path, dashboard_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNER_STORAGE", dashboard_store)
    monkeypatch.delenv("TUNER_DASHBOARD_PASSWORD", raising=False)
    at = AppTest.from_file(str(app_path), default_timeout=60)
    at.secrets["password"] = "from secrets"
    at.run()
    assert not at.dataframe and at.text_input[0].label == "Password"


@pytest.mark.parametrize("server", ["postgres", "mysql"])
def test_a_servers_store_with_password_never_shows_it(
    app_path: Path,
    dashboard_store: str,
    server: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if server == "postgres":
        # The local server trusts every login, so any password opens it.
        url = sqlalchemy.engine.make_url(request.getfixturevalue("postgres_url"))
        secret_url = url.set(password="s3cret-pw").render_as_string(hide_password=False)
    else:  # a user of its own, whose password is s3cret-pw
        secret_url = request.getfixturevalue("mysql_secret_url")
    optuna.copy_study(
        from_study_name="tiny",
        from_storage=dashboard_store,
        to_storage=secret_url,
        to_study_name="tiny",
    )
    writer = open_storage(secret_url, heartbeat=False)
    running = optuna.load_study(study_name="tiny", storage=writer)
    running.ask()  # a trial in flight: the study is running
    for day in ("2026-01-01", "2026-01-02"):
        night = optuna.create_study(study_name=f"digits-{day}", storage=writer)
        night.set_user_attr("tuner.spec_name", "digits")
    writer.engine.dispose()
    pages = [{}, {"study": "tiny"}, {"study": "tiny", "view": "Trials"}]
    done = next(r for r in _records(dashboard_store) if r.state == "COMPLETE")
    pages.append({"study": "tiny", "trial": str(done.number)})
    for params in pages:
        at = _run(app_path, secret_url, monkeypatch, **params)
        text = _page_text(at)
        assert "s3cret-pw" not in text
        assert "***" in text  # the store is named, masked
        if params == {}:
            assert "Nightly: digits" in [s.value for s in at.subheader]
        if params == {"study": "tiny"}:
            assert "refreshes every" in " ".join(c.value for c in at.caption)
    assert read_records is not None


def test_budget_survives_a_visit_to_a_trial(
    app_path: Path, dashboard_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fastest, limit = _fastest_and_its_limit(dashboard_store)
    at = _run(app_path, dashboard_store, monkeypatch, study="tiny")
    at.number_input(key="max_latency_ms").set_value(limit).run()
    assert f"within the budget: trial {fastest.number}" in " ".join(m.value for m in at.markdown)
    at.button(key=next(b.key for b in at.button if b.key.startswith("open-best"))).click().run()
    assert at.title[0].value == f"Trial {fastest.number} of tiny"
    at.button(key=next(b.key for b in at.button if b.key.startswith("back"))).click().run()
    assert not at.exception
    assert at.title[0].value == "tiny"
    assert at.number_input(key="max_latency_ms").value == pytest.approx(limit)
    assert f"within the budget: trial {fastest.number}" in " ".join(m.value for m in at.markdown)


def test_budget_inputs_step_at_the_scale_of_the_study(
    app_path: Path, dashboard_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _records(dashboard_store)
    latencies = sorted(r.values["latency_ms"] for r in records if r.state == "COMPLETE")
    median = latencies[len(latencies) // 2]
    at = _run(app_path, dashboard_store, monkeypatch, study="tiny")
    box = at.number_input(key="max_latency_ms")
    box.set_value(median).run()
    at.number_input(key="max_latency_ms").increment().run()
    step = at.number_input(key="max_latency_ms").value - median
    assert 0 < step <= median / 10 + 1e-12


def test_a_store_outage_is_shown_and_the_page_comes_back(
    app_path: Path, pg_proxy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = open_storage(pg_proxy.direct_url, heartbeat=False)
    study = optuna.create_study(
        storage=writer, study_name="blip", directions=["maximize", "minimize", "minimize"]
    )
    study.set_metric_names(list(OBJ))
    study.add_trial(optuna.trial.create_trial(values=[0.9, 2000.0, 0.1]))
    writer.engine.dispose()
    pg_proxy.cut()  # the server restarts while someone opens the page
    at = _run(app_path, pg_proxy.proxied_url, monkeypatch)
    assert not at.title
    warning = at.warning[0].value
    assert "unreachable" in warning and "comes back by itself" in warning
    assert not at.error
    pg_proxy.restore()
    at.run()
    assert not at.exception and not at.warning
    assert at.title[0].value == "Studies"
    assert list(at.dataframe[0].value["study"]) == ["blip"]


def test_a_study_measured_on_two_kinds_of_machine_is_flagged(
    app_path: Path,
    dashboard_store: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    measured_elsewhere: Any,
) -> None:
    from tuner._measure import machine_name

    def flagged(at: AppTest) -> list[str]:
        return [w.value for w in at.warning if "kinds of machine" in w.value]

    assert flagged(_run(app_path, dashboard_store, monkeypatch, study="tiny")) == []
    mixed = f"sqlite:///{tmp_path / 'mixed.db'}"
    measured_elsewhere(dashboard_store, "tiny", mixed)
    complete = sum(r.state == "COMPLETE" for r in _records(dashboard_store))
    (warning,) = flagged(_run(app_path, mixed, monkeypatch, study="tiny"))
    assert warning.startswith(
        f"Latencies were measured on 2 kinds of machine: {machine_name('cpu')} "
        f"({complete} trials), Example Vendor CPU 9000 (1 trial)"
    ), warning


def test_a_study_timed_while_the_machine_slowed_says_so(
    app_path: Path,
    dashboard_store: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    copy_with_trials: Any,
) -> None:
    # The trials of a real study, and five more of the same settings timed while the
    # machine ran at a third of its speed some of the time (as a busy VM does).
    moved = f"sqlite:///{tmp_path / 'moved.db'}"
    same = (1.0, 1.0, 1.0)
    copy_with_trials(
        dashboard_store,
        "tiny",
        moved,
        [(same, {"latency_reference_ms": r}) for r in (0.1, 0.1, 0.3, 0.3, 0.3)],
    )
    at = _run(app_path, moved, monkeypatch, study="tiny")
    (caption,) = [c.value for c in at.caption if "speed moved" in c.value]
    assert caption.startswith("The machine's speed moved while these trials were timed")
    assert "may be the machine's, not the model's" in caption
    hint = f"`tuner retime tiny --storage {moved}` times the front again side by side"
    assert any(c.value.startswith(hint) for c in at.caption), [c.value for c in at.caption]


def _reread(st: Any) -> None:
    """Drop what the page cached, as its few seconds' cache would have lapsed."""
    st.cache_data.clear()
    st.cache_resource.clear()


def test_a_retimed_front_is_shown_beside_the_stored_figures(
    app_path: Path, dashboard_store: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import streamlit as st

    from tuner._retime import retime_front
    from tuner.storage import pareto_front, study_objectives

    copy = f"sqlite:///{tmp_path / 'retimed.db'}"
    optuna.copy_study(from_study_name="tiny", from_storage=dashboard_store, to_storage=copy)
    at = _run(app_path, copy, monkeypatch, study="tiny")
    assert not [e for e in at.expander if "re-timed" in e.label]

    store = open_storage(copy, heartbeat=False)
    objectives = study_objectives(optuna.load_study(study_name="tiny", storage=store))
    front = [r.number for r in pareto_front(_records(copy), objectives)]
    result = retime_front(store, "tiny", rounds=1)
    store.engine.dispose()
    _reread(st)
    at = _run(app_path, copy, monkeypatch, study="tiny")
    (section,) = [e for e in at.expander if "re-timed" in e.label]
    assert section.label.startswith(f"Front re-timed side by side on {result.machine}")
    table = section.dataframe[0].value
    assert sorted(int(n) for n in table["trial"]) == sorted(front)
    assert all(float(v) > 0 for v in table["batch 1 ms now"])
    notes = [c.value for c in section.caption]
    assert any(n.startswith("Yardstick now ") for n in notes), notes

    # A trial that joins the front after the re-timing: the page says the front changed.
    study = optuna.load_study(study_name="tiny", storage=copy)
    last = next(t for t in reversed(study.trials) if t.state.name == "COMPLETE")
    study.add_trial(
        optuna.trial.create_trial(
            params=last.params,
            distributions=last.distributions,
            values=[1.0, 100 * last.values[1], 100 * last.values[2]],
        )
    )
    _reread(st)
    at = _run(app_path, copy, monkeypatch, study="tiny")
    (section,) = [e for e in at.expander if "re-timed" in e.label]
    changed = [c.value for c in section.caption if c.value.startswith("The front has changed")]
    assert changed == [
        f"The front has changed since: trial {len(study.trials) - 1} was not on it then; "
        f"`tuner retime tiny --storage {copy}` times it again."
    ]


def test_a_nightly_spec_draws_its_nights_hypervolume_and_best_accuracy(
    app_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuner.storage import nights
    from tuner.storage.keys import NIGHTLY_ATTR, SPEC_NAME_ATTR

    url = f"sqlite:///{tmp_path / 'nights.db'}"
    reference = {"accuracy": 0.0, "size_bytes": 100_000.0, "latency_ms": 2.0}
    # Three nights as tuner nightly records them: the second better, the third judged
    # regressed by its report.
    fronts = {
        "2026-11-01": [(0.90, 40_000.0, 0.5), (0.85, 20_000.0, 0.4)],
        "2026-11-02": [(0.94, 30_000.0, 0.4), (0.88, 10_000.0, 0.3)],
        "2026-11-03": [(0.80, 60_000.0, 0.9)],
    }
    for date, points in fronts.items():
        study = optuna.create_study(
            study_name=f"digits-{date}", storage=url, directions=list(OBJ.values())
        )
        for values in points:
            study.add_trial(optuna.trial.create_trial(values=list(values)))
        study.set_user_attr(SPEC_NAME_ATTR, "digits")
        study.set_user_attr(
            NIGHTLY_ATTR,
            {"date": date, "reference_point": reference, "regressed": date == "2026-11-03"},
        )
        study.set_metric_names(list(OBJ))
    at = _run(app_path, url, monkeypatch)
    assert "Nightly: digits" in [s.value for s in at.subheader]
    (figure,) = _figures(at)
    traces = {t.get("name"): t for t in figure["data"]}
    line = traces["hypervolume"]
    assert line["x"] == list(fronts)
    expected = [n.hypervolume for n in nights(open_storage(url, read_only=True), "digits")]
    assert line["y"] == pytest.approx(expected)
    assert expected[1] > expected[0] > expected[2] > 0
    assert traces["judged regressed"]["x"] == ["2026-11-03"]
    assert traces["accuracy"]["y"] == pytest.approx([90.0, 94.0, 80.0])  # in %
    assert "+" in line["text"][1] and "on the night before" in line["text"][1]
    # One shared axis of nights, every row's a category axis (dates typed as dates would not
    # line up with the row below).
    axes = [v for k, v in figure["layout"].items() if k.startswith("xaxis")]
    assert len(axes) == 2 and all(a["type"] == "category" for a in axes)
    assert line["customdata"] == [f"digits-{d}" for d in fronts]  # a click opens the night
    latest = nights(open_storage(url, read_only=True), "digits", last=2)
    assert [n.date for n in latest] == ["2026-11-02", "2026-11-03"]


def test_studies_compared_side_by_side(
    app_path: Path, dashboard_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real study, and a copy with every model 10% larger: the copy holds no point of
    # the joint front.
    url = f"sqlite:///{tmp_path / 'two.db'}"
    optuna.copy_study(from_study_name="tiny", from_storage=dashboard_store, to_storage=url)
    source = optuna.load_study(study_name="tiny", storage=url)
    larger = optuna.create_study(
        study_name="tiny-larger", storage=url, directions=source.directions
    )
    larger.set_metric_names(list(OBJ))
    # The trials that break none of the study's constraints (the others are not compared).
    feasible = {r.number for r in _records(dashboard_store) if r.feasible}
    for t in source.get_trials(states=[optuna.trial.TrialState.COMPLETE]):
        if t.number not in feasible:
            continue
        accuracy, size, latency = t.values
        larger.add_trial(optuna.trial.create_trial(values=[accuracy, size * 1.1, latency]))
    monkeypatch.setenv("TUNER_STORAGE", url)
    monkeypatch.delenv("TUNER_DASHBOARD_PASSWORD", raising=False)
    # Chosen in the sidebar, as a user does; the page's URL then names both studies.
    at = AppTest.from_file(str(app_path), default_timeout=60)
    at.run()
    (chooser,) = at.sidebar.multiselect
    chooser.set_value(["tiny", "tiny-larger"]).run()
    next(b for b in at.sidebar.button if b.label == "Compare").click().run()
    assert not at.exception, at.exception[0].message if at.exception else ""
    assert at.title[0].value == "Compare studies"
    assert at.query_params["compare"] == ["tiny", "tiny-larger"]
    (figure,) = _figures(at)
    fronts = [t for t in figure["data"] if t.get("mode") == "lines+markers"]
    assert [t["name"] for t in fronts] == ["tiny", "tiny-larger"]
    table = at.dataframe[0].value.set_index("study")
    joint = table.loc["tiny", "on the joint front"]
    assert table.loc["tiny-larger", "on the joint front"].startswith("0 of ")
    assert joint.split(" of ")[0] == joint.split(" of ")[1] != "0"
    assert table.loc["tiny", "hypervolume"] > table.loc["tiny-larger", "hypervolume"]
    # A study that is not in the store is named; with one left, there is nothing to compare.
    at.query_params["compare"] = ["tiny", "nope"]
    at.run()
    assert [e.value for e in at.error] == ["No study named 'nope' in this store."]
    assert not _figures(at)
