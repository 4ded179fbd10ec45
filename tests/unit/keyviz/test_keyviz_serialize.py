"""The merged matrix as JSON and as the compact binary form."""

from __future__ import annotations

import json
import struct
from dataclasses import replace

import numpy as np
import pytest

from keyviz.matrix import MergedMatrix
from keyviz.merge import merge_nodes
from keyviz.serialize import decode_binary, matrix_to_binary, matrix_to_json
from tests.unit.keyviz.keyviz_testkit import STEP, WRITES, cols, node, row

NODES = [{"node": "n1", "address": "10.0.0.1:50051", "ok": True, "error": "", "latency_ms": 3}]


def merged() -> MergedMatrix:
    a = node(
        "n1",
        cols(3),
        row("route:1", [5, 0, 2], groups=[1, 0, 1], terms=[2, 0, 2], start=b"", end=b"\x00\xff"),
        row(
            "route:2",
            [1, 1, 1],
            start=b"\x00\xff",
            end=b"",
            label="redis",
            route_ids=[2],
            soft=[False, True, False],
        ),
    )
    b = node("n2", cols(3), row("route:1", [7, 0, 2], groups=[1, 0, 1], terms=[2, 0, 2]))
    return merge_nodes([a, b], series=WRITES, failed_nodes={"n3"}, group_leaders={1: "n3"})


def test_json_form_has_series_step_columns_rows_warnings_and_nodes() -> None:
    doc = matrix_to_json(merged(), nodes=NODES)
    assert json.loads(json.dumps(doc)) == doc
    assert doc["series"] == "writes"
    assert doc["step_ms"] == STEP
    assert doc["column_unix_ms"] == cols(3)
    assert doc["warnings"] == [
        "catalog divergence: route:1 has different start/end on n1, n2; showing n1's"
    ]
    assert doc["nodes"] == NODES
    assert doc["rows"][0] == {
        "bucket_id": "route:1",
        "label": "",
        "aggregate": False,
        "start": "",
        "end": "AP8=",
        "start_text": "-inf",
        "end_text": "0x00ff",
        "start_reserved": None,
        "end_reserved": None,
        "start_label": None,
        "end_label": None,
        "family": None,
        "route_ids": [],
        "route_ids_truncated": False,
        "route_count": 1,
        "lineage_id": "",
        "member_bucket_ids": [],
        "values": [7, 0, 2],
        "soft": [],
        "conflict": [0],
        "degraded": [0, 1, 2],
        "unknown": [],
    }


def test_json_flags_are_the_column_indexes_where_set() -> None:
    r = matrix_to_json(merged())["rows"][1]
    assert (r["bucket_id"], r["end_text"], r["label"]) == ("route:2", "+inf", "redis")
    assert (r["soft"], r["conflict"], r["degraded"]) == ([1], [], [])


def test_binary_form_round_trips_values_flags_and_header() -> None:
    m = merged()
    out = decode_binary(matrix_to_binary(m, nodes=NODES))
    assert out.column_unix_ms.tolist() == cols(3)
    assert out.values.dtype == np.uint64
    assert out.values.tolist() == [[7, 0, 2], [1, 1, 1]]
    # soft=1, conflict=2, degraded=4
    assert out.flags.tolist() == [[6, 4, 4], [0, 1, 0]]
    assert out.header["n_rows"] == 2
    assert out.header["n_cols"] == 3
    assert out.header["values_dtype"] == "uint8"  # every value fits in a byte
    assert out.header["flag_bits"] == {"soft": 1, "conflict": 2, "degraded": 4, "unknown": 8}
    assert out.header["flag_counts"] == {"soft": 1, "conflict": 1, "degraded": 3, "unknown": 0}
    assert out.header["nodes"] == NODES
    assert out.header["series"] == "writes"
    assert [r["bucket_id"] for r in out.header["rows"]] == ["route:1", "route:2"]
    assert "values" not in out.header["rows"][0]


def test_binary_layout_is_magic_version_header_then_8_byte_aligned_arrays() -> None:
    data = matrix_to_binary(merged(), values_dtype="uint64")
    magic, version, reserved, length = struct.unpack_from("<4sHHI", data)
    assert (magic, version, reserved) == (b"EKVZ", 2, 0)
    header = json.loads(data[12 : 12 + length])
    start = 12 + length + (-(12 + length) % 8)
    assert start % 8 == 0
    assert data[12 + length : start] == b"\0" * (start - 12 - length)
    assert struct.unpack_from("<3q", data, start) == tuple(cols(3))
    assert struct.unpack_from("<6Q", data, start + 24) == (7, 0, 2, 1, 1, 1)
    assert data[start + 24 + 48 :] == bytes([6, 4, 4, 0, 1, 0])
    assert header["n_cols"] == 3


@pytest.mark.parametrize(
    ("largest", "dtype", "fmt"),
    [
        (255, "uint8", "B"),
        (256, "uint16", "H"),
        (2**16 - 1, "uint16", "H"),
        (2**16, "uint32", "I"),
        (2**32 - 1, "uint32", "I"),
        (2**32, "uint64", "Q"),
        (2**64 - 1, "uint64", "Q"),
    ],
)
def test_binary_values_take_the_narrowest_type_the_largest_value_fits(
    largest: int, dtype: str, fmt: str
) -> None:
    m = merged()
    m.values[0, 0] = largest  # one value decides for the whole array
    data = matrix_to_binary(m)
    header_len = struct.unpack_from("<I", data, 8)[0]
    start = 12 + header_len + (-(12 + header_len) % 8)
    assert struct.unpack_from(f"<6{fmt}", data, start + 24) == (largest, 0, 2, 1, 1, 1)
    assert data[start + 24 + 6 * struct.calcsize(fmt) :] == bytes([6, 4, 4, 0, 1, 0])
    out = decode_binary(data)
    assert out.header["values_dtype"] == dtype
    assert out.values[0, 0] == largest


def test_binary_leaves_the_flags_out_when_no_cell_has_one() -> None:
    m = merged()
    for marks in (m.soft, m.conflict, m.degraded):
        marks[:] = False
    data = matrix_to_binary(m)
    header_len = struct.unpack_from("<I", data, 8)[0]
    start = 12 + header_len + (-(12 + header_len) % 8)
    assert len(data) == start + 24 + 6  # stamps, one byte per value, nothing after
    out = decode_binary(data)
    assert out.header["flag_counts"] == {"soft": 0, "conflict": 0, "degraded": 0, "unknown": 0}
    assert out.flags.tolist() == [[0, 0, 0], [0, 0, 0]]
    assert out.values.tolist() == [[7, 0, 2], [1, 1, 1]]


def with_unknown(m: MergedMatrix, cells: list[tuple[int, int]]) -> MergedMatrix:
    unknown = np.zeros(m.shape, dtype=np.bool_)
    for r, c in cells:
        unknown[r, c] = True
    return replace(m, unknown=unknown)


def test_unknown_cells_are_listed_per_row_in_json_like_the_other_flags() -> None:
    doc = matrix_to_json(with_unknown(merged(), [(0, 2), (1, 0), (1, 2)]))
    assert [r["unknown"] for r in doc["rows"]] == [[2], [0, 2]]
    # The value the reporting nodes counted is kept; the flag says it is not the whole truth.
    assert doc["rows"][1]["values"] == [1, 1, 1]


def test_unknown_cells_carry_flag_bit_8_in_the_binary_form_and_are_counted() -> None:
    m = with_unknown(merged(), [(1, 0), (1, 2)])
    out = decode_binary(matrix_to_binary(m))
    assert out.header["flag_bits"]["unknown"] == 8
    assert out.header["flag_counts"]["unknown"] == 2
    # soft=1, conflict=2, degraded=4, unknown=8
    assert out.flags.tolist() == [[6, 4, 4], [8, 1, 8]]


def test_a_matrix_with_only_unknown_cells_still_sends_the_flags_section() -> None:
    m = merged()
    for marks in (m.soft, m.conflict, m.degraded):
        marks[:] = False
    out = decode_binary(matrix_to_binary(with_unknown(m, [(0, 1)])))
    assert out.flags.tolist() == [[0, 8, 0], [0, 0, 0]]


def test_extra_fields_reach_the_json_and_the_binary_header() -> None:
    extra = {"collector": None, "tier": 1, "message": "the collector has not run yet"}
    assert matrix_to_json(merged(), extra=extra)["tier"] == 1
    header = decode_binary(matrix_to_binary(merged(), extra=extra)).header
    assert (header["collector"], header["message"]) == (None, extra["message"])


def test_binary_values_can_be_float64() -> None:
    out = decode_binary(matrix_to_binary(merged(), values_dtype="float64"))
    assert out.values.dtype == np.float64
    assert out.values.tolist() == [[7.0, 0.0, 2.0], [1.0, 1.0, 1.0]]


def test_binary_decoder_rejects_other_data() -> None:
    data = matrix_to_binary(merged())
    with pytest.raises(ValueError, match="not a version 2 KeyViz matrix"):
        decode_binary(b"XXXX" + data[4:])
    with pytest.raises(ValueError, match="too short"):
        decode_binary(b"EKV")
    with pytest.raises(ValueError, match="trailing or missing bytes"):
        decode_binary(data + b"\0")


def test_empty_matrix_serializes() -> None:
    m = merge_nodes([], series=WRITES)
    assert matrix_to_json(m)["rows"] == []
    out = decode_binary(matrix_to_binary(m))
    assert out.values.shape == (0, 0)
    assert out.header["step_ms"] == STEP


def test_binary_header_rows_are_the_json_forms_rows_request_after_request() -> None:
    m = merged()
    as_json = matrix_to_json(m, nodes=NODES)
    for _ in range(2):  # the second time from the row cache
        header = decode_binary(matrix_to_binary(m, nodes=NODES)).header
        assert header["rows"] == [
            {
                k: v
                for k, v in r.items()
                if k not in ("values", "soft", "conflict", "degraded", "unknown")
            }
            for r in as_json["rows"]
        ]
        assert (header["series"], header["step_ms"], header["nodes"]) == ("writes", STEP, NODES)
