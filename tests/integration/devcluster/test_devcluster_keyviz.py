"""GetKeyVizMatrix over real gRPC: exact counts, who records what, shapes, windows, budgets."""

from __future__ import annotations

import grpc
import pytest

from devcluster import ClusterError, DevCluster, Op
from devcluster.pytest_plugin import matrix
from proto import admin_pb2

pytestmark = pytest.mark.integration

READS = admin_pb2.KEYVIZ_SERIES_READS
WRITES = admin_pb2.KEYVIZ_SERIES_WRITES
READ_BYTES = admin_pb2.KEYVIZ_SERIES_READ_BYTES
WRITE_BYTES = admin_pb2.KEYVIZ_SERIES_WRITE_BYTES

# A key per default route: route id -> key (group = (id - 1) % 3 + 1, led by n<group>).
KEY = {
    1: b"\x00\x01",
    2: b"!dist|x",
    3: b"!txn|1",
    4: b"item:1",
    5: b"order:1",
    6: b"session:1",
    7: b"user:1",
    8: b"\xff\x00",
}


def _values(response: admin_pb2.GetKeyVizMatrixResponse) -> dict[str, list[int]]:
    return {row.bucket_id: list(row.values) for row in response.rows}


# Route 7 (b"user:...") belongs to group 1, led by n1.
MIXED_OPS = [
    Op("n2", "write", KEY[7], size=100, count=5),
    Op("n3", "write", KEY[7], size=10, count=2),
    Op("n3", "read", KEY[7], size=7, count=3),
    Op("n2", "read", KEY[7], size=1, count=4, follower_local=True),
]


def test_upstream_counts_writes_on_the_entry_node_and_reads_where_served(
    devcluster, devcluster_stubs
):
    devcluster.inject(MIXED_OPS)
    devcluster.flush(at_ms=1_000)

    def series(node_id: str, s: int) -> dict[str, list[int]]:
        return _values(matrix(devcluster, devcluster_stubs, node_id, s))

    assert series("n1", READS) == {"route:7": [3]}
    assert series("n1", READ_BYTES) == {"route:7": [21]}
    assert series("n1", WRITES) == {"route:7": [0]}
    assert series("n2", WRITES) == {"route:7": [5]}
    assert series("n2", WRITE_BYTES) == {"route:7": [500]}
    assert series("n2", READS) == {"route:7": [4]}
    assert series("n3", WRITES) == {"route:7": [2]}
    assert series("n3", WRITE_BYTES) == {"route:7": [20]}
    assert series("n3", READS) == {"route:7": [0]}


def test_design_counts_writes_once_on_the_group_leader(devcluster_design, devcluster_stubs):
    cluster = devcluster_design
    cluster.inject(MIXED_OPS)
    cluster.flush(at_ms=1_000)

    assert _values(matrix(cluster, devcluster_stubs, "n1", WRITES)) == {"route:7": [7]}
    assert _values(matrix(cluster, devcluster_stubs, "n1", WRITE_BYTES)) == {"route:7": [520]}
    assert _values(matrix(cluster, devcluster_stubs, "n1", READS)) == {"route:7": [3]}
    assert _values(matrix(cluster, devcluster_stubs, "n2", READS)) == {"route:7": [4]}
    assert _values(matrix(cluster, devcluster_stubs, "n2", WRITES)) == {"route:7": [0]}
    assert matrix(cluster, devcluster_stubs, "n3", WRITES).rows == []


def test_follower_stamps_the_leaders_group_and_term(devcluster, devcluster_stubs):
    devcluster.transfer_leadership(1, "n3")  # term 2
    devcluster.inject([Op("n2", "write", KEY[7]), Op("n3", "write", KEY[7])])
    devcluster.flush(at_ms=1_000)

    stamps = {
        node_id: [
            (list(r.raft_group_ids), list(r.leader_terms))
            for r in matrix(devcluster, devcluster_stubs, node_id).rows
        ]
        for node_id in ("n2", "n3")
    }

    # Two nodes report writes for the same (group, term): the entry-node counting of today.
    assert stamps == {"n2": [([1], [2])], "n3": [([1], [2])]}


def test_series_unspecified_means_writes(devcluster, devcluster_stubs):
    devcluster.inject([Op("n1", "write", KEY[4], size=3, count=2), Op("n1", "read", KEY[4])])
    devcluster.flush(at_ms=1_000)

    unspecified = matrix(devcluster, devcluster_stubs, "n1", admin_pb2.KEYVIZ_SERIES_UNSPECIFIED)

    assert unspecified == matrix(devcluster, devcluster_stubs, "n1", WRITES)
    assert _values(unspecified) == {"route:4": [2]}


def test_unknown_series_is_invalid_argument(devcluster, devcluster_stubs):
    with pytest.raises(grpc.RpcError) as err:
        matrix(devcluster, devcluster_stubs, "n1", 9)

    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _three_columns(cluster: DevCluster) -> None:
    """Route 1 busy in the first column, nothing in the second, route 5 in the third (n1)."""
    cluster.inject([Op("n1", "write", KEY[1], count=2)])
    cluster.flush("n1", at_ms=1_000)
    cluster.flush("n1", at_ms=2_000)
    cluster.inject([Op("n1", "write", KEY[5], count=7), Op("n1", "write", KEY[1])])
    cluster.flush("n1", at_ms=3_000)


def test_matrix_shapes_agree_across_columns(devcluster, devcluster_stubs):
    _three_columns(devcluster)

    response = matrix(devcluster, devcluster_stubs, "n1")

    assert list(response.column_unix_ms) == [1_000, 2_000, 3_000]
    assert _values(response) == {"route:1": [2, 0, 1], "route:5": [0, 0, 7]}
    for row in response.rows:
        assert len(row.values) == len(row.raft_group_ids) == len(row.leader_terms) == 3
    # Empty cells carry group and term 0.
    assert [list(r.raft_group_ids) for r in response.rows] == [[1, 0, 1], [0, 0, 2]]
    assert [list(r.leader_terms) for r in response.rows] == [[1, 0, 1], [0, 0, 1]]


@pytest.mark.parametrize(
    ("from_ms", "to_ms", "columns", "values"),
    [
        (0, 0, [1_000, 2_000, 3_000], {"route:1": [2, 0, 1], "route:5": [0, 0, 7]}),
        (2_000, 3_000, [2_000], {}),  # half-open: 3000 is out, and 2000 saw no traffic
        (1_000, 2_000, [1_000], {"route:1": [2]}),
        (0, 2_000, [1_000], {"route:1": [2]}),
        (2_000, 0, [2_000, 3_000], {"route:1": [0, 1], "route:5": [0, 7]}),
        (1_001, 3_001, [2_000, 3_000], {"route:1": [0, 1], "route:5": [0, 7]}),
        (3_001, 0, [], {}),
    ],
)
def test_window_is_half_open_on_column_timestamps(
    devcluster, devcluster_stubs, from_ms, to_ms, columns, values
):
    _three_columns(devcluster)

    response = matrix(devcluster, devcluster_stubs, "n1", from_unix_ms=from_ms, to_unix_ms=to_ms)

    assert (list(response.column_unix_ms), _values(response)) == (columns, values)


def test_rows_are_sorted_by_start_key_then_bucket_id(devcluster_factory, devcluster_stubs):
    cluster = devcluster_factory(adapter_rows=True)
    cluster.inject(
        [
            Op("n1", "write", KEY[8]),
            Op("n1", "write", KEY[7], adapter="redis"),
            Op("n1", "write", KEY[7], adapter="dynamo"),
            Op("n1", "write", KEY[1]),
        ]
    )
    cluster.flush(at_ms=1_000)

    rows = matrix(cluster, devcluster_stubs, "n1").rows

    assert [(r.bucket_id, r.start, r.label) for r in rows] == [
        ("route:1:rawkv", b"", "rawkv"),
        ("route:7:dynamo", b"user:", "dynamo"),
        ("route:7:redis", b"user:", "redis"),
        ("route:8:rawkv", b"\x80", "rawkv"),
    ]
    assert [(list(r.route_ids), r.route_count, r.aggregate) for r in rows[1:3]] == [
        ([7], 1, False)
    ] * 2


def test_row_budget_keeps_the_busiest_rows_and_drops_the_rest(devcluster, devcluster_stubs):
    devcluster.inject(
        [
            Op("n1", "write", KEY[1], count=1),
            Op("n1", "write", KEY[5], count=4),
            Op("n1", "write", KEY[7], count=5),
            Op("n1", "write", KEY[8], count=3),
        ]
    )
    devcluster.flush(at_ms=1_000)
    devcluster.inject([Op("n1", "write", KEY[5], count=3)])  # totals: 1, 7, 5, 3
    devcluster.flush(at_ms=2_000)

    kept = matrix(devcluster, devcluster_stubs, "n1", rows=2)
    unlimited = matrix(devcluster, devcluster_stubs, "n1", rows=0)

    assert _values(kept) == {"route:5": [4, 3], "route:7": [5, 0]}
    assert [r.bucket_id for r in kept.rows] == ["route:5", "route:7"]  # key order, not rank
    assert [r.bucket_id for r in unlimited.rows] == ["route:1", "route:5", "route:7", "route:8"]


def test_rows_above_1024_are_clamped_to_1024(devcluster_factory, devcluster_stubs):
    cluster = devcluster_factory(routes=1100)
    cluster.inject([Op("n1", "write", r.start) for r in cluster.routes()])
    cluster.flush(at_ms=1_000)

    assert len(matrix(cluster, devcluster_stubs, "n1", rows=5_000).rows) == 1024
    assert len(matrix(cluster, devcluster_stubs, "n1", rows=0).rows) == 1100


def test_routes_past_the_budget_coarsen_into_virtual_rows(devcluster_factory, devcluster_stubs):
    # 8 routes, budget 5: runs of 2, 2, 2, 1, 1 adjacent routes.
    cluster = devcluster_factory(max_tracked_routes=5)
    cluster.inject(
        [
            Op("n1", "write", KEY[3], count=2),
            Op("n1", "write", KEY[4], count=3),
            Op("n1", "write", KEY[7]),
        ]
    )
    cluster.flush(at_ms=1_000)

    rows = matrix(cluster, devcluster_stubs, "n1").rows

    assert [
        (r.bucket_id, r.start, r.end, r.aggregate, list(r.route_ids), r.route_count) for r in rows
    ] == [
        ("virtual:3", b"!txn|", b"order:", True, [3, 4], 2),
        ("route:7", b"user:", b"\x80", False, [7], 1),
    ]
    assert [(list(r.values), list(r.raft_group_ids), list(r.leader_terms)) for r in rows] == [
        ([5], [0], [0]),  # aggregates span groups: no group, no term
        ([1], [1], [1]),
    ]


def test_split_in_mid_window_shows_parent_and_children_in_one_column(devcluster, devcluster_stubs):
    devcluster.inject([Op("n2", "write", b"order:1", count=2)])
    left, right = devcluster.split_route(5, b"order:5")
    devcluster.inject([Op("n2", "write", b"order:1"), Op("n2", "write", b"order:7", count=4)])
    devcluster.flush(at_ms=1_000)

    assert _values(matrix(devcluster, devcluster_stubs, "n2")) == {
        "route:5": [2],
        f"route:{left}": [1],
        f"route:{right}": [4],
    }


def test_history_ring_keeps_only_the_newest_columns(devcluster_factory, devcluster_stubs):
    cluster = devcluster_factory(history_columns=3)
    for at in range(1, 6):
        cluster.inject([Op("n1", "write", KEY[1], count=at)])
        cluster.flush("n1", at_ms=at * 1_000)

    response = matrix(cluster, devcluster_stubs, "n1")

    assert list(response.column_unix_ms) == [3_000, 4_000, 5_000]
    assert _values(response) == {"route:1": [3, 4, 5]}


def test_flush_refuses_to_go_back_in_time(devcluster):
    devcluster.flush("n1", at_ms=2_000)

    with pytest.raises(ValueError, match="not after"):
        devcluster.flush("n1", at_ms=2_000)


def test_nodes_flush_independently(devcluster, devcluster_stubs):
    devcluster.flush("n1", at_ms=1_000)
    devcluster.flush("n2", at_ms=1_400)

    assert list(matrix(devcluster, devcluster_stubs, "n1").column_unix_ms) == [1_000]
    assert list(matrix(devcluster, devcluster_stubs, "n2").column_unix_ms) == [1_400]
    assert list(matrix(devcluster, devcluster_stubs, "n3").column_unix_ms) == []


def test_node_without_sampler_answers_unavailable(devcluster, devcluster_stubs):
    devcluster.set_keyviz_enabled("n2", False)

    with pytest.raises(grpc.RpcError) as err:
        matrix(devcluster, devcluster_stubs, "n2")

    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert list(devcluster.flush()) == ["n1", "n3"]


def test_restarted_node_starts_with_empty_history(devcluster, devcluster_stubs):
    devcluster.inject([Op("n1", "write", KEY[1])])
    devcluster.flush("n1", at_ms=1_000)
    devcluster.stop_node("n1")
    devcluster.start_node("n1")

    assert matrix(devcluster, devcluster_stubs, "n1") == admin_pb2.GetKeyVizMatrixResponse()


def test_inject_into_a_down_node_is_refused_and_counts_nothing(devcluster, devcluster_stubs):
    devcluster.stop_node("n3")

    with pytest.raises(ClusterError, match="entry node n3 is down"):
        devcluster.inject([Op("n1", "write", KEY[1]), Op("n3", "write", KEY[1])])

    devcluster.flush("n1", at_ms=1_000)
    assert matrix(devcluster, devcluster_stubs, "n1").rows == []


def test_generated_workload_counts_each_write_once_across_nodes(
    devcluster_factory, devcluster_stubs
):
    cluster = devcluster_factory(workload_rate=2_000, seed=7)
    commits_before = sum(g.commit_index for g in cluster.groups())

    served = cluster.generate(3.0)
    cluster.flush(at_ms=1_000)

    def total(series: int) -> int:
        return sum(
            row.values[0]
            for n in cluster.nodes
            for row in matrix(cluster, devcluster_stubs, n.node_id, series).rows
        )

    writes, reads = total(WRITES), total(READS)
    assert served > 4_000
    assert writes == sum(g.commit_index for g in cluster.groups()) - commits_before
    assert writes + reads == served
    assert 0.2 < writes / served < 0.4
