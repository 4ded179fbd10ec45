"""`python -m devcluster`: run a local elastickv-compatible cluster in the foreground.

    python -m devcluster --nodes 3 --base-port 50051 --token-file PATH --step 2s

Prints `node <id> <host:port>` per node once every node serves, then runs until
SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from devcluster.cluster import DevCluster, FlushJitter
from devcluster.simulation import ClusterError, Profile
from elastickv_admin.lib.env import parse_duration


def _duration(raw: str) -> float:
    try:
        return parse_duration(raw)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m devcluster",
        description="Run N simulated elastickv nodes (Admin + Distribution gRPC) on loopback.",
    )
    p.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    p.add_argument("--groups", type=int, default=3, help="Raft groups (default 3)")
    p.add_argument("--routes", type=int, default=8, help="initial routes (default 8)")
    p.add_argument(
        "--base-port",
        type=int,
        default=50051,
        help="port of n1; n2, n3, ... take the next ones (0: free ports)",
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--token-file", type=Path, help="admin bearer token file, re-read on change")
    auth.add_argument(
        "--adminInsecureNoAuth", action="store_true", help="serve Admin without any token check"
    )
    p.add_argument("--step", type=_duration, default=60.0, help="KeyViz step: 2s, 500ms, 1m")
    p.add_argument("--history-columns", type=int, default=1440, help="KeyViz ring size")
    p.add_argument(
        "--flush-jitter",
        type=_duration,
        help="flushes are late by up to this (default: 280ms upstream, 0 design)",
    )
    p.add_argument(
        "--late-flush",
        type=_duration,
        default=None,
        help="a late flush is late by up to this (default: 2s upstream, 0 design)",
    )
    p.add_argument(
        "--late-flush-prob",
        type=float,
        default=None,
        help="share of flushes that are late flushes (default: 0.02 upstream, 0 design)",
    )
    p.add_argument(
        "--flush-phase",
        action="append",
        default=[],
        metavar="NODE=DURATION",
        help="a node's flush phase within the step, e.g. n2=29.9s (repeatable)",
    )
    p.add_argument(
        "--profile",
        choices=[x.value for x in Profile],
        default=Profile.DESIGN.value,
        help="upstream: today's nodes; design: everything DESIGN.md asks (default)",
    )
    p.add_argument(
        "--maxTrackedRoutes", type=int, default=10_000, help="routes tracked before coarsening"
    )
    p.add_argument("--rate", type=float, default=200.0, help="workload ops/s (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--events-interval",
        type=_duration,
        default=0.0,
        help="a random leadership transfer, split or merge this often (0: off)",
    )
    p.add_argument("--sample-rate", type=float, default=1.0, help="design sub-sampling probability")
    p.add_argument("--adapter-rows", action="store_true", help="rows per route and adapter")
    p.add_argument("--log-level", default="INFO")
    return p


def _jitter(args: argparse.Namespace, step_ms: int) -> FlushJitter | None:
    """The flags' flush jitter, over the profile's default; None: the default."""
    given = (args.flush_jitter, args.late_flush, args.late_flush_prob)
    if all(v is None for v in given):
        return None
    base = FlushJitter.upstream(step_ms) if args.profile == Profile.UPSTREAM else FlushJitter()
    jitter = FlushJitter(
        max_ms=base.max_ms if args.flush_jitter is None else round(args.flush_jitter * 1000),
        late_prob=base.late_prob if args.late_flush_prob is None else args.late_flush_prob,
        late_ms=base.late_ms if args.late_flush is None else round(args.late_flush * 1000),
    )
    jitter.check(step_ms)
    return jitter


def _phases(specs: Sequence[str]) -> dict[str, int]:
    phases = {}
    for spec in specs:
        node_id, sep, raw = spec.partition("=")
        if not sep or not node_id:
            raise ValueError(f"--flush-phase takes NODE=DURATION, got {spec!r}")
        phases[node_id.strip()] = round(parse_duration(raw) * 1000)
    return phases


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    step_ms = round(args.step * 1000)
    if step_ms < 1:
        print("devcluster: --step must be at least 1ms", file=sys.stderr)
        return 2
    try:
        jitter = _jitter(args, step_ms)
        phases = _phases(args.flush_phase)
    except ValueError as e:
        print(f"devcluster: {e}", file=sys.stderr)
        return 2
    if args.token_file is None and not args.adminInsecureNoAuth:
        print(
            "devcluster: neither --token-file nor --adminInsecureNoAuth: nodes do not register "
            "Admin (every Admin call is UNIMPLEMENTED), as real nodes do",
            file=sys.stderr,
        )
    try:
        cluster = DevCluster(
            args.nodes,
            groups=args.groups,
            routes=args.routes,
            profile=args.profile,
            step_ms=step_ms,
            history_columns=args.history_columns,
            token_files=args.token_file,
            insecure_no_auth=args.adminInsecureNoAuth,
            max_tracked_routes=args.maxTrackedRoutes,
            workload_rate=args.rate or None,
            seed=args.seed,
            host=args.host,
            base_port=args.base_port,
            timers=True,
            events_interval_s=args.events_interval,
            sample_rate=args.sample_rate,
            adapter_rows=args.adapter_rows,
            flush_jitter=jitter,
            flush_phases=phases,
        ).start()
    except (ClusterError, ValueError) as e:  # a taken port, a bad token file or setting
        print(f"devcluster: {e}", file=sys.stderr)
        return 1
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        for node in cluster.nodes:
            print(f"node {node.node_id} {node.address}", flush=True)
        while not stopping.wait(1.0):
            pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
