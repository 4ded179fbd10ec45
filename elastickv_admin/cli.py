"""`elastickv-admin`: the portal's command line.

    elastickv-admin serve --nodes 10.0.0.1:50051 --nodeTokenFile /etc/ekv/token
    elastickv-admin demo

Flags are the same knobs as elastickv's own admin binary. They are turned into
the environment variables settings.py reads, so flags and environment are one
path into the configuration.
"""

from __future__ import annotations

import argparse
import gc
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from demo.commands import COMMANDS as DEMO_COMMANDS

# flag -> environment variable settings.py reads
FLAG_ENV = {
    "nodes": "ELASTICKV_ADMIN_NODES",
    "nodeTokenFile": "ELASTICKV_ADMIN_NODE_TOKEN_FILE",
    "nodesRefreshInterval": "ELASTICKV_ADMIN_NODES_REFRESH_INTERVAL",
    "maxDiscoveredNodes": "ELASTICKV_ADMIN_MAX_DISCOVERED_NODES",
    "nodeTLSCACertFile": "ELASTICKV_ADMIN_NODE_TLS_CA_CERT_FILE",
    "nodeTLSServerName": "ELASTICKV_ADMIN_NODE_TLS_SERVER_NAME",
    "dataDir": "ELASTICKV_ADMIN_DATA_DIR",
    "keyvizStep": "ELASTICKV_ADMIN_KEYVIZ_STEP",
}
BOOL_FLAG_ENV = {
    "adminInsecureNoAuth": "ELASTICKV_ADMIN_INSECURE_NO_AUTH",
    "nodeTLSInsecureSkipVerify": "ELASTICKV_ADMIN_NODE_TLS_INSECURE_SKIP_VERIFY",
}
DEFAULT_BIND = "127.0.0.1:8000"
# daphne drops WebSocket messages larger than this before they reach the consumer, whose
# own limit (accounts/ws.py MAX_FRAME_BYTES, 4 KiB) answers smaller oversize frames.
WS_MAX_MESSAGE_BYTES = 64 * 1024


def _add_serve_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bindAddr",
        default=os.environ.get("ELASTICKV_ADMIN_BIND_ADDR", DEFAULT_BIND),
        help="host:port to listen on (default %(default)s)",
    )
    parser.add_argument(
        "--dataDir", help="where the SQLite database and collected static files live"
    )
    parser.add_argument(
        "--proxyHeaders",
        action="store_true",
        help="deprecated: one trusted reverse proxy in front "
        "(ELASTICKV_ADMIN_TRUSTED_PROXY_HOPS=1 unless set >= 1)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elastickv-admin", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="migrate the database and serve the portal with daphne")
    serve.add_argument("--nodes", help="comma-separated seed gRPC addresses (host:port)")
    serve.add_argument(
        "--nodeTokenFile", help="file holding the bearer token for the nodes' Admin service"
    )
    serve.add_argument(
        "--adminInsecureNoAuth",
        action="store_true",
        help="send no token to nodes (development only)",
    )
    serve.add_argument("--nodesRefreshInterval", help="membership cache lifetime, e.g. 15s")
    serve.add_argument("--maxDiscoveredNodes", help="cap on discovered nodes (default 512)")
    serve.add_argument(
        "--nodeTLSCACertFile", help="CA bundle for a TLS-terminating proxy in front of nodes"
    )
    serve.add_argument("--nodeTLSServerName", help="TLS server name to verify for nodes")
    serve.add_argument(
        "--nodeTLSInsecureSkipVerify",
        action="store_true",
        help="use TLS to nodes but do not verify certificates",
    )
    serve.add_argument(
        "--keyvizStep",
        help="the nodes' --keyvizStep (default 60s), or auto to infer it from their columns",
    )
    _add_serve_flags(serve)

    demo = sub.add_parser("demo", help="run a local 3-node devcluster and the portal wired to it")
    _add_serve_flags(demo)
    demo.add_argument("--clusterNodes", type=int, default=3, help="devcluster size (default 3)")
    demo.add_argument(
        "--clusterBasePort",
        type=int,
        default=0,
        help="first gRPC port of the devcluster (default: free ports)",
    )
    demo.add_argument(
        "--step", default="2s", help="devcluster KeyViz step, also the portal's (default 2s)"
    )
    demo.add_argument(
        "--profile",
        choices=("design", "upstream"),
        default="design",
        help="design: nodes provide everything DESIGN.md asks; upstream: exactly what "
        "today's real nodes provide (default %(default)s)",
    )
    demo.add_argument(
        "--preset",
        choices=("demo", "small"),
        default="demo",
        help="demo: a production-like cluster (6 Raft groups, 300 routes, every adapter's "
        "keys, a week of synthetic history); small: 3 groups, 8 routes, no history",
    )

    ctl = sub.add_parser(
        "demo-ctl",
        help="break the running demo's cluster from a second terminal",
        description="Commands: status; "
        + "; ".join(f"{name} NODE {args}".rstrip() for name, (args, _) in DEMO_COMMANDS.items())
        + ". Example: elastickv-admin demo-ctl stop n2",
    )
    ctl.add_argument(
        "--dataDir", help="the demo's data directory (default ./var/demo, as the demo's)"
    )
    ctl.add_argument("args", nargs="+", metavar="COMMAND", help="e.g. status, stop n2, slow n2 3")
    return parser


HOPS_ENV = "ELASTICKV_ADMIN_TRUSTED_PROXY_HOPS"
DEMO_DATA_DIR = Path("var") / "demo"


def _apply_proxy_headers(args: argparse.Namespace) -> None:
    """--proxyHeaders is an alias of ELASTICKV_ADMIN_TRUSTED_PROXY_HOPS=1: the one setting that
    decides which X-Forwarded-For / -Proto entries are believed (elastickv_admin/lib/net.py). An
    explicit 0 next to it is a contradiction, refused rather than guessed."""
    if not getattr(args, "proxyHeaders", False):
        return
    raw = os.environ.get(HOPS_ENV, "").strip()
    if not raw:
        os.environ[HOPS_ENV] = "1"
    elif raw.lstrip("+-").isdigit() and int(raw) < 1:
        raise SystemExit(
            f"--proxyHeaders needs {HOPS_ENV} >= 1 (it is {raw}): set {HOPS_ENV} to the number "
            "of reverse proxies in front and drop --proxyHeaders"
        )


def _apply_flags(args: argparse.Namespace) -> None:
    for flag, env in FLAG_ENV.items():
        value = getattr(args, flag, None)
        if value:
            os.environ[env] = str(value)
    for flag, env in BOOL_FLAG_ENV.items():
        if getattr(args, flag, False):
            os.environ[env] = "true"
    _apply_proxy_headers(args)


def _split_bind(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"--bindAddr must be host:port, got {bind!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _metrics_dir(data_dir: Path) -> None:
    """Point prometheus_client at a directory shared by every portal process on this
    data directory (must happen before it is imported), and drop the live gauges of
    processes that are gone."""
    path = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(data_dir / "metrics")))
    path.mkdir(parents=True, exist_ok=True)
    from prometheus_client import multiprocess

    for sample in path.glob("gauge_live*_*.db"):
        pid = int(sample.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
        except PermissionError:
            pass


def prepare() -> None:
    """Set Django up, refuse to start on configuration errors, migrate, seed the node token
    from --nodeTokenFile on a first start, collect static."""
    import django
    from django.conf import settings
    from django.core.management import call_command

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "elastickv_admin.settings")
    _metrics_dir(Path(settings.DATA_DIR))
    django.setup()
    call_command("check", fail_level="ERROR")
    call_command("migrate", interactive=False, verbosity=0)
    from cluster.node_token import ensure_node_token

    ensure_node_token(warn=False)  # seed only: the token store warns on its first read
    if not settings.SERVESTATIC_USE_FINDERS:
        call_command("collectstatic", interactive=False, verbosity=0)


DEMO_ADMIN = "admin"


def ensure_demo_admin(data_dir: Path) -> str:
    """The demo's first admin (a superuser: every role), created once with a generated
    password kept in the data directory (0600). Returns the password. `serve` never
    creates users."""
    from django.contrib.auth.models import User

    from accounts.actions import do_record_superuser_created, generate_password
    from audit.context import command_context

    password_file = data_dir / "demo-admin-password"
    user = User.objects.filter(username=DEMO_ADMIN).first()
    if user is not None and password_file.exists():
        return password_file.read_text(encoding="utf-8").strip()
    password = generate_password()
    password_file.write_text(password + "\n", encoding="utf-8")
    password_file.chmod(0o600)
    with command_context("elastickv-admin demo") as context:
        if user is None:
            from django.db import transaction

            with transaction.atomic():
                user = User.objects.create_superuser(DEMO_ADMIN, password=password)
                do_record_superuser_created(context.actor, user, via="demo")
        else:
            from accounts.actions import do_reset_password

            password = do_reset_password(context.actor, user)
            password_file.write_text(password + "\n", encoding="utf-8")
    return password


def _warn_if_no_users() -> None:
    from django.contrib.auth.models import User

    if not User.objects.exists():
        print(
            "no portal users yet: create the first admin with\n"
            "  DJANGO_SUPERUSER_USERNAME=admin DJANGO_SUPERUSER_PASSWORD=... "
            "python manage.py createsuperuser --noinput",
            file=sys.stderr,
            flush=True,
        )


SHUTDOWN_CLOSE_CODE = 1001  # "going away"
SHUTDOWN_REASON = "portal shutting down"
# How long a shutdown waits for the viewers to answer the close (the reactor drops what is
# still unsent when it disconnects).
SHUTDOWN_CLOSE_WAIT_S = 1.0
# However the shutdown goes (a worker thread stuck in a call, thousands of channels to tear
# down), the process is gone this long after SIGTERM/SIGINT.
SHUTDOWN_DEADLINE_S = 20.0
APPLICATION_CLOSE_TIMEOUT_S = 3


def start_exit_watchdog(deadline_s: float = SHUTDOWN_DEADLINE_S) -> None:
    """Shutdown began: end the process at ``deadline_s`` if it has not ended by then (a
    daemon thread, so it never holds the exit up itself)."""

    def expire() -> None:
        time.sleep(deadline_s)
        print(
            f"shutdown did not finish within {deadline_s:g} s; exiting now",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)

    threading.Thread(target=expire, name="shutdown-watchdog", daemon=True).start()


def _shutdown_live(cli: Any) -> Any:
    """Before daphne cancels the applications (SIGTERM/SIGINT): close every open
    WebSocket with 1001 and a reason (daphne's websocket.close carries no reason, so
    this goes to the protocols directly), stop the KeyViz collector and release its
    lease, so another portal process takes over at once. Returns the Deferred the
    reactor waits for."""
    import asyncio

    from daphne.ws_protocol import WebSocketProtocol
    from twisted.internet import defer

    from cluster.runtime import node_client
    from keyviz.collector import close_collector

    server = getattr(cli, "server", None)
    closing = [
        protocol
        for protocol in list(getattr(server, "connections", {}))
        if isinstance(protocol, WebSocketProtocol) and protocol.state == protocol.STATE_OPEN
    ]
    for protocol in closing:
        # sendClose only lets applications send 1000 or 3000-4999; 1001 ("going away",
        # RFC 6455 7.4.1) is the server's own to send, through the frame-level call.
        try:
            protocol.sendCloseFrame(
                code=SHUTDOWN_CLOSE_CODE, reasonUtf8=SHUTDOWN_REASON.encode(), isReply=False
            )
        except Exception as exc:  # one bad socket must not keep the lease held
            print(f"shutdown: cannot close a WebSocket: {exc}", file=sys.stderr)

    async def closed() -> None:
        for _ in range(int(SHUTDOWN_CLOSE_WAIT_S / 0.02)):
            if all(p.state == p.STATE_CLOSED for p in closing):
                return
            await asyncio.sleep(0.02)

    async def shutdown() -> None:
        try:
            await asyncio.gather(closed(), close_collector())
        finally:
            await node_client().close()  # this loop's channels, before the loop goes

    done = defer.Deferred.fromFuture(asyncio.ensure_future(shutdown()))
    done.addErrback(lambda failure: print(f"live shutdown: {failure}", file=sys.stderr))
    return done


def _start_collector() -> None:
    """Every serve (and demo) process runs a KeyViz collector on daphne's event loop; it
    works only while it holds the cluster's collector lease (keyviz/collector.py)."""
    import asyncio

    from keyviz.collector import start_collector

    # On the loop (start_collector takes the running loop's collector).
    asyncio.get_event_loop().call_soon(start_collector)


def freeze_startup_objects() -> None:
    """Keep everything loaded at startup (Django, gRPC, numpy, the app: hundreds of
    thousands of objects that live as long as the process) out of the collector's full
    passes, which otherwise stall a request now and then for ~100 ms."""
    import elastickv_admin.asgi  # noqa: F401  (the application, loaded before the freeze)

    gc.collect()
    gc.freeze()


def _uncap_outbound_websocket_messages(cli: Any) -> None:
    """--websocket-max-message-size bounds what viewers SEND; autobahn applies the same
    limit to what the portal sends, which would drop every live heatmap frame over
    64 KiB (a few hundred rows). The portal's own frames are bounded by the row budget."""
    from daphne.ws_protocol import WebSocketProtocol

    class OutboundUncapped(WebSocketProtocol):  # type: ignore[misc]
        def sendMessage(self, *args: Any, **kwargs: Any) -> Any:
            cap: int = getattr(self, "maxMessagePayloadSize", 0)
            self.maxMessagePayloadSize = 0
            try:
                return super().sendMessage(*args, **kwargs)
            finally:
                self.maxMessagePayloadSize = cap

    # Before the reactor accepts the first connection (daphne made the factory in run()).
    factory = getattr(getattr(cli, "server", None), "ws_factory", None)
    if factory is not None:
        factory.protocol = OutboundUncapped


def run_daphne(bind: str) -> None:
    from daphne.cli import CommandLineInterface
    from twisted.internet import reactor

    host, port = _split_bind(bind)
    # Never daphne's --proxy-headers: it replaces the client with the LEFTMOST X-Forwarded-For
    # entry (the caller's choice) and the scheme with X-Forwarded-Proto. The scope keeps the
    # TCP peer; elastickv_admin/lib/net.py applies ELASTICKV_ADMIN_TRUSTED_PROXY_HOPS.
    # Frames beyond the stream's own limit are refused by daphne before any parsing.
    argv = ["-b", host, "-p", str(port), "--access-log", os.devnull]
    argv += ["--websocket-max-message-size", str(WS_MAX_MESSAGE_BYTES)]
    # A WebSocket consumer cancelled while channels-redis blocks in receive() can stay
    # "cancelling" until daphne kills it (channels#1119, channels_redis#81): daphne's 10 s
    # default held a SIGTERM'd portal that long. Our consumers clean up well within this.
    argv += ["--application-close-timeout", str(APPLICATION_CLOSE_TIMEOUT_S)]
    argv.append("elastickv_admin.asgi:application")
    cli = CommandLineInterface()
    reactor.callWhenRunning(_uncap_outbound_websocket_messages, cli)
    freeze_startup_objects()
    # Registered before daphne's own trigger (which cancels the applications): run first.
    reactor.addSystemEventTrigger("before", "shutdown", start_exit_watchdog)  # type: ignore[arg-type]
    reactor.addSystemEventTrigger("before", "shutdown", _shutdown_live, cli)  # type: ignore[arg-type]
    reactor.callWhenRunning(_start_collector)
    cli.run(argv)


def serve(args: argparse.Namespace) -> None:
    _apply_flags(args)
    prepare()
    _warn_if_no_users()
    run_daphne(args.bindAddr)


def demo_step_ms(text: str) -> int:
    """The demo's --step: a duration (the devcluster needs a real step, not auto)."""
    from keyviz.align import parse_step

    try:
        step_ms = parse_step(text)
    except ValueError as exc:
        raise SystemExit(f"--step: {exc}") from None
    if step_ms is None:
        raise SystemExit("--step: the devcluster needs a duration like 2s, not auto")
    return step_ms


def _demo_data_dir(args: argparse.Namespace) -> Path:
    return Path(args.dataDir or Path.cwd() / DEMO_DATA_DIR).resolve()


def demo(args: argparse.Namespace) -> None:
    from devcluster import DevCluster
    from devcluster.demo import demo_cluster_options

    started = time.monotonic()
    step_ms = demo_step_ms(args.step)
    data_dir = _demo_data_dir(args)
    data_dir.mkdir(parents=True, exist_ok=True)
    token_file = data_dir / "node-token"
    if not token_file.exists():
        token_file.write_text(secrets.token_urlsafe(32) + "\n", encoding="utf-8")
        token_file.chmod(0o600)
    token = token_file.read_text(encoding="utf-8").strip()

    preset: dict[str, Any] = (
        demo_cluster_options() if args.preset == "demo" else {"workload_rate": 400.0}
    )
    cluster = DevCluster(
        nodes=args.clusterNodes,
        profile=args.profile,
        step_ms=step_ms,
        token=token,
        base_port=args.clusterBasePort,
        timers=True,
        **preset,
    )
    _apply_proxy_headers(args)
    # The synthetic history ends on the step grid at the cluster's start (its first
    # live columns come after); the banner says when.
    history_before_ms = time.time_ns() // 1_000_000 // step_ms * step_ms
    catalog = cluster.routes()
    cluster.start()
    os.environ["ELASTICKV_ADMIN_DEMO"] = "true"
    os.environ["ELASTICKV_ADMIN_DEMO_PROFILE"] = args.profile
    os.environ["ELASTICKV_ADMIN_DEMO_HISTORY_BEFORE_MS"] = (
        str(history_before_ms) if args.preset == "demo" else "0"
    )
    os.environ["ELASTICKV_ADMIN_DATA_DIR"] = str(data_dir)
    os.environ["ELASTICKV_ADMIN_NODES"] = ",".join(node.address for node in cluster.nodes)
    os.environ["ELASTICKV_ADMIN_NODE_TOKEN_FILE"] = str(token_file)
    # The portal's KeyViz step is the devcluster's, as --keyvizStep matches the nodes'.
    os.environ["ELASTICKV_ADMIN_KEYVIZ_STEP"] = f"{step_ms}ms"
    for node in cluster.nodes:
        print(f"devcluster node {node.node_id} {node.address}", flush=True)
    server = None
    try:
        prepare()
        password = ensure_demo_admin(data_dir)
        if args.preset == "demo":
            _fill_demo_history(cluster, preset, catalog, history_before_ms)
        server = _start_demo_controls(cluster, data_dir)
        print(
            f"portal: http://{args.bindAddr}/  (data in {data_dir}; Ctrl-C stops both)", flush=True
        )
        print(f"log in at http://{args.bindAddr}/login/ as {DEMO_ADMIN} / {password}", flush=True)
        print(
            f"break it from another terminal: elastickv-admin demo-ctl --dataDir {data_dir} "
            "stop n2  (status, start, slow, heal, wrong-token, fix-token, keyviz-off, "
            "keyviz-on, phase)",
            flush=True,
        )
        print(f"demo ready in {time.monotonic() - started:.1f} s", flush=True)
        run_daphne(args.bindAddr)
    finally:
        if server is not None:
            server.stop()
        cluster.stop()


def _fill_demo_history(cluster: Any, preset: dict[str, Any], catalog: Any, before_ms: int) -> None:
    from demo.history import fill_history

    report = fill_history(
        preset["keyspace"],
        catalog,
        rate=preset["workload_rate"],
        step_ms=cluster.step_ms,
        now_ms=before_ms,
        nodes=[n.node_id for n in cluster.nodes],
        design=cluster.profile == "design",
        key_buckets=preset["key_buckets_per_route"],
    )
    print(
        f"synthetic KeyViz history: {report.columns} columns, {report.rows} rows, "
        f"{report.seconds:.1f} s",
        flush=True,
    )


def _start_demo_controls(cluster: Any, data_dir: Path) -> Any:
    """The Demo card's and demo-ctl's controls, on this process's devcluster."""
    from demo import runtime
    from demo.control import SOCKET_NAME, ControlServer, DemoControls

    runtime.install(DemoControls(cluster))
    return ControlServer(
        data_dir / SOCKET_NAME,
        lambda words, actor: runtime.run_audited(words, actor=actor, via="demo-ctl"),
    ).start()


def demo_ctl(args: argparse.Namespace) -> None:
    """Send one command to the demo running on --dataDir; exit 1 when it is refused."""
    import getpass

    from demo.control import SOCKET_NAME, send

    path = _demo_data_dir(args) / SOCKET_NAME
    if not path.exists():
        raise SystemExit(f"no demo runs on {path.parent} (start it with elastickv-admin demo)")
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    try:
        ok, message = send(path, args.args, actor=f"demo-ctl:{user}")
    except OSError as exc:
        raise SystemExit(f"cannot reach the demo on {path}: {exc.strerror or exc}") from None
    print(message, file=sys.stdout if ok else sys.stderr)
    if not ok:
        raise SystemExit(1)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    # daphne handles SIGINT itself; SIGTERM should end the process the same way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    {"serve": serve, "demo": demo, "demo-ctl": demo_ctl}[args.command](args)


if __name__ == "__main__":
    main()
