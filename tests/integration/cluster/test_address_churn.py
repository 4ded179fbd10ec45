"""A hostile seed whose GetClusterOverview names new member addresses on every refresh
(issue #13 item 1): the portal's channels, open files and memory must stay bounded, and
SIGTERM must still stop `serve`.

The seed listens on every interface so that each invented member, 127.a.b.c:<its port>, is
a real, reachable node: every channel the portal opens is a live TCP connection.
"""

from __future__ import annotations

import itertools
import os
import re
import resource
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from prometheus_client import generate_latest

from cluster.client import REMEMBERED_PER_NODE, NodeClient, NodeError
from cluster.discovery import Discovery
from cluster.fanout import fan_out
from cluster.tokens import NodeTokenStore
from elastickv_admin.lib import metrics
from elastickv_admin.lib.config import PortalConfig
from proto import admin_pb2, admin_pb2_grpc

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
REFRESHES = 2000
NEW_MEMBERS_PER_REFRESH = 2
CAP = 3


class ChurningSeed(admin_pb2_grpc.AdminServicer):  # type: ignore[misc]
    """Answers every GetClusterOverview with members never seen before."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.counter = itertools.count(1)
        self.calls = 0

    def _member(self) -> admin_pb2.NodeIdentity:
        n = next(self.counter)
        # 127.0.0.2 onwards, never the seed's own 127.0.0.1.
        host = f"127.{n // (253 * 256) % 256}.{n // 253 % 256}.{2 + n % 253}"
        address = f"{host}:{self.port}"
        return admin_pb2.NodeIdentity(node_id=f"churn-{n}", grpc_address=address)

    async def GetClusterOverview(
        self, request: admin_pb2.GetClusterOverviewRequest, context: Any
    ) -> admin_pb2.GetClusterOverviewResponse:
        self.calls += 1
        return admin_pb2.GetClusterOverviewResponse(
            self=admin_pb2.NodeIdentity(node_id="seed"),
            members=[self._member() for _ in range(NEW_MEMBERS_PER_REFRESH)],
        )


@pytest.fixture
async def churning_seed() -> AsyncIterator[tuple[str, ChurningSeed]]:
    servicer = ChurningSeed()
    server = grpc.aio.server()
    admin_pb2_grpc.add_AdminServicer_to_server(servicer, server)
    # Every interface, so that each invented 127.a.b.c member reaches this server.
    servicer.port = server.add_insecure_port("0.0.0.0:0")
    await server.start()
    yield f"127.0.0.1:{servicer.port}", servicer
    await server.stop(None)


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


async def test_a_seed_reporting_new_member_addresses_on_every_refresh_does_not_exhaust_the_portal(
    churning_seed: tuple[str, ChurningSeed],
) -> None:
    seed, servicer = churning_seed
    config = PortalConfig(seeds=(seed,), max_discovered_nodes=CAP, rpc_timeout_s=5.0)
    client = NodeClient(config, NodeTokenStore(None))
    discovery = Discovery(client, config.seeds, config.refresh_interval_s, CAP)
    most_channels = 0
    baseline: tuple[int, int] | None = None
    for refresh in range(REFRESHES):
        discovery.invalidate()
        membership = await discovery.membership()
        # Every member gets asked, as a page load's fan-out does.
        result = await fan_out(client, membership.nodes, "GetClusterOverview")
        assert result.responded == len(membership.nodes) == CAP
        most_channels = max(most_channels, client.open_channels())
        if refresh == 100:  # warmed up: gRPC's own threads and pools exist by now
            baseline = (open_files(), rss_bytes())
    assert servicer.calls >= REFRESHES * CAP
    assert baseline is not None
    files, rss = open_files(), rss_bytes()
    # Members plus the seed (the seed is also a member here) and nothing more.
    assert most_channels <= CAP + len(config.seeds)
    # Each leaked channel would hold two descriptors (both ends of its connection live in
    # this process): 3,800 more over these refreshes.
    assert files - baseline[0] < 100, f"open files grew from {baseline[0]} to {files}"
    assert rss - baseline[1] < 64 * 1024 * 1024, f"RSS grew by {(rss - baseline[1]) >> 20} MiB"
    # The node label of the RPC metrics: members among the first `capacity` ever labelled,
    # the rest "other"; not one series per invented address.
    text = generate_latest(metrics.registry()).decode()
    nodes = set(re.findall(r'node_rpc_seconds_count\{[^}]*node="([^"]*)"', text))
    churned = {n for n in nodes if n.endswith(f":{servicer.port}")}
    assert len(churned) <= client.capacity
    assert metrics.OTHER in nodes
    await client.close()


async def test_calls_to_churning_addresses_keep_channels_and_per_node_memory_within_the_cap(
    churning_seed: tuple[str, ChurningSeed],
) -> None:
    seed, servicer = churning_seed
    config = PortalConfig(seeds=(seed,), max_discovered_nodes=CAP, rpc_timeout_s=5.0)
    tokens = NodeTokenStore("churn-test-token-0123456789")
    client = NodeClient(config, tokens)
    for _ in range(50):
        address = servicer._member().grpc_address
        await client.call(address, "GetClusterOverview")  # token accepted: remembered
        with pytest.raises(NodeError, match="not supported"):  # UNIMPLEMENTED: remembered
            await client.call(address, "GetRaftGroups")
    assert client.open_channels() == client.capacity == CAP + 1
    assert len(tokens._accepted) == client.capacity
    assert len(client._remembered) <= client.capacity * REMEMBERED_PER_NODE
    # A refresh naming other members drops all of it for the addresses that left.
    membership = await Discovery(client, config.seeds, 60.0, CAP).membership()
    members = {n.address for n in membership.nodes}
    assert client.open_channels() <= len(members)
    assert set(tokens._accepted) <= members
    assert {address for address, _ in client._remembered} <= members
    await client.close()


def _sigterm_exits(proc: subprocess.Popen[bytes], log: Any) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"serve did not stop on SIGTERM within 30 s:\n{log.read_text()[-4000:]}")


def test_sigterm_stops_serve_while_a_churning_seed_is_configured(
    portal_factory: Callable[..., Any], tmp_path: Any
) -> None:
    # The seed runs in a process of its own: the portal's pages keep asking it.
    seed_port = _free_port()
    seed = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import asyncio, sys; from tests.integration.cluster.test_address_churn import "
            "serve_churning_seed; asyncio.run(serve_churning_seed(int(sys.argv[1])))",
            str(seed_port),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        portal = portal_factory(
            [
                "--nodes",
                f"127.0.0.1:{seed_port}",
                "--adminInsecureNoAuth",
                "--nodesRefreshInterval",
                "10ms",
                "--maxDiscoveredNodes",
                str(CAP),
            ]
        )
        # Signed-in page loads fan out to the churning membership: each names new nodes.
        opener = _signed_in(portal)
        pid = portal.proc.pid

        def load(times: int) -> None:
            for _ in range(times):
                with opener.open(portal.url + "/api/nodes") as resp:
                    assert resp.status == 200

        load(50)
        files = len(os.listdir(f"/proc/{pid}/fd"))
        load(500)
        # Unbounded, every load would leave a channel (and its connection) per new member.
        grown = len(os.listdir(f"/proc/{pid}/fd")) - files
        assert grown < 100, f"serve's open files grew by {grown} over 500 page loads"
        _sigterm_exits(portal.proc, portal.log)
        assert portal.proc.returncode == 0
        assert "shutdown did not finish" not in portal.log.read_text()
    finally:
        seed.terminate()
        seed.wait(timeout=10)


async def serve_churning_seed(port: int) -> None:
    """The churning seed as a process of its own (the SIGTERM test's portal asks it)."""
    servicer = ChurningSeed(port)
    server = grpc.aio.server()
    admin_pb2_grpc.add_AdminServicer_to_server(servicer, server)
    server.add_insecure_port(f"0.0.0.0:{port}")
    await server.start()
    await server.wait_for_termination()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))  # noqa: S104 - the seed binds every interface
        return int(s.getsockname()[1])


def _signed_in(portal: Any) -> urllib.request.OpenerDirector:
    """A urllib opener holding a session of the portal's first admin."""
    import http.cookiejar
    import re

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(portal.url + "/login/") as resp:
        html = resp.read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert token
    data = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": token.group(1),
            "username": portal.admin_username,
            "password": portal.admin_password,
        }
    ).encode()
    request = urllib.request.Request(
        portal.url + "/login/", data=data, headers={"Referer": portal.url + "/login/"}
    )
    with opener.open(request) as resp:
        assert "/login/" not in resp.url, "sign-in failed"
    return opener
