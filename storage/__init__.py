"""The study store of tuner.

Opens Optuna's ``RDBStorage`` (a SQLite file by default, PostgreSQL or MySQL when
workers share it) with the engine options and heartbeats tuner relies on, masks
passwords in URLs, and reads studies and trials as plain records for the CLI and
the dashboard. This package imports neither ``tuner`` nor the dashboard.
"""

from __future__ import annotations

from ._bounds import (
    Bound,
    best_within,
    bounds_from_spec,
    default_target,
    feasible_complete,
    metric_value,
    rank,
    within,
)
from ._budget import budget_lock
from ._errors import StoreError
from ._format import column_format, metric_unit, show_epochs, show_metric, show_param
from ._locks import LockHeld, LockHolder, StoreLock, acquire_lock, read_lock
from ._nights import NightSummary, night_studies, nights, previous_night
from ._outage import StoreUnavailable, add_listener, retry_window_s, ride_out
from ._rdb import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S, open_storage, set_trial_user_attrs
from ._readers import (
    count_states,
    read_best_values,
    read_records,
    read_studies,
    read_trial_attr,
)
from ._records import (
    StudySummary,
    TrialRecord,
    hypervolume,
    load_study_readonly,
    pareto_front,
    pareto_mask,
    study_objectives,
    to_record,
)
from ._url import DEFAULT_URL, ENV_VAR, check_url, mask_url, resolve_url

__all__ = [
    "Bound",
    "best_within",
    "bounds_from_spec",
    "column_format",
    "default_target",
    "feasible_complete",
    "metric_unit",
    "metric_value",
    "rank",
    "show_epochs",
    "show_metric",
    "show_param",
    "within",
    "budget_lock",
    "DEFAULT_URL",
    "ENV_VAR",
    "GRACE_PERIOD_S",
    "HEARTBEAT_INTERVAL_S",
    "LockHeld",
    "LockHolder",
    "NightSummary",
    "StoreError",
    "StoreLock",
    "StoreUnavailable",
    "StudySummary",
    "TrialRecord",
    "acquire_lock",
    "add_listener",
    "check_url",
    "count_states",
    "hypervolume",
    "load_study_readonly",
    "mask_url",
    "night_studies",
    "nights",
    "open_storage",
    "pareto_front",
    "pareto_mask",
    "previous_night",
    "read_best_values",
    "read_lock",
    "read_records",
    "read_studies",
    "read_trial_attr",
    "resolve_url",
    "retry_window_s",
    "ride_out",
    "set_trial_user_attrs",
    "study_objectives",
    "to_record",
]
