"""The stream consumer's pure parts: client message validation and the bounded outbox."""

from __future__ import annotations

import asyncio

import pytest

from elastickv_admin.lib.errors import ParamError
from keyviz.consumers import (
    MAX_MESSAGE_BYTES,
    Ack,
    Outbox,
    Ping,
    Subscribe,
    Unsubscribe,
    error_message,
    parse_client_message,
)


def error_for(text: str | None, data: bytes | None = None) -> str:
    with pytest.raises(ParamError) as err:
        parse_client_message(text, data)
    return str(err.value)


def test_valid_messages_parse():
    assert parse_client_message('{"type": "subscribe", "series": "writes"}') == Subscribe("writes")
    assert parse_client_message(
        '{"type": "subscribe", "series": "read_bytes", "format": "bin"}'
    ) == Subscribe("read_bytes", "bin")
    assert parse_client_message('{"type": "unsubscribe"}') == Unsubscribe()
    assert parse_client_message('{"type": "ack", "column_unix_ms": 60000}') == Ack(60_000)
    assert parse_client_message('{"type": "ping"}') == Ping()


@pytest.mark.parametrize(
    ("text", "starts"),
    [
        ("{", "message: not valid JSON"),
        ('"subscribe"', "message: must be a JSON object"),
        ("{}", "type: unknown message type None"),
        ('{"type": 3}', "type: unknown message type 3"),
        ('{"type": "subscribe"}', "series: unknown series None"),
        ('{"type": "subscribe", "series": "Writes"}', "series: unknown series 'Writes'"),
        ('{"type": "subscribe", "series": "writes", "format": "csv"}', "format: unknown format"),
        (
            '{"type": "subscribe", "series": "writes", "from": 1}',
            "from: unknown field for subscribe",
        ),
        ('{"type": "ack"}', "column_unix_ms: must be"),
        ('{"type": "ack", "column_unix_ms": true}', "column_unix_ms: must be"),
        ('{"type": "ack", "column_unix_ms": -1}', "column_unix_ms: must be"),
        ('{"type": "ack", "column_unix_ms": 9999999999999999999}', "column_unix_ms: must be"),
        ('{"type": "ping", "x": 1}', "x: unknown field for ping; ping takes no other field"),
    ],
)
def test_bad_messages_name_the_field_and_what_to_send(text: str, starts: str):
    assert error_for(text).startswith(starts)


def test_binary_and_oversized_frames_are_refused():
    assert error_for(None, b"{}").startswith("message: send JSON text frames")
    assert error_for(" " * (MAX_MESSAGE_BYTES + 1)).startswith("message: longer than")


def test_errors_use_the_api_envelope_with_a_type():
    exc = ParamError("series", "unknown series 'x'")
    assert error_message(exc) == {
        "type": "error",
        "code": 400,
        "message": "series: unknown series 'x'",
    }


def column(at: int) -> dict[str, object]:
    return {"type": "keyviz.column", "column_unix_ms": at}


async def drain(box: Outbox) -> list[dict[str, object]]:
    """What may be sent now, marking it sent."""
    out: list[dict[str, object]] = []
    while True:
        try:
            item = await asyncio.wait_for(box.get(), 0.01)
        except TimeoutError:
            return out
        box.sent(item)
        out.append(item.message)


async def test_at_most_the_window_of_columns_is_in_flight_until_acknowledged():
    box = Outbox(max_unacked=2, max_queued=10)
    for t in (1, 2, 3, 4):
        box.column(column(t))
    assert [m["column_unix_ms"] for m in await drain(box)] == [1, 2]
    box.ack(1)
    assert [m["column_unix_ms"] for m in await drain(box)] == [3]
    box.ack(4)  # cumulative
    assert [m["column_unix_ms"] for m in await drain(box)] == [4]


async def test_control_messages_keep_their_order_and_do_not_wait_for_acks():
    box = Outbox(max_unacked=1, max_queued=10)
    box.control({"type": "subscribed"})
    box.column(column(1))
    box.column(column(2))
    box.control({"type": "route_transition"})
    sent = await drain(box)
    assert [m["type"] for m in sent] == ["subscribed", "keyviz.column"]
    box.ack(1)
    assert [m.get("column_unix_ms", m["type"]) for m in await drain(box)] == [2, "route_transition"]


async def test_a_viewer_that_falls_behind_is_dropped_to_one_resync_and_paused():
    box = Outbox(max_unacked=2, max_queued=3)
    sent = []
    for t in range(1, 10):
        box.column(column(t))
        sent += await drain(box)
    # Two in flight, three queued, the sixth overflowed: one resync, nothing after.
    assert [m.get("column_unix_ms", m["type"]) for m in sent] == [1, 2, "resync"]
    assert sent[-1]["dropped"] == 4
    assert sent[-1]["last_sent_unix_ms"] == 2
    assert box.paused
    assert box.queued == 0
    box.ack(2)
    assert await drain(box) == []
    # Subscribing again resumes with a clean slate.
    box.restart()
    box.column(column(20))
    assert [m["column_unix_ms"] for m in await drain(box)] == [20]


def test_a_client_that_never_reads_its_replies_is_refused_more():
    box = Outbox()
    accepted = [box.control({"type": "error"}) for _ in range(100)]
    assert accepted.count(True) == 64
    assert accepted[-1] is False
