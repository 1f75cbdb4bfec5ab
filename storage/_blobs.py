"""Trial model files kept in the study store itself, for workers that share no disk.

A kept model is a row of our own table ``tuner_artifacts`` in the database that holds
the studies: its artifact id, its study and its bytes. Every machine that reaches the
store (Ray workers on other nodes, ``tuner export`` or ``tuner retime`` on a laptop)
reads the same models, with nothing to mount. :class:`StoreArtifacts` is an Optuna artifact
store (``open_reader``, ``write``, ``remove``), so ``optuna.artifacts.upload_artifact``
writes to it as to a folder.

The run's driver creates the table before its workers start (a write that finds it
missing creates it too); a store without it holds no models. Readers never create it.
Database errors come out as :class:`StoreError`, one line.

Each trial's TensorBoard run is a row of the same table too (its files packed), with the
id :func:`run_id` gives it: the models are counted apart from the runs.
"""

from __future__ import annotations

import functools
import io
import weakref
from datetime import datetime, timezone
from typing import Any, BinaryIO

import sqlalchemy
import sqlalchemy.exc
from sqlalchemy import Column, LargeBinary, MetaData, String, Table
from sqlalchemy.dialects import mysql

from ._errors import StoreError
from ._locks import PRECISE_TIME, _engine
from ._url import MYSQL

_metadata = MetaData()
_blobs = Table(
    "tuner_artifacts",
    _metadata,
    Column("artifact_id", String(64), primary_key=True),
    Column("study", String(512), nullable=False, index=True),
    # MySQL's BLOB holds 64 KiB; LONGBLOB holds what max_allowed_packet lets through.
    Column("content", LargeBinary().with_variant(mysql.LONGBLOB(), *MYSQL)),
    Column("created_at", PRECISE_TIME, nullable=False),
)


# MySQL's max_allowed_packet, by engine.
_PACKET_LIMITS: weakref.WeakKeyDictionary[sqlalchemy.Engine, int] = weakref.WeakKeyDictionary()

RUN_PREFIX = "tensorboard-"


def run_id(trial_id: int) -> str:
    """The row id of a trial's TensorBoard run (one per trial, whatever its study)."""
    return f"{RUN_PREFIX}{trial_id}"


def _is_run(column: Any) -> Any:
    return column.startswith(RUN_PREFIX, autoescape=True)


def _missing_table(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) == "42P01":  # PostgreSQL: undefined table
        return True
    if tuple(getattr(orig, "args", ()))[:1] == (1146,):  # MySQL: table doesn't exist
        return True
    text = str(orig or exc).lower()
    return "tuner_artifacts" in text and ("no such table" in text or "exist" in text)


def _failed(what: str, exc: BaseException) -> StoreError:
    return StoreError(f"the study store could not {what}: {_first_line(exc)}")


class StoreArtifacts:
    """Model files as rows of the study store (an Optuna ``ArtifactStore``).

    Args:
        store: an Optuna ``RDBStorage`` (or its engine).
        study: the study the files written belong to (``tuner delete`` removes them with it).
    """

    def __init__(self, store: Any, study: str = "") -> None:
        self._engine = _engine(store)
        self._study = study

    def _check_packet(self, data: bytes, what: str) -> None:
        """On MySQL, refuse a model the server would not take in one statement: past its
        ``max_allowed_packet`` the server drops the connection, which looks like an
        outage and would be waited on in vain."""
        if self._engine.dialect.name not in MYSQL:
            return
        limit = _PACKET_LIMITS.get(self._engine)  # asked once per engine, not per model
        if limit is None:
            try:
                with self._engine.connect() as connection:
                    found = connection.exec_driver_sql("SELECT @@max_allowed_packet").scalar()
            except sqlalchemy.exc.SQLAlchemyError as exc:
                raise _failed("say how large a model it takes", exc) from exc
            limit = _PACKET_LIMITS[self._engine] = int(found or 0)
        needed = _sent_size(data, self._engine.dialect.driver)
        if needed > limit:
            raise StoreError(
                f"the study store cannot take a {len(data)}-byte {what}: sent, it needs "
                f"{needed} bytes, more than the server's max_allowed_packet "
                f"({limit}); raise max_allowed_packet on the server, or keep "
                "models and runs in a folder (artifacts.path)"
            )

    def create_table(self) -> None:
        """Make the table (where it is missing), before workers write to it at once."""
        try:
            _metadata.create_all(self._engine, tables=[_blobs], checkfirst=True)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            if not self._has_table():  # not another process that made it meanwhile
                raise _failed("make its table tuner_artifacts", exc) from exc

    def _has_table(self) -> bool:
        try:
            return sqlalchemy.inspect(self._engine).has_table(_blobs.name)
        except sqlalchemy.exc.SQLAlchemyError:
            return False

    def write(
        self,
        artifact_id: str,
        content_body: BinaryIO,
        *,
        replace: bool = False,
        what: str = "model",
    ) -> None:
        """Store a file under ``artifact_id``; with ``replace``, in place of the one that
        id has (a write retried after its commit was lost lands once). ``what`` names the
        file in errors."""
        data = content_body.read()
        self._check_packet(data, what)
        row = {
            "artifact_id": artifact_id,
            "study": self._study,
            "content": data,
            "created_at": datetime.now(timezone.utc).replace(tzinfo=None),
        }
        for attempt in range(2):
            try:
                with self._engine.begin() as connection:
                    if replace:
                        connection.execute(
                            _blobs.delete().where(_blobs.c.artifact_id == artifact_id)
                        )
                    connection.execute(_blobs.insert().values(**row))
                return
            except sqlalchemy.exc.SQLAlchemyError as exc:
                if attempt == 0 and _missing_table(exc):
                    self.create_table()
                    continue
                raise _failed(f"take a {len(data)}-byte {what}", exc) from exc

    def read(self, artifact_id: str) -> bytes | None:
        """The file's bytes, or None where the store holds no such file."""
        query = sqlalchemy.select(_blobs.c.content).where(_blobs.c.artifact_id == artifact_id)
        try:
            with self._engine.connect() as connection:
                found = connection.execute(query).scalar_one_or_none()
        except sqlalchemy.exc.SQLAlchemyError as exc:
            if _missing_table(exc):
                return None
            raise _failed(f"read the model {artifact_id}", exc) from exc
        return None if found is None else bytes(found)

    def open_reader(self, artifact_id: str) -> BinaryIO:
        from optuna.artifacts.exceptions import ArtifactNotFound

        data = self.read(artifact_id)
        if data is None:
            raise ArtifactNotFound(f"the study store holds no artifact {artifact_id!r}")
        return io.BytesIO(data)

    def existing(self, artifact_ids: list[str]) -> set[str]:
        """Which of ``artifact_ids`` the store holds (one query)."""
        if not artifact_ids:
            return set()
        column = _blobs.c.artifact_id
        try:
            with self._engine.connect() as connection:
                found = connection.execute(
                    sqlalchemy.select(column).where(column.in_(artifact_ids))
                ).scalars()
                return {str(a) for a in found}
        except sqlalchemy.exc.SQLAlchemyError as exc:
            if _missing_table(exc):
                return set()
            raise _failed("look its models up", exc) from exc

    def exists(self, artifact_id: str) -> bool:
        return artifact_id in self.existing([artifact_id])

    def remove(self, artifact_id: str) -> None:
        """Delete one file (nothing where it is gone already)."""
        try:
            with self._engine.begin() as connection:
                connection.execute(_blobs.delete().where(_blobs.c.artifact_id == artifact_id))
        except sqlalchemy.exc.SQLAlchemyError as exc:
            if not _missing_table(exc):
                raise _failed(f"delete the model {artifact_id}", exc) from exc

    def count_study(self, study: str) -> tuple[int, int]:
        """How many model files ``study`` has in the store, and their bytes."""
        count, size, _runs, _run_bytes = self.count_all(study)
        return count, size

    def count_all(self, study: str) -> tuple[int, int, int, int]:
        """How many model files ``study`` has in the store and their bytes, and how many
        TensorBoard runs and theirs."""
        size = sqlalchemy.func.coalesce(
            sqlalchemy.func.sum(sqlalchemy.func.length(_blobs.c.content)), 0
        )
        run = _is_run(_blobs.c.artifact_id)
        query = (
            sqlalchemy.select(run, sqlalchemy.func.count(), size)
            .where(_blobs.c.study == study)
            .group_by(run)
        )
        models, total, runs, run_bytes = 0, 0, 0, 0
        try:
            with self._engine.connect() as connection:
                for is_run, count, nbytes in connection.execute(query):
                    if is_run:
                        runs, run_bytes = int(count), int(nbytes)
                    else:
                        models, total = int(count), int(nbytes)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            if _missing_table(exc):
                return 0, 0, 0, 0
            raise _failed("count its models", exc) from exc
        return models, total, runs, run_bytes

    def runs(self, study: str) -> list[tuple[str, bytes]]:
        """Every TensorBoard run ``study`` has in the store: (row id, packed files)."""
        query = sqlalchemy.select(_blobs.c.artifact_id, _blobs.c.content).where(
            _blobs.c.study == study, _is_run(_blobs.c.artifact_id)
        )
        try:
            with self._engine.connect() as connection:
                return [(str(i), bytes(c)) for i, c in connection.execute(query)]
        except sqlalchemy.exc.SQLAlchemyError as exc:
            if _missing_table(exc):
                return []
            raise _failed(f"read the TensorBoard runs of {study!r}", exc) from exc

    def remove_study(self, study: str) -> tuple[int, int, int]:
        """Delete every file of ``study``: how many models, the bytes of all it removed,
        and how many TensorBoard runs."""
        count, size, runs, run_bytes = self.count_all(study)
        if count or runs:
            try:
                with self._engine.begin() as connection:
                    connection.execute(_blobs.delete().where(_blobs.c.study == study))
            except sqlalchemy.exc.SQLAlchemyError as exc:
                raise _failed(f"delete the models of {study!r}", exc) from exc
        return count, size + run_bytes, runs


def _sent_size(data: bytes, driver: str) -> int:
    """Bytes a MySQL driver sends for an INSERT of ``data``: recent PyMySQL writes binary
    as hex; other drivers (and PyMySQL before 1.2.3) escape seven byte values, which
    double, and send the rest as they are. 1 KiB covers the rest of the statement."""
    if driver == "pymysql" and _pymysql_sends_hex():
        return 2 * len(data) + 1024
    escaped = sum(data.count(byte) for byte in (b"\0", b"\\", b"\n", b"\r", b"\x1a", b"'", b'"'))
    return len(data) + escaped + 1024


@functools.cache
def _pymysql_sends_hex() -> bool:
    from pymysql.converters import escape_item

    return "X'" in str(escape_item(b"\x00", "utf8mb4"))


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
