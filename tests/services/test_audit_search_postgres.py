"""On PostgreSQL the viewer's free-text search is served by the trigram index of
migration 0003 instead of reading the table newest first."""

from __future__ import annotations

import pytest
from django.db import connection

from audit.query import AuditFilters
from audit.service import record_event
from tests.helpers import require

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def test_free_text_search_can_use_the_trigram_index_and_finds_the_same_events():
    require(connection.vendor == "postgresql", "DATABASE_URL does not point at PostgreSQL")
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'audit_search_trgm'")
        [definition] = cursor.fetchone()
    assert "gin_trgm_ops" in definition
    for i in range(120):
        record_event("test.search", target=f"t{i}", details={"note": f"Needle-{i}"})
    filters = AuditFilters(text="needle-7", raw={"q": "needle-7"})
    found = {e.details["note"] for e in filters.queryset()}
    assert found == {"Needle-7", *(f"Needle-{i}" for i in range(70, 80))}
    # With sequential and plain index scans priced out, only the trigram index can serve the
    # filter: the plan names it when the query's expression is the indexed one.
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("SET enable_indexscan = off")
    try:
        plan = filters.queryset().order_by("-seq")[:51].explain()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET enable_seqscan")
            cursor.execute("RESET enable_indexscan")
    assert "audit_search_trgm" in plan
