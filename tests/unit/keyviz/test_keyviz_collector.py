"""The collector's pure core: which merged columns are final, amended, unknown (finalize.py,
assemble.py). Slots are given (the phase lock's job, align.py); time is passed in."""

from __future__ import annotations

import numpy as np
import pytest

from keyviz.assemble import LeaderBook, RowBook, column_cells, columns_of, merge_slot
from keyviz.columns import FLAG_CONFLICT, FLAG_UNKNOWN, NodeColumn
from keyviz.finalize import SeriesLedger
from tests.unit.keyviz.keyviz_testkit import READS, WRITES, node, row

STEP = 1_000
GRACE = 1_000


def column(name: str, at: int, *cells: tuple[str, int, int]) -> NodeColumn:
    """One node column at `at` with (bucket, value, group) cells."""
    rows = [row(b, [v], groups=[g], terms=[1] if g else [0]) for b, v, g in cells]
    [c] = columns_of(node(name, [at], *rows))
    return c


def ledger(*nodes: str) -> SeriesLedger:
    book = SeriesLedger(STEP, grace_ms=GRACE)
    for n in nodes:
        book.expect(n, 0)
    return book


def test_final_when_all_nodes_past():
    book = ledger("n1", "n2")
    assert book.take("n1", 5, 5_100)
    # n2 has not reported slot 5: not final, although n1 has (well before the grace).
    assert book.due({"n1", "n2"}, now_ms=5_200) == []
    assert book.take("n2", 5, 5_400)
    [fin] = book.due({"n1", "n2"}, now_ms=5_450)
    assert (fin.slot, fin.missing, fin.amend) == (5, (), False)
    assert fin.contributors == {"n1": 5_100, "n2": 5_400}
    # Slot 6 waits for both again.
    assert book.take("n2", 6, 6_400)
    assert book.due({"n1", "n2"}, now_ms=6_450) == []


def test_a_failed_node_never_holds_a_column_back():
    book = ledger("n1", "n2")
    book.take("n1", 5, 5_100)
    [fin] = book.due({"n1"}, now_ms=5_150)  # n2 is down: not healthy
    assert fin.missing == ("n2",)


def test_final_after_grace_marks_missing_unknown():
    book = ledger("n1", "n2")
    book.take("n1", 5, 5_100)
    assert book.due({"n1", "n2"}, now_ms=5 * STEP + GRACE - 1) == []
    [fin] = book.due({"n1", "n2"}, now_ms=5 * STEP + GRACE)
    assert fin.missing == ("n2",)
    # n2 led group 2: its rows are unknown, also the one nobody else counted here.
    leaders = LeaderBook()
    leaders.update({1: "n1", 2: "n2"}, taken_at_ms=1)
    rows = RowBook()
    seen_before = column("n2", 4_400, ("route:2", 3, 2), ("route:9", 1, 2))
    rows.learn(seen_before)
    merged = merge_slot(
        [column("n1", 5_100, ("route:1", 4, 1), ("route:2", 5, 2))],
        series=WRITES,
        column_unix_ms=5 * STEP,
        step_ms=STEP,
        missing=fin.missing,
        leaders=leaders,
        rowbook=rows,
    )
    cells = {r.bucket_id: (v, f) for r, v, f in column_cells(merged)}
    assert cells == {
        "route:1": (4, 0),
        "route:2": (5, FLAG_UNKNOWN),
        "route:9": (0, FLAG_UNKNOWN),
    }
    assert merged.missing == ("n2",)
    assert not merged.unknown_all
    # Which groups it led is not known: the whole column is unknown.
    blind = merge_slot(
        [column("n1", 5_100, ("route:1", 4, 1))],
        series=WRITES,
        column_unix_ms=5 * STEP,
        step_ms=STEP,
        missing=("n2",),
        leaders=LeaderBook(),
    )
    assert blind.unknown_all
    assert blind.flags.tolist() == [FLAG_UNKNOWN]


def test_late_flush_amends_published_column():
    book = ledger("n1", "n2")
    book.take("n1", 5, 5_100)
    [final] = book.due({"n1", "n2"}, now_ms=6_000)
    assert final.missing == ("n2",)
    # n2's column for slot 5 arrives after the grace: the published column is amended.
    assert book.take("n2", 5, 5_950 + 700)
    [amend] = book.due({"n1", "n2"}, now_ms=6_700)
    assert (amend.slot, amend.amend, amend.missing) == (5, True, ())
    assert amend.contributors == {"n1": 5_100, "n2": 6_650}
    # Only once.
    assert book.due({"n1", "n2"}, now_ms=6_800) == []


def test_node_back_with_ring_fills_unknown():
    book = ledger("n1", "n2")
    for slot in (5, 6, 7):
        book.take("n1", slot, slot * STEP + 100)
    finals = book.due({"n1"}, now_ms=7_200)  # n2 unreachable for three steps
    assert [(f.slot, f.missing) for f in finals] == [(5, ("n2",)), (6, ("n2",)), (7, ("n2",))]
    # It answers again with its ring: every missing column is amended, oldest first.
    for slot in (5, 6, 7, 8):
        book.take("n2", slot, slot * STEP + 300)
    out = book.due({"n1", "n2"}, now_ms=8_350)
    assert [(f.slot, f.amend, f.missing) for f in out] == [
        (5, True, ()),
        (6, True, ()),
        (7, True, ()),
    ]
    # Slot 8 still waits for n1.
    book.take("n1", 8, 8_100)
    [fin] = book.due({"n1", "n2"}, now_ms=8_400)
    assert (fin.slot, fin.amend) == (8, False)


def test_restart_does_not_double():
    book = ledger("n1", "n2")
    for slot in (1, 2, 3):
        book.take("n1", slot, slot * STEP + 100)
        book.take("n2", slot, slot * STEP + 200)
    assert [f.slot for f in book.due({"n1", "n2"}, now_ms=3_300)] == [1, 2, 3]
    book.take("n1", 4, 4_100)  # taken, not final yet, when the collector stops
    saved = book.to_dict()

    again = SeriesLedger.from_dict(saved, grace_ms=GRACE)
    again.restore_pending(4, [("n1", 4_100)])  # read back from the store
    # The new holder re-reads what it had: nothing is final twice, nothing amended.
    assert not again.take("n1", 3, 3_100)
    assert not again.take("n2", 3, 3_200)
    assert not again.take("n1", 4, 4_100)
    assert again.due({"n1", "n2"}, now_ms=4_300) == []
    again.take("n2", 4, 4_200)
    [fin] = again.due({"n1", "n2"}, now_ms=4_300)
    assert (fin.slot, fin.amend, fin.contributors) == (4, False, {"n1": 4_100, "n2": 4_200})
    assert again.duplicates == 3


def test_a_node_is_not_missing_before_it_was_first_seen():
    book = SeriesLedger(STEP, grace_ms=GRACE)
    book.take("n1", 3, 3_100)
    book.take("n2", 5, 5_100)  # n2's ring starts later (or it joined later)
    book.take("n1", 4, 4_100)
    book.take("n1", 5, 5_100)
    out = book.due({"n1", "n2"}, now_ms=5_200)
    assert [(f.slot, f.missing) for f in out] == [(3, ()), (4, ()), (5, ())]


def test_a_long_empty_run_is_skipped_not_published_column_by_column():
    book = SeriesLedger(STEP, grace_ms=GRACE, max_gap=10)
    book.take("n1", 1, 1_100)
    book.due({"n1"}, now_ms=1_200)
    book.take("n1", 100, 100_100)
    out = book.due({"n1"}, now_ms=100_200)
    assert [f.slot for f in out] == [100]


def test_reads_sum_and_writes_follow_the_merge_setting():
    a = column("n1", 5_100, ("route:1", 4, 1))
    b = column("n2", 5_300, ("route:1", 6, 1))
    summed = merge_slot([a, b], series=WRITES, column_unix_ms=5_000, step_ms=STEP)
    assert summed.values.tolist() == [10]
    dedupe = merge_slot(
        [a, b], series=WRITES, column_unix_ms=5_000, step_ms=STEP, writes_merge="dedupe"
    )
    # Same (group, term), different values: the larger one, marked conflict.
    assert (dedupe.values.tolist(), dedupe.flags.tolist()) == ([6], [FLAG_CONFLICT])
    reads = merge_slot(
        [a, b], series=READS, column_unix_ms=5_000, step_ms=STEP, writes_merge="dedupe"
    )
    assert reads.values.tolist() == [10]
    assert reads.contributors == {"n1": 5_100, "n2": 5_300}
    assert reads.values.dtype == np.uint64


# ---------------------------------------------------------------- the history's background work


@pytest.mark.django_db(transaction=True)
def test_the_holder_compacts_in_the_background_and_records_a_failed_run():
    from django.db import connection

    from keyviz import store
    from keyviz.history import History
    from keyviz.models import StoredColumn
    from tests.unit.keyviz.store_kit import STEP as KIT_STEP
    from tests.unit.keyviz.store_kit import T0, merged

    store.clear_bucket_cache()
    store.save_merged([merged(T0 + (k + 1) * KIT_STEP, {"r1": k + 1}) for k in range(15)])
    history = History()
    later = T0 + 3_600_000
    run = history.maybe_compact(later)
    assert run is not None
    assert run.result(timeout=30) is None
    assert StoredColumn.objects.filter(tier=1).count() == 1
    # About once a minute: not again at once.
    assert history.maybe_compact(later) is None
    # A run that fails (the table is gone) is recorded like a failed write.
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE keyviz_storedcolumn RENAME TO keyviz_storedcolumn_away")
    try:
        history._compact_due = 0.0
        failing = history.maybe_compact(later)
        assert failing is not None
        assert failing.result(timeout=30) is not None
        history.maybe_compact(later)
        assert history.last_error is not None
        assert history.last_error.startswith("history not being recorded: ")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE keyviz_storedcolumn_away RENAME TO keyviz_storedcolumn")
        history._db.shutdown(wait=True)
        history._compactor.shutdown(wait=True)
        store.clear_bucket_cache()
