"""proto/wire.py against protobuf's own parser and serializer.

The decoder must accept exactly what protobuf (upb) accepts for a
GetKeyVizMatrixResponse and read the same values; the encoder must write the
bytes protobuf writes. Valid messages come from admin_pb2; the other wire
encodings protobuf accepts (unpacked lists, split lists, fields out of order
or repeated, unknown fields of every wire type, over-long varints) and
garbage are built by hand below.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from devcluster.catalog import Route
from devcluster.sampler import KeyVizSampler
from devcluster.server import (
    Malformation,
    malform_matrix,
    malform_rows,
    pad_beyond,
    pad_bytes_beyond,
)
from proto import admin_pb2
from proto.wire import (
    KeyVizMatrixWire,
    Ragged,
    RowHeader,
    WireDecodeError,
    decode_keyviz_matrix,
    decode_varints,
    encode_keyviz_matrix,
    encode_varints,
    varint,
)

U64_MAX = 2**64 - 1
LISTS = ("values", "soft_columns", "raft_group_ids", "leader_terms")

# ---------------------------------------------------------------- hand-built wire


def vint(n: int, pad: int = 0) -> bytes:
    """A varint, optionally over-long by `pad` bytes (protobuf accepts up to 10 in all)."""
    n &= U64_MAX
    out = bytearray()
    while True:
        out.append(n & 0x7F)
        n >>= 7
        if not n:
            break
    for _ in range(min(pad, 10 - len(out))):
        out.append(0)
    for i in range(len(out) - 1):
        out[i] |= 0x80
    return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return vint(number << 3 | wire_type)


def delimited(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + vint(len(payload)) + payload


def packed(number: int, items: list[int]) -> bytes:
    return delimited(number, b"".join(vint(i) for i in items))


def unpacked(number: int, items: list[int]) -> bytes:
    return b"".join(tag(number, 0) + vint(i) for i in items)


# ---------------------------------------------------------------- comparison


def message_dict(m: admin_pb2.GetKeyVizMatrixResponse) -> dict[str, Any]:
    return {
        "columns": list(m.column_unix_ms),
        "rows": [
            {
                "bucket_id": r.bucket_id,
                "start": r.start,
                "end": r.end,
                "label": r.label,
                "aggregate": r.aggregate,
                "route_ids": list(r.route_ids),
                "route_ids_truncated": r.route_ids_truncated,
                "route_count": r.route_count,
                "sample_roles": list(r.sample_roles),
                "lineage_id": r.lineage_id,
                "values": list(r.values),
                "soft_columns": list(r.soft_columns),
                "raft_group_ids": list(r.raft_group_ids),
                "leader_terms": list(r.leader_terms),
            }
            for r in m.rows
        ],
    }


def wire_dict(w: KeyVizMatrixWire) -> dict[str, Any]:
    rows = []
    for i, h in enumerate(w.rows):
        cells = {name: getattr(w, name).row(i).tolist() for name in LISTS}
        cells["soft_columns"] = [v != 0 for v in cells["soft_columns"]]
        rows.append(
            {
                "bucket_id": h.bucket_id,
                "start": h.start,
                "end": h.end,
                "label": h.label,
                "aggregate": h.aggregate,
                "route_ids": list(h.route_ids),
                "route_ids_truncated": h.route_ids_truncated,
                "route_count": h.route_count,
                "sample_roles": list(h.sample_roles),
                "lineage_id": h.lineage_id,
                **cells,
            }
        )
    return {"columns": w.column_unix_ms.tolist(), "rows": rows}


def protobuf_reading(data: bytes) -> dict[str, Any] | None:
    try:
        return message_dict(admin_pb2.GetKeyVizMatrixResponse.FromString(data))
    except DecodeError:
        return None


def wire_reading(data: bytes) -> dict[str, Any] | None:
    try:
        return wire_dict(decode_keyviz_matrix(data))
    except WireDecodeError:
        return None


def assert_same_reading(data: bytes) -> dict[str, Any] | None:
    expected = protobuf_reading(data)
    assert wire_reading(data) == expected
    return expected


# ---------------------------------------------------------------- strategies

u64 = st.one_of(
    st.integers(0, 130),
    st.integers(0, 2**16),
    st.integers(0, U64_MAX),
    st.sampled_from([2**7 * k for k in (1, 2**7, 2**14, 2**21, 2**28, 2**35, 2**42, 2**49)]),
    st.just(U64_MAX),
)
i64 = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-5, 200))
text = st.text(st.characters(codec="utf-8"), max_size=6)
# Enums are open in proto3: unknown values, negative ones too, are kept.
roles = st.integers(-(2**31), 2**31 - 1) | st.integers(0, 3)


@st.composite
def rows(draw: st.DrawFn) -> admin_pb2.KeyVizRow:
    def cells(values: st.SearchStrategy[Any]) -> list[Any]:
        return draw(st.lists(values, max_size=12))

    return admin_pb2.KeyVizRow(
        bucket_id=draw(text),
        start=draw(st.binary(max_size=6)),
        end=draw(st.binary(max_size=6)),
        label=draw(text),
        aggregate=draw(st.booleans()),
        route_ids=cells(u64),
        route_ids_truncated=draw(st.booleans()),
        route_count=draw(u64),
        sample_roles=cells(roles),
        lineage_id=draw(text),
        values=cells(u64),
        soft_columns=cells(st.booleans()),
        raft_group_ids=cells(u64),
        leader_terms=cells(u64),
    )


@st.composite
def responses(draw: st.DrawFn) -> admin_pb2.GetKeyVizMatrixResponse:
    return admin_pb2.GetKeyVizMatrixResponse(
        column_unix_ms=draw(st.lists(i64, max_size=10)), rows=draw(st.lists(rows(), max_size=5))
    )


@st.composite
def unknown_fields(draw: st.DrawFn, depth: int = 0) -> bytes:
    """One unknown field of any wire type (field numbers 15+ are unknown everywhere)."""
    number = draw(st.integers(15, 2**29 - 1) | st.integers(15, 40))
    kinds = ["varint", "fixed64", "fixed32", "delimited"] + (["group"] if depth < 3 else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "varint":
        return tag(number, 0) + vint(draw(u64), draw(st.integers(0, 1)))
    if kind == "fixed64":
        return tag(number, 1) + draw(st.binary(min_size=8, max_size=8))
    if kind == "fixed32":
        return tag(number, 5) + draw(st.binary(min_size=4, max_size=4))
    if kind == "delimited":
        return delimited(number, draw(st.binary(max_size=8)))
    inner = b"".join(draw(st.lists(unknown_fields(depth + 1), max_size=3)))
    return tag(number, 3) + inner + tag(number, 4)


@st.composite
def list_encoding(draw: st.DrawFn, number: int, items: list[int]) -> list[bytes]:
    """A repeated scalar as protobuf may receive it: packed, unpacked, split, mixed."""
    pieces: list[bytes] = []
    at = 0
    while at < len(items):
        n = draw(st.integers(1, len(items) - at))
        chunk = items[at : at + n]
        at += n
        if draw(st.booleans()):
            pieces.append(packed(number, chunk))
        else:
            pieces.append(unpacked(number, chunk))
    if draw(st.integers(0, 4)) == 0:
        pieces.insert(draw(st.integers(0, len(pieces))), packed(number, []))  # empty packed
    return pieces


def _stale(draw: st.DrawFn, number: int, kind: str) -> bytes:
    """An earlier value of a scalar field, overridden by the real one that follows."""
    if kind == "varint":
        return tag(number, 0) + vint(draw(u64))
    return delimited(number, draw(text).encode())


@st.composite
def scrambled_row(draw: st.DrawFn, r: admin_pb2.KeyVizRow) -> bytes:
    """The row's fields re-encoded in random order, with stale repeats and unknown fields."""
    fields: list[list[bytes]] = []
    scalars = [
        (1, r.bucket_id.encode(), "bytes"),
        (2, r.start, "bytes"),
        (3, r.end, "bytes"),
        (4, r.label.encode(), "bytes"),
        (10, r.lineage_id.encode(), "bytes"),
    ]
    for number, value, kind in scalars:
        if value or draw(st.booleans()):
            stale = [_stale(draw, number, kind)] if draw(st.integers(0, 3)) == 0 else []
            fields.append([*stale, delimited(number, value)])
    for number, flag in ((5, r.aggregate), (7, r.route_ids_truncated)):
        if flag or draw(st.booleans()):
            fields.append([tag(number, 0) + vint(int(flag) * draw(st.sampled_from([1, 2, 300])))])
    if r.route_count or draw(st.booleans()):
        fields.append([tag(8, 0) + vint(r.route_count, draw(st.integers(0, 1)))])
    lists = [
        (6, list(r.route_ids)),
        (9, [x & U64_MAX for x in r.sample_roles]),
        (11, list(r.values)),
        (12, [int(x) for x in r.soft_columns]),
        (13, list(r.raft_group_ids)),
        (14, list(r.leader_terms)),
    ]
    for number, items in lists:
        if items:
            fields.append(draw(list_encoding(number, items)))
    # Field order is free between fields, but each list's pieces keep their order.
    order = draw(st.permutations(range(len(fields))))
    out: list[bytes] = []
    for i in order:
        out.extend(fields[i])
    for _ in range(draw(st.integers(0, 2))):
        out.insert(draw(st.integers(0, len(out))), draw(unknown_fields()))
    return b"".join(out)


@st.composite
def scrambled(draw: st.DrawFn) -> tuple[admin_pb2.GetKeyVizMatrixResponse, bytes]:
    m = draw(responses())
    parts = draw(list_encoding(1, [c & U64_MAX for c in m.column_unix_ms]))
    parts += [delimited(2, draw(scrambled_row(r))) for r in m.rows]
    # Columns may come after (or between) the rows: lists concatenate in wire order.
    for _ in range(draw(st.integers(0, 2))):
        parts.insert(draw(st.integers(0, len(parts))), draw(unknown_fields()))
    return m, b"".join(parts)


# ---------------------------------------------------------------- properties


@given(responses())
def test_decodes_what_protobuf_serializes_and_encodes_it_back_byte_for_byte(
    m: admin_pb2.GetKeyVizMatrixResponse,
) -> None:
    data = m.SerializeToString()
    decoded = decode_keyviz_matrix(data)
    assert wire_dict(decoded) == message_dict(m)
    assert encode_keyviz_matrix(decoded) == data


@given(scrambled())
def test_reads_every_encoding_protobuf_accepts_like_protobuf(
    case: tuple[admin_pb2.GetKeyVizMatrixResponse, bytes],
) -> None:
    m, data = case
    assert assert_same_reading(data) == message_dict(m)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(scrambled())[1])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=3))
        elif not data:
            continue
        elif op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x08, 0x0B, 0x0C, 0x12]))
        else:
            del data[at]
    return bytes(data)


@given(mutated())
def test_damaged_bytes_are_accepted_or_rejected_exactly_as_protobuf_does(data: bytes) -> None:
    assert_same_reading(data)


@given(st.binary(max_size=64))
def test_random_bytes_are_accepted_or_rejected_exactly_as_protobuf_does(data: bytes) -> None:
    assert_same_reading(data)


@given(st.lists(u64, max_size=40))
def test_numpy_varints_match_the_scalar_encoding(values: list[int]) -> None:
    arr = np.array(values, dtype=np.uint64)
    data, _ = encode_varints(arr)
    assert data.tobytes() == b"".join(varint(v) for v in values)
    decoded, _ = decode_varints(data)
    assert decoded.tolist() == values


# ---------------------------------------------------------------- targeted cases


def test_unpacked_lists_decode_like_packed_ones() -> None:
    row = (
        delimited(1, b"route:1")
        + unpacked(11, [5, 300, U64_MAX])
        + unpacked(13, [1, 1, 1])
        + packed(14, [7])
        + unpacked(14, [7, 8])
        + unpacked(12, [0, 1, 2])
    )
    data = unpacked(1, [100, 200]) + delimited(2, row) + packed(1, [300])
    decoded = decode_keyviz_matrix(data)
    assert decoded.column_unix_ms.tolist() == [100, 200, 300]
    assert decoded.values.row(0).tolist() == [5, 300, U64_MAX]
    assert decoded.raft_group_ids.row(0).tolist() == [1, 1, 1]
    assert decoded.leader_terms.row(0).tolist() == [7, 7, 8]
    assert decoded.soft_columns.row(0).tolist() == [0, 1, 2]
    assert assert_same_reading(data) is not None


@pytest.mark.parametrize(
    "unknown",
    [
        tag(99, 0) + vint(U64_MAX),
        tag(99, 1) + bytes(8),
        tag(99, 5) + bytes(4),
        delimited(99, b"\xff\xfe garbage"),
        tag(99, 3) + tag(1, 0) + vint(5) + delimited(2, b"x") + tag(99, 4),
        tag(99, 3) + tag(0, 0) + vint(1) + tag(99, 4),  # upb skips groups without checking numbers
        tag(1, 1) + bytes(8),  # a known number with the wrong wire type is unknown
        tag(2, 0) + vint(3),
        tag(2, 3) + tag(2, 4),
        tag(11, 5) + bytes(4),
    ],
)
def test_unknown_fields_of_every_wire_type_are_skipped(unknown: bytes) -> None:
    row = delimited(1, b"route:1") + unknown + packed(11, [4, 5]) + unknown
    data = unknown + packed(1, [10, 20]) + delimited(2, row) + unknown
    decoded = decode_keyviz_matrix(data)
    assert decoded.column_unix_ms.tolist() == [10, 20]
    assert [h.bucket_id for h in decoded.rows] == ["route:1"]
    assert decoded.values.row(0).tolist() == [4, 5]
    assert assert_same_reading(data) is not None


def test_negative_columns_are_ten_byte_varints() -> None:
    data = packed(1, [-1 & U64_MAX, -(2**63) & U64_MAX, 5])
    assert len(vint(-1 & U64_MAX)) == 10
    assert decode_keyviz_matrix(data).column_unix_ms.tolist() == [-1, -(2**63), 5]
    assert assert_same_reading(data) is not None


def test_bits_past_64_of_a_ten_byte_varint_are_dropped_like_protobuf() -> None:
    data = tag(1, 0) + b"\x80" * 9 + b"\x7e" + delimited(2, tag(5, 0) + b"\x80" * 9 + b"\x02")
    decoded = decode_keyviz_matrix(data)
    assert decoded.column_unix_ms.tolist() == [0]
    assert decoded.rows[0].aggregate is False
    assert assert_same_reading(data) is not None


def test_scalars_take_the_last_value_and_rows_repeat() -> None:
    row = delimited(1, b"a") + tag(8, 0) + vint(3) + delimited(1, b"b") + tag(8, 0) + vint(4)
    data = delimited(2, row) + delimited(2, delimited(1, b"c"))
    decoded = decode_keyviz_matrix(data)
    assert [(h.bucket_id, h.route_count) for h in decoded.rows] == [("b", 4), ("c", 0)]
    assert assert_same_reading(data) is not None


def _nested_groups(depth: int) -> bytes:
    return tag(20, 3) * depth + tag(20, 4) * depth


@pytest.mark.parametrize(("depth", "ok"), [(100, True), (101, False)])
def test_group_nesting_limit_at_the_top_matches_protobuf(depth: int, ok: bool) -> None:
    data = _nested_groups(depth)
    assert (assert_same_reading(data) is not None) is ok


@pytest.mark.parametrize(("depth", "ok"), [(99, True), (100, False)])
def test_group_nesting_limit_inside_a_row_matches_protobuf(depth: int, ok: bool) -> None:
    data = delimited(2, _nested_groups(depth))
    assert (assert_same_reading(data) is not None) is ok


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (tag(0, 0) + vint(1), "field number 0"),
        (tag(5, 6), "invalid wire type 6"),
        (tag(5, 7), "invalid wire type 7"),
        (tag(5, 4), "end-group tag without a matching start"),
        (tag(5, 3) + tag(6, 4), "end-group tag without a matching start"),
        (tag(5, 3) + tag(6, 0) + vint(1), "group (field 5) is not closed"),
        (b"\x88\x80\x80\x80\x80\x00", "malformed field tag"),
        (b"\x88\x80\x80\x80\x7f", "malformed field tag"),
        (tag(1, 0) + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
        (tag(1, 0) + b"\xff\xff", "runs past the end"),
        (tag(1, 2) + vint(100) + b"\x01", "runs past the end of its message"),
        (tag(99, 2) + vint(2**31 - 1), "too large"),
        (tag(99, 2) + vint(2**40), "too large"),
        (tag(99, 1) + bytes(7), "fixed-width field"),
        (tag(99, 5) + bytes(3), "fixed-width field"),
        (delimited(1, b"\x01\x81"), "ends inside a varint"),
        (delimited(2, delimited(11, b"\x80" * 10 + b"\x01")), "longer than 10 bytes"),
        (delimited(2, delimited(1, b"\xff")), "bucket_id at byte 4 is not valid UTF-8"),
        (delimited(2, delimited(4, b"\xed\xa0\x80")), "label at byte 4 is not valid UTF-8"),
        (delimited(2, delimited(10, b"\xc0\x80")), "lineage_id at byte 4 is not valid UTF-8"),
        (delimited(2, tag(5, 4)), "end-group tag without a matching start"),
        # A row's field may not run past the row, even where the buffer goes on.
        (delimited(2, tag(11, 2) + vint(3) + b"\x01") + b"\x01\x01", "runs past the end"),
        (delimited(2, tag(8, 0) + b"\x80") + b"\x01", "runs past the end"),
    ],
)
def test_garbage_is_rejected_with_a_reason_like_protobuf(data: bytes, reason: str) -> None:
    with pytest.raises(WireDecodeError) as err:
        decode_keyviz_matrix(data)
    assert reason in err.value.reason
    assert isinstance(err.value, DecodeError)
    assert protobuf_reading(data) is None


def test_bytes_fields_are_not_utf8_checked() -> None:
    data = delimited(2, delimited(2, b"\xff") + delimited(3, b"\x80"))
    decoded = decode_keyviz_matrix(data)
    assert (decoded.rows[0].start, decoded.rows[0].end) == (b"\xff", b"\x80")
    assert assert_same_reading(data) is not None


def test_a_huge_claimed_length_fails_fast_without_allocating() -> None:
    data = tag(1, 2) + vint(2**31 - 2) + b"\x01"
    with pytest.raises(WireDecodeError, match="runs past the end"):
        decode_keyviz_matrix(data)


def test_decoder_accepts_bytearray_and_memoryview() -> None:
    data = admin_pb2.GetKeyVizMatrixResponse(column_unix_ms=[1, 2]).SerializeToString()
    for view in (bytearray(data), memoryview(data)):
        assert decode_keyviz_matrix(view).column_unix_ms.tolist() == [1, 2]


def test_one_byte_lists_come_back_as_uint8_and_others_as_uint64() -> None:
    m = admin_pb2.GetKeyVizMatrixResponse(
        rows=[admin_pb2.KeyVizRow(bucket_id="a", values=[1, 200], raft_group_ids=[3, 4])]
    )
    decoded = decode_keyviz_matrix(m.SerializeToString())
    assert decoded.values.flat.dtype == np.uint64
    assert decoded.raft_group_ids.flat.dtype == np.uint8


def test_encoder_writes_what_protobuf_writes_for_a_full_matrix() -> None:
    rng = np.random.default_rng(3)
    values = rng.integers(0, 2**40, size=(4, 6), dtype=np.uint64) >> rng.integers(
        0, 40, size=(4, 6), dtype=np.uint64
    )
    groups = rng.integers(0, 3, size=(4, 6), dtype=np.uint64)
    soft = rng.random((4, 6)) < 0.3
    headers = tuple(
        RowHeader(
            bucket_id=f"route:{i}",
            start=bytes([i]),
            end=bytes([i + 1]) if i < 3 else b"",
            label="redis" if i % 2 else "",
            aggregate=i == 3,
            route_ids=(i, 2**63 + i) if i == 3 else (i,),
            route_ids_truncated=i == 3,
            route_count=2 if i == 3 else 1,
            sample_roles=(1, -1) if i == 1 else (),
            lineage_id="lin" if i == 2 else "",
        )
        for i in range(4)
    )
    soft_rows = soft[[0, 2]]
    wire = KeyVizMatrixWire(
        column_unix_ms=np.array([-5, 0, 1, 2**40, 2**62, 2**63 - 1], dtype=np.int64),
        rows=headers,
        values=Ragged.dense(values),
        soft_columns=Ragged(
            soft_rows.reshape(-1).astype(np.uint64), np.array([6, 0, 6, 0], dtype=np.int64)
        ),
        raft_group_ids=Ragged.dense(groups),
        leader_terms=Ragged.empty(4),
    )
    expected = admin_pb2.GetKeyVizMatrixResponse(
        column_unix_ms=[-5, 0, 1, 2**40, 2**62, 2**63 - 1],
        rows=[
            admin_pb2.KeyVizRow(
                bucket_id=h.bucket_id,
                start=h.start,
                end=h.end,
                label=h.label,
                aggregate=h.aggregate,
                route_ids=h.route_ids,
                route_ids_truncated=h.route_ids_truncated,
                route_count=h.route_count,
                sample_roles=h.sample_roles,  # type: ignore[arg-type]
                lineage_id=h.lineage_id,
                values=values[i].tolist(),
                soft_columns=soft[i].tolist() if i in (0, 2) else [],
                raft_group_ids=groups[i].tolist(),
            )
            for i, h in enumerate(headers)
        ],
    )
    assert encode_keyviz_matrix(wire) == expected.SerializeToString()


def test_ragged_counts_must_cover_flat() -> None:
    with pytest.raises(ValueError, match="counts add up to 3"):
        Ragged(np.zeros(2, dtype=np.uint64), np.array([1, 2], dtype=np.int64))


# ---------------------------------------------------------------- devcluster's fast path


@st.composite
def samplers(draw: st.DrawFn) -> KeyVizSampler:
    """A devcluster sampler after a few flushed columns of random traffic."""
    # 70 routes in one bucket: an aggregate with route_ids truncated at 64.
    n_routes = draw(st.integers(1, 8)) if draw(st.integers(0, 4)) else 70
    edges = [b"", *(bytes([i // 256, i % 256]) for i in range(1, n_routes)), b""]
    routes = [
        Route(
            route_id=i + 1,
            start=edges[i],
            end=edges[i + 1],
            group_id=draw(st.integers(1, 3)),
            lineage_id=draw(st.sampled_from(["", f"lin-{i}"])),
        )
        for i in range(n_routes)
    ]
    sampler = KeyVizSampler(
        history_columns=draw(st.integers(1, 6)),
        max_tracked_routes=draw(st.sampled_from([1, 2, n_routes])),
        adapter_rows=draw(st.booleans()),
        sample_rate=draw(st.sampled_from([1.0, 0.5, 0.01])),
        design=draw(st.booleans()),
    )
    sampler.set_routes(routes)
    at = 1_000
    for _ in range(draw(st.integers(0, 5) | st.just(3))):
        for _ in range(draw(st.integers(1, 12))):
            sampler.observe(
                draw(st.integers(1, n_routes)),
                draw(st.integers(0, 1)),
                draw(st.integers(0, 2**20) | st.integers(1, 3)),
                draw(st.integers(0, 2**40) | st.integers(0, 300)),
                draw(st.sampled_from(["", "redis", "dynamo"])),
                draw(st.integers(0, 7)),
            )
        at += draw(st.integers(1, 90_000))
        sampler.flush(at, {g: draw(st.integers(0, 2**33)) for g in range(1, 4)})
    return sampler


queries = st.tuples(
    st.sampled_from(
        [
            admin_pb2.KEYVIZ_SERIES_UNSPECIFIED,
            admin_pb2.KEYVIZ_SERIES_READS,
            admin_pb2.KEYVIZ_SERIES_WRITES,
            admin_pb2.KEYVIZ_SERIES_READ_BYTES,
            admin_pb2.KEYVIZ_SERIES_WRITE_BYTES,
        ]
    ),
    st.sampled_from([0, 0, 50_000, 200_000]),
    st.sampled_from([0, 0, 150_000, 400_000]),
    st.integers(0, 5) | st.just(2000),
)


@given(samplers(), queries)
def test_devcluster_encodes_its_matrix_exactly_as_protobuf_serializes_it(
    sampler: KeyVizSampler, query: tuple[int, int, int, int]
) -> None:
    expected = sampler.matrix(*query)
    data = encode_keyviz_matrix(sampler.matrix_wire(*query))
    assert admin_pb2.GetKeyVizMatrixResponse.FromString(data) == expected
    assert data == expected.SerializeToString()


@given(samplers(), queries, st.sampled_from(list(Malformation)), st.integers(0, 3000))
def test_devcluster_faults_break_the_encoded_matrix_as_they_break_the_message(
    sampler: KeyVizSampler, query: tuple[int, int, int, int], kind: Malformation, size: int
) -> None:
    expected = sampler.matrix(*query)
    malform_rows(expected.rows, len(expected.column_unix_ms), kind)
    data = encode_keyviz_matrix(malform_matrix(sampler.matrix_wire(*query), kind))
    assert admin_pb2.GetKeyVizMatrixResponse.FromString(data) == expected
    assert data == expected.SerializeToString()
    pad_beyond(expected, size)
    padded = pad_bytes_beyond(data, size)
    assert len(padded) > size
    assert padded == expected.SerializeToString()
    assert admin_pb2.GetKeyVizMatrixResponse.FromString(padded) == expected


@given(samplers(), st.integers(0, 3))
def test_devcluster_dense_matrix_matches_a_column_by_column_build(
    sampler: KeyVizSampler, counter: int
) -> None:
    # The sampler's one-scatter _dense against the plain per-column loop it replaced.
    columns = sampler.columns
    dense = sampler._dense(columns, counter)
    slots = sorted({s for c in columns for s in c.slots.tolist()})
    assert dense.slots.tolist() == slots
    at = {s: i for i, s in enumerate(slots)}
    shape = (len(slots), len(columns))
    expected = {
        "values": np.zeros(shape, dtype=np.uint64),
        "soft": np.zeros(shape, dtype=np.bool_),
        "groups": np.zeros(shape, dtype=np.uint64),
        "terms": np.zeros(shape, dtype=np.uint64),
    }
    roles = [0] * len(slots)
    for j, c in enumerate(columns):
        for k, s in enumerate(c.slots.tolist()):
            expected["values"][at[s], j] = c.values[counter][k]
            expected["soft"][at[s], j] = c.soft[counter % 2][k]
            expected["groups"][at[s], j] = c.groups[k]
            expected["terms"][at[s], j] = c.terms[k]
            roles[at[s]] |= int(c.roles[k])
    if not sampler._design:
        # Soft cells and roles reach a response only in the design profile: left zero.
        expected["soft"][...] = False
        roles = [0] * len(slots)
    for name, want in expected.items():
        got = getattr(dense, name)
        assert (got.shape, got.dtype) == (want.shape, want.dtype)
        assert got.tolist() == want.tolist()
    assert dense.roles.tolist() == roles
