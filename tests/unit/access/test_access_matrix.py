"""Every URL in the URLconf x every role: who may open it, and how the others are refused.

The URLconf is walked at run time, so a page added anywhere is in this matrix the moment it
exists; if accounts/policy.py does not cover it, it is denied to everyone and this test
says which URL name needs an entry (and which role it should need, below).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from fnmatch import fnmatchcase
from typing import Any

import pytest
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.converters import IntConverter, UUIDConverter

from elastickv_admin.lib.config import PortalConfig

pytestmark = pytest.mark.django_db

PUBLIC = "public"
SIGNED_IN = "signed-in"
# Who may open what, stated independently of accounts/policy.py (first match wins).
EXPECTED = (
    ("healthz", PUBLIC),
    ("readyz", PUBLIC),
    ("metrics", "viewer"),
    ("accounts:login", PUBLIC),
    ("accounts:login-mfa", PUBLIC),
    ("accounts:logout", PUBLIC),
    ("accounts:*", SIGNED_IN),
    ("cluster:*", "viewer"),
    ("keyviz:*", "viewer"),
    ("audit*", "auditor"),
    ("settings*", "admin"),
    ("demo:*", "admin"),  # the Demo cluster card, only under `elastickv-admin demo`
)
PERSONAS = {
    "anonymous": None,
    "no-role": (),
    "viewer": ("viewer",),
    "auditor": ("auditor",),
    "admin": ("admin",),
    "superuser": "superuser",
}
# Nodes that refuse at once: the dashboards answer quickly (with their own errors).
NO_NODES = PortalConfig(seeds=("127.0.0.1:1",), insecure_no_auth=True, rpc_timeout_s=0.5)


def _sample(converter: object) -> object:
    if isinstance(converter, IntConverter):
        return 1
    if isinstance(converter, UUIDConverter):
        return uuid.UUID(int=1)
    return "sample"


def walk_urlconf() -> Iterator[tuple[str, str]]:
    """(url name, a concrete path) for every pattern, path converters filled in."""

    def walk(
        patterns: list[Any], namespace: str, converters: dict[str, Any]
    ) -> Iterator[tuple[str, str]]:
        for entry in patterns:
            found = {**converters, **getattr(entry.pattern, "converters", {})}
            if isinstance(entry, URLResolver):
                ns = ":".join(p for p in (namespace, entry.namespace or "") if p)
                yield from walk(entry.url_patterns, ns, found)
            elif isinstance(entry, URLPattern):
                assert entry.name, f"unnamed URL pattern {entry.pattern}: name it (policy key)"
                name = f"{namespace}:{entry.name}" if namespace else entry.name
                kwargs = {k: _sample(c) for k, c in found.items()}
                yield name, reverse(name, kwargs=kwargs or None)

    return walk(get_resolver().url_patterns, "", {})


def expected_for(name: str) -> str:
    for pattern, who in EXPECTED:
        if fnmatchcase(name, pattern):
            return who
    raise AssertionError(f"{name}: not in this test's EXPECTED table; add who may open it")


def may_open(persona: str, who: str) -> bool:
    roles = PERSONAS[persona]
    if who == PUBLIC:
        return True
    if roles is None:
        return False
    return who == SIGNED_IN or roles == "superuser" or who in roles


def client_for(persona: str, make_user) -> Client:
    client = Client()
    roles = PERSONAS[persona]
    if roles == "superuser":
        client.force_login(make_user("p-superuser", superuser=True))
    elif roles is not None:
        client.force_login(make_user(f"p-{persona}", *roles))
    return client


def refusal_problem(persona: str, path: str, response) -> str | None:
    """None if the response is the right refusal for this persona."""
    api = path.startswith("/api/") or path == "/metrics"
    if PERSONAS[persona] is None:
        if api:
            ok = response.status_code == 401 and response.json()["code"] == 401
        else:
            ok = response.status_code == 302 and response["Location"].startswith("/login/?next=")
    else:
        ok = response.status_code == 403
        if api:
            ok = ok and response.json()["code"] == 403
    return None if ok else f"got {response.status_code}"


@pytest.mark.parametrize("persona", list(PERSONAS))
@override_settings(ELASTICKV_ADMIN=NO_NODES)
def test_every_url_answers_each_role_as_the_policy_says(persona, make_user):
    client = client_for(persona, make_user)
    urls = list(walk_urlconf())
    assert len(urls) >= 15
    problems = []
    for name, path in urls:
        who = expected_for(name)
        for method in ("get", "post"):
            if method == "post" and may_open(persona, who):
                continue  # allowed POSTs change state; the GET shows access is granted
            response = getattr(client, method)(path)
            if may_open(persona, who):
                refused = response.status_code in (401, 403) or (
                    response.status_code == 302
                    and response["Location"].startswith("/login/")
                    and who != PUBLIC
                )
                if refused or response.status_code == 500:
                    problems.append(
                        f"{method.upper()} {path} ({name}): refused {persona}, {response.status_code}"
                    )
            else:
                problem = refusal_problem(persona, path, response)
                if problem:
                    problems.append(f"{method.upper()} {path} ({name}) as {persona}: {problem}")
    assert problems == []


@pytest.mark.parametrize("persona", ["viewer", "auditor"])
def test_api_reads_with_a_token_follow_the_owners_roles(persona, make_user, api_token_for):
    token = api_token_for(make_user(f"t-{persona}", persona))
    client = Client(headers={"Authorization": f"Bearer {token}"})
    with override_settings(ELASTICKV_ADMIN=NO_NODES):
        for name, path in walk_urlconf():
            if not path.startswith("/api/"):
                continue
            response = client.get(path)
            if may_open(persona, expected_for(name)):
                assert response.status_code not in (401, 403), path
            else:
                assert response.status_code == 403, path


def test_a_bearer_token_does_not_open_pages(make_user, api_token_for):
    token = api_token_for(make_user("t-pages", "viewer"))
    response = Client(headers={"Authorization": f"Bearer {token}"}).get("/nodes/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/nodes/"


def test_a_url_name_missing_from_the_policy_is_denied_to_everyone_with_a_log_line(
    make_user, caplog
):
    with override_settings(ROOT_URLCONF="tests.unit.access.unmapped_urls"):
        client = Client()
        client.force_login(make_user("root", superuser=True))
        response = client.get("/forgotten/")
        assert response.status_code == 403
        assert Client().get("/forgotten/").status_code == 403
    assert "URL name 'forgotten-page' has no entry in accounts/policy.py" in caplog.text


def test_a_url_name_missing_from_the_policy_is_a_server_error_in_debug(make_user):
    from django.core.exceptions import ImproperlyConfigured

    with override_settings(ROOT_URLCONF="tests.unit.access.unmapped_urls", DEBUG=True):
        client = Client()
        client.force_login(make_user("root", superuser=True))
        with pytest.raises(ImproperlyConfigured, match="forgotten-page"):
            client.get("/forgotten/")
