"""The live stream, viewer side: what a viewer gets when it subscribes, and row metadata.

DESIGN.md "Live heatmap". Columns are made by the one collector of the cluster
(collector.py) and reach every portal process through the channel layer group
`keyviz.<series>`; the consumer (consumers.py) forwards them. What a viewer
needs before the next column comes from the database, so the first viewer of
a series on ANY process gets it (not just viewers of the collector's process):

- `step_ms` and the per-node status from the collector's CollectorState;
- the last `REPLAY_COLUMNS` final columns from the store (the matrix API's
  newest column may have been incomplete when the viewer's page loaded).

Row metadata goes with a column the first time the collector publishes a row
(`new_rows`); each process remembers what it forwarded (`remember_rows`) so a
viewer who subscribes later still gets a row's metadata with its first cell.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from asgiref.sync import sync_to_async

from keyviz.lease import COLLECTOR
from keyviz.matrix import MergedMatrix, RowMeta
from keyviz.messages import RowCatalog, column_event, summary_of, wall_ms
from keyviz.params import SERIES

log = logging.getLogger(__name__)

REPLAY_COLUMNS = 2

# Row metadata forwarded by this process, per series.
_rows: dict[str, RowCatalog] = {}


@dataclass
class Subscribed:
    """What a new viewer of a series gets first."""

    step_ms: int | None = None
    nodes: dict[str, Any] | None = None
    collector: dict[str, Any] | None = None
    replay: list[dict[str, Any]] = field(default_factory=list)


def remember_rows(event: Mapping[str, Any]) -> None:
    """Metadata a forwarded column announced, for viewers who subscribe later."""
    docs = event.get("new_rows") or ()
    if docs:
        _rows.setdefault(str(event.get("series")), RowCatalog()).learn(docs)


def row_metadata(series: str, bucket_id: str) -> dict[str, Any] | None:
    catalog = _rows.get(series)
    return None if catalog is None else catalog.meta.get(bucket_id)


def matrix_cells(m: MergedMatrix, j: int) -> list[tuple[RowMeta, int, int]]:
    """(row, value, flag bits) of column j of a stored matrix: rows with a value or a flag."""
    from keyviz.columns import FLAG_CONFLICT, FLAG_SOFT, FLAG_UNKNOWN

    flags = m.soft[:, j].astype(np.uint8) * FLAG_SOFT
    flags |= m.conflict[:, j].astype(np.uint8) * FLAG_CONFLICT
    unknown = getattr(m, "unknown", None)
    if unknown is not None:
        flags |= unknown[:, j].astype(np.uint8) * FLAG_UNKNOWN
    values = m.values[:, j]
    keep = np.flatnonzero((values > 0) | (flags > 0))
    return [
        (m.rows[i], int(v), int(f))
        for i, v, f in zip(keep.tolist(), values[keep].tolist(), flags[keep].tolist(), strict=True)
    ]


def _load(series: str) -> tuple[Mapping[str, Any], list[tuple[int, int, Any]]]:
    """(collector state, [(column ms, index, matrix)] of the replay columns), sync."""
    from keyviz import store

    state = store.load_state(COLLECTOR) or {}
    step = state.get("step_ms")
    last = dict(state.get("last_final_ms") or {}).get(series)
    if not step or last is None:
        return state, []
    stored = store.read_matrix(
        SERIES[series], int(last) - (REPLAY_COLUMNS - 1) * int(step), int(last) + 1, tier=0
    )
    m = stored.matrix
    return state, [(int(t), j, m) for j, t in enumerate(m.column_unix_ms.tolist())]


async def subscribed(series: str) -> Subscribed:
    """step, node status and replay for a new viewer of `series`, from the database.
    Nothing (all None, no replay) before the first collector ran, or when the store or
    the state cannot be read: the viewer still subscribes and live columns still come."""
    try:
        state, columns = await sync_to_async(_load, thread_sensitive=False)(series)
        return _subscribed(series, state, columns)
    except Exception as exc:
        log.warning("live stream: cannot read the collector's state (%s)", exc)
        return Subscribed()


def _node_status_shape(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("node"), str)
        and isinstance(entry.get("address"), str)
        and isinstance(entry.get("ok"), bool)
    )


def _subscribed(
    series: str, state: Mapping[str, Any], columns: list[tuple[int, int, Any]]
) -> Subscribed:
    step = state.get("step_ms")
    if not isinstance(step, int) or step <= 0:
        return Subscribed()
    status = [s for s in state.get("status") or [] if _node_status_shape(s)]
    nodes = summary_of(status) if status else None
    beat = state.get("heartbeat_ms")
    collector = (
        {
            "holder": state.get("holder"),
            "heartbeat_ms": beat,
            "age_ms": wall_ms() - beat,
            "last_error": state.get("last_error"),
        }
        if isinstance(beat, int)
        else None
    )
    replay = []
    catalog = RowCatalog()  # a fresh one: every replayed row carries its metadata
    for at, j, m in columns:
        event = column_event(
            series=series,
            step_ms=step,
            column_unix_ms=at,
            cells=matrix_cells(m, j),
            catalog=catalog,
            nodes=nodes or {},
            emitted_unix_ms=wall_ms(),
        )
        remember_rows(event)
        replay.append(event)
    return Subscribed(step, nodes, collector, replay)


__all__ = [
    "REPLAY_COLUMNS",
    "Subscribed",
    "matrix_cells",
    "remember_rows",
    "row_metadata",
    "subscribed",
]
