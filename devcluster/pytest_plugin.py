"""Pytest fixtures for tests that talk gRPC to a devcluster.

Load with `pytest_plugins = ["devcluster.pytest_plugin"]`. Every cluster and channel a
test obtains here is stopped or closed at teardown, so no thread or port outlives it.

- `devcluster_factory(**kwargs) -> DevCluster`: a started cluster; kwargs go to DevCluster.
  Defaults differ in two ways: `timers=False` (columns only when the test flushes), and
  `token=TEST_TOKEN` unless the test passes `token`, `token_files` or `insecure_no_auth`.
- `devcluster`: 3 nodes, upstream profile, manual flush, TEST_TOKEN.
- `devcluster_design`: the same in the design profile.
- `devcluster_stubs(address, options=()) -> NodeStubs`: Admin and Distribution stubs on a
  fresh channel (options: grpc channel options such as a receive cap).

`matrix(cluster, stubs, node_id, series=WRITES, **fields)` asks one node for its KeyViz
matrix with the token that node currently holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import grpc
import pytest

from devcluster.cluster import DevCluster
from proto import admin_pb2, admin_pb2_grpc, distribution_pb2_grpc

TEST_TOKEN = "devcluster-test-token"  # noqa: S105 - throwaway loopback clusters only
_AUTH_KWARGS = frozenset({"token", "token_files", "insecure_no_auth"})


@dataclass(frozen=True, slots=True)
class NodeStubs:
    channel: grpc.Channel
    admin: Any  # admin_pb2_grpc.AdminStub (the generated gRPC modules are untyped)
    distribution: Any  # distribution_pb2_grpc.DistributionStub


StubsFactory = Callable[..., NodeStubs]


def matrix(
    cluster: DevCluster,
    stubs: StubsFactory,
    node_id: str,
    series: int = admin_pb2.KEYVIZ_SERIES_WRITES,
    *,
    from_unix_ms: int = 0,
    to_unix_ms: int = 0,
    rows: int = 0,
) -> admin_pb2.GetKeyVizMatrixResponse:
    request = admin_pb2.GetKeyVizMatrixRequest(
        # Any number goes on the wire (proto3 enums are open), so tests may send unknown ones.
        series=cast(admin_pb2.KeyVizSeries, series),
        from_unix_ms=from_unix_ms,
        to_unix_ms=to_unix_ms,
        rows=rows,
    )
    admin = stubs(cluster.node(node_id).address).admin
    response: admin_pb2.GetKeyVizMatrixResponse = admin.GetKeyVizMatrix(
        request, metadata=cluster.auth_metadata(node_id)
    )
    return response


@pytest.fixture
def devcluster_factory() -> Iterator[Callable[..., DevCluster]]:
    started: list[DevCluster] = []

    def factory(**kwargs: Any) -> DevCluster:
        if not _AUTH_KWARGS & kwargs.keys():
            kwargs["token"] = TEST_TOKEN
        kwargs.setdefault("timers", False)
        cluster = DevCluster(**kwargs)
        started.append(cluster)
        return cluster.start()

    yield factory
    for cluster in reversed(started):
        cluster.stop()


@pytest.fixture
def devcluster(devcluster_factory: Callable[..., DevCluster]) -> DevCluster:
    return devcluster_factory()


@pytest.fixture
def devcluster_design(devcluster_factory: Callable[..., DevCluster]) -> DevCluster:
    return devcluster_factory(profile="design")


@pytest.fixture
def devcluster_stubs() -> Iterator[StubsFactory]:
    channels: list[grpc.Channel] = []

    def stubs(address: str, options: Sequence[tuple[str, Any]] = ()) -> NodeStubs:
        channel = grpc.insecure_channel(address, options=list(options))
        channels.append(channel)
        return NodeStubs(
            channel=channel,
            admin=admin_pb2_grpc.AdminStub(channel),
            distribution=distribution_pb2_grpc.DistributionStub(channel),
        )

    yield stubs
    for channel in channels:
        channel.close()
