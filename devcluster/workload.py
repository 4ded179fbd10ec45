"""Synthetic client traffic: a drifting hot range, a periodic burst and a cold tail.

Each tick draws the whole batch with numpy, so the generator costs a few hundred
microseconds per tick whatever the rate.
"""

from __future__ import annotations

import bisect
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from devcluster.adapters import ADAPTERS
from devcluster.catalog import Route, RouteCatalog, default_boundaries
from devcluster.ops import OpBatch

# (prefix, share of the key space, adapter); binary keys and the reserved prefixes included.
_TABLES: tuple[tuple[bytes, float, str], ...] = (
    (b"\x00", 0.12, "rawkv"),
    (b"!dist|", 0.02, "rawkv"),
    (b"!txn|", 0.08, "dynamo"),
    (b"item:", 0.18, "s3"),
    (b"order:", 0.18, "sqs"),
    (b"session:", 0.12, "redis"),
    (b"user:", 0.18, "dynamo"),
    (b"\xc0", 0.12, "rawkv"),
)
_BURST_TABLE = b"order:"
_RESERVED = (b"!txn|", b"!dist|")

# Shapes in units of the flush step, so a 2 s demo and a 60 s cluster look alike.
DRIFT_STEPS = 120  # the hot range crosses the key space once in this many steps
BURST_EVERY_STEPS = 15
BURST_LENGTH_STEPS = 2
HOT_SHARE = 0.45
BURST_FACTOR = 1.5
WRITE_SHARE = 0.3
FOLLOWER_LOCAL_SHARE = 0.25
_BASE_LATENCY_NS = {"dynamo": 1.5e6, "redis": 2e5, "s3": 8e6, "sqs": 3e6, "rawkv": 4e5}


class Keyspace:
    """A sorted set of keys with the adapter that owns each."""

    def __init__(self, rng: np.random.Generator, size: int = 2048) -> None:
        entries: dict[bytes, int] = {}
        for prefix, share, adapter in _TABLES:
            count = max(4, round(size * share))
            if prefix in (b"\x00", b"\xc0"):
                tails = [
                    bytes(row) for row in rng.integers(0, 256, size=(count, 7), dtype=np.uint8)
                ]
            else:
                tails = [b"%06d" % i for i in range(0, count * 7, 7)]
            for tail in tails:
                entries[prefix + tail] = ADAPTERS.index(adapter)
        self.keys: list[bytes] = sorted(entries)
        self.adapters: NDArray[np.int64] = np.array([entries[k] for k in self.keys], dtype=np.int64)
        self.reserved: NDArray[np.bool_] = np.array(
            [k.startswith(_RESERVED) for k in self.keys], dtype=np.bool_
        )
        self.burst_range = (
            bisect.bisect_left(self.keys, _BURST_TABLE),
            bisect.bisect_left(self.keys, _BURST_TABLE[:-1] + b";"),  # ';' follows ':'
        )

    def __len__(self) -> int:
        return len(self.keys)

    def boundaries(self, routes: int) -> list[bytes]:
        """The initial catalog's split keys for `routes` routes."""
        return default_boundaries(routes, self.keys)

    def generator(self, rate: float, step_s: float, seed: int) -> Workload:
        """The traffic this key space gets (the demo preset brings its own)."""
        return WorkloadGenerator(self, rate, step_s, seed)

    def route_positions(self, catalog: RouteCatalog) -> NDArray[np.int64]:
        return np.array([catalog.position_of_key(k) for k in self.keys], dtype=np.int64)

    def split_key(self, route: Route) -> bytes | None:
        """The middle workload key strictly inside `route`, if it holds at least two."""
        lo = bisect.bisect_right(self.keys, route.start)
        hi = bisect.bisect_left(self.keys, route.end) if route.end else len(self.keys)
        return self.keys[(lo + hi) // 2] if hi - lo >= 2 else None


class Workload(Protocol):
    def batch(
        self, t_s: float, dt_s: float, catalog: RouteCatalog, live_nodes: NDArray[np.int64]
    ) -> OpBatch: ...


class WorkloadGenerator:
    def __init__(self, keyspace: Keyspace, rate: float, step_s: float, seed: int) -> None:
        if rate < 0:
            raise ValueError("workload rate must be >= 0 ops/s")
        self._keys = keyspace
        self._rate = rate
        self._step_s = step_s
        self._rng = np.random.default_rng(seed)
        self._catalog_version = -1
        self._key_route = np.zeros(0, dtype=np.int64)

    def batch(
        self, t_s: float, dt_s: float, catalog: RouteCatalog, live_nodes: NDArray[np.int64]
    ) -> OpBatch:
        """Operations for the interval (t_s - dt_s, t_s], entering at the live nodes."""
        if catalog.version != self._catalog_version:
            self._key_route = self._keys.route_positions(catalog)
            self._catalog_version = catalog.version
        rng, k = self._rng, len(self._keys)
        expected = self._rate * dt_s
        n_hot = int(rng.poisson(expected * HOT_SHARE))
        n_cold = int(rng.poisson(expected * (1 - HOT_SHARE)))
        phase = t_s / self._step_s % BURST_EVERY_STEPS
        n_burst = int(rng.poisson(expected * BURST_FACTOR)) if phase < BURST_LENGTH_STEPS else 0
        if not live_nodes.size:
            n_hot = n_cold = n_burst = 0
        center = (t_s / (self._step_s * DRIFT_STEPS)) % 1.0 * k
        hot = (center + rng.normal(0.0, k / 48, n_hot)).astype(np.int64) % k
        cold = rng.integers(0, k, n_cold)
        burst = rng.integers(*self._keys.burst_range, n_burst)
        key = np.concatenate([hot, cold, burst])
        n = key.size
        is_write = rng.random(n) < WRITE_SHARE
        adapter = self._keys.adapters[key]
        nbytes = np.clip(rng.lognormal(np.log(512), 1.2, n), 16, 65536).astype(np.int64)
        nbytes[self._keys.reserved[key]] = 64  # transaction and catalog records are small
        base = np.array([_BASE_LATENCY_NS[a] for a in ADAPTERS])[adapter]
        latency = base * np.where(is_write, 1.8, 1.0) * rng.lognormal(0.0, 0.5, n)
        return OpBatch(
            route_pos=self._key_route[key],
            is_write=is_write,
            nbytes=nbytes,
            entry=live_nodes[rng.integers(0, max(1, live_nodes.size), n)],
            follower_local=~is_write & (rng.random(n) < FOLLOWER_LOCAL_SHARE),
            adapter=adapter,
            latency_ns=latency.astype(np.int64),
            key_index=key,
        )
