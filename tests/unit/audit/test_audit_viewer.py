"""The auditors' viewer: filters, newest first with keyset pages, event detail, streamed CSV
and JSON-lines export of the filtered set, and X-Request-ID linking requests to events."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client

from audit.context import AuditContext, audit_context
from audit.models import AuditEvent
from audit.query import PAGE_SIZE
from audit.service import record_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def auditor(make_user) -> Client:
    client = Client()
    client.force_login(make_user("ann", "auditor"))
    return client


def seqs(response) -> list[int]:
    return [e.seq for e in response.context["page"].events]


def some_events() -> None:
    for i in range(7):
        actor = "alice" if i % 2 else "bob"
        with audit_context(AuditContext(request_id=f"req{i}", actor=actor, source_ip="10.0.0.9")):
            record_event(
                "login.failed" if i % 3 == 0 else "login",
                target=f"user:{actor}",
                outcome="failure" if i % 3 == 0 else "success",
                details={"note": f"attempt {i}"},
            )


def test_newest_first_with_keyset_pages(auditor):
    for i in range(PAGE_SIZE + 5):
        record_event("test.event", target=f"t{i}")
    first = auditor.get("/audit/")
    assert first.status_code == 200
    assert seqs(first) == list(range(PAGE_SIZE + 5, 5, -1))
    older = first.context["page"].older
    second = auditor.get(f"/audit/?before={older}")
    assert seqs(second)[0] == 5
    newer = second.context["page"].newer
    back = auditor.get(f"/audit/?after={newer}")
    assert seqs(back) == seqs(first)


@pytest.mark.parametrize(
    ("query", "expected_actors_actions"),
    [
        ("actor=alice", {("alice", "login"), ("alice", "login.failed")}),
        ("action=login.failed", {("bob", "login.failed"), ("alice", "login.failed")}),
        (
            "action=login*",
            {
                ("alice", "login"),
                ("bob", "login"),
                ("alice", "login.failed"),
                ("bob", "login.failed"),
            },
        ),
        ("outcome=failure&actor=bob", {("bob", "login.failed")}),
        ("request_id=req3", {("alice", "login.failed")}),
        ("q=attempt+5", {("alice", "login")}),
        # Free text looks in every field, whatever the case.
        ("q=ATTEMPT+6", {("bob", "login.failed")}),
        ("q=USER%3AALICE", {("alice", "login"), ("alice", "login.failed")}),
        ("q=ogin.fail", {("bob", "login.failed"), ("alice", "login.failed")}),
        ("q=10.0.0.9&actor=alice", {("alice", "login"), ("alice", "login.failed")}),
        ("q=nowhere", set()),
    ],
)
def test_filters_narrow_the_list(auditor, query, expected_actors_actions):
    some_events()
    response = auditor.get(f"/audit/?{query}")
    # The auditor's own page views are not events; the list shows the seeded events only.
    found = {(e.actor, e.action) for e in response.context["page"].events}
    assert found == expected_actors_actions


def test_time_range_filter(auditor):
    some_events()
    AuditEvent.objects.filter(seq__lte=3).update(time=datetime(2024, 1, 1, 12, tzinfo=UTC))
    response = auditor.get("/audit/?from=2024-01-01T00:00&to=2024-01-02T00:00")
    assert sorted(seqs(response)) == [1, 2, 3]


def test_a_bad_filter_says_what_to_fix(auditor):
    response = auditor.get("/audit/?from=yesterday")
    assert response.status_code == 400
    assert (
        b"from: must be a date and time (YYYY-MM-DDTHH:MM, UTC) from 1970-01-01 to 9999-12-30"
        in (response.content)
    )


def test_event_detail_shows_fields_and_mac_validity(auditor):
    some_events()
    page = auditor.get("/audit/3/")
    assert page.status_code == 200
    assert b"MAC valid" in page.content
    assert b"req2" in page.content  # the third event
    assert auditor.get("/audit/999/").status_code == 404


def test_csv_export_of_the_filtered_set_is_streamed(auditor):
    some_events()
    response = auditor.get("/audit/export/?format=csv&actor=alice")
    assert response.streaming
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["actor"] for r in rows] == ["alice"] * 3
    assert [int(r["seq"]) for r in rows] == sorted((int(r["seq"]) for r in rows), reverse=True)
    assert json.loads(rows[0]["details"])["note"].startswith("attempt")
    # The export itself is recorded.
    assert AuditEvent.objects.filter(action="audit.exported", actor="ann").exists()


def test_csv_cells_that_spreadsheets_would_run_are_defused(auditor):
    record_event("test.event", target='=HYPERLINK("http://evil")')
    response = auditor.get("/audit/export/?format=csv&action=test.event")
    body = b"".join(response.streaming_content).decode()
    assert "'=HYPERLINK" in body


@pytest.mark.django_db(transaction=True)
async def test_jsonl_export_streams_under_asgi_in_chunks(make_user, monkeypatch):
    import audit.query

    monkeypatch.setattr(audit.query, "EXPORT_CHUNK", 3)
    user = await sync_to_async(make_user)("ann", "auditor")
    for i in range(8):
        await sync_to_async(record_event)("test.event", target=f"t{i}")
    client = AsyncClient()
    await client.aforce_login(user)
    response = await client.get("/audit/export/?format=jsonl&action=test.event")
    assert response.status_code == 200
    assert response.is_async  # type: ignore[attr-defined]
    chunks = [chunk async for chunk in response.streaming_content]  # type: ignore[attr-defined]
    assert len(chunks) == 3  # 3 + 3 + 2 events, one chunk each
    lines = [json.loads(line) for line in b"".join(chunks).decode().splitlines()]
    assert [line["target"] for line in lines] == [f"t{i}" for i in range(7, -1, -1)]
    assert set(lines[0]) >= {"seq", "time", "actor", "action", "mac", "prev_mac", "request_id"}


def test_every_response_carries_the_request_id_that_its_events_carry(make_user):
    client = Client()
    client.force_login(make_user("alice", "viewer"))
    response = client.post("/account/tokens/", {"name": "ci"})
    request_id = response["X-Request-ID"]
    assert len(request_id) == 32
    assert AuditEvent.objects.get(action="api_token.created").request_id == request_id
    assert client.get("/nodes/")["X-Request-ID"] != request_id


def test_a_mutating_request_without_its_own_event_is_recorded_once(make_user):
    client = Client()
    client.force_login(make_user("alice", "viewer"))
    response = client.post("/account/tokens/", {"name": ""})  # invalid form: no change
    assert response.status_code == 400
    event = AuditEvent.objects.get()
    assert (event.action, event.outcome, event.details["status"]) == ("http.post", "failure", 400)
    client.post("/account/tokens/", {"name": "ok"})
    assert AuditEvent.objects.filter(action="http.post").count() == 1  # not doubled


def test_a_permission_denial_is_an_event(make_user):
    client = Client()
    client.force_login(make_user("alice", "viewer"))
    assert client.get("/audit/").status_code == 403
    event = AuditEvent.objects.get(action="permission.denied")
    assert (event.actor, event.target, event.outcome) == ("alice", "/audit/", "denied")
    assert event.details["required"] == "accounts.view_audit"


def test_time_is_stored_in_utc_with_microseconds():
    event = record_event("test.event")
    stored = AuditEvent.objects.get(seq=event.seq)
    assert stored.time.utcoffset() == timedelta(0)
    assert stored.canonical_fields()["time"] == event.canonical_fields()["time"]


def test_a_search_with_url_characters_exports_and_pages_the_events_on_screen(auditor):
    # A search for "a&b=c" used to be pasted into the links unencoded: the export and the
    # next page then filtered on "a" (and a stray parameter "b") instead.
    from html import unescape
    from urllib.parse import parse_qs, urlsplit

    record_event("test.event", target="a&b=c #1")
    for i in range(PAGE_SIZE + 2):
        record_event("test.event", target=f"a&b=c {i}")
        record_event("test.event", target=f"a only {i}")
    screen = auditor.get("/audit/", {"q": "a&b=c"})
    assert screen.status_code == 200
    assert all("a&b=c" in e.target for e in screen.context["page"].events)
    html = screen.content.decode()
    links = [
        unescape(part.split('"', 1)[0])
        for part in html.split('href="')[1:]
        if part.startswith(("/audit/export/", "?"))
    ]
    assert links, "the page has export and paging links"
    for link in links:
        query = parse_qs(urlsplit(link).query)
        assert query["q"] == ["a&b=c"], link
        assert "b" not in query, link
    export = auditor.get(next(link for link in links if "format=csv" in link))
    body = b"".join(export.streaming_content).decode()
    import csv
    import io

    targets = [
        r["target"] for r in csv.DictReader(io.StringIO(body)) if r["action"] == "test.event"
    ]
    assert len(targets) == PAGE_SIZE + 3
    assert all("a&b=c" in t for t in targets)
