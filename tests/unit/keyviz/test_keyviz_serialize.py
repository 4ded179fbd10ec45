"""The merged matrix as JSON and as the compact binary form."""

from __future__ import annotations

import json
import struct

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
        "route_ids": [],
        "route_ids_truncated": False,
        "route_count": 1,
        "lineage_id": "",
        "member_bucket_ids": [],
        "values": [7, 0, 2],
        "soft": [],
        "conflict": [0],
        "degraded": [0, 1, 2],
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
    assert out.header["values_dtype"] == "uint32"  # every value fits: half the bytes
    assert out.header["flag_bits"] == {"soft": 1, "conflict": 2, "degraded": 4}
    assert out.header["nodes"] == NODES
    assert out.header["series"] == "writes"
    assert [r["bucket_id"] for r in out.header["rows"]] == ["route:1", "route:2"]
    assert "values" not in out.header["rows"][0]


def test_binary_layout_is_magic_version_header_then_8_byte_aligned_arrays() -> None:
    data = matrix_to_binary(merged(), values_dtype="uint64")
    magic, version, reserved, length = struct.unpack_from("<4sHHI", data)
    assert (magic, version, reserved) == (b"EKVZ", 1, 0)
    header = json.loads(data[12 : 12 + length])
    start = 12 + length + (-(12 + length) % 8)
    assert start % 8 == 0
    assert data[12 + length : start] == b"\0" * (start - 12 - length)
    assert struct.unpack_from("<3q", data, start) == tuple(cols(3))
    assert struct.unpack_from("<6Q", data, start + 24) == (7, 0, 2, 1, 1, 1)
    assert data[start + 24 + 48 :] == bytes([6, 4, 4, 0, 1, 0])
    assert header["n_cols"] == 3


def test_binary_values_are_uint32_when_every_value_fits_and_uint64_otherwise() -> None:
    small = matrix_to_binary(merged())
    header_len = struct.unpack_from("<I", small, 8)[0]
    start = 12 + header_len + (-(12 + header_len) % 8)
    assert struct.unpack_from("<6I", small, start + 24) == (7, 0, 2, 1, 1, 1)
    assert small[start + 24 + 24 :] == bytes([6, 4, 4, 0, 1, 0])
    m = merged()
    m.values[0, 0] = 2**32  # one value past 32 bits: the whole array goes wide
    wide = decode_binary(matrix_to_binary(m))
    assert wide.header["values_dtype"] == "uint64"
    assert wide.values[0, 0] == 2**32


def test_binary_values_can_be_float64() -> None:
    out = decode_binary(matrix_to_binary(merged(), values_dtype="float64"))
    assert out.values.dtype == np.float64
    assert out.values.tolist() == [[7.0, 0.0, 2.0], [1.0, 1.0, 1.0]]


def test_binary_decoder_rejects_other_data() -> None:
    data = matrix_to_binary(merged())
    with pytest.raises(ValueError, match="not a version 1 KeyViz matrix"):
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
