"""The sidebar lights up the one section a page belongs to."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import RequestFactory

from accounts.roles import ROLES
from elastickv_admin.context import portal

pytestmark = pytest.mark.django_db


def active(path: str, user: Any) -> list[str]:
    request = RequestFactory().get(path)
    request.user = user
    request.portal_permissions = frozenset(perm for perm, _ in ROLES.values())  # type: ignore[attr-defined]
    items: Any = portal(request)["nav_items"]
    return [item.label for item in items if item.active]


@pytest.mark.parametrize(
    ("path", "section"),
    [
        ("/keyviz/hot/", "Hot ranges"),
        ("/keyviz/", "Key Visualizer"),
        ("/nodes/n1/", "Nodes"),
        ("/", "Overview"),
        ("/settings/node-token/", "Settings"),
    ],
)
def test_only_the_longest_matching_section_is_active(path: str, section: str, admin_user: Any):
    assert active(path, admin_user) == [section]
