"""The portal against real elastickv nodes (the binary named by ELASTICKV_BIN).

This is the one tier CI may skip: the repository never builds or ships elastickv.
Three nodes are started on loopback with a token file and the KeyViz sampler; the
portal's services are checked against what the nodes themselves answer.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import redis
from django.test import AsyncClient

from cluster.client import NodeError, node_client
from cluster.discovery import discovery
from elastickv_admin.config import PortalConfig
from proto import admin_pb2, admin_pb2_grpc, distribution_pb2, distribution_pb2_grpc

pytestmark = pytest.mark.real_node

TOKEN = "real-node-test-token-0123456789"
BINARY = os.environ.get("ELASTICKV_BIN", "")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RealCluster:
    grpc: dict[str, str]
    redis: dict[str, int]
    token_file: Path


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    if not BINARY:
        pytest.skip(
            "ELASTICKV_BIN is not set (path to an elastickv binary built outside this repo)"
        )
    assert shutil.which(BINARY) or Path(BINARY).is_file(), f"ELASTICKV_BIN={BINARY} does not exist"
    root = tmp_path_factory.mktemp("elastickv")
    token_file = root / "admin-token"
    token_file.write_text(TOKEN + "\n")
    ids = ["n1", "n2", "n3"]
    grpc_addr = {i: f"127.0.0.1:{_port()}" for i in ids}
    redis_port = {i: _port() for i in ids}
    members = ",".join(f"{i}={grpc_addr[i]}" for i in ids)
    procs = []
    for i in ids:
        args = [
            BINARY,
            "--raftId",
            i,
            "--address",
            grpc_addr[i],
            "--raftDataDir",
            str(root / i),
            "--raftBootstrapMembers",
            members,
            "--redisAddress",
            f"127.0.0.1:{redis_port[i]}",
            "--dynamoAddress",
            f"127.0.0.1:{_port()}",
            "--metricsAddress",
            "",
            "--pprofAddress",
            "",
            "--adminTokenFile",
            str(token_file),
            "--keyvizEnabled",
            "--keyvizStep",
            "1s",
        ]
        log = (root / f"{i}.log").open("wb")
        procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
    try:
        _wait_for_leaders(grpc_addr["n1"])
        yield RealCluster(grpc_addr, redis_port, token_file)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_for_leaders(address: str, timeout: float = 60.0) -> None:
    channel = grpc.insecure_channel(address)
    stub = admin_pb2_grpc.AdminStub(channel)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                overview = stub.GetClusterOverview(
                    admin_pb2.GetClusterOverviewRequest(),
                    metadata=(("authorization", f"Bearer {TOKEN}"),),
                    timeout=2,
                )
                if overview.group_leaders and all(g.leader_node_id for g in overview.group_leaders):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    finally:
        channel.close()
    raise AssertionError(f"no Raft leader within {timeout} s")


@pytest.fixture
def real_portal(real_cluster: RealCluster, portal: Callable[..., AsyncClient]) -> AsyncClient:
    """The in-process portal (signed in as a viewer) pointed at the real nodes."""
    client: AsyncClient = portal(
        [real_cluster.grpc["n1"]], node_token_file=str(real_cluster.token_file), rpc_timeout_s=5.0
    )
    return client


async def test_discovery_finds_every_real_node_by_id(real_cluster, real_portal):
    nodes = await discovery().nodes()
    assert {(n.node_id, n.address) for n in nodes} == set(real_cluster.grpc.items())


async def test_overview_api_reports_every_node_and_the_leaders(real_cluster, real_portal):
    doc = (await real_portal.get("/api/cluster/overview")).json()
    assert (doc["nodes_responded"], doc["nodes_total"]) == (3, 3)


async def test_adapters_api_says_real_nodes_do_not_provide_the_summary(real_portal):
    doc = (await real_portal.get("/api/adapters/summary")).json()
    assert doc["data"]["supported"] is False
    assert doc["data"]["summaries"] == []
    assert len(doc["data"]["sources"]) == 3


async def test_routes_api_matches_list_routes(real_cluster, real_portal):
    doc = (await real_portal.get("/api/routes")).json()
    channel = grpc.insecure_channel(real_cluster.grpc["n2"])
    truth = distribution_pb2_grpc.DistributionStub(channel).ListRoutes(
        distribution_pb2.ListRoutesRequest(), timeout=5
    )
    channel.close()
    assert doc["data"]["catalog"]["version"] == truth.catalog_version
    assert [r["route_id"] for r in doc["data"]["routes"]] == [r.route_id for r in truth.routes]


async def test_wrong_token_is_rejected_with_the_nodes_message(real_cluster):
    from cluster.client import NodeClient
    from cluster.tokens import NodeTokenStore

    client = NodeClient(PortalConfig(), NodeTokenStore("wrong-token"))
    with pytest.raises(NodeError) as err:
        await client.call(real_cluster.grpc["n2"], "GetRaftGroups")
    assert err.value.code == "UNAUTHENTICATED"
    assert "invalid admin token" in err.value.message
    await client.close()


async def test_redis_writes_show_up_in_the_merged_matrix(real_cluster, real_portal):
    # Write through the leader's Redis listener, so no follower proxying is involved.
    overview = await node_client().call(real_cluster.grpc["n1"], "GetClusterOverview")
    leader = overview.group_leaders[0].leader_node_id
    r = redis.Redis(host="127.0.0.1", port=real_cluster.redis[leader], socket_timeout=5, protocol=2)
    for i in range(50):
        r.set(f"portal-test:{i}", "v" * 10)
    deadline = time.monotonic() + 20
    total = 0
    while time.monotonic() < deadline and total < 50:
        await asyncio.sleep(1.0)
        doc = (await real_portal.get("/api/keyviz/matrix", {"series": "writes"})).json()
        total = sum(sum(row["values"]) for row in doc["rows"])
    assert total >= 50
    assert all(n["ok"] for n in doc["nodes"])
