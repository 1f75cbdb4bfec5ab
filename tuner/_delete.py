"""Delete a study: its trials from the store, then the files its trials kept.

Optuna's ``delete_study`` removes the rows and leaves every file the trials wrote: a
study's kept models (one per front trial at least, each a compressed model of a few KB to
many MB) and its TensorBoard runs stay on disk with nothing left that names them.

Here the store goes first, and is read back to make sure the study is gone, so that a
failure never leaves a study whose files are gone. Then exactly the files the trials
recorded are removed: each trial's model file (``<artifact_store>/<artifact_id>``) and its
TensorBoard run (``<root>/tensorboard/<study>/trial-NNNNN``). The study's folders go last,
and only once nothing else is in them: a same-named study of another store kept in the
same folder, or anything a person put there, is left as it was.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._exceptions import SpecError, StorageError, first_line, storage_error
from .storage import StoreError, counted, load_study_readonly, read_records
from .storage._blobs import StoreArtifacts
from .storage._locks import LockHeld, acquire_lock, read_lock
from .storage._optuna import rdb_backend
from .storage.keys import ARTIFACT_ID_ATTR, ARTIFACT_STORE_ATTR, TENSORBOARD_ATTR

# What tuner names a model file (a UUID) and a trial's TensorBoard run.
_ARTIFACT_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_RUN = re.compile(r"^trial-\d+$")
# The study-level TensorBoard file (the HParams experiment) beside the trials' runs.
_EVENTS = "events.out.tfevents."


@dataclass
class StudyFiles:
    """The files a study's trials recorded, and the folders that hold them."""

    models: list[Path] = field(default_factory=list)
    runs: list[Path] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.models or self.runs)

    def describe(self) -> str:
        return _describe(len(self.models), len(self.runs))


def _describe(models: int, runs: int) -> str:
    """``2 model files and 3 TensorBoard runs``."""
    parts = [counted(models, "model file")] if models else []
    parts += [counted(runs, "TensorBoard run")] if runs else []
    return " and ".join(parts)


def study_files(study_name: str, records: Sequence[Any]) -> StudyFiles:
    """What ``study_name``'s trials recorded (a trial run elsewhere may name files this
    machine lacks); a path not of the shape tuner writes is not taken."""
    out = StudyFiles()
    folders: set[Path] = set()
    for record in records:
        store, artifact = (
            record.metrics.get(ARTIFACT_STORE_ATTR),
            record.metrics.get(ARTIFACT_ID_ATTR),
        )
        if isinstance(store, str) and isinstance(artifact, str) and _ARTIFACT_ID.match(artifact):
            folder = Path(store)
            if folder.name == study_name:
                out.models.append(folder / artifact)
                folders.add(folder)
        run = record.metrics.get(TENSORBOARD_ATTR)
        if isinstance(run, str):
            path = Path(run)
            if _RUN.match(path.name) and path.parent.name == study_name:
                out.runs.append(path)
                folders.add(path.parent)
    # A trial that never finished (stopped, killed, still running) wrote its run without
    # recording it: its folder is in the study's runs folder, under its own number.
    recorded = set(out.runs)
    for runs in {p.parent for p in out.runs}:
        for record in records:
            path = runs / f"trial-{record.number:05d}"
            with contextlib.suppress(OSError):  # unreadable: left, and said so at the end
                if path not in recorded and path.is_dir():
                    out.runs.append(path)
    out.folders = sorted(folders)
    return out


def refuse_running(study_name: str, records: Iterable[Any]) -> None:
    """Raise :class:`SpecError` where trials of the study are running."""
    running = [str(r.number) for r in records if r.state == "RUNNING"]
    if running:
        raise SpecError(
            f"study {study_name!r} has {counted(len(running), 'trial')} running "
            f"({', '.join(running)}); stop its sweep first, or pass --force"
        )


@dataclass
class Deleted:
    """What deleting a study removed.

    Attributes:
        study: the study's name.
        trials: how many trials it had.
        models: how many of its trials' model files were removed.
        runs: how many of its trials' TensorBoard runs were removed.
        size: the bytes removed.
        removed: the study's folders removed (empty once its files were).
        left: what was not removed, and why.
    """

    study: str
    trials: int
    models: int = 0
    runs: int = 0
    size: int = 0
    removed: list[Path] = field(default_factory=list)
    left: dict[Path, str] = field(default_factory=dict)

    def describe(self) -> str:
        return _describe(self.models, self.runs)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def delete_study(
    storage: Any, study_name: str, *, files: bool = True, force: bool = False
) -> Deleted:
    """Delete ``study_name`` from ``storage`` (an open, writable Optuna storage), then, with
    ``files``, the files its trials recorded and its folders once empty.

    Raises:
        SpecError: trials are running, or a nightly run holds the study (unless ``force``).
        StorageError: there is no such study, or the store did not delete it (no file was
            removed then).
    """
    lock = None
    try:
        # Only a night a nightly run took has a lock row; where none has (or the store has
        # no lock table), none is taken, and nothing is created in the store.
        if read_lock(storage, f"nightly:{study_name}") is not None:
            lock = acquire_lock(storage, f"nightly:{study_name}")
    except LockHeld as exc:
        if not force:
            raise SpecError(
                f"study {study_name!r} is a night that a nightly run is working on "
                f"({exc.holder.describe()}); wait for it, or pass --force"
            ) from exc
    except StoreError as exc:
        raise storage_error(exc) from exc
    except Exception as exc:  # noqa: BLE001 - the store's own error, one line
        raise StorageError(f"study {study_name!r} was not deleted: {first_line(exc)}") from exc
    try:
        try:
            load_study_readonly(storage, study_name)
            records = read_records(storage, study_name)
        except StoreError as exc:
            raise storage_error(exc) from exc
        if not force:
            refuse_running(study_name, records)
        kept = study_files(study_name, records)
        # Model files kept in the study store go with the study, --keep-files or not; first,
        # so that a store that refuses leaves none of them without their study.
        try:
            in_store = StoreArtifacts(rdb_backend(storage)).remove_study(study_name)
        except StoreError as exc:
            raise storage_error(exc) from exc
        _delete_rows(storage, study_name)
    finally:
        if lock is not None:
            lock.release()
    out = Deleted(study_name, len(records), models=in_store[0], runs=in_store[2], size=in_store[1])
    if not files:
        out.left = {folder: "kept (--keep-files)" for folder in kept.folders}
        return out
    for path in [*kept.models, *kept.runs]:
        try:
            if not path.exists():
                continue
            size = _size(path)
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        except OSError as exc:
            out.left[path] = f"could not be removed: {first_line(exc)}"
        else:
            out.size += size
            if path in kept.runs:
                out.runs += 1
            else:
                out.models += 1
    # The deepest first: a study named "tensorboard" keeps its models in the folder that
    # holds its runs' folder.
    for folder in sorted(kept.folders, key=lambda p: len(p.parts), reverse=True):
        _remove_if_only_ours(folder, out)
    return out


def _delete_rows(storage: Any, study_name: str) -> None:
    """Delete the study's rows and check that they are gone: Optuna's delete swallows an
    integrity error (a worker writing to the study meanwhile) and rolls back."""
    try:
        storage.delete_study(storage.get_study_id_from_name(study_name))
    except Exception as exc:  # noqa: BLE001 - the store's own error, one line
        raise StorageError(
            f"study {study_name!r} was not deleted (no file was removed): {first_line(exc)}"
        ) from exc
    try:
        storage.get_study_id_from_name(study_name)
    except KeyError:
        return
    except Exception as exc:  # noqa: BLE001 - the store's own error, one line
        raise StorageError(
            f"study {study_name!r} may or may not have been deleted (no file was removed): "
            f"reading it back failed: {first_line(exc)}; run the command again"
        ) from exc
    raise StorageError(
        f"study {study_name!r} was not deleted (no file was removed): the store rolled the "
        "deletion back, most likely because a worker wrote to the study meanwhile; stop its "
        "sweep and run the command again"
    )


def _remove_if_only_ours(folder: Path, out: Deleted) -> None:
    """Remove the study's ``folder`` where nothing but its study-level TensorBoard file is
    left in it; else say what is there."""
    try:
        if not folder.is_dir():
            out.left[folder] = "not on this machine"
            return
        rest = list(folder.iterdir())
        others = [p for p in rest if not (p.is_file() and p.name.startswith(_EVENTS))]
    except OSError as exc:
        out.left[folder] = f"could not be read: {first_line(exc)}"
        return
    if others:
        n = len(others)
        out.left[folder] = (
            f"it holds {n} other {'entry' if n == 1 else 'entries'}, that no trial of this "
            "study recorded"
        )
        return
    try:
        for path in rest:
            out.size += _size(path)
            path.unlink()
        folder.rmdir()
    except OSError as exc:
        out.left[folder] = f"could not be removed: {first_line(exc)}"
    else:
        out.removed.append(folder)
