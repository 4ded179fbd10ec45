"""Node columns in, merged columns out: splitting node answers, merging one slot, unknown cells.

The collector (collector.py) turns every node answer into `NodeColumn`s
(`columns_of`, `column_from_event`), places each in a slot (align.py) and,
once the slot is final (finalize.py), merges the slot's node columns here
into one `MergedColumn` by DESIGN.md's merge rules:

- rule 2: a row's metadata comes from the first node, in node-name order, that has it;
- rule 3: reads and read bytes are summed;
- rule 4: writes and write bytes are summed (`sum`, the default) or, with
  `dedupe`, merged by (group, term) exactly like the matrix merge (merge.merge_writes);
- rule 5: soft if any node marked it soft;
- rule 6: the cells a missing node would have counted are UNKNOWN: every
  known row of a Raft group it led (`LeaderBook`), with or without a value
  from the others, or the whole column (`unknown_all`) when which groups it
  led is not known.

Pure functions over numpy arrays; no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np

from keyviz.columns import FLAG_CONFLICT, FLAG_SOFT, FLAG_UNKNOWN, MergedColumn, NodeColumn
from keyviz.matrix import NodeMatrix, RowMeta, node_matrix_from_response
from keyviz.merge import is_write_series, merge_writes, writes_merge_policy
from proto import admin_pb2

# Rows remembered with their Raft group (to mark a missing node's rows unknown).
MAX_KNOWN_ROWS = 100_000


def columns_of(m: NodeMatrix) -> list[NodeColumn]:
    """Split a node's matrix into its columns (empty ones included: they still say
    "this node has flushed up to here")."""
    out: list[NodeColumn] = []
    for j, t in enumerate(m.column_unix_ms.tolist()):
        live = np.flatnonzero((m.values[:, j] > 0) | m.soft[:, j])
        out.append(
            NodeColumn(
                node=m.node,
                column_unix_ms=int(t),
                rows=tuple(m.rows[i] for i in live.tolist()),
                values=m.values[live, j],
                soft=m.soft[live, j],
                raft_group_ids=m.raft_group_ids[live, j],
                leader_terms=m.leader_terms[live, j],
            )
        )
    return out


def column_from_event(node: str, column: admin_pb2.KeyVizColumn) -> NodeColumn:
    """A pushed KeyVizColumn, validated like a one-column matrix (MalformedMatrixError)."""
    response = admin_pb2.GetKeyVizMatrixResponse(column_unix_ms=[column.column_unix_ms])
    response.rows.extend(column.rows)
    return columns_of(node_matrix_from_response(node, response))[0]


class LeaderBook:
    """Which Raft groups each node led, as last seen while it was answering.

    A stopped node hands its groups to a new leader within moments, so an
    overview taken after the failure names nothing for it, although the
    columns it held are exactly what is missing. So a node's groups are
    replaced by a newer overview only once the node has answered after that
    overview was taken; until then they accumulate.
    """

    def __init__(self) -> None:
        self._led: dict[str, set[int]] = {}
        self._current: dict[str, set[int]] = {}
        self._taken_at_ms = 0

    @property
    def known(self) -> bool:
        """Has any overview been seen (else no node's groups are known)?"""
        return self._taken_at_ms > 0

    def update(self, leaders: Mapping[int, str], taken_at_ms: int) -> None:
        current: dict[str, set[int]] = {}
        for group, node in leaders.items():
            if node and group:
                current.setdefault(node, set()).add(group)
        self._current, self._taken_at_ms = current, taken_at_ms
        for node in set(current) | set(self._led):
            self._led[node] = self._led.get(node, set()) | current.get(node, set())

    def answered(self, node: str, at_ms: int) -> None:
        """`node` answered at `at_ms`; if after the newest overview, that overview holds."""
        if at_ms >= self._taken_at_ms and self._taken_at_ms:
            self._led[node] = set(self._current.get(node, set()))

    def retain(self, nodes: Collection[str]) -> None:
        """Forget the nodes that left the membership (leader ids are node-controlled)."""
        self._led = {n: g for n, g in self._led.items() if n in nodes}

    def groups_of(self, node: str) -> set[int]:
        return set(self._led.get(node, set()))

    def lost_groups(self, failed: Iterable[str]) -> dict[int, str]:
        """group -> failed node that led it."""
        return {g: n for n in sorted(set(failed)) for g in sorted(self._led.get(n, ()))}


class RowBook:
    """Rows seen in node columns, with the Raft group each was last seen in: the rows a
    missing node's groups cover, also where no other node has a value."""

    def __init__(self, limit: int = MAX_KNOWN_ROWS) -> None:
        self.limit = limit
        self.rows: dict[str, RowMeta] = {}
        self.groups: dict[str, int] = {}

    def learn(self, column: NodeColumn) -> None:
        if len(self.rows) + len(column.rows) > self.limit:
            self.rows.clear()  # years of splits: start over
            self.groups.clear()
        for row, group in zip(column.rows, column.raft_group_ids.tolist(), strict=True):
            self.rows.setdefault(row.bucket_id, row)
            if group:
                self.groups[row.bucket_id] = int(group)

    def rows_of(self, groups: Iterable[int]) -> list[RowMeta]:
        wanted = set(groups)
        return [self.rows[b] for b, g in self.groups.items() if g in wanted and b in self.rows]


def merge_slot(
    columns: Sequence[NodeColumn],
    *,
    series: int,
    column_unix_ms: int,
    step_ms: int,
    writes_merge: str = "sum",
    missing: Sequence[str] = (),
    leaders: LeaderBook | None = None,
    rowbook: RowBook | None = None,
) -> MergedColumn:
    """The merged column of one slot from its nodes' columns (one per node at most)."""
    ordered = sorted(columns, key=lambda c: c.node)
    index: dict[str, int] = {}
    rows: list[RowMeta] = []
    for c in ordered:
        for row in c.rows:
            if row.bucket_id not in index:
                index[row.bucket_id] = len(rows)
                rows.append(row)
    lost: dict[int, str] = {}
    unknown_all = False
    if missing:
        if leaders is None or not leaders.known:
            unknown_all = True
        else:
            lost = leaders.lost_groups(missing)
    if lost and rowbook is not None:
        for row in rowbook.rows_of(lost):
            if row.bucket_id not in index:
                index[row.bucket_id] = len(rows)
                rows.append(row)
    shape = (len(ordered), len(rows))
    values = np.zeros(shape, dtype=np.uint64)
    groups = np.zeros(shape, dtype=np.uint64)
    terms = np.zeros(shape, dtype=np.uint64)
    soft = np.zeros(len(rows), dtype=np.bool_)
    for i, c in enumerate(ordered):
        at = np.fromiter((index[r.bucket_id] for r in c.rows), dtype=np.intp, count=len(c.rows))
        values[i, at] = c.values
        groups[i, at] = c.raft_group_ids
        terms[i, at] = c.leader_terms
        soft[at] |= c.soft
    if is_write_series(series):
        merged, conflict = merge_writes(
            values,
            groups,
            terms,
            policy=writes_merge_policy(writes_merge),
        )
    else:
        merged, conflict = np.add.reduce(values, axis=0), np.zeros(len(rows), dtype=np.bool_)
    flags = soft.astype(np.uint8) * FLAG_SOFT | conflict.astype(np.uint8) * FLAG_CONFLICT
    if lost:
        row_group = groups.max(axis=0, initial=0)
        if rowbook is not None:
            known = np.array([rowbook.groups.get(r.bucket_id, 0) for r in rows], dtype=np.uint64)
            row_group = np.where(row_group > 0, row_group, known)
        hit = np.isin(row_group, np.array(sorted(lost), dtype=np.uint64))
        flags |= hit.astype(np.uint8) * FLAG_UNKNOWN
    if unknown_all:
        flags |= FLAG_UNKNOWN
    keep = np.flatnonzero((merged > 0) | (flags > 0))
    kept_rows = [rows[i] for i in keep.tolist()]
    order = sorted(
        range(len(kept_rows)), key=lambda k: (kept_rows[k].start, kept_rows[k].bucket_id)
    )
    pick = keep[np.array(order, dtype=np.intp)] if order else keep
    return MergedColumn(
        series=series,
        column_unix_ms=column_unix_ms,
        step_ms=step_ms,
        rows=tuple(rows[i] for i in pick.tolist()),
        values=merged[pick].astype(np.uint64),
        flags=flags[pick].astype(np.uint8),
        contributors={c.node: c.column_unix_ms for c in ordered},
        missing=tuple(sorted(set(missing))),
        unknown_all=unknown_all,
    )


def column_cells(column: MergedColumn) -> list[tuple[RowMeta, int, int]]:
    """(row, value, flag bits) of a merged column, in its (key) order, for the wire."""
    return list(zip(column.rows, column.values.tolist(), column.flags.tolist(), strict=True))


__all__ = [
    "LeaderBook",
    "RowBook",
    "column_cells",
    "column_from_event",
    "columns_of",
    "merge_slot",
]
