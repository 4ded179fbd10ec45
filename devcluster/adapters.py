"""Per-adapter request statistics behind GetAdapterSummary and GetRouteDetail.per_adapter."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

from proto import admin_pb2

ADAPTERS: tuple[str, ...] = ("dynamo", "redis", "s3", "sqs", "rawkv")
# Operation name an adapter reports for a read (index 0) and a write (index 1).
OPERATIONS: dict[str, tuple[str, str]] = {
    "dynamo": ("GetItem", "PutItem"),
    "redis": ("GET", "SET"),
    "s3": ("GetObject", "PutObject"),
    "sqs": ("ReceiveMessage", "SendMessage"),
    "rawkv": ("RawGet", "RawPut"),
}
# Latency quantiles are order statistics over each operation's most recent requests.
LATENCY_WINDOW = 512


def adapter_index(adapter: str) -> int:
    try:
        return ADAPTERS.index(adapter)
    except ValueError:
        raise ValueError(f"unknown adapter {adapter!r}; expected one of {ADAPTERS}") from None


class OpStats:
    __slots__ = ("_filled", "_latencies", "_next", "bytes_in", "bytes_out", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self._latencies = np.zeros(LATENCY_WINDOW, dtype=np.int64)
        self._next = 0
        self._filled = 0

    def add(self, is_write: bool, nbytes: int, latencies_ns: NDArray[np.int64]) -> None:
        self.requests += int(latencies_ns.size)
        # Writes carry their value in, reads carry it out.
        if is_write:
            self.bytes_in += nbytes
        else:
            self.bytes_out += nbytes
        recent = latencies_ns[-LATENCY_WINDOW:]
        at = (self._next + np.arange(recent.size)) % LATENCY_WINDOW
        self._latencies[at] = recent
        self._next = (self._next + recent.size) % LATENCY_WINDOW
        self._filled = min(LATENCY_WINDOW, self._filled + recent.size)

    def recent_latencies(self) -> NDArray[np.int64]:
        return self._latencies[: self._filled]


class AdapterStats:
    """Counters per (adapter, operation) for one node, or for one route on one node."""

    def __init__(self) -> None:
        self._ops: dict[tuple[str, str], OpStats] = {}

    def add(
        self, adapter: str, is_write: bool, nbytes: int, latencies_ns: NDArray[np.int64]
    ) -> None:
        key = (adapter, OPERATIONS[adapter][is_write])
        stats = self._ops.get(key)
        if stats is None:
            stats = self._ops[key] = OpStats()
        stats.add(is_write, nbytes, latencies_ns)

    def items(self) -> Iterable[tuple[tuple[str, str], OpStats]]:
        return self._ops.items()


def summaries(sources: Iterable[AdapterStats], adapter: str = "") -> list[admin_pb2.AdapterSummary]:
    """Merge sources into one summary per (adapter, operation), sorted; `adapter` filters."""
    merged: dict[tuple[str, str], list[OpStats]] = {}
    for source in sources:
        for key, stats in source.items():
            if not adapter or key[0] == adapter:
                merged.setdefault(key, []).append(stats)
    out = []
    for (name, operation), parts in sorted(merged.items()):
        latencies = np.concatenate([p.recent_latencies() for p in parts])
        if latencies.size:
            p50, p95, p99 = np.quantile(latencies, [0.5, 0.95, 0.99], method="inverted_cdf")
        else:
            p50 = p95 = p99 = 0.0
        out.append(
            admin_pb2.AdapterSummary(
                adapter=name,
                operation=operation,
                requests=sum(p.requests for p in parts),
                in_flight=0,  # the simulation completes every request within its tick
                bytes_in=sum(p.bytes_in for p in parts),
                bytes_out=sum(p.bytes_out for p in parts),
                p50_ns=float(p50),
                p95_ns=float(p95),
                p99_ns=float(p99),
            )
        )
    return out
