"""Settings -> Node token: who may act, what a start shows (once), what a bad paste says, that
two admins cannot start two rotations, and that no step leaves a token in clear.

No node answers here (the seed is 127.0.0.1:1); tests/integration/cluster/ rolls a real
devcluster through the same pages.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterator
from urllib.parse import unquote

import pytest
from django.test import Client, override_settings

from accounts.actions import do_update_site_settings
from audit.models import AuditEvent
from cluster import node_token
from cluster.models import NodeTokenCheck, NodeTokenRecord
from cluster.tokens import fingerprint
from elastickv_admin.lib.config import PortalConfig
from tests.helpers import database_dump, decrypted_values

CURRENT = "the-current-node-token-0123456789"
PASTED = "a-pasted-next-token-0123456789abcdef"
PAGE = "/settings/node-token/"
START = "/settings/node-token/start/"
FINISH = "/settings/node-token/finish/"
CANCEL = "/settings/node-token/cancel/"

pytestmark = pytest.mark.django_db(transaction=True)


def _reset() -> None:
    from cluster.runtime import reset_runtime

    reset_runtime()


@pytest.fixture
def token_config(tmp_path) -> Iterator[PortalConfig]:
    """A portal whose --nodeTokenFile holds CURRENT and whose only seed refuses at once."""
    token_file = tmp_path / "node-token"
    token_file.write_text(CURRENT + "\n")
    config = PortalConfig(
        seeds=("127.0.0.1:1",), node_token_file=str(token_file), rpc_timeout_s=0.5
    )
    with override_settings(ELASTICKV_ADMIN=config):
        _reset()
        node_token.ensure_node_token()  # what startup does (elastickv_admin/cli.py prepare)
        yield config
    _reset()


@pytest.fixture
def admin(make_user, token_config) -> Client:
    client = Client()
    client.force_login(make_user("token-admin", "admin"))
    return client


def found(pattern: str, html: str) -> str:
    match = re.search(pattern, html)
    assert match is not None, pattern
    return match.group(1)


def events(prefix: str = "node_token.") -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action__startswith=prefix).order_by("seq"))


@pytest.mark.parametrize("persona", ["viewer", "auditor", "no-role"])
def test_only_admins_may_open_or_act_on_the_node_token(persona, make_user, token_config):
    client = Client()
    client.force_login(make_user(f"p-{persona}", *([] if persona == "no-role" else [persona])))
    for method, url in (("get", PAGE), ("post", START), ("post", FINISH), ("post", CANCEL)):
        response = getattr(client, method)(url, {"mode": "generate"})
        assert response.status_code == 403, (method, url)
        assert "this page needs the admin role" in response.content.decode()
    assert not NodeTokenRecord.objects.filter(slot="next").exists()
    assert Client().get(PAGE)["Location"] == f"/login/?next={PAGE}"
    assert Client().post(START)["Location"] == f"/login/?next={START}"


def test_admins_must_pass_their_second_factor_when_the_site_requires_it(make_user, token_config):
    do_update_site_settings("system", require_mfa_for_admins=True)
    client = Client()
    client.force_login(make_user("mfa-admin", "admin"))
    assert client.get(PAGE)["Location"] == "/account/mfa/"
    assert client.post(START, {"mode": "generate"})["Location"] == "/account/mfa/"
    assert not NodeTokenRecord.objects.filter(slot="next").exists()
    session = client.session
    session["mfa_verified"] = True
    session.save()
    assert client.get(PAGE).status_code == 200


def test_the_page_shows_metadata_only_and_each_nodes_state(admin):
    page = admin.get(PAGE)
    assert page.status_code == 200
    html = page.content.decode()
    current = NodeTokenRecord.objects.get(slot="current")
    assert current.fingerprint == fingerprint(CURRENT)
    assert current.source == "file"
    assert fingerprint(CURRENT) in html
    assert CURRENT not in html
    assert 'data-node="127.0.0.1:1" data-state="unreachable"' in html
    assert NodeTokenCheck.objects.get().state == "unreachable"
    live = admin.get(PAGE, headers={"HX-Request": "true", "HX-Target": "live"})
    assert live.content.decode().lstrip().startswith('<div id="live"')
    assert "HX-Request" in live["Vary"]


def test_a_generated_token_is_shown_once_with_a_copy_button_and_a_download(admin):
    admin.get(PAGE)
    response = admin.post(START, {"mode": "generate"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    token = found(r'<code id="next-token">([^<]+)</code>', html)
    assert fingerprint(token) == NodeTokenRecord.objects.get(slot="next").fingerprint
    assert "it will not be shown again" in html
    assert 'data-copy="#next-token"' in html
    assert '<script src="/static/js/node-token.js" defer></script>' in html
    assert "<script>" not in html  # no inline script under the CSP
    href = found(r'id="download-token" href="([^"]+)" download="admin-token"', html)
    assert href.startswith("data:application/octet-stream;base64,")
    assert base64.b64decode(unquote(href.split(",", 1)[1])).decode() == token + "\n"
    # Never again: not on the page, not in a second start, not in the database in clear.
    assert token not in admin.get(PAGE).content.decode()
    assert admin.post(START, {"mode": "generate"}).status_code == 409
    assert token not in database_dump()
    assert token in decrypted_values(database_dump())  # only as ciphertext
    [started] = [e for e in events() if e.action == "node_token.rotation_started"]
    assert started.details == {
        "next_fingerprint": fingerprint(token),
        "current_fingerprint": fingerprint(CURRENT),
        "source": "generated",
    }
    assert started.actor == "token-admin"


@pytest.mark.parametrize(
    ("pasted", "reason"),
    [
        ("", "the token is empty"),
        ("x" * 4097, "nodes accept at most 4096 bytes"),
        ("not-printable-\x1b[31m-token", "printable ASCII characters only"),
        ("has whitespace inside the token", "contains whitespace"),
    ],
)
def test_a_wrong_paste_is_refused_saying_why_without_echoing_it(admin, pasted, reason):
    admin.get(PAGE)
    response = admin.post(START, {"mode": "paste", "token": pasted})
    assert response.status_code == 409
    html = response.content.decode()
    assert reason in html
    if pasted:
        assert pasted not in html
        assert pasted[:10] not in html
    assert not NodeTokenRecord.objects.filter(slot="next").exists()
    [refused] = events("node_token.rotation_start")
    assert (refused.action, refused.outcome) == ("node_token.rotation_start_refused", "failure")
    assert reason in refused.details["reason"]
    if pasted:
        assert pasted[:10] not in str(refused.details)


def test_a_good_paste_starts_a_rotation_and_shows_only_its_fingerprint(admin):
    response = admin.post(START, {"mode": "paste", "token": f"  {PASTED}\n"})
    assert response["Location"] == PAGE
    page = admin.get(PAGE).content.decode()
    assert f"Rotation started with the pasted token {fingerprint(PASTED)}" in page
    assert PASTED not in page
    assert NodeTokenRecord.objects.get(slot="next").source == "pasted"


def test_finishing_is_refused_while_no_node_accepts_next_and_forcing_asks_first(admin):
    admin.post(START, {"mode": "paste", "token": PASTED})
    refused = admin.post(FINISH, {"expected_next": fingerprint(PASTED)})
    assert refused.status_code == 409
    assert "1 of 1 nodes do not accept the next token yet: 127.0.0.1:1 (unreachable)" in (
        refused.content.decode()
    )
    ask = admin.post(FINISH, {"force": "1", "expected_next": fingerprint(PASTED)})
    assert ask.status_code == 200
    assert "1 of 1 node will lose access" in ask.content.decode()
    assert NodeTokenRecord.objects.filter(slot="next").exists()
    # A page loaded for another rotation cannot finish this one.
    stale = admin.post(
        FINISH,
        {
            "force": "1",
            "confirmed": "1",
            "expected_next": "sha256:000000000000",
            "confirm_nodes": "127.0.0.1:1",
        },
    )
    assert stale.status_code == 409
    assert "reload the page" in stale.content.decode()
    done = admin.post(
        FINISH,
        {
            "force": "1",
            "confirmed": "1",
            "expected_next": fingerprint(PASTED),
            "confirm_nodes": "127.0.0.1:1",
        },
    )
    assert done["Location"] == PAGE
    assert [r.fingerprint for r in NodeTokenRecord.objects.all()] == [fingerprint(PASTED)]
    assert CURRENT not in decrypted_values(database_dump())


def test_every_step_is_audited_and_no_event_or_log_line_carries_a_token(admin, caplog):
    caplog.set_level(logging.DEBUG)
    admin.get(PAGE)
    admin.post(START, {"mode": "paste", "token": "bad token"})
    admin.post(START, {"mode": "paste", "token": PASTED})
    admin.post(FINISH, {})
    admin.post(CANCEL, {"expected_next": fingerprint(PASTED)})
    generated = admin.post(START, {"mode": "generate"}).content.decode()
    token = found(r'<code id="next-token">([^<]+)</code>', generated)
    admin.post(CANCEL, {})
    assert [(e.action, e.outcome) for e in events()] == [
        ("node_token.bootstrapped", "success"),
        ("node_token.rotation_start_refused", "failure"),
        ("node_token.rotation_started", "success"),
        ("node_token.rotation_finish_refused", "failure"),
        ("node_token.rotation_cancelled", "success"),
        ("node_token.rotation_started", "success"),
        ("node_token.rotation_cancelled", "success"),
    ]
    dump = database_dump()
    for secret in (CURRENT, PASTED, token, "bad token"):
        assert secret not in dump
        assert secret not in caplog.text
    assert "node_token.rotation_cancelled" in caplog.text, "the audit stream was captured"


def test_with_admin_insecure_no_auth_there_is_nothing_to_rotate(make_user):
    config = PortalConfig(seeds=("127.0.0.1:1",), insecure_no_auth=True, rpc_timeout_s=0.5)
    with override_settings(ELASTICKV_ADMIN=config):
        _reset()
        client = Client()
        client.force_login(make_user("insecure-admin", "admin"))
        page = client.get(PAGE).content.decode()
        assert "runs with <code>--adminInsecureNoAuth</code>" in page
        assert client.post(START, {"mode": "generate"}).status_code == 409
    _reset()
    assert not NodeTokenRecord.objects.exists()


def test_the_settings_page_links_to_the_node_token(admin):
    html = admin.get("/settings/").content.decode()
    assert f'href="{PAGE}"' in html
