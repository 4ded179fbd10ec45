"""The demo preset: a key space and traffic that look like a production cluster.

Route keys from every adapter family of CONTRACT.md (Redis user keys, DynamoDB tables
`!ddb|route|table|<t>`, S3 objects, SQS queues `!sqs|route|<q>`, transaction records
`!txn|`, the distribution catalog `!dist|`), a few hundred routes, and traffic with a
daily rhythm, a hot range drifting across the key space, a nightly S3 backup and a
queue cron burst. The traffic is a function of WALL-CLOCK time (`DemoModel.rates`), so
the demo's synthetic past (demo/history.py) and its live traffic are one picture.

    DevCluster(**demo_cluster_options(), token=..., timers=True)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from devcluster.adapters import ADAPTERS
from devcluster.catalog import RouteCatalog
from devcluster.ops import OpBatch
from devcluster.workload import Keyspace

DEMO_GROUPS = 6
DEMO_ROUTES = 300
DEMO_RATE = 1500.0  # ops/s at the daily mean
DEMO_EVENTS_INTERVAL_S = 20.0  # a leader transfer, split or merge this often
DEMO_KEY_BUCKETS = 2  # sub-range buckets per route (the nodes' --keyvizKeyBucketsPerRoute)

DAY_S = 86_400.0
DRIFT_PERIOD_S = 90 * 60.0  # the hot range crosses the key space once in 90 min
HOT_SHARE = 0.35
WRITE_SHARE = 0.3
FOLLOWER_LOCAL_SHARE = 0.25
BACKUP_HOURS = (2.0, 2.75)  # UTC: the nightly S3 backup writes large objects
CRON_EVERY_S = 600.0  # a queue cron job fires every 10 min for a minute
CRON_LENGTH_S = 60.0
CRON_QUEUE = b"!sqs|route|billing-jobs"

_DDB_TABLES = (
    "accounts", "audit_log", "carts", "catalog", "customers", "events", "inventory",
    "invoices", "orders", "payments", "reviews", "sessions", "shipments", "users",
)  # fmt: skip
_SQS_QUEUES = (
    "billing-jobs", "email-outbox", "global", "image-resize", "notifications",
    "order-events", "search-index", "webhooks",
)  # fmt: skip
_S3_BUCKETS = ("assets", "backups", "invoices-pdf", "logs", "uploads")
_REDIS_PREFIXES = (
    ("cart:", 0.12), ("feed:", 0.1), ("leaderboard:", 0.04), ("rate:", 0.12),
    ("session:", 0.3), ("user:", 0.32),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Family:
    """Keys of one family: its share of the cold traffic and of the routes."""

    keys: tuple[bytes, ...]
    adapter: str
    share: float  # of the cold traffic
    route_share: float  # of the routes (single-key families: one route per key)
    size: float  # median value size in bytes


def _families(rng: np.random.Generator) -> list[_Family]:
    def numbered(prefix: bytes, n: int, width: int = 8) -> tuple[bytes, ...]:
        return tuple(prefix + b"%0*d" % (width, i) for i in range(0, n * 7919, 7919))

    redis: list[bytes] = []
    for prefix, share in _REDIS_PREFIXES:
        redis += numbered(prefix.encode(), max(8, round(1400 * share)))
    s3 = [
        b"!s3|obj|head|%s|%s" % (bucket.encode(), b"obj-%06d" % i)
        for bucket in _S3_BUCKETS
        for i in range(0, 120 * 37, 37)
    ]
    txn = [
        prefix + bytes(tail).hex().encode()
        for prefix in (b"!txn|cmt|", b"!txn|lock|", b"!txn|meta|")
        for tail in rng.integers(0, 256, size=(100, 8), dtype=np.uint8)
    ]
    tables = tuple(b"!ddb|route|table|" + t.encode() for t in _DDB_TABLES)
    return [
        _Family(tuple(sorted(redis)), "redis", 0.42, 0.55, 300.0),
        _Family(tables, "dynamo", 0.2, 0, 800.0),
        _Family(tuple(sorted(s3)), "s3", 0.1, 0.12, 20_000.0),
        _Family(tuple(b"!sqs|route|" + q.encode() for q in _SQS_QUEUES), "sqs", 0.12, 0, 1_000.0),
        _Family(tuple(sorted(txn)), "rawkv", 0.13, 0.1, 64.0),
        _Family((b"!dist|meta|catalog", b"!dist|route|0001"), "rawkv", 0.03, 0, 128.0),
    ]


class DemoKeyspace(Keyspace):
    """The demo's route keys, with per-key weights, sizes and the routes' boundaries."""

    def __init__(self, rng: np.random.Generator, routes: int = DEMO_ROUTES) -> None:
        families = _families(rng)
        entries: dict[bytes, tuple[int, float, float]] = {}
        for f in families:
            for key in f.keys:
                entries[key] = (ADAPTERS.index(f.adapter), f.share / len(f.keys), f.size)
        self.keys = sorted(entries)
        self.adapters = np.array([entries[k][0] for k in self.keys], dtype=np.int64)
        self.reserved = np.array([k.startswith((b"!txn|", b"!dist|")) for k in self.keys])
        self.weights = np.array([entries[k][1] for k in self.keys], dtype=np.float64)
        self.weights /= self.weights.sum()
        self.sizes = np.array([entries[k][2] for k in self.keys], dtype=np.float64)
        position = {k: i for i, k in enumerate(self.keys)}
        self.cron_key = position[CRON_QUEUE]
        self.backup_range = self._range(b"!s3|obj|head|backups|")
        self.burst_range = self._range(b"!sqs|route|")
        self._boundaries = self._make_boundaries(families, routes)

    def _range(self, prefix: bytes) -> tuple[int, int]:
        inside = [i for i, k in enumerate(self.keys) if k.startswith(prefix)]
        return inside[0], inside[-1] + 1

    def _make_boundaries(self, families: list[_Family], routes: int) -> list[bytes]:
        # Every single-key family key (a table, a queue) starts its own route; the
        # multi-key families share the remaining routes by their route_share.
        cuts: set[bytes] = set()
        for f in families:
            if not f.route_share:
                cuts.update(f.keys)
        free = max(0, routes - 1 - len(cuts))
        total = sum(f.route_share for f in families)
        for f in families:
            if not f.route_share:
                continue
            n = max(1, round(free * f.route_share / total))
            cuts.update(f.keys[i * len(f.keys) // n] for i in range(n))
        return sorted(cuts - {b""})

    def boundaries(self, routes: int) -> list[bytes]:
        return list(self._boundaries)

    def generator(self, rate: float, step_s: float, seed: int) -> DemoWorkload:
        return DemoWorkload(self, rate, seed)


class DemoModel:
    """Expected operations per key per second at a wall-clock time (Unix seconds)."""

    def __init__(self, keyspace: DemoKeyspace, rate: float) -> None:
        self.keys = keyspace
        self.rate = rate

    @staticmethod
    def daily(t_s: NDArray[np.float64]) -> NDArray[np.float64]:
        """Traffic level over the day (UTC): low at night, peak in the afternoon, a
        smaller evening peak; weekends at 70%."""
        hour = t_s % DAY_S / 3600.0
        level = 0.6 + 0.4 * np.sin((hour - 8.0) / 24.0 * 2 * math.pi)
        level += 0.15 * np.exp(-(((hour - 20.5) / 1.2) ** 2))
        weekday = (np.floor(t_s / DAY_S) + 3) % 7  # 1970-01-01 was a Thursday
        return np.asarray(level * np.where(weekday >= 5, 0.7, 1.0), dtype=np.float64)

    def hot_center(self, t_s: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(t_s % DRIFT_PERIOD_S / DRIFT_PERIOD_S * len(self.keys), np.float64)

    def rates(self, t_s: NDArray[np.float64]) -> NDArray[np.float64]:
        """(len(t_s), keys) expected ops/s: cold share by weight, the drifting hot range,
        the nightly backup and the queue cron."""
        k = len(self.keys)
        level = self.daily(t_s)[:, None] * self.rate
        cold = level * (1 - HOT_SHARE) * self.keys.weights[None, :]
        pos = np.arange(k, dtype=np.float64)[None, :]
        dist = np.abs(pos - self.hot_center(t_s)[:, None])
        dist = np.minimum(dist, k - dist)  # the range wraps around the key space
        sigma = k / 60.0
        hot = np.exp(-0.5 * (dist / sigma) ** 2)
        hot *= level * HOT_SHARE / hot.sum(axis=1, keepdims=True)
        out = cold + hot
        hour = t_s % DAY_S / 3600.0
        backup = (hour >= BACKUP_HOURS[0]) & (hour < BACKUP_HOURS[1])
        lo, hi = self.keys.backup_range
        out[backup, lo:hi] += self.rate * 0.3 / (hi - lo)
        cron = t_s % CRON_EVERY_S < CRON_LENGTH_S
        out[cron, self.keys.cron_key] += self.rate * 0.4
        return np.asarray(out, dtype=np.float64)


class DemoWorkload:
    """Live traffic drawn from DemoModel at wall-clock time (same batch API as
    workload.WorkloadGenerator)."""

    def __init__(self, keyspace: DemoKeyspace, rate: float, seed: int) -> None:
        self._keys = keyspace
        self._model = DemoModel(keyspace, rate)
        self._rng = np.random.default_rng(seed)
        self._epoch_s = time.time()  # t_s of batch() counts from here
        self._catalog_version = -1
        self._key_route = np.zeros(0, dtype=np.int64)

    def batch(
        self, t_s: float, dt_s: float, catalog: RouteCatalog, live_nodes: NDArray[np.int64]
    ) -> OpBatch:
        if catalog.version != self._catalog_version:
            self._key_route = self._keys.route_positions(catalog)
            self._catalog_version = catalog.version
        rng = self._rng
        expected = self._model.rates(np.array([self._epoch_s + t_s]))[0] * dt_s
        per_key = rng.poisson(expected) if live_nodes.size else np.zeros_like(expected, np.int64)
        key = np.repeat(np.arange(len(self._keys)), per_key)
        n = key.size
        is_write = rng.random(n) < WRITE_SHARE
        adapter = self._keys.adapters[key]
        nbytes = np.clip(rng.lognormal(np.log(self._keys.sizes[key]), 0.8), 16, 1 << 22)
        latency = np.where(is_write, 1.8, 1.0) * rng.lognormal(np.log(1e6), 0.6, n)
        return OpBatch(
            route_pos=self._key_route[key],
            is_write=is_write,
            nbytes=nbytes.astype(np.int64),
            entry=live_nodes[rng.integers(0, max(1, live_nodes.size), n)],
            follower_local=~is_write & (rng.random(n) < FOLLOWER_LOCAL_SHARE),
            adapter=adapter,
            latency_ns=latency.astype(np.int64),
            key_index=key,
        )


def demo_cluster_options(seed: int = 0) -> dict[str, Any]:
    """DevCluster keyword arguments of the demo preset (the caller adds auth, step, ports)."""
    return {
        "groups": DEMO_GROUPS,
        "routes": DEMO_ROUTES,
        "keyspace": DemoKeyspace(np.random.default_rng(seed), DEMO_ROUTES),
        "workload_rate": DEMO_RATE,
        "events_interval_s": DEMO_EVENTS_INTERVAL_S,
        "adapter_rows": True,
        "key_buckets_per_route": DEMO_KEY_BUCKETS,
        "seed": seed,
    }
