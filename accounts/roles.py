"""Roles are Django groups holding one permission each (a user may hold several).

Other apps check these names (the Key Visualizer consumer checks VIEW_DASHBOARDS), so they
are part of the portal's interface: do not rename them.
"""

from __future__ import annotations

VIEW_DASHBOARDS = "accounts.view_dashboards"
MANAGE_PORTAL = "accounts.manage_portal"
VIEW_AUDIT = "accounts.view_audit"

# group name -> (permission, what it grants)
ROLES: dict[str, tuple[str, str]] = {
    "viewer": (VIEW_DASHBOARDS, "dashboards and API reads"),
    "admin": (MANAGE_PORTAL, "users and roles, node token, settings"),
    "auditor": (VIEW_AUDIT, "the audit log"),
}
ROLE_NAMES = tuple(ROLES)


def role_for(permission: str) -> str:
    return next((name for name, (perm, _) in ROLES.items() if perm == permission), permission)


def ensure_role_groups(**kwargs: object) -> None:
    """The role groups with their permissions (idempotent). The data migration makes them;
    this post_migrate hook puts them back after a test database flush."""
    from django.contrib.auth.models import Group, Permission
    from django.contrib.contenttypes.models import ContentType

    from accounts.models import SiteSettings

    ContentType.objects.clear_cache()  # stale after a flush
    content_type = ContentType.objects.get_for_model(SiteSettings)
    for group_name, (permission, label) in ROLES.items():
        codename = permission.split(".", 1)[1]
        perm, _ = Permission.objects.get_or_create(
            content_type=content_type, codename=codename, defaults={"name": label}
        )
        group, _ = Group.objects.get_or_create(name=group_name)
        group.permissions.add(perm)
