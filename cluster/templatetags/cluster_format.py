"""How the cluster pages write numbers, durations, sizes, keys and support states."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from cluster.diagnose import Cause, cause_of
from cluster.fanout import NodeStatus
from cluster.probes import RpcSupport, Support
from keyviz.keys import KeyPreview

register = template.Library()

DASH = "—"
# HLC timestamps carry wall-clock milliseconds above 16 logical bits (as the nodes stamp
# split_at_hlc); outside these years the value is shown raw only.
_HLC_LOGICAL_BITS = 16
_HLC_PLAUSIBLE_MS = (946_684_800_000, 7_258_118_400_000)  # 2000-01-01 .. 2200-01-01


@register.filter
def thousands(value: int | None) -> str:
    if value is None:
        return DASH
    return f"{value:,}"


@register.filter
def latency_ms(value: float | None) -> str:
    if value is None:
        return DASH
    if value < 10:
        return f"{value:.1f} ms"
    return f"{value:,.0f} ms"


@register.filter
def duration_ns(value: float | None) -> str:
    """A latency given in nanoseconds, in the unit that keeps it readable."""
    if value is None:
        return DASH
    if value < 1_000:
        return f"{value:.0f} ns"
    if value < 1_000_000:
        return f"{value / 1_000:.1f} µs"
    if value < 1_000_000_000:
        return f"{value / 1_000_000:.2f} ms"
    return f"{value / 1_000_000_000:.2f} s"


@register.filter
def age(value_ms: int | None) -> str:
    """Time since something, or "unknown" (a last contact of 0 on the wire)."""
    if value_ms is None:
        return "unknown"
    if value_ms < 1_000:
        return f"{value_ms} ms ago"
    if value_ms < 60_000:
        return f"{value_ms / 1000:.1f} s ago"
    if value_ms < 3_600_000:
        return f"{value_ms // 60_000} min ago"
    return f"{value_ms // 3_600_000} h ago"


@register.filter
def bytes_iec(value: int | None) -> str:
    if value is None:
        return DASH
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{value:,} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


@register.filter
def hlc_time(value: int) -> str:
    """The wall-clock part of an HLC as UTC, or "" when 0 or not a plausible time."""
    physical_ms = value >> _HLC_LOGICAL_BITS
    if not value or not _HLC_PLAUSIBLE_MS[0] <= physical_ms < _HLC_PLAUSIBLE_MS[1]:
        return ""
    moment = datetime.fromtimestamp(physical_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{physical_ms % 1000:03d} UTC"


@register.filter
def unix_ms_time(value: int) -> str:
    if value <= 0:
        return "unknown"
    moment = datetime.fromtimestamp(value / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


_STATE_PILLS = {"active": "ok", "write_fenced": "warn", "unspecified": "muted"}


@register.filter
def state_pill(state: str) -> str:
    """Pill class of a route state."""
    return _STATE_PILLS.get(state, "warn")


@register.filter
def state_label(state: str) -> str:
    return state.replace("_", " ")


@register.simple_tag
def key_html(preview: KeyPreview) -> SafeString:
    """A route boundary: read by its family ("SQS queue jobs", raw key in the title),
    else reserved prefixes as a labelled chip and the rest as code."""
    if preview.is_infinite:
        return format_html('<span class="key inf">{}</span>', preview.text)
    if preview.label:
        return format_html(
            '<span class="key label" title="{}" data-family="{}">{}</span>',
            preview.text,
            preview.family or "",
            preview.label,
        )
    rest = preview.text
    chip = ""
    if preview.reserved_prefix:
        rest = rest[len(preview.reserved_prefix) :]
        chip = format_html(
            '<span class="prefix" title="{}">{}</span>',
            preview.reserved_label or "",
            preview.reserved_prefix,
        )
    kind = "key hex" if preview.is_hex else "key"
    return format_html('{}<code class="{}">{}</code>', chip, kind, rest)


_SUPPORT_PILLS = {
    Support.YES: "ok",
    Support.NO: "muted",
    Support.DISABLED: "warn",
    Support.UNKNOWN: "muted",
}
SHORT_NAMES = {
    "GetRaftGroups": "RaftGroups",
    "GetKeyVizMatrix": "KeyViz",
    "GetAdapterSummary": "Adapters",
    "GetRouteDetail": "RouteDetail",
    "StreamEvents": "Stream",
}


@register.simple_tag
def support_pill(rpc: RpcSupport) -> SafeString:
    """One RPC's support on one node as a pill; the title says why."""
    name = SHORT_NAMES.get(rpc.method, rpc.method)
    suffix = {Support.NO: " ✕", Support.DISABLED: " off", Support.UNKNOWN: " ?"}.get(
        rpc.support, ""
    )
    title = rpc.detail or f"{rpc.method} is served by this node"
    return format_html(
        '<span class="pill rpc {}" data-rpc="{}" data-support="{}" title="{}">{}{}</span>',
        _SUPPORT_PILLS[rpc.support],
        rpc.method,
        rpc.support.value,
        title,
        name,
        suffix,
    )


_SUPPORT_WORDS = {
    Support.YES: "served",
    Support.NO: "not in this version",
    Support.DISABLED: "KeyViz off",
    Support.UNKNOWN: "unknown",
}


@register.simple_tag
def support_state(rpc: RpcSupport) -> SafeString:
    """One RPC's support in words (the node page's RPC table)."""
    return format_html(
        '<span class="pill {}" data-support="{}">{}</span>',
        _SUPPORT_PILLS[rpc.support],
        rpc.support.value,
        _SUPPORT_WORDS[rpc.support],
    )


@register.simple_tag
def seen_at(at_ms: int | None, now_ms: int) -> str:
    """When something was last seen: the time and how long ago ("never" when unknown)."""
    if not at_ms:
        return "never (not since the portal started)"
    return f"{unix_ms_time(at_ms)}, {age(max(0, now_ms - at_ms))}"


@register.filter
def per_second(value: float | None) -> str:
    """A rate: "12.3/s", "0/s", or "—" when there are too few samples."""
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}/s"
    if value == 0:
        return "0/s"
    return f"{value:.3g}/s"


SPARK_W = 80
SPARK_H = 18


@register.simple_tag
def sparkline(values: Sequence[float], label: str = "") -> SafeString:
    """A tiny inline SVG of a trend (no script; numbers only, so nothing to escape but the
    label)."""
    points = [float(v) for v in values]
    if len(points) < 2:
        return format_html('<span class="dim">{}</span>', "—")
    top = max(points) or 1.0
    step = SPARK_W / (len(points) - 1)
    coords = " ".join(
        f"{i * step:.1f},{SPARK_H - 1 - (v / top) * (SPARK_H - 2):.1f}"
        for i, v in enumerate(points)
    )
    return format_html(
        '<svg class="spark" width="{}" height="{}" viewBox="0 0 {} {}" role="img" '
        'aria-label="{}"><polyline fill="none" stroke="currentColor" stroke-width="1.5" '
        'points="{}"/></svg>',
        SPARK_W,
        SPARK_H,
        SPARK_W,
        SPARK_H,
        label,
        coords,
    )


@register.filter
def cause(status: NodeStatus) -> Cause:
    """The cause of a failed status (cluster/diagnose.py): its title, cause and next step."""
    return cause_of(status.code, status.reachable)
