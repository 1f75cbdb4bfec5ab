"""Optuna's own storage contract suite, run against tuner's store as ``open_storage`` opens it.

The store (``FastRDBStorage``) replaces some of ``RDBStorage``'s methods with plain SQL;
this suite checks the replacements keep Optuna's results and errors, on a SQLite file,
on PostgreSQL and on MySQL (MariaDB here; a fresh database per test, dropped afterwards). The SQLite store also
runs under Optuna's ``_CachedStorage``, the wrapper a loaded study puts around an RDB
store (as Optuna's own tests do with ``cached_sqlite``): it calls the store's private
methods (``_set_trial_param`` with the distribution it has cached, ``_get_trials``)
directly. What the wrapper does is the same on every database; the SQL under it is
what differs, and the bare server runs cover that.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from optuna.storages import BaseStorage, _CachedStorage
from optuna.testing.pytest_storages import StorageTestCase

from tuner.storage import open_storage


@pytest.fixture(params=["sqlite", "cached_sqlite", "postgresql", "mysql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BaseStorage]:
    if "sqlite" in request.param:
        url = f"sqlite:///{tmp_path / 'contract.db'}"
    else:
        server = {"postgresql": "postgres", "mysql": "mysql"}[request.param]
        url = request.getfixturevalue(f"{server}_url")
    store: Any = open_storage(url, heartbeat=False)
    try:
        yield _CachedStorage(store) if request.param.startswith("cached") else store
    finally:
        store.engine.dispose()


class TestStoreContract(StorageTestCase):
    pass
