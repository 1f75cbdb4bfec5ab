"""The tuner dashboard: every study in a store, its trade-off, and the trial to ship.

Started by ``tuner dashboard [--storage URL]``, or from a checkout with
``streamlit run dashboard/app.py -- --storage URL``. Pages are addressed by the URL:
``?study=NAME`` for a study, ``?study=NAME&trial=N`` for one trial. The store is
opened read-only; its password never reaches the page.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import os
import sys
from typing import Any

import optuna
import pandas as pd
import streamlit as st

from tuner.dashboard import PASSWORD_ENV, _figures
from tuner.dashboard._views import front as _front
from tuner.dashboard._views import importance as _importance_data
from tuner.dashboard._views import overview as _overview
from tuner.dashboard._views import params as _params
from tuner.dashboard._views import trials as _trials
from tuner.dashboard._views.overview import NightTrend
from tuner.dashboard._views.page import StudyPage, study_page_data
from tuner.storage import (
    StoreError,
    StoreUnavailable,
    StudySummary,
    TrialRecord,
    compare_fronts,
    count_states,
    mask_url,
    mixed_machines,
    nights,
    open_storage,
    read_best_values,
    read_records,
    read_studies,
    resolve_url,
    retiming_notes,
    retiming_rows,
    show_duration,
    show_epochs,
    show_metric,
    speed_spread,
    stored_retiming,
)
from tuner.storage.keys import SPEC_ATTR

REFRESH_S = 5
MAX_2D_POINTS = 3000
MAX_3D_POINTS = 1500
MAX_LINES = 1500
TABS = [
    "Pareto front",
    "3-D",
    "Parallel coordinates",
    "History",
    "Timeline",
    "Hypervolume",
    "Importance",
    "Parameters",
    "Learning curves",
    "Trials",
]


# --- store access (read-only, cached) -------------------------------------------------


def _storage_url() -> str:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--storage")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return resolve_url(args.storage)


@st.cache_resource(show_spinner=False)
def _store(url: str) -> Any:
    return open_storage(url, read_only=True, heartbeat=False)


@st.cache_data(ttl=2, show_spinner=False)
def _summaries(url: str) -> list[StudySummary]:
    return read_studies(_store(url))


@st.cache_data(ttl=5, show_spinner=False)
def _best_values(url: str) -> dict[str, dict[str, float]]:
    return read_best_values(_store(url))


# The nights drawn under a nightly spec: the latest ones, so that the overview reads a
# bounded number of studies however long the spec has run.
MAX_NIGHTS = 60


@st.cache_data(ttl=10, show_spinner=False)
def _night_trend(url: str, spec_name: str, _studies: list[StudySummary]) -> NightTrend:
    # A night's front and hypervolume change only while it runs: read at most every 10 s.
    found = nights(_store(url), spec_name, last=MAX_NIGHTS)
    return _overview.night_trend(spec_name, found, _studies)


@st.cache_data(ttl=2, show_spinner=False)
def _count(url: str, name: str) -> int:
    return sum(count_states(_store(url), name).values())


def _build_page(url: str, name: str) -> StudyPage:
    summary = _summary(url, name)
    if summary is None:
        raise StoreError(f"no study named {name!r} in this store")
    records = read_records(_store(url), name)
    return study_page_data(
        name,
        records,
        summary.objectives,
        _front.study_constraints(summary.user_attrs),
        axes=_params.param_axes(summary.user_attrs.get(SPEC_ATTR)),
    )


# The same page object serves every viewer until it expires; it is never changed,
# so it is cached as a resource (no copy per read). Larger studies are re-read less
# often: reading 10,000 trials costs more than reading 100.
@st.cache_resource(ttl=2, max_entries=32, show_spinner=False)
def _page_small(url: str, name: str) -> StudyPage:
    return _build_page(url, name)


@st.cache_resource(ttl=10, max_entries=8, show_spinner=False)
def _page_medium(url: str, name: str) -> StudyPage:
    return _build_page(url, name)


@st.cache_resource(ttl=30, max_entries=4, show_spinner=False)
def _page_large(url: str, name: str) -> StudyPage:
    return _build_page(url, name)


def _page(url: str, name: str) -> StudyPage:
    n = _count(url, name)
    if n < 1000:
        return _page_small(url, name)
    if n < 5000:
        return _page_medium(url, name)
    return _page_large(url, name)


@st.cache_data(ttl=600, max_entries=16, show_spinner=False)
def _importance(url: str, name: str, n_complete: int) -> dict[str, dict[str, float]]:
    page = _page(url, name)
    return _importance_data.param_importance(page.records, page.objectives)


def _summary(url: str, name: str) -> StudySummary | None:
    return next((s for s in _summaries(url) if s.name == name), None)


# --- access and navigation ---------------------------------------------------------


def _expected_password() -> str | None:
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env:
        return from_env
    try:
        value = st.secrets.get("password")
    except Exception:  # no secrets file: no password from there
        return None
    return str(value) if value else None


def _gate() -> None:
    expected = _expected_password()
    if expected is None or st.session_state.get("authenticated"):
        return
    st.title("tuner dashboard")
    with st.form("login"):
        entered = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Open")
    if submitted:
        if hmac.compare_digest(entered.encode(), expected.encode()):
            st.session_state["authenticated"] = True
            st.rerun()
        st.error("Wrong password.")
    st.stop()


def _go(study: str | None = None, trial: int | None = None) -> None:
    params = st.query_params
    if "compare" in params:  # a study or a trial opened from the compared fronts
        del params["compare"]
    for key, value in (("study", study), ("trial", trial)):
        if value is None:
            if key in params:
                del params[key]
        else:
            params[key] = str(value)
    if study is None:
        for key in list(params):
            # A key bound to a widget of this page cannot be removed; it goes with the widget.
            with contextlib.suppress(Exception):
                del params[key]
    # A new key for the selectable charts, so a selection does not follow us back.
    st.session_state["nav"] = st.session_state.get("nav", 0) + 1
    st.rerun()


def _go_compare(names: list[str]) -> None:
    st.query_params.from_dict({"compare": names})
    st.session_state["nav"] = st.session_state.get("nav", 0) + 1
    st.rerun()


def _nav_key(name: str) -> str:
    return f"{name}-{st.session_state.get('nav', 0)}"


def _clicked_chart(fig: Any, key: str) -> Any:
    """Draw ``fig`` so that a click on a point reruns the page; the clicked point's
    ``customdata``, or None."""
    event = st.plotly_chart(
        fig,
        on_select="rerun",
        selection_mode="points",
        key=_nav_key(key),
        config={"displaylogo": False},
    )
    try:
        points = event.selection.points
    except AttributeError:
        return None
    return next((p["customdata"] for p in points if p.get("customdata") is not None), None)


# --- the overview ------------------------------------------------------------------


def overview(url: str) -> None:
    st.title("Studies")
    st.caption(f"store {mask_url(url)}")
    summaries = _summaries(url)
    if not summaries:
        st.info(
            "No studies in this store yet. Run one with "
            "`tuner run search_spaces/digits_mlp.yaml`, then reload this page."
        )
        return
    best = _best_values(url)
    groups = _overview.group_studies(summaries)
    single = [g.studies[0] for g in groups if not g.nightly]
    nightly = [g for g in groups if g.nightly]
    if single:
        st.caption("Click a row to open the study.")
        _studies_table(single, best, key="studies")
    for group in nightly:
        latest = group.studies[0]
        st.subheader(f"Nightly: {group.name}")
        st.caption(
            f"{len(group.studies)} runs; latest {latest.name} "
            f"({'running' if latest.is_running else 'finished'})"
        )
        _studies_table(group.studies, best, key=f"nightly-{group.name}")
        if len(group.studies) > 1:
            trend = _night_trend(url, group.name, group.studies)
            st.caption(
                "Each night's front: its hypervolume against one reference point (the latest "
                "report's), higher is better, and its best "
                + ", ".join(trend.best)
                + ". Hover a night for its trials and its change on the night before; click "
                "it to open it."
            )
            night = _clicked_chart(_figures.night_trend(trend), f"nights-{group.name}")
            if isinstance(night, str):
                _go(study=night)


def _studies_table(
    studies: list[StudySummary], best: dict[str, dict[str, float]], *, key: str
) -> None:
    frame = pd.DataFrame(_overview.overview_rows(studies, best))
    event = st.dataframe(
        frame,
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key=_nav_key(key),
        column_config={
            "last update": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
        },
    )
    rows = event.selection.rows if event is not None else []
    if rows:
        _go(study=str(frame.iloc[rows[0]]["study"]))


# --- studies compared --------------------------------------------------------------


@st.cache_data(ttl=5, max_entries=16, show_spinner=False)
def _records(url: str, name: str) -> list[TrialRecord]:
    return read_records(_store(url), name)


def compare_page(url: str, names: list[str]) -> None:
    st.title("Compare studies")
    known = {s.name: s for s in _summaries(url)}
    for name in names:
        if name not in known:
            st.error(f"No study named {name!r} in this store.")
    names = [n for n in dict.fromkeys(names) if n in known]
    if len(names) < 2:
        st.info("Pick two or more studies of this store to compare, in the sidebar.")
        return
    comparison = compare_fronts({n: (known[n].objectives, _records(url, n)) for n in names})
    objectives = list(comparison.objectives)
    shared = " · ".join(
        f"{n} {'↑' if d == 'maximize' else '↓'}" for n, d in comparison.objectives.items()
    )
    st.caption(f"{', '.join(names)}  |  compared on: {shared or 'nothing'}")
    if comparison.left_out:
        st.caption(
            "Left out (not in every study, or not the same way round in each): "
            + ", ".join(comparison.left_out)
        )
    if len(objectives) < 2:
        st.warning(
            "These studies share fewer than two objectives, each the same way round: "
            "there is no trade-off to compare."
        )
        return
    if not any(s.trials for s in comparison.studies):
        st.info("No complete trial in these studies yet.")
        return
    x_default = objectives[-1] if len(objectives) >= 3 else objectives[1]
    left, right = st.columns(2)
    x = left.selectbox("x axis", objectives, index=objectives.index(x_default), key="cx")
    y_choices = [n for n in objectives if n != x]
    y = right.selectbox("y axis", y_choices, index=0, key="cy")
    st.caption(
        "Each study's front on these two objectives (its other trials faint); larger points "
        "are on the joint front of every objective: no trial of any of these studies is "
        "better on all of them. Click a point to open its trial."
    )
    picked = _clicked_chart(_figures.compare_fronts(comparison, x, y), "compare-chart")
    if isinstance(picked, list) and len(picked) == 2:  # [study, trial]
        _go(study=str(picked[0]), trial=int(picked[1]))
    st.caption(
        "Hypervolume: the share of one box that the study's front dominates, higher is "
        "better; the box spans each objective from its best value over every study's trials "
        "to a tenth of that range past the worst."
    )
    st.dataframe(pd.DataFrame(comparison.rows()), hide_index=True)


# --- the study page ----------------------------------------------------------------


def _unknown_study(url: str, name: str) -> None:
    known = ", ".join(s.name for s in _summaries(url)) or "none"
    st.error(f"No study named {name!r} in this store. Studies: {known}.")
    if st.button("All studies", key="unknown-all"):
        _go()


def study_page(url: str, name: str) -> None:
    summary = _summary(url, name)
    if summary is None:
        _unknown_study(url, name)
        return
    every = REFRESH_S if summary.is_running else None

    @st.fragment(run_every=every)
    def body() -> None:
        try:
            _study_body(url, name)
        except StoreUnavailable as exc:
            # This fragment reruns every few seconds while the study runs: it recovers
            # by itself once the store is back.
            _outage_notice(exc)

    body()


def _study_body(url: str, name: str) -> None:
    page = _page(url, name)
    summary = _summary(url, name)
    running = summary is not None and summary.is_running
    counts = page.counts
    st.title(name)
    objectives = " · ".join(
        f"{n} {'↑' if d == 'maximize' else '↓'}" for n, d in page.objectives.items()
    )
    constraints = " · ".join(b.describe() for b in page.constraints) or "none"
    st.caption(f"objectives: {objectives}  |  constraints: {constraints}")
    cols = st.columns(6)
    cols[0].metric("complete", counts.get("COMPLETE", 0))
    cols[1].metric("stopped early", counts.get("PRUNED", 0))
    cols[2].metric("failed", counts.get("FAIL", 0))
    cols[3].metric("running", counts.get("RUNNING", 0) + counts.get("WAITING", 0))
    cols[4].metric("on the front", int(page.info.on_front.sum()))
    cols[5].metric("state", "running" if running else "finished")
    if running:
        st.caption(f"Running: this page refreshes every {REFRESH_S} s.")
    complete = [r.metrics for r in page.records if r.state == "COMPLETE"]
    mixed = mixed_machines(complete)
    if mixed:
        st.warning(mixed[0].upper() + mixed[1:] + ".")
    moved = speed_spread(complete)
    if moved:
        st.caption(moved[0].upper() + moved[1:] + ".")
    if mixed or moved:
        st.caption(
            f"`{_trials.retime_command(name, url)}` times the front again side by side on "
            "one machine."
        )
    if summary is not None:
        _retimed_section(url, summary, page)

    info = _budget_section(url, page)
    tabs = st.tabs(TABS, key="view", bind="query-params")
    drawers = [
        _pareto_2d,
        _pareto_3d,
        _parallel,
        _history,
        _timeline,
        _hypervolume,
        _importance_tab,
        _params_tab,
        _curves,
        _trials_table,
    ]
    for tab, draw in zip(tabs, drawers, strict=True):
        if tab.open is False:
            continue
        with tab:
            draw(url, page, info)


def _retimed_section(url: str, summary: StudySummary, page: StudyPage) -> None:
    """The front timed again side by side (``tuner retime``), where it was."""
    result = stored_retiming(summary.user_attrs)
    if result is None:
        return
    off = f", {len(result.dominated)} off the front" if result.dominated else ""
    with st.expander(
        f"Front re-timed side by side on {result.where} ({result.when}){off}",
        expanded=bool(result.dominated),
    ):
        st.caption(
            f"Every kept front model timed in turns, {result.rounds} rounds; the stored "
            "figures are as each trial measured them when it ended."
        )
        st.dataframe(pd.DataFrame(retiming_rows(result)), hide_index=True)
        latency = [m for m in page.objectives if m.startswith("latency_ms")]
        others = [m for m in page.objectives if not m.startswith("latency_ms")]
        if others:
            values = {r.number: r.values for r in page.records if r.values}
            x = latency[0] if latency else "latency_ms"
            st.plotly_chart(_figures.retimed_front(result, values, x, others[0]))
        for warning, note in retiming_notes(result):
            sentence = note[0].upper() + note[1:] + "."
            if warning:
                st.warning(sentence)
            else:
                st.caption(sentence)
        newer = result.joined(page.info.front_numbers)
        if newer:
            listed = ", ".join(str(n) for n in newer)
            kind = "trial" if len(newer) == 1 else "trials"
            was = "was" if len(newer) == 1 else "were"
            st.caption(
                f"The front has changed since: {kind} {listed} {was} not on it then; "
                f"`{_trials.retime_command(page.name, url)}` times it again."
            )


def _budget_section(url: str, page: StudyPage) -> _front.FrontInfo:
    st.subheader("Deployment budget")
    st.caption(
        "Set the limits your deployment allows; leave a box empty for no limit. "
        "The best trial within them is shown below and the charts mark the front within them."
    )
    limits: dict[str, float | None] = {}
    fields = _front.budget_fields(page.info)
    for col, field in zip(st.columns(len(fields)), fields):
        value = col.number_input(
            field.label,
            value=None,
            min_value=0.0,
            step=field.step,
            format=_front.BUDGET_FORMAT,
            placeholder="no limit",
            key=f"{field.side}_{field.metric}",
            bind="query-params",
        )
        limits[field.metric] = None if value is None else float(value) / field.scale
    bounds = _front.budget_bounds(page.objectives, limits)
    info = _front.restrict(page.info, bounds)
    result = _front.best_within_budget(info)
    if result.best is None:
        if bounds:
            st.warning(
                f"No feasible trial fits this budget ({'; '.join(b.describe() for b in bounds)}). "
                "Loosen a limit."
            )
        else:
            st.info("No complete trial that meets the study's constraints yet.")
        return info
    best = result.best
    scope = "within the budget" if bounds else "overall (no budget set)"
    st.markdown(
        f"**Best trial {scope}: trial {best.number}** — "
        + " · ".join(f"{m} {show_metric(m, best.values.get(m))}" for m in page.objectives)
        + f"  \n{result.n_within} of {result.n_complete} feasible trials fit; "
        f"{len(result.front)} of them are on the front."
    )
    left, right = st.columns([1, 4])
    if left.button(f"Open trial {best.number}", key=_nav_key("open-best"), type="primary"):
        _go(study=page.name, trial=best.number)
    reason = _trials.not_exported(best)
    if reason:
        right.caption(reason)
    else:
        right.code(_trials.export_command(page.name, best.number, url), language="bash")
    return info


def _pair(page: StudyPage) -> tuple[str, str]:
    names = list(page.objectives)
    if len(names) == 1:
        return names[0], names[0]
    x_default = names[-1] if len(names) >= 3 else names[1]
    left, right = st.columns(2)
    x = left.selectbox("x axis", names, index=names.index(x_default), key="x", bind="query-params")
    y_choices = [n for n in names if n != x] or names
    y = right.selectbox("y axis", y_choices, index=0, key="y", bind="query-params")
    return x, y


def _pareto_2d(url: str, page: StudyPage, info: _front.FrontInfo) -> None:
    if len(info) == 0:
        st.info("No complete trial yet.")
        return
    x, y = _pair(page)
    rows = _front.plot_sample(info, MAX_2D_POINTS)
    fig = _figures.pareto_2d(info, page.hover, rows, x, y)
    kinds = _front.drawn_kinds(info, rows)
    shapes = (
        "Shape: how the trial was compressed ("
        + ", ".join(f"{_front.COMPRESSION_SHAPES[k].split('-')[0]} {k}" for k in kinds)
        + "). "
        if len(kinds) > 1
        else ""
    )
    note = (
        f"; showing {len(rows):,} of {len(info):,} trials (every front trial)"
        if len(rows) < len(info)
        else ""
    )
    st.caption(
        "Each point is a complete trial. Blue: the Pareto front (no other trial is better on "
        f"every objective); grey: dominated; red x: breaks a constraint{note}. "
        f"{shapes}Hover for parameters and metrics; click a point to open its trial."
    )
    _open_picked(page.name, _clicked_chart(fig, "pareto2d"))


def _open_picked(study: str, picked: Any) -> None:
    """Open the clicked point's trial: its number, first where the point carries more."""
    if picked is not None:
        _go(study=study, trial=int(picked[0] if isinstance(picked, list) else picked))


def _pareto_3d(url: str, page: StudyPage, info: _front.FrontInfo) -> None:
    if len(page.objectives) < 3:
        st.info("The 3-D view needs three objectives; this study has fewer.")
        return
    if len(info) == 0:
        st.info("No complete trial yet.")
        return
    rows = _front.plot_sample(info, MAX_3D_POINTS)
    st.caption(
        "Drag to rotate. Blue: the Pareto front; grey: dominated; red x: breaks a constraint."
    )
    st.plotly_chart(
        _figures.pareto_3d(info, page.hover, rows), key="pareto3d", config={"displaylogo": False}
    )


def _parallel(url: str, page: StudyPage, info: _front.FrontInfo) -> None:
    if len(info) == 0:
        st.info("No complete trial yet.")
        return
    rows = _front.plot_sample(info, MAX_LINES)
    first = next(iter(page.objectives))
    st.caption(
        f"Parameters (left) to objectives (right), one line per complete trial, colored by {first}. "
        "Drag along an axis to filter."
        + (f" Showing {len(rows):,} of {len(info):,} trials." if len(rows) < len(info) else "")
    )
    st.plotly_chart(_figures.parallel(info, rows), key="parallel", config={"displaylogo": False})


def _history(url: str, page: StudyPage, info: _front.FrontInfo) -> None:
    fig = _figures.histories(page.histories, page.objectives, MAX_2D_POINTS)
    st.caption("Each objective by trial number, with the best feasible value so far.")
    st.plotly_chart(fig, key="history", config={"displaylogo": False})


def _timeline(url: str, page: StudyPage, info: _front.FrontInfo) -> None:
    tl = page.timeline
    if not tl.bars:
        st.info("No trial has started yet.")
        return
    took = show_duration(tl.span_s)
    slots = f"{tl.peak} slots" if tl.peak != 1 else "that slot"
    busy = f"; the trials filled {tl.busy:.0%} of {slots} over that time" if tl.busy else ""
    st.caption(
        f"When each trial ran: {len(tl.bars):,} trials over {took}, at most "
        f"{tl.peak} at once{busy}. Gaps are workers waiting (for the store, for Ray to "
        "place them, or for a straggler at the end); the trial of a worker that died is "
        "failed and run again with the same parameters. Click the end of a bar to open its "
        "trial."
    )
    by_worker = False
    if tl.workers:
        rows = st.radio(
            "rows",
            ["trial", "worker"],
            horizontal=True,
            key="timeline-rows",
            bind="query-params",
            help="a row per worker shows when each one sat idle",
        )
        by_worker = rows == "worker"
    fig = _figures.timeline(tl, by_worker=by_worker)
    _open_picked(page.name, _clicked_chart(fig, "timeline"))


def _hypervolume(url: str, page: StudyPage, info: _front.FrontInfo) -> None:
    hv = page.hypervolume
    if not hv.numbers:
        st.info("No feasible complete trial yet.")
        return
    ref = ", ".join(f"{n} {show_metric(n, v)}" for n, v in hv.reference.items())
    ideal = ", ".join(f"{n} {show_metric(n, v)}" for n, v in hv.ideal.items())
    st.caption(
        "How much of the box between the best values seen and a fixed reference point the "
        f"feasible front dominates; it rises when a trial improves the front. Reference (a "
        f"tenth of each range past the worst feasible values): {ref}. Ideal: {ideal}."
    )
    st.plotly_chart(_figures.hypervolume(hv), key="hypervolume", config={"displaylogo": False})


def _importance_tab(url: str, page: StudyPage, info: _front.FrontInfo) -> None:
    with st.spinner("Fitting a random forest per objective..."):
        scores = _importance(url, page.name, len(info))
    if not scores:
        st.info("Parameter importance needs at least 4 complete trials with varied parameters.")
        return
    st.caption(
        "Share of each objective's variation explained by each parameter (random forest, mean "
        "decrease in impurity, as Optuna's MeanDecreaseImpurity evaluator), over complete trials."
    )
    st.plotly_chart(_figures.importance(scores), key="importance", config={"displaylogo": False})


def _params_tab(url: str, page: StudyPage, info: _front.FrontInfo) -> None:
    if len(info) == 0:
        st.info("No complete trial yet.")
        return
    rows = _front.plot_sample(info, MAX_2D_POINTS)
    slices = _params.param_slices(info, rows, page.axes)
    if not slices:
        st.info("No parameter varies among the complete trials.")
        return
    names = list(page.objectives)
    left, right = st.columns(2)
    objective = left.selectbox("objective", names, key="slice-y", bind="query-params")
    colours = _params.colourings(info, rows, page.axes)
    colour = right.selectbox("colour by", colours, key="slice-colour", bind="query-params")
    conditional = [s.param for s in slices if s.conditional]
    note = f"; showing {len(rows):,} of {len(info):,} trials" if len(rows) < len(info) else ""
    st.caption(
        f"{objective} against each parameter, one point per complete trial{note}: where a "
        "parameter's good values lie. Points of one categorical value are spread sideways. "
        + (f"{', '.join(conditional)}: only the trials that sampled it. " if conditional else "")
        + "Click a point to open its trial."
    )
    fig = _figures.param_slices(info, page.hover, slices, objective, colour, page.axes)
    _open_picked(page.name, _clicked_chart(fig, "slices"))


def _curves(url: str, page: StudyPage, info: _front.FrontInfo) -> None:
    c = page.curves
    if not c.numbers:
        st.info("No learning curves recorded yet.")
        return
    st.caption(
        f"{c.n_with_curve:,} trials recorded a curve, {c.n_stopped:,} were stopped early "
        "(orange, ending at the x)."
        + (f" Showing {len(c.numbers):,} of them." if len(c.numbers) < c.n_with_curve else "")
    )
    fig = _figures.learning_curves(c, info.front_numbers)
    st.plotly_chart(fig, key="curves", config={"displaylogo": False})


def _trials_table(url: str, page: StudyPage, info: _front.FrontInfo) -> None:
    left, mid, right = st.columns([3, 1, 1])
    states = sorted({row["state"] for row in page.table})
    chosen = left.multiselect("state", states, default=states, key="table-states")
    front_only = mid.checkbox("front only", key="table-front")
    ok_only = right.checkbox("meets constraints", key="table-ok")
    rows = _trials.filter_rows(
        page.table,
        states=chosen,
        front_only=front_only,
        feasible_only=ok_only,
        outside_budget=info.numbers[~info.in_budget] if info.bounds else (),
    )
    frame = pd.DataFrame(rows, columns=list(page.table[0]) if page.table else None)
    st.caption(
        f"{len(frame):,} trials. Click a column to sort, use the search icon to filter rows, "
        "select a row to open the trial."
        + (" Complete trials outside the budget are hidden." if info.bounds else "")
    )
    event = st.dataframe(
        frame,
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key=_nav_key("trials"),
        column_config={
            column: st.column_config.NumberColumn(format=form)
            for column, form in _trials.table_formats(page.records, page.objectives).items()
        },
    )
    selected = event.selection.rows if event is not None else []
    if selected:
        _go(study=page.name, trial=int(frame.iloc[selected[0]]["trial"]))


def trial_page(url: str, name: str, number_text: str) -> None:
    if _summary(url, name) is None:
        _unknown_study(url, name)
        return
    if st.button(f"← {name}", key=_nav_key("back")):
        _go(study=name)
    try:
        number = int(number_text)
    except ValueError:
        st.error(f"Trial {number_text!r} is not a trial number.")
        return
    page = _page(url, name)
    record = page.record(number)
    if record is None:
        st.error(f"Study {name!r} has no trial {number}.")
        return
    _trial_body(url, page, record)


def _trial_body(url: str, page: StudyPage, record: TrialRecord) -> None:
    st.title(f"Trial {record.number} of {page.name}")
    st.caption(" · ".join(_trials.trial_tags(record, page.info.front_numbers)))
    recovery = _trials.recovery_text(record)
    if recovery:
        st.text(recovery)  # layer names are not Markdown
    if record.state == "FAIL":
        st.error("This trial failed. The error it recorded:")
        st.code(record.error or "no error recorded", language="text")
    if record.state == "PRUNED":
        reason = record.metrics.get("stopped_reason")
        st.warning(
            f"Stopped early after {show_epochs(len(record.curve))}"
            + (f": {reason}" if reason else ".")
        )
    broken = _trials.broken_constraints(record, page.constraints)
    if broken:
        st.warning("Breaks: " + "; ".join(broken))
    if record.values:
        cols = st.columns(len(record.values))
        for col, (metric, value) in zip(cols, record.values.items()):
            col.metric(metric, show_metric(metric, value))
    left, right = st.columns(2)
    with left:
        st.subheader("Parameters")
        st.dataframe(
            pd.DataFrame(
                [{"parameter": k, "value": str(v)} for k, v in sorted(record.params.items())]
            ),
            hide_index=True,
        )
    with right:
        st.subheader("Metrics")
        rows = _trials.trial_metrics(record)
        st.dataframe(
            pd.DataFrame(
                [{"metric": m, "what": label, "value": value} for m, label, value in rows]
            ),
            hide_index=True,
            height=35 * (len(rows) + 1) + 3,
        )
    st.subheader("Learning curve")
    if record.curve:
        st.plotly_chart(
            _figures.trial_curve(record), key="trial-curve", config={"displaylogo": False}
        )
    else:
        st.caption("No learning curve recorded.")
    run = _trials.tensorboard_run(record)
    if run:
        st.caption(f"{run} Open the study's runs in TensorBoard with:")
        st.code(_trials.tensorboard_command(page.name, url), language="bash")
    if record.state == "COMPLETE":
        st.subheader("Export")
        reason = _trials.not_exported(record)
        if reason:
            st.caption(reason)
        else:
            summary = _summary(url, page.name)
            kept, retrain = _trials.kept_model(record, summary.user_attrs if summary else {})
            again = (
                " The command trains it again (--retrain) from its parameters." if retrain else ""
            )
            st.caption(
                f"Export this trial's model as it would ship (sparsified and quantized). "
                f"{kept}{again}"
            )
            command = _trials.export_command(page.name, record.number, url, retrain=retrain)
            st.code(command, language="bash")


# --- entry point -------------------------------------------------------------------


OUTAGE_RETRY_S = 5


def _outage_notice(exc: StoreUnavailable) -> None:
    st.warning(
        f"{exc}. The store may be restarting; this page tries again every "
        f"{OUTAGE_RETRY_S} s and comes back by itself.",
        icon="⏳",
    )


def _wait_for_store(url: str, exc: StoreUnavailable) -> None:
    """Show the outage, and reload the whole page once the store answers again."""
    _outage_notice(exc)

    @st.fragment(run_every=OUTAGE_RETRY_S)
    def probe() -> None:
        try:
            read_studies(_store(url))
        except StoreError:
            return
        st.rerun()

    probe()


def main() -> None:
    st.set_page_config(page_title="tuner", page_icon="📈", layout="wide")
    _gate()
    url = _storage_url()
    try:
        _store(url)
        _pages(url)
    except StoreUnavailable as exc:
        _wait_for_store(url, exc)
    except StoreError as exc:
        st.error(str(exc))
    except optuna.exceptions.OptunaError as exc:
        st.error(f"cannot open study store {mask_url(url)!r}: it has no Optuna tables ({exc})")


def _pages(url: str) -> None:
    params = st.query_params
    study = params.get("study")
    with st.sidebar:
        st.markdown("### tuner")
        st.caption(f"store: {mask_url(url)}")
        if st.button("All studies", key="nav-all"):
            _go()
        names = [s.name for s in _summaries(url)]
        if names:
            pick = st.selectbox(
                "Study",
                names,
                index=names.index(study) if study in names else None,
                placeholder="open a study",
                key=_nav_key("sidebar-study"),
            )
            if pick is not None and pick != study:
                _go(study=pick)
            chosen = st.multiselect(
                "Compare studies",
                names,
                default=[n for n in params.get_all("compare") if n in names],
                placeholder="two or more",
                key=_nav_key("sidebar-compare"),
            )
            if (
                len(chosen) > 1
                and chosen != params.get_all("compare")
                and st.button("Compare", key=_nav_key("compare"))
            ):
                _go_compare(chosen)
    compared = params.get_all("compare")
    if not study and len(compared) > 1:
        compare_page(url, compared)
    elif not study:
        overview(url)
    elif params.get("trial") is not None:
        trial_page(url, study, str(params.get("trial")))
    else:
        study_page(url, study)


main()
