"""Optuna's RDBStorage with its per-trial reads and param writes done in plain SQL.

Optuna builds every trial it reads through the ORM: a study check plus five eager
loads, each row an ORM object. A worker reads its own trial twice when it tells the
result and reads new trials before every ask, so on a small workload that ORM work
is a large share of a trial's cost. Here the same rows come back through SQLAlchemy
Core, from the same tables, into the same ``FrozenTrial``. Params, heartbeats and a
trial's final state and values are written the same way; every other write stays
Optuna's.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Container, Iterable, Sequence
from typing import Any, TypeVar

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna import distributions
from optuna.trial import FrozenTrial, TrialState

from ._fast import (
    BulkReads,
    _local,
    _params,
    _steps,
    _studies,
    _trials,
    _values,
    models,
)
from ._fast import _system_attrs as _system
from ._fast import _user_attrs as _user
from ._outage import ride_out
from ._url import MYSQL

_heartbeats = models.TrialHeartbeatModel.__table__

_value_repr = models.TrialValueModel.stored_repr_to_value
_step_repr = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value


_T = TypeVar("_T")

_PARAM, _VALUE, _USER, _SYSTEM, _STEP = range(5)
_VALUE_TYPES = {t.name: t for t in models.TrialValueModel.TrialValueType}
_STEP_TYPES = {t.name: t for t in models.TrialIntermediateValueModel.TrialIntermediateValueType}


def _children(chosen: Any) -> Any:
    """One UNION ALL over the five child tables, as
    (trial_id, kind, name, number, order, text) rows."""
    from sqlalchemy import Double, Integer, String, cast, literal, null

    def part(table: Any, kind: int, name: Any, number: Any, order: Any, text: Any) -> Any:
        return sqlalchemy.select(
            table.c.trial_id,
            literal(kind, Integer),
            cast(null() if name is None else name, String),
            # DOUBLE: MySQL's FLOAT is single precision.
            cast(null() if number is None else number, Double),
            cast(null(), Integer) if order is None else order,
            cast(text, String),  # enum columns come back by name
        ).where(chosen(table))

    p, v, u, y, i = _params.c, _values.c, _user.c, _system.c, _steps.c
    return sqlalchemy.union_all(
        part(_params, _PARAM, p.param_name, p.param_value, p.param_id, p.distribution_json),
        part(_values, _VALUE, None, v.value, v.objective, v.value_type),
        part(_user, _USER, u.key, None, None, u.value_json),
        part(_system, _SYSTEM, y.key, None, None, y.value_json),
        part(_steps, _STEP, None, i.intermediate_value, i.step, i.intermediate_value_type),
    )


def _guarded(method: Callable[..., _T]) -> Callable[..., _T]:
    """Run a store call as Optuna's own do: a connection the server dropped is retried
    once on a fresh one, an integrity error (a row another worker wrote first) is the
    method's to handle, and any other database error becomes ``StorageInternalError``."""

    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> _T:
        for attempt in range(2):
            try:
                return method(self, *args, **kwargs)
            except sqlalchemy.exc.IntegrityError:
                raise
            except sqlalchemy.exc.DBAPIError as exc:
                if attempt == 0 and exc.connection_invalidated:
                    continue
                raise optuna.exceptions.StorageInternalError(
                    f"the study store failed: {exc.orig or exc}"
                ) from exc
            except sqlalchemy.exc.SQLAlchemyError as exc:
                raise optuna.exceptions.StorageInternalError(
                    f"the study store failed: {exc}"
                ) from exc
        raise AssertionError("unreachable")

    return run


class FastRDBStorage(BulkReads, optuna.storages.RDBStorage):
    """``RDBStorage`` whose trial reads, param writes, heartbeats and finishing writes skip
    the ORM, with tuner's bulk reads (:class:`BulkReads`) as methods.

    Same tables, same rows, same results and errors as Optuna's own methods. This class
    (with the mixin it owns) is the only code that runs SQL on Optuna's tables.
    """

    _distribution_cache: dict[str, distributions.BaseDistribution]
    # Set by open_storage: whether calls ride out an outage, and for how long (None: the
    # default window).
    rides_outages: bool = False
    outage_window_s: float | None = None

    def _fast(self) -> bool:
        # The SQL here is checked against SQLite, PostgreSQL and MySQL (MariaDB); other
        # databases keep Optuna's own methods.
        return self.engine.dialect.name in ("sqlite", "postgresql", *MYSQL)

    def _upsert(self, table: Any, rows: Any, keys: list[Any], column: str) -> Any:
        """INSERT of ``rows`` that sets ``column`` where a row with the same ``keys``
        exists, in this database's words."""
        from sqlalchemy.dialects import mysql, postgresql, sqlite

        dialect = self.engine.dialect.name
        if dialect in MYSQL:
            stmt: Any = mysql.insert(table).values(rows)
            return stmt.on_duplicate_key_update({column: stmt.inserted[column]})
        insert: Any = sqlite.insert if dialect == "sqlite" else postgresql.insert
        stmt = insert(table).values(rows)
        return stmt.on_conflict_do_update(index_elements=keys, set_={column: stmt.excluded[column]})

    def _distribution(self, text: str) -> distributions.BaseDistribution:
        cache = self.__dict__.setdefault("_distribution_cache", {})
        found = cache.get(text)
        if found is None:
            found = cache[text] = distributions.json_to_distribution(text)
        return found

    @_guarded
    def get_trial(self, trial_id: int) -> FrozenTrial:
        if not self._fast():
            return super().get_trial(trial_id)
        with self.engine.connect() as conn:
            trials = self._read(conn, _trials.c.trial_id == trial_id)
        if not trials:
            raise KeyError(f"No trial with trial_id {trial_id} exists.")
        return trials[0]

    @_guarded
    def _get_trials(
        self,
        study_id: int,
        states: Container[TrialState] | None,
        included_trial_ids: set[int],
        trial_id_greater_than: int,
    ) -> list[FrozenTrial]:
        if not self._fast():
            return super()._get_trials(study_id, states, included_trial_ids, trial_id_greater_than)
        included = {i for i in included_trial_ids if i <= trial_id_greater_than}
        where = _trials.c.study_id == study_id
        if states is not None:
            assert isinstance(states, Iterable)
            where = where & _trials.c.state.in_(list(states))
        if trial_id_greater_than > -1:
            newer = _trials.c.trial_id > trial_id_greater_than
            if included:
                newer = newer | _trials.c.trial_id.in_(sorted(included))
            where = where & newer
        with self.engine.connect() as conn:
            found = self._read(conn, where)
            if not found:
                exists = conn.execute(
                    sqlalchemy.select(_studies.c.study_id).where(_studies.c.study_id == study_id)
                ).first()
                if exists is None:
                    raise KeyError(f"No study with study_id {study_id} exists.")
            return found

    def _read(self, conn: sqlalchemy.engine.Connection, where: Any) -> list[FrozenTrial]:
        """Trials matching ``where``, in two statements: the trials, then all their rows."""
        rows = conn.execute(
            sqlalchemy.select(
                _trials.c.trial_id,
                _trials.c.number,
                _trials.c.state,
                _trials.c.datetime_start,
                _trials.c.datetime_complete,
            )
            .where(where)
            .order_by(_trials.c.trial_id)
        ).all()
        if not rows:
            return []
        if len(rows) == 1:
            only = rows[0].trial_id
            chosen: Any = lambda table: table.c.trial_id == only  # noqa: E731
        else:
            ids = sqlalchemy.select(_trials.c.trial_id).where(where).scalar_subquery()
            chosen = lambda table: table.c.trial_id.in_(ids)  # noqa: E731

        params: dict[int, list[tuple[int, str, float, str]]] = {}
        values: dict[int, dict[int, float]] = {}
        user: dict[int, dict[str, Any]] = {}
        system: dict[int, dict[str, Any]] = {}
        steps: dict[int, dict[int, float]] = {}
        for tid, kind, name, number, order, text in conn.execute(_children(chosen)):
            if kind == _PARAM:
                params.setdefault(tid, []).append((order, name, number, text))
            elif kind == _VALUE:
                values.setdefault(tid, {})[order] = _value_repr(number, _VALUE_TYPES[text])
            elif kind == _USER:
                user.setdefault(tid, {})[name] = json.loads(text)
            elif kind == _SYSTEM:
                system.setdefault(tid, {})[name] = json.loads(text)
            else:
                steps.setdefault(tid, {})[order] = _step_repr(number, _STEP_TYPES[text])

        out = []
        for row in rows:
            tid = row.trial_id
            dists = {}
            external = {}
            for _, name, internal, text in sorted(params.get(tid, ())):
                dist = self._distribution(text)
                dists[name] = dist
                external[name] = dist.to_external_repr(internal)
            by_objective = values.get(tid)
            out.append(
                FrozenTrial(
                    number=row.number,
                    state=row.state,
                    value=None,
                    values=[by_objective[i] for i in sorted(by_objective)]
                    if by_objective
                    else None,
                    datetime_start=_local(row.datetime_start),
                    datetime_complete=_local(row.datetime_complete),
                    params=external,
                    distributions=dists,
                    user_attrs=user.get(tid, {}),
                    system_attrs=system.get(tid, {}),
                    intermediate_values=dict(sorted(steps.get(tid, {}).items())),
                    trial_id=tid,
                )
            )
        return out

    @_guarded
    def record_heartbeat(self, trial_id: int) -> None:
        if not self._fast():
            super().record_heartbeat(trial_id)
            return
        stmt = self._upsert(
            _heartbeats,
            {"trial_id": trial_id, "heartbeat": sqlalchemy.func.current_timestamp()},
            [_heartbeats.c.trial_id],
            "heartbeat",
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)

    @_guarded
    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        if not state.is_finished() or not self._fast():
            # Claiming a waiting trial keeps Optuna's own row-locking path.
            return super().set_trial_state_values(trial_id, state, values)
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        try:
            with self.engine.begin() as conn:
                # Finishing is one guarded update: a second writer finds the trial finished.
                updated = conn.execute(
                    sqlalchemy.update(_trials)
                    .where(
                        _trials.c.trial_id == trial_id,
                        _trials.c.state.in_([TrialState.RUNNING, TrialState.WAITING]),
                    )
                    .values(state=state, datetime_complete=now),
                    execution_options={"preserve_rowcount": True},
                ).rowcount
                if updated != 1:
                    found = conn.execute(
                        sqlalchemy.select(_trials.c.state).where(_trials.c.trial_id == trial_id)
                    ).scalar()
                    if found is None:
                        raise KeyError(f"No trial with trial_id {trial_id} exists.")
                    self.check_trial_is_updatable(trial_id, found)
                    return False
                if values is not None:
                    conn.execute(sqlalchemy.delete(_values).where(_values.c.trial_id == trial_id))
                    rows = []
                    for objective, value in enumerate(values):
                        stored, kind = models.TrialValueModel.value_to_stored_repr(value)
                        rows.append(
                            {
                                "trial_id": trial_id,
                                "objective": objective,
                                "value": stored,
                                "value_type": kind,
                            }
                        )
                    if rows:
                        conn.execute(_values.insert(), rows)
        except sqlalchemy.exc.IntegrityError:
            return False
        return True

    def set_trial_user_attrs(self, trial_id: int, attrs: dict[str, Any]) -> None:
        """Many user attributes of one trial in one upsert."""
        rows = [
            {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()
        ]
        stmt = self._upsert(_user, rows, [_user.c.trial_id, _user.c.key], "value_json")
        with self.engine.begin() as conn:
            conn.execute(stmt)

    @_guarded
    def _set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: distributions.BaseDistribution,
        previous_distribution: distributions.BaseDistribution | None,
    ) -> None:
        if not self._fast():
            super()._set_trial_param(
                trial_id, param_name, param_value_internal, distribution, previous_distribution
            )
            return
        text = distributions.distribution_to_json(distribution)
        if previous_distribution is not None and _compatible(previous_distribution, distribution):
            # The common case, one statement: insert while the trial is still updatable.
            # An incompatible distribution takes the checked path below, which reports a
            # finished trial before the mismatch, as Optuna does.
            from sqlalchemy import Float, Integer, String, Text, literal

            live = sqlalchemy.exists().where(
                _trials.c.trial_id == trial_id,
                _trials.c.state.in_([TrialState.RUNNING, TrialState.WAITING]),
            )
            with self.engine.begin() as conn:
                inserted = conn.execute(
                    _params.insert().from_select(
                        ["trial_id", "param_name", "param_value", "distribution_json"],
                        sqlalchemy.select(
                            literal(trial_id, Integer),
                            literal(param_name, String),
                            literal(param_value_internal, Float),
                            literal(text, Text),
                        ).where(live),
                    ),
                    execution_options={"preserve_rowcount": True},
                ).rowcount
            if inserted == 1:
                return
        with self.engine.begin() as conn:
            row = conn.execute(
                sqlalchemy.select(_trials.c.state, _trials.c.study_id).where(
                    _trials.c.trial_id == trial_id
                )
            ).first()
            if row is None:
                raise KeyError(f"No trial with trial_id {trial_id} exists.")
            self.check_trial_is_updatable(trial_id, row.state)
            if previous_distribution is None:
                earlier = conn.execute(
                    sqlalchemy.select(_params.c.distribution_json)
                    .join(_trials, _trials.c.trial_id == _params.c.trial_id)
                    .where(_trials.c.study_id == row.study_id)
                    .where(_params.c.param_name == param_name)
                    .limit(1)
                ).scalar()
                if earlier is not None:
                    previous_distribution = self._distribution(earlier)
            if previous_distribution is not None:
                distributions.check_distribution_compatibility(previous_distribution, distribution)
            conn.execute(
                _params.insert().values(
                    trial_id=trial_id,
                    param_name=param_name,
                    param_value=param_value_internal,
                    distribution_json=text,
                )
            )


def _compatible(old: distributions.BaseDistribution, new: distributions.BaseDistribution) -> bool:
    try:
        distributions.check_distribution_compatibility(old, new)
    except ValueError:
        return False
    return True


# Calls on a server store ride out a short outage (see _outage); a call made inside
# another is retried as part of it.
_NOT_RIDDEN = ("remove_session", "check_trial_is_updatable")
_RIDDEN = [
    name
    for name in dir(optuna.storages.BaseStorage)
    if not name.startswith("_") and name not in _NOT_RIDDEN
] + [
    "record_heartbeat",
    # What Optuna's cached storage (the one a loaded study uses) calls on its backend.
    "_create_new_trial",
    "_get_best_trial_id",
    "_get_stale_trial_ids",
    "_get_trials",
    "_set_trial_param",
    # tuner's bulk reads (BulkReads); _count_states runs on a caller's connection.
    "read_records",
    "read_studies",
    "read_best_values",
    "count_states",
    "read_trial_attr",
    "beatless_running",
    "set_trial_user_attrs",
]


def _riding(method: Callable[..., _T]) -> Callable[..., _T]:
    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> _T:
        return ride_out(lambda: method(self, *args, **kwargs), self)

    return run


for _name in _RIDDEN:
    setattr(FastRDBStorage, _name, _riding(getattr(FastRDBStorage, _name)))
