"""The KeyViz history in the portal database: save columns, read matrices, collector state.

Plain synchronous functions over the Django ORM; async callers wrap them in
sync_to_async / asyncio.to_thread. Every write runs in one transaction and a
failing one raises StoreError with the reason ("the database disk is full ..."),
never leaving half a column behind. Compaction and retention are in tiers.py.

Cells are sparse per column (keyviz/cellblob.py) and name rows by Bucket pk;
the pk of each bucket_id is cached in-process (bounded) so a save does not
query per row. Cache entries are added only once the transaction that read or
wrote them has committed, so a rolled-back save never leaves a pk behind.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import partial
from typing import Any, Generic, TypeVar

import numpy as np
from django.db import DatabaseError, transaction
from django.db.models import Max, Value
from django.db.models.functions import Greatest, Least, Length
from numpy.typing import NDArray

from elastickv_admin.lib.config import portal_config
from keyviz import cellblob
from keyviz.columns import FLAG_CONFLICT, FLAG_SOFT, FLAG_UNKNOWN, U8, MergedColumn, NodeColumn
from keyviz.matrix import I64, U64, Bools, MergedMatrix, RowMeta
from keyviz.models import (
    TIER_1H,
    TIER_15M,
    TIER_FINE,
    Bucket,
    CollectorState,
    StoredColumn,
    StoredNodeColumn,
)

log = logging.getLogger(__name__)

# Width of a column per tier; tier 0 is the nodes' step, stored with each column.
TIER_STEP_MS = {TIER_15M: 15 * 60_000, TIER_1H: 60 * 60_000}
DEFAULT_STEP_MS = 60_000  # the nodes' default, when tier 0 holds no column to say
# last_seen_ms is written when it moves by more than this (not on every column);
# prune allows for the lag.
LAST_SEEN_SLACK_MS = 15 * 60_000
BUCKET_CACHE_LIMIT = 65_536
# Decoded merged columns kept in memory between reads (13 bytes a cell: about 52 MB).
DECODED_CACHE_CELLS = 4_000_000
_CHUNK = 900  # ids per IN (...) query, under SQLite's oldest parameter limit


class StoreError(Exception):
    """The store could not do what was asked; `reason` is for the page and the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Substrings of SQLite / PostgreSQL errors -> what an operator should read.
_DB_REASONS = (
    ("database or disk is full", "the database disk is full"),
    ("no space left on device", "the database disk is full"),
    ("disk quota exceeded", "the database disk is full"),
    ("disk i/o error", "the database disk failed (I/O error)"),
    ("readonly database", "the database is read-only"),
    ("read-only", "the database is read-only"),
    ("database is locked", "the database is locked by another writer"),
    ("no such table", "the KeyViz tables are missing (run migrate)"),
    ("does not exist", "the KeyViz tables are missing (run migrate)"),
)


def db_reason(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    low = text.lower()
    for needle, reason in _DB_REASONS:
        if needle in low:
            return f"{reason} ({text})"
    return f"database error: {text}"


@contextmanager
def writing(what: str) -> Iterator[None]:
    """One transaction; any database failure becomes StoreError("<what>: <reason>")."""
    try:
        with transaction.atomic():
            yield
    except DatabaseError as exc:
        raise StoreError(f"{what}: {db_reason(exc)}") from exc
    except cellblob.CellBlobError as exc:
        raise StoreError(f"{what}: {exc}") from exc


@contextmanager
def reading(what: str) -> Iterator[None]:
    try:
        yield
    except DatabaseError as exc:
        raise StoreError(f"{what}: {db_reason(exc)}") from exc


def decode_cells(
    fields: tuple[str, ...], blob: bytes | memoryview, where: str
) -> tuple[NDArray[np.uint32], dict[str, cellblob.UArray]]:
    try:
        return cellblob.decode(fields, blob)
    except cellblob.CellBlobError as exc:
        raise StoreError(f"stored {where} is corrupt: {exc}") from None


def decode_cells_many(
    fields: tuple[str, ...],
    blobs: Sequence[bytes | memoryview],
    where: Callable[[int], str],
) -> tuple[NDArray[np.int64], NDArray[np.uint32], dict[str, cellblob.UArray]]:
    """cellblob.decode_many; a bad blob raises StoreError naming its row (`where(index)`)."""
    try:
        return cellblob.decode_many(fields, blobs)
    except cellblob.CellBlobError as exc:
        raise StoreError(f"stored {where(exc.index)} is corrupt: {exc}") from None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------- buckets


@dataclass
class _Known:
    """A Bucket row as this process last saw it committed."""

    pk: int
    meta: RowMeta
    meta_node: str  # "" = metadata from a merged column (ranks after any node)
    group: int
    first_seen_ms: int
    last_seen_ms: int
    divergent: bool


K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    """A bounded map, least recently used evicted first; safe across threads
    (the collector calls the store from a thread pool)."""

    def __init__(self, limit: int = BUCKET_CACHE_LIMIT) -> None:
        self.limit = limit
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, items: Iterable[tuple[K, V]]) -> None:
        with self._lock:
            for key, value in items:
                self._items[key] = value
                self._items.move_to_end(key)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)

    def discard(self, keys: Iterable[K]) -> None:
        with self._lock:
            for key in keys:
                self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


# Writers' view: bucket_id -> the committed Bucket row.
_cache: _Lru[str, _Known] = _Lru()
# Readers' view of bucket metadata by pk: another process (the collector) may change a
# label or route list, so entries are re-read after META_TTL_S; pks are never reused.
META_TTL_S = 60.0
_meta_by_pk: _Lru[int, tuple[RowMeta, str, float]] = _Lru()


def clear_bucket_cache() -> None:
    """Forget what this process cached of the store (buckets, decoded columns)."""
    _cache.clear()
    _meta_by_pk.clear()
    _decoded.clear()


def _rank(node: str) -> tuple[int, str]:
    """Metadata priority: nodes in id order, then merged columns ("")."""
    return (0, node) if node else (1, "")


_BUCKET_FIELDS = (
    "pk",
    "bucket_id",
    "start",
    "end",
    "label",
    "aggregate",
    "route_ids",
    "route_ids_truncated",
    "route_count",
    "lineage_id",
    "raft_group_id",
    "meta_node",
    "divergence",
    "first_seen_ms",
    "last_seen_ms",
)


def _row_from_db(values: Sequence[Any], where: str) -> _Known:
    (
        pk,
        bid,
        start,
        end,
        label,
        agg,
        routes,
        truncated,
        count,
        lineage,
        group,
        node,
        div,
        first,
        last,
    ) = values
    if not isinstance(routes, list) or not all(isinstance(r, int) for r in routes):
        raise StoreError(f"stored bucket {bid} ({where}) has malformed route_ids")
    meta = RowMeta(
        bucket_id=bid,
        start=bytes(start),
        end=bytes(end),
        label=label,
        aggregate=agg,
        route_ids=tuple(routes),
        route_ids_truncated=truncated,
        route_count=count,
        lineage_id=lineage,
    )
    return _Known(pk, meta, node, int(group), first, last, bool(div))


def _load_buckets(
    *, ids: Sequence[str] = (), pks: Sequence[int] = ()
) -> tuple[list[_Known], dict[int, str]]:
    """Bucket rows by bucket_id or pk (chunked); also {pk: divergence text} where set."""
    out: list[_Known] = []
    divergence: dict[int, str] = {}
    keys: Sequence[Any] = ids if ids else pks
    column = "bucket_id__in" if ids else "pk__in"
    for i in range(0, len(keys), _CHUNK):
        chunk = keys[i : i + _CHUNK]
        for values in Bucket.objects.filter(**{column: chunk}).values_list(*_BUCKET_FIELDS):
            out.append(_row_from_db(values, "bucket table"))
            if values[12]:
                divergence[values[0]] = values[12]
    return out, divergence


@dataclass
class _Seen:
    """What one save saw of a bucket: the winning metadata and the time span."""

    meta: RowMeta
    node: str
    group: int
    group_ms: int
    first_ms: int
    last_ms: int
    diverging: list[str] = field(default_factory=list)


def _observe(
    seen: dict[str, _Seen],
    node: str,
    t_ms: int,
    rows: Sequence[RowMeta],
    groups: Sequence[int] | None,
) -> None:
    """Fold one column's rows into `seen` (first node in id order wins the metadata)."""
    for i, row in enumerate(rows):
        group = groups[i] if groups is not None else 0
        s = seen.get(row.bucket_id)
        if s is None:
            seen[row.bucket_id] = _Seen(row, node, group, t_ms if group else -1, t_ms, t_ms)
            continue
        s.first_ms = min(s.first_ms, t_ms)
        s.last_ms = max(s.last_ms, t_ms)
        if group and t_ms >= s.group_ms:
            s.group, s.group_ms = group, t_ms
        if node == s.node:
            if t_ms >= s.last_ms:
                s.meta = row  # the same node's newer metadata
            continue
        if row is s.meta:  # the very same metadata: only the better-ranked source counts
            if _rank(node) < _rank(s.node):
                s.node = node
            continue
        differs = (row.start, row.end) != (s.meta.start, s.meta.end)
        if _rank(node) < _rank(s.node):
            if differs and s.node:
                s.diverging.append(s.node)
            s.meta, s.node = row, node
        elif differs and node and s.node:
            s.diverging.append(node)


def _divergence_text(bucket_id: str, winner: str, others: Sequence[str]) -> str:
    who = ", ".join([winner, *sorted(set(others) - {winner})])
    return f"catalog divergence: {bucket_id} has different start/end on {who}; showing {winner}'s"


def _bucket_pks(seen: dict[str, _Seen]) -> dict[str, int]:
    """pk per bucket_id, creating and updating Bucket rows (inside the caller's transaction)."""
    pks: dict[str, int] = {}
    known: dict[str, _Known] = {}
    misses: list[str] = []
    for bid in seen:
        k = _cache.get(bid)
        if k is None:
            misses.append(bid)
        else:
            known[bid] = k
    if misses:
        loaded, _ = _load_buckets(ids=misses)
        known.update((k.meta.bucket_id, k) for k in loaded)
    new: list[Bucket] = []
    meta_updates: list[_Known] = []
    divergent: dict[str, str] = {}
    last_updates: dict[int, list[int]] = {}
    first_updates: dict[int, list[int]] = {}
    for bid, s in seen.items():
        k = known.get(bid)
        if k is None:
            new.append(_new_bucket(s))
            if s.diverging:
                divergent[bid] = _divergence_text(bid, s.node, s.diverging)
            continue
        pks[bid] = k.pk
        if (
            not s.diverging
            and (not s.group or s.group == k.group)
            and k.first_seen_ms <= s.first_ms
            and s.last_ms <= k.last_seen_ms + LAST_SEEN_SLACK_MS
            and ((s.node == k.meta_node and s.meta == k.meta) or (not s.node and k.meta_node))
        ):
            continue  # the usual case: nothing about this bucket to write
        others = list(s.diverging)
        fresh = replace(k)
        if _rank(s.node) <= _rank(k.meta_node):
            if k.meta_node and s.node and k.meta_node != s.node and _span(k.meta) != _span(s.meta):
                others.append(k.meta_node)
            if s.meta != k.meta or s.node != k.meta_node:
                fresh.meta, fresh.meta_node = s.meta, s.node
        elif k.meta_node and s.node and _span(k.meta) != _span(s.meta):
            others.append(s.node)
        if s.group and s.group != k.group:
            fresh.group = s.group
        if fresh.meta is not k.meta or fresh.group != k.group:
            meta_updates.append(fresh)
        if s.last_ms > k.last_seen_ms + LAST_SEEN_SLACK_MS:
            last_updates.setdefault(s.last_ms, []).append(k.pk)
            fresh.last_seen_ms = s.last_ms
        if s.first_ms < k.first_seen_ms:
            first_updates.setdefault(s.first_ms, []).append(k.pk)
            fresh.first_seen_ms = s.first_ms
        if others and not k.divergent:
            divergent[bid] = _divergence_text(bid, fresh.meta_node, others)
            fresh.divergent = True
        known[bid] = fresh
    if new:
        Bucket.objects.bulk_create(new, ignore_conflicts=True, batch_size=500)
        for k in _load_buckets(ids=[b.bucket_id for b in new])[0]:
            known[k.meta.bucket_id] = k
            pks[k.meta.bucket_id] = k.pk
    for k in meta_updates:
        Bucket.objects.filter(pk=k.pk).update(
            **_meta_fields(k.meta), meta_node=k.meta_node, raft_group_id=Decimal(k.group)
        )
    for t, ids in last_updates.items():
        for i in range(0, len(ids), _CHUNK):
            Bucket.objects.filter(pk__in=ids[i : i + _CHUNK]).update(
                last_seen_ms=Greatest("last_seen_ms", Value(t))
            )
    for t, ids in first_updates.items():
        for i in range(0, len(ids), _CHUNK):
            Bucket.objects.filter(pk__in=ids[i : i + _CHUNK]).update(
                first_seen_ms=Least("first_seen_ms", Value(t))
            )
    for bid, text in divergent.items():
        Bucket.objects.filter(bucket_id=bid, divergence="").update(divergence=text)
        log.warning("%s", text)
        if bid in known:
            known[bid].divergent = True
    entries = [known[bid] for bid in seen if bid in known]
    changed = [k.pk for k in meta_updates] + [known[b].pk for b in divergent if b in known]
    transaction.on_commit(lambda: _committed(entries, changed))
    missing = [bid for bid in seen if bid not in pks]
    if missing:
        raise StoreError(f"could not create bucket rows for {', '.join(missing[:5])}")
    return pks


def _committed(entries: Sequence[_Known], changed: Sequence[int]) -> None:
    _cache.put((k.meta.bucket_id, k) for k in entries)
    _meta_by_pk.discard(changed)  # this process's readers see the change at once


def _span(meta: RowMeta) -> tuple[bytes, bytes]:
    return (meta.start, meta.end)


def _meta_fields(meta: RowMeta) -> dict[str, Any]:
    """Bucket columns of a row; a node's value the table cannot hold is a StoreError."""
    if len(meta.bucket_id) > 255 or len(meta.lineage_id) > 255:
        raise StoreError(
            f"bucket {meta.bucket_id[:64]!r}: bucket_id and lineage_id may have at most "
            "255 characters"
        )
    if not 0 <= meta.route_count < 2**63:
        raise StoreError(f"bucket {meta.bucket_id!r}: route_count {meta.route_count} is too large")
    return {
        "start": meta.start,
        "end": meta.end,
        "label": meta.label,
        "aggregate": meta.aggregate,
        "route_ids": list(meta.route_ids),
        "route_ids_truncated": meta.route_ids_truncated,
        "route_count": meta.route_count,
        "lineage_id": meta.lineage_id,
    }


def _new_bucket(s: _Seen) -> Bucket:
    return Bucket(
        bucket_id=s.meta.bucket_id,
        **_meta_fields(s.meta),
        raft_group_id=Decimal(s.group),
        meta_node=s.node,
        divergence="",
        first_seen_ms=s.first_ms,
        last_seen_ms=s.last_ms,
    )


def _pk_array(rows: Sequence[RowMeta], pks: Mapping[str, int]) -> NDArray[np.int64]:
    return np.fromiter((pks[r.bucket_id] for r in rows), dtype=np.int64, count=len(rows))


# ---------------------------------------------------------------- node columns


def _check_node_column(c: NodeColumn) -> None:
    n = len(c.rows)
    for name, arr in (
        ("values", c.values),
        ("soft", c.soft),
        ("raft_group_ids", c.raft_group_ids),
        ("leader_terms", c.leader_terms),
    ):
        if arr.shape != (n,):
            raise StoreError(
                f"node column of {c.node} at {c.column_unix_ms}: {name} has shape "
                f"{arr.shape}, expected ({n},)"
            )


def save_node_columns(series: int, slot_ms_and_columns: Sequence[tuple[int, NodeColumn]]) -> None:
    """Store raw node columns (upsert by series, node, node time), each at its merged slot."""
    if not slot_ms_and_columns:
        return
    kept: list[tuple[int, NodeColumn, NDArray[np.bool_]]] = []
    seen: dict[str, _Seen] = {}
    for slot_ms, c in sorted(slot_ms_and_columns, key=lambda p: (p[1].node, p[1].column_unix_ms)):
        _check_node_column(c)
        keep = (c.values != 0) | c.soft
        rows = [r for r, k in zip(c.rows, keep.tolist(), strict=True) if k]
        groups = c.raft_group_ids[keep].tolist()
        _observe(seen, c.node, c.column_unix_ms, rows, groups)
        kept.append((slot_ms, c, keep))
    now = _now_ms()
    with writing("saving node columns"):
        pks = _bucket_pks(seen)
        objs = []
        for slot_ms, c, keep in kept:
            rows = [r for r, k in zip(c.rows, keep.tolist(), strict=True) if k]
            blob = cellblob.encode(
                cellblob.NODE_FIELDS,
                _pk_array(rows, pks),
                {
                    "value": c.values[keep],
                    "soft": c.soft[keep].astype(np.uint8),
                    "group": c.raft_group_ids[keep],
                    "term": c.leader_terms[keep],
                },
                min_saving=cellblob.ZLIB_MIN_SAVING_COLD,
            )
            objs.append(
                StoredNodeColumn(
                    series=series,
                    node=c.node,
                    slot_ms=slot_ms,
                    node_column_ms=c.column_unix_ms,
                    cells=blob,
                    updated_ms=now,
                )
            )
        StoredNodeColumn.objects.bulk_create(
            objs,
            update_conflicts=True,
            unique_fields=("series", "node", "node_column_ms"),
            update_fields=("slot_ms", "cells", "updated_ms"),
            batch_size=500,
        )


def _metas(pks: Sequence[int]) -> tuple[dict[int, RowMeta], dict[int, str]]:
    """RowMeta and divergence text per pk (absent: no such bucket)."""
    now = time.monotonic()
    metas: dict[int, RowMeta] = {}
    divergence: dict[int, str] = {}
    stale: list[int] = []
    for pk in pks:
        hit = _meta_by_pk.get(pk)
        if hit is None or now - hit[2] > META_TTL_S:
            stale.append(pk)
            continue
        metas[pk] = hit[0]
        if hit[1]:
            divergence[pk] = hit[1]
    if stale:
        loaded, fresh_divergence = _load_buckets(pks=stale)
        divergence.update(fresh_divergence)
        entries = [(k.pk, k.meta, fresh_divergence.get(k.pk, "")) for k in loaded]
        metas.update((pk, meta) for pk, meta, _ in entries)
        transaction.on_commit(lambda: _remember_metas(entries, now))
    return metas, divergence


def _remember_metas(entries: Sequence[tuple[int, RowMeta, str]], now: float) -> None:
    _meta_by_pk.put((pk, (meta, text, now)) for pk, meta, text in entries)


def _key_order(metas: Mapping[int, RowMeta]) -> list[int]:
    return sorted(metas, key=lambda pk: (metas[pk].start, metas[pk].bucket_id))


def node_columns_at(series: int, column_ms: int) -> list[NodeColumn]:
    """The raw node columns stored at merged column `column_ms`, by node, rows in key order."""
    with reading("reading node columns"):
        stored = list(
            StoredNodeColumn.objects.filter(series=series, slot_ms=column_ms)
            .order_by("node", "node_column_ms")
            .values_list("node", "node_column_ms", "cells")
        )
        decoded = [
            (
                node,
                t,
                *decode_cells(
                    cellblob.NODE_FIELDS,
                    blob,
                    f"node column of {node} at {t} (series {series}, slot {column_ms})",
                ),
            )
            for node, t, blob in stored
        ]
        all_pks = sorted({int(p) for _, _, pks, _ in decoded for p in pks.tolist()})
        metas, _ = _metas(all_pks)
    rank = {pk: i for i, pk in enumerate(_key_order(metas))}
    out: list[NodeColumn] = []
    for node, t, pks, arrays in decoded:
        n = int(pks.shape[0])
        idx = [i for i, p in enumerate(pks.tolist()) if p in rank]
        idx.sort(key=lambda i: rank[int(pks[i])])
        order = np.array(idx, dtype=np.intp)
        zeros = np.zeros(n, dtype=np.uint8)
        out.append(
            NodeColumn(
                node=node,
                column_unix_ms=t,
                rows=tuple(metas[int(pks[i])] for i in idx),
                values=arrays.get("value", zeros)[order].astype(np.uint64),
                soft=arrays.get("soft", zeros)[order] != 0,
                raft_group_ids=arrays.get("group", zeros)[order].copy(),
                leader_terms=arrays.get("term", zeros)[order].copy(),
            )
        )
    return out


# ---------------------------------------------------------------- merged columns


def _check_merged(c: MergedColumn) -> None:
    n = len(c.rows)
    if c.step_ms <= 0:
        raise StoreError(f"merged column at {c.column_unix_ms}: step {c.step_ms} ms")
    for name, arr in (("values", c.values), ("flags", c.flags)):
        if arr.shape != (n,):
            raise StoreError(
                f"merged column at {c.column_unix_ms}: {name} has shape {arr.shape}, "
                f"expected ({n},)"
            )


def merged_blob(pks: NDArray[np.int64], values: U64, flags: U8, *, cold: bool = False) -> bytes:
    """Cells of a merged column: only the non-zero or flagged ones (`cold`: coarse tiers)."""
    keep = (values != 0) | (flags != 0)
    return cellblob.encode(
        cellblob.MERGED_FIELDS,
        pks[keep],
        {"value": values[keep], "flags": flags[keep]},
        min_saving=cellblob.ZLIB_MIN_SAVING_COLD if cold else None,
    )


def window_end(column_ms: int, width_ms: int) -> int:
    """The coarse column (END time) a finer column at `column_ms` belongs to."""
    return -(-column_ms // width_ms) * width_ms


def save_merged(columns: Sequence[MergedColumn]) -> None:
    """Upsert tier-0 merged columns (an amendment overwrites); mark their 15 min windows dirty."""
    if not columns:
        return
    seen: dict[str, _Seen] = {}
    keeps = []
    for c in columns:
        _check_merged(c)
        keep = (c.values != 0) | (c.flags != 0)
        rows = [r for r, k in zip(c.rows, keep.tolist(), strict=True) if k]
        _observe(seen, "", c.column_unix_ms, rows, None)
        keeps.append((c, keep, rows))
    now = _now_ms()
    with writing("saving merged columns"):
        pks = _bucket_pks(seen)
        objs = [
            StoredColumn(
                tier=TIER_FINE,
                series=c.series,
                column_ms=c.column_unix_ms,
                step_ms=c.step_ms,
                cells=merged_blob(_pk_array(rows, pks), c.values[keep], c.flags[keep]),
                contributors={str(k): int(v) for k, v in sorted(c.contributors.items())},
                missing=sorted(c.missing),
                unknown_all=c.unknown_all,
                dirty=False,
                updated_ms=now,
            )
            for c, keep, rows in keeps
        ]
        upsert_columns(objs, batch_size=500)
        mark_dirty(TIER_15M, {(c.series, c.column_unix_ms) for c in columns})


def mark_dirty(tier: int, finer: set[tuple[int, int]]) -> None:
    """Mark the `tier` columns whose windows hold these (series, finer column) dirty."""
    width = TIER_STEP_MS[tier]
    by_series: dict[int, set[int]] = {}
    for series, t in finer:
        by_series.setdefault(series, set()).add(window_end(t, width))
    for series, ends in by_series.items():
        StoredColumn.objects.filter(
            tier=tier, series=series, column_ms__in=sorted(ends), dirty=False
        ).update(dirty=True)


def latest_column_ms(series: int) -> int | None:
    """Time of the newest tier-0 merged column of `series`, None when there is none."""
    with reading("reading the latest column"):
        got = StoredColumn.objects.filter(tier=TIER_FINE, series=series).aggregate(
            m=Max("column_ms")
        )["m"]
    return None if got is None else int(got)


def latest_node_column_ms(series: int, node: str) -> int | None:
    """The node's own time of its newest stored column (where a restarted collector resumes)."""
    with reading("reading the latest node column"):
        got = StoredNodeColumn.objects.filter(series=series, node=node).aggregate(
            m=Max("node_column_ms")
        )["m"]
    return None if got is None else int(got)


# ---------------------------------------------------------------- reading


def retention_ms(tier: int) -> int:
    config = portal_config()
    return {
        TIER_FINE: config.keyviz_retention_fine_ms,
        TIER_15M: config.keyviz_retention_15m_ms,
        TIER_1H: config.keyviz_retention_1h_ms,
    }[tier]


def history_window_ms() -> int:
    """The longest window the history can answer: the coarsest tier's retention."""
    return max(retention_ms(tier) for tier in (TIER_FINE, TIER_15M, TIER_1H))


def choose_tier(from_ms: int, now_ms: int | None = None) -> int:
    """The finest tier whose retention still covers `from_ms`."""
    now = _now_ms() if now_ms is None else now_ms
    for tier in (TIER_FINE, TIER_15M):
        if from_ms >= now - retention_ms(tier):
            return tier
    return TIER_1H


@dataclass(frozen=True, eq=False)
class StoredMatrix:
    """A window of the history: the matrix plus what each column was built from."""

    matrix: MergedMatrix
    tier: int
    step_ms: int
    contributors: tuple[Mapping[str, int], ...]
    missing: tuple[tuple[str, ...], ...]
    warnings: tuple[str, ...] = ()


def check_meta(
    contributors: Any, missing: Any, where: Callable[[], str]
) -> tuple[dict[str, int], tuple[str, ...]]:
    if not isinstance(contributors, dict) or not all(
        isinstance(v, int) for v in contributors.values()
    ):
        raise StoreError(f"stored {where()} is corrupt: contributors is not a node -> time map")
    if not isinstance(missing, list) or not all(isinstance(m, str) for m in missing):
        raise StoreError(f"stored {where()} is corrupt: missing is not a list of nodes")
    return contributors, tuple(missing)


def _column_rows(
    series: int, tier: int, from_ms: int, to_ms: int
) -> list[tuple[int, int, bytes | memoryview, Any, Any, bool]]:
    fields = ("column_ms", "step_ms", "cells", "contributors", "missing", "unknown_all")
    return list(
        StoredColumn.objects.filter(
            tier=tier, series=series, column_ms__gte=from_ms, column_ms__lt=to_ms
        )
        .order_by("column_ms")
        .values_list(*fields)
    )


def _column_heads(
    series: int, tier: int, from_ms: int, to_ms: int, *, contributors: bool = True
) -> list[tuple[int, int, int, int, Any, Any, bool]]:
    """(column_ms, step_ms, updated_ms, cells length, contributors, missing, unknown_all) of
    the window's columns, without their cells (the decoded-column cache has most of them)."""
    rows = StoredColumn.objects.filter(
        tier=tier, series=series, column_ms__gte=from_ms, column_ms__lt=to_ms
    ).order_by("column_ms")
    rows = rows.annotate(size=Length("cells"))
    if contributors:
        fields = ("column_ms", "step_ms", "updated_ms", "size", "contributors", "missing")
        return [(*r, u) for *r, u in rows.values_list(*fields, "unknown_all")]
    # The node -> time maps are most of a column's JSON at 100 nodes: not decoded when unused.
    return [
        (t, step, updated, size, {}, miss, unknown)
        for t, step, updated, size, miss, unknown in rows.values_list(
            "column_ms", "step_ms", "updated_ms", "size", "missing", "unknown_all"
        )
    ]


def _column_cells(
    series: int, tier: int, times: Sequence[int], from_ms: int, to_ms: int
) -> list[tuple[int, int, bytes | memoryview]]:
    """(column_ms, updated_ms, cells) of these columns: by range when they are most of the
    window (a cold cache), else by id lists."""
    rows = StoredColumn.objects.filter(tier=tier, series=series)
    fields = ("column_ms", "updated_ms", "cells")
    wanted = set(times)
    if len(times) > _CHUNK:
        window = rows.filter(column_ms__gte=from_ms, column_ms__lt=to_ms)
        return [r for r in window.values_list(*fields) if r[0] in wanted]
    return list(rows.filter(column_ms__in=list(times)).values_list(*fields))


@dataclass(frozen=True, eq=False)
class _Decoded:
    """One merged column's cells, decoded: bucket pks, values (uint64), flags or None."""

    version: tuple[int, int]  # (updated_ms, cells length): a rewrite changes it
    pks: NDArray[np.uint32]
    values: U64
    flags: U8 | None

    @property
    def size(self) -> int:
        return int(self.pks.shape[0])


class _DecodedColumns:
    """Decoded merged columns kept between reads, at most `limit` cells (least recently used
    out first). A page load reads a day of columns of which only the newest changed since the
    last load; a column is taken from here while its (updated_ms, cells length) is what the
    database says now, so an amendment or a recompaction is read again."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._map: OrderedDict[tuple[int, int, int], _Decoded] = OrderedDict()
        self._cells = 0

    def get(self, key: tuple[int, int, int], version: tuple[int, int]) -> _Decoded | None:
        with self._lock:
            found = self._map.get(key)
            if found is None or found.version != version:
                return None
            self._map.move_to_end(key)
            return found

    def put(self, key: tuple[int, int, int], decoded: _Decoded) -> None:
        with self._lock:
            old = self._map.pop(key, None)
            if old is not None:
                self._cells -= old.size
            self._map[key] = decoded
            self._cells += decoded.size
            while self._cells > self.limit and self._map:
                _, gone = self._map.popitem(last=False)
                self._cells -= gone.size

    def clear(self) -> None:
        with self._lock:
            self._map.clear()
            self._cells = 0


_decoded = _DecodedColumns(DECODED_CACHE_CELLS)


def _decoded_window(
    series: int,
    tier: int,
    heads: Sequence[tuple[int, int, int, int, Any, Any, bool]],
    from_ms: int,
    to_ms: int,
) -> list[_Decoded]:
    """The decoded cells of every column in `heads`, from the cache or decoded now."""
    out: list[_Decoded | None] = [_decoded.get((tier, series, h[0]), (h[2], h[3])) for h in heads]
    todo = [h[0] for h, d in zip(heads, out, strict=True) if d is None]
    if not todo:
        return [d for d in out if d is not None]
    with reading("reading KeyViz history"):
        fetched = _column_cells(series, tier, todo, from_ms, to_ms)
    counts, pks, arrays = decode_cells_many(
        cellblob.MERGED_FIELDS,
        [r[2] for r in fetched],
        lambda j: _where(tier, series, fetched[j][0]),
    )
    values = arrays.get("value", np.zeros(pks.shape[0], dtype=np.uint8)).astype(
        np.uint64, copy=False
    )
    flags = arrays.get("flags")
    edges = np.concatenate(([0], np.cumsum(counts))).tolist()
    new: dict[int, _Decoded] = {}
    for j, (t, updated, blob) in enumerate(fetched):
        a, b = edges[j], edges[j + 1]
        column_flags = None if flags is None else flags[a:b]
        if column_flags is not None and not column_flags.any():
            column_flags = None
        decoded = _Decoded((updated, len(blob)), pks[a:b], values[a:b], column_flags)
        _decoded.put((tier, series, t), decoded)
        new[t] = decoded
    empty = _Decoded((0, 0), np.zeros(0, np.uint32), np.zeros(0, np.uint64), None)
    # A column deleted between the two queries (pruned) reads as empty this once.
    return [d if d is not None else new.get(h[0], empty) for h, d in zip(heads, out, strict=True)]


def upsert_columns(
    objs: Sequence[StoredColumn], *, batch_size: int, with_dirty: bool = False
) -> None:
    """Insert merged columns, or overwrite the ones of the same (tier, series, column_ms)
    (an amendment, a rebuilt coarse window); `with_dirty` also overwrites the dirty mark."""
    fields = ["step_ms", "cells", "contributors", "missing", "unknown_all", "updated_ms"]
    StoredColumn.objects.bulk_create(
        objs,
        update_conflicts=True,
        unique_fields=("tier", "series", "column_ms"),
        update_fields=[*fields, "dirty"] if with_dirty else fields,
        batch_size=batch_size,
    )


def _where(tier: int, series: int, t: int) -> str:
    return f"column tier {tier} series {series} at {t}"


def read_matrix(
    series: int,
    from_ms: int,
    to_ms: int,
    *,
    tier: int | None = None,
    now_ms: int | None = None,
    contributors: bool = True,
) -> StoredMatrix:
    """The merged matrix of the stored columns whose END time is in [from_ms, to_ms).

    `contributors=False` leaves each column's contributor map empty (the matrix API shows
    only the missing nodes; decoding 100 nodes' maps per column would cost it most of its
    time).

    Rows are the buckets with a stored cell in the window, in key order; values
    uint64; soft / conflict / unknown from the cell flags, every row unknown in
    an `unknown_all` column; `degraded` all False (unknown replaces it).
    """
    if to_ms <= from_ms:
        raise ValueError(f"empty window: from {from_ms} ms is not before to {to_ms} ms")
    if tier is None:
        tier = choose_tier(from_ms, now_ms)
    elif tier not in (TIER_FINE, TIER_15M, TIER_1H):
        raise ValueError(f"tier {tier} does not exist (0, 1 or 2)")
    with reading("reading KeyViz history"):
        stored = _column_heads(series, tier, from_ms, to_ms, contributors=contributors)
    n_cols = len(stored)
    times = np.fromiter((r[0] for r in stored), dtype=np.int64, count=n_cols)
    step = TIER_STEP_MS.get(tier) or (int(stored[-1][1]) if stored else DEFAULT_STEP_MS)
    fed: list[Mapping[str, int]] = []
    missing: list[tuple[str, ...]] = []
    unknown_cols: list[int] = []
    for j, (t, _, _, _, contrib, miss, unknown_all) in enumerate(stored):
        c, m = check_meta(contrib, miss, partial(_where, tier, series, t))
        fed.append(c)
        missing.append(m)
        if unknown_all:
            unknown_cols.append(j)
    columns = _decoded_window(series, tier, stored, from_ms, to_ms)
    counts = np.fromiter((d.size for d in columns), dtype=np.int64, count=n_cols)
    all_pks = np.concatenate([d.pks for d in columns]) if columns else np.zeros(0, np.uint32)
    values_flat = np.concatenate([d.values for d in columns]) if columns else np.zeros(0, np.uint64)
    col_idx = np.repeat(np.arange(n_cols, dtype=np.intp), counts)
    flags_flat: U8 | None = None
    if any(d.flags is not None for d in columns):
        flags_flat = np.concatenate(
            [d.flags if d.flags is not None else np.zeros(d.size, np.uint8) for d in columns]
        )
    # Distinct pks without a sort of every cell: a presence table indexed by pk.
    warnings: list[str] = []
    with reading("reading bucket metadata"):
        if all_pks.shape[0]:
            present = np.zeros(int(all_pks.max()) + 1, dtype=np.bool_)
            present[all_pks] = True
            distinct = np.flatnonzero(present)
        else:
            distinct = np.zeros(0, dtype=np.intp)
        metas, divergence = _metas(distinct.tolist())
    ordered = _key_order(metas)
    if len(ordered) < distinct.shape[0]:
        warnings.append(
            f"{distinct.shape[0] - len(ordered)} stored rows have no bucket metadata "
            "(pruned); their cells are left out"
        )
    warnings.extend(divergence[pk] for pk in ordered if pk in divergence)
    n_rows = len(ordered)
    lut = np.full(int(all_pks.max()) + 1 if all_pks.shape[0] else 1, -1, dtype=np.intp)
    lut[np.array(ordered, dtype=np.intp)] = np.arange(n_rows, dtype=np.intp)
    row_idx = lut[all_pks]
    if n_rows < distinct.shape[0]:
        ok = row_idx >= 0
        row_idx, col_idx, values_flat = row_idx[ok], col_idx[ok], values_flat[ok]
        flags_flat = None if flags_flat is None else flags_flat[ok]
    flat = row_idx * n_cols + col_idx
    values = np.zeros((n_rows, n_cols), dtype=np.uint64)
    values.ravel()[flat] = values_flat
    shape = (n_rows, n_cols)
    if flags_flat is None:  # no flag anywhere: skip three passes over the matrix
        soft, conflict, unknown = (np.zeros(shape, dtype=np.bool_) for _ in range(3))
    else:
        flags = np.zeros(shape, dtype=np.uint8)
        flags.ravel()[flat] = flags_flat
        soft, conflict = (flags & FLAG_SOFT) != 0, (flags & FLAG_CONFLICT) != 0
        unknown = (flags & FLAG_UNKNOWN) != 0
    if unknown_cols:
        unknown[:, unknown_cols] = True
    matrix = MergedMatrix(
        series=series,
        step_ms=step,
        column_unix_ms=times,
        rows=tuple(metas[pk] for pk in ordered),
        values=values,
        soft=soft,
        conflict=conflict,
        degraded=np.zeros(shape, dtype=np.bool_),
        warnings=tuple(warnings),
        unknown=unknown,
    )
    return StoredMatrix(
        matrix=matrix,
        tier=tier,
        step_ms=step,
        contributors=tuple(fed),
        missing=tuple(missing),
        warnings=tuple(warnings),
    )


@dataclass(frozen=True, eq=False)
class NodeContribution:
    """One node's raw cells of one bucket, per column of the window (0 where it had none)."""

    node: str
    node_column_ms: I64
    values: U64
    soft: Bools
    raft_group_ids: U64
    leader_terms: U64


@dataclass(frozen=True, eq=False)
class BucketHistory:
    """One bucket over a window: merged cells per column and, on tier 0, each node's."""

    series: int
    bucket_id: str
    row: RowMeta | None  # None: the store has never seen this bucket (or pruned it)
    tier: int
    step_ms: int
    column_unix_ms: I64
    values: U64
    flags: U8
    unknown: Bools
    contributors: tuple[Mapping[str, int], ...]
    missing: tuple[tuple[str, ...], ...]
    nodes: tuple[NodeContribution, ...] = ()
    per_node: bool = False  # False on coarse tiers: only merged values are kept there


def _cells_of_bucket(
    fields: tuple[str, ...],
    blobs: Sequence[bytes | memoryview],
    pk: int,
    where: Callable[[int], str],
) -> tuple[NDArray[np.intp], dict[str, cellblob.UArray]]:
    """(blob index of each cell of bucket `pk`, {field: those cells}), one batch decode."""
    counts, pks, arrays = decode_cells_many(fields, blobs, where)
    hits = np.flatnonzero(pks == pk)
    owner = np.searchsorted(np.cumsum(counts), hits, side="right")
    return owner, {name: arr[hits] for name, arr in arrays.items()}


def read_bucket(
    series: int,
    bucket_id: str,
    from_ms: int,
    to_ms: int,
    *,
    tier: int | None = None,
    now_ms: int | None = None,
) -> BucketHistory:
    """One row's history: merged values and flags, plus per-node contributions on tier 0."""
    if to_ms <= from_ms:
        raise ValueError(f"empty window: from {from_ms} ms is not before to {to_ms} ms")
    if tier is None:
        tier = choose_tier(from_ms, now_ms)
    with reading("reading KeyViz history"):
        found, _ = _load_buckets(ids=[bucket_id])
        stored = _column_rows(series, tier, from_ms, to_ms)
        raw = (
            list(
                StoredNodeColumn.objects.filter(
                    series=series, slot_ms__gte=from_ms, slot_ms__lt=to_ms
                )
                .order_by("node", "slot_ms", "node_column_ms")
                .values_list("node", "slot_ms", "node_column_ms", "cells")
            )
            if tier == TIER_FINE and found
            else []
        )
    n = len(stored)
    times = np.fromiter((r[0] for r in stored), dtype=np.int64, count=n)
    step = TIER_STEP_MS.get(tier) or (int(stored[-1][1]) if stored else DEFAULT_STEP_MS)
    values = np.zeros(n, dtype=np.uint64)
    flags = np.zeros(n, dtype=np.uint8)
    unknown = np.zeros(n, dtype=np.bool_)
    contributors: list[Mapping[str, int]] = []
    missing: list[tuple[str, ...]] = []
    pk = found[0].pk if found else None
    for j, (t, _, _, contrib, miss, unknown_all) in enumerate(stored):
        c, m = check_meta(contrib, miss, partial(_where, tier, series, t))
        contributors.append(c)
        missing.append(m)
        unknown[j] = unknown_all
    if pk is not None and stored:
        owner, cells = _cells_of_bucket(
            cellblob.MERGED_FIELDS,
            [r[2] for r in stored],
            pk,
            lambda j: _where(tier, series, stored[j][0]),
        )
        if "value" in cells:
            values[owner] = cells["value"]
        if "flags" in cells:
            flags[owner] = cells["flags"]
    unknown |= (flags & FLAG_UNKNOWN) != 0
    column_of = {int(t): j for j, t in enumerate(times.tolist())}
    per_node: dict[str, dict[str, Any]] = {}
    placed = []  # (node, column) of each raw column, by position in `raw`
    for node, slot, node_t, _ in raw:
        col = column_of.get(int(slot))
        placed.append((node, col))
        if col is not None:
            d = per_node.setdefault(
                node, {k: np.zeros(n, dtype=np.uint64) for k in ("t", "v", "s", "g", "r")}
            )
            d["t"][col] = node_t
    if pk is not None and raw:
        owner, cells = _cells_of_bucket(
            cellblob.NODE_FIELDS,
            [r[3] for r in raw],
            pk,
            lambda j: (
                f"node column of {raw[j][0]} at {raw[j][2]} (series {series}, slot {raw[j][1]})"
            ),
        )
        for hit, j in enumerate(owner.tolist()):
            node, col = placed[j]
            if col is None:
                continue
            for key, name in (("v", "value"), ("s", "soft"), ("g", "group"), ("r", "term")):
                if name in cells:
                    per_node[node][key][col] = int(cells[name][hit])
    nodes = tuple(
        NodeContribution(
            node=node,
            node_column_ms=d["t"].astype(np.int64),
            values=d["v"],
            soft=d["s"] != 0,
            raft_group_ids=d["g"],
            leader_terms=d["r"],
        )
        for node, d in sorted(per_node.items())
    )
    return BucketHistory(
        series=series,
        bucket_id=bucket_id,
        row=found[0].meta if found else None,
        tier=tier,
        step_ms=step,
        column_unix_ms=times,
        values=values,
        flags=flags,
        unknown=unknown,
        contributors=tuple(contributors),
        missing=tuple(missing),
        nodes=nodes,
        per_node=tier == TIER_FINE,
    )


# ---------------------------------------------------------------- collector state


def load_state(key: str) -> dict[str, Any] | None:
    """The collector's JSON document under `key`; None when none was ever saved."""
    with reading("reading collector state"):
        doc = CollectorState.objects.filter(key=key).values_list("doc", flat=True).first()
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise StoreError(f"stored collector state {key!r} is corrupt: not a JSON object")
    return doc


def save_state(key: str, doc: Mapping[str, Any]) -> None:
    """Replace the document under `key` (one row per key)."""
    with writing("saving collector state"):
        CollectorState.objects.update_or_create(
            key=key, defaults={"doc": dict(doc), "updated_ms": _now_ms()}
        )
