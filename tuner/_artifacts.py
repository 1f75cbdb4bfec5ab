"""Trial artifacts: the compressed model of a trial, kept next to the study store.

Each trial that finishes uploads one file with Optuna's artifact API
(``optuna.artifacts.upload_artifact`` into a ``FileSystemArtifactStore``): the float
model after sparsity (pruned and, when structured, rebuilt smaller), the compression
settings, calibration inputs and the test split. int8 is a deterministic step, so it is
redone from these when the model is exported; the file holds everything ``tuner export``
needs without the workload.

Where: in the study store itself (``storage._blobs``) where ``artifacts.in_store`` says so,
or, unset, for a database server's store without a named folder, so that machines that
share no disk share the models; else ``artifacts.path`` from the spec, else a
``tuner-artifacts`` folder next to a SQLite store file, else ``$TUNER_ARTIFACTS``, else
``./tuner-artifacts``; one sub-folder per study. Each trial records the folder it used,
or ``study store`` (user attr ``artifact_store``), so ``tuner export`` finds it again.

Keep-policy (``artifacts.keep``): ``pareto`` keeps only the trials on the current Pareto
front (dominated trials' files are deleted after each trial and at the end of a run),
``all`` keeps every trial's, ``none`` keeps nothing. A dropped artifact is recorded in the
study's user attrs (``tuner.artifact_dropped.<trial>``), since a finished trial cannot be
changed.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from ._exceptions import ArtifactMissing, StorageError
from .storage import StoreError, keys
from .storage._blobs import StoreArtifacts
from .storage._optuna import rdb_backend, study_storage
from .storage._outage import ride_out

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ._spec import ArtifactsSpec, StudySpec

# torch loads where a model is read or written, not on import: `tuner pick` and the
# other commands that only look a trial's file up stay quick.

DEFAULT_FOLDER = "tuner-artifacts"
ENV_VAR = "TUNER_ARTIFACTS"
FILENAME = "model.pt"
FORMAT_VERSION = 1

ID_ATTR = keys.ARTIFACT_ID_ATTR
STORE_ATTR = keys.ARTIFACT_STORE_ATTR
IN_STORE = keys.ARTIFACT_IN_STORE
KEEP_ATTR = keys.ARTIFACT_KEEP_ATTR
STATUS_ATTR = keys.ARTIFACT_STATUS_ATTR
DROPPED_PREFIX = keys.ARTIFACT_DROPPED_PREFIX


def load_program(source: Any) -> nn.Module:
    """The module of a ``torch.export`` program saved to ``source`` (a path or a file object),
    as trials time it: without the Python check of each call's inputs that ``.module()``
    runs before the graph (``validate_inputs = False``).

    That check runs on every call, compiled or not: on the 1-D CNN of ``mnist1d-cnn`` in
    int8, compiled, it cost 0.05 ms a pass (a third of the batch-1 latency) and made the
    program slower than the int8 graph the trial timed. The graph's own guards on the input
    shapes stay: an input of another shape still fails.

    An int8 graph calls the quantize and dequantize ops that torchao registers on import; a
    process that never quantized anything has not imported it, and loading fails there.
    """
    from ._compression import import_torchao

    import_torchao()  # registers the ops an int8 graph calls
    import torch

    module = torch.export.load(source).module()
    if hasattr(module, "validate_inputs"):
        setattr(module, "validate_inputs", False)  # noqa: B010 - a flag, not a submodule
    return module


@dataclass
class TrialModel:
    """What a trial keeps: enough to rebuild and re-measure the model it shipped.

    Attributes:
        model: the float model after sparsity (what int8 is applied to).
        quantize: ``"none"``, ``"int8"`` or ``"float8"`` (not exported: made on a GPU).
        prune_threshold: fraction pruned.
        prune_structure: ``"unstructured"`` or ``"structured"``.
        calibration: inputs int8 was calibrated on (``None`` when the workload gave none).
        test_data: the held-out (inputs, labels) the trial's ``test_accuracy`` was measured on.
        measure: the spec's ``measure`` settings and the thread count the trial used.
        int8_layers: layers that computed in int8.
        float_layers: layers kept in float by choice in an int8 model.
        qat_program: the int8 graph quantization-aware training learned
            (``torch.export.save`` bytes); ``None`` when int8 was calibrated after training.
    """

    model: nn.Module
    quantize: str
    prune_threshold: float
    prune_structure: str
    calibration: torch.Tensor | None
    test_data: tuple[torch.Tensor, torch.Tensor]
    measure: dict[str, Any] = field(default_factory=dict)
    int8_layers: list[str] = field(default_factory=list)
    float_layers: list[str] = field(default_factory=list)
    qat_program: bytes | None = None

    @property
    def example(self) -> torch.Tensor:
        return self.test_data[0][:1]

    def shipped_torch(self) -> nn.Module:
        """The PyTorch model as the trial shipped it on the CPU (int8 redone from the float model)."""
        from ._compression import quantize

        if self.qat_program is not None:
            import io

            return load_program(io.BytesIO(self.qat_program))
        shipped = quantize(
            self.model,
            mode=self.quantize,
            calibration_inputs=self.calibration,
            keep_float=tuple(self.float_layers),
        )[0]
        shipped.eval()
        return shipped


def _own(tensor: torch.Tensor) -> torch.Tensor:
    # A slice shares its storage with the whole tensor, and torch.save writes all of it.
    return tensor.detach().cpu().clone()


def save_trial_model(tm: TrialModel, path: Path) -> None:
    payload = {
        "format_version": FORMAT_VERSION,
        "model": tm.model,
        "quantize": tm.quantize,
        "prune_threshold": tm.prune_threshold,
        "prune_structure": tm.prune_structure,
        "calibration": None if tm.calibration is None else _own(tm.calibration),
        "test_data": (_own(tm.test_data[0]), _own(tm.test_data[1])),
        "measure": tm.measure,
        "int8_layers": tm.int8_layers,
        "float_layers": tm.float_layers,
        "qat_program": tm.qat_program,
    }
    import torch

    torch.save(payload, path)


def load_trial_model(path: Path) -> TrialModel:
    """Read a trial's model file.

    The float model is a pickled module: the classes it uses (a user workload's module)
    must be importable, as they were when the trial ran.
    """
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError) as exc:
        what = (
            "a model kept in the study store" if path.parent == _cache() else f"model file {path}"
        )
        raise ArtifactMissing(
            f"{what} needs code that is not importable here ({exc}); run from "
            "the folder that holds the workload's module"
        ) from exc
    version = payload.get("format_version") if isinstance(payload, dict) else None
    if version != FORMAT_VERSION:
        raise ArtifactMissing(f"{path} is not a tuner trial model file (version {version!r})")
    return TrialModel(
        model=payload["model"].eval(),
        quantize=payload["quantize"],
        prune_threshold=payload["prune_threshold"],
        prune_structure=payload["prune_structure"],
        calibration=payload["calibration"],
        test_data=payload["test_data"],
        measure=payload["measure"],
        int8_layers=list(payload["int8_layers"]),
        float_layers=list(payload.get("float_layers", [])),
        qat_program=payload.get("qat_program"),
    )


# --- where ---------------------------------------------------------------------------


def artifacts_root(path: str | None, storage_url: str) -> Path:
    """The folder that holds every study's artifacts (absolute).

    ``path`` (the spec's ``artifacts.path``) wins; else ``tuner-artifacts`` next to a
    SQLite store file; else ``$TUNER_ARTIFACTS``; else ``./tuner-artifacts``.
    """
    if path:
        return Path(path).expanduser().resolve()
    import sqlalchemy.engine

    try:
        url = sqlalchemy.engine.make_url(storage_url)
    except Exception:
        url = None
    if url is not None and url.get_backend_name() == "sqlite":
        database = url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            return (Path(database).expanduser().resolve().parent / DEFAULT_FOLDER).resolve()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser().resolve()
    return (Path.cwd() / DEFAULT_FOLDER).resolve()


def study_folder(root: Path, study_name: str) -> Path:
    return root / study_name


def _artifact_store(folder: Path) -> Any:
    from optuna.artifacts import FileSystemArtifactStore

    return FileSystemArtifactStore(base_path=folder)


# --- keep ----------------------------------------------------------------------------


def _front(
    study: optuna.Study,
    objectives: dict[str, str] | None = None,
    extra: tuple[int, list[float]] | None = None,
) -> tuple[set[int], set[int]]:
    """The front's trial numbers, and the numbers of every trial it was chosen from."""
    from .storage import pareto_mask, study_objectives

    if objectives is None:
        objectives = study_objectives(study)
    names = list(objectives)
    rows = _complete_values(study, len(names))
    if extra is not None:
        rows[extra[0]] = [float(v) for v in extra[1]]
    if not rows:
        return set(), set()
    import numpy as np

    numbers = list(rows)
    mask = pareto_mask(np.array([rows[n] for n in numbers]), [objectives[n] for n in names])
    return {n for n, on_front in zip(numbers, mask) if on_front}, set(numbers)


def _complete_values(study: optuna.Study, n_objectives: int) -> dict[int, list[float]]:
    """Objective values of the complete, feasible trials.

    Read through the study's trial cache, so a worker reads only the trials that
    finished since its last look.
    """
    return {
        t.number: list(t.values)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.user_attrs.get("feasible", True) is not False
        and t.values
        and len(t.values) == n_objectives
    }


@dataclass(frozen=True)
class _KeptFile:
    number: int
    running: bool
    artifact_id: str
    store: str | None


def _kept_files(study: optuna.Study) -> list[_KeptFile]:
    """Trials that recorded a model file (read through the study's trial cache)."""
    return [
        _KeptFile(
            t.number,
            t.state == optuna.trial.TrialState.RUNNING,
            str(t.user_attrs[ID_ATTR]),
            t.user_attrs.get(STORE_ATTR),
        )
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get(ID_ATTR)
    ]


def _drop(study: optuna.Study, kept: _KeptFile, folder: Path, in_store: set[str]) -> bool:
    """Delete ``kept``'s file; ``in_store``: the ids of files the study store holds."""
    store: Any
    if kept.store == IN_STORE:
        store = StoreArtifacts(rdb_backend(study_storage(study)))
        there = kept.artifact_id in in_store
    else:
        store_folder = Path(kept.store or folder)
        store = _artifact_store(store_folder)
        there = (store_folder / kept.artifact_id).exists()
    if not there:
        return False
    study.set_user_attr(f"{DROPPED_PREFIX}{kept.number}", "keep: pareto")
    try:
        store.remove(kept.artifact_id)
    except Exception:  # another worker dropped it first
        return False
    return True


def enforce_keep(
    study: optuna.Study,
    keep: str,
    folder: Path,
    *,
    front: tuple[set[int], set[int]] | None = None,
) -> int:
    """Delete the files of trials that are no longer on the front (``keep: pareto``).

    Args:
        front: the front and the trials it was chosen from (see :func:`_front`), when
            the caller has just read them. A trial that finished after that read is
            left alone: it may be on the front.

    Returns:
        How many files were deleted.
    """
    if keep != "pareto":
        return 0
    on_front, judged = front if front is not None else _front(study)
    doomed = [
        kept
        for kept in _kept_files(study)
        if kept.number not in on_front and kept.number in judged and not kept.running
    ]
    in_store: set[str] = set()
    if any(kept.store == IN_STORE for kept in doomed):
        try:
            in_store = StoreArtifacts(rdb_backend(study_storage(study))).existing(
                [kept.artifact_id for kept in doomed if kept.store == IN_STORE]
            )
        except StoreError:  # the next trial's cleanup tries again
            in_store = set()
    return sum(_drop(study, kept, folder, in_store) for kept in doomed)


def storage_url(storage: Any) -> str:
    """The URL of an Optuna storage (also through Optuna's caching wrapper)."""
    url = getattr(rdb_backend(storage), "url", "")
    return str(url or "")


def keep_trial_model(
    trial: optuna.Trial,
    tm: TrialModel,
    *,
    spec: StudySpec,
    values: list[float],
    feasible: bool,
) -> dict[str, Any]:
    """Upload ``tm`` as ``trial``'s artifact when the keep-policy wants it.

    Under ``keep: pareto`` a trial that is infeasible or dominated when it finishes never
    uploads (dominance does not go away), and the trials it dominates lose theirs. A file
    that cannot be written leaves the trial complete, saying why in its ``artifact`` attr.

    Returns:
        The trial's artifact attributes, for the caller to write with its metrics.
    """
    keep = spec.artifacts.keep
    storage = study_storage(trial.study)
    root = artifacts_root(spec.artifacts.path, storage_url(storage))
    folder = study_folder(root, trial.study.study_name)
    in_store = models_in_store(spec.artifacts, storage_url(storage))
    try:
        attrs = _keep(
            trial,
            tm,
            keep=keep,
            folder=None if in_store else folder,
            objectives=dict(spec.objectives),
            values=values,
            feasible=feasible,
        )
    except OSError as exc:
        attrs = {STATUS_ATTR: f"not kept: cannot write to {folder}: {exc.strerror}"}
    except StoreError as exc:
        attrs = {STATUS_ATTR: f"not kept: {exc}"}
    return {KEEP_ATTR: keep, **attrs}


def models_in_store(artifacts: ArtifactsSpec, storage_url_: str) -> bool:
    """Whether trials keep their model files in the study store (``artifacts.in_store``;
    unset: a database server's store, unless a folder is named)."""
    if artifacts.in_store is not None:
        return artifacts.in_store
    if artifacts.path or os.environ.get(ENV_VAR):
        return False
    import sqlalchemy.engine

    try:
        return sqlalchemy.engine.make_url(storage_url_).get_backend_name() != "sqlite"
    except Exception:
        return False


def _keep(
    trial: optuna.Trial,
    tm: TrialModel,
    *,
    keep: str,
    folder: Path | None,
    objectives: dict[str, str],
    values: list[float],
    feasible: bool,
) -> dict[str, Any]:
    """Upload to ``folder``, or to the study store where it is None."""
    if keep == "none":
        return {STATUS_ATTR: "not kept (artifacts.keep: none)"}
    study = trial.study
    front: tuple[set[int], set[int]] = (set(), set())
    if keep == "pareto":
        if not feasible:
            return {STATUS_ATTR: "dropped by keep: pareto (infeasible)"}
        front = _front(study, objectives, (trial.number, values))
        if trial.number not in front[0]:
            return {STATUS_ATTR: "dropped by keep: pareto (dominated when it finished)"}
    store: Any
    if folder is None:
        store = StoreArtifacts(rdb_backend(study_storage(study)), study.study_name)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        store = _artifact_store(folder)
    with tempfile.TemporaryDirectory(prefix="tuner-artifact-") as tmp:
        path = Path(tmp) / FILENAME
        try:
            save_trial_model(tm, path)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            # e.g. a model class defined inside the workload function
            return {STATUS_ATTR: f"not kept: the model cannot be pickled ({exc})"}

        def upload() -> str:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.artifacts.upload_artifact(
                    artifact_store=store,
                    file_path=str(path),
                    study_or_trial=trial,
                    mimetype="application/x-pytorch",
                )

        # A model for the study store rides out a database outage as the trial's other
        # writes do (each try is one new row, or none).
        in_store = folder is None
        artifact_id = ride_out(upload, rdb_backend(study_storage(study))) if in_store else upload()
    if keep == "pareto":
        # (a file in the study store is found by its trial's STORE_ATTR; the folder is unused)
        enforce_keep(study, keep, folder or Path(), front=front)
    where = IN_STORE if folder is None else str(folder)
    return {ID_ATTR: artifact_id, STORE_ATTR: where, STATUS_ATTR: "kept"}


# --- find ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ArtifactStatus:
    """Where a trial's model file is, or why there is none."""

    trial: int
    path: Path | None
    reason: str | None = None
    in_store: bool = False  # kept in the study store (``path`` is a local copy)


def artifact_status(
    study: optuna.Study, number: int, *, folder: str | Path | None = None, fetch: bool = True
) -> ArtifactStatus:
    """Find trial ``number``'s model file; ``folder`` overrides the recorded one. A file
    kept in the study store is read into a local file (unless ``fetch`` is off: then its
    status has no path, and says it is in the store).

    Raises:
        StorageError: the store could not be read (one line).
    """
    storage = study_storage(study)
    try:
        if not 0 <= number < 2**31:  # the store's integer column; a larger one overflows
            raise KeyError(number)
        # One row read, not the study's trials: re-timing asks this of every front trial.
        trial = storage.get_trial(
            storage.get_trial_id_from_study_id_trial_number(
                storage.get_study_id_from_name(study.study_name), number
            )
        )
    except KeyError:
        last = len(study.get_trials(deepcopy=False)) - 1
        raise StorageError(
            f"trial: study {study.study_name!r} has no trial {number}; expected 0..{last}"
        ) from None
    attrs = trial.user_attrs
    if trial.state != optuna.trial.TrialState.COMPLETE:
        return ArtifactStatus(
            number, None, f"trial {number} is {trial.state.name}; only complete trials keep a model"
        )
    dropped = study.user_attrs.get(f"{DROPPED_PREFIX}{number}")
    artifact_id = attrs.get(ID_ATTR)
    if not artifact_id:
        status = str(attrs.get(STATUS_ATTR) or "")
        if status.startswith("dropped by"):
            return ArtifactStatus(number, None, f"artifact of trial {number} was {status}")
        if status.startswith("not kept"):
            return ArtifactStatus(number, None, f"trial {number} kept no artifact{status[8:]}")
        return ArtifactStatus(number, None, f"trial {number} has no artifact recorded")
    if attrs.get(STORE_ATTR) == IN_STORE:
        blobs = StoreArtifacts(rdb_backend(storage))
        try:
            if not fetch and blobs.exists(str(artifact_id)):
                return ArtifactStatus(number, None, None, in_store=True)
            data = blobs.read(str(artifact_id)) if fetch else None
        except StoreError as exc:
            raise StorageError(str(exc)) from exc
        if data is not None:
            return ArtifactStatus(number, _cached(str(artifact_id), data), in_store=True)
        if dropped:
            return ArtifactStatus(
                number, None, f"artifact of trial {number} was dropped by {dropped}"
            )
        return ArtifactStatus(
            number, None, f"artifact of trial {number} is missing: the study store lacks it"
        )
    base = Path(folder) / study.study_name if folder else Path(str(attrs.get(STORE_ATTR) or ""))
    path = base / str(artifact_id)
    if path.is_file():
        return ArtifactStatus(number, path)
    if dropped:
        return ArtifactStatus(number, None, f"artifact of trial {number} was dropped by {dropped}")
    return ArtifactStatus(
        number, None, f"artifact of trial {number} is missing: {path} does not exist"
    )


_ARTIFACT_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _cache() -> Path:
    """This user's folder of models read from study stores."""
    from ._datasets import _cache_dir

    return _cache_dir() / "models"


# The cache keeps the models read last, up to this many bytes (the one just read always).
CACHE_BYTES = 1 << 30
# A partial file older than this was left by a process that died while writing it.
_PARTIAL_AGE_S = 3600.0


def _cached(artifact_id: str, data: bytes) -> Path:
    """A model file read from the study store, written to this user's cache as a local file
    (written afresh each time: what is loaded is what the store holds)."""
    if not _ARTIFACT_ID.match(artifact_id):
        raise StorageError(f"the study store names a model {artifact_id!r}; expected a UUID")
    folder = _cache()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / artifact_id
    with tempfile.NamedTemporaryFile(dir=folder, delete=False, prefix=".partial-") as out:
        out.write(data)
    os.replace(out.name, path)
    _prune_cache(folder, keep=path)
    return path


def _prune_cache(folder: Path, keep: Path) -> None:
    """Remove the models read longest ago (every read rewrites its file) while the folder
    holds more than ``CACHE_BYTES``, and partial files a dead process left."""
    now = time.time()
    files = []
    for entry in os.scandir(folder):
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # removed meanwhile by another process
        if not entry.is_file(follow_symlinks=False):
            continue
        if entry.name.startswith(".partial-"):
            if now - info.st_mtime > _PARTIAL_AGE_S:
                Path(entry.path).unlink(missing_ok=True)
            continue
        files.append((info.st_mtime, info.st_size, Path(entry.path)))
    total = sum(size for _, size, _ in files)
    for _, size, path in sorted(files, key=lambda f: f[0]):
        if total <= CACHE_BYTES:
            break
        if path != keep:
            path.unlink(missing_ok=True)
            total -= size


def enforce_keep_for_run(storage: Any, study_name: str, spec: StudySpec, storage_url_: str) -> int:
    """End-of-run cleanup: trials finished by several workers at once may all have kept files."""
    if spec.artifacts.keep != "pareto":
        return 0
    study = optuna.load_study(study_name=study_name, storage=storage)
    folder = study_folder(artifacts_root(spec.artifacts.path, storage_url_), study_name)
    return enforce_keep(study, "pareto", folder)
