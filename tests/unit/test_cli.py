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


def test_demo_step_is_the_devclusters_and_must_be_a_duration():
    assert cli.demo_step_ms("2s") == 2_000
    with pytest.raises(SystemExit, match="--step: the devcluster needs a duration"):
        cli.demo_step_ms("auto")
    with pytest.raises(SystemExit, match="--step: step 'soon' is not a duration"):
        cli.demo_step_ms("soon")
