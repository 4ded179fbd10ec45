"""The command line maps elastickv's flag names onto the settings' environment."""

from __future__ import annotations

import os

import pytest

from elastickv_admin import cli


def test_serve_flags_become_environment_variables(monkeypatch):
    for env in [*cli.FLAG_ENV.values(), *cli.BOOL_FLAG_ENV.values()]:
        monkeypatch.delenv(env, raising=False)
    args = cli.build_parser().parse_args(
        [
            "serve",
            "--nodes",
            "a:1,b:2",
            "--nodeTokenFile",
            "/etc/token",
            "--nodesRefreshInterval",
            "30s",
            "--maxDiscoveredNodes",
            "64",
            "--nodeTLSInsecureSkipVerify",
            "--keyvizStep",
            "1m30s",
            "--bindAddr",
            "0.0.0.0:9000",
        ]
    )
    cli._apply_flags(args)
    assert os.environ["ELASTICKV_ADMIN_NODES"] == "a:1,b:2"
    assert os.environ["ELASTICKV_ADMIN_NODE_TOKEN_FILE"] == "/etc/token"
    assert os.environ["ELASTICKV_ADMIN_NODES_REFRESH_INTERVAL"] == "30s"
    assert os.environ["ELASTICKV_ADMIN_MAX_DISCOVERED_NODES"] == "64"
    assert os.environ["ELASTICKV_ADMIN_NODE_TLS_INSECURE_SKIP_VERIFY"] == "true"
    assert os.environ["ELASTICKV_ADMIN_KEYVIZ_STEP"] == "1m30s"
    assert "ELASTICKV_ADMIN_INSECURE_NO_AUTH" not in os.environ
    assert args.bindAddr == "0.0.0.0:9000"


def test_bind_address_defaults_to_loopback_8000():
    assert cli.build_parser().parse_args(["serve"]).bindAddr == "127.0.0.1:8000"


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("[::1]:9000", ("::1", 9000)),
        (":8080", ("127.0.0.1", 8080)),
    ],
)
def test_bind_address_parsing(bind, expected):
    assert cli._split_bind(bind) == expected


def test_bad_bind_address_says_what_to_fix():
    with pytest.raises(SystemExit, match="--bindAddr must be host:port"):
        cli._split_bind("localhost")


def test_serve_keeps_startup_objects_out_of_full_collections():
    import gc
    import sys

    gc.unfreeze()
    try:
        cli.freeze_startup_objects()
        assert "elastickv_admin.asgi" in sys.modules  # the application is loaded first
        assert gc.get_freeze_count() > 10_000  # Django, gRPC, numpy and the app
    finally:
        gc.unfreeze()


def test_proxy_headers_flag_means_one_trusted_proxy_when_hops_are_unset(monkeypatch):
    monkeypatch.delenv(cli.HOPS_ENV, raising=False)
    cli._apply_flags(cli.build_parser().parse_args(["serve", "--proxyHeaders"]))
    assert os.environ[cli.HOPS_ENV] == "1"


def test_proxy_headers_flag_keeps_a_larger_hop_count(monkeypatch):
    monkeypatch.setenv(cli.HOPS_ENV, "2")
    cli._apply_flags(cli.build_parser().parse_args(["serve", "--proxyHeaders"]))
    assert os.environ[cli.HOPS_ENV] == "2"


def test_proxy_headers_flag_with_zero_trusted_hops_is_a_startup_error(monkeypatch):
    monkeypatch.setenv(cli.HOPS_ENV, "0")
    args = cli.build_parser().parse_args(["serve", "--proxyHeaders"])
    with pytest.raises(
        SystemExit, match="--proxyHeaders needs ELASTICKV_ADMIN_TRUSTED_PROXY_HOPS >= 1"
    ):
        cli._apply_flags(args)


def test_serve_never_hands_proxy_headers_to_daphne(monkeypatch):
    # daphne's --proxy-headers takes the LEFTMOST X-Forwarded-For entry as the client.
    seen: list[list[str]] = []
    from daphne.cli import CommandLineInterface

    monkeypatch.setattr(CommandLineInterface, "run", lambda self, argv: seen.append(argv))
    monkeypatch.setattr(cli, "freeze_startup_objects", lambda: None)
    cli.run_daphne("127.0.0.1:8000")
    assert seen
    assert not any(arg.startswith("--proxy") for arg in seen[0])
    # Oversized WebSocket messages are dropped by daphne, not buffered up to its 1 MiB default.
    at = seen[0].index("--websocket-max-message-size")
    assert int(seen[0][at + 1]) == cli.WS_MAX_MESSAGE_BYTES < 1024 * 1024


def test_a_shutdown_held_up_by_a_stuck_thread_still_ends_at_the_deadline():
    # What SIGTERM starts in `serve` (a "before shutdown" trigger): here the interpreter's
    # exit waits on a worker thread that never returns, as a call stuck in a thread would.
    import subprocess
    import sys

    script = (
        "import threading; from elastickv_admin import cli; "
        "threading.Thread(target=threading.Event().wait).start(); "
        "cli.start_exit_watchdog(0.5)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "shutdown did not finish within 0.5 s; exiting now" in done.stderr


def test_demo_step_is_the_devclusters_and_must_be_a_duration():
    assert cli.demo_step_ms("2s") == 2_000
    with pytest.raises(SystemExit, match="--step: the devcluster needs a duration"):
        cli.demo_step_ms("auto")
    with pytest.raises(SystemExit, match="--step: step 'soon' is not a duration"):
        cli.demo_step_ms("soon")
