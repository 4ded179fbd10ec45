"""For benchmarks that drive the portal in-process: a migrated database and an
AsyncClient signed in as a viewer (every page and API needs a signed-in user)."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async


def _viewer() -> Any:
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command

    from accounts.roles import ensure_role_groups

    call_command("migrate", interactive=False, verbosity=0)
    ensure_role_groups()
    user, _ = User.objects.get_or_create(username="bench-viewer")
    user.groups.set(Group.objects.filter(name="viewer"))
    return user


async def viewer_client() -> Any:
    from django.test import AsyncClient

    client = AsyncClient()
    await client.aforce_login(await sync_to_async(_viewer)())
    return client
