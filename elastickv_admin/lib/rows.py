"""Singleton rows (pk=1) that serialise writers: the audit chain head, the node-token head."""

from __future__ import annotations

from typing import TypeVar

from django.db.models import Model

M = TypeVar("M", bound=Model)


def locked_singleton(model: type[M]) -> M:
    """The model's pk=1 row, locked for this transaction. Its migration creates the row; a
    freshly flushed test database has none, so it is made here first (racing makers agree
    through ignore_conflicts)."""
    row = model._default_manager.select_for_update().filter(pk=1).first()
    if row is None:
        model._default_manager.bulk_create([model(pk=1)], ignore_conflicts=True)
        row = model._default_manager.select_for_update().get(pk=1)
    return row
