"""GetClusterOverview and GetRaftGroups: membership, leaders, terms, node stop/start."""

from __future__ import annotations

import time

import grpc
import pytest

from devcluster import ClusterError, Op
from proto import admin_pb2

pytestmark = pytest.mark.integration

OVERVIEW = admin_pb2.GetClusterOverviewRequest()
GROUPS = admin_pb2.GetRaftGroupsRequest()


def _leaders(response: admin_pb2.GetClusterOverviewResponse) -> list[tuple[int, str, int]]:
    return [(g.raft_group_id, g.leader_node_id, g.leader_term) for g in response.group_leaders]


def test_overview_names_self_and_only_the_other_nodes_as_members(devcluster, devcluster_stubs):
    md = devcluster.auth_metadata()
    addresses = {n.node_id: n.address for n in devcluster.nodes}

    for node in devcluster.nodes:
        response = devcluster_stubs(node.address).admin.GetClusterOverview(OVERVIEW, metadata=md)

        assert (response.self.node_id, response.self.grpc_address) == (node.node_id, node.address)
        assert [(m.node_id, m.grpc_address) for m in response.members] == [
            (n, a) for n, a in addresses.items() if n != node.node_id
        ]


def test_overview_group_leaders_qps_and_capabilities(devcluster, devcluster_stubs):
    admin = devcluster_stubs(devcluster.nodes[2].address).admin

    response = admin.GetClusterOverview(OVERVIEW, metadata=devcluster.auth_metadata())

    assert _leaders(response) == [(1, "n1", 1), (2, "n2", 1), (3, "n3", 1)]
    assert response.aggregate_qps == 0
    assert dict(response.capabilities) == {"feature_s3_blob_offload": False}


def test_raft_groups_are_sorted_with_this_nodes_view_of_contact(devcluster, devcluster_stubs):
    before = time.time_ns() // 1_000_000
    admin = devcluster_stubs(devcluster.nodes[1].address).admin

    groups = admin.GetRaftGroups(GROUPS, metadata=devcluster.auth_metadata()).groups

    assert [(g.raft_group_id, g.leader_node_id, g.leader_term) for g in groups] == [
        (1, "n1", 1),
        (2, "n2", 1),
        (3, "n3", 1),
    ]
    assert [(g.commit_index, g.applied_index) for g in groups] == [(1, 1)] * 3
    # n2 leads group 2 (contact unknown there) and follows 1 and 3 with a recent heartbeat.
    assert groups[1].last_contact_unix_ms == 0
    for follower in (groups[0], groups[2]):
        assert before - 200 <= follower.last_contact_unix_ms <= time.time_ns() // 1_000_000


def test_commit_index_advances_with_each_write_to_the_group(devcluster, devcluster_stubs):
    devcluster.inject([Op("n3", "write", b"user:1", size=8, count=4), Op("n2", "read", b"user:1")])
    admin = devcluster_stubs(devcluster.nodes[2].address).admin

    groups = admin.GetRaftGroups(GROUPS, metadata=devcluster.auth_metadata()).groups

    assert [(g.raft_group_id, g.commit_index) for g in groups] == [(1, 5), (2, 1), (3, 1)]


def test_leadership_transfer_raises_the_term_on_every_node(devcluster, devcluster_stubs):
    assert devcluster.transfer_leadership(1, "n3") == 2
    md = devcluster.auth_metadata()

    for node in devcluster.nodes:
        admin = devcluster_stubs(node.address).admin
        assert _leaders(admin.GetClusterOverview(OVERVIEW, metadata=md))[0] == (1, "n3", 2)
        group = admin.GetRaftGroups(GROUPS, metadata=md).groups[0]
        assert (group.leader_node_id, group.leader_term, group.commit_index) == ("n3", 2, 2)


def test_transfer_to_a_down_node_is_refused(devcluster):
    devcluster.stop_node("n3")

    with pytest.raises(ClusterError, match="down"):
        devcluster.transfer_leadership(1, "n3")


def test_stopped_node_is_still_a_member_and_its_groups_elect_the_next_node(
    devcluster, devcluster_stubs
):
    md = devcluster.auth_metadata()
    n1_address = devcluster.nodes[0].address
    devcluster.stop_node("n1")

    with pytest.raises(grpc.RpcError) as err:
        devcluster_stubs(n1_address).admin.GetClusterOverview(OVERVIEW, metadata=md, timeout=2)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    response = devcluster_stubs(devcluster.nodes[1].address).admin.GetClusterOverview(
        OVERVIEW, metadata=md
    )
    assert [m.node_id for m in response.members] == ["n1", "n3"]
    assert _leaders(response) == [(1, "n2", 2), (2, "n2", 1), (3, "n3", 1)]
    assert [n.up for n in devcluster.nodes] == [False, True, True]


def test_restarted_node_serves_again_on_the_same_port(devcluster, devcluster_stubs):
    address = devcluster.nodes[0].address
    devcluster.stop_node("n1")
    devcluster.start_node("n1")

    response = devcluster_stubs(address).admin.GetClusterOverview(
        OVERVIEW, metadata=devcluster.auth_metadata()
    )

    assert (response.self.node_id, response.self.grpc_address) == ("n1", address)
    assert devcluster.nodes[0].up


def test_without_a_majority_groups_have_no_leader_until_one_returns(devcluster, devcluster_stubs):
    md = devcluster.auth_metadata()
    n3 = devcluster_stubs(devcluster.nodes[2].address).admin
    devcluster.stop_node("n1")  # group 1 moves to n2 (term 2)
    lost_at = time.time_ns() // 1_000_000
    devcluster.stop_node("n2")  # one of three left: nobody can lead

    assert _leaders(n3.GetClusterOverview(OVERVIEW, metadata=md)) == [
        (1, "", 2),
        (2, "", 1),
        (3, "", 1),
    ]
    contacts = [g.last_contact_unix_ms for g in n3.GetRaftGroups(GROUPS, metadata=md).groups]
    assert all(lost_at <= c <= time.time_ns() // 1_000_000 for c in contacts)

    devcluster.start_node("n2")

    assert _leaders(n3.GetClusterOverview(OVERVIEW, metadata=md)) == [
        (1, "n2", 3),
        (2, "n2", 2),
        (3, "n2", 2),
    ]
