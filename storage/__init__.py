"""The study store of tuner.

Opens Optuna's ``RDBStorage`` (a SQLite file by default, PostgreSQL or MySQL when
workers share it) with the engine options and heartbeats tuner relies on, masks
passwords in URLs, and reads studies and trials as plain records for the CLI and
the dashboard. This package imports neither ``tuner`` nor the dashboard.
"""

from __future__ import annotations

from ._errors import StoreError
from ._rdb import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S, open_storage
from ._records import (
    StudySummary,
    TrialRecord,
    count_states,
    hypervolume,
    list_studies,
    load_records,
    load_study_readonly,
    pareto_front,
    pareto_mask,
    study_objectives,
    to_record,
)
from ._url import DEFAULT_URL, ENV_VAR, check_url, mask_url, resolve_url

__all__ = [
    "DEFAULT_URL",
    "ENV_VAR",
    "GRACE_PERIOD_S",
    "HEARTBEAT_INTERVAL_S",
    "StoreError",
    "StudySummary",
    "TrialRecord",
    "check_url",
    "count_states",
    "hypervolume",
    "list_studies",
    "load_records",
    "load_study_readonly",
    "mask_url",
    "open_storage",
    "pareto_front",
    "pareto_mask",
    "resolve_url",
    "study_objectives",
    "to_record",
]
