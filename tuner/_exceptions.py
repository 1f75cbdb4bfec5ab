"""Exceptions raised by tuner.

TunerError
 ├── SpecError          a study spec is invalid (field, value, what would be right)
 ├── StorageError       the study store cannot be opened or used
 │    └── StoreUnavailableError   it stayed unreachable for the whole retry window
 ├── WorkloadError      a workload cannot be found or broke its contract
 ├── CompressionError   a model cannot be sparsified or quantized as asked
 └── DispatchError      trials cannot be dispatched
"""

from __future__ import annotations


class TunerError(Exception):
    """Root of every error tuner raises on purpose."""


class SpecError(TunerError, ValueError):
    """A study spec is invalid."""


class StorageError(TunerError):
    """The study store cannot be opened or used."""


class WorkloadError(TunerError):
    """A workload cannot be found or broke its contract."""


class CompressionError(TunerError):
    """A model cannot be sparsified or quantized as asked."""


class DispatchError(TunerError):
    """Trials cannot be dispatched."""


class StoreUnavailableError(StorageError):
    """The study store stayed unreachable for the whole retry window."""


def storage_error(exc: Exception) -> StorageError:
    """The error of this tree for an error of the store package (same one-line message)."""
    from .storage import StoreUnavailable

    kind = StoreUnavailableError if isinstance(exc, StoreUnavailable) else StorageError
    return kind(str(exc))
