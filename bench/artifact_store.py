"""What keeping trial models in the study store costs, against a folder.

A kept model is written once when its trial ends and read when it is exported or timed
again. This writes and reads model files of several sizes through the two places a
trial can keep them: a folder (Optuna's ``FileSystemArtifactStore``) and the study
store's ``tuner_artifacts`` table (``StoreArtifacts``), on PostgreSQL and on SQLite,
the arms interleaved repeat by repeat so that load drift hits them alike, and prints the
median milliseconds of each with the store's time over the folder's. A trial that keeps
a model of the size the built-in workloads ship (about 250 KB with its test split) runs
for seconds, so the last column gives the write as a share of a 2-second trial.

Needs a PostgreSQL server (``--postgres``, default the local one, trust auth); a scratch
database is made and dropped. Run: .venv/bin/python bench/artifact_store.py
[--sizes 64K,256K,4M,32M] [--repeats 7]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy
from optuna.artifacts import FileSystemArtifactStore

from tuner.storage._blobs import StoreArtifacts

TRIAL_S = 2.0


def _size(text: str) -> int:
    units = {"K": 1024, "M": 1024**2}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].isalpha() else int(text)


def _median_ms(samples: list[float]) -> float:
    return 1000 * statistics.median(samples)


def _arms(pg_url: str, folder: Path, sqlite_url: str) -> dict[str, Any]:
    pg = StoreArtifacts(sqlalchemy.create_engine(pg_url), "bench")
    lite = StoreArtifacts(sqlalchemy.create_engine(sqlite_url), "bench")
    pg.create_table()
    lite.create_table()
    folder.mkdir(parents=True)
    return {"folder": FileSystemArtifactStore(str(folder)), "postgresql": pg, "sqlite": lite}


def _once(store: Any, data: bytes) -> tuple[float, float]:
    artifact_id = str(uuid.uuid4())
    started = time.perf_counter()
    store.write(artifact_id, io.BytesIO(data))
    wrote = time.perf_counter() - started
    started = time.perf_counter()
    with store.open_reader(artifact_id) as reader:
        assert len(reader.read()) == len(data)
    read = time.perf_counter() - started
    store.remove(artifact_id)
    return wrote, read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64K,256K,4M,32M")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    sizes = [_size(s) for s in args.sizes.split(",")]

    name = f"tuner_bench_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    pg_url = sqlalchemy.engine.make_url(args.postgres).set(database=name)
    try:
        with tempfile.TemporaryDirectory(prefix="tuner-bench-") as tmp:
            arms = _arms(
                pg_url.render_as_string(hide_password=False),
                Path(tmp) / "models",
                f"sqlite:///{Path(tmp) / 'store.db'}",
            )
            rows = []
            for size in sizes:
                data = os.urandom(size)
                times: dict[str, tuple[list[float], list[float]]] = {a: ([], []) for a in arms}
                for _ in range(args.repeats):
                    for arm, store in arms.items():
                        wrote, read = _once(store, data)
                        times[arm][0].append(wrote)
                        times[arm][1].append(read)
                rows.append(
                    (size, {a: (_median_ms(w), _median_ms(r)) for a, (w, r) in times.items()})
                )
            _print(rows)
            for store in arms.values():
                if isinstance(store, StoreArtifacts):
                    store._engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _print(rows: list[tuple[int, dict[str, tuple[float, float]]]]) -> None:
    head = (
        f"{'model':>8} | {'folder w':>9} {'pg w':>9} {'pg/folder':>9} {'sqlite w':>9} "
        f"{'sqlite/folder':>13} | {'folder r':>9} {'pg r':>9} {'pg/folder':>9} | "
        f"{'pg w / 2 s trial':>16}"
    )
    print("median ms per model file (write w, read r)")
    print(head)
    print("-" * len(head))
    for size, arms in rows:
        fw, fr = arms["folder"]
        pw, pr = arms["postgresql"]
        sw, _ = arms["sqlite"]
        label = f"{size / 1024:.0f} KB" if size < 1024**2 else f"{size / 1024**2:.0f} MB"
        print(
            f"{label:>8} | {fw:9.2f} {pw:9.2f} {pw / fw:8.1f}x {sw:9.2f} {sw / fw:12.1f}x | "
            f"{fr:9.2f} {pr:9.2f} {pr / fr:8.1f}x | {100 * pw / 1000 / TRIAL_S:15.2f}%"
        )


if __name__ == "__main__":
    main()
