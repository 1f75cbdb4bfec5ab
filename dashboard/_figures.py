"""The dashboard's charts: plain records in, ``plotly.graph_objects.Figure`` out.

Every function takes what ``tuner.dashboard._views`` computed and draws it; nothing
here reads the store or knows about Streamlit, so tests check the figures directly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from tuner.storage import Comparison, Retiming, TrialRecord

from ._views.front import (
    COMPRESSION_SHAPES,
    FrontInfo,
    Hover,
    axis_title,
    best_within_budget,
    compression_kinds,
    display_scale,
    drawn_kinds,
    front_2d,
    front_line,
    parallel_dimensions,
    point_groups,
)
from ._views.history import (
    Curves,
    HypervolumeHistory,
    ObjectiveHistory,
    even_sample,
    step_points,
)
from ._views.overview import NightTrend
from ._views.params import BY_FRONT, BY_NUMBER, CATEGORY, Axis, ParamSlice, colour_groups
from ._views.timeline import STATES, Timeline

FRONT = "#1f77b4"
BEST = "#d62728"
DOMINATED = "rgba(120,120,120,0.28)"
OUTSIDE = "rgba(170,170,170,0.12)"
BROKEN = "rgba(214,39,40,0.55)"
STOPPED = "#ff7f0e"
RUNNING = "#2ca02c"
SHAPE_KEY = "#555555"


def pareto_2d(info: FrontInfo, tips: Hover, rows: np.ndarray, x: str, y: str) -> go.Figure:
    """Objective ``y`` against ``x``: the drawn ``rows`` by kind, the trade-off, the best trial.

    ``rows`` are the rows of ``info`` to draw (:func:`~._views.front.plot_sample`);
    ``tips.rows[i]`` belongs to ``info.records[i]``, its first cell the trial number.
    """
    names = list(info.objectives)
    xi, yi = names.index(x), names.index(y)
    sx, sy = display_scale(x), display_scale(y)
    budget = bool(info.bounds)
    style = _point_styles(budget)
    # Shapes say how each trial was compressed, where the study tried more than one way.
    kinds = compression_kinds(info)
    shown = drawn_kinds(info, rows, kinds)
    fig = go.Figure()
    for label, idx in point_groups(info, rows).items():
        if len(idx) == 0:
            continue
        marker = dict(style[label])
        if len(shown) > 1 and "symbol" not in marker:
            marker["symbol"] = [COMPRESSION_SHAPES[k] for k in kinds[idx]]
        fig.add_trace(
            go.Scatter(
                x=info.values[idx, xi] * sx,
                y=info.values[idx, yi] * sy,
                mode="markers",
                name=f"{label} ({len(idx)})",
                marker=marker,
                customdata=tips.rows[idx],
                hovertemplate=tips.template,
            )
        )
    if len(shown) > 1:
        for kind in shown:
            # A legend entry for each shape; it draws no point.
            fig.add_trace(
                go.Scatter(
                    x=[None],
                    y=[None],
                    mode="markers",
                    name=kind,
                    marker=dict(color=SHAPE_KEY, size=9, symbol=COMPRESSION_SHAPES[kind]),
                    legendgroup="compression",
                    legendgrouptitle_text="shape: compression",
                    hoverinfo="skip",
                )
            )
    line = front_2d(info, xi, yi)
    if len(line):
        fig.add_trace(
            go.Scatter(
                x=info.values[line, xi] * sx,
                y=info.values[line, yi] * sy,
                mode="lines",
                line=dict(color=FRONT, width=1.5, shape="hv"),
                name=f"trade-off {y} vs {x}",
                hoverinfo="skip",
            )
        )
    best = best_within_budget(info).best
    if best is not None:
        fig.add_trace(
            go.Scatter(
                x=[best.values[x] * sx],
                y=[best.values[y] * sy],
                mode="markers",
                name=f"best {'within budget' if budget else 'overall'}: trial {best.number}",
                marker=dict(color=BEST, size=16, symbol="star", line=dict(width=1, color="white")),
                customdata=tips.rows[info.numbers == best.number][:1],
                hovertemplate=tips.template,
            )
        )
    fig.update_layout(
        xaxis_title=axis_title(x, info.objectives[x]),
        yaxis_title=axis_title(y, info.objectives[y]),
        height=520,
        margin=dict(l=10, r=10, t=30, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
        clickmode="event+select",
    )
    return fig


def _point_styles(budget: bool) -> dict[str, dict[str, object]]:
    """The marker of each of :func:`~._views.front.point_groups`' kinds of point."""
    return {
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


def pareto_3d(info: FrontInfo, tips: Hover, rows: np.ndarray) -> go.Figure:
    """The first three objectives in 3-D, the drawn ``rows`` by kind."""
    names = list(info.objectives)[:3]
    style = {
        "outside budget": dict(color="rgba(170,170,170,0.3)", size=3),
        "dominated": dict(color="rgba(120,120,120,0.55)", size=3),
        "breaks constraints": dict(color=BROKEN, size=3, symbol="x"),
        "Pareto front": dict(color=FRONT, size=5, opacity=0.5 if info.bounds else 1.0),
        "front within budget": dict(color=FRONT, size=6),
    }
    scales = [display_scale(n) for n in names]
    fig = go.Figure()
    for label, idx in point_groups(info, rows).items():
        if len(idx) == 0:
            continue
        fig.add_trace(
            go.Scatter3d(
                x=info.values[idx, 0] * scales[0],
                y=info.values[idx, 1] * scales[1],
                z=info.values[idx, 2] * scales[2],
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
            xaxis_title=axis_title(names[0]),
            yaxis_title=axis_title(names[1]),
            zaxis_title=axis_title(names[2]),
        ),
        legend=dict(orientation="h", y=1.02, x=0),
    )
    return fig


def parallel(info: FrontInfo, rows: np.ndarray) -> go.Figure:
    """Parallel coordinates of the drawn ``rows``: parameters, then objectives."""
    dims = parallel_dimensions([info.records[i] for i in rows], info.objectives)
    first = next(iter(info.objectives))
    color = info.values[rows, 0] * display_scale(first)
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
    return fig


def histories(
    by_objective: Mapping[str, ObjectiveHistory], objectives: Mapping[str, str], limit: int
) -> go.Figure:
    """Each objective by trial number (at most ``limit`` points each), with the best so far."""
    names = list(objectives)
    fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, vertical_spacing=0.04)
    for i, name in enumerate(names, start=1):
        h = by_objective[name]
        scale = display_scale(name)
        keep = even_sample(len(h.numbers), limit)
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
        bx, by = step_points(h.best_numbers, h.best_so_far)
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
        fig.update_yaxes(title_text=axis_title(name, objectives[name]), row=i, col=1)
    fig.update_xaxes(title_text="trial", row=len(names), col=1)
    fig.update_layout(height=260 * len(names), margin=dict(l=10, r=10, t=30, b=10))
    return fig


def hypervolume(hv: HypervolumeHistory) -> go.Figure:
    """The hypervolume after each trial, as a step line."""
    x, y = step_points(hv.numbers, hv.hypervolume)
    fig = go.Figure(go.Scatter(x=x, y=y, mode="lines", line=dict(color=FRONT, shape="hv")))
    fig.update_layout(
        xaxis_title="trial",
        yaxis_title="hypervolume (share of the box)",
        height=380,
        margin=dict(l=10, r=10, t=30, b=10),
        yaxis=dict(range=[0, 1.02]),
    )
    return fig


STATE_COLORS = {"COMPLETE": FRONT, "PRUNED": STOPPED, "FAIL": BEST, "RUNNING": RUNNING}


def timeline(tl: Timeline, by_worker: bool = False) -> go.Figure:
    """A bar per trial over wall-clock time (one trace per state; a click on a bar's end
    opens its trial), on a row per trial or per worker, and below it how many trials ran
    at once."""
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.75, 0.25], vertical_spacing=0.05
    )
    # Thousands of bars: drawn by WebGL, thinner, the trial rows closer together.
    many = len(tl.bars) > 1000
    scatter = go.Scattergl if many else go.Scatter
    width = 5 if by_worker or len(tl.bars) <= 100 else 2 if many else 3
    for state, label in STATES.items():
        bars = [b for b in tl.bars if b.state == state]
        if not bars:
            continue
        x: list[object] = []
        y: list[object] = []
        numbers: list[object] = []
        for b in bars:
            row: object = (b.worker or "unrecorded") if by_worker else b.number
            x += [b.start, b.end, None]
            y += [row, row, None]
            numbers += [b.number, b.number, None]
        fig.add_trace(
            scatter(
                x=x,
                y=y,
                mode="lines+markers",
                name=label,
                line=dict(color=STATE_COLORS[state], width=width),
                marker=dict(color=STATE_COLORS[state], size=width),
                customdata=numbers,
                hovertemplate="trial %{customdata}: %{x}<extra>" + label + "</extra>",
            ),
            row=1,
            col=1,
        )
    fig.add_trace(
        go.Scatter(
            x=tl.times,
            y=tl.in_flight,
            mode="lines",
            name="running at once",
            # filled: the moments between one trial and a worker's next stay thin slivers
            fill="tozeroy",
            fillcolor="rgba(85,85,85,0.35)",
            line=dict(color=SHAPE_KEY, shape="hv", width=0),
            showlegend=False,
            hovertemplate="%{y} running from %{x}<extra></extra>",
        ),
        row=2,
        col=1,
    )
    if by_worker:
        lanes = tl.workers + (["unrecorded"] if any(b.worker is None for b in tl.bars) else [])
        fig.update_yaxes(
            title_text="worker",
            type="category",
            categoryorder="array",
            categoryarray=lanes[::-1],
            row=1,
            col=1,
        )
    else:
        fig.update_yaxes(title_text="trial", autorange="reversed", row=1, col=1)
    fig.update_yaxes(title_text="running", rangemode="tozero", row=2, col=1)
    rows = len(tl.workers) + 1 if by_worker else len(tl.bars)
    fig.update_layout(
        height=max(420, min(900, (28 if by_worker else 8) * rows + 260)),
        margin=dict(l=10, r=10, t=50, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
    )
    return fig


def importance(scores: Mapping[str, Mapping[str, float]]) -> go.Figure:
    """One bar chart per objective: each parameter's share of its variation."""
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
    return fig


def param_slices(
    info: FrontInfo,
    tips: Hover,
    slices: Sequence[ParamSlice],
    objective: str,
    colour: str,
    axes: Mapping[str, Axis] | None = None,
) -> go.Figure:
    """``objective`` against each parameter, a panel each, three to a row.

    ``colour`` is :data:`~._views.params.BY_FRONT` (the front in blue, as on the
    Pareto chart), :data:`~._views.params.BY_NUMBER` (early trials dark, late ones
    yellow: where the search went) or a categorical parameter, one colour per value.
    Each point carries its trial's hover row; its first cell, the number, opens it.
    """
    cols = min(3, max(1, len(slices)))
    n_rows = max(1, math.ceil(len(slices) / cols))
    fig = make_subplots(
        rows=n_rows,
        cols=cols,
        shared_yaxes=True,
        subplot_titles=[
            f"{s.param} ({len(s.rows)} of {s.n_trials})" if s.conditional else s.param
            for s in slices
        ],
        horizontal_spacing=0.04,
        vertical_spacing=min(0.12, 0.3 / n_rows),
    )
    yi = list(info.objectives).index(objective)
    scale = display_scale(objective)
    palette = qualitative.Plotly
    if colour not in (BY_FRONT, BY_NUMBER) and slices:
        drawn = np.unique(np.concatenate([s.rows for s in slices]))
        groups = colour_groups(info, drawn, colour, axes)
        colour_of = {label: palette[k % len(palette)] for k, label in enumerate(groups)}
    styles = _point_styles(bool(info.bounds))
    seen: set[str] = set()
    for k, s in enumerate(slices):
        row, col = divmod(k, cols)
        at = dict(row=row + 1, col=col + 1)
        where = {int(i): j for j, i in enumerate(s.rows)}
        if colour == BY_NUMBER:
            parts = [("trial", s.rows, dict(color=info.numbers[s.rows], coloraxis="coloraxis"))]
        elif colour == BY_FRONT:
            parts = [
                (label, idx, styles[label]) for label, idx in point_groups(info, s.rows).items()
            ]
        else:
            parts = [
                (label, idx, dict(color=colour_of[label], size=7))
                for label, idx in colour_groups(info, s.rows, colour, axes).items()
            ]
        for label, idx, marker in parts:
            if len(idx) == 0:
                continue
            fig.add_trace(
                go.Scatter(
                    x=s.x[[where[int(i)] for i in idx]],
                    y=info.values[idx, yi] * scale,
                    mode="markers",
                    name=label if colour != BY_NUMBER else "trial",
                    legendgroup=label,
                    showlegend=colour != BY_NUMBER and label not in seen,
                    marker={"size": 7, **marker},
                    customdata=tips.rows[idx],
                    hovertemplate=tips.template,
                ),
                **at,
            )
            seen.add(label)
        if s.scale == CATEGORY:
            fig.update_xaxes(
                tickvals=list(range(len(s.labels))),
                ticktext=s.labels,
                range=[-0.5, len(s.labels) - 0.5],
                **at,
            )
        else:
            fig.update_xaxes(type=s.scale, **at)
        if col == 0:
            fig.update_yaxes(title_text=axis_title(objective, info.objectives[objective]), **at)
    fig.update_layout(
        height=60 + 250 * n_rows,
        margin=dict(l=10, r=10, t=60, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
        clickmode="event+select",
    )
    if colour == BY_NUMBER:
        fig.update_layout(
            coloraxis=dict(colorscale="Viridis", colorbar=dict(title="trial", thickness=12))
        )
    return fig


def learning_curves(c: Curves, front: Iterable[int]) -> go.Figure:
    """Validation accuracy by epoch: complete, stopped (ending at an x), running, front."""
    on_front = set(front)
    fig = go.Figure()
    for label, color, width, pick in (
        ("complete", DOMINATED, 1, lambda n, s: s == "COMPLETE" and n not in on_front),
        ("stopped early", STOPPED, 1.2, lambda n, s: s == "PRUNED"),
        ("running", RUNNING, 2, lambda n, s: s == "RUNNING"),
        ("Pareto front", FRONT, 2, lambda n, s: n in on_front),
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
    return fig


def trial_curve(record: TrialRecord) -> go.Figure:
    """One trial's validation accuracy by epoch (orange when it was stopped early)."""
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
    return fig


def retimed_front(
    result: Retiming, values: Mapping[int, Mapping[str, float]], x: str, y: str
) -> go.Figure:
    """Each re-timed trial's latency ``x`` as stored (hollow) and as timed now (filled),
    joined by a line, against objective ``y`` (from ``values``, each trial's objective
    values): the trials that stay on the front in blue, those that drop off in orange."""
    sx, sy = display_scale(x), display_scale(y)
    fig = go.Figure()
    for dropped in (False, True):
        trials = [
            t
            for t in result.trials
            if (t.number in result.dominated) == dropped
            and x in t.stored
            and x in t.retimed
            and y in values.get(t.number, {})
        ]
        if not trials:
            continue
        color = STOPPED if dropped else FRONT
        name = "off the front once re-timed" if dropped else "on the front, re-timed"
        xs: list[float | None] = []
        ys: list[float | None] = []
        for t in trials:
            xs += [t.stored[x] * sx, t.retimed[x] * sx, None]
            ys += [values[t.number][y] * sy] * 2 + [None]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                line=dict(color=color, width=1),
                hoverinfo="skip",
                showlegend=False,
            )
        )
        for when, symbol in (("stored", "circle-open"), ("now", "circle")):
            fig.add_trace(
                go.Scatter(
                    x=[(t.stored if when == "stored" else t.retimed)[x] * sx for t in trials],
                    y=[values[t.number][y] * sy for t in trials],
                    mode="markers",
                    name=f"{name}: {when}",
                    marker=dict(color=color, size=10, symbol=symbol, line=dict(width=2)),
                    customdata=[t.number for t in trials],
                    hovertemplate=f"trial %{{customdata}} ({when})<br>{x}: %{{x}}<br>{y}: %{{y}}"
                    "<extra></extra>",
                )
            )
    fig.update_layout(
        xaxis_title=axis_title(x),
        yaxis_title=axis_title(y),
        height=360,
        margin=dict(l=10, r=10, t=30, b=10),
        legend=dict(orientation="h", y=1.12),
    )
    return fig


def night_trend(trend: NightTrend) -> go.Figure:
    """Each night's hypervolume (against one reference point) and the best of each maximized
    objective on its front, night by night; the nights their report judged regressed in red.
    Each point carries its night's study name (``customdata``)."""
    rows = 1 + len(trend.best)
    fig = make_subplots(
        rows=rows,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=["hypervolume", *(f"best {name} on the front" for name in trend.best)],
    )
    changes = [trend.change(i) for i in range(len(trend.dates))]
    notes = [
        f"{study}<br>{finished} trials finished"
        + ("" if change is None else f"<br>{change:+.1%} on the night before")
        + ("<br>judged regressed" if regressed else "")
        + ("<br>(judged on fronts re-timed side by side)" if retimed else "")
        for study, finished, change, regressed, retimed in zip(
            trend.studies, trend.finished, changes, trend.regressed, trend.retimed
        )
    ]
    fig.add_trace(
        go.Scatter(
            x=trend.dates,
            y=trend.hypervolume,
            mode="lines+markers",
            line=dict(color=FRONT),
            name="hypervolume",
            text=notes,
            customdata=trend.studies,
            hovertemplate="%{x}: %{y:.4g}<br>%{text}<extra></extra>",
            showlegend=False,
        ),
        row=1,
        col=1,
    )
    bad = [i for i, regressed in enumerate(trend.regressed) if regressed]
    if bad:
        fig.add_trace(
            go.Scatter(
                x=[trend.dates[i] for i in bad],
                y=[trend.hypervolume[i] for i in bad],
                mode="markers",
                marker=dict(color=BEST, size=12, symbol="x"),
                name="judged regressed",
                text=[notes[i] for i in bad],
                customdata=[trend.studies[i] for i in bad],
                hovertemplate="%{x}: %{y:.4g}<br>%{text}<extra></extra>",
            ),
            row=1,
            col=1,
        )
    for row, (name, values) in enumerate(trend.best.items(), start=2):
        scale = display_scale(name)
        fig.add_trace(
            go.Scatter(
                x=trend.dates,
                y=[None if v is None else v * scale for v in values],
                mode="lines+markers",
                line=dict(color=FRONT),
                name=name,
                showlegend=False,
                customdata=trend.studies,
                hovertemplate="%{x}: %{y:.4g}<extra>" + name + "</extra>",
            ),
            row=row,
            col=1,
        )
        fig.update_yaxes(title_text=axis_title(name), row=row, col=1)
    # Every row's axis a category one: dates typed as dates would not match the shared axis.
    fig.update_xaxes(type="category")
    fig.update_xaxes(title_text="night", row=rows, col=1)
    fig.update_layout(
        height=220 * rows + 40,
        margin=dict(l=10, r=10, t=30, b=10),
        legend=dict(orientation="h", y=1.08),
    )
    return fig


# One colour per compared study (plotly's default cycle, which the other charts start with).
STUDY_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]


def compare_fronts(comparison: Comparison, x: str, y: str) -> go.Figure:
    """Each study's trials (faint) and its front on ``x`` and ``y`` (a staircase), one colour
    per study; the trials on the joint front of every objective are drawn larger."""
    objectives = comparison.objectives
    sx, sy = display_scale(x), display_scale(y)
    # Between two front points, the better y is reached at the second point's x when x is
    # minimized (across, then up or down), and at the first point's when it is maximized.
    shape = "hv" if objectives[x] == "minimize" else "vh"
    fig = go.Figure()
    for i, study in enumerate(comparison.studies):
        color = STUDY_COLORS[i % len(STUDY_COLORS)]
        fig.add_trace(
            go.Scatter(
                x=[r.values[x] * sx for r in study.trials],
                y=[r.values[y] * sy for r in study.trials],
                mode="markers",
                marker=dict(color=color, size=5, opacity=0.25),
                name=f"{study.name}: every trial",
                legendgroup=study.name,
                showlegend=False,
                customdata=[[study.name, r.number] for r in study.trials],
                hovertemplate="%{customdata[0]} trial %{customdata[1]}<br>"
                f"{x}: %{{x}}<br>{y}: %{{y}}<extra></extra>",
            )
        )
        line = front_line(study.front, x, y, objectives)
        fig.add_trace(
            go.Scatter(
                x=[r.values[x] * sx for r in line],
                y=[r.values[y] * sy for r in line],
                mode="lines+markers",
                line=dict(color=color, shape=shape),
                marker=dict(
                    color=color,
                    size=[13 if r.number in study.joint else 8 for r in line],
                ),
                name=study.name,
                legendgroup=study.name,
                customdata=[[study.name, r.number] for r in line],
                hovertemplate="%{customdata[0]} trial %{customdata[1]}<br>"
                f"{x}: %{{x}}<br>{y}: %{{y}}<extra></extra>",
            )
        )
    fig.update_layout(
        xaxis_title=axis_title(x, objectives[x]),
        yaxis_title=axis_title(y, objectives[y]),
        height=480,
        margin=dict(l=10, r=10, t=30, b=10),
        legend=dict(orientation="h", y=1.08),
    )
    return fig
