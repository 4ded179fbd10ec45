"""Bearer-token auth of devcluster nodes, checked over real gRPC like real nodes do it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
import pytest

from devcluster.auth import TokenFileError
from devcluster.pytest_plugin import TEST_TOKEN
from proto import admin_pb2, distribution_pb2

pytestmark = pytest.mark.integration

OVERVIEW = admin_pb2.GetClusterOverviewRequest()
GOOD = (("authorization", f"Bearer {TEST_TOKEN}"),)


Call = Callable[[Sequence[tuple[str, str]]], Any]


def _admin_calls(admin: Any) -> dict[str, Call]:
    """One call per Admin method; the stream is drained so its status surfaces."""
    return {
        "GetClusterOverview": lambda md: admin.GetClusterOverview(OVERVIEW, metadata=md),
        "GetRaftGroups": lambda md: admin.GetRaftGroups(
            admin_pb2.GetRaftGroupsRequest(), metadata=md
        ),
        "GetAdapterSummary": lambda md: admin.GetAdapterSummary(
            admin_pb2.GetAdapterSummaryRequest(), metadata=md
        ),
        "GetKeyVizMatrix": lambda md: admin.GetKeyVizMatrix(
            admin_pb2.GetKeyVizMatrixRequest(), metadata=md
        ),
        "GetRouteDetail": lambda md: admin.GetRouteDetail(
            admin_pb2.GetRouteDetailRequest(bucket_id="route:1"), metadata=md
        ),
        "StreamEvents": lambda md: list(
            admin.StreamEvents(admin_pb2.StreamEventsRequest(), metadata=md, timeout=0.3)
        ),
    }


def _failure(call: Call, metadata: Sequence[tuple[str, str]]) -> tuple[grpc.StatusCode, str | None]:
    with pytest.raises(grpc.RpcError) as err:
        call(metadata)
    return err.value.code(), err.value.details()


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ((), "missing authorization header"),
        ((("authorization", f"bearer {TEST_TOKEN}"),), "authorization is not a bearer token"),
        ((("authorization", f"Basic {TEST_TOKEN}"),), "authorization is not a bearer token"),
        ((("authorization", TEST_TOKEN),), "authorization is not a bearer token"),
        ((("authorization", "Bearer wrong"),), "invalid admin token"),
        ((("authorization", f"Bearer  {TEST_TOKEN}"),), "invalid admin token"),
        ((("authorization", "Bearer "),), "invalid admin token"),
        # Only the first authorization value is read.
        ((("authorization", "Bearer wrong"), *GOOD), "invalid admin token"),
    ],
)
def test_bad_credentials_are_unauthenticated_with_the_real_node_message(
    devcluster, devcluster_stubs, metadata, message
):
    admin = devcluster_stubs(devcluster.nodes[0].address).admin
    call = _admin_calls(admin)["GetClusterOverview"]

    assert _failure(call, metadata) == (grpc.StatusCode.UNAUTHENTICATED, message)


def test_every_admin_method_is_token_gated(devcluster_factory, devcluster_stubs):
    cluster = devcluster_factory(profile="design")
    admin = devcluster_stubs(cluster.nodes[1].address).admin

    for name, call in _admin_calls(admin).items():
        code, details = _failure(call, ())
        assert (name, code, details) == (
            name,
            grpc.StatusCode.UNAUTHENTICATED,
            "missing authorization header",
        )


def test_first_authorization_value_wins_when_it_is_valid(devcluster, devcluster_stubs):
    admin = devcluster_stubs(devcluster.nodes[0].address).admin

    response = admin.GetClusterOverview(OVERVIEW, metadata=(*GOOD, ("authorization", "Bearer x")))

    assert response.self.node_id == "n1"


def test_upstream_checks_the_token_before_answering_unimplemented(devcluster, devcluster_stubs):
    admin = devcluster_stubs(devcluster.nodes[0].address).admin
    call = _admin_calls(admin)["GetRouteDetail"]

    assert _failure(call, ())[0] == grpc.StatusCode.UNAUTHENTICATED
    assert _failure(call, GOOD)[0] == grpc.StatusCode.UNIMPLEMENTED


def test_distribution_is_never_token_gated(devcluster, devcluster_stubs):
    distribution = devcluster_stubs(devcluster.nodes[2].address).distribution

    response = distribution.ListRoutes(distribution_pb2.ListRoutesRequest())

    assert len(response.routes) == 8


def test_insecure_no_auth_checks_nothing(devcluster_factory, devcluster_stubs):
    cluster = devcluster_factory(insecure_no_auth=True)
    admin = devcluster_stubs(cluster.nodes[0].address).admin

    assert admin.GetClusterOverview(OVERVIEW).self.node_id == "n1"
    bogus = (("authorization", "Basic nonsense"),)
    assert admin.GetClusterOverview(OVERVIEW, metadata=bogus).self.node_id == "n1"
    assert cluster.auth_metadata("n1") == ()


def test_neither_token_nor_insecure_leaves_admin_unregistered(devcluster_factory, devcluster_stubs):
    cluster = devcluster_factory(insecure_no_auth=False)
    stubs = devcluster_stubs(cluster.nodes[0].address)

    for name, call in _admin_calls(stubs.admin).items():
        assert (name, _failure(call, GOOD)[0]) == (name, grpc.StatusCode.UNIMPLEMENTED)
    assert len(stubs.distribution.ListRoutes(distribution_pb2.ListRoutesRequest()).routes) == 8


def test_set_admin_registered_toggles_the_admin_service(devcluster, devcluster_stubs):
    stubs = devcluster_stubs(devcluster.nodes[1].address)
    call = _admin_calls(stubs.admin)["GetClusterOverview"]

    devcluster.set_admin_registered("n2", False)
    assert _failure(call, GOOD)[0] == grpc.StatusCode.UNIMPLEMENTED
    assert stubs.distribution.ListRoutes(distribution_pb2.ListRoutesRequest()).catalog_version == 1

    devcluster.set_admin_registered("n2", True)
    assert call(GOOD).self.node_id == "n2"


def test_token_rotation_on_one_node_without_restart(devcluster, devcluster_stubs):
    n1 = _admin_calls(devcluster_stubs(devcluster.nodes[0].address).admin)["GetClusterOverview"]
    n2 = _admin_calls(devcluster_stubs(devcluster.nodes[1].address).admin)["GetClusterOverview"]
    nxt = (("authorization", "Bearer next-token"),)

    devcluster.set_node_token("n2", "next-token")

    assert _failure(n2, GOOD) == (grpc.StatusCode.UNAUTHENTICATED, "invalid admin token")
    assert n2(nxt).self.node_id == "n2"
    assert n1(GOOD).self.node_id == "n1"
    assert devcluster.auth_metadata("n2") == nxt


def test_token_file_is_trimmed_and_reread_when_edited(
    devcluster_factory, devcluster_stubs, tmp_path
):
    path = tmp_path / "token"
    path.write_text("\n  first-token \t\n", encoding="utf-8")
    cluster = devcluster_factory(token_files=path)
    call = _admin_calls(devcluster_stubs(cluster.nodes[2].address).admin)["GetClusterOverview"]

    assert call((("authorization", "Bearer first-token"),)).self.node_id == "n3"

    path.write_text("the-second-token\n", encoding="utf-8")  # edited in place, as an operator

    assert _failure(call, (("authorization", "Bearer first-token"),))[1] == "invalid admin token"
    assert call((("authorization", "Bearer the-second-token"),)).self.node_id == "n3"


def test_unusable_token_file_edit_keeps_the_previous_token(
    devcluster_factory, devcluster_stubs, tmp_path
):
    path = tmp_path / "token"
    path.write_text("kept-token", encoding="utf-8")
    cluster = devcluster_factory(token_files=path)
    call = _admin_calls(devcluster_stubs(cluster.nodes[0].address).admin)["GetClusterOverview"]

    path.write_text("   \n", encoding="utf-8")

    assert call((("authorization", "Bearer kept-token"),)).self.node_id == "n1"


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"  \n\t", "is empty"), (b"x" * 4097, "is larger than 4096 bytes")],
)
def test_node_refuses_to_start_with_an_unusable_token_file(
    devcluster_factory, tmp_path, content, reason
):
    path = tmp_path / "token"
    path.write_bytes(content)

    with pytest.raises(TokenFileError, match=reason):
        devcluster_factory(token_files=path)


def test_token_file_of_exactly_4_kib_is_accepted(devcluster_factory, devcluster_stubs, tmp_path):
    token = "k" * 4096
    path = tmp_path / "token"
    path.write_text(token, encoding="utf-8")
    cluster = devcluster_factory(token_files={"n1": path})
    call = _admin_calls(devcluster_stubs(cluster.nodes[0].address).admin)["GetClusterOverview"]

    assert call((("authorization", f"Bearer {token}"),)).self.node_id == "n1"
