"""Who is acting, from where, in which request: set by the middleware (or a command, or the
WebSocket middleware) and read by record_event, so callers pass only what happened."""

from __future__ import annotations

import getpass
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol, TypeAlias


@dataclass
class AuditContext:
    request_id: str
    source_ip: str = ""
    user_agent: str = ""
    actor: str = ""
    events: int = 0
    write_failed: bool = False


class Named(Protocol):
    def get_username(self) -> str: ...


# Who performs an action: a user, or a name for the rest ("cli:<os user>", "system").
# Every ``do_*`` action takes it first, explicitly (zulip's acting_user), and names it as
# the audit event's actor.
Actor: TypeAlias = Named | str


def actor_name(actor: Actor) -> str:
    return actor if isinstance(actor, str) else actor.get_username()


_current: ContextVar[AuditContext | None] = ContextVar("audit_context", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex


def current() -> AuditContext | None:
    return _current.get()


@contextmanager
def audit_context(context: AuditContext) -> Iterator[AuditContext]:
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def set_actor(actor: str) -> None:
    context = _current.get()
    if context is not None:
        context.actor = actor


@contextmanager
def command_context(command: str) -> Iterator[AuditContext]:
    """For management commands: the actor is the OS user who ran the command."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    context = AuditContext(request_id=new_request_id(), actor=f"cli:{user}", user_agent=command)
    with audit_context(context):
        yield context
