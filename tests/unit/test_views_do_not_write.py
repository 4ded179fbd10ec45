"""Every state change goes through a ``do_*`` action (zulip's habit) that takes the actor and
writes its audit event in the change's transaction: views parse, call the action, render.
So no view module writes a model or the audit log itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("accounts", "audit", "cluster", "demo", "elastickv_admin", "keyviz")
# ORM writes (a queryset, a manager or an instance) and audit writes.
WRITES = frozenset(
    {
        "save",
        "delete",
        "create",
        "bulk_create",
        "bulk_update",
        "get_or_create",
        "update_or_create",
        "set_password",
        "record_event",
        "arecord_event",
        "record_failure",
    }
)
# dict.update() is fine in a view; QuerySet.update() is a write: told apart by its receiver.
QUERYSET_HINTS = ("objects", "filter", "exclude", "all", "select_for_update")


def view_modules() -> list[Path]:
    found: list[Path] = []
    for package in PACKAGES:
        found += sorted((ROOT / package).glob("views.py"))
        found += sorted((ROOT / package).glob("*_views.py"))
    return found


def writes(source: str) -> list[str]:
    """The model and audit writes in `source`, as "line call()" in line order."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in WRITES:
            found.append((node.lineno, f"{name}()"))
        elif name == "update" and isinstance(func, ast.Attribute):
            receiver = ast.unparse(func.value)
            if any(hint in receiver for hint in QUERYSET_HINTS):
                found.append((node.lineno, f"{receiver}.update()"))
    return [f"{line} {call}" for line, call in sorted(found)]


def test_the_scan_sees_every_views_module():
    names = {str(p.relative_to(ROOT)) for p in view_modules()}
    assert {"accounts/views.py", "accounts/settings_views.py", "audit/views.py"} <= names
    assert "cluster/node_token_views.py" in names


@pytest.mark.parametrize("path", view_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_views_write_no_model_and_no_audit_event_themselves(path):
    assert writes(path.read_text(encoding="utf-8")) == []


def test_the_scan_catches_a_view_that_writes():
    source = (
        "def v(request, user):\n"
        "    user.save()\n"
        "    User.objects.filter(pk=1).update(is_active=False)\n"
        "    context = {}\n"
        "    context.update(a=1)\n"
        "    record_event('x')\n"
    )
    assert writes(source) == [
        "2 save()",
        "3 User.objects.filter(pk=1).update()",
        "6 record_event()",
    ]
