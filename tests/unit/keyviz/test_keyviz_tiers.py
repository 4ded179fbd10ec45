"""Compaction (tier 0 -> 15 min -> 1 h) and retention of the KeyViz store."""

from __future__ import annotations

import numpy as np
import pytest

from keyviz import store, tiers
from keyviz.columns import FLAG_CONFLICT, FLAG_SOFT, FLAG_UNKNOWN
from keyviz.models import Bucket, StoredColumn, StoredNodeColumn
from tests.unit.keyviz.store_kit import READS, STEP, T0, WRITES, merged, node_column

pytestmark = pytest.mark.django_db

M15 = 15 * 60_000
H1 = 60 * 60_000
DAY = 24 * H1
GRACE = tiers.COMPACT_GRACE_MS


@pytest.fixture(autouse=True)
def _fresh_cache():
    store.clear_bucket_cache()
    yield
    store.clear_bucket_cache()


def _hour_of_columns(rng: np.random.Generator, *, top: int = 10**6) -> dict[str, list[int]]:
    """60 tier-0 columns (T0 + 1 min .. T0 + 60 min), random rows and values; return per-row values."""
    per_row: dict[str, list[int]] = {f"r{i:02d}": [0] * 60 for i in range(40)}
    columns = []
    for k in range(60):
        cells = {}
        for name in rng.choice(sorted(per_row), size=25, replace=False).tolist():
            v = int(rng.integers(1, top, dtype=np.uint64))
            cells[name] = v
            per_row[name][k] = v
        columns.append(merged(T0 + (k + 1) * STEP, cells))
    store.save_merged(columns)
    return per_row


def _cells(tier: int, column_ms: int, series: int = WRITES) -> bytes:
    return bytes(StoredColumn.objects.get(tier=tier, series=series, column_ms=column_ms).cells)


def test_compaction_keeps_totals_exactly():
    rng = np.random.default_rng(11)
    # Values near 2^58: a float64 sum would round them.
    per_row = _hour_of_columns(rng, top=2**58)
    report = tiers.compact(T0 + H1 + GRACE)
    assert report.written == {1: 4, 2: 1}
    q = store.read_matrix(WRITES, T0, T0 + H1 + 1, tier=1)
    assert q.matrix.column_unix_ms.tolist() == [T0 + M15 * i for i in (1, 2, 3, 4)]
    assert q.step_ms == M15
    for i, row in enumerate(q.matrix.rows):
        want = [sum(per_row[row.bucket_id][w * 15 : (w + 1) * 15]) for w in range(4)]
        assert q.matrix.values[i].tolist() == want
    h = store.read_matrix(WRITES, T0, T0 + H1 + 1, tier=2)
    assert h.step_ms == H1
    assert h.matrix.column_unix_ms.tolist() == [T0 + H1]
    totals = {r.bucket_id: int(h.matrix.values[i, 0]) for i, r in enumerate(h.matrix.rows)}
    assert totals == {b: sum(v) for b, v in per_row.items() if sum(v)}


def test_compaction_saturates_instead_of_wrapping():
    big = 2**64 - 1
    store.save_merged([merged(T0 + STEP, {"a": big, "b": 1}), merged(T0 + 2 * STEP, {"a": 5})])
    tiers.compact(T0 + M15 + GRACE)
    got = store.read_matrix(WRITES, T0, T0 + M15 + 1, tier=1).matrix
    assert got.values[:, 0].tolist() == [big, 1]


def test_compaction_ors_flags():
    store.save_merged(
        [
            merged(T0 + STEP, {"a": 1}, flags={"a": FLAG_SOFT}, contributors={"n1": 10, "n2": 20}),
            merged(
                T0 + 2 * STEP,
                {"a": 1, "b": 1},
                flags={"a": FLAG_CONFLICT, "c": FLAG_UNKNOWN},
                contributors={"n1": 70},
                missing=("n2",),
            ),
            merged(T0 + 3 * STEP, {"b": 2}, contributors={}, missing=("n3",), unknown_all=True),
        ]
    )
    tiers.compact(T0 + M15 + GRACE)
    got = store.read_matrix(WRITES, T0, T0 + M15 + 1, tier=1)
    m = got.matrix
    assert [r.bucket_id for r in m.rows] == ["a", "b", "c"]
    assert m.values[:, 0].tolist() == [2, 3, 0]
    assert m.soft[:, 0].tolist() == [True, False, False]
    assert m.conflict[:, 0].tolist() == [True, False, False]
    # unknown_all in one fine column makes the whole coarse column unknown.
    assert m.unknown is not None
    assert m.unknown[:, 0].tolist() == [True, True, True]
    assert got.contributors == ({"n1": 70, "n2": 20},)
    assert got.missing == (("n2", "n3"),)


def test_compaction_waits_for_complete_windows():
    store.save_merged([merged(T0 + k * STEP, {"a": 1}) for k in range(1, 16)])
    assert tiers.compact(T0 + M15 + GRACE - 1).written == {1: 0, 2: 0}
    assert not StoredColumn.objects.filter(tier=1).exists()
    assert tiers.compact(T0 + M15 + GRACE).written == {1: 1, 2: 0}
    assert store.read_matrix(WRITES, T0, T0 + M15 + 1, tier=1).matrix.values.tolist() == [[15]]


def test_compaction_is_idempotent():
    rng = np.random.default_rng(3)
    _hour_of_columns(rng)
    store.save_merged([merged(T0 + STEP, {"x": 4}, series=READS)])
    now = T0 + H1 + GRACE
    tiers.compact(now)
    before = {
        (c.tier, c.series, c.column_ms): (bytes(c.cells), c.contributors, c.missing, c.dirty)
        for c in StoredColumn.objects.filter(tier__gt=0)
    }
    again = tiers.compact(now)
    assert again.written == {1: 0, 2: 0}
    assert again.rebuilt == {1: 0, 2: 0}
    # Forcing every coarse window to be rebuilt gives the very same bytes.
    StoredColumn.objects.filter(tier__gt=0).update(dirty=True)
    forced = tiers.compact(now)
    assert forced.rebuilt == {1: 5, 2: 2}
    after = {
        (c.tier, c.series, c.column_ms): (bytes(c.cells), c.contributors, c.missing, c.dirty)
        for c in StoredColumn.objects.filter(tier__gt=0)
    }
    assert after == before


def test_amended_fine_column_recompacts_its_windows():
    store.save_merged([merged(T0 + k * STEP, {"a": 1}) for k in range(1, 61)])
    tiers.compact(T0 + H1 + GRACE)
    assert store.read_matrix(WRITES, T0, T0 + H1 + 1, tier=2).matrix.values.tolist() == [[60]]
    # A node's data for T0 + 20 min arrives after publication: the column is amended.
    store.save_merged([merged(T0 + 20 * STEP, {"a": 11, "b": 5})])
    dirty = StoredColumn.objects.filter(dirty=True).values_list("tier", "column_ms")
    assert list(dirty) == [(1, T0 + 2 * M15)]
    report = tiers.compact(T0 + H1 + GRACE + STEP)
    assert report.rebuilt == {1: 1, 2: 1}
    q = store.read_matrix(WRITES, T0, T0 + H1 + 1, tier=1).matrix
    assert q.values.tolist() == [[15, 25, 15, 15], [0, 5, 0, 0]]
    h = store.read_matrix(WRITES, T0, T0 + H1 + 1, tier=2).matrix
    assert h.values.tolist() == [[70], [5]]
    assert not StoredColumn.objects.filter(dirty=True).exists()


def test_late_fine_column_recompacts_its_window():
    store.save_merged([merged(T0 + k * STEP, {"a": 1}) for k in range(1, 15)])  # no 15th
    tiers.compact(T0 + M15 + GRACE)
    store.save_merged([merged(T0 + 15 * STEP, {"a": 100})])  # late, not an amendment
    tiers.compact(T0 + M15 + GRACE + STEP)
    assert store.read_matrix(WRITES, T0, T0 + M15 + 1, tier=1).matrix.values.tolist() == [[114]]


def test_dirty_window_whose_fine_columns_were_pruned_keeps_what_it_had():
    store.save_merged([merged(T0 + k * STEP, {"a": 1}) for k in range(1, 16)])
    tiers.compact(T0 + M15 + GRACE)
    later = T0 + M15 + DAY + M15  # the window's fine columns are past retention
    tiers.prune(later)
    assert not StoredColumn.objects.filter(tier=0).exists()
    StoredColumn.objects.filter(tier=1).update(dirty=True)
    report = tiers.compact(later)
    assert report.stale_skipped == 1
    assert report.rebuilt == {1: 0, 2: 0}
    got = store.read_matrix(WRITES, T0, T0 + M15 + 1, tier=1).matrix
    assert got.values.tolist() == [[15]]


def test_prune_deletes_by_tier_retention():
    store.save_merged([merged(T0 + k * STEP, {"a": 1}) for k in range(1, 61)])
    store.save_node_columns(WRITES, [(T0 + STEP, node_column("n1", T0 + STEP - 9, {"a": 1}))])
    tiers.compact(T0 + H1 + GRACE)
    counts = {t: StoredColumn.objects.filter(tier=t).count() for t in (0, 1, 2)}
    assert counts == {0: 60, 1: 4, 2: 1}
    # A day after the last fine column: tier 0 (and raw node columns) are gone, the rest stays.
    tiers.prune(T0 + H1 + DAY + 1)
    counts = {t: StoredColumn.objects.filter(tier=t).count() for t in (0, 1, 2)}
    assert counts == {0: 0, 1: 4, 2: 1}
    assert not StoredNodeColumn.objects.exists()
    tiers.prune(T0 + H1 + 7 * DAY + 1)
    assert StoredColumn.objects.filter(tier=1).count() == 0
    assert StoredColumn.objects.filter(tier=2).count() == 1
    tiers.prune(T0 + H1 + 30 * DAY + 1)
    assert not StoredColumn.objects.exists()


def test_prune_keeps_buckets_with_history():
    # "old" was retired by a split right after T0 + 1 min; "new" lives on.
    store.save_merged([merged(T0 + STEP, {"old": 3, "new": 1})])
    store.save_merged([merged(T0 + k * STEP, {"new": 1}) for k in range(2, 61)])
    tiers.compact(T0 + H1 + GRACE)
    tiers.prune(T0 + 10 * DAY)  # tier 0 and 1 gone; the 1 h column still holds "old"
    assert Bucket.objects.filter(bucket_id="old").exists()
    h = store.read_matrix(WRITES, T0, T0 + H1 + 1, tier=2).matrix
    assert [(r.bucket_id, int(v)) for r, v in zip(h.rows, h.values[:, 0], strict=True)] == [
        ("new", 60),
        ("old", 3),
    ]
    tiers.prune(T0 + 32 * DAY)  # every column holding "old" is gone, and so is the bucket
    assert not Bucket.objects.filter(bucket_id="old").exists()


def test_read_matrix_picks_the_tier_from_retention():
    store.save_merged([merged(T0 + k * STEP, {"a": 1}) for k in range(1, 61)])
    tiers.compact(T0 + H1 + GRACE)
    now = T0 + 2 * DAY
    got = store.read_matrix(WRITES, T0, now, now_ms=now)  # starts beyond the fine retention
    assert got.tier == 1
    assert got.step_ms == M15
    assert got.matrix.values.tolist() == [[15, 15, 15, 15]]
    old = store.read_matrix(WRITES, T0, now + 8 * DAY, now_ms=now + 8 * DAY)
    assert old.tier == 2
    assert old.matrix.values.tolist() == [[60]]


def test_read_bucket_on_a_coarse_tier_has_merged_values_only():
    store.save_merged([merged(T0 + k * STEP, {"a": 2}) for k in range(1, 16)])
    store.save_node_columns(WRITES, [(T0 + STEP, node_column("n1", T0 + STEP, {"a": 2}))])
    tiers.compact(T0 + M15 + GRACE)
    got = store.read_bucket(WRITES, "a", T0, T0 + M15 + 1, tier=1)
    assert got.values.tolist() == [30]
    assert not got.per_node
    assert got.nodes == ()


def test_compaction_of_a_corrupt_column_is_a_store_error_naming_it():
    store.save_merged([merged(T0 + k * STEP, {"a": 1}) for k in range(1, 16)])
    StoredColumn.objects.filter(column_ms=T0 + 3 * STEP).update(cells=b"\x01\x00")
    with pytest.raises(store.StoreError, match=f"column tier 0 series {WRITES} at {T0 + 3 * STEP}"):
        tiers.compact(T0 + M15 + GRACE)
    StoredColumn.objects.filter(column_ms=T0 + 3 * STEP).update(
        cells=bytes(StoredColumn.objects.get(column_ms=T0 + 4 * STEP).cells), missing={"x": 1}
    )
    with pytest.raises(store.StoreError, match="is corrupt: missing is not a list"):
        tiers.compact(T0 + M15 + GRACE)
    assert not StoredColumn.objects.filter(tier=1).exists()


def test_prune_keeps_timeline_events_as_long_as_the_coarsest_history():
    from keyviz import events
    from keyviz.models import Event

    events.save(
        [
            events.Observed("node_down", T0, "n1", details={"error": "x"}),
            events.Observed("node_up", T0 + 20 * DAY, "n1"),
        ]
    )
    tiers.prune(T0 + 10 * DAY)  # past the fine and 15 min retention: both kept
    assert Event.objects.count() == 2
    tiers.prune(T0 + 30 * DAY + 1)  # the first is older than the 1 h tier's 30 d
    assert list(Event.objects.values_list("type", flat=True)) == ["node_up"]
