"""One node's KeyViz sampler: per-bucket counters, a ring of flushed columns, matrix queries.

Observation is O(1) (a dict lookup and list increments); a flush is O(buckets with traffic)
plus O(tracked routes) only when the catalog changed; a query is numpy over the selected
columns, which GetKeyVizMatrix's `matrix_wire` keeps materialised between queries (as a
real node keeps its ring), so it only adds the columns flushed since the last one.
Rows follow CONTRACT.md: `route:<id>`, `route:<id>:<label>`, `virtual:<id>`.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from devcluster.catalog import Route
from proto import admin_pb2
from proto.wire import KeyVizMatrixWire, Ragged, RowHeader

MAX_ROWS = 1024
ROUTE_IDS_LIMIT = 64

# Counter indexes in a window accumulator and in Column.values; index 4 of an accumulator
# holds the OR of the role bits seen. `counter % 2` is the hit index (0 reads, 1 writes).
READS, WRITES, READ_BYTES, WRITE_BYTES = 0, 1, 2, 3
_ROLES_AT = 4

SERIES_COUNTER: Mapping[int, int] = {
    admin_pb2.KEYVIZ_SERIES_UNSPECIFIED: WRITES,
    admin_pb2.KEYVIZ_SERIES_READS: READS,
    admin_pb2.KEYVIZ_SERIES_WRITES: WRITES,
    admin_pb2.KEYVIZ_SERIES_READ_BYTES: READ_BYTES,
    admin_pb2.KEYVIZ_SERIES_WRITE_BYTES: WRITE_BYTES,
}
ALL_SERIES = (
    admin_pb2.KEYVIZ_SERIES_READS,
    admin_pb2.KEYVIZ_SERIES_WRITES,
    admin_pb2.KEYVIZ_SERIES_READ_BYTES,
    admin_pb2.KEYVIZ_SERIES_WRITE_BYTES,
)
_ROLE_ORDER = (
    admin_pb2.SAMPLE_ROLE_LEADER_WRITE,
    admin_pb2.SAMPLE_ROLE_LEADER_READ,
    admin_pb2.SAMPLE_ROLE_FOLLOWER_READ,
)

# Sub-sampling with probability p estimates a count from k kept hits with a relative
# standard error of sqrt((1 - p) / k); a cell is soft when the 95% error exceeds 10%.
SOFT_Z = 1.96
SOFT_RELATIVE_ERROR = 0.10


def role_bit(role: int) -> int:
    return 1 << (role - 1) if role else 0


_WRITE_ROLE_BITS = role_bit(admin_pb2.SAMPLE_ROLE_LEADER_WRITE)
_READ_ROLE_BITS = role_bit(admin_pb2.SAMPLE_ROLE_LEADER_READ) | role_bit(
    admin_pb2.SAMPLE_ROLE_FOLLOWER_READ
)


def min_exact_hits(sample_rate: float) -> int:
    """Kept hits a cell needs to meet the accuracy bound at this sampling probability."""
    if sample_rate >= 1.0:
        return 0
    return math.ceil((SOFT_Z / SOFT_RELATIVE_ERROR) ** 2 * (1.0 - sample_rate))


def series_counter(series: int) -> int:
    try:
        return SERIES_COUNTER[series]
    except KeyError:
        raise ValueError(f"unknown series {series}") from None


@dataclass(slots=True)
class Bucket:
    slot: int
    bucket_id: str
    start: bytes
    end: bytes
    label: str
    route_ids: tuple[int, ...]
    group_id: int  # 0 for aggregates: they span groups
    lineage_id: str

    @property
    def aggregate(self) -> bool:
        return self.bucket_id.startswith("virtual:")


@dataclass(frozen=True, slots=True)
class Column:
    """One flushed window; `at_ms` is the flush moment, the END of the window."""

    at_ms: int
    slots: NDArray[np.int64]
    values: NDArray[np.uint64]  # (4, n): reads, writes, read bytes, write bytes
    soft: NDArray[np.bool_]  # (2, n): reads, writes missed the accuracy bound
    groups: NDArray[np.uint64]
    terms: NDArray[np.uint64]
    roles: NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class _Dense:
    slots: NDArray[np.int64]
    values: NDArray[np.uint64]  # (rows, columns) of one counter
    soft: NDArray[np.bool_]  # all False outside the design profile (never sent there)
    groups: NDArray[np.uint64]
    terms: NDArray[np.uint64]
    roles: NDArray[np.uint8]  # per row, OR over columns; design profile only, else 0


# Columns per block of _BlockScatter: a block of 1024 rows stays within a few hundred KiB.
_SCATTER_BLOCK = 64

T = TypeVar("T", bound=np.generic)


class _BlockScatter:
    """Places per-column cell lists (columns concatenated in order) into [rows, columns].

    One scatter over the whole row-major array would put consecutive writes a
    row apart, on a different memory page nearly every time; that costs more
    than everything else in a query over 4096 columns. Scattering into a
    small block of columns and copying the block in row by row does not.
    """

    def __init__(self, shape: tuple[int, int], row_of: NDArray[np.intp], sizes: Sequence[int]):
        self.shape = shape
        ends = np.cumsum([0, *sizes])
        column = np.repeat(np.arange(shape[1]), sizes)
        self.blocks: list[tuple[int, int, int, int, NDArray[np.intp]]] = []
        for j0 in range(0, shape[1], _SCATTER_BLOCK):
            j1 = min(shape[1], j0 + _SCATTER_BLOCK)
            a, b = int(ends[j0]), int(ends[j1])
            self.blocks.append((j0, j1, a, b, row_of[a:b] * (j1 - j0) + column[a:b] - j0))

    def place(self, cells: NDArray[T]) -> NDArray[T]:
        out = np.zeros(self.shape, dtype=cells.dtype)
        for j0, j1, a, b, at in self.blocks:
            block = np.zeros((self.shape[0], j1 - j0), dtype=cells.dtype)
            block.reshape(-1)[at] = cells[a:b]
            out[:, j0:j1] = block
        return out


# A layer of _MatrixCache: ("seen", 0) marks the cells a column had; then ("values",
# counter), ("soft", counter % 2), ("groups", 0), ("terms", 0) and ("roles", 0).
_Layer = tuple[str, int]
_SEEN: _Layer = ("seen", 0)
# Layers kept as uint8 while every cell is below 128 (one varint byte each, 8x less to
# copy and encode), widened to uint64 by the first cell that is not.
_WIDENED = frozenset({"values", "groups", "terms"})


def _layer_cells(column: Column, layer: _Layer) -> NDArray[Any]:
    kind, i = layer
    cells: NDArray[Any]
    if kind == "values":
        cells = column.values[i]
    elif kind == "soft":
        cells = column.soft[i]
    else:
        cells = getattr(column, kind)
    return cells


class _MatrixCache:
    """The ring's columns as [rows, columns] arrays, kept in step with the ring query by query.

    Building a day's matrix from the sparse columns on every query cost tens of
    milliseconds; here a query scatters only the columns flushed since the last
    one. Column number s (counting every flush) sits at physical column s % width:
    a circular buffer. Rows are slots in the order they first appeared; the `seen`
    layer marks the cells a column had, so a window's rows are the slots seen in it,
    as in `_dense`. Only the ring's columns, lo..hi-1, are ever read.
    """

    def __init__(self) -> None:
        self.cells: dict[_Layer, NDArray[Any]] = {_SEEN: np.zeros((0, 0), dtype=np.bool_)}
        self._reset()

    def _reset(self) -> None:
        """Empty, keeping the layers it had."""
        self.lo = self.hi = 0  # columns lo..hi-1 are materialised
        self.width = 0
        self.n_rows = 0
        self.slot_of_row = np.zeros(0, dtype=np.int64)
        self.row_of_slot = np.zeros(0, dtype=np.int64)  # -1: the slot has no row
        self.cells = {layer: _empty(layer, (0, 0)) for layer in self.cells}

    def spans(self, s0: int, s1: int) -> list[tuple[int, int]]:
        """Physical column ranges holding columns s0..s1-1, oldest first."""
        if s1 <= s0:
            return []
        a = s0 % self.width
        b = a + s1 - s0
        return [(a, b)] if b <= self.width else [(a, self.width), (0, b - self.width)]

    def rows_seen(self, s0: int, s1: int) -> NDArray[np.intp]:
        """Rows with a cell in columns s0..s1-1."""
        hit = np.zeros(self.n_rows, dtype=np.bool_)
        for a, b in self.spans(s0, s1):
            hit |= self.cells[_SEEN][: self.n_rows, a:b].any(axis=1)
        return np.flatnonzero(hit)

    def take(self, layer: _Layer, rows: NDArray[np.intp], s0: int, s1: int) -> NDArray[Any]:
        """A layer's cells of `rows` in columns s0..s1-1, always a copy: the caller
        encodes it outside the cluster lock while later queries update the cache."""
        cells = self.cells[layer]
        spans = self.spans(s0, s1)
        if len(spans) == 1:
            a, b = spans[0]
            return cells[rows, a:b]
        out = np.zeros((rows.shape[0], s1 - s0), dtype=cells.dtype)
        at = 0
        for a, b in spans:
            out[:, at : at + b - a] = cells[rows, a:b]
            at += b - a
        return out

    def sync(self, ring: deque[Column], flushed: int, n_slots: int, history: int) -> None:
        """Catch up with the ring, whose newest column is number flushed - 1."""
        first = flushed - len(ring)
        # Evicted columns are left as they are: nothing reads them, and new columns
        # are written whole over them.
        self.lo, self.hi = first, max(self.hi, first)
        new = [ring[i] for i in range(self.hi - first, len(ring))]
        if not new:
            return
        slots = np.concatenate([c.slots for c in new])
        if self.row_of_slot.shape[0] < n_slots:
            grown = np.full(n_slots, -1, dtype=np.int64)
            grown[: self.row_of_slot.shape[0]] = self.row_of_slot
            self.row_of_slot = grown
        present = np.zeros(n_slots, dtype=np.bool_)
        present[slots] = True
        fresh = np.flatnonzero(present & (self.row_of_slot < 0))
        n_rows = self.n_rows + fresh.shape[0]
        rows_cap, width = self.cells[_SEEN].shape
        if n_rows > rows_cap:
            if 2 * self.rows_seen(self.lo, self.hi).shape[0] < self.n_rows:
                # Most rows belong to buckets no live column has (replaced routes): start over.
                self._reset()
                self.sync(ring, flushed, n_slots, history)
                return
            rows_cap = max(n_rows, 2 * rows_cap)
        if len(ring) > width:
            width = min(history, max(len(ring), 2 * width))
        if (rows_cap, width) != self.cells[_SEEN].shape:
            self._resize(rows_cap, width)
        self.row_of_slot[fresh] = np.arange(self.n_rows, n_rows)
        self.slot_of_row = np.concatenate([self.slot_of_row, fresh])
        self.n_rows = n_rows
        self._fill(new, self.hi, list(self.cells))
        self.hi = flushed

    def add(self, layers: list[_Layer], ring: deque[Column]) -> None:
        """Layers not kept so far (a series asked for the first time), from the whole
        ring; the cache must be in step with it."""
        for layer in layers:
            self.cells[layer] = _empty(layer, self.cells[_SEEN].shape)
        self._fill(list(ring), self.lo, layers)

    def _fill(self, columns: list[Column], s0: int, layers: list[_Layer]) -> None:
        """Write columns s0.. into `layers`, whole: zero where a row had no cell."""
        if not columns:
            return
        # As a dense block first (_BlockScatter: a day of columns at the first query).
        sizes = [c.slots.shape[0] for c in columns]
        rows = self.row_of_slot[np.concatenate([c.slots for c in columns])]
        scatter = _BlockScatter((self.n_rows, len(columns)), rows, sizes)
        spans = self.spans(s0, s0 + len(columns))
        for layer in layers:
            if layer == _SEEN:
                put = np.ones(rows.shape[0], dtype=np.bool_)
            else:
                put = np.concatenate([_layer_cells(c, layer) for c in columns])
            cells = self.cells[layer]
            if cells.dtype == np.uint8 and layer[0] in _WIDENED and put.max(initial=0) >= 128:
                cells = self.cells[layer] = cells.astype(np.uint64)
            block = scatter.place(put.astype(cells.dtype, copy=False))
            at = 0
            for a, b in spans:
                cells[: self.n_rows, a:b] = block[:, at : at + b - a]
                at += b - a

    def _resize(self, rows: int, width: int) -> None:
        live = np.arange(self.lo, self.hi)
        src, dst = live % max(self.width, 1), live % width

        def moved(cells: NDArray[T]) -> NDArray[T]:
            out = np.zeros((rows, width), dtype=cells.dtype)
            out[: self.n_rows, dst] = cells[: self.n_rows, src]
            return out

        self.cells = {layer: moved(cells) for layer, cells in self.cells.items()}
        self.width = width


def _empty(layer: _Layer, shape: tuple[int, ...]) -> NDArray[Any]:
    return np.zeros(shape, dtype=np.bool_ if layer[0] in ("seen", "soft") else np.uint8)


def _partition(routes: Sequence[Route], budget: int) -> list[Sequence[Route]]:
    """Split key-ordered routes into at most `budget` runs of adjacent routes, sizes +-1."""
    if len(routes) <= budget:
        return [(r,) for r in routes]
    size, extra = divmod(len(routes), budget)
    runs: list[Sequence[Route]] = []
    at = 0
    for i in range(budget):
        n = size + (1 if i < extra else 0)
        runs.append(routes[at : at + n])
        at += n
    return runs


class KeyVizSampler:
    def __init__(
        self,
        *,
        history_columns: int = 1440,
        max_tracked_routes: int = 10_000,
        adapter_rows: bool = False,
        sample_rate: float = 1.0,
        design: bool = False,
    ) -> None:
        if history_columns < 1 or max_tracked_routes < 1:
            raise ValueError("history_columns and max_tracked_routes must be positive")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError("sample_rate must be in (0, 1]")
        self._ring: deque[Column] = deque(maxlen=history_columns)
        self._max_tracked = max_tracked_routes
        self._adapter_rows = adapter_rows
        self._sample_rate = sample_rate
        self._min_hits = min_exact_hits(sample_rate)
        self._design = design
        self._buckets: list[Bucket] = []
        self._by_id: dict[str, Bucket] = {}
        self._route_bucket: dict[int, Bucket] = {}
        self._slot_of: dict[int | tuple[int, str, int], int] = {}
        # Interior split keys of each route's sub-ranges (--keyvizKeyBucketsPerRoute).
        self._splits: Mapping[int, tuple[bytes, ...]] = {}
        self._window: dict[int, list[int]] = {}
        self._history = history_columns
        self._flushed = 0  # columns ever flushed: the ring's newest is number _flushed - 1
        self._cache: _MatrixCache | None = None  # made by the first matrix_wire query
        # Row headers by slot, then by role mask; a bucket's entry goes when its facts change.
        self._headers: dict[int, dict[int, RowHeader]] = {}

    @property
    def columns(self) -> tuple[Column, ...]:
        return tuple(self._ring)

    @property
    def last_column_ms(self) -> int:
        return self._ring[-1].at_ms if self._ring else 0

    def bucket(self, bucket_id: str) -> Bucket | None:
        return self._by_id.get(bucket_id)

    def set_routes(
        self, routes: Sequence[Route], splits: Mapping[int, tuple[bytes, ...]] | None = None
    ) -> None:
        """Re-derive buckets from the catalog (key order); counts already taken stay put.
        `splits`: a route's sub-range split keys; its traffic goes to `#<n>` buckets."""
        self._splits = splits or {}
        route_bucket: dict[int, Bucket] = {}
        for run in _partition(routes, self._max_tracked):
            first = run[0]
            if len(run) == 1:
                bucket = self._register(
                    f"route:{first.route_id}",
                    first.start,
                    first.end,
                    "",
                    (first.route_id,),
                    first.group_id,
                    first.lineage_id,
                )
            else:
                ids = tuple(r.route_id for r in run)
                bucket = self._register(
                    f"virtual:{first.route_id}", first.start, run[-1].end, "", ids, 0, ""
                )
            for route in run:
                route_bucket[route.route_id] = bucket
        self._route_bucket = route_bucket
        self._slot_of = {}

    def observe(
        self,
        route_id: int,
        is_write: int,
        count: int,
        nbytes: int,
        label: str = "",
        roles: int = 0,
        sub: int = 0,
    ) -> None:
        """Count `count` operations of `nbytes` in total on a route (is_write: 0 read, 1
        write); `sub` is the key's sub-range of the route when it has sub-range buckets."""
        key: int | tuple[int, str, int] = (
            (route_id, label, sub) if self._adapter_rows or self._splits else route_id
        )
        slot = self._slot_of.get(key)
        if slot is None:
            slot = self._slot_of[key] = self._slot_for(route_id, label, sub)
        acc = self._window.get(slot)
        if acc is None:
            acc = self._window[slot] = [0, 0, 0, 0, 0]
        acc[is_write] += count
        acc[2 + is_write] += nbytes
        acc[_ROLES_AT] |= roles

    def flush(self, at_ms: int, terms: Mapping[int, int]) -> Column:
        """Close the current window as a column stamped `at_ms`; `terms` maps group -> term."""
        if self._ring and at_ms <= self._ring[-1].at_ms:
            raise ValueError(f"column {at_ms} is not after the last column {self._ring[-1].at_ms}")
        window, self._window = self._window, {}
        n = len(window)
        slots = np.fromiter(window.keys(), dtype=np.int64, count=n)
        acc = np.array(list(window.values()), dtype=np.int64).reshape(n, 5)
        hits = acc[:, :2].T
        if self._sample_rate < 1.0:
            values = np.rint(acc[:, :4].T / self._sample_rate).astype(np.uint64)
            soft = (hits > 0) & (hits < self._min_hits)
        else:
            values = acc[:, :4].T.astype(np.uint64)
            soft = np.zeros((2, n), dtype=np.bool_)
        groups = np.fromiter((self._buckets[s].group_id for s in window), dtype=np.uint64, count=n)
        lookup = np.zeros(max([0, *terms, *groups.tolist()]) + 1, dtype=np.uint64)
        for group_id, term in terms.items():
            lookup[group_id] = term
        lookup[0] = 0  # aggregates span groups: no single term applies
        column = Column(
            at_ms=at_ms,
            slots=slots,
            values=values,
            soft=soft,
            groups=groups,
            terms=lookup[groups.astype(np.int64)],
            roles=acc[:, _ROLES_AT].astype(np.uint8),
        )
        self._ring.append(column)
        self._flushed += 1
        return column

    def columns_between(self, from_ms: int, to_ms: int) -> list[Column]:
        """Columns with from <= at < to; 0 leaves that side unbounded."""
        return [
            c
            for c in self._ring
            if (from_ms == 0 or c.at_ms >= from_ms) and (to_ms == 0 or c.at_ms < to_ms)
        ]

    def matrix(
        self, series: int, from_ms: int, to_ms: int, rows: int
    ) -> admin_pb2.GetKeyVizMatrixResponse:
        counter = series_counter(series)
        columns = self.columns_between(from_ms, to_ms)
        cap = min(rows, MAX_ROWS) if rows else 0
        return admin_pb2.GetKeyVizMatrixResponse(
            column_unix_ms=[c.at_ms for c in columns],
            rows=self._rows(self._dense(columns, counter), counter, cap),
        )

    def matrix_wire(self, series: int, from_ms: int, to_ms: int, rows: int) -> KeyVizMatrixWire:
        """The same matrix as `matrix`, as arrays for proto.wire's encoder.

        Serving a full matrix through protobuf messages costs a Python object per
        cell; encoded from these arrays it is byte for byte the same response.
        """
        counter = series_counter(series)
        cap = min(rows, MAX_ROWS) if rows else 0
        # Columns are in at_ms order: the window is one run of them (as columns_between).
        at_ms = [c.at_ms for c in self._ring]
        i0 = bisect_left(at_ms, from_ms) if from_ms else 0
        i1 = max(i0, bisect_left(at_ms, to_ms) if to_ms else len(at_ms))
        s0 = self._flushed - len(at_ms) + i0
        s1 = s0 + i1 - i0
        cache = self._synced_cache(counter)
        seen = cache.rows_seen(s0, s1)
        buckets = [self._buckets[s] for s in cache.slot_of_row[seen].tolist()]
        # Over the cap every row's total is needed; else only the rows sent are taken.
        over = bool(cap) and len(buckets) > cap
        values: NDArray[Any] = np.zeros((0, 0), dtype=np.uint64)
        if over:
            values = cache.take(("values", counter), seen, s0, s1)
        ordered = self._key_order(
            buckets, lambda: values.sum(axis=1, dtype=np.uint64).tolist(), cap
        )
        at = np.array(ordered, dtype=np.intp)
        picked = seen[at]
        values = values[at] if over else cache.take(("values", counter), picked, s0, s1)
        n, width = picked.shape[0], s1 - s0
        if self._design:
            soft = cache.take(("soft", counter % 2), picked, s0, s1)
            marked = soft.any(axis=1)
            soft_columns = Ragged(
                soft[marked].reshape(-1).astype(np.uint8),
                np.where(marked, width, 0).astype(np.int64),
            )
            roles = cache.take(("roles", 0), picked, s0, s1)
            wanted = _WRITE_ROLE_BITS if counter % 2 else _READ_ROLE_BITS
            masks = (np.bitwise_or.reduce(roles, axis=1) & wanted).tolist()
        else:
            soft_columns = Ragged.empty(n)
            masks = [0] * n
        counts = np.full(n, width, dtype=np.int64)
        return KeyVizMatrixWire(
            column_unix_ms=np.array(at_ms[i0:i1], dtype=np.int64),
            rows=tuple(
                self._cached_header(buckets[i], m) for i, m in zip(ordered, masks, strict=True)
            ),
            # uint8 or uint64 cells, as Ragged allows; taken fresh, so C-ordered.
            values=Ragged(values.reshape(-1), counts),
            soft_columns=soft_columns,
            raft_group_ids=Ragged(cache.take(("groups", 0), picked, s0, s1).reshape(-1), counts),
            leader_terms=Ragged(cache.take(("terms", 0), picked, s0, s1).reshape(-1), counts),
        )

    def column_rows(self, column: Column, series: int) -> list[admin_pb2.KeyVizRow]:
        """Rows of one column alone, as pushed by StreamEvents (capped like a matrix)."""
        counter = series_counter(series)
        return self._rows(self._dense([column], counter), counter, MAX_ROWS)

    def detail_row(self, bucket: Bucket, from_ms: int, to_ms: int) -> admin_pb2.KeyVizRow:
        """The writes row of one bucket over the window; zeros when it had no traffic there."""
        columns = self.columns_between(from_ms, to_ms)
        dense = self._dense(columns, WRITES)
        hit = np.flatnonzero(dense.slots == bucket.slot)
        if hit.size:
            return self._row(bucket, dense, int(hit[0]), WRITES)
        zeros = _Dense(
            slots=np.array([bucket.slot], dtype=np.int64),
            values=np.zeros((1, len(columns)), dtype=np.uint64),
            soft=np.zeros((1, len(columns)), dtype=np.bool_),
            groups=np.zeros((1, len(columns)), dtype=np.uint64),
            terms=np.zeros((1, len(columns)), dtype=np.uint64),
            roles=np.zeros(1, dtype=np.uint8),
        )
        return self._row(bucket, zeros, 0, WRITES)

    def _register(
        self,
        bucket_id: str,
        start: bytes,
        end: bytes,
        label: str,
        route_ids: tuple[int, ...],
        group_id: int,
        lineage_id: str,
    ) -> Bucket:
        bucket = self._by_id.get(bucket_id)
        if bucket is None:
            bucket = Bucket(
                len(self._buckets), bucket_id, start, end, label, route_ids, group_id, lineage_id
            )
            self._buckets.append(bucket)
            self._by_id[bucket_id] = bucket
        else:
            # Same id, new catalog facts (a virtual bucket's members, a merged group).
            facts = (start, end, route_ids, group_id, lineage_id)
            if facts != (
                bucket.start,
                bucket.end,
                bucket.route_ids,
                bucket.group_id,
                bucket.lineage_id,
            ):
                bucket.start, bucket.end, bucket.route_ids = start, end, route_ids
                bucket.group_id, bucket.lineage_id = group_id, lineage_id
                self._headers.pop(bucket.slot, None)
        return bucket

    def _slot_for(self, route_id: int, label: str, sub: int = 0) -> int:
        base = self._route_bucket[route_id]
        if base.aggregate:
            return base.slot
        bucket_id, start, end = base.bucket_id, base.start, base.end
        if self._adapter_rows and label:
            bucket_id += f":{label}"
        splits = self._splits.get(route_id)
        if splits is not None:
            # `#<n>`: the n-th sub-range of the route (CONTRACT.md bucket ids).
            edges = (base.start, *splits, base.end)
            bucket_id, start, end = f"{bucket_id}#{sub}", edges[sub], edges[sub + 1]
        if bucket_id == base.bucket_id:
            return base.slot
        return self._register(
            bucket_id,
            start,
            end,
            label if self._adapter_rows else "",
            base.route_ids,
            base.group_id,
            base.lineage_id,
        ).slot

    def _dense(self, columns: Sequence[Column], counter: int) -> _Dense:
        # Each field goes in for all columns at once (_BlockScatter): a loop over a
        # day of columns (1440) cost more than encoding the whole response.
        sizes = [c.slots.shape[0] for c in columns]
        if not sum(sizes):
            none = (0, len(columns))
            return _Dense(
                slots=np.zeros(0, dtype=np.int64),
                values=np.zeros(none, dtype=np.uint64),
                soft=np.zeros(none, dtype=np.bool_),
                groups=np.zeros(none, dtype=np.uint64),
                terms=np.zeros(none, dtype=np.uint64),
                roles=np.zeros(0, dtype=np.uint8),
            )
        seen = np.concatenate([c.slots for c in columns])
        # Slots index self._buckets, so a mask finds the sorted distinct ones without a sort.
        present = np.zeros(len(self._buckets), dtype=np.bool_)
        present[seen] = True
        slots = np.flatnonzero(present).astype(np.int64)
        scatter = _BlockScatter((slots.size, len(columns)), (np.cumsum(present) - 1)[seen], sizes)
        values = scatter.place(np.concatenate([c.values[counter] for c in columns]))
        groups = scatter.place(np.concatenate([c.groups for c in columns]))
        terms = scatter.place(np.concatenate([c.terms for c in columns]))
        # Soft cells and sample roles reach a response only in the design profile.
        if self._design:
            soft = scatter.place(np.concatenate([c.soft[counter % 2] for c in columns]))
            # Roles are OR-ed over a row's columns: placed like the cells, then reduced
            # (np.bitwise_or.at would be several times slower).
            seen_roles = scatter.place(np.concatenate([c.roles for c in columns]))
            roles = np.bitwise_or.reduce(seen_roles, axis=1)
        else:
            soft = np.zeros(values.shape, dtype=np.bool_)
            roles = np.zeros(slots.size, dtype=np.uint8)
        return _Dense(slots, values, soft, groups, terms, roles)

    def _synced_cache(self, counter: int) -> _MatrixCache:
        if self._cache is None:
            self._cache = _MatrixCache()
        cache = self._cache
        cache.sync(self._ring, self._flushed, len(self._buckets), self._history)
        layers = [("values", counter), ("groups", 0), ("terms", 0)]
        if self._design:
            layers += [("soft", counter % 2), ("roles", 0)]
        missing = [layer for layer in layers if layer not in cache.cells]
        if missing:
            cache.add(missing, self._ring)
        return cache

    def _selected(self, dense: _Dense, cap: int) -> tuple[list[Bucket], list[int]]:
        """The dense rows a response carries, in key order, and every dense row's bucket."""
        buckets = [self._buckets[s] for s in dense.slots.tolist()]
        return buckets, self._key_order(buckets, lambda: dense.values.sum(axis=1).tolist(), cap)

    @staticmethod
    def _key_order(buckets: list[Bucket], totals: Callable[[], list[int]], cap: int) -> list[int]:
        """Indexes of the rows a response carries (at most `cap`, 0: all), in key order."""
        keep = list(range(len(buckets)))
        if cap and len(buckets) > cap:
            # Over budget real nodes keep the busiest rows and drop the rest; ties go to key order.
            total = totals()
            keep.sort(key=lambda i: (-total[i], buckets[i].start, buckets[i].bucket_id))
            del keep[cap:]
        return sorted(keep, key=lambda i: (buckets[i].start, buckets[i].bucket_id))

    def _rows(self, dense: _Dense, counter: int, cap: int) -> list[admin_pb2.KeyVizRow]:
        buckets, ordered = self._selected(dense, cap)
        return [self._row(buckets[i], dense, i, counter) for i in ordered]

    def _header(self, bucket: Bucket, dense: _Dense, i: int, counter: int) -> RowHeader:
        """What `_row` puts in a row besides its per-cell lists."""
        mask = 0
        if self._design:
            wanted = _WRITE_ROLE_BITS if counter % 2 else _READ_ROLE_BITS
            mask = int(dense.roles[i]) & wanted
        return self._make_header(bucket, mask)

    def _cached_header(self, bucket: Bucket, mask: int) -> RowHeader:
        by_mask = self._headers.get(bucket.slot)
        if by_mask is None:
            by_mask = self._headers[bucket.slot] = {}
        header = by_mask.get(mask)
        if header is None:
            header = by_mask[mask] = self._make_header(bucket, mask)
        return header

    def _make_header(self, bucket: Bucket, mask: int) -> RowHeader:
        """A row's header; `mask`: the role bits of the row's series seen in its window."""
        roles = tuple(r for r in _ROLE_ORDER if mask & role_bit(r))
        return RowHeader(
            bucket_id=bucket.bucket_id,
            start=bucket.start,
            end=bucket.end,
            label=bucket.label,
            aggregate=bucket.aggregate,
            route_ids=bucket.route_ids[:ROUTE_IDS_LIMIT],
            route_ids_truncated=len(bucket.route_ids) > ROUTE_IDS_LIMIT,
            route_count=len(bucket.route_ids),
            sample_roles=roles,
            lineage_id=bucket.lineage_id if self._design else "",
        )

    def _row(self, bucket: Bucket, dense: _Dense, i: int, counter: int) -> admin_pb2.KeyVizRow:
        h = self._header(bucket, dense, i, counter)
        row = admin_pb2.KeyVizRow(
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
            values=dense.values[i].tolist(),
            raft_group_ids=dense.groups[i].tolist(),
            leader_terms=dense.terms[i].tolist(),
        )
        if self._design and dense.soft[i].any():
            row.soft_columns.extend(dense.soft[i].tolist())
        return row
