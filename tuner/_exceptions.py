"""Every error tuner raises on purpose, and the exit code the CLI gives each.

TunerError                      1  a runtime failure
 ├── SpecError                  2  a spec or an argument is invalid (field, value, what would be right)
 ├── StorageError               2  the study store cannot be opened or used as given
 │    └── StoreUnavailableError 5  the store stayed unreachable for the whole retry window
 ├── WorkloadError              1  a workload cannot be found or broke its contract
 │    └── RankDied              1  a rank of a data-parallel trial died (the trial is retried)
 ├── CompressionError           1  a model cannot be sparsified or quantized as asked
 ├── ExportError                1  a model cannot be exported, or the file does not run
 │    └── ArtifactMissing       1  a trial has no model file to export
 ├── DispatchError              1  trials cannot be dispatched
 │    └── TrialsKeepFailing     6  the run stopped short of its budget: its trials keep failing
 └── NightLocked                4  another live run holds this night

``tuner nightly`` also exits 3 when the night regressed (:data:`EXIT_REGRESSED`); that is
a finding, not an error. Errors of the ``storage`` package (``StoreError`` and its
``StoreUnavailable``) become :class:`StorageError` / :class:`StoreUnavailableError` at
tuner's boundary (:func:`storage_error`).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_REGRESSED = 3
EXIT_LOCKED = 4
EXIT_STORE_DOWN = 5
EXIT_GAVE_UP = 6
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report it
EXIT_TERMINATED = 143  # SIGTERM


class TunerError(Exception):
    """Root of every error tuner raises on purpose."""

    exit_code = EXIT_FAILED


class SpecError(TunerError, ValueError):
    """A study spec or an argument is invalid."""

    exit_code = EXIT_BAD_INPUT


class StorageError(TunerError):
    """The study store cannot be opened or used as given."""

    exit_code = EXIT_BAD_INPUT


class StoreUnavailableError(StorageError):
    """The study store stayed unreachable for the whole retry window."""

    exit_code = EXIT_STORE_DOWN


class WorkloadError(TunerError):
    """A workload cannot be found or broke its contract."""


class RankDied(WorkloadError):
    """A rank of a data-parallel trial died (killed, out of memory): the trial fails and
    is queued again with the same parameters."""


class CompressionError(TunerError):
    """A model cannot be sparsified or quantized as asked."""


class ExportError(TunerError):
    """A model cannot be exported or the exported file cannot be run."""


class ArtifactMissing(ExportError):
    """A trial has no model file to export (never kept, dropped, or moved)."""


class DispatchError(TunerError):
    """Trials cannot be dispatched."""


class TrialsKeepFailing(DispatchError):
    """A run stopped short of its budget because its trials keep failing."""

    exit_code = EXIT_GAVE_UP


class NightLocked(TunerError):
    """Another live run holds this night."""

    exit_code = EXIT_LOCKED


def storage_error(exc: Exception) -> StorageError:
    """The error of this tree for an error of the store package (same one-line message)."""
    from .storage import StoreUnavailable

    kind = StoreUnavailableError if isinstance(exc, StoreUnavailable) else StorageError
    return kind(str(exc))


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message, or its type's name when it says nothing:
    third-party errors run to many lines, and tuner reports one."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
