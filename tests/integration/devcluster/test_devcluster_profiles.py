"""What each profile serves: upstream's UNIMPLEMENTED methods, the design's extras."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest

from devcluster import DevCluster, Op
from devcluster.pytest_plugin import StubsFactory, matrix
from proto import admin_pb2

pytestmark = pytest.mark.integration

WRITES = admin_pb2.KEYVIZ_SERIES_WRITES
READS = admin_pb2.KEYVIZ_SERIES_READS
LEADER_WRITE = admin_pb2.SAMPLE_ROLE_LEADER_WRITE
LEADER_READ = admin_pb2.SAMPLE_ROLE_LEADER_READ
FOLLOWER_READ = admin_pb2.SAMPLE_ROLE_FOLLOWER_READ


def _admin(cluster: DevCluster, stubs: StubsFactory, node_id: str) -> Any:
    return stubs(cluster.node(node_id).address).admin


@pytest.mark.parametrize(
    ("method", "request_message"),
    [
        ("GetAdapterSummary", admin_pb2.GetAdapterSummaryRequest()),
        ("GetRouteDetail", admin_pb2.GetRouteDetailRequest(bucket_id="route:1")),
    ],
)
def test_upstream_answers_unimplemented_like_todays_nodes(
    devcluster, devcluster_stubs, method, request_message
):
    call = getattr(_admin(devcluster, devcluster_stubs, "n1"), method)

    with pytest.raises(grpc.RpcError) as err:
        call(request_message, metadata=devcluster.auth_metadata())

    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_upstream_stream_events_is_unimplemented(devcluster, devcluster_stubs):
    stream = _admin(devcluster, devcluster_stubs, "n1").StreamEvents(
        admin_pb2.StreamEventsRequest(), metadata=devcluster.auth_metadata()
    )

    with pytest.raises(grpc.RpcError) as err:
        next(stream)

    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_upstream_rows_leave_design_fields_empty_even_when_sampling(
    devcluster_factory, devcluster_stubs
):
    cluster = devcluster_factory(sample_rate=0.5)
    cluster.inject([Op("n1", "write", b"user:1", count=40)])
    cluster.flush(at_ms=1_000)

    (row,) = matrix(cluster, devcluster_stubs, "n1").rows

    assert (list(row.sample_roles), row.lineage_id, list(row.soft_columns)) == ([], "", [])


def test_design_rows_carry_sample_roles_per_series(devcluster_design, devcluster_stubs):
    cluster = devcluster_design
    # Route 7 is led by n1; n1 serves leader reads, n2 a follower-local read.
    cluster.inject(
        [
            Op("n1", "write", b"user:1"),
            Op("n3", "read", b"user:1"),
            Op("n1", "read", b"user:1", follower_local=True),
            Op("n2", "read", b"user:1", follower_local=True),
        ]
    )
    cluster.flush(at_ms=1_000)

    def roles(node_id: str, series: int) -> list[list[int]]:
        return [
            list(r.sample_roles) for r in matrix(cluster, devcluster_stubs, node_id, series).rows
        ]

    assert roles("n1", WRITES) == [[LEADER_WRITE]]
    assert roles("n1", READS) == [[LEADER_READ]]
    assert roles("n2", READS) == [[FOLLOWER_READ]]
    assert roles("n2", WRITES) == [[]]


def test_design_lineage_follows_splits(devcluster_design, devcluster_stubs):
    left, right = devcluster_design.split_route(5, b"order:5")
    devcluster_design.inject([Op("n2", "write", b"order:1"), Op("n2", "write", b"order:9")])
    devcluster_design.flush(at_ms=1_000)

    rows = matrix(devcluster_design, devcluster_stubs, "n2").rows

    assert [(r.bucket_id, r.lineage_id) for r in rows] == [
        (f"route:{left}", "lineage-5"),
        (f"route:{right}", "lineage-5"),
    ]


def test_design_marks_columns_soft_when_sampling_misses_the_bound(
    devcluster_factory, devcluster_stubs
):
    # At p = 0.5 a cell needs ceil(1.96^2 / 0.1^2 * 0.5) = 193 kept hits.
    cluster = devcluster_factory(profile="design", sample_rate=0.5, seed=3)
    cluster.inject(
        [Op("n1", "write", b"user:1", count=2_000), Op("n1", "write", b"item:1", count=10)]
    )
    cluster.flush(at_ms=1_000)
    cluster.inject([Op("n1", "write", b"user:1", count=10)])
    cluster.flush(at_ms=2_000)

    rows = {r.bucket_id: r for r in matrix(cluster, devcluster_stubs, "n1").rows}

    assert list(rows["route:4"].soft_columns) == [True, False]
    assert list(rows["route:7"].soft_columns) == [False, True]
    assert 1_800 <= rows["route:7"].values[0] <= 2_200
    assert rows["route:7"].values[0] % 2 == 0  # kept hits scaled by 1 / 0.5
    # No reads were sampled at all: nothing to be unsure about.
    reads = matrix(cluster, devcluster_stubs, "n1", READS).rows
    assert [(r.bucket_id, list(r.soft_columns)) for r in reads] == [
        ("route:4", []),
        ("route:7", []),
    ]


def test_design_exact_counts_have_no_soft_columns(devcluster_design, devcluster_stubs):
    devcluster_design.inject([Op("n1", "write", b"user:1", count=3)])
    devcluster_design.flush(at_ms=1_000)

    (row,) = matrix(devcluster_design, devcluster_stubs, "n1").rows

    assert (list(row.values), list(row.soft_columns)) == ([3], [])


def test_design_adapter_summary_has_counts_bytes_and_latency_quantiles(
    devcluster_design, devcluster_stubs
):
    cluster = devcluster_design
    cluster.inject(
        [
            Op("n2", "write", b"session:1", size=100, adapter="redis", latency_ns=ms * 1_000_000)
            for ms in range(1, 11)
        ]
        + [Op("n2", "read", b"user:1", size=40, adapter="dynamo", count=3)]
        + [Op("n3", "read", b"user:1", size=40, adapter="dynamo")]
    )

    response = _admin(cluster, devcluster_stubs, "n2").GetAdapterSummary(
        admin_pb2.GetAdapterSummaryRequest(), metadata=cluster.auth_metadata("n2")
    )

    assert [
        (s.adapter, s.operation, s.requests, s.bytes_in, s.bytes_out, s.p50_ns, s.p95_ns, s.p99_ns)
        for s in response.summaries
    ] == [
        ("dynamo", "GetItem", 3, 0, 120, 1e6, 1e6, 1e6),
        ("redis", "SET", 10, 1_000, 0, 5e6, 10e6, 10e6),
    ]


def test_design_route_detail_row_and_per_adapter_breakdown(devcluster_design, devcluster_stubs):
    cluster = devcluster_design
    cluster.inject(
        [
            Op("n3", "write", b"user:1", size=5, adapter="dynamo", count=2),
            Op("n2", "write", b"user:2", size=7, adapter="redis"),
        ]
    )
    cluster.flush("n1", at_ms=1_000)
    cluster.flush("n1", at_ms=2_000)
    admin = _admin(cluster, devcluster_stubs, "n1")

    detail = admin.GetRouteDetail(
        admin_pb2.GetRouteDetailRequest(bucket_id="route:7", from_unix_ms=1_000, to_unix_ms=0),
        metadata=cluster.auth_metadata("n1"),
    )

    assert (detail.row.bucket_id, list(detail.row.values)) == ("route:7", [3, 0])
    assert list(detail.row.raft_group_ids) == [1, 0]
    assert [(s.adapter, s.operation, s.requests, s.bytes_in) for s in detail.per_adapter] == [
        ("dynamo", "PutItem", 2, 10),
        ("redis", "SET", 1, 7),
    ]


def test_design_route_detail_of_an_unknown_bucket_is_not_found(devcluster_design, devcluster_stubs):
    with pytest.raises(grpc.RpcError) as err:
        _admin(devcluster_design, devcluster_stubs, "n1").GetRouteDetail(
            admin_pb2.GetRouteDetailRequest(bucket_id="route:99"),
            metadata=devcluster_design.auth_metadata(),
        )

    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_design_stream_pushes_every_new_column_and_route_transition(
    devcluster_design, devcluster_stubs
):
    cluster = devcluster_design
    stream = _admin(cluster, devcluster_stubs, "n1").StreamEvents(
        admin_pb2.StreamEventsRequest(), metadata=cluster.auth_metadata(), timeout=10
    )
    stream.initial_metadata()  # headers are sent once the node has subscribed us
    assert cluster.subscriber_count("n1") == 1
    before_ms = time.time_ns() // 1_000_000

    cluster.inject([Op("n1", "write", b"user:1", size=9, count=2), Op("n1", "read", b"item:1")])
    cluster.flush("n1", at_ms=5_000)
    left, right = cluster.split_route(5, b"order:5")
    merged = cluster.merge_routes(left, right)

    columns = [next(stream).keyviz_column for _ in range(4)]
    assert [(c.column_unix_ms, c.series) for c in columns] == [
        (5_000, admin_pb2.KEYVIZ_SERIES_READS),
        (5_000, admin_pb2.KEYVIZ_SERIES_WRITES),
        (5_000, admin_pb2.KEYVIZ_SERIES_READ_BYTES),
        (5_000, admin_pb2.KEYVIZ_SERIES_WRITE_BYTES),
    ]
    assert [[(r.bucket_id, list(r.values)) for r in c.rows] for c in columns] == [
        [("route:4", [1]), ("route:7", [0])],
        [("route:4", [0]), ("route:7", [2])],
        [("route:4", [0]), ("route:7", [0])],
        [("route:4", [0]), ("route:7", [18])],
    ]
    transitions = [next(stream).route_transition for _ in range(3)]
    assert [(t.parent_route_id, list(t.child_route_ids), t.lineage_id) for t in transitions] == [
        (5, [left, right], "lineage-5"),
        (left, [merged], "lineage-5"),
        (right, [merged], "lineage-5"),
    ]
    assert all(t.unix_ms >= before_ms for t in transitions)


def test_design_stream_ends_when_the_node_stops(devcluster_design, devcluster_stubs):
    stream = _admin(devcluster_design, devcluster_stubs, "n2").StreamEvents(
        admin_pb2.StreamEventsRequest(), metadata=devcluster_design.auth_metadata("n2"), timeout=10
    )
    stream.initial_metadata()

    devcluster_design.stop_node("n2")

    with pytest.raises(grpc.RpcError) as err:
        next(stream)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert devcluster_design.subscriber_count("n2") == 0


def test_design_stream_from_a_node_without_sampler_is_unavailable(
    devcluster_design, devcluster_stubs
):
    devcluster_design.set_keyviz_enabled("n3", False)
    stream = _admin(devcluster_design, devcluster_stubs, "n3").StreamEvents(
        admin_pb2.StreamEventsRequest(), metadata=devcluster_design.auth_metadata("n3")
    )

    with pytest.raises(grpc.RpcError) as err:
        next(stream)

    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
