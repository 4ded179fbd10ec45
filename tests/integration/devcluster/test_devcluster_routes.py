"""Distribution.ListRoutes: the default catalog, splits and merges."""

from __future__ import annotations

import time

import pytest

from devcluster import ClusterError
from devcluster.pytest_plugin import NodeStubs
from proto import distribution_pb2

pytestmark = pytest.mark.integration

LIST = distribution_pb2.ListRoutesRequest()


def _catalog(stubs: NodeStubs) -> tuple[int, list[tuple[int, bytes, bytes, int, int]]]:
    response = stubs.distribution.ListRoutes(LIST)
    return response.catalog_version, [
        (r.route_id, r.start, r.end, r.raft_group_id, r.parent_route_id) for r in response.routes
    ]


def test_default_catalog_covers_the_key_space_with_printable_and_binary_keys(
    devcluster, devcluster_stubs
):
    version, routes = _catalog(devcluster_stubs(devcluster.nodes[0].address))

    assert version == 1
    assert routes == [
        (1, b"", b"!", 1, 0),
        (2, b"!", b"!txn|", 2, 0),
        (3, b"!txn|", b"item:", 3, 0),
        (4, b"item:", b"order:", 1, 0),
        (5, b"order:", b"session:", 2, 0),
        (6, b"session:", b"user:", 3, 0),
        (7, b"user:", b"\x80", 1, 0),
        (8, b"\x80", b"", 2, 0),
    ]


def test_every_node_serves_the_same_active_catalog(devcluster, devcluster_stubs):
    responses = [
        devcluster_stubs(n.address).distribution.ListRoutes(LIST) for n in devcluster.nodes
    ]

    assert all(r == responses[0] for r in responses)
    assert {r.state for r in responses[0].routes} == {distribution_pb2.ROUTE_STATE_ACTIVE}


def test_split_gives_two_new_route_ids_and_a_new_catalog_version(devcluster, devcluster_stubs):
    before_ms = time.time_ns() // 1_000_000

    assert devcluster.split_route(5, b"order:5") == (9, 10)

    response = devcluster_stubs(devcluster.nodes[1].address).distribution.ListRoutes(LIST)
    assert response.catalog_version == 2
    children = [r for r in response.routes if r.route_id in (9, 10)]
    assert [(r.route_id, r.start, r.end, r.raft_group_id, r.parent_route_id) for r in children] == [
        (9, b"order:", b"order:5", 2, 5),
        (10, b"order:5", b"session:", 2, 5),
    ]
    # split_at_hlc: 48 bits of physical milliseconds, 16 of logical counter.
    assert children[0].split_at_hlc == children[1].split_at_hlc
    assert children[0].split_at_hlc >> 16 >= before_ms
    assert 5 not in [r.route_id for r in response.routes]


def test_merge_of_adjacent_routes_gives_one_new_route(devcluster, devcluster_stubs):
    left, right = devcluster.split_route(5, b"order:5")

    merged = devcluster.merge_routes(left, right)

    version, routes = _catalog(devcluster_stubs(devcluster.nodes[2].address))
    assert (merged, version) == (11, 3)
    assert routes[4] == (11, b"order:", b"session:", 2, left)
    assert len(routes) == 8


def test_merge_across_groups_lands_in_the_left_group(devcluster, devcluster_stubs):
    merged = devcluster.merge_routes(7, 8)

    _, routes = _catalog(devcluster_stubs(devcluster.nodes[0].address))

    assert routes[-1] == (merged, b"user:", b"", 1, 7)


@pytest.mark.parametrize("at_key", [b"order:", b"session:", b"a", b""])
def test_split_key_must_be_strictly_inside_the_route(devcluster, at_key):
    with pytest.raises(ClusterError, match="not strictly inside"):
        devcluster.split_route(5, at_key)


def test_merge_needs_adjacent_routes_in_key_order(devcluster):
    with pytest.raises(ClusterError, match="not adjacent"):
        devcluster.merge_routes(4, 6)
    with pytest.raises(ClusterError, match="not adjacent"):
        devcluster.merge_routes(5, 4)
