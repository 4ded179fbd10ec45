"""The single head row every node token change locks."""

from __future__ import annotations

from typing import Any

from django.db import migrations


def create_head(apps: Any, schema_editor: Any) -> None:
    apps.get_model("cluster", "NodeTokenHead").objects.get_or_create(pk=1)


class Migration(migrations.Migration):
    dependencies = [("cluster", "0001_node_token")]

    operations = [migrations.RunPython(create_head, migrations.RunPython.noop)]
