"""Live KeyViz columns through a real Redis channel layer: what one portal process's poller
broadcasts reaches a viewer of another process, byte for byte."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels_redis.core import RedisChannelLayer
from django.conf import settings

from keyviz.matrix import RowMeta
from keyviz.messages import RowCatalog, column_event, group_name, render_column, unpack_frame
from keyviz.serialize import FLAG_DEGRADED
from tests.helpers import require

pytestmark = pytest.mark.services


async def test_a_column_broadcast_by_one_process_reaches_a_viewer_of_another():
    require(bool(settings.REDIS_URL), "REDIS_URL is not set (scripts/test.sh starts Redis)")
    poller_side = RedisChannelLayer(hosts=[settings.REDIS_URL])
    viewer_side = RedisChannelLayer(hosts=[settings.REDIS_URL])
    channel = await viewer_side.new_channel()
    await viewer_side.group_add(group_name("writes"), channel)
    try:
        catalog = RowCatalog()
        row = RowMeta("route:7", start=b"\xffbinary", end=b"", route_ids=(7,), route_count=1)
        event = column_event(
            series="writes",
            step_ms=60_000,
            column_unix_ms=1_700_000_040_000,
            cells=[(row, 2**63 + 11, FLAG_DEGRADED)],
            catalog=catalog,
            nodes={"responded": 2, "total": 3, "failed": [], "late": ["n3"], "streaming": []},
            emitted_unix_ms=1_700_000_040_100,
        )
        await poller_side.group_send(group_name("writes"), event)
        received = await asyncio.wait_for(viewer_side.receive(channel), 5)
        assert received["type"] == "keyviz.column"
        doc = json.loads(render_column(received, "json", set(), lambda _: None))
        assert doc["rows"] == [
            {"bucket_id": "route:7", "value": 2**63 + 11, "flags": FLAG_DEGRADED}
        ]
        assert doc["new_rows"][0]["start_text"] == "0xff62696e617279"
        frame = render_column(received, "bin", set(), lambda _: None)
        assert isinstance(frame, bytes)
        header, values, flags = unpack_frame(frame)
        assert (header["bucket_ids"], values, flags) == (["route:7"], [2**63 + 11], [FLAG_DEGRADED])
    finally:
        await viewer_side.group_discard(group_name("writes"), channel)
        await poller_side.close_pools()
        await viewer_side.close_pools()
