"""The KeyViz store on real PostgreSQL: bytea cells, uint64 values, compaction, a full disk."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import connection

from keyviz import store, tiers
from keyviz.columns import FLAG_SOFT, FLAG_UNKNOWN
from keyviz.models import Bucket, StoredColumn
from tests.helpers import require
from tests.unit.keyviz.store_kit import STEP, T0, WRITES, merged, meta, node_column

pytestmark = [pytest.mark.services, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _postgresql() -> None:
    require(
        settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql",
        "DATABASE_URL does not point at PostgreSQL (scripts/test.sh starts one)",
    )
    store.clear_bucket_cache()


def test_keyviz_history_round_trips_on_postgresql():
    # Keys with NUL and 0xff bytes, a uint64 maximum value and a uint64 Raft group id.
    metas = {"a": meta("a", start=b"\x00a\xff"), "b": meta("b", start=b"\xff\xff")}
    big = 2**64 - 1
    store.save_node_columns(
        WRITES,
        [(T0 + STEP, node_column("n1", T0 + STEP - 7, {"a": big}, groups={"a": big}, metas=metas))],
    )
    flags = {2: {"b": FLAG_SOFT | FLAG_UNKNOWN}}
    store.save_merged(
        [
            merged(
                T0 + k * STEP, {"a": big if k == 1 else k, "b": 1}, flags=flags.get(k), metas=metas
            )
            for k in range(1, 16)
        ]
    )
    got = store.read_matrix(WRITES, T0, T0 + 16 * STEP, tier=0)
    assert [r.bucket_id for r in got.matrix.rows] == ["a", "b"]
    assert got.matrix.rows[0].start == b"\x00a\xff"
    assert int(got.matrix.values[0, 1]) == 2
    assert got.matrix.unknown is not None
    assert bool(got.matrix.unknown[1, 1])
    (col,) = store.node_columns_at(WRITES, T0 + STEP)
    assert col.values.tolist() == [big]
    assert col.raft_group_ids.tolist() == [big]
    assert int(Bucket.objects.get(bucket_id="a").raft_group_id) == big
    tiers.compact(T0 + 15 * STEP + tiers.COMPACT_GRACE_MS)
    coarse = store.read_matrix(WRITES, T0, T0 + 16 * STEP, tier=1).matrix
    assert coarse.values[:, 0].tolist() == [big, 15]  # saturated, not wrapped
    store.save_state("collector", {"phases": {"n1": {"anchor_ms": T0}}})
    assert store.load_state("collector") == {"phases": {"n1": {"anchor_ms": T0}}}


def test_full_disk_on_postgresql_is_a_store_error_and_nothing_partial():
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE FUNCTION keyviz_test_disk_full() RETURNS trigger AS $$
            BEGIN
              RAISE EXCEPTION USING ERRCODE = 'disk_full',
                MESSAGE = 'could not extend file "base/1/2": No space left on device';
            END $$ LANGUAGE plpgsql
            """
        )
        cursor.execute(
            "CREATE TRIGGER keyviz_test_disk_full BEFORE INSERT ON keyviz_storedcolumn "
            "FOR EACH ROW EXECUTE FUNCTION keyviz_test_disk_full()"
        )
    with pytest.raises(store.StoreError, match="the database disk is full"):
        store.save_merged([merged(T0, {"new": 1})])
    assert not Bucket.objects.filter(bucket_id="new").exists()
    assert not StoredColumn.objects.exists()
