"""The demo's synthetic week of KeyViz history: in the store from the first minute, on the
demo catalog's bucket ids, consistent across tiers, and replaced on a restart."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from demo.history import STATE_KEY, bucket_rows, column_times, fill_history
from devcluster.demo import DEMO_RATE, demo_cluster_options
from devcluster.pytest_plugin import matrix
from keyviz import store
from keyviz.models import TIER_1H, TIER_15M, TIER_FINE, StoredColumn
from proto import admin_pb2

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

DAY_MS = 86_400_000
STEP_MS = 2_000
WRITES = admin_pb2.KEYVIZ_SERIES_WRITES


@pytest.fixture(scope="module")
def options():
    return demo_cluster_options()


def fill(options, cluster, now_ms: int):
    return fill_history(
        options["keyspace"],
        cluster.routes(),
        rate=DEMO_RATE,
        step_ms=STEP_MS,
        now_ms=now_ms,
        nodes=["n1", "n2", "n3"],
        design=True,
        key_buckets=options["key_buckets_per_route"],
    )


def test_column_times_cover_a_week_finer_towards_now():
    now = 1_796_000_123_456
    times = column_times(now, STEP_MS)
    ends = [t for t, _ in times]
    assert ends == sorted(set(ends))
    assert ends[-1] == now - now % STEP_MS
    assert ends[0] - times[0][1] <= now - 7 * DAY_MS
    widths = {w for t, w in times if t > now - 3_600_000 + 60_000}
    assert widths == {STEP_MS}
    assert {w for t, w in times if now - DAY_MS + 900_000 < t < now - 3_700_000} == {60_000}
    # No gap and no overlap between consecutive columns' windows.
    for (t0, _), (t1, w1) in itertools.pairwise(times):
        assert t1 - w1 == t0 or (w1 == STEP_MS and t0 - STEP_MS < t1 - w1 <= t0)


def test_synthetic_week_answers_every_window_from_the_store(options, devcluster_factory):
    cluster = devcluster_factory(**options, timers=False, profile="design")
    now = int(time.time() * 1000)
    report = fill(options, cluster, now)
    assert report.synthetic_before_ms == now - now % STEP_MS
    state = store.load_state(STATE_KEY)
    assert state is not None
    assert state["synthetic_before_ms"] == report.synthetic_before_ms
    week = store.read_matrix(WRITES, now - 7 * DAY_MS, now + 1, now_ms=now)
    assert week.tier in (TIER_15M, TIER_1H)
    assert week.matrix.values.shape[0] >= 250
    # Columns over the whole week, each with traffic.
    times = week.matrix.column_unix_ms
    assert times[0] <= now - 6 * DAY_MS
    assert (week.matrix.values.sum(axis=0) > 0).all()
    day = store.read_matrix(WRITES, now - DAY_MS + 60_000, now + 1, tier=TIER_FINE, now_ms=now)
    assert day.matrix.column_unix_ms[0] <= now - DAY_MS + 2 * 60_000
    hour = store.read_matrix(WRITES, now - 3_000_000, now + 1, tier=TIER_FINE, now_ms=now)
    assert hour.step_ms == STEP_MS
    # Nothing before the demo started is on tier 0 past its retention (pruned as usual).
    assert not StoredColumn.objects.filter(
        tier=TIER_FINE, column_ms__lt=now - DAY_MS - 60_000
    ).exists()


def test_synthetic_rows_are_the_bucket_ids_the_live_nodes_report(
    options, devcluster_factory, devcluster_stubs
):
    cluster = devcluster_factory(**options, timers=False, profile="design")
    rows, _ = bucket_rows(
        options["keyspace"], cluster.routes(), True, options["key_buckets_per_route"]
    )
    cluster.generate(6.0)
    at = cluster.flush()
    live = {}
    for node in cluster.nodes:
        for r in matrix(
            cluster, devcluster_stubs, node.node_id, from_unix_ms=at[node.node_id]
        ).rows:
            live[r.bucket_id] = (r.start, r.end, r.label, r.lineage_id)
    synthetic = {r.bucket_id: (r.start, r.end, r.label, r.lineage_id) for r in rows}
    assert len(live) >= 100
    assert live.items() <= synthetic.items()


def test_coarse_tiers_sum_the_finer_synthetic_columns(options, devcluster_factory):
    cluster = devcluster_factory(**options, timers=False)
    now = int(time.time() * 1000)
    fill(options, cluster, now)
    # A complete 1 h window inside the last day: its column equals the sum of tier 0.
    end = (now - 6 * 3_600_000) // 3_600_000 * 3_600_000
    hourly = store.read_matrix(WRITES, end, end + 1, tier=TIER_1H, now_ms=now)
    fine = store.read_matrix(WRITES, end - 3_600_000 + 1, end + 1, tier=TIER_FINE, now_ms=now)
    assert hourly.matrix.values.shape[1] == 1
    assert int(hourly.matrix.values.sum()) == int(fine.matrix.values.sum()) > 0
    sums = fine.matrix.values.sum(axis=1)
    by_row = dict(zip((r.bucket_id for r in fine.matrix.rows), sums, strict=True))
    for row, value in zip(hourly.matrix.rows, hourly.matrix.values[:, 0], strict=True):
        assert by_row.get(row.bucket_id, np.uint64(0)) == value


def test_a_restarted_demo_replaces_its_history(options, devcluster_factory):
    cluster = devcluster_factory(**options, timers=False)
    first = int(time.time() * 1000) - 3 * DAY_MS
    fill(options, cluster, first)
    second = first + 3 * DAY_MS
    report = fill(options, cluster, second)
    fine = StoredColumn.objects.filter(tier=TIER_FINE, series=WRITES)
    horizon = second - store.retention_ms(TIER_FINE)
    assert fine.count() == sum(1 for t, _ in column_times(second, STEP_MS) if t >= horizon)
    assert store.latest_column_ms(WRITES) == report.synthetic_before_ms
