from __future__ import annotations

from pathlib import Path

import pytest

from tuner.storage import DEFAULT_URL, StoreError, mask_url, open_storage, resolve_url
from tuner.storage._url import absolute_url, check_url


def test_mask_hides_the_password() -> None:
    assert (
        mask_url("postgresql+psycopg://bob:hunter2@db:5432/tuner")
        == "postgresql+psycopg://bob:***@db:5432/tuner"
    )
    assert "hunter2" not in mask_url("postgresql://bob:hunter2@db/x?sslmode=require")
    assert mask_url("sqlite:///tuner.db") == "sqlite:///tuner.db"


def test_mask_works_on_urls_sqlalchemy_cannot_parse() -> None:
    assert "hunter2" not in mask_url("postgresql://bob:hunter2@db:notaport/x")


def test_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNER_STORAGE", raising=False)
    assert resolve_url() == DEFAULT_URL
    monkeypatch.setenv("TUNER_STORAGE", "sqlite:///env.db")
    assert resolve_url() == "sqlite:///env.db"
    assert resolve_url(None, "sqlite:///spec.db") == "sqlite:///spec.db"
    assert resolve_url("sqlite:///flag.db", "sqlite:///spec.db") == "sqlite:///flag.db"


@pytest.mark.parametrize("url", ["", "nonsense", "redis://localhost:6379"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(StoreError):
        check_url(url)


def test_missing_folder_is_one_line(tmp_path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        open_storage(f"sqlite:///{tmp_path}/no/such/dir/x.db")


def test_read_only_never_creates_a_file(tmp_path) -> None:
    with pytest.raises(StoreError):
        open_storage(f"sqlite:///{tmp_path}/absent.db", read_only=True)
    assert not (tmp_path / "absent.db").exists()


def test_sqlite_store_uses_wal(tmp_path) -> None:
    store = open_storage(f"sqlite:///{tmp_path}/w.db")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10000


def test_a_relative_sqlite_path_is_made_absolute_for_workers_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert absolute_url("sqlite:///tuner.db") == f"sqlite:///{tmp_path / 'tuner.db'}"
    assert absolute_url("sqlite:///runs/a.db") == f"sqlite:///{tmp_path / 'runs' / 'a.db'}"
    # Already absolute, in memory, or another database: as given (passwords kept).
    for url in (
        f"sqlite:///{tmp_path / 'x.db'}",
        "sqlite://",
        "sqlite:///:memory:",
        "postgresql+psycopg://u:secret@db:5432/tuner",
    ):
        assert absolute_url(url) == url
