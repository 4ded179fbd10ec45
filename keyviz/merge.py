"""Merge one KeyViz matrix per node into one cluster-wide matrix.

DESIGN.md "KeyViz merge", steps 1-6 (the budgets, steps 7-8, are in
budgets.py). Everything is numpy over whole arrays or row bands; Python loops
run only over nodes, bands, rows' metadata, and the rare cells whose write
reports carry two different (group, term) keys.

Column alignment (step 1). A column timestamp is the END of its window. Each
node's step is its declared `step_ms`, else the merge-wide `step_ms`, else
inferred from its column spacing (`infer_step_ms`); a node with one column
takes the others' step, and with no step anywhere DEFAULT_STEP_MS is assumed
and a warning says so (the live poller, which fetches one new column at a
time, should pass the step it already knows). The merged step S is the finest
step when every other step is a multiple of it (and spreading stays under
MAX_SPREAD_COLUMNS), else the coarsest. A column at t of a node with step s
lands in merged column `slot * S`:

- s == S: slot = round(t / S), halves rounding up, so nodes whose flush timers
  are offset by less than half a step share columns;
- s == k*S (a coarser node): the column is spread over the k merged columns
  its window covers, value split as v // k each and the v % k remainder one
  unit each on the LAST columns, so totals stay exact; those cells are soft
  (an estimate) where v > 0;
- s < S (re-bucketing, with a warning): the column goes to the merged column
  whose window holds the middle of its own window; cells are soft when S is
  not a multiple of s.

Two columns of one node that land in the same merged column are summed (never
dropped) and reported in `warnings`, except when re-bucketing, where that is
the point. Their group / term survive only where they agree (else 0, unknown).

Reads and read bytes are summed (step 3); writes follow `merge_writes`
(step 4); soft is OR-ed over nodes (step 5); rows whose Raft group a failed
node leads are degraded (step 6). `cell_contributions` answers "which node
reported what here" from the aligned per-node arrays kept in the result.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
from numpy.typing import NDArray

from keyviz.matrix import (
    I64,
    U64,
    AlignedNode,
    Bools,
    Ids,
    Index,
    MergedMatrix,
    NodeMatrix,
    Provenance,
    RowMeta,
)
from proto import admin_pb2

# DESIGN.md "Merge rules", rule 4: "sum" (the portal's default) or "dedupe" (by
# Raft group and term); "design" is the old name of "dedupe" and still accepted.
WritesMerge = Literal["sum", "dedupe"]
WRITES_MERGE_POLICIES: tuple[WritesMerge, ...] = ("sum", "dedupe")
WRITES_MERGE_ALIASES: Mapping[str, WritesMerge] = {"design": "dedupe"}


def writes_merge_policy(name: str) -> WritesMerge:
    """A policy name (or alias) as one of WRITES_MERGE_POLICIES; ValueError otherwise."""
    for policy in WRITES_MERGE_POLICIES:
        if name == policy:
            return policy
    if name in WRITES_MERGE_ALIASES:
        return WRITES_MERGE_ALIASES[name]
    raise ValueError(
        f"writes_merge must be one of {WRITES_MERGE_POLICIES} (design = dedupe), got {name!r}"
    )


# elastickv's --keyvizStep default, used when no node shows its step.
DEFAULT_STEP_MS = 60_000
# How far flush times may wander from a whole step over a node's window.
_JITTER_MS = 10
# Spreading a coarse node over a much finer step could build a huge grid
# (1 h columns over 1 s steps); beyond this many columns, re-bucket instead.
MAX_SPREAD_COLUMNS = 20_000

Keys = NDArray[np.unsignedinteger[Any]]
# Values while the write merge compares them: the narrowest unsigned type that holds them.
Narrow = NDArray[np.unsignedinteger[Any]]
T = TypeVar("T", bound=np.generic)

# Row bands of about this many cells (2 MiB per uint64 array) stay in cache.
_BAND_CELLS = 1 << 18
# Within a band, up to this many runs of consecutive rows are folded one by one.
_MAX_BAND_RUNS = 16

_U64_MAX = np.uint64(np.iinfo(np.uint64).max)
_WRITE_SERIES = frozenset(
    {
        admin_pb2.KEYVIZ_SERIES_UNSPECIFIED,
        admin_pb2.KEYVIZ_SERIES_WRITES,
        admin_pb2.KEYVIZ_SERIES_WRITE_BYTES,
    }
)


def is_write_series(series: int) -> bool:
    return series in _WRITE_SERIES


def infer_step_ms(column_unix_ms: I64) -> int | None:
    """A node's step from its column spacing; None with fewer than two columns.

    The lower median gap says how many steps the whole span holds (a missing
    column or two does not matter), and span / steps is the step, so flush
    jitter averages out. When a whole 1000, 100 or 10 ms step explains the
    span to within `_JITTER_MS`, that step is taken (steps are Go durations).
    """
    n = int(column_unix_ms.shape[0])
    if n < 2:
        return None
    gaps = np.diff(column_unix_ms)
    mid = (gaps.shape[0] - 1) // 2
    median = int(np.partition(gaps, mid)[mid])
    span = int(column_unix_ms[-1] - column_unix_ms[0])
    steps = max(1, (span + median // 2) // median)
    for grain in (1000, 100, 10):
        snapped = (2 * span + grain * steps) // (2 * grain * steps) * grain
        if snapped > 0 and abs(snapped * steps - span) <= _JITTER_MS:
            return snapped
    return max(1, (2 * span + steps) // (2 * steps))


def round_half_up_div(t: I64, step: int) -> I64:
    """round(t / step) with halves rounding up, exact in integers."""
    return (2 * t + step) // (2 * step)


# ---------------------------------------------------------------- step 1


@dataclass(frozen=True)
class _Slots:
    """One node's columns on the merged grid, before the grid is known."""

    slots: I64
    values: U64
    soft: Bools
    groups: Ids
    terms: Ids
    source: I64
    collapsed: int  # columns that had to be summed into a neighbour


def _spread(node: NodeMatrix, k: int, merged_step: int) -> _Slots:
    """A coarse node's columns spread over the k finer merged columns each covers."""
    rows, cols = node.shape
    end_slot = round_half_up_div(node.column_unix_ms, merged_step)
    sub = np.arange(k, dtype=np.int64)
    slots = (end_slot[:, None] - (k - 1) + sub[None, :]).reshape(-1)
    kk = np.uint64(k)
    quotient = node.values // kk
    remainder = (node.values % kk).astype(np.int64)
    # The remainder goes one unit each to the last columns, so the sum is exact.
    extra = sub[None, None, :] >= (k - remainder)[:, :, None]
    values = np.repeat(quotient, k, axis=1) + extra.reshape(rows, cols * k).astype(np.uint64)
    soft = np.repeat(node.soft | (node.values > 0), k, axis=1)
    return _Slots(
        slots=slots,
        values=values,
        soft=soft,
        groups=np.repeat(node.raft_group_ids, k, axis=1),
        terms=np.repeat(node.leader_terms, k, axis=1),
        source=np.repeat(node.column_unix_ms, k),
        collapsed=0,
    )


def _same_nonzero_or_zero(x: Ids, live: Bools, starts: Index) -> Ids:
    """Per run of columns: the common non-zero x among live cells, else 0 (unknown)."""
    hi = np.maximum.reduceat(np.where(live, x, 0), starts, axis=1)
    lo = np.minimum.reduceat(np.where(live, x, np.iinfo(x.dtype).max), starts, axis=1)
    same: Ids = np.where(hi == lo, hi, 0)
    return same


def _collapse(s: _Slots) -> _Slots:
    """Sum columns that share a merged column; groups/terms stay only if they agree."""
    if s.slots.shape[0] < 2 or bool(np.all(np.diff(s.slots) > 0)):
        return s
    order = np.argsort(s.slots, kind="stable")
    slots = s.slots[order]
    values, groups, terms = s.values[:, order], s.groups[:, order], s.terms[:, order]
    soft = s.soft[:, order]
    source = s.source[order]
    starts = np.flatnonzero(np.concatenate(([True], np.diff(slots) != 0)))
    live = values > 0
    return _Slots(
        slots=slots[starts],
        values=np.add.reduceat(values, starts, axis=1),
        soft=np.logical_or.reduceat(soft, starts, axis=1),
        groups=_same_nonzero_or_zero(groups, live, starts),
        terms=_same_nonzero_or_zero(terms, live, starts),
        source=np.maximum.reduceat(source, starts),
        collapsed=int(slots.shape[0] - starts.shape[0]),
    )


def _node_slots(node: NodeMatrix, node_step: int, merged_step: int) -> _Slots:
    if node_step % merged_step == 0:
        k = node_step // merged_step
        if k > 1:
            return _collapse(_spread(node, k, merged_step))
        slots = round_half_up_div(node.column_unix_ms, merged_step)
        soft = node.soft
    else:
        # Re-bucket by the middle of the node's own window: (t - s, t].
        slots = (2 * node.column_unix_ms - node_step + 2 * merged_step) // (2 * merged_step)
        soft = node.soft
        if merged_step % node_step:
            soft = soft | (node.values > 0)
    return _collapse(
        _Slots(
            slots=slots,
            values=node.values,
            soft=soft,
            groups=node.raft_group_ids,
            terms=node.leader_terms,
            source=node.column_unix_ms,
            collapsed=0,
        )
    )


def _choose_step(
    nodes: Sequence[NodeMatrix], step_ms: int | None, warnings: list[str]
) -> tuple[int, dict[str, int]]:
    """The merged step and each node's own step (DESIGN step 1)."""
    own: dict[str, int | None] = {
        n.node: n.step_ms or step_ms or infer_step_ms(n.column_unix_ms) for n in nodes
    }
    known = sorted({s for s in own.values() if s})
    if not known:
        if any(n.shape[1] for n in nodes):
            warnings.append(
                f"no node shows its column step; assumed {DEFAULT_STEP_MS} ms (the node default)"
            )
        return DEFAULT_STEP_MS, dict.fromkeys(own, DEFAULT_STEP_MS)
    steps = {n: s or known[0] for n, s in own.items()}
    # Spreading multiplies a coarse node's columns; past a bound, re-bucket instead.
    spread = max(n.shape[1] * (steps[n.node] // known[0]) for n in nodes)
    if all(s % known[0] == 0 for s in known) and spread <= MAX_SPREAD_COLUMNS:
        merged = known[0]
    else:
        merged = known[-1]
        steps = {n: s or merged for n, s in own.items()}
        finer = ", ".join(sorted(n for n, s in steps.items() if s != merged))
        listed = ", ".join(f"{s} ms" for s in known)
        why = (
            f": spreading to {known[0]} ms would need {spread} columns"
            if all(s % known[0] == 0 for s in known)
            else " do not divide each other"
        )
        warnings.append(
            f"column steps {listed}{why}; re-bucketed {finer} to the coarsest step, {merged} ms"
        )
    for node, s in sorted(steps.items()):
        if s > merged:
            warnings.append(
                f"{node} reports {s} ms columns; each is spread over {s // merged} columns "
                f"of {merged} ms and marked soft"
            )
    return merged, steps


# ---------------------------------------------------------------- step 2


def _merge_rows(
    nodes: Sequence[NodeMatrix], warnings: list[str]
) -> tuple[tuple[RowMeta, ...], dict[str, int]]:
    """Rows keyed by bucket id, metadata from the first node (by node id) that has it."""
    first: dict[str, tuple[str, RowMeta]] = {}
    diverging: dict[str, list[str]] = {}
    for node in nodes:
        for row in node.rows:
            seen = first.get(row.bucket_id)
            if seen is None:
                first[row.bucket_id] = (node.node, row)
            elif (seen[1].start, seen[1].end) != (row.start, row.end):
                diverging.setdefault(row.bucket_id, [seen[0]]).append(node.node)
    for bucket, who in sorted(diverging.items()):
        warnings.append(
            f"catalog divergence: {bucket} has different start/end on {', '.join(who)}; "
            f"showing {who[0]}'s"
        )
    ordered = tuple(sorted((m for _, m in first.values()), key=lambda m: (m.start, m.bucket_id)))
    return ordered, {m.bucket_id: i for i, m in enumerate(ordered)}


# ---------------------------------------------------------------- placement

# Above this many runs of consecutive rows, one fancy-indexed copy beats a
# Python loop over slices.
_MAX_RUNS = 64


@dataclass(frozen=True)
class _Placement:
    """Where a node's [R_n, C_n] block lands in a merged [R, M] array.

    `pieces` pair a destination index with the source rows it takes. When the
    node's columns are contiguous and its rows form few runs, destinations are
    plain slices (views), so ufuncs write in place without temporaries.
    """

    pieces: tuple[tuple[tuple[slice | Index, slice | Index], slice], ...]
    in_place: bool


def _placement(row_index: Index, column_index: Index) -> _Placement:
    cols = _as_slice(column_index)
    n = int(row_index.shape[0])
    if cols is None:
        r, c = np.ix_(row_index, column_index)
        return _Placement((((r, c), slice(None)),), in_place=False)
    breaks = np.flatnonzero(np.diff(row_index) != 1) + 1
    if breaks.shape[0] >= _MAX_RUNS:
        return _Placement((((row_index, cols), slice(None)),), in_place=False)
    bounds = [0, *breaks.tolist(), n] if n else []
    pieces = tuple(
        ((slice(int(row_index[a]), int(row_index[a]) + b - a), cols), slice(a, b))
        for a, b in itertools.pairwise(bounds)
    )
    return _Placement(pieces, in_place=True)


def _as_slice(ix: Index) -> slice | None:
    if not ix.shape[0]:
        return slice(0, 0)
    first, last = int(ix[0]), int(ix[-1])
    # Indexes are strictly increasing, so span == length means no gaps.
    return slice(first, last + 1) if last - first + 1 == ix.shape[0] else None


def _combine(op: np.ufunc, dst: NDArray[Any], place: _Placement, src: NDArray[Any]) -> None:
    """dst[place] = op(dst[place], src), in place where the placement allows."""
    for index, rows in place.pieces:
        if place.in_place:
            view = dst[index]
            op(view, src[rows], out=view)
        else:
            dst[index] = op(dst[index], src[rows])


# ---------------------------------------------------------------- step 4


@dataclass(frozen=True)
class _WriteInput:
    """One node's write reports and where they go."""

    values: U64
    groups: Ids
    terms: Ids
    row_index: Index
    column_index: Index


def _key_layout(group_max: int, term_max: int) -> tuple[type[np.unsignedinteger[Any]], int] | None:
    """The narrowest key type and the shift that make group << shift | term one integer
    per (group, term) pair, 0 only for (0, 0); None when no 64-bit key holds both."""
    shift = term_max.bit_length()
    bits = group_max.bit_length() + shift
    for key_type in (np.uint8, np.uint16, np.uint32, np.uint64):
        if bits <= np.iinfo(key_type).bits:
            return key_type, shift
    return None


def _pack_keys(groups: Ids, terms: Ids, shift: np.unsignedinteger[Any], out: Keys) -> Keys:
    """group << shift | term, written in the key type (the layout guarantees it fits)."""
    np.left_shift(groups, shift, out=out, casting="unsafe")
    np.bitwise_or(out, terms, out=out, casting="unsafe")
    return out


def _ranked_keys(inputs: Sequence[_WriteInput]) -> list[Keys]:
    """Dense ranks of (group, term) pairs for ids too wide to pack; rare and slow."""
    pairs = np.concatenate(
        [np.stack([w.groups.reshape(-1), w.terms.reshape(-1)], axis=1) for w in inputs]
    )
    if not pairs.shape[0]:
        return [np.zeros(w.values.shape, dtype=np.uint64) for w in inputs]
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    # (0, 0) sorts first when present; it must stay key 0.
    rank = inverse.reshape(-1).astype(np.uint64) + np.uint64(1 if uniq[0].any() else 0)
    out: list[Keys] = []
    at = 0
    for w in inputs:
        out.append(rank[at : at + w.values.size].reshape(w.values.shape))
        at += w.values.size
    return out


def _exact_write_merge(values: U64, groups: Ids, terms: Ids) -> tuple[U64, Bools]:
    """DESIGN step 4 on [N, P] cells, for those the fast path in `_merge_write_inputs`
    cannot decide (two different keys among the reports).

    Reports are compared pair by pair over the node axis: N is the number of
    nodes, so N(N-1)/2 passes over the cells beat sorting each cell's reports
    (numpy sorts a short axis one cell at a time) and ranking (group, term)
    pairs (a sort of structured rows). A live report is the first of its key
    unless an earlier node's report has the same key; each first report adds
    the largest value under its key, and two different values under one key
    set `conflict`.
    """
    live = values > 0
    unknown = np.any(live & ((groups == 0) | (terms == 0)), axis=0)
    first = live.copy()
    key_peak = values.copy()  # for a first report: the largest value under its key
    conflict = np.zeros(values.shape[1:], dtype=np.bool_)
    for i, j in itertools.combinations(range(values.shape[0]), 2):
        same = live[i] & live[j] & (groups[i] == groups[j]) & (terms[i] == terms[j])
        first[j] &= ~same
        np.maximum(key_peak[i], np.where(same, values[j], np.uint64(0)), out=key_peak[i])
        conflict |= same & (values[i] != values[j])
    total = np.where(first, key_peak, np.uint64(0)).sum(axis=0, dtype=np.uint64)
    # Any unknown group or term: fall back to the maximum (never invent a hotspot).
    peak = values.max(axis=0)
    low = np.where(live, values, _U64_MAX).min(axis=0)
    fallback_conflict = live.any(axis=0) & (peak != low)
    return (
        np.where(unknown, peak, total),
        np.where(unknown, fallback_conflict, conflict),
    )


def _merge_write_inputs(
    shape: tuple[int, int],
    inputs: Sequence[_WriteInput],
    group_max: int,
    term_max: int,
    value_max: int,
) -> tuple[U64, Bools]:
    """The "dedupe" rule over nodes' blocks; see merge_writes.

    Per cell, four running extremes over nodes: the largest value, the
    smallest non-zero value, the largest and the smallest non-zero (group,
    term) key. x - 1 wraps 0 to the maximum, so min(x - 1) + 1 is the smallest
    non-zero x, and 0 when there is none. A cell whose non-zero keys are all
    one key has every known report in one group, so both branches of the rule
    reduce to "maximum, conflict if the non-zero values differ". Only cells
    with two keys go to the exact sort, gathered from the nodes.

    The work runs over bands of rows small enough to stay in cache: every
    element is then read from memory about once instead of once per
    operation. Keys and values are compared in the narrowest unsigned types
    that hold them (keys usually uint8 or uint16, values uint32 or less),
    because the element-wise passes cost in proportion to the bytes they touch.
    """
    n_rows, n_cols = shape
    layout = _key_layout(group_max, term_max)
    ranked = _ranked_keys(inputs) if layout is None else None
    key_type, shift = layout if layout is not None else (np.uint64, 0)
    value_type = _narrowest(value_max)
    values = np.empty(shape, dtype=np.uint64)
    conflict = np.empty(shape, dtype=np.bool_)
    hard = np.empty(shape, dtype=np.bool_)
    band = max(1, min(n_rows, _BAND_CELLS // max(n_cols, 1)))
    cells = band * n_cols
    peak, low, spread_v = (np.empty(cells, dtype=value_type) for _ in range(3))
    key_hi, key_lo, spread_k = (np.empty(cells, dtype=key_type) for _ in range(3))
    widest = max((w.values.shape[1] for w in inputs), default=0)
    scratch_k = np.empty(band * widest, dtype=key_type)
    column_slices = [_as_slice(w.column_index) for w in inputs]
    for r0 in range(0, n_rows, band):
        r1 = min(n_rows, r0 + band)
        size = (r1 - r0) * n_cols
        pk, lo, kh, kl = (x[:size] for x in (peak, low, key_hi, key_lo))
        pk.fill(0)
        lo.fill(np.iinfo(value_type).max)
        kh.fill(0)
        kl.fill(np.iinfo(key_type).max)
        for i, (w, cols) in enumerate(zip(inputs, column_slices, strict=True)):
            a, b = (int(x) for x in np.searchsorted(w.row_index, (r0, r1)))
            if a == b:
                continue
            rows = w.row_index[a:b] - r0
            top, bottom = int(rows[0]), int(rows[-1]) + 1
            block = (bottom - top, n_cols)
            sv, sk = _view(spread_v, block), _view(spread_k, block)
            if ranked is None:
                pack = _KeyPacker(w.groups[a:b], w.terms[a:b], key_type(shift))
            else:
                pack = _KeyPacker(ranked[i][a:b], None, key_type(0))
            _place(sv, sk, rows - top, cols, w.column_index, w.values[a:b], pack, scratch_k)
            # The node's rows are one contiguous range of the band: fold it flat.
            flat = slice(top * n_cols, bottom * n_cols)
            _fold(pk[flat], lo[flat], kh[flat], kl[flat], sv.reshape(-1), sk.reshape(-1))
        lo += value_type(1)
        kl += key_type(1)
        values[r0:r1] = pk.reshape(r1 - r0, n_cols)
        np.not_equal(pk, lo, out=conflict[r0:r1].reshape(-1))
        np.not_equal(kh, kl, out=hard[r0:r1].reshape(-1))
    cells_hard = np.flatnonzero(hard)
    if cells_hard.size:
        exact_v, exact_c = _exact_write_merge(*_gather_cells(shape, inputs, cells_hard))
        values.reshape(-1)[cells_hard] = exact_v
        conflict.reshape(-1)[cells_hard] = exact_c
    return values, conflict


def _narrowest(top: int) -> type[np.unsignedinteger[Any]]:
    """The narrowest unsigned type that holds 0..top."""
    for t in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(t).max:
            return t
    return np.uint64


@dataclass(frozen=True)
class _KeyPacker:
    """A node's (group, term) keys for some rows: packed on the fly, or ranked already."""

    groups: Keys
    terms: Keys | None  # None: `groups` holds ranked keys
    shift: np.unsignedinteger[Any]

    def into(self, out: Keys, rows: slice | Index = slice(None)) -> None:
        if self.terms is None:
            np.copyto(out, self.groups[rows], casting="unsafe")
        else:
            _pack_keys(self.groups[rows], self.terms[rows], self.shift, out)


def _place(
    sv: Narrow,
    sk: Keys,
    rows: Index,
    cols: slice | None,
    column_index: Index,
    values: U64,
    keys: _KeyPacker,
    scratch_k: Keys,
) -> None:
    """A node's block into zeroed band-shaped scratch (values cast, keys packed).

    Zero is neutral for the fold (max ignores it, and x - 1 wraps it to the
    maximum for the minimum), so rows and columns the node lacks need nothing
    else, and the fold then runs over contiguous memory: ufuncs over strided
    2-D views are far slower.
    """
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    whole = cols == slice(0, sv.shape[1]) and not breaks.shape[0]
    if not whole:
        sv.fill(0)
        sk.fill(0)
    if cols is not None and breaks.shape[0] < _MAX_BAND_RUNS:
        # Runs of consecutive rows copy as slices.
        bounds = [0, *breaks.tolist(), rows.shape[0]]
        for lo_i, hi_i in itertools.pairwise(bounds):
            d0 = int(rows[lo_i])
            dst = (slice(d0, d0 + hi_i - lo_i), cols)
            np.copyto(sv[dst], values[lo_i:hi_i], casting="unsafe")
            keys.into(sk[dst], slice(lo_i, hi_i))
    else:
        # Many gaps or scattered columns: one fancy-indexed copy each.
        where = np.ix_(rows, column_index) if cols is None else (rows, cols)
        sv[where] = values
        packed = _view(scratch_k, values.shape)
        keys.into(packed)
        sk[where] = packed


def _fold(
    peak: Narrow, low: Narrow, key_hi: Keys, key_lo: Keys, values: Narrow, keys: Keys
) -> None:
    """One node's placed block into the running extremes (its scratch is overwritten)."""
    np.maximum(peak, values, out=peak)
    np.minimum(low, np.subtract(values, values.dtype.type(1), out=values), out=low)
    np.maximum(key_hi, keys, out=key_hi)
    np.minimum(key_lo, np.subtract(keys, keys.dtype.type(1), out=keys), out=key_lo)


def _view(buffer: NDArray[T], shape: tuple[int, int]) -> NDArray[T]:
    """A contiguous array of `shape` over the start of a flat scratch buffer."""
    return buffer[: shape[0] * shape[1]].reshape(shape)


def _gather_cells(
    shape: tuple[int, int], inputs: Sequence[_WriteInput], flat: Index
) -> tuple[U64, U64, U64]:
    """[N, P] values, groups and terms of the merged cells at these flat indexes."""
    rows, cols = np.divmod(flat, shape[1])
    out = np.zeros((3, len(inputs), flat.shape[0]), dtype=np.uint64)
    for n, w in enumerate(inputs):
        row_of = np.full(shape[0], -1, dtype=np.intp)
        row_of[w.row_index] = np.arange(w.row_index.shape[0])
        col_of = np.full(shape[1], -1, dtype=np.intp)
        col_of[w.column_index] = np.arange(w.column_index.shape[0])
        r, c = row_of[rows], col_of[cols]
        ok = np.flatnonzero((r >= 0) & (c >= 0))
        # Flat positions in the node's own arrays: one 1-D take per array.
        at = r[ok] * w.values.shape[1] + c[ok]
        for i, arr in enumerate((w.values, w.groups, w.terms)):
            out[i, n, ok] = arr.reshape(-1)[at]
    return out[0], out[1], out[2]


def merge_writes(
    values: U64, groups: Ids, terms: Ids, *, policy: WritesMerge = "dedupe"
) -> tuple[U64, Bools]:
    """Merge write reports stacked over axis 0 (nodes); return (values, conflict).

    policy "dedupe" (alias "design"; DESIGN rule 4), per cell over non-zero reports: group by
    (raft_group_id, leader_term); one group's reports are one report when
    equal, else `conflict` and the maximum; groups are summed. A report with
    group or term 0 makes the cell the maximum of all reports, with `conflict`
    when two different values meet. policy "sum": plain sum, no conflicts.
    """
    policy = writes_merge_policy(policy)
    cell_shape = values.shape[1:]
    if policy == "sum" or values.shape[0] == 0:
        return np.add.reduce(values, axis=0), np.zeros(cell_shape, dtype=np.bool_)
    n = values.shape[0]
    size = int(np.prod(cell_shape))
    flat = (1, size)
    inputs = [
        _WriteInput(
            values=values[i].reshape(flat),
            groups=groups[i].reshape(flat),
            terms=terms[i].reshape(flat),
            row_index=np.zeros(1, dtype=np.intp),
            column_index=np.arange(size, dtype=np.intp),
        )
        for i in range(n)
    ]
    merged, conflict = _merge_write_inputs(
        flat,
        inputs,
        int(groups.max(initial=0)),
        int(terms.max(initial=0)),
        int(values.max(initial=0)),
    )
    return merged.reshape(cell_shape), conflict.reshape(cell_shape)


# ---------------------------------------------------------------- helpers


def _check_no_overflow(nodes: Sequence[NodeMatrix]) -> None:
    """Every sum the merge and budgets form is bounded by the sum of all input."""
    bound = sum(n.value_max * n.values.size for n in nodes)
    if bound < 2**64:
        return
    # float64 only bounds the total here; values themselves are never floats.
    total = sum(float(n.values.sum(dtype=np.float64)) for n in nodes)
    if total >= 2.0**63:
        raise OverflowError(
            "KeyViz values sum beyond 2^63 across nodes; refusing to merge rather than wrap"
        )


# ---------------------------------------------------------------- steps 1-6


@dataclass(frozen=True, eq=False)
class Alignment:
    """Steps 1-2 done: every node's cells placed on the merged grid and rows."""

    step_ms: int
    column_unix_ms: I64
    rows: tuple[RowMeta, ...]
    position: Mapping[str, int]
    nodes: tuple[AlignedNode, ...]
    warnings: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), int(self.column_unix_ms.shape[0]))


def align_nodes(nodes: Sequence[NodeMatrix], *, step_ms: int | None = None) -> Alignment:
    """Column alignment and row identity (DESIGN steps 1-2); nodes ordered by id."""
    if step_ms is not None and step_ms <= 0:
        raise ValueError(f"step_ms must be positive, got {step_ms}")
    ordered = sorted(nodes, key=lambda n: n.node)
    ids = [n.node for n in ordered]
    if len(set(ids)) != len(ids):
        raise ValueError(f"node ids repeat: {ids}")
    _check_no_overflow(ordered)
    warnings: list[str] = []
    merged_step, own_steps = _choose_step(ordered, step_ms, warnings)
    rows, position = _merge_rows(ordered, warnings)
    per_node = [_node_slots(n, own_steps[n.node], merged_step) for n in ordered]
    for n, s in zip(ordered, per_node, strict=True):
        if s.collapsed and own_steps[n.node] % merged_step == 0:
            warnings.append(
                f"{n.node}: {s.collapsed} column(s) fell into an already used merged column "
                f"and were summed (irregular flush times)"
            )
    if per_node:
        grid = np.unique(np.concatenate([s.slots for s in per_node]))
    else:
        grid = np.zeros(0, dtype=np.int64)
    aligned = tuple(
        AlignedNode(
            node=n.node,
            step_ms=own_steps[n.node],
            row_index=np.array([position[r.bucket_id] for r in n.rows], dtype=np.intp),
            column_index=np.searchsorted(grid, s.slots).astype(np.intp),
            values=s.values,
            soft=s.soft,
            raft_group_ids=s.groups,
            leader_terms=s.terms,
            source_column_unix_ms=s.source,
            group_max=n.group_max,
            term_max=n.term_max,
            # Summing collapsed columns can exceed the node's maximum; this bounds it.
            value_max=n.value_max * (1 + s.collapsed),
        )
        for n, s in zip(ordered, per_node, strict=True)
    )
    return Alignment(
        step_ms=merged_step,
        column_unix_ms=grid * merged_step,
        rows=rows,
        position=position,
        nodes=aligned,
        warnings=tuple(warnings),
    )


def merge_aligned_values(
    alignment: Alignment, *, series: int, writes_merge: WritesMerge = "dedupe"
) -> tuple[U64, Bools]:
    """Steps 3-4 on an alignment: (values, conflict); conflicts only under "dedupe"."""
    writes_merge = writes_merge_policy(writes_merge)
    shape = alignment.shape
    aligned = alignment.nodes
    if is_write_series(series) and writes_merge == "dedupe" and len(aligned) > 1:
        inputs = [
            _WriteInput(
                values=a.values,
                groups=a.raft_group_ids,
                terms=a.leader_terms,
                row_index=a.row_index,
                column_index=a.column_index,
            )
            for a in aligned
        ]
        return _merge_write_inputs(
            shape,
            inputs,
            max((a.group_max for a in aligned), default=0),
            max((a.term_max for a in aligned), default=0),
            max((a.value_max for a in aligned), default=0),
        )
    values = np.zeros(shape, dtype=np.uint64)
    for a in aligned:
        _combine(np.add, values, _placement(a.row_index, a.column_index), a.values)
    return values, np.zeros(shape, dtype=np.bool_)


def merge_nodes(
    nodes: Sequence[NodeMatrix],
    *,
    series: int = admin_pb2.KEYVIZ_SERIES_WRITES,
    step_ms: int | None = None,
    writes_merge: WritesMerge = "dedupe",
    failed_nodes: Collection[str] = (),
    group_leaders: Mapping[int, str] | None = None,
    bucket_groups: Mapping[str, int] | None = None,
) -> MergedMatrix:
    """Merge validated node matrices (DESIGN "KeyViz merge" steps 1-6).

    `failed_nodes` are the nodes whose matrix is missing (error or malformed);
    `group_leaders` maps raft_group_id to the leader's node id (from
    GetClusterOverview); `bucket_groups` optionally maps bucket ids to their
    Raft group when the rows' own raft_group_ids do not say. The result has
    no budget applied; see budgets.fit_to_display.
    """
    if series == admin_pb2.KEYVIZ_SERIES_UNSPECIFIED:
        series = admin_pb2.KEYVIZ_SERIES_WRITES
    alignment = align_nodes(nodes, step_ms=step_ms)
    shape = alignment.shape
    values, conflict = merge_aligned_values(alignment, series=series, writes_merge=writes_merge)

    # Step 5: soft if any node marked it.
    soft = np.zeros(shape, dtype=np.bool_)
    for a in alignment.nodes:
        if a.soft.any():
            _combine(np.logical_or, soft, _placement(a.row_index, a.column_index), a.soft)

    # Step 6: degraded rows.
    degraded = np.zeros(shape, dtype=np.bool_)
    degraded[_degraded_rows(alignment, failed_nodes, group_leaders or {}, bucket_groups or {})] = (
        True
    )

    return MergedMatrix(
        series=series,
        step_ms=alignment.step_ms,
        column_unix_ms=alignment.column_unix_ms,
        rows=alignment.rows,
        values=values,
        soft=soft,
        conflict=conflict,
        degraded=degraded,
        warnings=alignment.warnings,
        provenance=Provenance(
            base_rows=alignment.rows,
            base_column_unix_ms=alignment.column_unix_ms,
            nodes=alignment.nodes,
            row_edges=np.arange(shape[0] + 1, dtype=np.intp),
            column_edges=np.arange(shape[1] + 1, dtype=np.intp),
        ),
    )


def _degraded_rows(
    alignment: Alignment,
    failed_nodes: Collection[str],
    group_leaders: Mapping[int, str],
    bucket_groups: Mapping[str, int],
) -> Bools:
    """Rows whose Raft group is led by a failed node (DESIGN step 6)."""
    out = np.zeros(len(alignment.rows), dtype=np.bool_)
    failed = set(failed_nodes)
    lost = sorted(g for g, leader in group_leaders.items() if g and leader in failed)
    if not lost:
        return out
    lost_arr = np.array(lost, dtype=np.uint64)
    for a in alignment.nodes:
        if a.values.size:
            hit = np.isin(a.raft_group_ids, lost_arr).any(axis=1)
            out[a.row_index[hit]] = True
    lost_set = set(lost)
    for bucket, group in bucket_groups.items():
        if group in lost_set and bucket in alignment.position:
            out[alignment.position[bucket]] = True
    return out


# ---------------------------------------------------------------- cell detail


@dataclass(frozen=True, slots=True)
class Contribution:
    """One node's report for one base cell, as the cell detail shows it.

    `column_unix_ms` is the merged column (before any column budget);
    `node_column_unix_ms` is the node's own flush time that fed it.
    """

    node: str
    bucket_id: str
    column_unix_ms: int
    node_column_unix_ms: int
    value: int
    raft_group_id: int
    leader_term: int
    soft: bool


def cell_contributions(
    merged: MergedMatrix,
    bucket_id: str,
    column_unix_ms: int | None = None,
    *,
    include_zero: bool = False,
) -> list[Contribution]:
    """Each node's contributions to a row (and optionally one of its columns).

    `bucket_id` may name a displayed row (an aggregate covers its members) or
    any base row. `column_unix_ms` must be one of the displayed columns; a
    column built by the column budget covers its base columns. Sorted by
    column, node, bucket. KeyError when the row or column is unknown.
    """
    prov = merged.provenance
    if prov is None:
        raise ValueError("this matrix carries no provenance")
    try:
        r = merged.row_position(bucket_id)
        r0, r1 = int(prov.row_edges[r]), int(prov.row_edges[r + 1])
    except KeyError:
        base = [i for i, row in enumerate(prov.base_rows) if row.bucket_id == bucket_id]
        if not base:
            raise
        r0, r1 = base[0], base[0] + 1
    c0, c1 = 0, int(prov.base_column_unix_ms.shape[0])
    if column_unix_ms is not None:
        hit = np.flatnonzero(merged.column_unix_ms == column_unix_ms)
        if not hit.size:
            raise KeyError(column_unix_ms)
        c0, c1 = int(prov.column_edges[hit[0]]), int(prov.column_edges[hit[0] + 1])
    out: list[Contribution] = []
    for a in prov.nodes:
        rsel = np.flatnonzero((a.row_index >= r0) & (a.row_index < r1))
        csel = np.flatnonzero((a.column_index >= c0) & (a.column_index < c1))
        if not rsel.size or not csel.size:
            continue
        block = a.values[np.ix_(rsel, csel)]
        ri, ci = np.nonzero(block if not include_zero else np.ones_like(block, dtype=np.bool_))
        for i, j in zip(ri.tolist(), ci.tolist(), strict=True):
            row, col = int(rsel[i]), int(csel[j])
            out.append(
                Contribution(
                    node=a.node,
                    bucket_id=prov.base_rows[int(a.row_index[row])].bucket_id,
                    column_unix_ms=int(prov.base_column_unix_ms[a.column_index[col]]),
                    node_column_unix_ms=int(a.source_column_unix_ms[col]),
                    value=int(a.values[row, col]),
                    raft_group_id=int(a.raft_group_ids[row, col]),
                    leader_term=int(a.leader_terms[row, col]),
                    soft=bool(a.soft[row, col]),
                )
            )
    out.sort(key=lambda c: (c.column_unix_ms, c.node, c.bucket_id))
    return out
