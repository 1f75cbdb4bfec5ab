"""The store's bulk reads: studies and trials as plain records, straight from Optuna's tables.

``study.trials`` builds one ``FrozenTrial`` per trial through the ORM, which takes
seconds for ten thousand trials. The dashboard and the CLI only need plain records, so
these methods of the store (:class:`BulkReads`, a part of ``FastRDBStorage``) read each
of Optuna's tables once with a few SQL queries and build :class:`TrialRecord` and
:class:`StudySummary` objects directly. They never write. The tables are Optuna's own
(``optuna.storages._rdb.models``); the public readers in ``_readers`` fall back to
Optuna's objects for stores that are not SQL.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.trial import TrialState
from sqlalchemy import String, func, select, type_coerce

from ._errors import StoreError
from ._optuna import rdb_models
from ._outage import StoreUnavailable, is_outage, reason_of
from ._records import StudySummary, TrialRecord
from ._url import MYSQL, mask_url

models = rdb_models()

_studies = models.StudyModel.__table__
_directions = models.StudyDirectionModel.__table__
_study_user_attrs = models.StudyUserAttributeModel.__table__
_study_system_attrs = models.StudySystemAttributeModel.__table__
_trials = models.TrialModel.__table__
_params = models.TrialParamModel.__table__
_values = models.TrialValueModel.__table__
_user_attrs = models.TrialUserAttributeModel.__table__
_system_attrs = models.TrialSystemAttributeModel.__table__
_steps = models.TrialIntermediateValueModel.__table__
_heartbeats = models.TrialHeartbeatModel.__table__
_FINITE = models.TrialValueModel.TrialValueType.FINITE


def _text(column: Any) -> Any:
    # Enums come back as their names and datetimes as text on SQLite (parsed with
    # fromisoformat): SQLAlchemy's own DateTime parsing is a regex per value, the
    # slowest part of a large read. The SQL is unchanged; only the result type is.
    return type_coerce(column, String)


_METRIC_NAMES_KEY = "study:metric_names"
_FAIL_REASON_KEY = "fail_reason"
_INFINITE = {"INF_POS": float("inf"), "INF_NEG": float("-inf")}


@contextmanager
def _snapshot(engine: sqlalchemy.engine.Engine) -> Iterator[sqlalchemy.engine.Connection]:
    # One transaction for all queries, so a trial finishing between two of them
    # cannot give a record with the new state and the old values.
    options: dict[str, Any] = {}
    if engine.dialect.name in ("postgresql", *MYSQL):
        # (MySQL's default, but a server may be set to another.)
        options["isolation_level"] = "REPEATABLE READ"
    try:
        with engine.connect() as conn:
            if options:
                conn = conn.execution_options(**options)
            with conn.begin():
                yield conn
    except sqlalchemy.exc.SQLAlchemyError as exc:
        first = reason_of(exc, engine.url)
        if engine.dialect.name != "sqlite" and is_outage(exc):
            raise StoreUnavailable(
                f"study store {mask_url(str(engine.url))!r} unreachable: {first}"
            ) from exc
        raise StoreError(f"cannot read the study store: {first}") from exc


def _local(stamp: dt.datetime | None) -> dt.datetime | None:
    # Optuna stores naive UTC and shows naive local time (TrialModel.datetime_start).
    if stamp is None:
        return None
    return stamp + _utc_offset(stamp.year, stamp.month, stamp.day, stamp.hour, time.tzname)


@functools.lru_cache(maxsize=4096)
def _utc_offset(year: int, month: int, day: int, hour: int, _zone: tuple[str, str]) -> dt.timedelta:
    # Offsets change only on whole hours (daylight saving), so one lookup per hour and
    # zone (the process's zone is part of the key, in case it changes).
    utc = dt.datetime(year, month, day, hour, tzinfo=dt.timezone.utc)
    return utc.astimezone().utcoffset() or dt.timedelta(0)


def _decode_all(texts: Iterable[str]) -> list[Any]:
    # One parse of a JSON array instead of one json.loads per attribute: several
    # times faster for the ~20 attributes of each of thousands of trials.
    return json.loads("[" + ",".join(texts) + "]")


def _state(value: Any) -> str:
    return str(value).split(".")[-1].upper()


def _direction(value: Any) -> str:
    return "maximize" if _state(value) == "MAXIMIZE" else "minimize"


def _objectives(
    directions: Sequence[Sequence[Any]], metric_names: list[str] | None
) -> dict[str, str]:
    ordered = [_direction(d) for _, d in sorted(directions, key=lambda x: x[0])]
    names = metric_names or [f"objective_{i}" for i in range(len(ordered))]
    return dict(zip(names, ordered))


def _study_id(conn: sqlalchemy.engine.Connection, name: str) -> int:
    row = conn.execute(select(_studies.c.study_id).where(_studies.c.study_name == name)).first()
    if row is None:
        known = sorted(conn.execute(select(_studies.c.study_name)).scalars())
        hint = (
            f"; studies in this store: {', '.join(known)}" if known else "; the store has no study"
        )
        raise StoreError(f"no study named {name!r}{hint}")
    return int(row[0])


class BulkReads:
    """The store's bulk reads (a part of ``FastRDBStorage``), each a few SQL queries in one
    snapshot of Optuna's tables. Errors are :class:`StoreError` (``StoreUnavailable`` when
    a server cannot be reached); the store rides out an outage around each call."""

    engine: sqlalchemy.engine.Engine

    def read_records(self, name: str) -> list[TrialRecord]:
        """Every trial of study ``name`` as a plain record, read with a few bulk queries.

        The same records as Optuna's objects give (``to_record`` of each ``FrozenTrial``),
        in the same order (by trial id), several times faster on large studies.

        Raises:
            StoreError: no study of that name, or the store cannot be read.
        """
        with _snapshot(self.engine) as conn:
            sid = _study_id(conn, name)
            directions = conn.execute(
                select(_directions.c.objective, _text(_directions.c.direction)).where(
                    _directions.c.study_id == sid
                )
            ).all()
            names_json = conn.execute(
                select(_study_system_attrs.c.value_json).where(
                    _study_system_attrs.c.study_id == sid,
                    _study_system_attrs.c.key == _METRIC_NAMES_KEY,
                )
            ).scalar()
            objective_names = list(
                _objectives(directions, json.loads(names_json) if names_json else None)
            )
            in_study = select(_trials.c.trial_id).where(_trials.c.study_id == sid).scalar_subquery()
            trials = conn.execute(
                select(
                    _trials.c.trial_id,
                    _trials.c.number,
                    _text(_trials.c.state),
                    _text(_trials.c.datetime_start),
                    _text(_trials.c.datetime_complete),
                )
                .where(_trials.c.study_id == sid)
                .order_by(_trials.c.trial_id)
            ).all()
            params = conn.execute(
                select(
                    _params.c.trial_id,
                    _params.c.param_name,
                    _params.c.param_value,
                    _params.c.distribution_json,
                )
                .where(_params.c.trial_id.in_(in_study))
                .order_by(_params.c.trial_id, _params.c.param_name)
            ).all()
            values = conn.execute(
                select(
                    _values.c.trial_id,
                    _values.c.objective,
                    _values.c.value,
                    _text(_values.c.value_type),
                ).where(_values.c.trial_id.in_(in_study))
            ).all()
            attrs = conn.execute(
                select(_user_attrs.c.trial_id, _user_attrs.c.key, _user_attrs.c.value_json).where(
                    _user_attrs.c.trial_id.in_(in_study)
                )
            ).all()
            fail_reasons = conn.execute(
                select(_system_attrs.c.trial_id, _system_attrs.c.value_json).where(
                    _system_attrs.c.trial_id.in_(in_study),
                    _system_attrs.c.key == _FAIL_REASON_KEY,
                )
            ).all()

        params_by: dict[int, dict[str, Any]] = {}
        distributions: dict[str, Any] = {}
        for trial_id, pname, pvalue, djson in params:
            dist = distributions.get(djson)
            if dist is None:
                dist = distributions[djson] = optuna.distributions.json_to_distribution(djson)
            params_by.setdefault(trial_id, {})[pname] = dist.to_external_repr(pvalue)

        values_by: dict[int, dict[int, float]] = {}
        for trial_id, objective, value, vtype in values:
            number = _INFINITE.get(_state(vtype), value)
            values_by.setdefault(trial_id, {})[objective] = float(number)

        attrs_by: dict[int, dict[str, Any]] = {}
        for (trial_id, key, _), value in zip(attrs, _decode_all(row[2] for row in attrs)):
            attrs_by.setdefault(trial_id, {})[key] = value
        fail_by = dict(
            zip((row[0] for row in fail_reasons), _decode_all(row[1] for row in fail_reasons))
        )

        records = []
        for trial_id, number, state, start, complete in trials:
            by_objective = values_by.get(trial_id)
            record_values: dict[str, float] = {}
            if by_objective:
                record_values = {
                    n: by_objective[i] for i, n in enumerate(objective_names) if i in by_objective
                }
            trial_attrs = attrs_by.get(trial_id, {})
            curve = trial_attrs.pop("curve", None) or []
            error = trial_attrs.pop("error", None) or fail_by.get(trial_id)
            records.append(
                TrialRecord(
                    number=int(number),
                    state=_state(state),
                    params=params_by.get(trial_id, {}),
                    values=record_values,
                    metrics=trial_attrs,
                    datetime_start=_local(_as_datetime(start)),
                    datetime_complete=_local(_as_datetime(complete)),
                    feasible=bool(trial_attrs.get("feasible", True)),
                    error=error,
                    curve=[float(x) for x in curve],
                )
            )
        return records

    def read_studies(self) -> list[StudySummary]:
        """Every study in the store with its objectives, counts by state and last update.

        The same summaries as Optuna's objects give, counted in the database instead of
        loading every trial.

        Raises:
            StoreError: the store cannot be read.
        """
        with _snapshot(self.engine) as conn:
            studies = conn.execute(
                select(_studies.c.study_id, _studies.c.study_name).order_by(_studies.c.study_id)
            ).all()
            directions = conn.execute(
                select(
                    _directions.c.study_id, _directions.c.objective, _text(_directions.c.direction)
                )
            ).all()
            metric_names = conn.execute(
                select(_study_system_attrs.c.study_id, _study_system_attrs.c.value_json).where(
                    _study_system_attrs.c.key == _METRIC_NAMES_KEY
                )
            ).all()
            user_attrs = conn.execute(
                select(
                    _study_user_attrs.c.study_id,
                    _study_user_attrs.c.key,
                    _study_user_attrs.c.value_json,
                )
            ).all()
            counts = conn.execute(
                select(
                    _trials.c.study_id,
                    _text(_trials.c.state),
                    func.count(),
                    func.max(_text(_trials.c.datetime_start)),
                    func.max(_text(_trials.c.datetime_complete)),
                ).group_by(_trials.c.study_id, _trials.c.state)
            ).all()

        dirs_by: dict[int, list[tuple[Any, Any]]] = {}
        for sid, objective, direction in directions:
            dirs_by.setdefault(sid, []).append((objective, direction))
        names_by = {sid: json.loads(v) for sid, v in metric_names}
        attrs_by: dict[int, dict[str, Any]] = {}
        for sid, key, vjson in user_attrs:
            attrs_by.setdefault(sid, {})[key] = json.loads(vjson)
        counts_by: dict[int, dict[str, int]] = {}
        last_by: dict[int, dt.datetime] = {}
        for sid, state, n, last_start, last_complete in counts:
            counts_by.setdefault(sid, {})[_state(state)] = int(n)
            for stamp in (last_start, last_complete):
                stamp = _local(_as_datetime(stamp))
                if stamp is not None and (sid not in last_by or stamp > last_by[sid]):
                    last_by[sid] = stamp
        return [
            StudySummary(
                name=name,
                objectives=_objectives(dirs_by.get(sid, []), names_by.get(sid)),
                counts=counts_by.get(sid, {}),
                user_attrs=attrs_by.get(sid, {}),
                last_update=last_by.get(sid),
            )
            for sid, name in studies
        ]

    def read_best_values(self) -> dict[str, dict[str, float]]:
        """The best value of each objective over the complete, feasible trials of each study.

        Returns ``{study name: {objective: best value}}``; a study without such a trial
        has an empty mapping.

        Raises:
            StoreError: the store cannot be read.
        """
        summaries = self.read_studies()
        infeasible = select(_user_attrs.c.trial_id).where(
            _user_attrs.c.key == "feasible", _user_attrs.c.value_json == "false"
        )
        with _snapshot(self.engine) as conn:
            ids: dict[str, int] = dict(
                conn.execute(select(_studies.c.study_name, _studies.c.study_id)).all()
            )
            rows = conn.execute(
                select(
                    _trials.c.study_id,
                    _values.c.objective,
                    func.max(_values.c.value),
                    func.min(_values.c.value),
                )
                .join(_values, _values.c.trial_id == _trials.c.trial_id)
                .where(
                    _trials.c.state == TrialState.COMPLETE,
                    _values.c.value_type == _FINITE,
                    _trials.c.trial_id.not_in(infeasible),
                )
                .group_by(_trials.c.study_id, _values.c.objective)
            ).all()
        extremes = {(sid, objective): (hi, lo) for sid, objective, hi, lo in rows}
        out: dict[str, dict[str, float]] = {}
        for s in summaries:
            best: dict[str, float] = {}
            for i, (objective, direction) in enumerate(s.objectives.items()):
                pair = extremes.get((ids.get(s.name), i))
                if pair is not None:
                    best[objective] = float(pair[0] if direction == "maximize" else pair[1])
            out[s.name] = best
        return out

    def count_states(self, study_id: int) -> dict[str, int]:
        """Trials of a study by state, counted in the database."""
        with self.engine.connect() as conn:
            return self._count_states(study_id, conn)

    def _count_states(
        self, study_id: int, connection: sqlalchemy.engine.Connection
    ) -> dict[str, int]:
        # On the caller's connection (one holding the budget lock): not ridden on its own.
        rows = connection.execute(
            select(_text(_trials.c.state), func.count())
            .where(_trials.c.study_id == study_id)
            .group_by(_trials.c.state)
        ).all()
        return {_state(state): int(n) for state, n in rows}

    def beatless_running(self, study_id: int, started_before: dt.datetime) -> list[int]:
        """Ids of the study's RUNNING trials that started before ``started_before`` and
        never recorded a heartbeat."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_trials.c.trial_id).where(
                    _trials.c.study_id == study_id,
                    _trials.c.state == TrialState.RUNNING,
                    _trials.c.datetime_start < started_before,
                    _trials.c.trial_id.not_in(select(_heartbeats.c.trial_id)),
                )
            ).all()
        return [int(trial_id) for (trial_id,) in rows]

    def read_trial_attr(self, study_id: int, key: str, exclude: int) -> list[tuple[int, Any]]:
        """``(trial number, value)`` of user attribute ``key`` for every trial of the study
        but number ``exclude``."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_trials.c.number, _user_attrs.c.value_json)
                .join(_trials, _trials.c.trial_id == _user_attrs.c.trial_id)
                .where(
                    _trials.c.study_id == study_id,
                    _user_attrs.c.key == key,
                    _trials.c.number != exclude,
                )
            ).all()
        return [(int(number), json.loads(value)) for number, value in rows]


def _as_datetime(value: Any) -> dt.datetime | None:
    # Aggregates lose the column type on SQLite and come back as text.
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))
