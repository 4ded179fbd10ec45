"""node_matrix_from_bytes (the API's decode path) against node_matrix_from_response.

The same response as bytes and as a parsed message must give the same
NodeMatrix (arrays, dtypes, rows) or the same MalformedMatrixError reason;
bytes protobuf cannot parse are a DecodeError, reported per node.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from cluster.fanout import Node, NodeStatus
from keyviz.matrix import (
    MalformedMatrixError,
    NodeMatrix,
    node_matrix_from_bytes,
    node_matrix_from_response,
)
from keyviz.merge import merge_nodes
from keyviz.service import decode_node_matrix
from proto import admin_pb2
from proto.wire import WireDecodeError
from tests.unit.keyviz.keyviz_testkit import (
    STEP,
    T0,
    WRITES,
    cols,
    reference_write_cell,
    response,
    row,
)

U64_MAX = 2**64 - 1


def both(
    m: admin_pb2.GetKeyVizMatrixResponse, step_ms: int | None = None
) -> tuple[NodeMatrix | str, NodeMatrix | str]:
    """(from the message, from its bytes): a NodeMatrix, or the MalformedMatrixError reason."""
    out: list[NodeMatrix | str] = []
    for source in (m, m.SerializeToString()):
        try:
            if isinstance(source, bytes):
                out.append(node_matrix_from_bytes("n1", source, step_ms=step_ms))
            else:
                out.append(node_matrix_from_response("n1", source, step_ms=step_ms))
        except MalformedMatrixError as exc:
            out.append(exc.reason)
    return out[0], out[1]


def assert_same(a: NodeMatrix, b: NodeMatrix) -> None:
    assert a.node == b.node
    assert a.rows == b.rows
    assert a.step_ms == b.step_ms
    for name in ("column_unix_ms", "values", "soft", "raft_group_ids", "leader_terms"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x.dtype, x.shape) == (y.dtype, y.shape), name
        assert np.array_equal(x, y), name
    assert (a.value_max, a.group_max, a.term_max) == (b.value_max, b.group_max, b.term_max)


def assert_equivalent(m: admin_pb2.GetKeyVizMatrixResponse, step_ms: int | None = None) -> Any:
    from_message, from_bytes = both(m, step_ms)
    if isinstance(from_message, str) or isinstance(from_bytes, str):
        assert from_bytes == from_message
    else:
        assert_same(from_message, from_bytes)
    return from_bytes


cell = st.one_of(st.integers(0, 127), st.integers(0, 70_000), st.integers(0, U64_MAX))
ident = st.one_of(st.integers(0, 20), st.integers(0, 2**40), st.just(2**32 - 1), st.just(2**32))


@st.composite
def matrices(draw: st.DrawFn, *, consistent: bool) -> admin_pb2.GetKeyVizMatrixResponse:
    """Responses with rows of full or absent optional lists; `consistent=False` also lets
    any list take any length, columns go out of order and bucket ids repeat or go empty."""
    n_cols = draw(st.integers(0, 6))
    gaps = draw(st.lists(st.integers(1, 2 * STEP), min_size=n_cols, max_size=n_cols))
    columns = np.cumsum([T0, *gaps])[1:].tolist()
    if not consistent and columns and draw(st.booleans()):
        columns = draw(st.permutations(columns))
    names = st.sampled_from(["route:1", "route:2", "virtual:3", ""] if not consistent else ["x"])
    rows = []
    for i in range(draw(st.integers(0, 5))):

        def sized(values: st.SearchStrategy[Any], optional: bool) -> list[Any]:
            if not consistent and draw(st.integers(0, 5)) == 0:
                return draw(st.lists(values, max_size=n_cols + 1))
            if optional and draw(st.booleans()):
                return []
            return draw(st.lists(values, min_size=n_cols, max_size=n_cols))

        bucket = f"route:{i}" if consistent else draw(names)
        rows.append(
            row(
                bucket,
                sized(cell, optional=False),
                groups=sized(ident, optional=True),
                terms=sized(ident, optional=True),
                soft=sized(st.booleans(), optional=True),
                start=draw(st.binary(max_size=4)),
                end=draw(st.binary(max_size=4)),
                label=draw(st.sampled_from(["", "redis", "s3"])),
                route_ids=draw(st.lists(st.integers(0, U64_MAX), max_size=3)),
                route_count=draw(st.integers(0, 5)),
                aggregate=draw(st.booleans()),
            )
        )
    return response(columns, *rows)


@given(matrices(consistent=True))
def test_bytes_and_message_give_the_same_node_matrix(m: admin_pb2.GetKeyVizMatrixResponse) -> None:
    assert isinstance(assert_equivalent(m), NodeMatrix)


@given(matrices(consistent=False), st.sampled_from([None, STEP, 0, -1]))
def test_bytes_and_message_are_rejected_with_the_same_reason(
    m: admin_pb2.GetKeyVizMatrixResponse, step_ms: int | None
) -> None:
    assert_equivalent(m, step_ms)


@pytest.mark.parametrize(
    ("m", "reason"),
    [
        (response(cols(4), row("route:7", [1, 2, 3])), "row route:7: 3 values but 4 columns"),
        (
            response(cols(4), row("route:7", [1, 2, 3, 4], groups=[1, 1], terms=[2, 2, 2, 2])),
            "row route:7: raft_group_ids has 2 entries, values has 4",
        ),
        (
            response(cols(2), row("route:7", [1, 2], groups=[1, 1], terms=[3])),
            "row route:7: leader_terms has 1 entries, values has 2",
        ),
        (
            response(cols(3), row("route:7", [1, 2, 3], soft=[True])),
            "row route:7: soft_columns has 1 entries, values has 3",
        ),
        (
            response(cols(2), row("route:1", [1, 1]), row("route:2", [1, 1, 1], groups=[1])),
            "row route:2: 3 values but 2 columns",
        ),
        (
            response([T0, T0 + 2 * STEP, T0 + STEP], row("route:1", [1, 1, 1])),
            f"column timestamps not strictly increasing at index 2 ({T0 + 2 * STEP} then "
            f"{T0 + STEP})",
        ),
        (
            response(cols(1), row("route:1", [1]), row("route:1", [2])),
            "bucket_id route:1 appears twice",
        ),
        (response(cols(1), row("", [1], start=b"a")), "a row has an empty bucket_id"),
    ],
)
def test_each_contract_breach_has_the_message_paths_reason(
    m: admin_pb2.GetKeyVizMatrixResponse, reason: str
) -> None:
    with pytest.raises(MalformedMatrixError) as err:
        node_matrix_from_bytes("n1", m.SerializeToString())
    assert err.value.reason == reason
    assert both(m) == (reason, reason)


@pytest.mark.parametrize("step", [0, -60_000])
def test_a_non_positive_step_is_rejected_before_decoding(step: int) -> None:
    with pytest.raises(MalformedMatrixError) as err:
        node_matrix_from_bytes("n1", b"\xff", step_ms=step)
    assert err.value.reason == f"step {step} ms is not positive"


def test_undecodable_bytes_raise_a_decode_error_not_a_malformed_matrix() -> None:
    with pytest.raises(WireDecodeError) as err:
        node_matrix_from_bytes("n1", b"\x0a\x05\x01")
    assert isinstance(err.value, DecodeError)
    assert not isinstance(err.value, MalformedMatrixError)
    assert "runs past the end" in err.value.reason


def test_unpacked_lists_give_the_same_matrix_as_packed_ones() -> None:
    def v(n: int) -> bytes:
        out = bytearray()
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        return bytes([*out, n])

    def unpacked(number: int, items: list[int]) -> bytes:
        return b"".join(v(number << 3) + v(i) for i in items)

    body = b"\x0a\x07route:1" + unpacked(11, [3, 0, 500]) + unpacked(13, [2, 2, 2])
    body += unpacked(14, [9, 9, 9]) + unpacked(12, [1, 0, 1])
    columns = cols(3)
    data = unpacked(1, columns) + b"\x12" + v(len(body)) + body
    packed = response(columns, row("route:1", [3, 0, 500], groups=[2] * 3, terms=[9] * 3))
    packed.rows[0].start = b""
    packed.rows[0].route_count = 0
    packed.rows[0].soft_columns[:] = [True, False, True]
    assert_same(node_matrix_from_response("n1", packed), node_matrix_from_bytes("n1", data))


def test_arrays_are_writable_copies_with_the_narrowest_ids() -> None:
    m = node_matrix_from_bytes(
        "n1",
        response(
            cols(2), row("route:1", [1, 300], groups=[4, 4], terms=[2**32, 1])
        ).SerializeToString(),
    )
    assert all(
        a.flags.writeable
        for a in (m.column_unix_ms, m.values, m.soft, m.raft_group_ids, m.leader_terms)
    )
    assert [str(a.dtype) for a in (m.values, m.raft_group_ids, m.leader_terms)] == [
        "uint64",
        "uint8",
        "uint64",
    ]


def test_decode_node_matrix_fails_only_the_node_with_bad_bytes() -> None:
    def decode(data: bytes) -> tuple[NodeMatrix | None, NodeStatus]:
        status = NodeStatus("n1", "a:1", True, latency_ms=3.0)
        return decode_node_matrix(Node("n1", "a:1"), status, data)

    good, ok = decode(response(cols(2), row("route:1", [1, 2])).SerializeToString())
    assert good is not None
    assert good.node == "n1"
    assert good.values.tolist() == [[1, 2]]
    assert (ok.ok, ok.code, ok.error) == (True, None, None)
    short, rejected = decode(response(cols(2), row("route:1", [1, 2, 3])).SerializeToString())
    assert short is None
    assert (rejected.ok, rejected.code, rejected.latency_ms) == (False, "MALFORMED", 3.0)
    assert rejected.error == "malformed KeyViz matrix: row route:1: 3 values but 2 columns"
    garbage, broken = decode(b"\x12\x80")
    assert garbage is None
    assert broken.code == "MALFORMED"
    assert broken.error == (
        "malformed KeyViz matrix: not a valid protobuf "
        "(varint at byte 1 runs past the end of its message)"
    )


# Ids and values of every width the narrowing produces (uint8 .. uint64, and
# pairs too wide for one 64-bit key); the write merge packs keys and compares
# values in the narrowest type they allow, so each width is a separate path.
ids_of_any_width = st.sampled_from([0, 1, 2, 200, 300, 70_000, 2**31, 2**33, 2**63])
values_of_any_width = st.sampled_from([0, 1, 5, 300, 70_000, 2**32 - 1, 2**32, 2**40])


@given(
    st.lists(
        st.lists(
            st.tuples(values_of_any_width, ids_of_any_width, ids_of_any_width),
            min_size=3,
            max_size=3,
        ),
        min_size=1,
        max_size=6,
    )
)
def test_write_merge_of_decoded_nodes_follows_the_rule_for_every_id_width(
    cells: list[list[tuple[int, int, int]]],
) -> None:
    nodes = [
        node_matrix_from_bytes(
            f"n{n}",
            response(
                cols(len(cells)),
                row(
                    "route:1",
                    [c[n][0] for c in cells],
                    groups=[c[n][1] for c in cells],
                    terms=[c[n][2] for c in cells],
                ),
            ).SerializeToString(),
        )
        for n in range(3)
    ]
    merged = merge_nodes(nodes, series=WRITES)
    expected = [reference_write_cell(c) for c in cells]
    assert list(zip(merged.values[0].tolist(), merged.conflict[0].tolist(), strict=True)) == (
        expected
    )
