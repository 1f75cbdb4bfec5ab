from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

PG_ADMIN_URL = os.environ.get(
    "TUNER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def tiny_spec_dict(name: str = "tiny", **overrides: Any) -> dict[str, Any]:
    """A digits study that trains for a second or two per trial."""
    spec: dict[str, Any] = {
        "name": name,
        "workload": "digits-mlp",
        "objectives": {"accuracy": "maximize", "size_bytes": "minimize", "latency_ms": "minimize"},
        "search_space": {
            "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
            "lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True},
            "momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"optimizer": "sgd"}},
            "batch_size": {"type": "categorical", "choices": [64, 128]},
            "hidden_units": 32,
            "prune_threshold": {"type": "float", "low": 0.0, "high": 0.9},
            "quantize": {"type": "categorical", "choices": ["none", "int8"]},
        },
        "sampler": {"name": "random", "seed": 1},
        "budget": {"n_trials": 3, "max_epochs": 2},
        "measure": {"batch_size": 8, "warmup": 2, "repeats": 5},
    }
    spec.update(overrides)
    return spec


@pytest.fixture
def tiny_spec() -> Any:
    """Factory of tiny spec mappings: ``tiny_spec(name, **overrides)``."""
    return tiny_spec_dict


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


def _postgres_available() -> bool:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(PG_ADMIN_URL)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def postgres_server() -> str:
    if not _postgres_available():
        if os.environ.get("TUNER_SKIP_POSTGRES") == "1":
            pytest.skip("PostgreSQL not reachable and TUNER_SKIP_POSTGRES=1")
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} (set TUNER_SKIP_POSTGRES=1 to skip)"
        )
    return PG_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import sqlalchemy

    name = f"tuner_test_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = (
        sqlalchemy.engine.make_url(postgres_server)
        .set(database=name)
        .render_as_string(hide_password=False)
    )
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
