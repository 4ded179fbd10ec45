"""The live stream's messages: what the collector publishes and what a viewer receives.

README "Live stream protocol". The collector (collector.py) builds one channel
layer message per final column (`column_event`, type `keyviz.column`) or per
amended column (type `keyviz.amend`), with the client message encoded once
(JSON text and binary frame); each consumer (consumers.py) then adds the
metadata of rows its viewer has not been sent yet (`render_column`).

Wire format of one column (an amendment is the same with `"type": "amend"` and
replaces the column of the same `column_unix_ms`)::

    {"type": "column", "series": "writes", "column_unix_ms": 1700000060000,
     "step_ms": 60000, "emitted_unix_ms": ..., "nodes": {...},
     "rows": [{"bucket_id": "route:7", "value": 12, "flags": 2}, ...]}
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from cluster.fanout import NodeStatus
from keyviz.columns import FLAG_CONFLICT, FLAG_DEGRADED, FLAG_SOFT, FLAG_UNKNOWN
from keyviz.matrix import RowMeta
from keyviz.serialize import row_metadata

PROTOCOL = 1
MAX_CATALOG_ROWS = 100_000
FLAG_BITS = {
    "soft": FLAG_SOFT,
    "conflict": FLAG_CONFLICT,
    "degraded": FLAG_DEGRADED,
    "unknown": FLAG_UNKNOWN,
}
_FRAME = struct.Struct("<4sHHI")
FRAME_MAGIC = b"EKVC"
ColumnKind = Literal["column", "amend"]


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def group_name(series: str) -> str:
    """The channel layer group of a series (`keyviz.writes`)."""
    return f"keyviz.{series}"


def nodes_summary(
    total: int,
    failed: Sequence[NodeStatus],
    late: Sequence[str] = (),
    streaming: Sequence[str] = (),
) -> dict[str, Any]:
    return {
        "responded": total - len(failed),
        "total": total,
        "failed": [
            {"node": s.node, "address": s.address, "error": s.error, "code": s.code} for s in failed
        ],
        "late": list(late),
        "streaming": list(streaming),
    }


def summary_of(status: Sequence[Mapping[str, Any]], late: Sequence[str] = ()) -> dict[str, Any]:
    """`nodes` of a column or `subscribed` message from the collector's per-node status."""
    failed = [s for s in status if not s.get("ok", True)]
    doc = nodes_summary(len(status), [], late, [s["node"] for s in status if s.get("streaming")])
    # The failed nodes in the one per-node status shape (intake.NodeIntake.status).
    doc["responded"] = len(status) - len(failed)
    doc["failed"] = [dict(s) for s in failed]
    doc["nodes"] = [dict(s) for s in status]
    return doc


@dataclass
class RowCatalog:
    """Row metadata announced so far (by the collector, or seen by this process's viewers)."""

    meta: dict[str, dict[str, Any]] = field(default_factory=dict)

    def learn(self, docs: Sequence[Mapping[str, Any]]) -> None:
        """Metadata announced elsewhere (an event's `new_rows`), for later lookups."""
        for doc in docs:
            if len(self.meta) >= MAX_CATALOG_ROWS:
                self.meta.clear()
            self.meta[str(doc["bucket_id"])] = dict(doc)

    def announce(self, row: RowMeta) -> dict[str, Any] | None:
        """Metadata to send with this row: the first time only (None afterwards)."""
        if row.bucket_id in self.meta:
            return None
        if len(self.meta) >= MAX_CATALOG_ROWS:
            # Years of splits: start over; rows are announced again when next seen.
            self.meta.clear()
        doc = row_metadata(row)
        self.meta[row.bucket_id] = doc
        return doc


def column_event(
    *,
    series: str,
    step_ms: int,
    column_unix_ms: int,
    cells: Sequence[tuple[RowMeta, int, int]],
    catalog: RowCatalog,
    nodes: Mapping[str, Any],
    emitted_unix_ms: int,
    kind: ColumnKind = "column",
) -> dict[str, Any]:
    """The channel layer message of one final (`column`) or amended (`amend`) column,
    with the client message encoded once.

    `json` is the client's JSON message and `bin_header` + `bin_arrays` its binary
    frame, both without `new_rows`; `new_rows` is the metadata of rows the collector
    announces for the first time, `bucket_ids` the rows in the column (the consumer
    adds metadata for rows its viewer has not had).
    """
    new_rows = [doc for row, _, _ in cells if (doc := catalog.announce(row)) is not None]
    bucket_ids = [row.bucket_id for row, _, _ in cells]
    rows = [
        {"bucket_id": row.bucket_id, "value": v, **({"flags": f} if f else {})}
        for row, v, f in cells
    ]
    head = {
        "type": kind,
        "series": series,
        "column_unix_ms": column_unix_ms,
        "step_ms": step_ms,
        "emitted_unix_ms": emitted_unix_ms,
        "nodes": dict(nodes),
    }
    text = json.dumps({**head, "rows": rows}, separators=(",", ":"))
    header = json.dumps(
        {**head, "n_rows": len(cells), "bucket_ids": bucket_ids, "flag_bits": FLAG_BITS},
        separators=(",", ":"),
    )
    arrays = b"".join(
        (
            np.array([v for _, v, _ in cells], dtype="<u8").tobytes(),
            np.array([f for _, _, f in cells], dtype=np.uint8).tobytes(),
        )
    )
    return {
        "type": f"keyviz.{kind}",
        "series": series,
        "column_unix_ms": column_unix_ms,
        "bucket_ids": bucket_ids,
        "new_rows": new_rows,
        "json": text,
        "bin_header": header,
        "bin_arrays": arrays,
    }


def _with_new_rows(encoded: str, new_rows: Sequence[Mapping[str, Any]]) -> str:
    """Add `"new_rows": [...]` to an encoded JSON object."""
    if not new_rows:
        return encoded
    return encoded[:-1] + ',"new_rows":' + json.dumps(new_rows, separators=(",", ":")) + "}"


def pack_frame(header: str, arrays: bytes) -> bytes:
    """A binary column frame: magic `EKVC`, version, header length, JSON header, zero
    padding to a multiple of 8, then uint64 values[n_rows] and uint8 flags[n_rows]."""
    head = header.encode("utf-8")
    pad = -(_FRAME.size + len(head)) % 8
    return b"".join((_FRAME.pack(FRAME_MAGIC, PROTOCOL, 0, len(head)), head, b"\0" * pad, arrays))


def unpack_frame(frame: bytes) -> tuple[dict[str, Any], list[int], list[int]]:
    """(header, values, flags) of a binary column frame (tests and tools)."""
    magic, version, _, length = _FRAME.unpack_from(frame)
    if magic != FRAME_MAGIC or version != PROTOCOL:
        raise ValueError("not a KeyViz column frame")
    header: dict[str, Any] = json.loads(frame[_FRAME.size : _FRAME.size + length])
    at = _FRAME.size + length
    at += -at % 8
    n = int(header["n_rows"])
    values = np.frombuffer(frame, dtype="<u8", count=n, offset=at).tolist()
    flags = np.frombuffer(frame, dtype=np.uint8, count=n, offset=at + 8 * n).tolist()
    return header, values, flags


def render_column(
    event: Mapping[str, Any],
    fmt: Literal["json", "bin"],
    sent: set[str],
    lookup: Callable[[str], Mapping[str, Any] | None],
) -> str | bytes:
    """One viewer's copy of a column: metadata for every row it has not been sent yet.

    `sent` (the bucket ids this viewer has metadata for) is updated. Metadata
    comes from the event's `new_rows`, else from `lookup`; a row whose metadata
    is nowhere to be found goes out without it (the page then refetches).
    """
    fresh = {doc["bucket_id"]: doc for doc in event.get("new_rows", ())}
    new_rows: list[Mapping[str, Any]] = []
    for bucket_id in event["bucket_ids"]:
        if bucket_id in sent:
            continue
        doc = fresh.get(bucket_id) or lookup(bucket_id)
        if doc is not None:
            new_rows.append(doc)
            sent.add(bucket_id)
    if fmt == "bin":
        return pack_frame(_with_new_rows(event["bin_header"], new_rows), event["bin_arrays"])
    return _with_new_rows(event["json"], new_rows)


__all__ = [
    "FLAG_BITS",
    "PROTOCOL",
    "RowCatalog",
    "column_event",
    "group_name",
    "nodes_summary",
    "pack_frame",
    "render_column",
    "summary_of",
    "unpack_frame",
    "wall_ms",
]
