"""The running demo's controls, shared by the Demo card and the demo-ctl channel."""

from __future__ import annotations

from collections.abc import Sequence

from audit.models import Outcome
from audit.service import record_event
from demo.control import ControlError, DemoControls

_controls: DemoControls | None = None


def install(controls: DemoControls | None) -> None:
    """Set by `elastickv-admin demo` once its devcluster runs (None: uninstall)."""
    global _controls
    _controls = controls


def controls() -> DemoControls | None:
    return _controls


def run_audited(args: Sequence[str], *, actor: str, via: str) -> str:
    """Run a control command and record it (actor explicit: the portal user or the OS
    user of demo-ctl); a refused command is recorded as a failure and re-raised."""
    running = _controls
    if running is None:
        raise ControlError("no demo cluster runs in this process")
    target = f"node:{args[1]}" if len(args) > 1 else "demo cluster"
    details = {"command": " ".join(args)[:200], "via": via}
    try:
        message = running.run(args)
    except ControlError as exc:
        record_event(
            "demo.control",
            target=target,
            outcome=Outcome.FAILURE,
            details={**details, "error": str(exc)},
            actor=actor,
        )
        raise
    if args and args[0] != "status":
        record_event("demo.control", target=target, details=details, actor=actor)
    return message
