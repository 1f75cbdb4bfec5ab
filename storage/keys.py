"""Names every reader and writer of the store shares: attribute keys and state sets.

tuner writes these keys on studies and trials; the CLI, the dashboard and plain Optuna
read them back. One definition each, so a key cannot drift between writer and reader.
"""

from __future__ import annotations

# Trial user attributes.
ERROR_ATTR = "error"  # why a trial failed or was stopped
CURVE_ATTR = "curve"  # validation accuracy per epoch
RUNGS_ATTR = "rungs"  # early stopping's decisions per rung
VIOLATIONS_ATTR = "constraint_violations"  # how far each spec constraint is missed
ARTIFACT_ID_ATTR = "artifact_id"
ARTIFACT_STORE_ATTR = "artifact_store"  # the folder of the model file, or ARTIFACT_IN_STORE
ARTIFACT_IN_STORE = "study store"  # the model file is a row of the study store
ARTIFACT_KEEP_ATTR = "artifact_keep"
ARTIFACT_STATUS_ATTR = "artifact"
TENSORBOARD_ATTR = "tensorboard"  # the folder of the trial's TensorBoard event files
TRAINED_BY_ATTR = "trained_by"  # the trial whose trained model this one compressed anew
COMPRESSION_CHOICE_ATTR = "compression_choice"  # why a compressed-anew trial has its settings
WORKER_ATTR = "worker"  # the worker that ran the trial: "host (pid N)"
START_ATTR = "start"  # "center": the trial the study started with, the middle of the space

# Trial system attributes.
RUN_ATTR = "tuner.run"  # the run whose worker runs the trial
RETRY_OF_ATTR = "failed_trial"  # set by Optuna's retry on the WAITING copy of a failed trial

# Study user attributes.
ARTIFACT_DROPPED_PREFIX = "tuner.artifact_dropped."  # + trial number: why its model was dropped
SPEC_ATTR = "tuner.spec"  # the spec the study was created from
SPEC_NAME_ATTR = "tuner.spec_name"  # a nightly study's spec
NIGHTLY_ATTR = "tuner.nightly"  # a nightly study's night
WARM_START_ATTR = "tuner.warm_start_from"
RETIMED_ATTR = "tuner.retimed"  # the front timed again side by side (``tuner retime``)

# Trial states, by name.
FINISHED = ("COMPLETE", "PRUNED")  # count toward the budget
ENDED = ("COMPLETE", "PRUNED", "FAIL")  # will not run again
