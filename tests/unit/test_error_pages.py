"""Error pages: the portal's own layout for 400/403/404/500 and CSRF failures, saying what
to do and never leaking the exception; JSON envelopes under /api/."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client, override_settings

from tests.conftest import PASSWORD
from tests.unit.error_urls import SECRET

pytestmark = pytest.mark.django_db

ERRORS = override_settings(ROOT_URLCONF="tests.unit.error_urls", DEBUG=False)


def styled(body: bytes) -> str:
    """The page, asserted to be the portal's layout (navigation, stylesheet)."""
    text = body.decode()
    assert 'class="sidebar"' in text
    assert "css/portal" in text
    return text


def test_a_csrf_failure_is_the_portals_page_saying_what_to_do():
    client = Client(enforce_csrf_checks=True)
    client.get("/login/")  # sets the CSRF cookie; the form below does not send the token
    response = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 403
    text = styled(response.content)
    assert "<title>Form expired" in text
    assert "Go back, reload the page and submit again." in text
    assert PASSWORD not in text


def test_a_csrf_failure_without_the_cookie_says_to_allow_cookies():
    response = Client(enforce_csrf_checks=True).post("/login/", {"username": "alice"})
    assert response.status_code == 403
    assert "allow cookies for this site" in styled(response.content)


def test_a_foreign_origin_is_told_about_csrf_trusted_origins():
    client = Client(enforce_csrf_checks=True)
    client.get("/login/")
    token = client.cookies["csrftoken"].value
    response = client.post(
        "/login/",
        {"username": "alice", "csrfmiddlewaretoken": token},
        HTTP_ORIGIN="https://elsewhere.example",
    )
    assert response.status_code == 403
    assert "CSRF_TRUSTED_ORIGINS" in styled(response.content)


def test_a_missing_page_is_the_portals_404():
    response = Client().get("/no-such-page/")
    assert response.status_code == 404
    assert "<title>Page not found" in styled(response.content)


def test_a_signed_in_user_keeps_their_navigation_on_a_missing_page(make_user: Any):
    client = Client()
    client.force_login(make_user("lost-viewer", "viewer"))
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    text = styled(response.content)
    assert 'href="/keyviz/"' in text  # the viewer's pages, as on any other page
    assert "no role" not in text


def test_a_bad_host_is_the_portals_400_without_the_host_echoed():
    response = Client().get("/login/", HTTP_HOST="evil.example")
    assert response.status_code == 400
    text = styled(response.content)
    assert "<title>Bad request" in text
    assert "evil.example" not in text


@ERRORS
def test_a_view_refusal_is_the_portals_403_without_the_exceptions_text(make_user):
    client = Client()
    client.force_login(make_user("audrey", "auditor"))
    response = client.get("/audit-refuse/")
    assert response.status_code == 403
    text = styled(response.content)
    assert "<title>Permission denied" in text
    assert SECRET not in text


@ERRORS
def test_a_crash_is_the_portals_500_without_the_exceptions_text(make_user):
    client = Client(raise_request_exception=False)
    client.force_login(make_user("audrey", "auditor"))
    response = client.get("/audit-boom/")
    assert response.status_code == 500
    text = styled(response.content)
    assert "<title>Server error" in text
    assert "the portal log has the details" in text
    assert SECRET not in text
    assert "Traceback" not in text


@ERRORS
def test_an_api_crash_is_the_json_envelope_without_the_exceptions_text(make_user):
    client = Client(raise_request_exception=False)
    client.force_login(make_user("audrey", "auditor"))
    response = client.get("/api/audit-boom")
    assert response.status_code == 500
    assert response.json() == {
        "code": 500,
        "message": "internal error; the portal log has the details",
    }


def test_a_crash_while_drawing_the_500_page_still_answers_a_plain_500(make_user, tmp_path):
    # The styled page needs templates and context (the database, for the user): when it
    # fails too, the answer is a plain page, not the server's bare crash.
    import copy

    from django.conf import settings

    (tmp_path / "error.html").write_text('{% url "no-such-page" %}')
    templates: list[dict[str, Any]] = copy.deepcopy(settings.TEMPLATES)
    templates[0]["DIRS"] = [tmp_path, *templates[0].get("DIRS", [])]
    with ERRORS, override_settings(TEMPLATES=templates):
        client = Client(raise_request_exception=False)
        client.force_login(make_user("audrey", "auditor"))
        response = client.get("/audit-boom/")
    assert response.status_code == 500
    text = response.content.decode()
    assert "<h1>Server error</h1>" in text
    assert SECRET not in text
