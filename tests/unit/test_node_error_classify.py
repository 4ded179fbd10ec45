"""How a gRPC failure becomes a structured NodeError: whether the node answered decides
between "down" and "it refused", and nothing downstream reads the words again."""

from __future__ import annotations

import grpc
import pytest

from cluster.client import classify
from cluster.diagnose import cause_of


class _Failure(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, "")


@pytest.mark.parametrize(
    "details",
    [
        "Cancelling all calls",  # a grpc-core server stopping with the call in flight
        "transport is closing",  # a Go server stopping
        "error reading from server: EOF",
        "the connection is draining",
        "GOAWAY received",
        "failed to connect to all addresses",
        "",
    ],
)
def test_a_node_going_away_mid_call_is_unreachable_not_keyviz_off(details: str) -> None:
    error = classify(_Failure(grpc.StatusCode.UNAVAILABLE, details), "GetKeyVizMatrix", 2, 1 << 20)

    assert (error.code, error.reachable) == ("UNAVAILABLE", False)
    assert cause_of(error.code, error.reachable, keyviz=True).key == "refused"


def test_a_node_that_answers_unavailable_to_keyviz_has_its_sampler_off() -> None:
    failure = _Failure(grpc.StatusCode.UNAVAILABLE, "keyviz sampler is not enabled")
    error = classify(failure, "GetKeyVizMatrix", 2, 1 << 20)

    assert (error.code, error.reachable) == ("UNAVAILABLE", True)
    assert cause_of(error.code, error.reachable, keyviz=True).key == "keyviz_off"
