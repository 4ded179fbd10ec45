"""Compaction (tier 0 -> 15 min -> 1 h) and retention of the KeyViz history.

A coarse column at END time E covers the finer columns with times in
(E - width, E]. It is built once its window is complete (E + grace has
passed, so no on-time finer column is still to come) and rebuilt when it is
dirty (save_merged marks it when a finer column in it is amended or arrives
late). Building is from scratch out of the finer columns, so re-running gives
the same bytes: values summed exactly in uint64 (saturating at 2^64-1, never
wrapping), flags OR-ed, contributors and missing nodes united.

A dirty window whose finer columns were already partly pruned is not rebuilt
(it would lose what was pruned); it keeps what it had.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import NDArray

from keyviz import cellblob
from keyviz.models import (
    TIER_1H,
    TIER_15M,
    TIER_FINE,
    Bucket,
    Event,
    StoredColumn,
    StoredNodeColumn,
)
from keyviz.store import (
    LAST_SEEN_SLACK_MS,
    TIER_STEP_MS,
    check_meta,
    clear_bucket_cache,
    decode_cells_many,
    mark_dirty,
    merged_blob,
    reading,
    retention_ms,
    upsert_columns,
    window_end,
    writing,
)

# How long after a window's end its last finer column may still be on its way
# (the collector finalises a column about one step after it ends).
COMPACT_GRACE_MS = 2 * 60_000
_U64_MAX = 2**64 - 1


@dataclass
class CompactionReport:
    """Coarse columns written per tier, and dirty windows left alone (finer data pruned)."""

    written: dict[int, int] = field(default_factory=lambda: {TIER_15M: 0, TIER_1H: 0})
    rebuilt: dict[int, int] = field(default_factory=lambda: {TIER_15M: 0, TIER_1H: 0})
    stale_skipped: int = 0


def _sum_cells(
    pks: NDArray[np.uint32], values: NDArray[np.uint64], flags: NDArray[np.uint8], n_columns: int
) -> tuple[NDArray[np.int64], NDArray[np.uint64], NDArray[np.uint8]]:
    """Per distinct pk: the exact uint64 sum of values and the OR of flags."""
    distinct, inverse = np.unique(pks, return_inverse=True)
    sums = np.zeros(distinct.shape[0], dtype=np.uint64)
    np.add.at(sums, inverse, values)
    # uint64 wraps silently: where a sum could have wrapped, redo it in Python ints.
    top = int(values.max(initial=0))
    if top and top > _U64_MAX // max(n_columns, 1):
        exact = [0] * distinct.shape[0]
        for i, v in zip(inverse.tolist(), values.tolist(), strict=True):
            exact[i] += v
        sums = np.array([min(v, _U64_MAX) for v in exact], dtype=np.uint64)
    ors = np.zeros(distinct.shape[0], dtype=np.uint8)
    np.bitwise_or.at(ors, inverse, flags)
    return distinct.astype(np.int64), sums, ors


def _build(
    tier: int, series: int, end: int, finer: Sequence[tuple[Any, ...]], now_ms: int
) -> StoredColumn:
    """The coarse column of one window from its finer columns' stored rows."""
    contributors: dict[str, int] = {}
    missing: set[str] = set()
    unknown_all = False
    for t, _, contrib, miss, unknown in finer:
        where = f"column tier {tier - 1} series {series} at {t}"
        contrib, miss = check_meta(contrib, miss, partial(str, where))
        for node, node_ms in contrib.items():
            contributors[node] = max(contributors.get(node, int(node_ms)), int(node_ms))
        missing.update(miss)
        unknown_all = unknown_all or bool(unknown)
    _, pks, arrays = decode_cells_many(
        cellblob.MERGED_FIELDS,
        [row[1] for row in finer],
        lambda j: f"column tier {tier - 1} series {series} at {finer[j][0]}",
    )
    zeros = np.zeros(pks.shape[0], dtype=np.uint8)
    pk_sums, sums, ors = _sum_cells(
        pks,
        arrays.get("value", zeros).astype(np.uint64, copy=False),
        arrays.get("flags", zeros).astype(np.uint8, copy=False),
        len(finer),
    )
    return StoredColumn(
        tier=tier,
        series=series,
        column_ms=end,
        step_ms=TIER_STEP_MS[tier],
        cells=merged_blob(pk_sums, sums, ors, cold=True),
        contributors=dict(sorted(contributors.items())),
        missing=sorted(missing),
        unknown_all=unknown_all,
        dirty=False,
        updated_ms=now_ms,
    )


def _compact_into(tier: int, now_ms: int, grace: int, report: CompactionReport) -> None:
    """Build the complete or dirty `tier` windows out of tier - 1."""
    src = tier - 1
    width = TIER_STEP_MS[tier]
    horizon = now_ms - retention_ms(src)  # finer columns before this may be pruned
    with reading("planning KeyViz compaction"):
        finer = list(StoredColumn.objects.filter(tier=src).values_list("series", "column_ms"))
        existing = {
            (s, t): dirty
            for s, t, dirty in StoredColumn.objects.filter(tier=tier).values_list(
                "series", "column_ms", "dirty"
            )
        }
    windows = {(s, window_end(t, width)) for s, t in finer}
    windows.update(key for key, dirty in existing.items() if dirty)
    todo: dict[tuple[int, int], list[tuple[Any, ...]]] = {}
    stale: list[tuple[int, int]] = []
    for key in sorted(windows):
        dirty = existing.get(key)
        if dirty is None:
            if key[1] + grace <= now_ms:
                todo[key] = []
        elif dirty:
            if key[1] - width < horizon:
                stale.append(key)
            else:
                todo[key] = []
    if stale:
        with writing("clearing stale KeyViz windows"):
            for s, end in stale:
                StoredColumn.objects.filter(tier=tier, series=s, column_ms=end).update(dirty=False)
    report.stale_skipped += len(stale)
    if not todo:
        return
    lo = min(end for _, end in todo) - width
    hi = max(end for _, end in todo)
    with reading("reading columns to compact"):
        rows = StoredColumn.objects.filter(
            tier=src, column_ms__gt=lo, column_ms__lte=hi
        ).values_list("series", "column_ms", "cells", "contributors", "missing", "unknown_all")
        for s, t, blob, contrib, miss, unknown in rows:
            bucket = todo.get((s, window_end(t, width)))
            if bucket is not None:
                bucket.append((t, blob, contrib, miss, unknown))
    built = [_build(tier, s, end, finer_rows, now_ms) for (s, end), finer_rows in todo.items()]
    with writing(f"writing {width // 60_000} min KeyViz columns"):
        upsert_columns(built, batch_size=200, with_dirty=True)
        if tier + 1 in TIER_STEP_MS:
            mark_dirty(tier + 1, {(c.series, c.column_ms) for c in built})
    report.written[tier] += sum(1 for key in todo if key not in existing)
    report.rebuilt[tier] += sum(1 for key in todo if key in existing)


def compact(now_ms: int) -> CompactionReport:
    """Build complete and dirty 15 min windows from tier 0, then 1 h windows from them."""
    report = CompactionReport()
    with reading("planning KeyViz compaction"):
        steps = StoredColumn.objects.filter(tier=TIER_FINE).values_list("step_ms", flat=True)
        # Two of the nodes' steps: the collector finalises a column about one step late.
        grace = max([COMPACT_GRACE_MS, *(2 * int(s) for s in steps.distinct())])
    _compact_into(TIER_15M, now_ms, grace, report)
    _compact_into(TIER_1H, now_ms, grace, report)
    return report


def prune(now_ms: int) -> int:
    """Delete what retention no longer covers (cluster timeline events included: as long
    as the coarsest tier); the number of rows deleted.

    A Bucket goes only when no retained column can hold it: its last sighting is
    older than the coarsest retention plus one 1 h window (a 1 h column covers
    the hour before its END time) plus the lag of last_seen_ms.
    """
    horizons = {tier: now_ms - retention_ms(tier) for tier in (TIER_FINE, TIER_15M, TIER_1H)}
    deleted = 0
    with writing("pruning KeyViz history"):
        for tier, horizon in horizons.items():
            deleted += StoredColumn.objects.filter(tier=tier, column_ms__lt=horizon).delete()[0]
        deleted += StoredNodeColumn.objects.filter(slot_ms__lt=horizons[TIER_FINE]).delete()[0]
        # The cluster timeline is kept as long as the longest-kept history it annotates.
        deleted += Event.objects.filter(unix_ms__lt=min(horizons.values())).delete()[0]
        oldest = min(horizons.values()) - TIER_STEP_MS[TIER_1H] - LAST_SEEN_SLACK_MS
        gone = Bucket.objects.filter(last_seen_ms__lt=oldest).delete()[0]
        deleted += gone
    if gone:
        clear_bucket_cache()  # deleted pks must not be reused from the cache
    return deleted
