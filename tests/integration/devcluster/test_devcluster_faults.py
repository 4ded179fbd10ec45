"""Injected node faults: slow, failing, malformed and oversized answers."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest

from devcluster import Malformation, Op
from devcluster.pytest_plugin import matrix
from proto import admin_pb2, distribution_pb2

pytestmark = pytest.mark.integration

OVERVIEW = admin_pb2.GetClusterOverviewRequest()
LIST = distribution_pb2.ListRoutesRequest()


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()


def test_slow_node_misses_the_callers_deadline(devcluster, devcluster_stubs):
    admin = devcluster_stubs(devcluster.nodes[0].address).admin
    devcluster.set_fault("n1", delay_s=30)
    started = time.monotonic()

    code = _code(
        lambda: admin.GetClusterOverview(OVERVIEW, metadata=devcluster.auth_metadata(), timeout=0.2)
    )

    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5


def test_slow_node_answers_after_the_delay(devcluster, devcluster_stubs):
    distribution = devcluster_stubs(devcluster.nodes[1].address).distribution
    devcluster.set_fault("n2", delay_s=0.3)
    started = time.monotonic()

    assert len(distribution.ListRoutes(LIST, timeout=5).routes) == 8
    assert time.monotonic() - started >= 0.3


def test_error_fault_answers_with_that_status_on_both_services(devcluster, devcluster_stubs):
    stubs = devcluster_stubs(devcluster.nodes[1].address)
    devcluster.set_fault("n2", error=grpc.StatusCode.UNAVAILABLE)
    md = devcluster.auth_metadata()

    assert _code(lambda: stubs.admin.GetClusterOverview(OVERVIEW, metadata=md)) == (
        grpc.StatusCode.UNAVAILABLE
    )
    assert _code(lambda: stubs.distribution.ListRoutes(LIST)) == grpc.StatusCode.UNAVAILABLE

    devcluster.clear_fault("n2")

    assert stubs.admin.GetClusterOverview(OVERVIEW, metadata=md).self.node_id == "n2"


def test_fault_limited_to_some_methods_leaves_the_others_alone(devcluster, devcluster_stubs):
    stubs = devcluster_stubs(devcluster.nodes[0].address)
    devcluster.set_fault("n1", error=grpc.StatusCode.INTERNAL, methods={"GetKeyVizMatrix"})

    assert _code(lambda: matrix(devcluster, devcluster_stubs, "n1")) == grpc.StatusCode.INTERNAL
    overview = stubs.admin.GetClusterOverview(OVERVIEW, metadata=devcluster.auth_metadata())
    assert overview.self.node_id == "n1"


def test_malformed_values_do_not_match_the_columns(devcluster, devcluster_stubs):
    devcluster.inject([Op("n1", "write", b"user:1")])
    devcluster.flush(at_ms=1_000)
    devcluster.set_fault("n1", malformed=True)

    response = matrix(devcluster, devcluster_stubs, "n1")

    assert list(response.column_unix_ms) == [1_000]
    assert [len(r.values) for r in response.rows] == [2]


def test_malformed_partial_group_ids(devcluster, devcluster_stubs):
    devcluster.inject([Op("n1", "write", b"user:1")])
    devcluster.flush(at_ms=1_000)
    devcluster.flush(at_ms=2_000)
    devcluster.set_fault("n1", malformed=Malformation.PARTIAL_GROUP_IDS)

    (row,) = matrix(devcluster, devcluster_stubs, "n1").rows

    assert (len(row.values), len(row.raft_group_ids), len(row.leader_terms)) == (2, 1, 2)


def test_malformed_without_traffic_still_breaks_the_shape(devcluster, devcluster_stubs):
    devcluster.flush(at_ms=1_000)
    devcluster.set_fault("n1", malformed=True)

    response = matrix(devcluster, devcluster_stubs, "n1")

    assert [(r.bucket_id, len(r.values)) for r in response.rows] == [("route:0", 2)]


def test_malformed_stream_columns(devcluster_design, devcluster_stubs):
    cluster = devcluster_design
    cluster.set_fault("n1", malformed=Malformation.PARTIAL_GROUP_IDS)
    stream = devcluster_stubs(cluster.nodes[0].address).admin.StreamEvents(
        admin_pb2.StreamEventsRequest(), metadata=cluster.auth_metadata(), timeout=10
    )
    stream.initial_metadata()
    cluster.inject([Op("n1", "write", b"user:1")])
    cluster.flush("n1", at_ms=1_000)

    (row,) = next(stream).keyviz_column.rows

    assert (len(row.values), len(row.raft_group_ids)) == (1, 0)


def test_oversized_answer_trips_the_receive_cap(devcluster, devcluster_stubs):
    address = devcluster.nodes[2].address
    capped = devcluster_stubs(address, [("grpc.max_receive_message_length", 1_000_000)])
    roomy = devcluster_stubs(address, [("grpc.max_receive_message_length", 8_000_000)])
    devcluster.set_fault("n3", oversized=2_000_000)

    assert _code(lambda: capped.distribution.ListRoutes(LIST)) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    response = roomy.distribution.ListRoutes(LIST)
    assert response.ByteSize() > 2_000_000
    assert len(response.routes) == 8  # the padding is an unknown field: content intact
