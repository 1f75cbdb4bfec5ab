"""The morning report: tonight's Pareto front against last night's.

The comparison is computed first as plain data (:class:`NightReport`), then written
as Markdown and HTML (with a plotly figure), and optionally posted as JSON.
"""

from __future__ import annotations

import dataclasses
import html
import json
import statistics
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._spec import StudySpec
from .storage import (
    Bound,
    Retiming,
    TrialRecord,
    metric_value,
    mixed_machines,
    pareto_front,
    rank,
    reference_ms,
    show_metric,
)
from .storage._bounds import default_target, within
from .storage._nights import night_hypervolume


@dataclass(frozen=True)
class ConstraintCheck:
    """Tonight and last night against one bound: how many trials meet it, the best accuracy.

    ``tonight_trial`` and ``last_trial`` are the trials with that accuracy, the ones
    ``tuner pick`` takes within the bound.
    """

    text: str
    tonight_meeting: int
    tonight_best: float | None
    last_meeting: int | None
    last_best: float | None
    tonight_trial: int | None = None
    last_trial: int | None = None

    @property
    def regressed(self) -> bool:
        return self.tonight_meeting == 0 and bool(self.last_meeting)


@dataclass(frozen=True)
class NightReport:
    """Everything the morning report says, as plain data."""

    spec_name: str
    date: str
    study_name: str
    previous_study: str | None
    previous_date: str | None
    objectives: dict[str, str]
    accuracy_metric: str
    reference_point: dict[str, float]
    hypervolume: float
    previous_hypervolume: float | None
    threshold: float
    front: list[TrialRecord]
    previous_front: list[TrialRecord]
    new_points: list[TrialRecord]
    lost_points: list[TrialRecord]
    constraints: list[ConstraintCheck]
    counts: dict[str, int]
    warm_start_trials: int
    reasons: list[str] = field(default_factory=list)
    all_trials: list[TrialRecord] = field(default_factory=list)
    drift: dict[str, float] = field(default_factory=dict)
    drift_settings: int = 0
    machines: str | None = None
    machine_speed: float | None = None
    retimed: str | None = None
    stored_hypervolume: float | None = None
    previous_stored_hypervolume: float | None = None

    @property
    def regressed(self) -> bool:
        return bool(self.reasons)

    @property
    def hypervolume_change(self) -> float | None:
        """Relative change against last night (+0.05 is 5 % more), None without a last night."""
        if not self.previous_hypervolume:
            return None
        return (self.hypervolume - self.previous_hypervolume) / self.previous_hypervolume

    @property
    def verdict(self) -> str:
        if self.regressed:
            return "REGRESSED"
        if self.previous_study is None:
            return "first night"
        return "as good as last night"

    def to_json(self) -> dict[str, Any]:
        """What the webhook receives."""

        def point(r: TrialRecord) -> dict[str, Any]:
            return {"number": r.number, "params": r.params, "values": r.values}

        return {
            "spec": self.spec_name,
            "date": self.date,
            "study": self.study_name,
            "previous_study": self.previous_study,
            "verdict": self.verdict,
            "regressed": self.regressed,
            "reasons": list(self.reasons),
            "hypervolume": self.hypervolume,
            "previous_hypervolume": self.previous_hypervolume,
            "hypervolume_change": self.hypervolume_change,
            "regression_threshold": self.threshold,
            "reference_point": self.reference_point,
            "counts": self.counts,
            "warm_start_trials": self.warm_start_trials,
            "same_settings_ratio": self.drift,
            "machines": self.machines,
            "machine_speed_ratio": self.machine_speed,
            "retimed": self.retimed,
            "stored_hypervolume": self.stored_hypervolume,
            "previous_stored_hypervolume": self.previous_stored_hypervolume,
            "front": [point(r) for r in self.front],
            "new_points": [point(r) for r in self.new_points],
            "lost_points": [point(r) for r in self.lost_points],
            "constraints": [
                {
                    "constraint": c.text,
                    "trials_meeting": c.tonight_meeting,
                    f"best_{self.accuracy_metric}": c.tonight_best,
                    "last_trials_meeting": c.last_meeting,
                    f"last_best_{self.accuracy_metric}": c.last_best,
                }
                for c in self.constraints
            ],
        }


def accuracy_metric(objectives: Mapping[str, str]) -> str:
    """The objective a person reads as 'how good': what ``tuner pick`` ranks by."""
    return default_target(objectives)[0]


def resolve_reference_point(
    spec: StudySpec,
    records: Sequence[TrialRecord],
    previous: Mapping[str, float] | None,
) -> dict[str, float]:
    """The hypervolume reference: the spec's, else last night's, else derived once.

    A maximized objective defaults to 0; a minimized one to twice the worst value
    seen, recorded with the night so later nights keep the same point.
    """
    out: dict[str, float] = {}
    for metric, direction in spec.objectives.items():
        if metric in spec.nightly.reference_point:
            out[metric] = float(spec.nightly.reference_point[metric])
        elif previous and metric in previous:
            out[metric] = float(previous[metric])
        elif direction == "maximize":
            out[metric] = 0.0
        else:
            seen = [
                v for r in records if r.state == "COMPLETE" for v in [metric_value(r, metric)] if v
            ]
            out[metric] = 2.0 * max(seen) if seen else 1.0
    return out


def _key(r: TrialRecord) -> str:
    return json.dumps(r.params, sort_keys=True, default=str)


def compare_nights(
    spec: StudySpec,
    *,
    date: str,
    study_name: str,
    records: Sequence[TrialRecord],
    previous_study: str | None = None,
    previous_date: str | None = None,
    previous_records: Sequence[TrialRecord] = (),
    reference_point: Mapping[str, float],
    warm_start_trials: int = 0,
    retimed: tuple[Retiming, Retiming] | None = None,
) -> NightReport:
    """Compare tonight's trials with last night's and decide whether the night regressed.

    A regression is a hypervolume drop of more than ``nightly.regression_threshold``
    (relative), or a constraint of the spec that last night's trials met and none of
    tonight's does. With ``retimed`` (tonight's and last night's fronts timed again side
    by side, see :func:`tuner._retime.retime_fronts`) each night is judged on its stored
    front alone, with the re-timed latencies: the other trials hold latencies timed at
    another moment, and set beside re-timed ones they would not compare. The hypervolumes
    as stored are reported beside.
    """
    objectives = dict(spec.objectives)
    reference = dict(reference_point)
    stored_hv = previous_stored_hv = None
    note = None
    counted = records
    if retimed is not None:
        stored_front = pareto_front(records, objectives)
        previous_stored = pareto_front(previous_records, objectives)
        stored_hv = night_hypervolume(stored_front, objectives, reference)
        previous_stored_hv = night_hypervolume(previous_stored, objectives, reference)
        records = with_retimed(stored_front, retimed[0])
        previous_records = with_retimed(previous_stored, retimed[1])
        note = _retimed_note(retimed)
    acc = accuracy_metric(objectives)
    front = pareto_front(records, objectives)
    previous_front = pareto_front(previous_records, objectives) if previous_study else []
    hv = night_hypervolume(front, objectives, reference)
    prev_hv = night_hypervolume(previous_front, objectives, reference) if previous_study else None
    last_keys = {_key(r) for r in previous_front}
    tonight_keys = {_key(r) for r in front}
    new_points = [r for r in front if _key(r) not in last_keys] if previous_study else []
    lost_points = [r for r in previous_front if _key(r) not in tonight_keys]
    drift, drift_settings = _drift(records, previous_front, objectives)
    # Latencies from different kinds of machine do not compare: a night on another machine
    # can move the front's latencies with no change in the models.
    # Re-timed fronts were timed on one machine at one moment: neither applies to them.
    timed = any(m.startswith("latency") for m in objectives) and retimed is None
    machine_speed = (
        _yardstick_ratio(records, previous_records) if previous_study and timed else None
    )
    machines = (
        mixed_machines(r.metrics for r in [*records, *previous_records] if r.state == "COMPLETE")
        if timed
        else None
    )

    def best(
        pool: Sequence[TrialRecord], bound: Sequence[Bound]
    ) -> tuple[int, float | None, int | None]:
        # Trials breaking another of the spec's constraints count for this one alone.
        meeting = rank(
            (r for r in pool if r.state == "COMPLETE" and within(r, bound)),
            objectives,
            target=acc,
            direction=objectives[acc],
        )
        if not meeting:
            return 0, None, None
        return len(meeting), metric_value(meeting[0], acc), meeting[0].number

    checks = []
    bounds: list[tuple[str, list[Bound]]] = [(c.describe(), [c]) for c in spec.constraints]
    if len(spec.constraints) > 1:
        bounds.append(("all constraints together", list(spec.constraints)))
    for text, bound in bounds:
        n, b, trial = best(records, bound)
        ln, lb, last_trial = best(previous_records, bound) if previous_study else (None, None, None)
        checks.append(ConstraintCheck(text, n, b, ln, lb, trial, last_trial))

    reasons = []
    if prev_hv and hv < prev_hv * (1 - spec.nightly.regression_threshold):
        reasons.append(
            f"hypervolume fell {100 * (prev_hv - hv) / prev_hv:.1f}% "
            f"({prev_hv:.4g} -> {hv:.4g}), more than the "
            f"{100 * spec.nightly.regression_threshold:g}% allowed"
        )
    for c in checks:
        if c.regressed:
            reasons.append(f"no trial meets {c.text} any more (last night {c.last_meeting} did)")
    counts: dict[str, int] = {}
    for r in counted:
        counts[r.state] = counts.get(r.state, 0) + 1
    return NightReport(
        spec_name=spec.name,
        date=date,
        study_name=study_name,
        previous_study=previous_study,
        previous_date=previous_date,
        objectives=objectives,
        accuracy_metric=acc,
        reference_point=reference,
        hypervolume=hv,
        previous_hypervolume=prev_hv,
        threshold=spec.nightly.regression_threshold,
        front=front,
        previous_front=previous_front,
        new_points=new_points,
        lost_points=lost_points,
        constraints=checks,
        counts=counts,
        warm_start_trials=warm_start_trials,
        reasons=reasons,
        all_trials=list(counted),
        drift=drift,
        drift_settings=drift_settings,
        machines=machines,
        machine_speed=machine_speed,
        retimed=note,
        stored_hypervolume=stored_hv,
        previous_stored_hypervolume=previous_stored_hv,
    )


def with_retimed(records: Sequence[TrialRecord], retiming: Retiming) -> list[TrialRecord]:
    """``records`` with the re-timed trials' latencies (objective values and metrics)
    replaced by their re-timed ones; the other trials as stored."""
    by_number = {t.number: t.retimed for t in retiming.trials}
    out = []
    for r in records:
        retimed = by_number.get(r.number)
        if retimed is None:
            out.append(r)
            continue
        values = {m: retimed.get(m, v) for m, v in r.values.items()}
        out.append(dataclasses.replace(r, values=values, metrics={**r.metrics, **retimed}))
    return out


def _retimed_note(retimed: tuple[Retiming, Retiming]) -> str:
    tonight, last = retimed
    left = len(tonight.skipped) + len(last.skipped)
    kept = (
        f"; {left} front trial(s) whose model could not be timed keep their stored figures"
        if left
        else ""
    )
    return (
        f"Both nights' fronts were timed again side by side on {tonight.where} "
        f"({tonight.when}, {tonight.rounds} rounds, {len(tonight.trials)} models tonight and "
        f"{len(last.trials)} last night): each night is judged on its front with those "
        f"latencies (the fronts, hypervolumes, constraints and latencies below){kept}."
    )


def _drift(
    records: Sequence[TrialRecord],
    previous_front: Sequence[TrialRecord],
    objectives: Mapping[str, str],
) -> tuple[dict[str, float], int]:
    """Median tonight/last-night ratio per objective over settings run on both nights.

    The same settings measured differently point at the machine or the measurement
    (a busy host doubles latency), not at the model.
    """
    last = {_key(r): r for r in previous_front}
    pairs = []
    seen = set()
    for r in records:
        key = _key(r)
        if r.state == "COMPLETE" and key in last and key not in seen:
            seen.add(key)
            pairs.append((r, last[key]))
    out = {}
    for metric in objectives:
        ratios = sorted(
            r.values[metric] / old.values[metric]
            for r, old in pairs
            if metric in r.values and old.values.get(metric)
        )
        if ratios:
            mid = len(ratios) // 2
            out[metric] = ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2
    return out, len(pairs)


def _yardstick_ratio(
    records: Sequence[TrialRecord], previous_records: Sequence[TrialRecord]
) -> float | None:
    """Tonight's median over last night's of the fixed computation every trial times beside
    its latency (``latency_reference_ms``): above 1, the machine ran slower tonight."""

    def median(pool: Sequence[TrialRecord]) -> float | None:
        values = [reference_ms(r.metrics) for r in pool if r.state == "COMPLETE"]
        timed = [v for v in values if v is not None]
        return statistics.median(timed) if timed else None

    tonight, last = median(records), median(previous_records)
    return tonight / last if tonight and last else None


# --- rendering -----------------------------------------------------------------------


def _params(r: TrialRecord) -> str:
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(r.params.items())
    )


def _sections(report: NightReport) -> list[tuple[str, list[str], list[list[str]], str]]:
    """(title, header, rows, note) for each table of the report."""
    objectives = report.objectives
    last = f"last night ({report.previous_date})" if report.previous_date else "last night"
    change = report.hypervolume_change
    summary = [
        [
            "hypervolume" + (", re-timed side by side" if report.retimed else ""),
            f"{report.hypervolume:.4g}",
            "-" if report.previous_hypervolume is None else f"{report.previous_hypervolume:.4g}",
            "-" if change is None else f"{100 * change:+.1f}%",
        ],
        [
            "Pareto points",
            str(len(report.front)),
            "-" if report.previous_study is None else str(len(report.previous_front)),
            "-"
            if report.previous_study is None
            else f"{len(report.new_points)} new, {len(report.lost_points)} lost",
        ],
    ]
    if report.retimed and report.stored_hypervolume is not None:
        stored, last_stored = report.stored_hypervolume, report.previous_stored_hypervolume
        summary.insert(
            1,
            [
                "hypervolume as each trial timed itself",
                f"{stored:.4g}",
                "-" if last_stored is None else f"{last_stored:.4g}",
                f"{100 * (stored - last_stored) / last_stored:+.1f}%" if last_stored else "-",
            ],
        )
    reference = ", ".join(f"{m} {show_metric(m, v)}" for m, v in report.reference_point.items())
    out = [
        (
            "Tonight against last night",
            ["", "tonight", last, "change"],
            summary,
            f"Hypervolume of the Pareto front up to the reference point ({reference}); "
            f"a drop of more than {100 * report.threshold:g}% is a regression.",
        )
    ]
    if report.constraints:
        acc = report.accuracy_metric
        out.append(
            (
                f"Best {acc} within each constraint",
                ["constraint", "tonight", "trials meeting it", last, "trials meeting it"],
                [
                    [
                        c.text,
                        show_metric(acc, c.tonight_best),
                        str(c.tonight_meeting) + (" (REGRESSED)" if c.regressed else ""),
                        show_metric(acc, c.last_best),
                        "-" if c.last_meeting is None else str(c.last_meeting),
                    ]
                    for c in report.constraints
                ],
                "",
            )
        )
    if report.drift or report.machine_speed:
        yardstick = [] if report.machine_speed is None else [f"x{report.machine_speed:.2f}"]
        notes = []
        if report.drift:
            notes.append(
                "The same settings measured differently point at the machine or the "
                "measurement (a busy host slows latency), not at the model."
            )
        if yardstick:
            notes.append(
                "The yardstick is one fixed computation every trial times beside its latency: "
                "where it moved as the latencies did, the machine did."
            )
        out.append(
            (
                f"Same settings, both nights ({report.drift_settings} of last night's front re-run)"
                if report.drift
                else "The machine, both nights",
                ["", *report.drift, *(["machine (yardstick)"] if yardstick else [])],
                [
                    [
                        "tonight / last night (median)",
                        *(f"x{v:.2f}" for v in report.drift.values()),
                        *yardstick,
                    ]
                ],
                " ".join(notes),
            )
        )
    new = {id(r) for r in report.new_points}
    header = ["trial", *objectives, "" if report.previous_study is None else "since", "params"]
    out.append(
        (
            f"Tonight's Pareto front ({len(report.front)} points)",
            header,
            [
                [
                    str(r.number),
                    *(show_metric(m, r.values.get(m)) for m in objectives),
                    "" if report.previous_study is None else ("new" if id(r) in new else "kept"),
                    _params(r),
                ]
                for r in report.front
            ],
            "" if report.front else "No complete trial meets the constraints.",
        )
    )
    if report.lost_points:
        out.append(
            (
                f"Lost from last night's front ({len(report.lost_points)} points)",
                ["trial", *objectives, "params"],
                [
                    [
                        str(r.number),
                        *(show_metric(m, r.values.get(m)) for m in objectives),
                        _params(r),
                    ]
                    for r in report.lost_points
                ],
                "Last night's values; tonight these settings were re-run first and are now "
                "dominated (or measured worse).",
            )
        )
    return out


def _headline(report: NightReport) -> tuple[str, list[str]]:
    counts = report.counts
    finished = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
    lines = [
        f"Study `{report.study_name}`: {finished} finished trials "
        f"({counts.get('PRUNED', 0)} stopped early), {counts.get('FAIL', 0)} failed."
    ]
    if report.previous_study:
        lines.append(
            f"Warm-started from `{report.previous_study}`: its {report.warm_start_trials} "
            "Pareto points ran first."
        )
    else:
        lines.append("No earlier night of this spec in the store: nothing to compare with.")
    if report.retimed:
        lines.append(report.retimed)
    if report.machines:
        lines.append(
            f"Tonight's and last night's trials: {report.machines}; a change in latency may "
            "be the machine's, not the model's."
        )
    title = f"Nightly {report.spec_name}, {report.date}: {report.verdict}"
    return title, lines


def render_markdown(report: NightReport, plot: str | None, html_name: str) -> str:
    title, lines = _headline(report)
    out = [f"# {title}", ""]
    if report.reasons:
        out += ["**Regression:**", ""] + [f"- {r}" for r in report.reasons] + [""]
    out += [*lines, ""]
    if plot:
        out += [f"![fronts]({plot})", ""]
    out += [f"Interactive plot: [{html_name}]({html_name})", ""]
    for title_, header, rows, note in _sections(report):
        out += [f"## {title_}", ""]
        if rows:
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "|".join(" --- " for _ in header) + "|")
            for row in rows:
                out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
            out.append("")
        if note:
            out += [note, ""]
    return "\n".join(out)


def figure(report: NightReport) -> Any:
    """Accuracy against each other objective: tonight's front, last night's, all trials."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    acc = report.accuracy_metric
    others = [m for m in report.objectives if m != acc] or [acc]
    fig = make_subplots(rows=1, cols=len(others), horizontal_spacing=0.08)
    rest = [r for r in report.all_trials if r.state == "COMPLETE" and r.values]
    series = [
        ("all trials tonight", rest, dict(color="#c7c7c7", size=6), 0.8),
        (
            f"last night's front ({report.previous_date})",
            report.previous_front,
            dict(color="#ff7f0e", size=11, symbol="diamond-open", line=dict(width=2)),
            1.0,
        ),
        (
            "tonight's front",
            report.front,
            dict(color="#1f77b4", size=10, line=dict(color="white", width=1)),
            1.0,
        ),
    ]
    for col, metric in enumerate(others, start=1):
        for name, pool, marker, opacity in series:
            if not pool:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[r.values.get(metric) for r in pool],
                    y=[r.values.get(acc) for r in pool],
                    mode="markers",
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    marker=marker,
                    opacity=opacity,
                    text=[f"trial {r.number}<br>{_params(r)}" for r in pool],
                    hovertemplate="%{text}<br>%{x}, %{y}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(
            title_text=metric + (" (log)" if metric == "size_bytes" else ""),
            type="log" if metric == "size_bytes" else "linear",
            row=1,
            col=col,
        )
        fig.update_yaxes(
            title_text=acc, tickformat=".0%" if "accuracy" in acc else None, row=1, col=col
        )
    fig.update_layout(
        title=f"{report.spec_name}: {report.date} against {report.previous_date or 'no earlier night'}",
        template="plotly_white",
        width=520 * len(others),
        height=460,
        legend=dict(orientation="h", y=-0.2),
    )
    return fig


def render_html(report: NightReport, fig: Any) -> str:
    title, lines = _headline(report)
    esc = html.escape
    color = "#b00020" if report.regressed else "#1b7f3b"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;"
        "padding:4px 8px;text-align:right}td:last-child,th:last-child{text-align:left}"
        "th{background:#f5f5f5}.note{color:#555}</style></head><body>",
        f"<h1>Nightly {esc(report.spec_name)}, {esc(report.date)}: "
        f"<span style='color:{color}'>{esc(report.verdict)}</span></h1>",
    ]
    if report.reasons:
        parts.append(
            "<ul>" + "".join(f"<li><b>{esc(r)}</b></li>" for r in report.reasons) + "</ul>"
        )
    parts += [f"<p>{esc(line).replace('`', '')}</p>" for line in lines]
    parts.append(fig.to_html(full_html=False, include_plotlyjs=True))
    for title_, header, rows, note in _sections(report):
        parts.append(f"<h2>{esc(title_)}</h2>")
        if rows:
            parts.append(
                "<table><tr>"
                + "".join(f"<th>{esc(h)}</th>" for h in header)
                + "</tr>"
                + "".join(
                    "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows
                )
                + "</table>"
            )
        if note:
            parts.append(f"<p class='note'>{esc(note)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(report: NightReport, report_dir: str | Path) -> dict[str, Path]:
    """Write ``<study>.md`` and ``<study>.html`` (and ``<study>.png`` when kaleido can draw it)."""
    folder = Path(report_dir).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    fig = figure(report)
    files = {"html": folder / f"{report.study_name}.html", "md": folder / f"{report.study_name}.md"}
    png: str | None = None
    try:
        import kaleido  # noqa: F401

        fig.write_image(str(folder / f"{report.study_name}.png"), scale=1)
        files["png"] = folder / f"{report.study_name}.png"
        png = files["png"].name
    except Exception:
        png = None  # no static image without kaleido (and Chrome): the Markdown links the HTML
    files["html"].write_text(render_html(report, fig))
    files["md"].write_text(render_markdown(report, png, files["html"].name))
    return files


def post_webhook(report: NightReport, url: str, *, timeout_s: float = 10.0) -> str | None:
    """POST the report as JSON to ``url``; return why it failed, or None."""
    body = json.dumps(report.to_json(), default=str).encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            if response.status >= 300:
                return f"webhook answered HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"webhook answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"webhook unreachable: {getattr(exc, 'reason', exc)}"
    return None
