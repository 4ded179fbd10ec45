"""Failure controls of the demo cluster: one command set for the Demo card and for
`elastickv-admin demo-ctl` (a second terminal).

demo-ctl talks to the running demo through a Unix socket in the demo's data directory
(mode 0600, so only the user running the demo can use it; nothing listens on the
network). One request per connection: a JSON line {"args": [...], "actor": "..."}; one
JSON line back: {"ok": bool, "message": str}.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from demo.commands import COMMANDS, DEFAULT_SLOW_S, MAX_SLOW_S
from devcluster import ClusterError, DevCluster

log = logging.getLogger(__name__)

SOCKET_NAME = "demo-ctl.sock"
MAX_REQUEST_BYTES = 4096


class ControlError(ValueError):
    """A command the demo cannot run; the message says what to fix."""


@dataclass
class NodeState:
    """What the controls changed on a node (the card shows it)."""

    slow_s: float = 0.0
    wrong_token: bool = False
    keyviz_off: bool = False


@dataclass
class DemoControls:
    cluster: DevCluster
    states: dict[str, NodeState] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def node_ids(self) -> list[str]:
        return [n.node_id for n in self.cluster.nodes]

    def state(self, node_id: str) -> NodeState:
        return self.states.setdefault(node_id, NodeState())

    def run(self, args: Sequence[str]) -> str:
        """Run one command (`stop n2`, `slow n2 3`, `phase n1 500`, `status`); returns
        what happened, or raises ControlError saying what to fix."""
        if not args:
            raise ControlError(f"give a command: status, or one of {', '.join(COMMANDS)} NODE")
        command, rest = args[0], list(args[1:])
        if command == "status":
            return self.status()
        if command not in COMMANDS:
            raise ControlError(
                f"unknown command {command!r}; use status or one of {', '.join(COMMANDS)}"
            )
        if not rest:
            raise ControlError(f"{command} needs a node: one of {', '.join(self.node_ids())}")
        node_id, extra = rest[0], rest[1:]
        if node_id not in self.node_ids():
            raise ControlError(f"no node {node_id!r}; nodes are {', '.join(self.node_ids())}")
        wanted = COMMANDS[command][0]
        if len(extra) > (1 if wanted else 0) or (wanted == "MS" and not extra):
            raise ControlError(f"usage: {command} NODE {wanted}".rstrip())
        with self.lock:
            try:
                return self._apply(command, node_id, extra[0] if extra else "")
            except (ClusterError, ValueError) as exc:
                raise ControlError(f"{command} {node_id}: {exc}") from None

    def _apply(self, command: str, node_id: str, value: str) -> str:
        cluster, state = self.cluster, self.state(node_id)
        if command == "stop":
            cluster.stop_node(node_id)
            return f"{node_id} stopped"
        if command == "start":
            cluster.start_node(node_id)
            state.keyviz_off = False  # a rebooted node runs with its sampler
            return f"{node_id} started (flush phase {cluster.flush_phase(node_id)} ms)"
        if command == "slow":
            seconds = _number(value, DEFAULT_SLOW_S, "SECONDS")
            if not 0 < seconds <= MAX_SLOW_S:
                raise ControlError(f"slow: SECONDS must be within (0, {MAX_SLOW_S:g}]")
            cluster.set_fault(node_id, delay_s=seconds)
            state.slow_s = seconds
            return f"{node_id} answers {seconds:g} s late"
        if command == "heal":
            cluster.clear_fault(node_id)
            state.slow_s = 0.0
            return f"{node_id} answers on time"
        if command == "wrong-token":
            cluster.set_node_token(node_id, secrets.token_urlsafe(24))
            state.wrong_token = True
            return f"{node_id} now expects a token the portal does not have"
        if command == "fix-token":
            if cluster.token is None:
                raise ControlError("this cluster runs without a token")
            cluster.set_node_token(node_id, cluster.token)
            state.wrong_token = False
            return f"{node_id} accepts the demo's token again"
        if command in ("keyviz-off", "keyviz-on"):
            on = command == "keyviz-on"
            cluster.set_keyviz_enabled(node_id, on)
            state.keyviz_off = not on
            return f"{node_id} KeyViz sampler {'on' if on else 'off'}"
        # phase
        phase = int(_number(value, 0.0, "MS"))
        if not 0 <= phase < cluster.step_ms:
            raise ControlError(f"phase: MS must be within 0..{cluster.step_ms - 1}")
        cluster.set_flush_phase(node_id, phase)
        return f"{node_id} flushes {phase} ms into each {cluster.step_ms} ms step"

    def status(self) -> str:
        lines = []
        for node in self.cluster.nodes:
            s = self.state(node.node_id)
            marks = [
                "up" if node.up else "STOPPED",
                f"slow {s.slow_s:g}s" if s.slow_s else "",
                "wrong token" if s.wrong_token else "",
                "keyviz off" if s.keyviz_off else "",
                f"phase {self.cluster.flush_phase(node.node_id)} ms",
            ]
            lines.append(f"{node.node_id} {node.address} " + ", ".join(m for m in marks if m))
        return "\n".join(lines)


def _number(raw: str, default: float, name: str) -> float:
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ControlError(f"{name} must be a number, got {raw!r}") from None


# -- the local channel -------------------------------------------------------------------------

Handler = Callable[[list[str], str], str]


class ControlServer:
    """Serves demo-ctl requests on a Unix socket (0600) until stop()."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a stale socket of a demo that is gone
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self._sock.bind(str(path))
        finally:
            os.umask(old)
        path.chmod(0o600)
        self._sock.listen(4)
        self._thread = threading.Thread(target=self._serve, name="demo-ctl", daemon=True)

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # stopped
            with conn:
                conn.settimeout(5.0)
                try:
                    reply = self._answer(_read_line(conn))
                except (OSError, ValueError) as exc:
                    reply = {"ok": False, "message": f"bad request: {exc}"}
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(reply).encode() + b"\n")

    def _answer(self, raw: bytes) -> dict[str, object]:
        doc = json.loads(raw)
        args, actor = doc.get("args"), doc.get("actor", "")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ValueError("args must be a list of strings")
        if not isinstance(actor, str):
            raise ValueError("actor must be a string")
        try:
            return {"ok": True, "message": self._handler(args, actor[:100])}
        except ControlError as exc:
            return {"ok": False, "message": str(exc)}
        except Exception as exc:  # the channel must keep serving; say what failed
            log.exception("demo-ctl %s failed", args)
            return {"ok": False, "message": f"failed: {exc.__class__.__name__}"}


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(1024)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise ValueError(f"request over {MAX_REQUEST_BYTES} bytes")
    return data.split(b"\n", 1)[0]


def send(path: Path, args: Sequence[str], actor: str, timeout_s: float = 10.0) -> tuple[bool, str]:
    """demo-ctl's side: one request, one (ok, message)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(path))
        sock.sendall(json.dumps({"args": list(args), "actor": actor}).encode() + b"\n")
        doc = json.loads(_read_line(sock))
    return bool(doc.get("ok")), str(doc.get("message", ""))
