"""Delete a study: its trials from the store, then its kept models and TensorBoard files.

Optuna's ``delete_study`` removes the rows and leaves every file the trials wrote: a
study's kept models (one per front trial at least, each a compressed model of a few KB to
many MB) and its TensorBoard runs stay on disk with nothing left that names them. Here the
store goes first, in one transaction, so that a failure never leaves a study whose files
are gone; the folders the trials recorded follow. A folder is removed only where it is
the study's own (named after the study, and the TensorBoard one inside ``tensorboard``),
whatever a trial recorded.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._exceptions import StorageError, first_line, storage_error
from .storage import StoreError, load_study_readonly, read_records
from .storage.keys import ARTIFACT_STORE_ATTR, TENSORBOARD_ATTR


@dataclass
class Deleted:
    """What deleting a study removed.

    Attributes:
        study: the study's name.
        trials: how many trials it had.
        removed: each folder removed, with its files' total bytes.
        left: folders the trials recorded that were not removed, and why.
    """

    study: str
    trials: int
    removed: dict[Path, int] = field(default_factory=dict)
    left: dict[Path, str] = field(default_factory=dict)


def study_files(study_name: str, records: Iterable[Any]) -> list[Path]:
    """The folders ``study_name``'s trials recorded: its kept models' and its TensorBoard
    runs' (a trial run elsewhere may name a folder this machine lacks)."""
    folders: set[Path] = set()
    for record in records:
        store = record.metrics.get(ARTIFACT_STORE_ATTR)
        if isinstance(store, str) and store:
            folders.add(Path(store))
        log = record.metrics.get(TENSORBOARD_ATTR)
        if isinstance(log, str) and log:
            folders.add(Path(log).parent)
    return sorted(folders)


def _owned(study_name: str, folder: Path) -> bool:
    """Whether ``folder`` is one tuner made for the study alone: its models live in
    ``<root>/<study>``, its runs in ``<root>/tensorboard/<study>``."""
    return folder.name == study_name and folder.resolve() not in (Path.home(), Path.cwd())


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def running_trials(records: Iterable[Any]) -> list[int]:
    return [r.number for r in records if r.state == "RUNNING"]


def delete_study(storage: Any, study_name: str, *, files: bool = True) -> Deleted:
    """Delete ``study_name`` from ``storage`` (an open, writable Optuna storage), then, with
    ``files``, the folders its trials recorded.

    Raises:
        StorageError: there is no such study, or the store refused the deletion (nothing
            was removed then).
    """
    try:
        load_study_readonly(storage, study_name)
        records = read_records(storage, study_name)
    except StoreError as exc:
        raise storage_error(exc) from exc
    folders = study_files(study_name, records)
    try:
        storage.delete_study(storage.get_study_id_from_name(study_name))
    except Exception as exc:  # noqa: BLE001 - the store's own error, one line
        raise StorageError(
            f"study {study_name!r} was not deleted (nothing was removed): {first_line(exc)}"
        ) from exc
    out = Deleted(study_name, len(records))
    if not files:
        out.left = {folder: "kept (--keep-files)" for folder in folders}
        return out
    for folder in folders:
        if not folder.is_dir():
            out.left[folder] = "not on this machine"
        elif not _owned(study_name, folder):
            out.left[folder] = f"not a folder of the study's own (not named {study_name!r})"
        else:
            size = _size(folder)
            try:
                shutil.rmtree(folder)
            except OSError as exc:
                out.left[folder] = f"could not be removed: {first_line(exc)}"
            else:
                out.removed[folder] = size
    return out
