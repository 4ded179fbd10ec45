"""The three roles as groups, each holding its permission (accounts/roles.py)."""

from __future__ import annotations

from typing import Any

from django.db import migrations

ROLES = {
    "viewer": ("view_dashboards", "View cluster dashboards and read the JSON API"),
    "admin": ("manage_portal", "Manage users, roles, the node token and settings"),
    "auditor": ("view_audit", "Read and export the audit log"),
}


def create_roles(apps: Any, schema_editor: Any) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    SiteSettings = apps.get_model("accounts", "SiteSettings")
    # Permissions are normally made after all migrations (post_migrate); make them now.
    content_type, _ = ContentType.objects.get_or_create(app_label="accounts", model="sitesettings")
    for group_name, (codename, label) in ROLES.items():
        permission, _ = Permission.objects.get_or_create(
            content_type=content_type, codename=codename, defaults={"name": label}
        )
        group, _ = Group.objects.get_or_create(name=group_name)
        group.permissions.add(permission)
    SiteSettings.objects.get_or_create(pk=1)


def remove_roles(apps: Any, schema_editor: Any) -> None:
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
