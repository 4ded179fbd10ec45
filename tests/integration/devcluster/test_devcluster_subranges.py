"""Sub-range buckets (the nodes' --keyvizKeyBucketsPerRoute): a route's traffic is
counted per sub-range of its keys, as `route:<id>#<n>` rows with the sub-range's bounds."""

from __future__ import annotations

import pytest

from devcluster import Op
from devcluster.pytest_plugin import matrix

pytestmark = pytest.mark.integration

HIGH = b"user:zzzz"  # after every workload key of its route: its last sub-range


def test_one_bucket_per_route_by_default(devcluster, devcluster_stubs):
    route = devcluster.route_for_key(b"user:000100")
    devcluster.inject([Op("n1", "write", b"user:000100")])
    devcluster.flush(at_ms=1_000)
    rows = matrix(devcluster, devcluster_stubs, "n1").rows
    assert [r.bucket_id for r in rows] == [f"route:{route.route_id}"]


def test_sub_range_rows_split_a_route_at_its_keys(devcluster_factory, devcluster_stubs):
    cluster = devcluster_factory(timers=False, key_buckets_per_route=2)
    route = cluster.route_for_key(HIGH)
    cluster.inject([Op("n1", "write", route.start), Op("n1", "write", HIGH, count=3)])
    cluster.flush(at_ms=1_000)
    rows = {r.bucket_id: r for r in matrix(cluster, devcluster_stubs, "n1").rows}
    low, high = rows[f"route:{route.route_id}#0"], rows[f"route:{route.route_id}#1"]
    assert low.start == route.start
    assert low.end == high.start
    assert route.start < high.start <= HIGH
    assert high.end == route.end
    assert (list(low.values), list(high.values)) == ([1], [3])
    assert len(rows) == 2


def test_sub_range_rows_follow_a_split(devcluster_factory, devcluster_stubs):
    cluster = devcluster_factory(timers=False, key_buckets_per_route=2, profile="design")
    route = cluster.route_for_key(b"user:000100")
    left, right = cluster.split_route(route.route_id, b"user:000100")
    cluster.inject([Op("n1", "write", b"user:000100")])
    cluster.flush(at_ms=1_000)
    ids = [r.bucket_id for r in matrix(cluster, devcluster_stubs, "n1").rows]
    assert len(ids) == 1
    assert ids[0].startswith(f"route:{right}#")
    assert left != right
