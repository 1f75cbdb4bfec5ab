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

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from tuner.dashboard import _data
from tuner.storage import (
    StoreError,
    StoreUnavailable,
    StudySummary,
    TrialRecord,
    count_states,
    mask_url,
    open_storage,
    read_best_values,
    read_records,
    read_studies,
    resolve_url,
    show_epochs,
    show_metric,
)

PASSWORD_ENV = "TUNER_DASHBOARD_PASSWORD"
REFRESH_S = 5
MAX_2D_POINTS = 3000
MAX_3D_POINTS = 1500
MAX_LINES = 1500

FRONT = "#1f77b4"
BEST = "#d62728"
DOMINATED = "rgba(120,120,120,0.28)"
OUTSIDE = "rgba(170,170,170,0.12)"
BROKEN = "rgba(214,39,40,0.55)"
STOPPED = "#ff7f0e"
TABS = [
    "Pareto front",
    "3-D",
    "Parallel coordinates",
    "History",
    "Hypervolume",
    "Importance",
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


@st.cache_data(ttl=2, show_spinner=False)
def _count(url: str, name: str) -> int:
    return sum(count_states(_store(url), name).values())


def _build_page(url: str, name: str) -> _data.StudyPage:
    summary = _summary(url, name)
    if summary is None:
        raise StoreError(f"no study named {name!r} in this store")
    records = read_records(_store(url), name)
    return _data.study_page_data(
        name, records, summary.objectives, _data.study_constraints(summary.user_attrs)
    )


# The same page object serves every viewer until it expires; it is never changed,
# so it is cached as a resource (no copy per read). Larger studies are re-read less
# often: reading 10,000 trials costs more than reading 100.
@st.cache_resource(ttl=2, max_entries=32, show_spinner=False)
def _page_small(url: str, name: str) -> _data.StudyPage:
    return _build_page(url, name)


@st.cache_resource(ttl=10, max_entries=8, show_spinner=False)
def _page_medium(url: str, name: str) -> _data.StudyPage:
    return _build_page(url, name)


@st.cache_resource(ttl=30, max_entries=4, show_spinner=False)
def _page_large(url: str, name: str) -> _data.StudyPage:
    return _build_page(url, name)


def _page(url: str, name: str) -> _data.StudyPage:
    n = _count(url, name)
    if n < 1000:
        return _page_small(url, name)
    if n < 5000:
        return _page_medium(url, name)
    return _page_large(url, name)


@st.cache_data(ttl=600, max_entries=16, show_spinner=False)
def _importance(url: str, name: str, n_complete: int) -> dict[str, dict[str, float]]:
    page = _page(url, name)
    return _data.param_importance(page.records, page.objectives)


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


def _nav_key(name: str) -> str:
    return f"{name}-{st.session_state.get('nav', 0)}"


def _selected_number(event: Any) -> int | None:
    try:
        points = event.selection.points
    except AttributeError:
        return None
    for point in points:
        custom = point.get("customdata")
        if isinstance(custom, list) and custom:
            custom = custom[0]
        if custom is not None:
            return int(custom)
    return None


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
    groups = _data.group_studies(summaries)
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


def _studies_table(
    studies: list[StudySummary], best: dict[str, dict[str, float]], *, key: str
) -> None:
    frame = pd.DataFrame(_data.overview_rows(studies, best))
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

    info = _budget_section(url, page)
    tabs = st.tabs(TABS, key="view", bind="query-params")
    drawers = [
        _pareto_2d,
        _pareto_3d,
        _parallel,
        _history,
        _hypervolume,
        _importance_tab,
        _curves,
        _trials_table,
    ]
    for tab, draw in zip(tabs, drawers):
        if tab.open is False:
            continue
        with tab:
            draw(url, page, info)


def _budget_section(url: str, page: _data.StudyPage) -> _data.FrontInfo:
    st.subheader("Deployment budget")
    st.caption(
        "Set the limits your deployment allows; leave a box empty for no limit. "
        "The best trial within them is shown below and the charts mark the front within them."
    )
    limits: dict[str, float | None] = {}
    cols = st.columns(len(page.objectives))
    for i, (col, (metric, direction)) in enumerate(zip(cols, page.objectives.items())):
        unit, scale = _data.budget_unit(metric)
        shown = page.info.values[:, i] * scale if len(page.info) else np.empty(0)
        typical = float(np.median(shown)) if len(shown) else None
        side = "min" if direction == "maximize" else "max"
        key = f"{side}_{metric}"
        value = col.number_input(
            f"{side} {metric} ({unit})" if unit else f"{side} {metric}",
            value=None,
            min_value=0.0,
            step=_data.budget_step(metric, typical),
            format=_data.BUDGET_FORMAT,
            placeholder="no limit",
            key=key,
            bind="query-params",
        )
        limits[metric] = None if value is None else float(value) / scale
    bounds = _data.budget_bounds(page.objectives, limits)
    info = _data.restrict(page.info, bounds)
    result = _data.best_within_budget(info)
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
    right.code(_data.export_command(page.name, best.number, url), language="bash")
    return info


def _pair(page: _data.StudyPage) -> tuple[str, str]:
    names = list(page.objectives)
    if len(names) == 1:
        return names[0], names[0]
    x_default = names[-1] if len(names) >= 3 else names[1]
    left, right = st.columns(2)
    x = left.selectbox("x axis", names, index=names.index(x_default), key="x", bind="query-params")
    y_choices = [n for n in names if n != x] or names
    y = right.selectbox("y axis", y_choices, index=0, key="y", bind="query-params")
    return x, y


def _pareto_2d(url: str, page: _data.StudyPage, info: _data.FrontInfo) -> None:
    if len(info) == 0:
        st.info("No complete trial yet.")
        return
    x, y = _pair(page)
    names = list(page.objectives)
    xi, yi = names.index(x), names.index(y)
    rows = _data.plot_sample(info, MAX_2D_POINTS)
    budget = bool(info.bounds)
    groups = _data.point_groups(info, rows)
    tips = page.hover
    fig = go.Figure()
    style = {
        "outside budget": dict(color=OUTSIDE, size=6),
        "dominated": dict(color=DOMINATED, size=7),
        "breaks constraints": dict(color=BROKEN, size=8, symbol="x"),
        "Pareto front": dict(
            color="rgba(31,119,180,0.35)" if budget else FRONT,
            size=10,
            line=dict(width=1, color="white"),
        ),
        "front within budget": dict(color=FRONT, size=11, line=dict(width=1, color="white")),
    }
    for label, idx in groups.items():
        if len(idx) == 0:
            continue
        fig.add_trace(
            go.Scatter(
                x=info.values[idx, xi] * _data.display_scale(x),
                y=info.values[idx, yi] * _data.display_scale(y),
                mode="markers",
                name=f"{label} ({len(idx)})",
                marker=style[label],
                customdata=tips.rows[idx],
                hovertemplate=tips.template,
            )
        )
    line = _data.front_2d(info, xi, yi)
    if len(line):
        fig.add_trace(
            go.Scatter(
                x=info.values[line, xi] * _data.display_scale(x),
                y=info.values[line, yi] * _data.display_scale(y),
                mode="lines",
                line=dict(color=FRONT, width=1.5, shape="hv"),
                name=f"trade-off {y} vs {x}",
                hoverinfo="skip",
            )
        )
    result = _data.best_within_budget(info)
    if result.best is not None:
        b = result.best
        fig.add_trace(
            go.Scatter(
                x=[b.values[x] * _data.display_scale(x)],
                y=[b.values[y] * _data.display_scale(y)],
                mode="markers",
                name=f"best {'within budget' if budget else 'overall'}: trial {b.number}",
                marker=dict(color=BEST, size=16, symbol="star", line=dict(width=1, color="white")),
                customdata=tips.rows[info.numbers == b.number][:1],
                hovertemplate=tips.template,
            )
        )
    fig.update_layout(
        xaxis_title=_data.axis_title(x, page.objectives[x]),
        yaxis_title=_data.axis_title(y, page.objectives[y]),
        height=520,
        margin=dict(l=10, r=10, t=30, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
        clickmode="event+select",
    )
    shown = len(rows)
    note = (
        f"; showing {shown:,} of {len(info):,} trials (every front trial)"
        if shown < len(info)
        else ""
    )
    st.caption(
        "Each point is a complete trial. Blue: the Pareto front (no other trial is better on "
        f"every objective); grey: dominated; red x: breaks a constraint{note}. "
        "Hover for parameters and metrics; click a point to open its trial."
    )
    event = st.plotly_chart(
        fig,
        on_select="rerun",
        selection_mode="points",
        key=_nav_key("pareto2d"),
        config={"displaylogo": False},
    )
    number = _selected_number(event)
    if number is not None:
        _go(study=page.name, trial=number)


def _pareto_3d(url: str, page: _data.StudyPage, info: _data.FrontInfo) -> None:
    names = list(page.objectives)
    if len(names) < 3:
        st.info("The 3-D view needs three objectives; this study has fewer.")
        return
    if len(info) == 0:
        st.info("No complete trial yet.")
        return
    rows = _data.plot_sample(info, MAX_3D_POINTS)
    groups = _data.point_groups(info, rows)
    tips = page.hover
    fig = go.Figure()
    style = {
        "outside budget": dict(color="rgba(170,170,170,0.3)", size=3),
        "dominated": dict(color="rgba(120,120,120,0.55)", size=3),
        "breaks constraints": dict(color=BROKEN, size=3, symbol="x"),
        "Pareto front": dict(color=FRONT, size=5, opacity=0.5 if info.bounds else 1.0),
        "front within budget": dict(color=FRONT, size=6),
    }
    x, y, z = names[:3]
    for label, idx in groups.items():
        if len(idx) == 0:
            continue
        fig.add_trace(
            go.Scatter3d(
                x=info.values[idx, 0] * _data.display_scale(x),
                y=info.values[idx, 1] * _data.display_scale(y),
                z=info.values[idx, 2] * _data.display_scale(z),
                mode="markers",
                name=f"{label} ({len(idx)})",
                marker=style[label],
                customdata=tips.rows[idx],
                hovertemplate=tips.template,
            )
        )
    fig.update_layout(
        height=600,
        margin=dict(l=0, r=0, t=30, b=0),
        scene=dict(
            xaxis_title=_data.axis_title(x),
            yaxis_title=_data.axis_title(y),
            zaxis_title=_data.axis_title(z),
        ),
        legend=dict(orientation="h", y=1.02, x=0),
    )
    st.caption(
        "Drag to rotate. Blue: the Pareto front; grey: dominated; red x: breaks a constraint."
    )
    st.plotly_chart(fig, key="pareto3d", config={"displaylogo": False})


def _parallel(url: str, page: _data.StudyPage, info: _data.FrontInfo) -> None:
    if len(info) == 0:
        st.info("No complete trial yet.")
        return
    rows = _data.plot_sample(info, MAX_LINES)
    dims = _data.parallel_dimensions([info.records[i] for i in rows], page.objectives)
    first = next(iter(page.objectives))
    color = info.values[rows, 0] * _data.display_scale(first)
    fig = go.Figure(
        go.Parcoords(
            line=dict(
                color=color, colorscale="Viridis", showscale=True, colorbar=dict(title=first)
            ),
            dimensions=[
                dict(
                    label=d.label,
                    values=d.values,
                    **({"tickvals": d.tickvals, "ticktext": d.ticktext} if d.ticktext else {}),
                )
                for d in dims
            ],
        )
    )
    fig.update_layout(height=480, margin=dict(l=60, r=60, t=60, b=20))
    st.caption(
        f"Parameters (left) to objectives (right), one line per complete trial, colored by {first}. "
        "Drag along an axis to filter."
        + (f" Showing {len(rows):,} of {len(info):,} trials." if len(rows) < len(info) else "")
    )
    st.plotly_chart(fig, key="parallel", config={"displaylogo": False})


def _history(url: str, page: _data.StudyPage, info: _data.FrontInfo) -> None:
    names = list(page.objectives)
    fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, vertical_spacing=0.04)
    for i, name in enumerate(names, start=1):
        h = page.histories[name]
        scale = _data.display_scale(name)
        keep = _data.even_sample(len(h.numbers), MAX_2D_POINTS)
        nums = np.asarray(h.numbers)[keep]
        vals = np.asarray(h.values)[keep] * scale
        ok = np.asarray(h.feasible, dtype=bool)[keep] if len(keep) else np.array([], dtype=bool)
        fig.add_trace(
            go.Scatter(
                x=nums[ok],
                y=vals[ok],
                mode="markers",
                marker=dict(color=DOMINATED, size=5),
                name="trial",
                legendgroup="trial",
                showlegend=i == 1,
                hovertemplate="trial %{x}: %{y}<extra></extra>",
            ),
            row=i,
            col=1,
        )
        if (~ok).any():
            fig.add_trace(
                go.Scatter(
                    x=nums[~ok],
                    y=vals[~ok],
                    mode="markers",
                    marker=dict(color=BROKEN, size=5, symbol="x"),
                    name="breaks constraints",
                    legendgroup="broken",
                    showlegend=i == 1,
                    hovertemplate="trial %{x}: %{y}<extra></extra>",
                ),
                row=i,
                col=1,
            )
        bx, by = _data.step_points(h.best_numbers, h.best_so_far)
        fig.add_trace(
            go.Scatter(
                x=bx,
                y=np.asarray(by) * scale,
                mode="lines",
                line=dict(color=FRONT, shape="hv"),
                name="best so far",
                legendgroup="best",
                showlegend=i == 1,
            ),
            row=i,
            col=1,
        )
        fig.update_yaxes(title_text=_data.axis_title(name, page.objectives[name]), row=i, col=1)
    fig.update_xaxes(title_text="trial", row=len(names), col=1)
    fig.update_layout(height=260 * len(names), margin=dict(l=10, r=10, t=30, b=10))
    st.caption("Each objective by trial number, with the best feasible value so far.")
    st.plotly_chart(fig, key="history", config={"displaylogo": False})


def _hypervolume(url: str, page: _data.StudyPage, info: _data.FrontInfo) -> None:
    hv = page.hypervolume
    if not hv.numbers:
        st.info("No feasible complete trial yet.")
        return
    x, y = _data.step_points(hv.numbers, hv.hypervolume)
    fig = go.Figure(go.Scatter(x=x, y=y, mode="lines", line=dict(color=FRONT, shape="hv")))
    fig.update_layout(
        xaxis_title="trial",
        yaxis_title="hypervolume (share of the box)",
        height=380,
        margin=dict(l=10, r=10, t=30, b=10),
        yaxis=dict(range=[0, 1.02]),
    )
    ref = ", ".join(f"{n} {show_metric(n, v)}" for n, v in hv.reference.items())
    ideal = ", ".join(f"{n} {show_metric(n, v)}" for n, v in hv.ideal.items())
    st.caption(
        "How much of the box between the best values seen and a fixed reference point the "
        f"feasible front dominates; it rises when a trial improves the front. Reference (worst "
        f"feasible values): {ref}. Ideal: {ideal}."
    )
    st.plotly_chart(fig, key="hypervolume", config={"displaylogo": False})


def _importance_tab(url: str, page: _data.StudyPage, info: _data.FrontInfo) -> None:
    with st.spinner("Fitting a random forest per objective..."):
        scores = _importance(url, page.name, len(info))
    if not scores:
        st.info("Parameter importance needs at least 4 complete trials with varied parameters.")
        return
    fig = make_subplots(rows=1, cols=len(scores), subplot_titles=list(scores), shared_yaxes=True)
    params = list(next(iter(scores.values())))
    for i, (objective, by_param) in enumerate(scores.items(), start=1):
        fig.add_trace(
            go.Bar(
                x=[by_param.get(p, 0.0) for p in params][::-1],
                y=params[::-1],
                orientation="h",
                marker_color=FRONT,
                showlegend=False,
                hovertemplate="%{y}: %{x:.2f}<extra>" + objective + "</extra>",
            ),
            row=1,
            col=i,
        )
    fig.update_layout(height=max(300, 40 * len(params)), margin=dict(l=10, r=10, t=40, b=10))
    st.caption(
        "Share of each objective's variation explained by each parameter (random forest, mean "
        "decrease in impurity, as Optuna's MeanDecreaseImpurity evaluator), over complete trials."
    )
    st.plotly_chart(fig, key="importance", config={"displaylogo": False})


def _curves(url: str, page: _data.StudyPage, info: _data.FrontInfo) -> None:
    c = page.curves
    if not c.numbers:
        st.info("No learning curves recorded yet.")
        return
    front = set(info.front_numbers)
    fig = go.Figure()
    for label, color, width, pick in (
        ("complete", DOMINATED, 1, lambda n, s: s == "COMPLETE" and n not in front),
        ("stopped early", STOPPED, 1.2, lambda n, s: s == "PRUNED"),
        ("running", "#2ca02c", 2, lambda n, s: s == "RUNNING"),
        ("Pareto front", FRONT, 2, lambda n, s: n in front),
    ):
        xs: list[float | None] = []
        ys: list[float | None] = []
        texts: list[str | None] = []
        ends_x, ends_y = [], []
        for number, state, curve in zip(c.numbers, c.states, c.curves):
            if not pick(number, state):
                continue
            xs += list(range(1, len(curve) + 1)) + [None]
            ys += list(curve) + [None]
            texts += [f"trial {number}"] * len(curve) + [None]
            ends_x.append(len(curve))
            ends_y.append(curve[-1])
        if not ends_x:
            continue
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                line=dict(color=color, width=width),
                name=label,
                text=texts,
                hovertemplate="%{text} epoch %{x}: %{y:.3f}<extra></extra>",
                legendgroup=label,
            )
        )
        if label == "stopped early":
            fig.add_trace(
                go.Scatter(
                    x=ends_x,
                    y=ends_y,
                    mode="markers",
                    marker=dict(color=STOPPED, symbol="x"),
                    name="stopped here",
                    legendgroup=label,
                    hoverinfo="skip",
                )
            )
    fig.update_layout(
        xaxis_title="epoch",
        yaxis_title="validation accuracy",
        height=440,
        margin=dict(l=10, r=10, t=30, b=10),
    )
    st.caption(
        f"{c.n_with_curve:,} trials recorded a curve, {c.n_stopped:,} were stopped early "
        "(orange, ending at the x)."
        + (f" Showing {len(c.numbers):,} of them." if len(c.numbers) < c.n_with_curve else "")
    )
    st.plotly_chart(fig, key="curves", config={"displaylogo": False})


def _trials_table(url: str, page: _data.StudyPage, info: _data.FrontInfo) -> None:
    frame = pd.DataFrame(page.table)
    left, mid, right = st.columns([3, 1, 1])
    states = sorted(frame["state"].unique()) if len(frame) else []
    chosen = left.multiselect("state", states, default=states, key="table-states")
    front_only = mid.checkbox("front only", key="table-front")
    ok_only = right.checkbox("meets constraints", key="table-ok")
    if len(frame):
        keep = frame["state"].isin(chosen)
        if front_only:
            keep &= frame["front"]
        if ok_only:
            keep &= frame["meets constraints"].fillna(False).astype(bool)
        if info.bounds:
            inside = set(int(n) for n in info.numbers[info.in_budget])
            keep &= ~frame["trial"].isin(set(int(n) for n in info.numbers)) | frame["trial"].isin(
                inside
            )
        frame = frame[keep]
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
            for column, form in _data.table_formats(page.records, page.objectives).items()
        },
    )
    rows = event.selection.rows if event is not None else []
    if rows:
        _go(study=page.name, trial=int(frame.iloc[rows[0]]["trial"]))


# --- the trial page ----------------------------------------------------------------


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


def _trial_body(url: str, page: _data.StudyPage, record: TrialRecord) -> None:
    on_front = record.number in set(page.info.front_numbers)
    st.title(f"Trial {record.number} of {page.name}")
    status = {
        "COMPLETE": "complete",
        "PRUNED": "stopped early",
        "FAIL": "failed",
        "RUNNING": "running",
        "WAITING": "waiting",
    }.get(record.state, record.state.lower())
    tags = [status]
    if record.state == "COMPLETE":
        tags.append("on the Pareto front" if on_front else "dominated")
        tags.append("meets the constraints" if record.feasible else "breaks a constraint")
    st.caption(" · ".join(tags))
    if record.state == "FAIL":
        st.error("This trial failed. The error it recorded:")
        st.code(record.error or "no error recorded", language="text")
    if record.state == "PRUNED":
        reason = record.metrics.get("stopped_reason")
        st.warning(
            f"Stopped early after {show_epochs(len(record.curve))}"
            + (f": {reason}" if reason else ".")
        )
    violations = record.metrics.get("constraint_violations")
    if violations and not record.feasible:
        broken = [
            f"{b.describe()} (off by {show_metric(b.metric, v)})"
            for b, v in zip(page.constraints, violations)
            if v > 0
        ]
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
        rows = _data.trial_metrics(record)
        st.dataframe(
            pd.DataFrame(
                [{"metric": m, "what": label, "value": value} for m, label, value in rows]
            ),
            hide_index=True,
            height=35 * (len(rows) + 1) + 3,
        )
    st.subheader("Learning curve")
    if record.curve:
        fig = go.Figure(
            go.Scatter(
                x=list(range(1, len(record.curve) + 1)),
                y=record.curve,
                mode="lines+markers",
                line=dict(color=STOPPED if record.state == "PRUNED" else FRONT),
            )
        )
        fig.update_layout(
            xaxis_title="epoch",
            yaxis_title="validation accuracy",
            height=320,
            margin=dict(l=10, r=10, t=20, b=10),
        )
        st.plotly_chart(fig, key="trial-curve", config={"displaylogo": False})
    else:
        st.caption("No learning curve recorded.")
    if record.state == "COMPLETE":
        st.subheader("Export")
        st.caption("Export this trial's model as it would ship (sparsified and quantized):")
        st.code(_data.export_command(page.name, record.number, url), language="bash")


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
    if not study:
        overview(url)
    elif params.get("trial") is not None:
        trial_page(url, study, str(params.get("trial")))
    else:
        study_page(url, study)


main()
