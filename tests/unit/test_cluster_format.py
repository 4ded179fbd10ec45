"""How the cluster pages write values: units that keep numbers readable, keys labelled."""

from __future__ import annotations

import pytest

from cluster.probes import RpcSupport, Support
from cluster.templatetags.cluster_format import (
    age,
    bytes_iec,
    duration_ns,
    hlc_time,
    key_html,
    latency_ms,
    support_pill,
    thousands,
)
from keyviz.keys import key_preview


@pytest.mark.parametrize(
    ("ns", "text"),
    [(850.0, "850 ns"), (12_345.0, "12.3 µs"), (1_234_567.0, "1.23 ms"), (2.5e9, "2.50 s")],
)
def test_durations_pick_the_readable_unit(ns, text):
    assert duration_ns(ns) == text


@pytest.mark.parametrize(
    ("n", "text"), [(0, "0 B"), (1023, "1,023 B"), (1536, "1.5 KiB"), (5 * 1024**3, "5.0 GiB")]
)
def test_sizes_are_binary_units(n, text):
    assert bytes_iec(n) == text


def test_a_zero_last_contact_reads_unknown():
    assert age(None) == "unknown"
    assert age(450) == "450 ms ago"
    assert age(3_250) == "3.2 s ago"
    assert age(125_000) == "2 min ago"


def test_missing_numbers_are_a_dash():
    assert thousands(None) == "—"
    assert thousands(1234567) == "1,234,567"
    assert latency_ms(None) == "—"
    assert latency_ms(2.345) == "2.3 ms"


def test_hlc_shows_its_wall_clock_part_only_when_plausible():
    assert hlc_time((1_700_000_000_123 << 16) | 7) == "2023-11-14 22:13:20.123 UTC"
    assert hlc_time(0) == ""
    assert hlc_time(42) == ""


def test_transaction_keys_read_as_their_family_with_the_raw_key_in_the_title():
    html = key_html(key_preview(b"!txn|\x00\x01"))
    assert (
        html
        == '<span class="key label" title="!txn|0x0001" data-family="txn">transaction records</span>'
    )


def test_infinite_ends_and_text_keys():
    assert key_html(key_preview(b"", is_end=True)) == '<span class="key inf">+inf</span>'
    assert key_html(key_preview(b"")) == '<span class="key inf">-inf</span>'
    assert key_html(key_preview(b"<user>")) == '<code class="key">&lt;user&gt;</code>'


def test_support_pills_say_why_in_their_title():
    pill = support_pill(
        RpcSupport("GetKeyVizMatrix", Support.DISABLED, "KeyViz disabled on this node")
    )
    assert 'class="pill rpc warn"' in pill
    assert 'title="KeyViz disabled on this node"' in pill
    assert ">KeyViz off<" in pill
