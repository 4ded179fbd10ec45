"""The merged matrix as JSON or as a compact binary for the heatmap.

JSON (`matrix_to_json`)::

    {
      "series": "writes",                 # reads | writes | read_bytes | write_bytes
      "step_ms": 60000,                   # width of one column
      "column_unix_ms": [..M ints..],     # END of each column's window
      "rows": [                           # key order
        {
          "bucket_id": "route:7", "label": "redis", "aggregate": false,
          "start": "<base64>", "end": "<base64>",
          "start_text": "user:1", "end_text": "+inf",   # keys.key_preview
          "start_reserved": null, "end_reserved": null, # e.g. "transaction metadata"
          "start_label": null, "end_label": null,       # e.g. "DynamoDB table orders"
          "family": null,                 # the start key's family (keyviz/families.py)
          "route_ids": [7], "route_ids_truncated": false, "route_count": 1,
          "lineage_id": "", "member_bucket_ids": [],    # filled for joined rows
          "values": [..M ints..],
          "soft": [3, 4], "conflict": [], "degraded": [], # column indexes where set
          "unknown": [5]                  # a node that would have counted it did not report
        }
      ],
      "warnings": ["..."],
      "nodes": [...],                     # the caller's per-node status, as given
      ...                                 # plus the caller's extra fields (the API adds
    }                                     # "collector", "tier", "message")

An unknown cell's value is whatever the nodes that did report counted (0 when
none did); readers show and export it as unknown, not as that number.

Binary (`matrix_to_binary`), little-endian::

    offset 0   4 bytes  magic b"EKVZ"
    offset 4   uint16   format version (2)
    offset 6   uint16   0 (reserved)
    offset 8   uint32   H, length of the JSON header
    offset 12  H bytes  JSON header (UTF-8), then 0-7 zero bytes up to a multiple of 8
    then       int64    column_unix_ms[M]
    then       values[R * M], row-major, of the header's "values_dtype": the narrowest
                        of uint8, uint16, uint32 and uint64 every value fits in (a day
                        of per-minute counts is mostly uint16: a quarter of the bytes);
                        float64 on request (exact only up to 2^53)
    then       uint8    flags[R * M], row-major: soft=1, conflict=2, degraded=4,
                        unknown=8; left out when no cell has a flag (every
                        "flag_counts" is 0)

The header is the JSON form without "column_unix_ms" and without each row's
"values"/"soft"/"conflict"/"degraded"/"unknown", plus "n_rows", "n_cols",
"values_dtype", "flag_bits" and "flag_counts" (cells with each flag). Every
array starts aligned for its element type, so the browser can view it with
typed arrays without copying.

Bit 8 "unknown" (DESIGN rule 6) came without a version bump: the layout is
unchanged, "flag_bits" names every bit in use, and a version 2 reader that
predates it sees a flag it does not draw (the cell's value is still right).
"""

from __future__ import annotations

import base64
import functools
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

# Re-exported: the flag bits of the binary form and the live stream.
from keyviz.columns import FLAG_CONFLICT as FLAG_CONFLICT
from keyviz.columns import FLAG_DEGRADED as FLAG_DEGRADED
from keyviz.columns import FLAG_SOFT as FLAG_SOFT
from keyviz.columns import FLAG_UNKNOWN as FLAG_UNKNOWN
from keyviz.keys import key_preview
from keyviz.matrix import MergedMatrix, RowMeta
from keyviz.params import SERIES_NAMES

if TYPE_CHECKING:
    from keyviz.service import BucketDetail

MAGIC = b"EKVZ"
VERSION = 2
_PREAMBLE = struct.Struct("<4sHHI")

ValuesDtype = Literal["auto", "uint8", "uint16", "uint32", "uint64", "float64"]
_WIRE_DTYPES = {"uint8": "u1", "uint16": "<u2", "uint32": "<u4", "uint64": "<u8", "float64": "<f8"}


def narrowest_dtype(largest: int) -> ValuesDtype:
    """The smallest unsigned wire type that holds every value up to `largest`."""
    for name, bits in (("uint8", 8), ("uint16", 16), ("uint32", 32)):
        if largest < 2**bits:
            return name  # type: ignore[return-value]
    return "uint64"


def row_metadata(row: RowMeta) -> dict[str, Any]:
    """A row's metadata as JSON (no cells)."""
    start = key_preview(row.start)
    end = key_preview(row.end, is_end=True)
    return {
        "bucket_id": row.bucket_id,
        "label": row.label,
        "aggregate": row.aggregate,
        "start": base64.b64encode(row.start).decode("ascii"),
        "end": base64.b64encode(row.end).decode("ascii"),
        "start_text": start.text,
        "end_text": end.text,
        "start_reserved": start.reserved_label,
        "end_reserved": end.reserved_label,
        "start_label": start.label,
        "end_label": end.label,
        "family": start.family,
        "route_ids": list(row.route_ids),
        "route_ids_truncated": row.route_ids_truncated,
        "route_count": row.route_count,
        "lineage_id": row.lineage_id,
        "member_bucket_ids": list(row.member_bucket_ids),
    }


@functools.lru_cache(maxsize=16_384)
def _row_json(row: RowMeta) -> str:
    """A row's metadata as JSON text. Rows are values and the same ones come back request
    after request: cached, the binary header of a 1024-row matrix costs a join, not ~30 ms
    of previews, base64 and encoding."""
    return json.dumps(row_metadata(row), separators=(",", ":"))


def _header_json(header: dict[str, Any], rows: Sequence[RowMeta]) -> bytes:
    """`header` plus "rows", as compact JSON."""
    rest = json.dumps(header, separators=(",", ":"))  # never empty: "series" and more
    return ('{"rows":[' + ",".join(map(_row_json, rows)) + "]," + rest[1:]).encode("utf-8")


def _header(
    m: MergedMatrix, nodes: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Everything but the rows and the cells."""
    return {
        "series": SERIES_NAMES.get(m.series, str(m.series)),
        "step_ms": m.step_ms,
        "warnings": list(m.warnings),
        "nodes": [dict(n) for n in nodes],
        **(extra or {}),
    }


def _unknown(m: MergedMatrix) -> NDArray[np.bool_]:
    return m.unknown if m.unknown is not None else np.zeros(m.shape, dtype=np.bool_)


def _set_columns(flags: NDArray[np.bool_]) -> list[list[int]]:
    rows, cols = np.nonzero(flags)
    out: list[list[int]] = [[] for _ in range(flags.shape[0])]
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        out[r].append(c)
    return out


def matrix_to_json(
    m: MergedMatrix,
    *,
    nodes: Sequence[Mapping[str, Any]] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON form (see the module docstring); values are exact integers. `extra`:
    more top-level fields (the API's collector status)."""
    doc = _header(m, nodes, extra)
    doc["rows"] = [row_metadata(row) for row in m.rows]
    soft, conflict, degraded, unknown = (
        _set_columns(f) for f in (m.soft, m.conflict, m.degraded, _unknown(m))
    )
    for i, (row, values) in enumerate(zip(doc["rows"], m.values.tolist(), strict=True)):
        row["values"] = values
        row["soft"] = soft[i]
        row["conflict"] = conflict[i]
        row["degraded"] = degraded[i]
        row["unknown"] = unknown[i]
    doc["column_unix_ms"] = m.column_unix_ms.tolist()
    return doc


def cell_flags(m: MergedMatrix) -> NDArray[np.uint8]:
    """Per-cell flag bits: soft=1, conflict=2, degraded=4, unknown=8."""
    flags = m.soft.astype(np.uint8)
    flags |= m.conflict.astype(np.uint8) << 1
    flags |= m.degraded.astype(np.uint8) << 2
    if m.unknown is not None:
        flags |= m.unknown.astype(np.uint8) << 3
    return flags


def matrix_to_binary(
    m: MergedMatrix,
    *,
    nodes: Sequence[Mapping[str, Any]] = (),
    values_dtype: ValuesDtype = "auto",
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """The binary form (see the module docstring)."""
    rows, cols = m.shape
    if values_dtype == "auto":
        values_dtype = narrowest_dtype(int(m.values.max(initial=0)))
    counts = {
        name: int(np.count_nonzero(marks))
        for name, marks in (
            ("soft", m.soft),
            ("conflict", m.conflict),
            ("degraded", m.degraded),
        )
    }
    counts["unknown"] = 0 if m.unknown is None else int(np.count_nonzero(m.unknown))
    header = _header(m, nodes, extra)
    header.update(
        n_rows=rows,
        n_cols=cols,
        values_dtype=values_dtype,
        flag_bits={
            "soft": FLAG_SOFT,
            "conflict": FLAG_CONFLICT,
            "degraded": FLAG_DEGRADED,
            "unknown": FLAG_UNKNOWN,
        },
        flag_counts=counts,
    )
    text = _header_json(header, m.rows)
    pad = -(_PREAMBLE.size + len(text)) % 8
    values = m.values.astype(_WIRE_DTYPES[values_dtype])
    return b"".join(
        (
            _PREAMBLE.pack(MAGIC, VERSION, 0, len(text)),
            text,
            b"\0" * pad,
            m.column_unix_ms.astype("<i8").tobytes(),
            values.tobytes(),
            cell_flags(m).tobytes() if any(counts.values()) else b"",
        )
    )


@dataclass(frozen=True, eq=False)
class DecodedMatrix:
    header: dict[str, Any]
    column_unix_ms: NDArray[np.int64]
    values: NDArray[np.uint64] | NDArray[np.float64]
    flags: NDArray[np.uint8]


def decode_binary(data: bytes) -> DecodedMatrix:
    """Read `matrix_to_binary` output back (tests and tools); ValueError if bad."""
    if len(data) < _PREAMBLE.size:
        raise ValueError("too short for a KeyViz matrix")
    magic, version, _, length = _PREAMBLE.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise ValueError(f"not a version {VERSION} KeyViz matrix")
    header: dict[str, Any] = json.loads(data[_PREAMBLE.size : _PREAMBLE.size + length])
    rows, cols = int(header["n_rows"]), int(header["n_cols"])
    at = _PREAMBLE.size + length
    at += -at % 8
    columns = np.frombuffer(data, dtype="<i8", count=cols, offset=at).astype(np.int64)
    at += 8 * cols
    dtype = np.dtype(_WIRE_DTYPES[header["values_dtype"]])
    raw = np.frombuffer(data, dtype=dtype, count=rows * cols, offset=at).reshape(rows, cols)
    at += dtype.itemsize * rows * cols
    if any(header["flag_counts"].values()):
        flags = np.frombuffer(data, dtype=np.uint8, count=rows * cols, offset=at)
        at += rows * cols
    else:
        flags = np.zeros(rows * cols, dtype=np.uint8)
    if at != len(data):
        raise ValueError("trailing or missing bytes after the cells")
    values: NDArray[np.uint64] | NDArray[np.float64] = (
        raw.astype(np.float64) if dtype.kind == "f" else raw.astype(np.uint64)
    )
    return DecodedMatrix(
        header=header, column_unix_ms=columns, values=values, flags=flags.reshape(rows, cols).copy()
    )


def bucket_to_json(
    detail: BucketDetail, *, nodes: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """One row at full column resolution, every node's contribution per cell, and the
    per-adapter figures of nodes that implement GetRouteDetail."""
    full = matrix_to_json(
        detail.matrix, nodes=nodes, extra={"tier": detail.tier, "per_node": detail.per_node}
    )
    row = next(r for r in full.pop("rows") if r["bucket_id"] == detail.bucket_id)
    full["bucket"] = row
    full["contributions"] = [asdict(c) for c in detail.contributions]
    full["per_adapter"] = {
        node: [
            {
                "adapter": a.adapter,
                "operation": a.operation,
                "requests": a.requests,
                "in_flight": a.in_flight,
                "bytes_in": a.bytes_in,
                "bytes_out": a.bytes_out,
                "p50_ns": a.p50_ns,
                "p95_ns": a.p95_ns,
                "p99_ns": a.p99_ns,
            }
            for a in summaries
        ]
        for node, summaries in detail.per_adapter.items()
    }
    return full
