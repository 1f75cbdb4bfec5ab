"""Models kept in the study store: the limits of a MySQL server."""

from __future__ import annotations

import io
import time

import pytest
import sqlalchemy

from tuner.storage import StoreError, StoreUnavailable, open_storage
from tuner.storage._blobs import StoreArtifacts
from tuner.storage._outage import ride_out

pytestmark = pytest.mark.mysql


def test_a_model_past_mysqls_packet_limit_is_refused_at_once_in_one_line(
    mysql_url: str,
) -> None:
    storage = open_storage(mysql_url, heartbeat=False)
    with storage.engine.connect() as conn:
        limit = int(conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar() or 0)
    blobs = StoreArtifacts(storage, "big")
    blobs.create_table()
    # PyMySQL sends bytes as hex, two characters a byte: half the limit is what fits.
    fits, too_big = b"\x00" * (limit // 2 - 4096), b"\x00" * (limit // 2 + 4096)
    ride_out(lambda: blobs.write("fits", io.BytesIO(fits)), storage)
    assert blobs.read("fits") == fits
    started = time.monotonic()
    with pytest.raises(StoreError) as raised:
        # As a trial writes it: riding out outages, which this is not.
        ride_out(lambda: blobs.write("too-big", io.BytesIO(too_big)), storage)
    assert time.monotonic() - started < 5
    assert not isinstance(raised.value, StoreUnavailable)
    message = str(raised.value)
    assert f"cannot take a {len(too_big)}-byte model" in message
    assert f"max_allowed_packet ({limit})" in message and "artifacts.path" in message
    assert "\n" not in message
    assert blobs.existing(["fits", "too-big"]) == {"fits"}
    storage.engine.dispose()


def test_models_of_a_mysql_store_whose_table_is_missing_read_as_none(mysql_url: str) -> None:
    storage = open_storage(mysql_url, heartbeat=False)
    blobs = StoreArtifacts(storage, "none")
    assert blobs.read("nothing") is None and blobs.count_study("none") == (0, 0)
    # A write that finds no table makes it.
    blobs.write("first", io.BytesIO(b"model"))
    assert sqlalchemy.inspect(storage.engine).has_table("tuner_artifacts")
    assert blobs.read("first") == b"model"
    storage.engine.dispose()
