"""The addresses a rotation may send its next token to (NodeTokenRecord.known_addresses).

A rotation already running when this migration applies keeps working for the nodes its
probes had found (the NodeTokenCheck rows of the current version), which the portal knew
before this change; nodes reported later only get the current token.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations, models


def known_from_last_probe(apps: Any, schema_editor: Any) -> None:
    record = apps.get_model("cluster", "NodeTokenRecord")
    check = apps.get_model("cluster", "NodeTokenCheck")
    head = apps.get_model("cluster", "NodeTokenHead").objects.filter(pk=1).first()
    running = record.objects.filter(slot="next").first()
    if running is None or head is None:
        return
    running.known_addresses = sorted(
        check.objects.filter(version=head.version).values_list("address", flat=True)
    )
    running.save(update_fields=["known_addresses"])


class Migration(migrations.Migration):
    dependencies = [("cluster", "0002_node_token_head")]

    operations = [
        migrations.AddField(
            model_name="nodetokenrecord",
            name="known_addresses",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.RunPython(known_from_last_probe, migrations.RunPython.noop),
    ]
