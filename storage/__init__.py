"""The study store of tuner.

Opens Optuna's ``RDBStorage`` (a SQLite file by default, PostgreSQL or MySQL when
workers share it) with the engine options and heartbeats tuner relies on, masks
passwords in URLs, and reads studies and trials as plain records for the CLI and
the dashboard. This package imports neither ``tuner`` nor the dashboard.
"""

from __future__ import annotations

from ._bounds import Bound, best_within, bounds_from_spec, metric_value, rank
from ._compare import Comparison, StudyFront, compare_fronts, compare_studies
from ._errors import StoreError
from ._format import (
    column_format,
    counted,
    latency_p90,
    metric_unit,
    mixed_machines,
    precision,
    quantize_mode,
    reference_ms,
    show_duration,
    show_epochs,
    show_metric,
    show_param,
    sparsity_kind,
    sparsity_label,
    speed_spread,
)
from ._nights import NightSummary, nights
from ._outage import StoreUnavailable
from ._rdb import open_storage
from ._readers import count_states, read_best_values, read_records, read_studies
from ._records import (
    StudySummary,
    TrialRecord,
    hypervolume,
    load_study_readonly,
    pareto_front,
    pareto_mask,
    reference_past_worst,
    study_objectives,
)
from ._retimed import (
    RetimedTrial,
    Retiming,
    dominated_by,
    retiming_notes,
    retiming_rows,
    stored_retiming,
)
from ._url import DEFAULT_URL, ENV_VAR, mask_url, resolve_url

# What reading a store takes (the CLI, the dashboard, a notebook). The study manager's
# own plumbing (locks, outage riding, warm starts, batched writes) is imported from the
# private modules by tuner itself.
__all__ = [
    "DEFAULT_URL",
    "ENV_VAR",
    "Bound",
    "Comparison",
    "NightSummary",
    "RetimedTrial",
    "Retiming",
    "StoreError",
    "StoreUnavailable",
    "StudyFront",
    "StudySummary",
    "TrialRecord",
    "best_within",
    "bounds_from_spec",
    "column_format",
    "compare_fronts",
    "compare_studies",
    "counted",
    "count_states",
    "dominated_by",
    "hypervolume",
    "latency_p90",
    "load_study_readonly",
    "mask_url",
    "metric_unit",
    "metric_value",
    "mixed_machines",
    "nights",
    "open_storage",
    "pareto_front",
    "pareto_mask",
    "precision",
    "quantize_mode",
    "rank",
    "read_best_values",
    "read_records",
    "read_studies",
    "reference_ms",
    "reference_past_worst",
    "resolve_url",
    "retiming_notes",
    "retiming_rows",
    "show_duration",
    "show_epochs",
    "show_metric",
    "show_param",
    "sparsity_kind",
    "sparsity_label",
    "speed_spread",
    "stored_retiming",
    "study_objectives",
]
