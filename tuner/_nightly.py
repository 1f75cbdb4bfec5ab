"""``tuner nightly``: one study per night of a spec, warm-started from the night before.

A night is the study ``<spec name>-<date>``. Running the same night again continues
to its budget and never past it; a lock in the store keeps two runs of one night
apart. The previous night's Pareto trials run first, then the sampler takes over,
and the morning report compares the two fronts.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna

from ._delete import Deleted, delete_study
from ._dispatch import BACKENDS
from ._exceptions import (
    EXIT_REGRESSED,
    NightLocked,
    SpecError,
    TunerError,
    first_line,
    storage_error,
)
from ._report import (
    NightReport,
    compare_nights,
    post_webhook,
    resolve_reference_point,
    write_report,
)
from ._retime import front_target, retime_fronts
from ._run import RunResult, open_store, prepare_study, queue_center, run
from ._spec import ParamSpec, StudySpec, load_spec
from .storage import (
    Retiming,
    StoreError,
    count_states,
    pareto_front,
    read_records,
    resolve_url,
)
from .storage._locks import LockHeld, acquire_lock
from .storage._nights import night_studies, previous_night
from .storage._outage import ride_out
from .storage.keys import NIGHTLY_ATTR, SPEC_NAME_ATTR, WARM_START_ATTR

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class NightResult:
    """One night: its run, the comparison with the night before, and the files written."""

    study_name: str
    date: str
    run: RunResult
    report: NightReport
    files: dict[str, Path] = field(default_factory=dict)
    webhook_error: str | None = None
    took_over: str | None = None
    trials_run: int = 0
    # nightly.keep_nights: the older nights deleted (what each removed), and those that
    # could not be, with why.
    dropped: list[Deleted] = field(default_factory=list)
    not_dropped: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_REGRESSED if self.report.regressed else 0


def _drop_old_nights(
    store: Any, spec_name: str, date: str, keep: int
) -> tuple[list[Deleted], dict[str, str]]:
    """Delete ``spec_name``'s nights before the latest ``keep`` up to ``date`` (tonight is
    one of them; nights dated after it are left), with their files (``nightly.keep_nights``).
    A night that cannot be deleted now (running trials, held by a nightly run, the store
    refused) is said and left for the next night; tonight's night stands either way."""
    dropped: list[Deleted] = []
    not_dropped: dict[str, str] = {}
    try:
        every = night_studies(store, spec_name)
        earlier = [name for d, name in every if d < date]
        old = earlier[: max(0, len(earlier) - (keep - 1))]
        # A night that a kept, unfinished night (cut short before its report) warm-started
        # from stays: resumed, that night compares with it.
        records = {
            s.study_name: s.user_attrs.get(NIGHTLY_ATTR) or {} for s in store.get_all_studies()
        }
        needed = {
            records.get(name, {}).get("warm_started_from")
            for _, name in every
            if name not in old and "hypervolume" not in records.get(name, {})
        }
    except Exception as exc:  # noqa: BLE001 - tonight's night stands; the cleanup waits
        return [], {"older nights": f"not looked at: {first_line(exc)}"}
    for name in old:
        if name in needed:
            not_dropped[name] = "a night kept warm-started from it"
            continue
        try:
            dropped.append(delete_study(store, name))
        except TunerError as exc:
            not_dropped[name] = f"{exc} (tuner delete {name} --force deletes it)"
        except Exception as exc:  # noqa: BLE001 - tonight's night stands; the next retries
            not_dropped[name] = first_line(exc)
    return dropped, not_dropped


def night_name(spec_name: str, date: str) -> str:
    return f"{spec_name}-{date}"


def _check_date(date: str | None) -> str:
    if date is None:
        return dt.date.today().isoformat()
    try:
        if not isinstance(date, str) or not _DATE.match(date):
            raise ValueError
        dt.date.fromisoformat(date)
    except ValueError:
        raise SpecError(
            f"date: got {date!r}; expected a date YYYY-MM-DD, e.g. 2025-01-31"
        ) from None
    return date


def _in_space(param: ParamSpec, value: Any) -> bool:
    if param.type == "categorical":
        return value in param.choices
    if param.type in ("float", "int"):
        return isinstance(value, (int, float)) and (param.low or 0) <= value <= (param.high or 0)
    return False


def _warm_start(
    study: optuna.Study, spec: StudySpec, store: Any, previous: str, budget: int
) -> int:
    """Enqueue last night's Pareto settings that still fit tonight's search space."""
    records = read_records(store, previous)
    front = pareto_front(records, spec.objectives)
    params = spec.params
    queued = 0
    for r in front[:budget]:
        searched = {k: v for k, v in r.params.items() if k in params and not params[k].is_fixed}
        if not searched or not all(_in_space(params[k], v) for k, v in searched.items()):
            continue
        study.enqueue_trial(
            searched,
            user_attrs={WARM_START_ATTR: f"{previous}#{r.number}"},
            skip_if_exists=True,
        )
        queued += 1
    return queued


def _night_spec(spec: StudySpec, date: str) -> StudySpec:
    """The spec with a seed of its own per night, so nights do not repeat each other's samples."""
    if spec.sampler.seed is None:
        return spec
    seed = spec.sampler.seed + dt.date.fromisoformat(date).toordinal()
    return spec.with_overrides(sampler=replace(spec.sampler, seed=seed))


def _validate_args(n_trials: Any, workers: Any, backend: str | None) -> None:
    # Checked before the store is touched, so bad input writes nothing.
    if n_trials is not None and (
        isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1
    ):
        raise SpecError(f"n_trials: got {n_trials!r}; expected an integer >= 1")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SpecError(f"workers: got {workers!r}; expected an integer >= 1")
    if backend is not None and backend not in BACKENDS:
        raise SpecError(f"backend: got {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "inline" and workers != 1:
        raise SpecError(
            f"workers: got {workers} with backend 'inline'; expected 1, or backend 'local'"
        )


def _retime_both(
    store: Any, name: str, previous: str | None, progress: bool
) -> tuple[Retiming, Retiming] | None:
    """Tonight's and last night's fronts timed again side by side (``nightly.retime``);
    ``None`` on the first night, or where either night has no model that could be timed, or
    the re-timing failed: the nights are then judged as each trial timed itself (one
    night's re-timed figures against the other's stored ones would compare less), and the
    run says why. A failed re-timing never costs the night its report."""
    if not previous:
        return None

    def say(line: str) -> None:
        if progress:
            print(f"tuner: re-timing: {line}", file=sys.stderr, flush=True)

    def judged_as_stored(why: str) -> None:
        print(
            f"tuner: the nights are judged as each trial timed itself: {why}",
            file=sys.stderr,
            flush=True,
        )

    try:
        # Fronts timed on a measure.target are timed there again, through the cluster the
        # night ran on.
        target = front_target(store, [name, previous])
        both = retime_fronts(store, [name, previous], progress=say, target=target)
    except Exception as exc:  # noqa: BLE001 - the night is still judged and reported
        judged_as_stored(f"the fronts could not be re-timed ({first_line(exc)})")
        return None
    for night in (name, previous):
        if not both[night].trials:
            why = "; ".join(f"trial {n}: {r}" for n, r in both[night].skipped.items())
            judged_as_stored(f"no front model of {night!r} could be re-timed ({why})")
            return None
    return both[name], both[previous]


def nightly(
    spec: StudySpec | str | Path | Mapping[str, Any],
    *,
    date: str | None = None,
    storage: str | None = None,
    n_trials: int | None = None,
    report_dir: str | Path = "nightly-reports",
    workers: int = 1,
    backend: str | None = None,
    progress: bool = False,
    **backend_options: Any,
) -> NightResult:
    """Run (or finish) tonight's sweep of ``spec`` and write the morning report.

    Args:
        spec: a :class:`StudySpec`, a YAML path or a mapping.
        date: the night, ``YYYY-MM-DD``; today (local time) by default.
        storage: storage URL; else the spec's, else ``$TUNER_STORAGE``, else ``./tuner.db``.
        n_trials: the night's budget of finished trials; else ``budget.n_trials``.
        report_dir: where ``<spec>-<date>.md`` and ``.html`` go.
        workers, backend, backend_options: as for :func:`tuner.run`.

    Example::

        result = nightly("search_spaces/digits_mlp.yaml", report_dir="reports")
        raise SystemExit(result.exit_code)  # 3 when the night regressed

    Raises:
        NightLocked: another live run holds this night's lock.
        SpecError: the spec or an argument is invalid (nothing is written).
    """
    date = _check_date(date)
    spec = _night_spec(load_spec(spec), date)
    _validate_args(n_trials, workers, backend)
    name = night_name(spec.name, date)
    spec.with_overrides(name=name)  # the night's name must be a valid study name
    url = resolve_url(storage, spec.storage)
    budget = n_trials or spec.budget.n_trials
    store = open_store(url)
    try:
        lock = ride_out(lambda: acquire_lock(store, f"nightly:{name}"), store)
    except LockHeld as exc:
        store.engine.dispose()
        raise NightLocked(
            f"night {name!r} is already running: held by {exc.holder.describe()}; "
            "this run exits without touching it"
        ) from None
    except StoreError as exc:
        store.engine.dispose()
        raise storage_error(exc) from exc
    took_over = lock.taken_over.describe() if lock.taken_over else None
    try:
        # A night warm-started from the one before starts from that night's front instead.
        study = prepare_study(spec, store, name, start=False)
        before = sum(count_states(store, name).values())
        night = dict(study.user_attrs.get(NIGHTLY_ATTR) or {})
        if not night:
            night = {"date": date, "warm_started_from": previous_night(store, spec.name, date)}
            study.set_user_attr(SPEC_NAME_ATTR, spec.name)
            study.set_user_attr(NIGHTLY_ATTR, night)
            if not night["warm_started_from"]:
                queue_center(study, spec)
        previous = night.get("warm_started_from")
        if previous and previous not in {s.study_name for s in store.get_all_studies()}:
            # Deleted since (tuner delete): tonight is judged as a first night.
            print(
                f"tuner nightly: last night's study {previous!r} is no longer in the store; "
                "tonight is judged as a first night",
                file=sys.stderr,
            )
            previous = None
        if previous and "warm_start_trials" not in night:
            night["warm_start_trials"] = _warm_start(study, spec, store, previous, budget)
            study.set_user_attr(NIGHTLY_ATTR, night)
        result = run(
            spec,
            storage=url,
            n_trials=budget,
            workers=workers,
            backend=backend,
            study_name=name,
            progress=progress,
            **backend_options,
        )
        records = read_records(store, name)
        previous_records = read_records(store, previous) if previous else []
        previous_attrs = (
            optuna.load_study(study_name=previous, storage=store).user_attrs.get(NIGHTLY_ATTR)
            if previous
            else None
        ) or {}
        reference = resolve_reference_point(
            spec, [*records, *previous_records], previous_attrs.get("reference_point")
        )
        retimed = _retime_both(store, name, previous, progress) if spec.nightly.retime else None
        report = compare_nights(
            spec,
            date=date,
            study_name=name,
            records=records,
            previous_study=previous,
            previous_date=previous_attrs.get("date"),
            previous_records=previous_records,
            reference_point=reference,
            warm_start_trials=int(night.get("warm_start_trials", 0)),
            retimed=retimed,
        )
        night["reference_point"] = reference
        night["hypervolume"] = report.hypervolume
        night["retimed"] = report.retimed is not None  # the hypervolume of re-timed fronts
        night["regressed"] = report.regressed
        study.set_user_attr(NIGHTLY_ATTR, night)
        files = write_report(report, report_dir)
        webhook_error = None
        if spec.nightly.webhook:
            webhook_error = post_webhook(report, spec.nightly.webhook)
        dropped, not_dropped = (
            _drop_old_nights(store, spec.name, date, spec.nightly.keep_nights)
            if spec.nightly.keep_nights
            else ([], {})
        )
    finally:
        lock.release()
        store.engine.dispose()
    return NightResult(
        study_name=name,
        date=date,
        run=result,
        report=report,
        files=files,
        webhook_error=webhook_error,
        took_over=took_over,
        trials_run=sum(result.counts.values()) - before,
        dropped=dropped,
        not_dropped=not_dropped,
    )
