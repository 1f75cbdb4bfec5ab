"""Trial model files kept in the study store itself, for workers that share no disk.

A kept model is a row of our own table ``tuner_artifacts`` in the database that holds
the studies: its artifact id, its study and its bytes. Every machine that reaches the
store (Ray workers on other nodes, ``tuner export`` on a laptop, the dashboard) reads
the same models, with nothing to mount. :class:`StoreArtifacts` is an Optuna artifact
store (``open_reader``, ``write``, ``remove``), so ``optuna.artifacts.upload_artifact``
writes to it as to a folder.

The table is created by the first write; a store without it holds no models. Readers
never create it.
"""

from __future__ import annotations

import io
from datetime import datetime, timezone
from typing import Any, BinaryIO

import sqlalchemy
import sqlalchemy.exc
from sqlalchemy import Column, DateTime, LargeBinary, MetaData, String, Table
from sqlalchemy.dialects import mysql

from ._errors import StoreError

_metadata = MetaData()
_blobs = Table(
    "tuner_artifacts",
    _metadata,
    Column("artifact_id", String(64), primary_key=True),
    Column("study", String(512), nullable=False, index=True),
    # MySQL's BLOB holds 64 KiB; LONGBLOB holds what max_allowed_packet lets through.
    Column("content", LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")),
    Column("created_at", DateTime, nullable=False),
)


def _engine(store: Any) -> sqlalchemy.Engine:
    engine = getattr(store, "engine", store)
    if not isinstance(engine, sqlalchemy.Engine):
        raise TypeError(
            f"expected an RDBStorage or a SQLAlchemy engine, got {type(store).__name__}"
        )
    return engine


def _missing_table(exc: sqlalchemy.exc.DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return "tuner_artifacts" in text and ("no such table" in text or "exist" in text)


class StoreArtifacts:
    """Model files as rows of the study store (an Optuna ``ArtifactStore``).

    Args:
        store: an Optuna ``RDBStorage`` (or its engine).
        study: the study the files written belong to (``tuner delete`` removes them with it).
    """

    def __init__(self, store: Any, study: str = "") -> None:
        self._engine = _engine(store)
        self._study = study

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        data = content_body.read()
        row = {
            "artifact_id": artifact_id,
            "study": self._study,
            "content": data,
            "created_at": datetime.now(timezone.utc).replace(tzinfo=None),
        }
        try:
            _metadata.create_all(self._engine, tables=[_blobs], checkfirst=True)
            with self._engine.begin() as connection:
                connection.execute(_blobs.insert().values(**row))
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise StoreError(
                f"the study store did not take a {len(data)}-byte model: {_first_line(exc)}"
            ) from exc

    def read(self, artifact_id: str) -> bytes | None:
        """The file's bytes, or None where the store holds no such file."""
        try:
            with self._engine.connect() as connection:
                found = connection.execute(
                    sqlalchemy.select(_blobs.c.content).where(_blobs.c.artifact_id == artifact_id)
                ).scalar_one_or_none()
        except sqlalchemy.exc.DBAPIError as exc:
            if _missing_table(exc):
                return None
            raise
        return None if found is None else bytes(found)

    def open_reader(self, artifact_id: str) -> BinaryIO:
        from optuna.artifacts.exceptions import ArtifactNotFound

        data = self.read(artifact_id)
        if data is None:
            raise ArtifactNotFound(f"the study store holds no artifact {artifact_id!r}")
        return io.BytesIO(data)

    def exists(self, artifact_id: str) -> bool:
        try:
            with self._engine.connect() as connection:
                found = connection.execute(
                    sqlalchemy.select(_blobs.c.artifact_id).where(
                        _blobs.c.artifact_id == artifact_id
                    )
                ).first()
        except sqlalchemy.exc.DBAPIError as exc:
            if _missing_table(exc):
                return False
            raise
        return found is not None

    def remove(self, artifact_id: str) -> None:
        """Delete one file (nothing where it is gone already)."""
        self._delete(_blobs.c.artifact_id == artifact_id)

    def remove_study(self, study: str) -> tuple[int, int]:
        """Delete every file of ``study``: how many, and their bytes."""
        try:
            with self._engine.begin() as connection:
                count, size = connection.execute(
                    sqlalchemy.select(
                        sqlalchemy.func.count(),
                        sqlalchemy.func.coalesce(
                            sqlalchemy.func.sum(sqlalchemy.func.length(_blobs.c.content)), 0
                        ),
                    ).where(_blobs.c.study == study)
                ).one()
                if count:
                    connection.execute(_blobs.delete().where(_blobs.c.study == study))
        except sqlalchemy.exc.DBAPIError as exc:
            if _missing_table(exc):
                return 0, 0
            raise
        return int(count), int(size)

    def _delete(self, where: Any) -> None:
        try:
            with self._engine.begin() as connection:
                connection.execute(_blobs.delete().where(where))
        except sqlalchemy.exc.DBAPIError as exc:
            if not _missing_table(exc):
                raise


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
