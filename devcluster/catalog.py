"""The route catalog: ordered key ranges, the Raft group owning each, splits and merges."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

# Natural boundaries of the workload's key space (see workload.Keyspace): low binary keys,
# the reserved `!dist|`/`!txn|` prefixes, four printable tables, then high binary keys.
NAMED_BOUNDARIES: tuple[bytes, ...] = (
    b"!",
    b"!txn|",
    b"item:",
    b"order:",
    b"session:",
    b"user:",
    b"\x80",
)


@dataclass(frozen=True, slots=True)
class Route:
    """One key range [start, end): empty `start` is the smallest key, empty `end` +infinity."""

    route_id: int
    start: bytes
    end: bytes
    group_id: int
    parent_route_id: int = 0
    split_at_hlc: int = 0
    # Children inherit their parent's lineage and a merge inherits the left parent's, so a
    # portal can follow a key range across catalog changes.
    lineage_id: str = ""

    def contains(self, key: bytes) -> bool:
        return self.start <= key and (not self.end or key < self.end)


def sub_range_splits(route: Route, keys: Sequence[bytes], buckets: int) -> tuple[bytes, ...]:
    """Interior split keys of `route`'s `buckets` sub-ranges (as --keyvizKeyBucketsPerRoute):
    equal shares of the sorted `keys` inside the route; fewer when it holds fewer keys."""
    lo = bisect.bisect_left(keys, route.start)
    hi = bisect.bisect_left(keys, route.end) if route.end else len(keys)
    inside = hi - lo
    if buckets < 2 or inside < 2:
        return ()
    n = min(buckets, inside)
    cuts = {keys[lo + j * inside // n] for j in range(1, n)}
    return tuple(sorted(k for k in cuts if k > route.start))


def default_boundaries(routes: int, keys: Sequence[bytes]) -> list[bytes]:
    """`routes - 1` sorted split keys: named ones when they suffice, else quantiles of `keys`."""
    if routes < 1:
        raise ValueError("a catalog needs at least one route")
    need = routes - 1
    if need <= len(NAMED_BOUNDARIES):
        slots = len(NAMED_BOUNDARIES) + 1
        return [NAMED_BOUNDARIES[(i + 1) * slots // routes - 1] for i in range(need)]
    ordered = sorted(set(keys) - {b""})
    if need > len(ordered):
        raise ValueError(f"{routes} routes need at least {need} distinct keys, have {len(ordered)}")
    return [ordered[(i + 1) * len(ordered) // routes] for i in range(need)]


class RouteCatalog:
    """Routes sorted by start key, covering the whole key space without gaps."""

    def __init__(self, boundaries: Sequence[bytes], groups: int) -> None:
        edges = [b"", *boundaries, b""]
        if any(not b for b in boundaries) or list(boundaries) != sorted(set(boundaries)):
            raise ValueError("boundaries must be sorted, distinct and non-empty")
        self._routes = tuple(
            Route(
                route_id=i + 1,
                start=edges[i],
                end=edges[i + 1],
                group_id=i % groups + 1,
                lineage_id=f"lineage-{i + 1}",
            )
            for i in range(len(edges) - 1)
        )
        self._next_id = len(self._routes) + 1
        self.version = 1
        self._index()

    @property
    def routes(self) -> tuple[Route, ...]:
        return self._routes

    def get(self, route_id: int) -> Route:
        route = self._by_id.get(route_id)
        if route is None:
            raise ValueError(f"no route {route_id} in the catalog")
        return route

    def position_of_key(self, key: bytes) -> int:
        return bisect.bisect_right(self._starts, key) - 1

    def route_for_key(self, key: bytes) -> Route:
        return self._routes[self.position_of_key(key)]

    def split(self, route_id: int, at_key: bytes, hlc: int) -> tuple[Route, Route]:
        parent = self.get(route_id)
        if not at_key or at_key <= parent.start or not parent.contains(at_key):
            raise ValueError(f"split key {at_key!r} is not strictly inside route {route_id}")
        left = Route(
            self._take_id(),
            parent.start,
            at_key,
            parent.group_id,
            parent_route_id=parent.route_id,
            split_at_hlc=hlc,
            lineage_id=parent.lineage_id,
        )
        right = replace(left, route_id=self._take_id(), start=at_key, end=parent.end)
        self._replace([parent], [left, right])
        return left, right

    def merge(self, left_id: int, right_id: int) -> Route:
        left, right = self.get(left_id), self.get(right_id)
        if left.end != right.start or not left.end:
            raise ValueError(f"routes {left_id} and {right_id} are not adjacent (left, right)")
        # A merge across groups implies a migration; the merged range lands in the left's group.
        merged = replace(
            left,
            route_id=self._take_id(),
            end=right.end,
            parent_route_id=left.route_id,
            split_at_hlc=0,
        )
        self._replace([left, right], [merged])
        return merged

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _replace(self, old: list[Route], new: list[Route]) -> None:
        at = self._routes.index(old[0])
        self._routes = (*self._routes[:at], *new, *self._routes[at + len(old) :])
        self.version += 1
        self._index()

    def _index(self) -> None:
        self._starts = [r.start for r in self._routes]
        self._by_id = {r.route_id: r for r in self._routes}
        # Per catalog position, for routing numpy batches.
        self.route_ids = np.array([r.route_id for r in self._routes], dtype=np.int64)
        self.group_ids = np.array([r.group_id for r in self._routes], dtype=np.int64)
