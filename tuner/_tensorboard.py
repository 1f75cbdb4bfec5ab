"""TensorBoard event files for every trial: its curve, its final metrics and its
hyperparameters in TensorBoard's HParams format.

Layout, next to the studies' artifacts (``<artifacts root>/tensorboard/<study>``)::

    <study>/                     the experiment: every parameter of the search space
                                 and every metric, so the HParams view has its columns
    <study>/trial-00007/         trial 7: curve/val_accuracy (and curve/<loss> where the
                                 workload reports one) per epoch, the final metrics, and
                                 its HParams session (parameters and outcome)

``tensorboard --logdir <that folder>`` compares the trials. Writing goes through
``torch.utils.tensorboard`` (TensorBoard's own format, written by a background thread);
a folder that cannot be written costs the trial its event files, never the trial.

Where trials keep their models in the study store (``artifacts.in_store``), each trial
writes its run in a scratch folder and keeps it, packed, in the store too
(:func:`keep_run`): nodes of a cluster then need no shared disk for TensorBoard either,
and ``tuner tensorboard`` lays the study's runs out here again (:func:`unpack_runs`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import shutil
import tarfile
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from ._spec import StudySpec

FOLDER = "tensorboard"
CURVE_PREFIX = "curve/"
# Final figures written as scalars of each trial's run, so the HParams table shows them.
FINAL_METRICS = (
    "accuracy",
    "test_accuracy",
    "size_bytes",
    "latency_ms",
    "sparsity",
    "epochs",
    "train_time_s",
)
_EVENTS = "events.out.tfevents"


def log_folder(artifacts_root: Path, study_name: str) -> Path:
    """Where a study's TensorBoard runs live: beside the studies' model folders, so
    ``tensorboard --logdir <artifacts root>/tensorboard`` shows every study at once."""
    return artifacts_root / FOLDER / study_name


def run_name(trial_number: int) -> str:
    return f"trial-{trial_number:05d}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _hparam_value(value: Any) -> bool | str | float | int:
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def metric_names(spec: StudySpec) -> list[str]:
    """The final metrics a study's runs record: its objectives, then the usual ones."""
    names = list(spec.objectives)
    return names + [m for m in FINAL_METRICS if m not in names]


def _experiment(spec: StudySpec) -> Any:
    """TensorBoard's experiment summary: every parameter (with the choices of categorical
    ones) and every final metric."""
    from torch.utils.tensorboard.summary import hparams

    example: dict[str, Any] = {}
    discrete: dict[str, list[Any]] = {}
    for p in spec.params.values():
        if p.type == "categorical":
            choices = [_hparam_value(c) for c in p.choices]
            example[p.name] = choices[0]
            if len({type(c) for c in choices}) == 1:
                discrete[p.name] = choices
        elif p.type == "fixed":
            example[p.name] = _hparam_value(p.value)
        else:
            low = p.low if p.low is not None else 0
            example[p.name] = float(low) if p.type == "float" else int(low)
    metrics = {name: 0.0 for name in metric_names(spec)}
    experiment, _start, _end = hparams(example, metrics, discrete)
    return experiment


class TrialLog:
    """The event files of one trial. Every method is a no-op once writing has failed."""

    def __init__(self, root: Path, spec: StudySpec, trial_number: int) -> None:
        self.root = root
        self.folder = root / run_name(trial_number)
        self._spec = spec
        self._writer: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            root.mkdir(parents=True, exist_ok=True)
            if not any(p.name.startswith(_EVENTS) for p in root.iterdir()):
                # First trial of the study (or one of the first few, running at once:
                # they write the same summary).
                with SummaryWriter(log_dir=str(root)) as writer:
                    writer.file_writer.add_summary(_experiment(spec))
            self._writer = SummaryWriter(log_dir=str(self.folder))
        except Exception as exc:  # an unwritable folder must not fail the trial
            self._gave_up(exc)

    def _gave_up(self, exc: BaseException) -> None:
        warnings.warn(
            f"TensorBoard files not written to {self.folder}: {exc}", RuntimeWarning, stacklevel=3
        )
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        self._writer = None

    def epoch(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """One epoch's reported numbers, as ``curve/<name>`` at step ``epoch``."""
        if self._writer is None:
            return
        try:
            for name, value in metrics.items():
                if _is_number(value):
                    self._writer.add_scalar(CURVE_PREFIX + name, float(value), epoch)
        except Exception as exc:
            self._gave_up(exc)

    def finish(self, params: Mapping[str, Any], metrics: Mapping[str, Any], state: str) -> None:
        """The trial's parameters and final metrics (those it has), then close the files.

        ``state`` (``COMPLETE``, ``PRUNED``, ``FAIL``) is recorded as the text ``state``;
        the session's status is failure for ``FAIL``, success otherwise.
        """
        if self._writer is None:
            return
        try:
            from tensorboard.plugins.hparams import api_pb2
            from torch.utils.tensorboard.summary import hparams

            known = {
                name: float(metrics[name])
                for name in metric_names(self._spec)
                if _is_number(metrics.get(name))
            }
            values = {name: _hparam_value(v) for name, v in params.items()}
            _experiment_part, start, end = hparams(values, known)
            # TensorBoard knows success and failure; a trial stopped early ended normally,
            # with the figures it reached (its ``state`` text says PRUNED).
            status = (
                api_pb2.Status.STATUS_FAILURE if state == "FAIL" else api_pb2.Status.STATUS_SUCCESS
            )
            _set_status(end, status)
            step = int(metrics.get("epochs") or 0)
            self._writer.file_writer.add_summary(start)
            self._writer.file_writer.add_summary(end)
            for name, value in known.items():
                self._writer.add_scalar(name, value, step)
            self._writer.add_text("state", state, step)
            self._writer.close()
            self._writer = None
        except Exception as exc:
            self._gave_up(exc)

    def close(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._writer = None


def _set_status(end_summary: Any, status: int) -> None:
    """Rewrite the status inside torch's session-end summary."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    value = end_summary.value[0]
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    data.session_end_info.status = status
    value.metadata.plugin_data.content = data.SerializeToString()


def pack_run(log: TrialLog) -> bytes:
    """A trial's run as one file (tar.gz): the study's experiment summary (the event
    files at the top of ``log.root``) and the trial's own folder."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(log.root.iterdir()):
            if path.is_file() and path.name.startswith(_EVENTS):
                tar.add(path, arcname=path.name)
        for path in sorted(log.folder.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=path.relative_to(log.root).as_posix())
    return buffer.getvalue()


_SCRATCH_PREFIX = "tuner-tensorboard-"
# A scratch folder this old was left by a worker that was killed mid-trial.
_SCRATCH_AGE_S = 86400.0


def scratch_folder() -> Path:
    """A new folder for one trial's run on its way to the study store; folders that
    killed workers left behind are removed first (once per process)."""
    import tempfile

    top = Path(tempfile.gettempdir())
    _clear_old_scratch(top)
    return Path(tempfile.mkdtemp(prefix=_SCRATCH_PREFIX, dir=top))


@functools.cache
def _clear_old_scratch(top: Path) -> None:
    import time

    with contextlib.suppress(OSError):
        for old in top.glob(_SCRATCH_PREFIX + "*"):
            with contextlib.suppress(OSError):
                info = old.stat()
                if info.st_uid == os.getuid() and time.time() - info.st_mtime > _SCRATCH_AGE_S:
                    shutil.rmtree(old, ignore_errors=True)


def keep_run(trial: optuna.Trial, log: TrialLog, scratch: Path, *, upload: bool = True) -> None:
    """Keep the trial's finished run in the study store (unless not ``upload``: a trial
    the store failed), then remove ``scratch``, the folder it was written in. A store that
    cannot take it costs the trial its run (with a warning), never the trial."""
    from .storage import StoreError
    from .storage._blobs import StoreArtifacts, run_id
    from .storage._optuna import rdb_backend, study_storage
    from .storage._outage import ride_out

    try:
        if upload and log.folder.is_dir():
            data = pack_run(log)
            backend = rdb_backend(study_storage(trial.study))
            blobs = StoreArtifacts(backend, trial.study.study_name)
            ride_out(
                lambda: blobs.write(
                    run_id(trial._trial_id), io.BytesIO(data), replace=True, what="run"
                ),
                backend,
            )
    except (StoreError, OSError) as exc:
        warnings.warn(
            f"TensorBoard run of trial {trial.number} not kept in the study store: {exc}",
            RuntimeWarning,
            stacklevel=2,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def unpack_runs(packed: Iterable[bytes], into: Path) -> int:
    """Lay runs packed by :func:`pack_run` out in ``into`` as TensorBoard reads them (the
    experiment summary once); how many runs. Only plain files inside ``into`` are written;
    a run that cannot be read is left out, with a warning."""
    import zlib

    into.mkdir(parents=True, exist_ok=True)
    summary = False
    count = 0
    for data in packed:
        try:
            files = _run_files(data)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            warnings.warn(f"a TensorBoard run left out: {exc}", RuntimeWarning, stacklevel=2)
            continue
        for parts, content in files:
            if len(parts) == 1:  # the experiment summary, which every run carries
                if summary:
                    continue
                summary = True
            target = into.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        count += 1
    return count


def _run_files(data: bytes) -> list[tuple[tuple[str, ...], bytes]]:
    """The plain files of one packed run, with paths that stay inside the folder."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            parts = PurePosixPath(member.name).parts
            if not member.isfile() or not parts or parts[0] == "/" or ".." in parts:
                continue
            source = tar.extractfile(member)
            if source is not None:
                out.append((parts, source.read()))
    return out
