"""`manage.py node_token status|start|finish|cancel`: the node token rotation from a shell.

The same actions as Settings -> Node token (cluster/node_token.py), audited with the OS user
as the actor (``cli:<user>``). Tokens never appear in the output, except a generated one,
once, on stdout (or in the file named by --out).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from asgiref.sync import async_to_sync
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.context import command_context, current
from audit.service import AuditWriteError
from cluster import node_token
from cluster.node_token import NodeCheckRow, NodeTokenRefused, TokenInfo
from cluster.runtime import node_client
from cluster.tokens import MAX_TOKEN_BYTES, TokenFileError

T = TypeVar("T")


def _run(probe: Callable[[], Awaitable[T]]) -> T:
    """An async step on a fresh loop, closing that loop's node channels afterwards."""

    async def run() -> T:
        try:
            return await probe()
        finally:
            await node_client().close()

    return async_to_sync(run)()


def _read_token_file(path: str) -> str:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"--token-file {path!r} cannot be read: {exc.strerror}") from None
    if len(raw) > MAX_TOKEN_BYTES:
        raise CommandError(f"--token-file {path!r} is {len(raw)} bytes; at most {MAX_TOKEN_BYTES}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(f"--token-file {path!r} is not UTF-8 text") from None


class Command(BaseCommand):
    help = "Show the node token and rotate it: status, start, finish, cancel."

    def add_arguments(self, parser: CommandParser) -> None:
        steps = parser.add_subparsers(dest="step", required=True, metavar="STEP")
        status = steps.add_parser("status", help="fingerprints, rotation and per-node state")
        status.add_argument(
            "--no-probe", action="store_true", help="show the last stored check, ask no node"
        )
        start = steps.add_parser("start", help="start a rotation with a new next token")
        start.add_argument(
            "--token-file", help="use the token in this file instead of generating one"
        )
        start.add_argument(
            "--out",
            help="write the generated token to this new file (mode 0600) instead of stdout",
        )
        finish = steps.add_parser("finish", help="next becomes current; the old token goes")
        finish.add_argument(
            "--force",
            action="store_true",
            help="finish although some nodes do not accept next (they lose access)",
        )
        finish.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help="with --force, do not ask for confirmation",
        )
        steps.add_parser("cancel", help="destroy the next token; nothing else changes")

    def handle(self, *args: Any, **options: Any) -> None:
        step = options["step"]
        with command_context(f"node_token {step}"):
            try:
                node_token.ensure_node_token()
                getattr(self, f"_{step}")(options)
            except (NodeTokenRefused, AuditWriteError, TokenFileError) as exc:
                raise CommandError(str(exc)) from None

    @staticmethod
    def _actor() -> str:
        context = current()
        return context.actor if context else "cli"

    # -- steps ------------------------------------------------------------------------------

    def _status(self, options: dict[str, Any]) -> None:
        status = node_token.token_status()
        if status.insecure:
            self.stdout.write(
                "insecure: the portal runs with --adminInsecureNoAuth and presents no token"
            )
            return
        if status.current is None:
            raise CommandError("no node token is stored yet: is --nodeTokenFile readable?")
        self._token_line("current", status.current)
        if status.next is not None:
            self._token_line("next", status.next)
        rows = list(status.checks)
        if not options["no_probe"]:
            rows = list(_run(node_token.probe_nodes).nodes)
            status = node_token.token_status()
        if status.rotating:
            on_next = sum(1 for r in rows if r.accepts_next)
            self.stdout.write(f"rotation: rolling, {on_next} of {len(rows)} nodes accept next")
        else:
            self.stdout.write("rotation: none")
        self._node_table(rows)

    def _start(self, options: dict[str, Any]) -> None:
        pasted = _read_token_file(options["token_file"]) if options["token_file"] else None
        out = Path(options["out"]) if options["out"] else None
        if out is not None and pasted is not None:
            raise CommandError("--out is for a generated token; --token-file already has it")
        if out is not None and out.exists():
            raise CommandError(f"--out {str(out)!r} exists; name a new file")
        known = _run(node_token.known_node_addresses)  # the only nodes ever sent next
        started = node_token.do_start_rotation(self._actor(), pasted, known_addresses=known)
        self.stderr.write(f"rotation started: next token {started.fingerprint}")
        if started.generated is None:
            return
        if out is not None:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(started.generated + "\n")
            self.stderr.write(f"the generated token is in {out} (it is not shown anywhere else)")
            return
        self.stderr.write("the generated token follows; it will not be shown again")
        self.stdout.write(started.generated)

    def _finish(self, options: dict[str, Any]) -> None:
        report = _run(node_token.probe_nodes)
        losing = report.not_on_next
        force = bool(options["force"] and losing)
        if force:
            self.stderr.write(f"{len(losing)} of {len(report.nodes)} nodes will lose access:")
            self._node_table(losing, stream=self.stderr)
            if options["interactive"]:
                if not sys.stdin.isatty():
                    raise CommandError(
                        "--force needs a confirmation: run it in a terminal or add --noinput"
                    )
                answer = input("Type 'finish' to cut them off: ")
                if answer.strip() != "finish":
                    raise CommandError("not finished")
        done = node_token.do_finish_rotation(
            self._actor(),
            report,
            force=force,
            confirm_nodes=[n.address for n in losing] if force else None,
        )
        self.stdout.write(
            f"rotation finished: current token {done.new_fingerprint}; "
            f"{done.old_fingerprint} is destroyed"
            + (f"; nodes without access: {', '.join(done.lost)}" if done.lost else "")
        )

    def _cancel(self, options: dict[str, Any]) -> None:
        report = _run(node_token.probe_nodes)
        cancelled = node_token.do_cancel_rotation(self._actor())
        self.stdout.write(f"rotation cancelled: next token {cancelled} is destroyed")
        if report.only_next:
            names = ", ".join(n.label for n in report.only_next)
            self.stderr.write(f"warning: {names} accept only the cancelled token: restore theirs")

    # -- output -----------------------------------------------------------------------------

    def _token_line(self, slot: str, info: TokenInfo) -> None:
        verified = info.verified_at.strftime("%Y-%m-%d %H:%M:%S") if info.verified_at else "never"
        self.stdout.write(
            f"{slot:8} {info.fingerprint}  {info.source}, created "
            f"{info.created_at:%Y-%m-%d %H:%M:%S} by {info.created_by}, last verified {verified}"
        )

    def _node_table(self, rows: list[NodeCheckRow], stream: Any = None) -> None:
        out = stream or self.stdout
        if not rows:
            out.write("no node checked yet")
            return
        width = max(len(r.node_id or "(seed)") for r in rows)
        for r in rows:
            name = r.node_id or "(seed)"
            line = f"  {name:{width}}  {r.address:21}  {r.state_label:17}  {r.checked_at:%H:%M:%S}"
            out.write((line + ("  " + r.detail if r.detail else "")).rstrip())
