"""The chain's tail, anchored outside the database.

The HMAC chain in the database shows an edited, deleted or reordered event, but not a cut
tail: whoever can write the table can delete the last events and set the head row back to
the new last one (or empty the table and reset the head). So every committed event also
leaves its (seq, MAC) in two places outside the table:

- the audit log stream (logger ``elastickv_admin.audit``): one JSON line per event with
  ``seq``, ``prev_mac`` and ``mac``, for a SIEM (``audit_verify --log FILE``);
- the anchor file (``ELASTICKV_ADMIN_AUDIT_ANCHOR_FILE``, default ``<dataDir>/audit-anchor``):
  the highest committed seq and its MAC, signed with the audit key. Writers hold an exclusive
  flock on it and only move it forward along the chain it records, so several portal
  processes sharing the data directory keep the highest seq.

``audit_verify`` then reports a table that ends before the anchored seq, or whose event at
that seq has another MAC. Undetectable: cutting the tail AND putting back an older anchor
file (or deleting it) AND the same in every copy of the log stream.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.chain import Keys, audit_keys, mac_matches
from elastickv_admin.lib.crypto import Keyring

logger = logging.getLogger(__name__)

SIGNATURE_CONTEXT = "elastickv-admin audit anchor"
# The anchor is one JSON record padded to this size, rewritten in place (same length, so a
# reader never sees the end of an older, longer record).
RECORD_SIZE = 256
MAX_READ = 4096
# The fields of a log line that are not part of the event's canonical form.
LOG_EXTRA_FIELDS = ("event", "prev_mac", "mac", "key_id")


class AnchorError(Exception):
    """The anchor (file or log) cannot be believed; the message says why and where."""


@dataclass(frozen=True)
class Anchor:
    seq: int
    mac: str
    source: str  # where it came from, for the report: a path, or "path line N"


def anchor_path() -> Path:
    from django.conf import settings

    return Path(settings.AUDIT_ANCHOR_FILE)


def _signature(key: str, seq: int, mac: str) -> str:
    message = f"{SIGNATURE_CONTEXT}\n{seq}\n{mac}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def _parse(raw: bytes, path: Path, keys: Keyring) -> Anchor | None:
    text = raw.decode("utf-8", "replace").strip()
    if not text:
        return None  # created, never written
    try:
        data = json.loads(text)
        seq, mac, sig = int(data["seq"]), str(data["mac"]), str(data["sig"])
        kid = str(data.get("kid", ""))  # none in anchors from before key ids
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AnchorError(f"the anchor at {path} is not a valid anchor file") from exc
    signed = [k for k in keys.candidates(kid) if hmac.compare_digest(sig, _signature(k, seq, mac))]
    if not signed:
        raise AnchorError(
            f"the anchor at {path} is not signed with this audit key (edited, or from another "
            "deployment)"
        )
    return Anchor(seq, mac, f"the anchor at {path}")


def read_anchor(path: Path, key: Keys = None) -> Anchor | None:
    """The anchor in ``path``; None when there is none; AnchorError when it is not a
    well-formed anchor signed with the audit key."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AnchorError(f"the anchor at {path} cannot be read: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # never half of a concurrent write
        raw = os.pread(fd, MAX_READ, 0)
    finally:
        os.close(fd)
    return _parse(raw, path, audit_keys(key))


def _follows(current: Anchor, seq: int, prev_mac: str) -> bool:
    """Whether the chain that holds event ``seq`` passes through the anchored event: its
    prev_mac when it is the next one, else the event at the anchored seq in the table (the
    anchor lagged, or another process's later event advanced it first)."""
    if seq == current.seq + 1:
        return hmac.compare_digest(prev_mac, current.mac)
    from audit.models import AuditChain, AuditEvent

    stored = AuditEvent.objects.filter(seq=current.seq).values_list("mac", flat=True).first()
    if stored is None:
        # Pruned since (retention): the chain starts after it.
        kept_from = AuditChain.objects.filter(pk=1).values_list("anchor_seq", flat=True).first()
        return kept_from is not None and kept_from > current.seq
    return hmac.compare_digest(str(stored), current.mac)


def advance_anchor(
    seq: int, mac: str, prev_mac: str, path: Path | None = None, key: Keys = None
) -> None:
    """Move the anchor to (seq, mac): only forward, and only along the chain it records, so
    a tail cut and refilled by new events stays visible. Called after the event's
    transaction committed; never raises (the event is written: a lagging anchor only
    narrows what audit_verify can see, and the log says so).

    One fixed-size record rewritten in place under an exclusive flock, without fsync (temp
    file + fsync + rename cost more than the database write itself: README, Production). A
    crash can leave it behind the table (less to check), not ahead of a durable event."""
    path = path or anchor_path()
    keys = audit_keys(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = _parse(os.pread(fd, MAX_READ, 0), path, keys)
            except AnchorError as exc:
                # Left as found: it is evidence for audit_verify, not ours to overwrite.
                logger.error("audit anchor not advanced to #%d: %s", seq, exc)
                return
            if current is not None and current.seq >= seq:
                return
            if current is not None and not _follows(current, seq, prev_mac):
                logger.error(
                    "audit anchor not advanced to #%d: %s records #%d, which the chain no "
                    "longer holds (cut and refilled?): run audit_verify",
                    seq,
                    current.source,
                    current.seq,
                )
                return
            sig = _signature(keys.primary, seq, mac)
            body = json.dumps({"seq": seq, "mac": mac, "sig": sig, "kid": keys.current_id})
            os.pwrite(fd, body.encode().ljust(RECORD_SIZE - 1) + b"\n", 0)
        finally:
            os.close(fd)  # releases the lock
    except Exception as exc:  # a committed event must not turn into an error response
        logger.error("audit anchor at %s not advanced to #%d: %s", path, seq, exc)


@dataclass(frozen=True)
class LogRecord:
    seq: int
    mac: str
    line: int


def _parse_log_line(text: str) -> dict[str, Any] | None:
    """A bare JSON object per line; tolerate a shipper's prefix before the object."""
    start = text.find("{")
    if start < 0:
        return None
    try:
        data = json.loads(text[start:])
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return _parse_log_line(data["message"])
    return data if isinstance(data, dict) and data.get("event") == "audit" else None


def read_log(path: Path, key: Keys = None) -> list[LogRecord]:
    """The audit events of a log stream copy (JSON lines), each checked against its own
    MAC (under the key its key_id names) so a forged line cannot raise a false alarm.
    AnchorError names a bad line."""
    keys = audit_keys(key)
    records: list[LogRecord] = []
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise AnchorError(f"the audit log {path} cannot be read: {exc}") from exc
    with handle:
        for number, text in enumerate(handle, start=1):
            data = _parse_log_line(text)
            if data is None:
                continue
            fields = {k: v for k, v in data.items() if k not in LOG_EXTRA_FIELDS}
            try:
                seq, mac, prev = int(data["seq"]), str(data["mac"]), str(data["prev_mac"])
                kid = str(data.get("key_id", ""))  # none in lines from before key ids
            except (KeyError, ValueError, TypeError) as exc:
                raise AnchorError(
                    f"{path} line {number}: an audit line without seq, prev_mac and mac"
                ) from exc
            if not mac_matches(keys, kid, prev, fields, mac):
                raise AnchorError(
                    f"{path} line {number}: event #{seq} does not carry its own MAC (not "
                    "written by this portal, or edited)"
                )
            records.append(LogRecord(seq, mac, number))
    return records


def _table_end() -> int:
    from django.db.models import Max

    from audit.models import AuditEvent

    end = AuditEvent.objects.aggregate(end=Max("seq"))["end"]
    return int(end or 0)


def tail_problems(anchor: Anchor) -> list[str]:
    """The table must reach the anchored seq, and hold there the event anchored."""
    from audit.models import AuditEvent

    end = _table_end()
    if end < anchor.seq:
        missing = (
            f"event {anchor.seq}" if end + 1 == anchor.seq else f"events {end + 1}-{anchor.seq}"
        )
        return [
            f"{missing} missing at the tail: {anchor.source} records seq {anchor.seq} "
            f"(the table ends at #{end})"
        ]
    mac = AuditEvent.objects.filter(seq=anchor.seq).values_list("mac", flat=True).first()
    if mac is not None and not hmac.compare_digest(str(mac), anchor.mac):
        return [
            f"event #{anchor.seq} is not the one {anchor.source} records (another MAC: the "
            "chain was rewritten from there on)"
        ]
    return []


def log_problems(records: list[LogRecord], path: Path) -> list[str]:
    """Every logged event still in the table must have the logged MAC; the highest logged
    event anchors the tail. Events no longer in the table were pruned, or are reported by
    the chain check (a gap) or the tail check."""
    from audit.models import AuditEvent

    if not records:
        return []
    problems: list[str] = []
    for start in range(0, len(records), 1000):
        batch = records[start : start + 1000]
        stored = dict(
            AuditEvent.objects.filter(seq__in=[r.seq for r in batch]).values_list("seq", "mac")
        )
        for record in batch:
            mac = stored.get(record.seq)
            if mac is not None and not hmac.compare_digest(str(mac), record.mac):
                problems.append(
                    f"event #{record.seq} is not the one the audit log {path} line "
                    f"{record.line} records (another MAC: rewritten)"
                )
                return problems
    last = max(records, key=lambda r: r.seq)
    source = f"the audit log {path} (line {last.line})"
    return tail_problems(Anchor(last.seq, last.mac, source))
