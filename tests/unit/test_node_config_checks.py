"""`serve` refuses to start on a broken node configuration, and says why."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import override_settings

from cluster.checks import check_node_config
from elastickv_admin.lib.config import PortalConfig


def problems(config: PortalConfig) -> list[tuple[str, str]]:
    with override_settings(ELASTICKV_ADMIN=config):
        return [(m.id or "", m.msg) for m in check_node_config(None)]


def ids(config: PortalConfig) -> set[str]:
    return {i for i, _ in problems(config)}


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("abc123-token\n")
    return path


def test_a_valid_configuration_has_no_problems(token_file):
    assert problems(PortalConfig(seeds=("127.0.0.1:50051",), node_token_file=str(token_file))) == []


def test_no_seeds_is_an_error(token_file):
    assert "elastickv.E001" in ids(PortalConfig(node_token_file=str(token_file)))


def test_seed_without_port_is_an_error(token_file):
    found = problems(PortalConfig(seeds=("node1",), node_token_file=str(token_file)))
    assert ("elastickv.E002", "--nodes entry 'node1' is not host:port") in found


def test_neither_token_nor_insecure_is_an_error():
    assert ids(PortalConfig(seeds=("a:1",))) == {"elastickv.E004"}


def test_insecure_no_auth_warns():
    assert ids(PortalConfig(seeds=("a:1",), insecure_no_auth=True)) == {"elastickv.W001"}


def test_empty_token_file_is_an_error(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    assert ids(PortalConfig(seeds=("a:1",), node_token_file=str(empty))) == {"elastickv.E009"}


def test_token_file_over_4_kib_is_an_error_that_does_not_quote_the_token(tmp_path):
    big = tmp_path / "big"
    big.write_text("secretvalue" * 400)
    found = problems(PortalConfig(seeds=("a:1",), node_token_file=str(big)))
    assert [i for i, _ in found] == ["elastickv.E008"]
    assert "secretvalue" not in found[0][1]


def test_missing_token_file_is_an_error(tmp_path):
    assert ids(PortalConfig(seeds=("a:1",), node_token_file=str(tmp_path / "nope"))) == {
        "elastickv.E007"
    }


def test_skip_verify_with_a_ca_file_contradicts(token_file, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    config = PortalConfig(
        seeds=("a:1",),
        node_token_file=str(token_file),
        tls_ca_cert_file=str(ca),
        tls_insecure_skip_verify=True,
    )
    assert ids(config) == {"elastickv.E005"}
