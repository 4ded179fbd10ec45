"""Sign-in lockout in three scopes, each with its own limit (issue #13 item 9).

django-axes records every failed sign-in (one AccessAttempt row per username, address and
user agent) and sums them per lockout parameter (AXES_LOCKOUT_PARAMETERS), but compares
every sum against the one AXES_FAILURE_LIMIT. This handler gives each scope its own limit:

- ``pair``: this username from this address (AXES_FAILURE_LIMIT, the tight one);
- ``username``: this username from any address (a distributed guess at one account);
- ``address``: this address, any username (password spraying).

All three count failures within the cool-off (AXES_COOLOFF_TIME) and unlock by themselves
when it passes, or at once when an admin unlocks them on the Settings page. The username
scope is a denial-of-service lever (anyone can lock an account out by failing on purpose),
hence a higher limit than the pair's, the cool-off, and the admin unlock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Max, Q, QuerySet, Sum
from django.http import HttpRequest
from django.utils import timezone

PAIR = "pair"
USERNAME = "username"
ADDRESS = "address"
# The order of settings.AXES_LOCKOUT_PARAMETERS.
SCOPES = (PAIR, USERNAME, ADDRESS)
LOCKOUT_PARAMETERS: list[str | list[str]] = [["username", "ip_address"], "username", "ip_address"]
_GROUPING = {PAIR: ("username", "ip_address"), USERNAME: ("username",), ADDRESS: ("ip_address",)}


def limits() -> dict[str, int]:
    return {
        PAIR: int(settings.AXES_FAILURE_LIMIT),
        USERNAME: int(settings.LOGIN_FAILURE_LIMIT_PER_USERNAME),
        ADDRESS: int(settings.LOGIN_FAILURE_LIMIT_PER_ADDRESS),
    }


def _failures(attempts: QuerySet[Any]) -> int:
    total = attempts.aggregate(total=Sum("failures_since_start"))["total"]
    return int(total or 0)


class PortalAxesHandler(AxesDatabaseHandler):  # type: ignore[misc]
    """AXES_HANDLER: axes' database handler with a limit per scope."""

    def get_failures(self, request: Any, credentials: dict[str, Any] | None = None) -> int:
        """Failures on the pair limit's scale, which is what axes compares them with: the pair
        limit itself once any scope reached its own limit, else the pair's count (below it).
        The scopes that tripped are left on the request for the lockout page and event."""
        counts = [_failures(qs) for qs in self.get_user_attempts(request, credentials)]
        scope_limits = limits()
        tripped = [s for s, n in zip(SCOPES, counts, strict=True) if n >= scope_limits[s]]
        request.axes_lockout_scopes = tripped
        if tripped:
            return max(scope_limits[PAIR], counts[0])
        return counts[0]

    def reset_user_attempts(
        self, request: HttpRequest, credentials: dict[str, Any] | None = None
    ) -> int:
        """A successful sign-in forgives the user's own failures from this address only; not
        every failure on the username (an attacker's elsewhere) nor on the address (a
        sprayer who also holds one valid account)."""
        username = get_client_username(request, credentials)
        ip_address = getattr(request, "axes_ip_address", None)
        count, _ = AccessAttempt.objects.filter(username=username, ip_address=ip_address).delete()
        return int(count)


@dataclass(frozen=True)
class Lockout:
    scope: str
    username: str | None  # None: any username (address scope)
    ip_address: str | None  # None: any address (username scope)
    failures: int
    last_failure: datetime
    until: datetime


def _recent() -> QuerySet[Any]:
    recent: QuerySet[Any] = AccessAttempt.objects.filter(
        attempt_time__gte=timezone.now() - settings.AXES_COOLOFF_TIME
    )
    return recent


def current_lockouts() -> list[Lockout]:
    """Every scope at or over its limit now, newest failure first."""
    found: list[Lockout] = []
    scope_limits = limits()
    for scope in SCOPES:
        fields = _GROUPING[scope]
        rows = (
            _recent()
            .values(*fields)
            .annotate(failures=Sum("failures_since_start"), last=Max("attempt_time"))
            .filter(failures__gte=scope_limits[scope])
        )
        for row in rows:
            found.append(
                Lockout(
                    scope=scope,
                    username=row["username"] if "username" in fields else None,
                    ip_address=row["ip_address"] if "ip_address" in fields else None,
                    failures=int(row["failures"]),
                    last_failure=row["last"],
                    until=row["last"] + settings.AXES_COOLOFF_TIME,
                )
            )
    found.sort(key=lambda lock: lock.last_failure, reverse=True)
    return found


def attempts_for(scope: str, username: str, ip_address: str) -> QuerySet[Any]:
    """The failure rows behind one lockout (what unlocking deletes)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown lockout scope {scope!r} (one of {', '.join(SCOPES)})")
    attempts: QuerySet[Any] = AccessAttempt.objects.all()
    if scope in (PAIR, USERNAME):
        # A form without a username field is recorded with none.
        attempts = attempts.filter(
            Q(username=username) if username else Q(username__isnull=True) | Q(username="")
        )
    if scope in (PAIR, ADDRESS):
        attempts = attempts.filter(ip_address=ip_address)
    return attempts
