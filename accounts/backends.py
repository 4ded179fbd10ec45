"""django-axes' lockout check for both login paths.

axes' AxesStandaloneBackend has only ``authenticate``; Django 5.2's ``aauthenticate`` calls
``backend.aauthenticate``, which it lacks, so an async login would not be checked the
same way. This backend adds it, running the very same sync check in a thread.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from axes.backends import AxesStandaloneBackend
from django.http import HttpRequest


class LockoutBackend(AxesStandaloneBackend):  # type: ignore[misc]
    async def aauthenticate(self, request: HttpRequest | None, **credentials: Any) -> None:
        await sync_to_async(self.authenticate)(request, **credentials)

    # Permissions come from ModelBackend; this backend grants nothing.
    def has_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        return False

    async def ahas_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        return False
