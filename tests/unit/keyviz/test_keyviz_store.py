"""The KeyViz store on the test database (SQLite by default): save, read, state, failures."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

from keyviz import cellblob, store
from keyviz.columns import FLAG_CONFLICT, FLAG_SOFT, FLAG_UNKNOWN
from keyviz.models import Bucket, StoredColumn, StoredNodeColumn
from tests.unit.keyviz.store_kit import READS, STEP, T0, WRITES, merged, meta, node_column

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    store.clear_bucket_cache()
    yield
    store.clear_bucket_cache()


def test_read_matrix_returns_saved_columns_rows_in_key_order():
    store.save_merged(
        [
            merged(T0 + STEP, {"b": 5, "a": 1}),
            merged(T0 + 2 * STEP, {"c": 7, "a": 2}),
        ]
    )
    got = store.read_matrix(WRITES, T0, T0 + 3 * STEP, tier=0)
    m = got.matrix
    assert [r.bucket_id for r in m.rows] == ["a", "b", "c"]
    assert m.column_unix_ms.tolist() == [T0 + STEP, T0 + 2 * STEP]
    assert m.values.dtype == np.uint64
    assert m.values.tolist() == [[1, 2], [5, 0], [0, 7]]
    assert got.step_ms == m.step_ms == STEP
    assert got.tier == 0
    assert got.contributors == ({"n1": T0 + STEP - 100}, {"n1": T0 + 2 * STEP - 100})
    assert not m.degraded.any()
    assert m.unknown is not None
    assert not m.unknown.any()


def test_read_matrix_window_is_half_open_on_column_end_times():
    store.save_merged([merged(T0 + k * STEP, {"a": k + 1}) for k in range(4)])
    got = store.read_matrix(WRITES, T0 + STEP, T0 + 3 * STEP, tier=0)
    assert got.matrix.column_unix_ms.tolist() == [T0 + STEP, T0 + 2 * STEP]


def test_read_matrix_keeps_series_apart():
    store.save_merged([merged(T0, {"a": 1}, series=WRITES), merged(T0, {"b": 9}, series=READS)])
    got = store.read_matrix(READS, T0, T0 + 1, tier=0)
    assert [r.bucket_id for r in got.matrix.rows] == ["b"]
    assert got.matrix.values.tolist() == [[9]]


def test_read_matrix_rows_sort_by_start_bytes_then_bucket_id():
    metas = {
        "z": meta("z", start=b""),
        "y": meta("y", start=b"\x01"),
        "x": meta("x", start=b"\x01"),
    }
    store.save_merged([merged(T0, {"z": 1, "y": 1, "x": 1}, metas=metas)])
    rows = store.read_matrix(WRITES, T0, T0 + 1, tier=0).matrix.rows
    assert [r.bucket_id for r in rows] == ["z", "x", "y"]


def test_flags_become_soft_conflict_unknown():
    store.save_merged(
        [
            merged(
                T0,
                {"a": 1, "b": 2, "c": 3},
                flags={"a": FLAG_SOFT, "b": FLAG_CONFLICT | FLAG_SOFT, "d": FLAG_UNKNOWN},
            )
        ]
    )
    m = store.read_matrix(WRITES, T0, T0 + 1, tier=0).matrix
    assert [r.bucket_id for r in m.rows] == ["a", "b", "c", "d"]
    assert m.soft[:, 0].tolist() == [True, True, False, False]
    assert m.conflict[:, 0].tolist() == [False, True, False, False]
    assert m.unknown is not None
    assert m.unknown[:, 0].tolist() == [False, False, False, True]


def test_read_matrix_unknown_all_marks_every_row():
    store.save_merged(
        [
            merged(T0, {"a": 1, "b": 2}),
            merged(T0 + STEP, {"a": 3}, missing=("n2",), unknown_all=True),
        ]
    )
    got = store.read_matrix(WRITES, T0, T0 + 2 * STEP, tier=0)
    assert got.matrix.unknown is not None
    assert got.matrix.unknown.tolist() == [[False, True], [False, True]]
    assert got.missing == ((), ("n2",))


def test_only_nonzero_cells_stored():
    store.save_merged([merged(T0, {"a": 0, "b": 4, "c": 0}, flags={"c": FLAG_SOFT})])
    blob = StoredColumn.objects.get(tier=0, series=WRITES, column_ms=T0).cells
    pks, arrays = cellblob.decode(cellblob.MERGED_FIELDS, blob)
    assert len(pks) == 2  # b (value) and c (flag); a holds nothing
    assert not Bucket.objects.filter(bucket_id="a").exists()
    assert sorted(arrays["value"].tolist()) == [0, 4]


def test_amendment_overwrites_the_column():
    store.save_merged([merged(T0, {"a": 1, "b": 2})])
    store.save_merged([merged(T0, {"a": 10}, contributors={"n1": 1, "n2": 2})])
    got = store.read_matrix(WRITES, T0, T0 + 1, tier=0)
    assert [r.bucket_id for r in got.matrix.rows] == ["a"]
    assert got.matrix.values.tolist() == [[10]]
    assert got.contributors == ({"n1": 1, "n2": 2},)
    assert StoredColumn.objects.count() == 1


def test_values_keep_full_uint64_range():
    big = 2**64 - 1
    store.save_merged([merged(T0, {"a": big, "b": 1})])
    m = store.read_matrix(WRITES, T0, T0 + 1, tier=0).matrix
    assert m.values[:, 0].tolist() == [big, 1]


def test_empty_window_reads_as_zero_rows():
    got = store.read_matrix(WRITES, T0, T0 + STEP, tier=0)
    assert got.matrix.shape == (0, 0)
    assert got.step_ms == store.DEFAULT_STEP_MS


def test_backwards_window_is_refused():
    with pytest.raises(ValueError, match="empty window"):
        store.read_matrix(WRITES, T0, T0)


def test_tier_choice_is_the_finest_whose_retention_covers_the_start():
    now = T0
    day = 24 * 3_600_000
    assert store.choose_tier(now - day, now) == 0
    assert store.choose_tier(now - day - 1, now) == 1
    assert store.choose_tier(now - 7 * day, now) == 1
    assert store.choose_tier(now - 7 * day - 1, now) == 2
    assert store.choose_tier(now - 90 * day, now) == 2


def test_retired_bucket_keeps_history():
    # "old" is split into "old-a" and "old-b" after the first column.
    store.save_merged([merged(T0, {"old": 8})])
    store.save_merged([merged(T0 + STEP, {"old-a": 5, "old-b": 3})])
    got = store.read_matrix(WRITES, T0, T0 + 2 * STEP, tier=0)
    assert [r.bucket_id for r in got.matrix.rows] == ["old", "old-a", "old-b"]
    assert got.matrix.values.tolist() == [[8, 0], [0, 5], [0, 3]]
    old = Bucket.objects.get(bucket_id="old")
    assert (old.first_seen_ms, old.last_seen_ms) == (T0, T0)


def test_bucket_first_and_last_seen_follow_the_columns():
    store.save_merged([merged(T0 + 60 * STEP, {"a": 1})])
    store.save_merged([merged(T0, {"a": 1})])  # backfill: older
    a = Bucket.objects.get(bucket_id="a")
    assert (a.first_seen_ms, a.last_seen_ms) == (T0, T0 + 60 * STEP)


def test_node_columns_round_trip_per_slot():
    metas = {"a": meta("a", start=b"a"), "b": meta("b", start=b"b")}
    n1 = node_column(
        "n1", T0 - 700, {"b": 3, "a": 1}, soft=["a"], groups={"a": 7, "b": 300}, metas=metas
    )
    n2 = node_column("n2", T0 - 200, {"a": 4}, terms={"a": 2**40}, metas=metas)
    store.save_node_columns(WRITES, [(T0, n2), (T0, n1)])
    store.save_node_columns(WRITES, [(T0 + STEP, node_column("n1", T0 + STEP - 700, {"a": 9}))])
    got = store.node_columns_at(WRITES, T0)
    assert [(c.node, c.column_unix_ms) for c in got] == [("n1", T0 - 700), ("n2", T0 - 200)]
    first, second = got
    assert [r.bucket_id for r in first.rows] == ["a", "b"]
    assert first.values.tolist() == [1, 3]
    assert first.soft.tolist() == [True, False]
    assert first.raft_group_ids.tolist() == [7, 300]
    assert first.leader_terms.tolist() == [0, 0]
    assert second.leader_terms.tolist() == [2**40]
    assert first.rows[0] == metas["a"]


def test_node_column_resave_is_an_upsert():
    store.save_node_columns(WRITES, [(T0, node_column("n1", T0 - 5, {"a": 1}))])
    store.save_node_columns(WRITES, [(T0 + STEP, node_column("n1", T0 - 5, {"a": 2}))])
    assert StoredNodeColumn.objects.count() == 1
    assert store.node_columns_at(WRITES, T0) == []
    assert store.node_columns_at(WRITES, T0 + STEP)[0].values.tolist() == [2]
    assert store.latest_node_column_ms(WRITES, "n1") == T0 - 5
    assert store.latest_node_column_ms(WRITES, "n2") is None


def test_bucket_metadata_comes_from_the_first_node_in_id_order(caplog):
    a_on_n2 = meta("a", start=b"a2", end=b"z")
    a_on_n1 = meta("a", start=b"a1", end=b"z")
    caplog.set_level(logging.WARNING, logger="keyviz.store")
    store.save_node_columns(WRITES, [(T0, node_column("n2", T0, {"a": 1}, metas={"a": a_on_n2}))])
    store.save_node_columns(WRITES, [(T0, node_column("n1", T0, {"a": 1}, metas={"a": a_on_n1}))])
    # n2 again, later: n1 still wins, and the divergence is not logged twice.
    store.save_node_columns(
        WRITES, [(T0 + STEP, node_column("n2", T0 + STEP, {"a": 1}, metas={"a": a_on_n2}))]
    )
    stored = Bucket.objects.get(bucket_id="a")
    assert bytes(stored.start) == b"a1"
    assert stored.meta_node == "n1"
    assert "catalog divergence: a" in stored.divergence
    assert sum("catalog divergence: a" in r.getMessage() for r in caplog.records) == 1
    store.save_merged([merged(T0, {"a": 2}, metas={"a": a_on_n1})])
    got = store.read_matrix(WRITES, T0, T0 + 1, tier=0)
    assert any("catalog divergence: a" in w for w in got.warnings)
    assert got.warnings == got.matrix.warnings


def test_divergence_inside_one_save_is_found():
    a1, a2 = meta("a", start=b"x"), meta("a", start=b"y")
    store.save_node_columns(
        WRITES,
        [
            (T0, node_column("n2", T0, {"a": 1}, metas={"a": a2})),
            (T0, node_column("n1", T0, {"a": 1}, metas={"a": a1})),
        ],
    )
    stored = Bucket.objects.get(bucket_id="a")
    assert bytes(stored.start) == b"x"
    assert stored.divergence.startswith("catalog divergence: a has different start/end on n1, n2")


def test_same_node_changing_metadata_updates_it_without_divergence():
    store.save_node_columns(WRITES, [(T0, node_column("n1", T0, {"a": 1}))])
    relabelled = meta("a", label="renamed", end=b"q")
    store.save_node_columns(
        WRITES, [(T0 + STEP, node_column("n1", T0 + STEP, {"a": 1}, metas={"a": relabelled}))]
    )
    stored = Bucket.objects.get(bucket_id="a")
    assert (stored.label, bytes(stored.end), stored.divergence) == ("renamed", b"q", "")


def test_read_bucket_gives_merged_and_per_node_values():
    store.save_node_columns(
        WRITES,
        [
            (T0, node_column("n1", T0 - 10, {"a": 2}, groups={"a": 4}, terms={"a": 9})),
            (T0, node_column("n2", T0 - 20, {"a": 3, "b": 1}, soft=["a"])),
            (T0 + STEP, node_column("n1", T0 + STEP - 10, {"a": 6})),
        ],
    )
    store.save_merged([merged(T0, {"a": 5, "b": 1}), merged(T0 + STEP, {"a": 6})])
    got = store.read_bucket(WRITES, "a", T0, T0 + 2 * STEP, tier=0)
    assert got.row is not None
    assert got.values.tolist() == [5, 6]
    assert got.per_node
    by_node = {n.node: n for n in got.nodes}
    assert by_node["n1"].values.tolist() == [2, 6]
    assert by_node["n1"].raft_group_ids.tolist() == [4, 0]
    assert by_node["n1"].leader_terms.tolist() == [9, 0]
    assert by_node["n2"].values.tolist() == [3, 0]
    assert by_node["n2"].soft.tolist() == [True, False]
    assert by_node["n2"].node_column_ms.tolist() == [T0 - 20, 0]


def test_read_bucket_of_an_unknown_bucket_has_no_row():
    store.save_merged([merged(T0, {"a": 5})])
    got = store.read_bucket(WRITES, "nope", T0, T0 + 1, tier=0)
    assert got.row is None
    assert got.values.tolist() == [0]


def test_collector_state_round_trips_and_is_none_before_the_first_save():
    assert store.load_state("collector") is None
    store.save_state("collector", {"holder": "p1", "phases": {"n1": {"anchor_ms": 5}}})
    store.save_state("collector", {"holder": "p2"})
    assert store.load_state("collector") == {"holder": "p2"}


def test_latest_column_ms():
    assert store.latest_column_ms(WRITES) is None
    store.save_merged([merged(T0, {"a": 1}), merged(T0 + STEP, {"a": 1})])
    assert store.latest_column_ms(WRITES) == T0 + STEP
    assert store.latest_column_ms(READS) is None


# ---------------------------------------------------------------- corrupt bytes


def _corrupt(column_ms: int, blob: bytes) -> None:
    StoredColumn.objects.filter(tier=0, series=WRITES, column_ms=column_ms).update(cells=blob)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda b: b[:3], "shorter than"),
        (lambda b: bytes([9]) + b[1:], "unknown encoding version 9"),
        (lambda b: b[:-1], "bytes of cells, expected"),
        (lambda b: b[:6] + bytes([7]) + b[7:], "unknown field type code"),
    ],
)
def test_decode_rejects_corrupt_blob_with_row_name(damage, reason):
    store.save_merged([merged(T0, {"a": 1, "b": 2})])
    blob = bytes(StoredColumn.objects.get(column_ms=T0).cells)
    _corrupt(T0, damage(blob))
    with pytest.raises(store.StoreError, match=reason) as caught:
        store.read_matrix(WRITES, T0, T0 + 1, tier=0)
    assert f"column tier 0 series {WRITES} at {T0}" in caught.value.reason


def test_decode_rejects_compressed_garbage_and_bad_pk_order():
    header = bytes([cellblob.BLOB_VERSION, 1]) + (2).to_bytes(4, "little") + bytes([1, 1, 0])
    _save_and(header + b"not zlib at all")
    with pytest.raises(store.StoreError, match="do not inflate"):
        store.read_matrix(WRITES, T0, T0 + 1, tier=0)
    zero_delta = bytes([cellblob.BLOB_VERSION, 0]) + (2).to_bytes(4, "little") + bytes([1, 1, 0])
    _corrupt(T0, zero_delta + bytes([1, 0, 5, 6]))
    with pytest.raises(store.StoreError, match="not strictly increasing"):
        store.read_matrix(WRITES, T0, T0 + 1, tier=0)


def _save_and(blob: bytes) -> None:
    store.save_merged([merged(T0, {"a": 1})])
    _corrupt(T0, blob)


def test_decode_rejects_malformed_contributors_with_row_name():
    store.save_merged([merged(T0, {"a": 1})])
    StoredColumn.objects.filter(column_ms=T0).update(contributors=["n1"])
    with pytest.raises(store.StoreError, match=f"at {T0} is corrupt: contributors"):
        store.read_matrix(WRITES, T0, T0 + 1, tier=0)


def test_cellblob_round_trips_every_width_and_compresses_only_when_it_pays():
    rng = np.random.default_rng(7)
    pks = np.arange(1, 1025, dtype=np.int64)
    for top in (200, 60_000, 4_000_000_000, 2**64 - 1):
        values = rng.integers(0, top, size=1024, dtype=np.uint64, endpoint=True)
        blob = cellblob.encode(cellblob.MERGED_FIELDS, pks, {"value": values})
        got_pks, arrays = cellblob.decode(cellblob.MERGED_FIELDS, blob)
        assert got_pks.tolist() == pks.tolist()
        assert arrays["value"].tolist() == values.tolist()
        assert "flags" not in arrays
    # A repeating pattern: zlib saves far more than a third, so it is used.
    pattern = np.tile(np.arange(1, 201, dtype=np.uint64), 6)[:1024]
    packed = cellblob.encode(cellblob.MERGED_FIELDS, pks, {"value": pattern})
    assert packed[1] == 1
    assert len(packed) < 300
    assert cellblob.decode(cellblob.MERGED_FIELDS, packed)[1]["value"].tolist() == pattern.tolist()
    # Noise: zlib would save little, so every reader is spared the inflating.
    noise = rng.integers(1, 2**32, size=1024, dtype=np.uint64)
    assert cellblob.encode(cellblob.MERGED_FIELDS, pks, {"value": noise})[1] == 0


# ---------------------------------------------------------------- failing writes


class _FailingCursor:
    """A real cursor whose statements matching `fails` raise OperationalError(message)."""

    def __init__(self, inner: Any, fails: Callable[[str], bool], message: str) -> None:
        self._inner, self._fails, self._message = inner, fails, message

    def execute(self, sql, params=None):
        if self._fails(sql.lstrip().upper()):
            raise OperationalError(self._message)
        return self._inner.execute(sql, params)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._inner.__exit__(*exc)


def _fail(monkeypatch, fails: Callable[[str], bool], message: str) -> None:
    real = connection.cursor
    monkeypatch.setattr(
        connection, "cursor", lambda *a, **k: _FailingCursor(real(*a, **k), fails, message)
    )


def _any_keyviz_write(sql: str) -> bool:
    return sql.startswith(("INSERT", "UPDATE", "DELETE")) and "KEYVIZ_" in sql


def _fail_writes(monkeypatch, message: str) -> None:
    _fail(monkeypatch, _any_keyviz_write, message)


def test_full_disk_raises_store_error_and_stores_nothing_partial(monkeypatch):
    store.save_merged([merged(T0, {"a": 1})])
    # The bucket rows go in before the columns: make only the column upsert fail.
    _fail(
        monkeypatch,
        lambda sql: sql.startswith("INSERT") and "KEYVIZ_STOREDCOLUMN" in sql,
        "database or disk is full",
    )
    with pytest.raises(store.StoreError, match="the database disk is full") as caught:
        store.save_merged([merged(T0 + STEP, {"a": 2, "new-bucket": 3})])
    assert caught.value.reason.startswith("saving merged columns: ")
    monkeypatch.undo()
    # The new bucket row written before the failure was rolled back with the column.
    assert not Bucket.objects.filter(bucket_id="new-bucket").exists()
    assert list(StoredColumn.objects.values_list("column_ms", flat=True)) == [T0]
    # And the pk cache did not keep the rolled-back bucket: a later save still works.
    store.save_merged([merged(T0 + STEP, {"new-bucket": 3})])
    got = store.read_matrix(WRITES, T0 + STEP, T0 + 2 * STEP, tier=0)
    assert got.matrix.values.tolist() == [[3]]


def test_failing_node_column_write_names_the_reason(monkeypatch):
    _fail_writes(monkeypatch, "disk I/O error")
    with pytest.raises(store.StoreError, match=r"saving node columns: .*I/O error"):
        store.save_node_columns(WRITES, [(T0, node_column("n1", T0, {"a": 1}))])
    monkeypatch.undo()
    assert not StoredNodeColumn.objects.exists()
    assert not Bucket.objects.exists()


def test_failing_state_write_is_a_store_error(monkeypatch):
    _fail_writes(monkeypatch, "attempt to write a readonly database")
    with pytest.raises(store.StoreError, match="the database is read-only"):
        store.save_state("collector", {"a": 1})


def test_cellblob_batch_decode_matches_every_blob_alone():
    # Mixed shapes in one batch: empty, dense, sparse, hot rows (exceptions), wide values,
    # flags on a few cells or on all, compressed and not.
    rng = np.random.default_rng(5)
    blobs, expected = [], []
    for case in range(60):
        n_rows = int(rng.integers(0, 1500))
        keep = rng.random(n_rows) < rng.choice([0.02, 0.5, 1.0])
        pks = np.flatnonzero(keep).astype(np.int64) + int(rng.integers(1, 70_000))
        n = pks.shape[0]
        top = [2, 300, 70_000, 2**40, 2**64 - 1][case % 5]
        values = rng.integers(0, top, size=n, dtype=np.uint64, endpoint=True)
        hot = rng.random(n) < 0.03
        values[hot] = rng.integers(0, 2**64 - 1, size=int(hot.sum()), dtype=np.uint64)
        flags = (rng.random(n) < rng.choice([0.0, 0.01, 1.0])).astype(np.uint8) * 9
        blobs.append(
            cellblob.encode(cellblob.MERGED_FIELDS, pks, {"value": values, "flags": flags})
        )
        expected.append((pks, values, flags))
    assert {b[1] for b in blobs} == {0, 1}  # both raw and zlib blobs are in the batch
    counts, all_pks, arrays = cellblob.decode_many(cellblob.MERGED_FIELDS, blobs)
    assert counts.tolist() == [e[0].shape[0] for e in expected]
    assert all_pks.tolist() == np.concatenate([e[0] for e in expected]).tolist()
    assert arrays["value"].tolist() == np.concatenate([e[1] for e in expected]).tolist()
    assert arrays["flags"].tolist() == np.concatenate([e[2] for e in expected]).tolist()
    for blob, (want_pks, want_values, _) in zip(blobs, expected, strict=True):
        got_pks, got = cellblob.decode(cellblob.MERGED_FIELDS, blob)
        assert got_pks.tolist() == want_pks.tolist()
        assert got.get("value", np.zeros(0)).tolist() == (
            want_values.tolist() if want_values.any() else []
        )


def test_batch_decode_names_the_corrupt_blob():
    good = cellblob.encode(
        cellblob.MERGED_FIELDS, np.array([1, 2]), {"value": np.ones(2, np.uint64)}
    )
    with pytest.raises(cellblob.CellBlobError, match="unknown encoding version") as caught:
        cellblob.decode_many(cellblob.MERGED_FIELDS, [good, good, b"\x07" + good[1:], good])
    assert caught.value.index == 2
    # An exception index past the blob's cells: n = 1, one value exception at index 5.
    header = bytes([cellblob.BLOB_VERSION, 0]) + (1).to_bytes(4, "little")
    bad = header + bytes([1, 1 << 3]) + (1).to_bytes(4, "little") + bytes([0]) + bytes([1, 5, 9])
    with pytest.raises(cellblob.CellBlobError, match="exception index beyond") as caught:
        cellblob.decode_many(cellblob.MERGED_FIELDS, [good, bad])
    assert caught.value.index == 1


# ---------------------------------------------------------------- committed caches


@pytest.mark.django_db(transaction=True)
def test_save_does_not_query_buckets_per_row_once_they_are_known():
    from django.test.utils import CaptureQueriesContext

    rows = {f"b{i:04d}": i + 1 for i in range(1000)}
    store.save_merged([merged(T0, rows)])  # creates the buckets; committed: now cached
    with CaptureQueriesContext(connection) as queries:
        store.save_merged([merged(T0 + STEP, rows)])
    sql = [q["sql"] for q in queries.captured_queries]
    assert not [s for s in sql if "keyviz_bucket" in s], sql
    assert len(sql) <= 5, sql  # begin, upsert the column, mark its window, commit


@pytest.mark.django_db(transaction=True)
def test_rolled_back_save_leaves_no_cached_bucket(monkeypatch):
    store.save_merged([merged(T0, {"a": 1})])
    _fail(
        monkeypatch,
        lambda sql: sql.startswith("INSERT") and "KEYVIZ_STOREDCOLUMN" in sql,
        "database or disk is full",
    )
    with pytest.raises(store.StoreError):
        store.save_merged([merged(T0 + STEP, {"fresh": 2})])
    monkeypatch.undo()
    assert not Bucket.objects.filter(bucket_id="fresh").exists()
    # Had the cache kept the rolled-back pk, this column would point at no bucket.
    store.save_merged([merged(T0 + STEP, {"fresh": 2})])
    got = store.read_matrix(WRITES, T0, T0 + 2 * STEP, tier=0)
    assert [r.bucket_id for r in got.matrix.rows] == ["a", "fresh"]
    assert got.warnings == ()


def test_bucket_the_table_cannot_hold_is_refused_by_name_and_nothing_is_stored():
    long_id = "route:" + "x" * 300
    with pytest.raises(store.StoreError, match="at most 255 characters"):
        store.save_merged([merged(T0, {"ok": 1, long_id: 2})])
    assert not Bucket.objects.exists()
    assert not StoredColumn.objects.exists()


def test_history_window_is_the_coarsest_retention():
    assert store.history_window_ms() == 30 * 24 * 3_600_000


def test_dense_column_stores_its_pks_and_flags_as_constants():
    n = 1024
    pks = np.arange(500, 500 + n, dtype=np.int64)  # deltas: 500 then 1, 1, 1, ...
    values = np.random.default_rng(1).integers(1, 2**32, size=n, dtype=np.uint64)
    flags = np.full(n, 1, dtype=np.uint8)
    flags[7] = 3
    blob = cellblob.encode(cellblob.MERGED_FIELDS, pks, {"value": values, "flags": flags})
    assert len(blob) < n * 4 + 64  # the values, and little else
    got_pks, arrays = cellblob.decode(cellblob.MERGED_FIELDS, blob)
    assert got_pks.tolist() == pks.tolist()
    assert arrays["value"].tolist() == values.tolist()
    assert arrays["flags"].tolist() == flags.tolist()


def test_read_matrix_equals_a_dense_reference_of_the_saved_columns():
    rng = np.random.default_rng(21)
    names = [f"k{i:03d}" for i in range(120)]
    reference: dict[tuple[str, int], tuple[int, int]] = {}
    columns = []
    for k in range(90):
        t = T0 + k * STEP
        cells, flags = {}, {}
        for name in rng.choice(names, size=int(rng.integers(0, 120)), replace=False).tolist():
            value = [0, 1, 77, 300, 70_000, 2**40, 2**64 - 1][int(rng.integers(0, 7))]
            flag = [0, 0, 0, FLAG_SOFT, FLAG_CONFLICT, FLAG_UNKNOWN][int(rng.integers(0, 6))]
            if value or flag:
                cells[name], flags[name] = value, flag
                reference[(name, k)] = (value, flag)
        columns.append(merged(t, cells, flags=flags, unknown_all=k % 17 == 5))
    store.save_merged(columns)
    got = store.read_matrix(WRITES, T0, T0 + 90 * STEP, tier=0)
    m = got.matrix
    assert [r.bucket_id for r in m.rows] == sorted({name for name, _ in reference})
    assert m.unknown is not None
    for i, row in enumerate(m.rows):
        for k in range(90):
            value, flag = reference.get((row.bucket_id, k), (0, 0))
            assert int(m.values[i, k]) == value
            assert bool(m.soft[i, k]) == bool(flag & FLAG_SOFT)
            assert bool(m.conflict[i, k]) == bool(flag & FLAG_CONFLICT)
            assert bool(m.unknown[i, k]) == (bool(flag & FLAG_UNKNOWN) or k % 17 == 5)


def test_read_matrix_without_contributors_keeps_values_and_missing_nodes():
    store.save_merged([merged(T0, {"a": 10}, contributors={"n1": 1, "n2": 2})])
    full = store.read_matrix(WRITES, T0, T0 + STEP, tier=0)
    lean = store.read_matrix(WRITES, T0, T0 + STEP, tier=0, contributors=False)
    assert lean.contributors == ({},)
    assert lean.missing == full.missing
    assert lean.matrix.values.tolist() == full.matrix.values.tolist()


def test_a_rewritten_column_is_read_again_not_served_from_the_decoded_cache():
    # The decoded-column cache serves repeated page loads; an amendment rewrites a column
    # (new cells, new updated_ms) and the next read must show it.
    store.save_merged([merged(T0 + STEP, {"a": 10}), merged(T0 + 2 * STEP, {"a": 1})])
    first = store.read_matrix(WRITES, T0, T0 + 3 * STEP, tier=0)
    again = store.read_matrix(WRITES, T0, T0 + 3 * STEP, tier=0)
    assert again.matrix.values.tolist() == first.matrix.values.tolist() == [[10, 1]]
    time.sleep(0.002)  # an amendment comes later than the write it replaces
    store.save_merged([merged(T0 + STEP, {"a": 12, "b": 3})])
    amended = store.read_matrix(WRITES, T0, T0 + 3 * STEP, tier=0)
    assert [r.bucket_id for r in amended.matrix.rows] == ["a", "b"]
    assert amended.matrix.values.tolist() == [[12, 1], [3, 0]]


def test_a_warm_read_takes_no_cells_from_the_database():
    store.save_merged([merged(T0 + i * STEP, {"a": i, "b": 1}) for i in range(1, 40)])
    cold = store.read_matrix(WRITES, T0, T0 + 40 * STEP, tier=0)
    with CaptureQueriesContext(connection) as queries:
        warm = store.read_matrix(WRITES, T0, T0 + 40 * STEP, tier=0)
    assert warm.matrix.values.tolist() == cold.matrix.values.tolist()
    # Only the columns' heads are read: every column's cells are already decoded.
    selects = [q["sql"] for q in queries if "keyviz_storedcolumn" in q["sql"]]
    assert len(selects) == 1
    assert '"keyviz_storedcolumn"."cells")' in selects[0]  # only inside LENGTH(...)
    assert selects[0].count('"keyviz_storedcolumn"."cells"') == 1
