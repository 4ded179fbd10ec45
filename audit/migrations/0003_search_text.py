"""The viewer's free-text search: one stored, upper-cased text per event and, on
PostgreSQL, a trigram index on it.

Without the index a rare word reads the whole table newest first (about a second at a
million events). The column is a stored generated one, so adding it rewrites the table
once. pg_trgm is a trusted extension (PostgreSQL 13+): the database owner may create it;
a user that may not gets a warning naming the fix, and the search then scans as before.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError, migrations, models, transaction
from django.db.models.functions import Cast, Concat, Upper

log = logging.getLogger(__name__)
INDEX = "audit_search_trgm"
SEPARATOR = "\x1f"


def create_index(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=schema_editor.connection.alias):  # a savepoint
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            schema_editor.execute(
                f"CREATE INDEX IF NOT EXISTS {INDEX} ON audit_auditevent "
                "USING gin (search gin_trgm_ops)"
            )
    except DatabaseError as exc:
        log.warning(
            "audit search index not created (%s); free-text search scans the table. Once a "
            "database owner has run CREATE EXTENSION pg_trgm: manage.py migrate audit 0002 "
            "&& manage.py migrate",
            str(exc).strip().splitlines()[0],
        )


def drop_index(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_chain_head")]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="search",
            # audit.models.search_text() as it was when this migration was written.
            field=models.GeneratedField(
                expression=Upper(
                    Concat(
                        models.F("target"),
                        models.Value(SEPARATOR),
                        models.F("actor"),
                        models.Value(SEPARATOR),
                        models.F("action"),
                        models.Value(SEPARATOR),
                        models.F("source_ip"),
                        models.Value(SEPARATOR),
                        Cast(models.F("details"), models.TextField()),
                        output_field=models.TextField(),
                    )
                ),
                output_field=models.TextField(),
                db_persist=True,
            ),
        ),
        migrations.RunPython(create_index, drop_index),
    ]
