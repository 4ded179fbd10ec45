"""One node's KeyViz sampler: per-bucket counters, a ring of flushed columns, matrix queries.

Observation is O(1) (a dict lookup and list increments); a flush is O(buckets with traffic)
plus O(tracked routes) only when the catalog changed; a query is numpy over the selected
columns. Rows follow CONTRACT.md: `route:<id>`, `route:<id>:<label>`, `virtual:<id>`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

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
        self._slot_of: dict[int | tuple[int, str], int] = {}
        self._window: dict[int, list[int]] = {}

    @property
    def columns(self) -> tuple[Column, ...]:
        return tuple(self._ring)

    @property
    def last_column_ms(self) -> int:
        return self._ring[-1].at_ms if self._ring else 0

    def bucket(self, bucket_id: str) -> Bucket | None:
        return self._by_id.get(bucket_id)

    def set_routes(self, routes: Sequence[Route]) -> None:
        """Re-derive buckets from the catalog (key order); counts already taken stay put."""
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
        self, route_id: int, is_write: int, count: int, nbytes: int, label: str = "", roles: int = 0
    ) -> None:
        """Count `count` operations of `nbytes` in total on a route (is_write: 0 read, 1 write)."""
        key: int | tuple[int, str] = (route_id, label) if self._adapter_rows else route_id
        slot = self._slot_of.get(key)
        if slot is None:
            slot = self._slot_of[key] = self._slot_for(route_id, label)
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
        columns = self.columns_between(from_ms, to_ms)
        cap = min(rows, MAX_ROWS) if rows else 0
        dense = self._dense(columns, counter)
        buckets, ordered = self._selected(dense, cap)
        picked = np.array(ordered, dtype=np.intp)
        headers = tuple(self._header(buckets[i], dense, i, counter) for i in ordered)
        if self._design:
            soft = dense.soft[picked]
            marked = soft.any(axis=1)
            soft_columns = Ragged(
                soft[marked].reshape(-1).astype(np.uint8),
                np.where(marked, len(columns), 0).astype(np.int64),
            )
        else:
            soft_columns = Ragged.empty(len(ordered))
        return KeyVizMatrixWire(
            column_unix_ms=np.array([c.at_ms for c in columns], dtype=np.int64),
            rows=headers,
            values=Ragged.dense(dense.values[picked]),
            soft_columns=soft_columns,
            raft_group_ids=Ragged.dense(dense.groups[picked]),
            leader_terms=Ragged.dense(dense.terms[picked]),
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
            bucket.start, bucket.end, bucket.route_ids = start, end, route_ids
            bucket.group_id, bucket.lineage_id = group_id, lineage_id
        return bucket

    def _slot_for(self, route_id: int, label: str) -> int:
        base = self._route_bucket[route_id]
        if not (self._adapter_rows and label) or base.aggregate:
            return base.slot
        return self._register(
            f"{base.bucket_id}:{label}",
            base.start,
            base.end,
            label,
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

    def _selected(self, dense: _Dense, cap: int) -> tuple[list[Bucket], list[int]]:
        """The dense rows a response carries, in key order, and every dense row's bucket."""
        buckets = [self._buckets[s] for s in dense.slots.tolist()]
        keep = list(range(len(buckets)))
        if cap and len(buckets) > cap:
            # Over budget real nodes keep the busiest rows and drop the rest; ties go to key order.
            totals = dense.values.sum(axis=1).tolist()
            keep.sort(key=lambda i: (-totals[i], buckets[i].start, buckets[i].bucket_id))
            del keep[cap:]
        return buckets, sorted(keep, key=lambda i: (buckets[i].start, buckets[i].bucket_id))

    def _rows(self, dense: _Dense, counter: int, cap: int) -> list[admin_pb2.KeyVizRow]:
        buckets, ordered = self._selected(dense, cap)
        return [self._row(buckets[i], dense, i, counter) for i in ordered]

    def _header(self, bucket: Bucket, dense: _Dense, i: int, counter: int) -> RowHeader:
        """What `_row` puts in a row besides its per-cell lists."""
        roles: tuple[int, ...] = ()
        if self._design:
            wanted = _WRITE_ROLE_BITS if counter % 2 else _READ_ROLE_BITS
            mask = int(dense.roles[i]) & wanted
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
