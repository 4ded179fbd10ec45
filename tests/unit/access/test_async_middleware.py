"""Under ASGI the access and audit middleware run as coroutines: no middleware in the chain
forces a switch to sync (Django logs each one it has to adapt)."""

from __future__ import annotations

import logging

from django.core.handlers.asgi import ASGIHandler
from django.test import override_settings

from accounts.middleware import AccessMiddleware
from audit.middleware import AuditMiddleware


def adaptations(caplog) -> list[str]:
    # Django reports each adaptation at DEBUG level when settings.DEBUG is on.
    with override_settings(DEBUG=True), caplog.at_level(logging.DEBUG, logger="django.request"):
        ASGIHandler()
    return [r.getMessage() for r in caplog.records if "adapted" in r.getMessage()]


def test_the_asgi_middleware_chain_needs_no_sync_adaptation(caplog):
    assert adaptations(caplog) == []
    assert AccessMiddleware.async_capable
    assert AuditMiddleware.async_capable


def test_a_sync_only_middleware_would_be_reported(caplog, monkeypatch):
    monkeypatch.setattr(AccessMiddleware, "async_capable", False)
    assert any("AccessMiddleware" in m for m in adaptations(caplog))
