"""Startup checks of the node configuration: refuse to serve a broken setup."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Error, Warning, register

from cluster.tokens import TokenFileError, read_token_file
from elastickv_admin.lib.config import portal_config


@register("elastickv")
def check_node_config(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    config = portal_config()
    problems: list[CheckMessage] = []
    if not config.seeds:
        problems.append(
            Error(
                "no nodes configured",
                hint="pass --nodes host:port[,host:port...]",
                id="elastickv.E001",
            )
        )
    for seed in config.seeds:
        host, sep, port = seed.rpartition(":")
        if not sep or not host or not port.isdigit():
            problems.append(Error(f"--nodes entry {seed!r} is not host:port", id="elastickv.E002"))
    if config.insecure_no_auth:
        if config.node_token_file:
            problems.append(
                Error(
                    "--adminInsecureNoAuth and --nodeTokenFile both given",
                    hint="pick one",
                    id="elastickv.E003",
                )
            )
        problems.append(
            Warning(
                "--adminInsecureNoAuth: no bearer token is sent to nodes (development only)",
                id="elastickv.W001",
            )
        )
    elif not config.node_token_file:
        problems.append(
            Error(
                "no node token configured",
                hint="pass --nodeTokenFile FILE, or --adminInsecureNoAuth for development",
                id="elastickv.E004",
            )
        )
    else:
        problems.extend(_check_token_file(Path(config.node_token_file)))
    if config.tls_insecure_skip_verify and config.tls_ca_cert_file:
        problems.append(
            Error(
                "--nodeTLSInsecureSkipVerify and --nodeTLSCACertFile contradict each other",
                hint="a CA file is for verifying; skip-verify turns verification off",
                id="elastickv.E005",
            )
        )
    if config.tls_ca_cert_file and not Path(config.tls_ca_cert_file).is_file():
        problems.append(
            Error(
                f"--nodeTLSCACertFile {config.tls_ca_cert_file!r} is not a readable file",
                id="elastickv.E006",
            )
        )
    return problems


# Which startup check each broken token-file rule is reported as.
TOKEN_FILE_CHECKS = {
    "unreadable": "elastickv.E007",
    "too_large": "elastickv.E008",
    "empty": "elastickv.E009",
    "not_text": "elastickv.E010",
}


def _check_token_file(path: Path) -> list[CheckMessage]:
    """The nodes' own token-file rules (cluster.tokens.read_token_file); the message names
    the path and the rule, never the token."""
    try:
        read_token_file(path)
    except TokenFileError as exc:
        return [Error(f"--nodeTokenFile: {exc}", id=TOKEN_FILE_CHECKS[exc.kind])]
    return []
