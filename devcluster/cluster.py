"""DevCluster: N simulated elastickv nodes, each a real gRPC server on loopback."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc
import numpy as np
from numpy.typing import NDArray

from devcluster.adapters import adapter_index
from devcluster.auth import TokenFile, write_token_file
from devcluster.catalog import Route
from devcluster.ops import Op, OpBatch
from devcluster.server import Fault, Malformation, NodeServer
from devcluster.simulation import ClusterError, ClusterSim, Profile
from devcluster.ticker import Ticker
from devcluster.workload import Keyspace

log = logging.getLogger("devcluster")

WORKLOAD_TICK_S = 0.1

TokenFiles = str | PathLike[str] | Mapping[str, str | PathLike[str]]


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    address: str  # "127.0.0.1:PORT"
    up: bool


@dataclass(frozen=True, slots=True)
class GroupInfo:
    group_id: int
    leader: str  # "" while no leader
    term: int
    commit_index: int


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class FlushJitter:
    """How late a node's flush timer fires. Real nodes flush 0-280 ms late under load
    and now and then later (CONTRACT.md), never early.

    Each flush is late by a uniform 0..max_ms; with probability late_prob it is a late
    flush instead, late by a uniform max_ms..late_ms.
    """

    max_ms: int = 0
    late_prob: float = 0.0
    late_ms: int = 0

    @classmethod
    def upstream(cls, step_ms: int) -> FlushJitter:
        """Like today's nodes: 0-280 ms, and one flush in 50 up to 2 s late (within the step)."""
        return cls(min(280, step_ms // 5), 0.02, min(2_000, step_ms * 4 // 10))

    def check(self, step_ms: int) -> None:
        if self.max_ms < 0 or self.late_ms < 0:
            raise ValueError("flush jitter: max_ms and late_ms must not be negative")
        if not 0.0 <= self.late_prob <= 1.0:
            raise ValueError(f"flush jitter: late_prob must be within 0..1, got {self.late_prob}")
        if max(self.max_ms, self.late_ms) >= step_ms:
            raise ValueError(f"flush jitter must stay under the step ({step_ms} ms)")

    def draw(self, rng: np.random.Generator) -> int:
        if self.late_ms > self.max_ms and self.late_prob > 0 and rng.random() < self.late_prob:
            return int(rng.integers(self.max_ms, self.late_ms + 1))
        return int(rng.integers(0, self.max_ms + 1)) if self.max_ms > 0 else 0


class DevCluster:
    """See the package docstring for the whole API."""

    def __init__(
        self,
        nodes: int = 3,
        *,
        groups: int = 3,
        routes: int = 8,
        profile: Profile | str = Profile.UPSTREAM,
        step_ms: int = 60_000,
        history_columns: int = 1440,
        token: str | None = None,
        token_files: TokenFiles | None = None,
        insecure_no_auth: bool = False,
        max_tracked_routes: int = 10_000,
        workload_rate: float | None = None,
        seed: int = 0,
        host: str = "127.0.0.1",
        base_port: int = 0,
        timers: bool = True,
        events_interval_s: float = 0.0,
        sample_rate: float = 1.0,
        adapter_rows: bool = False,
        flush_jitter: FlushJitter | None = None,
        flush_phases: Mapping[str, int] | None = None,
        keyspace: Keyspace | None = None,
        key_buckets_per_route: int = 1,
    ) -> None:
        if token is not None and token_files is not None:
            raise ValueError("give either token or token_files, not both")
        if insecure_no_auth and (token is not None or token_files is not None):
            raise ValueError("insecure_no_auth excludes a token, as on real nodes")
        if step_ms < 1:
            raise ValueError("step_ms must be positive")
        self._sim = ClusterSim(
            nodes=nodes,
            groups=groups,
            routes=routes,
            profile=Profile(profile),
            history_columns=history_columns,
            max_tracked_routes=max_tracked_routes,
            adapter_rows=adapter_rows,
            sample_rate=sample_rate,
            seed=seed,
            keyspace=keyspace,
            key_buckets_per_route=key_buckets_per_route,
        )
        self.profile = self._sim.profile
        self.step_ms = step_ms
        self.token = token
        self._token_files = token_files
        self._insecure = insecure_no_auth
        self._host = host
        self._base_port = base_port
        self._timers = timers
        self._events_interval_s = events_interval_s
        self._seed = seed
        self._generator = (
            self._sim.keyspace.generator(workload_rate, step_ms / 1000, seed)
            if workload_rate
            else None
        )
        self._manual_t = 0.0  # simulated seconds consumed by generate()
        self._lock = threading.RLock()
        self._addresses: dict[str, str] = {}
        self._servers: dict[str, NodeServer] = {}
        self._flush_generation: dict[str, int] = {}
        # Each node's flush phase: its columns' timestamps are phase + k * step (+ jitter).
        self._flush_phase: dict[str, int] = {}
        for node_id, phase_ms in (flush_phases or {}).items():
            self._check_phase(phase_ms)
            self._sim.node(node_id)
            self._flush_phase[node_id] = phase_ms
        if flush_jitter is None:
            upstream = self.profile is Profile.UPSTREAM
            flush_jitter = FlushJitter.upstream(step_ms) if upstream else FlushJitter()
        flush_jitter.check(step_ms)
        self._flush_jitter = dict.fromkeys(self._sim.nodes, flush_jitter)
        self._jitter_rng = np.random.default_rng(seed + 1)
        self._ticker: Ticker | None = None
        self._tmpdir: Path | None = None
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind every node and serve; returns once all answer. Raises if a port is taken."""
        if self._started:
            raise ClusterError("this DevCluster was already started")
        self._started = True
        try:
            token_files = self._token_file_per_node()
            for i, node_id in enumerate(self._sim.nodes):
                server = NodeServer(
                    node_id,
                    host=self._host,
                    port=self._base_port + i if self._base_port else 0,
                    sim=self._sim,
                    lock=self._lock,
                    addresses=self._addresses,
                    token_file=token_files.get(node_id),
                    insecure_no_auth=self._insecure,
                )
                self._servers[node_id] = server
                server.bind()
                self._addresses[node_id] = server.address
            # Serve only once every address is known: overviews name all members.
            for server in self._servers.values():
                server.start()
            if self._timers:
                self._start_timers()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop timers and every server, end open streams, remove temporary token files."""
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None
        with self._lock:
            for node_id in self._sim.nodes:
                self._sim.stop_node(node_id, _now_ms())
        for server in self._servers.values():
            server.stop()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> Self:
        return self.start() if not self._started else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- inspection ---------------------------------------------------------------------------

    @property
    def nodes(self) -> list[NodeInfo]:
        with self._lock:
            return [
                NodeInfo(node_id, self._addresses.get(node_id, ""), node.up)
                for node_id, node in self._sim.nodes.items()
            ]

    def node(self, node_id: str) -> NodeInfo:
        for info in self.nodes:
            if info.node_id == node_id:
                return info
        raise ClusterError(f"no node {node_id!r}")

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    def routes(self) -> tuple[Route, ...]:
        with self._lock:
            return self._sim.catalog.routes

    def route_for_key(self, key: bytes) -> Route:
        with self._lock:
            return self._sim.catalog.route_for_key(key)

    def groups(self) -> list[GroupInfo]:
        with self._lock:
            return [
                GroupInfo(g.group_id, g.leader, g.term, g.commit_index)
                for g in sorted(self._sim.groups.values(), key=lambda g: g.group_id)
            ]

    def group(self, group_id: int) -> GroupInfo:
        with self._lock:
            g = self._sim.group(group_id)
            return GroupInfo(g.group_id, g.leader, g.term, g.commit_index)

    def auth_metadata(self, node_id: str = "n1") -> tuple[tuple[str, str], ...]:
        """`authorization: Bearer <token>` for the token `node_id` currently holds."""
        token_file = self._server(node_id).token_file
        if token_file is None:
            return ()
        return (("authorization", f"Bearer {token_file.token()}"),)

    def rpc_counts(self, node_id: str) -> dict[str, int]:
        """Calls `node_id` has received per method (any outcome) since start or the last reset."""
        return self._server(node_id).call_counts()

    def reset_rpc_counts(self) -> None:
        for node in self.nodes:
            self._server(node.node_id).call_counts(reset=True)

    def subscriber_count(self, node_id: str) -> int:
        with self._lock:
            return len(self._sim.node(node_id).subscribers)

    # -- nodes and faults ---------------------------------------------------------------------

    def stop_node(self, node_id: str) -> None:
        """Take a node down: its server stops (streams end) and groups it led re-elect."""
        with self._lock:
            self._sim.stop_node(node_id, _now_ms())
            self._flush_generation[node_id] = self._flush_generation.get(node_id, 0) + 1
        self._server(node_id).stop()

    def start_node(self, node_id: str, *, phase_ms: int | None = None) -> None:
        """Restart a stopped node on its port, with empty KeyViz history, like a real reboot.

        Its flush timer starts at its boot, so its phase moves to the boot time (mod the
        step), or to `phase_ms` when given."""
        server = self._server(node_id)
        if server.serving:
            return
        self._check_phase(phase_ms)
        with self._lock:
            self._sim.start_node(node_id, _now_ms())
        try:
            server.start()
        except ClusterError:
            with self._lock:
                self._sim.stop_node(node_id, _now_ms())
            raise
        with self._lock:
            boot = _now_ms() % self.step_ms
            self._flush_phase[node_id] = boot if phase_ms is None else phase_ms
        if self._ticker is not None:
            self._start_flush_timer(node_id)

    def restart_node(self, node_id: str, new_phase_ms: int | None = None) -> None:
        """Stop and start a node: its KeyViz ring is lost and its flush phase moves (to
        `new_phase_ms` when given, else to its boot time mod the step)."""
        self.stop_node(node_id)
        self.start_node(node_id, phase_ms=new_phase_ms)

    def set_flush_phase(self, node_id: str, offset_ms: int) -> None:
        """Put a node's flush timer at `offset_ms` into the step (0 <= offset < step): its
        timed columns are stamped offset + k * step, plus its jitter. Kept across
        start(); a running timer moves at once (the node's ring is kept)."""
        self._check_phase(offset_ms)
        self._sim.node(node_id)  # an unknown node is an error
        with self._lock:
            self._flush_phase[node_id] = offset_ms
        if self._ticker is not None and self._server(node_id).serving:
            self._start_flush_timer(node_id)

    def flush_phase(self, node_id: str) -> int | None:
        """The node's flush phase in ms into the step (None before its timer has one)."""
        with self._lock:
            return self._flush_phase.get(node_id)

    def set_flush_jitter(
        self, node_id: str, max_ms: int = 0, late_prob: float = 0.0, late_ms: int = 0
    ) -> None:
        """How late the node's timed flushes are (see FlushJitter); 0s: exactly on phase."""
        jitter = FlushJitter(max_ms, late_prob, late_ms)
        jitter.check(self.step_ms)
        self._sim.node(node_id)
        with self._lock:
            self._flush_jitter[node_id] = jitter

    def _check_phase(self, phase_ms: int | None) -> None:
        if phase_ms is not None and not 0 <= phase_ms < self.step_ms:
            raise ValueError(f"flush phase must be within 0..{self.step_ms - 1} ms, got {phase_ms}")

    def set_fault(
        self,
        node_id: str,
        *,
        delay_s: float = 0.0,
        error: grpc.StatusCode | None = None,
        malformed: bool | Malformation = False,
        oversized: int | None = None,
        methods: Iterable[str] | None = None,
    ) -> None:
        """Make a node misbehave on `methods` (wire names; None: every method, both services).

        delay_s: answer late (stops early if the caller gives up); error: answer with that
        status; malformed: KeyViz rows break the shape rules (True: Malformation.VALUES_LENGTH);
        oversized: pad responses past this many bytes to trip a receive cap.
        """
        kind = Malformation.VALUES_LENGTH if malformed is True else malformed or None
        self._server(node_id).fault = Fault(
            delay_s=delay_s,
            error=error,
            malformed=kind,
            oversized=oversized,
            methods=frozenset(methods) if methods is not None else None,
        )

    def clear_fault(self, node_id: str) -> None:
        self._server(node_id).fault = None

    def set_admin_registered(self, node_id: str, registered: bool) -> None:
        """Serve the node with or without the Admin service (without: as if started with
        neither a token nor --adminInsecureNoAuth, so every Admin call is UNIMPLEMENTED).
        The node's gRPC server restarts on its port; simulated state is kept."""
        server = self._server(node_id)
        if registered and server.token_file is None and not server.insecure_no_auth:
            raise ClusterError(f"node {node_id} has no token file and is not insecure")
        server.admin_registered = registered
        if server.serving:
            server.stop()
            server.start()

    def set_keyviz_enabled(self, node_id: str, enabled: bool) -> None:
        """Run a node without its sampler (GetKeyVizMatrix answers UNAVAILABLE) or with a
        fresh one."""
        with self._lock:
            node = self._sim.node(node_id)
            if enabled and not node.keyviz_enabled:
                node.sampler = self._sim.new_sampler()
            node.keyviz_enabled = enabled

    def set_node_token(self, node_id: str, token: str) -> None:
        """Write the node's token file; the node accepts the new token on its next call."""
        token_file = self._server(node_id).token_file
        if token_file is None:
            raise ClusterError(f"node {node_id} has no token file")
        token_file.write(token)

    # -- Raft and catalog events --------------------------------------------------------------

    def transfer_leadership(self, group_id: int, to_node: str) -> int:
        """Make `to_node` lead the group; the term goes up by one. Returns the new term."""
        with self._lock:
            return self._sim.transfer_leadership(group_id, to_node)

    def split_route(self, route_id: int, at_key: bytes) -> tuple[int, int]:
        """Split a route at `at_key` into two routes with new ids; returns (left, right)."""
        with self._lock:
            left, right = self._sim.split_route(route_id, at_key, _now_ms())
            return left.route_id, right.route_id

    def merge_routes(self, left_id: int, right_id: int) -> int:
        """Merge two adjacent routes into one with a new id (in the left's group)."""
        with self._lock:
            return self._sim.merge_routes(left_id, right_id, _now_ms()).route_id

    # -- traffic and columns ------------------------------------------------------------------

    def inject(self, ops: Iterable[Op]) -> int:
        """Serve these operations now, deterministically; returns how many were served.

        Raises ClusterError (and counts nothing) if any op enters a down node or finds no
        leader for its key's group.
        """
        ops = list(ops)
        with self._lock:
            sim = self._sim
            counts = [op.count for op in ops]

            def column(values: list[int], dtype: type[np.generic] = np.int64) -> NDArray[Any]:
                return np.repeat(np.array(values, dtype=dtype), counts)

            batch = OpBatch(
                route_pos=column([sim.catalog.position_of_key(op.key) for op in ops]),
                is_write=column([op.kind == "write" for op in ops], np.bool_),
                nbytes=column([op.size for op in ops]),  # each repetition carries the size
                entry=column([sim.node(op.node).index for op in ops]),
                follower_local=column([op.follower_local for op in ops], np.bool_),
                adapter=column([adapter_index(op.adapter) for op in ops]),
                latency_ns=column([op.latency_ns for op in ops]),
                sub=column([sim.sub_of_key(op.key) for op in ops]),
            )
            return sim.apply(batch, strict=True)

    def inject_batch(self, batch: OpBatch) -> int:
        """Like `inject`, for operations already laid out as arrays (benchmarks that feed
        millions of operations)."""
        with self._lock:
            return self._sim.apply(batch, strict=True)

    def generate(self, seconds: float) -> int:
        """Run the workload generator over `seconds` of simulated time, now, without
        sleeping (needs workload_rate). Returns the operations served."""
        if self._generator is None:
            raise ClusterError("this DevCluster has no workload_rate")
        served = 0
        with self._lock:
            end = self._manual_t + seconds
            while self._manual_t < end:
                dt = min(WORKLOAD_TICK_S, end - self._manual_t)
                self._manual_t += dt
                batch = self._generator.batch(
                    self._manual_t, dt, self._sim.catalog, self._sim.live_indices()
                )
                served += self._sim.apply(batch, strict=False)
        return served

    def flush(self, node_id: str | None = None, at_ms: int | None = None) -> dict[str, int]:
        """Close the current KeyViz window of one node (or of every serving node with a
        sampler) as a column stamped `at_ms` (default now; it must be after the node's last
        column). Returns the column timestamp per node flushed."""
        with self._lock:
            if node_id is not None:
                targets = [node_id]
            else:
                targets = [n.node_id for n in self._sim.nodes.values() if n.up and n.keyviz_enabled]
            stamped = {}
            for target in targets:
                at = at_ms if at_ms is not None else self._next_column_ms(target)
                self._sim.flush(target, at)
                stamped[target] = at
            return stamped

    # -- internals ----------------------------------------------------------------------------

    def _server(self, node_id: str) -> NodeServer:
        try:
            return self._servers[node_id]
        except KeyError:
            raise ClusterError(f"no running node {node_id!r}") from None

    def _token_file_per_node(self) -> dict[str, TokenFile]:
        node_ids = list(self._sim.nodes)
        if self.token is not None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="devcluster-"))
            paths = {n: self._tmpdir / f"{n}.token" for n in node_ids}
            for path in paths.values():
                write_token_file(path, self.token)
        elif isinstance(self._token_files, Mapping):
            paths = {n: Path(p) for n, p in self._token_files.items()}
        elif self._token_files is not None:
            paths = dict.fromkeys(node_ids, Path(self._token_files))
        else:
            paths = {}
        return {n: TokenFile(p) for n, p in paths.items()}

    def _next_column_ms(self, node_id: str) -> int:
        last = self._sim.node(node_id).sampler.last_column_ms
        return max(_now_ms(), last + 1)

    def _start_timers(self) -> None:
        ticker = self._ticker = Ticker()
        now = time.monotonic()
        # Nodes booted at different moments: each flush timer gets its own phase.
        phases = np.random.default_rng(self._seed).uniform(0.0, 1.0, len(self._sim.nodes))
        for node_id, phase in zip(self._sim.nodes, phases.tolist(), strict=True):
            with self._lock:
                self._flush_phase.setdefault(node_id, int(phase * self.step_ms))
            self._start_flush_timer(node_id)
        if self._generator is not None:
            generator = self._generator
            last = [now]

            def workload_tick() -> None:
                t = time.monotonic()
                dt, last[0] = t - last[0], t
                with self._lock:
                    batch = generator.batch(
                        t - now, dt, self._sim.catalog, self._sim.live_indices()
                    )
                    self._sim.apply(batch, strict=False)

            ticker.every(WORKLOAD_TICK_S, workload_tick, now + WORKLOAD_TICK_S)
        if self._events_interval_s > 0:

            def event_tick() -> None:
                with self._lock:
                    log.info("event: %s", self._sim.random_event(_now_ms()))

            interval = self._events_interval_s
            ticker.every(interval, event_tick, now + interval)
        ticker.start()

    def _start_flush_timer(self, node_id: str) -> None:
        """Flush the node at its phase every step (wall clock), each flush late by its
        jitter and stamped with that moment; a newer timer for the node ends this one."""
        ticker = self._ticker
        assert ticker is not None
        step = self.step_ms
        with self._lock:
            generation = self._flush_generation[node_id] = (
                self._flush_generation.get(node_id, 0) + 1
            )
            phase = self._flush_phase[node_id]
        wall0, mono0 = _now_ms(), time.monotonic()

        def schedule(due_ms: int) -> None:
            with self._lock:
                at_ms = due_ms + self._flush_jitter[node_id].draw(self._jitter_rng)
            ticker.call_at(mono0 + (at_ms - wall0) / 1000, lambda: fire(due_ms, at_ms))

        def fire(due_ms: int, at_ms: int) -> None:
            if self._flush_generation.get(node_id) != generation:
                return  # the node stopped or its phase moved; a new timer runs
            schedule(due_ms + step)
            with self._lock:
                node = self._sim.node(node_id)
                if node.up and node.keyviz_enabled:
                    self._sim.flush(node_id, max(at_ms, node.sampler.last_column_ms + 1))

        schedule(wall0 - (wall0 - phase) % step + step)  # the first tick after now
