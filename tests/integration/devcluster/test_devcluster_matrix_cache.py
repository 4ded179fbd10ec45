"""A devcluster node's cached KeyViz matrix answers exactly as one built afresh.

`KeyVizSampler.matrix_wire` keeps the ring materialised between queries (only new
columns are scattered, evicted ones cleared) and reuses row headers, and proto.wire
caches encoded row heads. `KeyVizSampler.matrix` still builds its response from the
ring's columns on every call, and protobuf serializes it byte for byte as proto.wire
encodes `matrix_wire` (tests/unit/test_proto_wire.py), so every cached answer is
checked against those bytes, through any sequence of flushes, evictions, catalog
changes, series and windows.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from devcluster.catalog import Route
from devcluster.sampler import KeyVizSampler
from proto import admin_pb2
from proto.wire import KeyVizMatrixWire, decode_keyviz_matrix, encode_keyviz_matrix

SERIES = (
    admin_pb2.KEYVIZ_SERIES_UNSPECIFIED,
    admin_pb2.KEYVIZ_SERIES_READS,
    admin_pb2.KEYVIZ_SERIES_WRITES,
    admin_pb2.KEYVIZ_SERIES_READ_BYTES,
    admin_pb2.KEYVIZ_SERIES_WRITE_BYTES,
)
WRITES = admin_pb2.KEYVIZ_SERIES_WRITES
KEYS = [bytes([k]) for k in range(1, 48)]


def answer(sampler: KeyVizSampler, query: tuple[int, int, int, int]) -> KeyVizMatrixWire:
    """matrix_wire, checked against the uncached `matrix` of the same state."""
    wire = sampler.matrix_wire(*query)
    assert encode_keyviz_matrix(wire) == sampler.matrix(*query).SerializeToString(), query
    return wire


def catalog(data: st.DataObject) -> list[Route]:
    """Routes covering the key space. Ids come from a small pool, so a later catalog
    reuses ids with other ranges, groups and lineages (a bucket's facts change in
    place) as well as bringing new ones (new buckets, appended as new slots)."""
    draw = data.draw
    n = draw(st.integers(1, 9))
    edges = [
        b"",
        *sorted(draw(st.sets(st.sampled_from(KEYS), min_size=n - 1, max_size=n - 1))),
        b"",
    ]
    ids = draw(st.lists(st.integers(1, 30), min_size=n, max_size=n, unique=True))
    return [
        Route(
            route_id=ids[i],
            start=edges[i],
            end=edges[i + 1],
            group_id=draw(st.integers(1, 3)),
            lineage_id=draw(st.sampled_from(["", "lin-a", "lin-b"])),
        )
        for i in range(n)
    ]


def traffic(data: st.DataObject, sampler: KeyVizSampler, routes: list[Route]) -> None:
    draw = data.draw
    for _ in range(draw(st.integers(0, 10))):
        sampler.observe(
            draw(st.sampled_from(routes)).route_id,
            draw(st.integers(0, 1)),
            # Mostly counts below 128, sometimes above: cached cells widen from uint8.
            draw(st.integers(0, 40) | st.integers(0, 2**20)),
            draw(st.integers(0, 100) | st.integers(0, 2**40)),
            draw(st.sampled_from(["", "redis", "dynamo"])),
            draw(st.integers(0, 7)),
        )


def query(data: st.DataObject, sampler: KeyVizSampler) -> tuple[int, int, int, int]:
    """A series, a window (whole ring, around its columns, before or past it, empty) and a cap."""
    draw = data.draw
    at = [c.at_ms for c in sampler.columns] or [1_000]
    bounds = st.sampled_from([0, 1, at[0], at[-1], at[-1] + 10**9]) | st.sampled_from(at).map(
        lambda t: t + draw(st.sampled_from([-1, 0, 1]))
    )
    return (
        draw(st.sampled_from(SERIES)),
        draw(bounds),
        draw(bounds),
        draw(st.sampled_from([0, 0, 1, 2, 3, 5, 2000])),
    )


@given(st.data())
def test_cached_answers_match_a_fresh_build_through_any_history(data: st.DataObject) -> None:
    draw = data.draw
    sampler = KeyVizSampler(
        history_columns=draw(st.integers(1, 8)),
        max_tracked_routes=draw(st.integers(1, 10)),
        adapter_rows=draw(st.booleans()),
        sample_rate=draw(st.sampled_from([1.0, 0.5, 0.01])),
        design=draw(st.booleans()),
    )
    routes = catalog(data)
    sampler.set_routes(routes)
    at = 1_000
    answered: list[tuple[KeyVizMatrixWire, bytes]] = []
    for _ in range(draw(st.integers(1, 40))):
        step = draw(st.sampled_from(["flush", "flush", "flushes", "routes", "query", "query"]))
        if step == "routes":
            routes = catalog(data)
            sampler.set_routes(routes)
        elif step == "query":
            for _ in range(draw(st.integers(1, 3))):
                wire = answer(sampler, query(data, sampler))
                answered.append((wire, encode_keyviz_matrix(wire)))
        else:
            # "flushes": enough columns between two queries to turn the whole ring over.
            for _ in range(1 if step == "flush" else draw(st.integers(2, 12))):
                traffic(data, sampler, routes)
                at += draw(st.integers(1, 90_000))
                terms = {g: draw(st.integers(0, 5) | st.integers(0, 2**33)) for g in range(1, 4)}
                sampler.flush(at, terms)
    # Answers are the caller's own arrays (encoded outside the cluster lock): later
    # queries, updating the cache in place, must not have changed them.
    for wire, data_bytes in answered:
        assert encode_keyviz_matrix(wire) == data_bytes


def _routes(ids: range) -> list[Route]:
    edges = [b"", *(bytes([i]) for i in range(1, len(ids))), b""]
    return [Route(r, edges[i], edges[i + 1], 1) for i, r in enumerate(ids)]


def test_live_polling_over_a_full_ring_stays_exact() -> None:
    # A page polling a node: one new column per query; the ring wraps several times
    # and counts pass 255 part way (uint8 cells widen to uint64).
    sampler = KeyVizSampler(history_columns=16, max_tracked_routes=100, design=True)
    routes = _routes(range(1, 21))
    sampler.set_routes(routes)
    for step in range(70):
        for r in routes[: 5 + step % 16]:
            sampler.observe(r.route_id, step % 2, 1 + step * r.route_id % 300, 64, roles=step % 8)
        sampler.flush(1_000 * (step + 1), {1: 1 + step // 10})
        for series in (WRITES, admin_pb2.KEYVIZ_SERIES_READ_BYTES):
            answer(sampler, (series, 0, 0, 1024))
        answer(sampler, (WRITES, 1_000 * (step - 3), 0, 3))
    last = decode_keyviz_matrix(encode_keyviz_matrix(sampler.matrix_wire(WRITES, 0, 0, 0)))
    assert last.column_unix_ms.tolist() == [1_000 * s for s in range(55, 71)]


def test_rows_of_buckets_gone_from_the_ring_are_not_kept_forever() -> None:
    # Every catalog brings new route ids (splits); with a short ring the old buckets'
    # rows hold no live cell, and the cache must not grow with every bucket ever seen.
    sampler = KeyVizSampler(history_columns=2)
    for step in range(60):
        ids = range(1 + 4 * step, 5 + 4 * step)
        sampler.set_routes(_routes(ids))
        for r in ids:
            sampler.observe(r, 1, 1, 10)
        sampler.flush(1_000 * (step + 1), {1: 1})
        wire = answer(sampler, (WRITES, 0, 0, 0))
        # The ring's two columns: this catalog's routes and the previous one's.
        live = range(max(1, ids.start - 4), ids.stop)
        assert {h.bucket_id for h in wire.rows} == {f"route:{r}" for r in live}
    cache = sampler._cache
    assert cache is not None
    assert cache.cells[("seen", 0)].shape[0] <= 32  # 240 buckets were created, at most 8 are live


def test_row_headers_follow_a_bucket_whose_catalog_facts_change() -> None:
    # Buckets keep their ids while their facts change in place (Bucket is mutable).
    sampler = KeyVizSampler(history_columns=4, max_tracked_routes=3, design=True)

    def step(at: int, routes: list[Route], busy: list[int]) -> dict[str, tuple[object, ...]]:
        sampler.set_routes(routes)
        for route_id in busy:
            sampler.observe(route_id, 1, 2, 20)
        sampler.flush(at, {1: 1, 2: 1, 3: 1})
        rows = answer(sampler, (WRITES, 0, 0, 0)).rows
        return {h.bucket_id: (h.start, h.end, h.lineage_id, h.route_ids) for h in rows}

    first = [
        Route(1, b"", b"b", 1),
        Route(2, b"b", b"c", 1, lineage_id="old"),
        Route(3, b"c", b"", 2),
    ]
    assert step(1_000, first, [1, 2, 3]) == {
        "route:1": (b"", b"b", "", (1,)),
        "route:2": (b"b", b"c", "old", (2,)),
        "route:3": (b"c", b"", "", (3,)),
    }
    # Route 2 takes over route 3's range (a merge keeping the left id) and a new lineage.
    merged = [Route(1, b"", b"b", 1), Route(2, b"b", b"", 3, lineage_id="new")]
    assert step(2_000, merged, [2]) == {
        "route:1": (b"", b"b", "", (1,)),
        "route:2": (b"b", b"", "new", (2,)),
        "route:3": (b"c", b"", "", (3,)),  # gone from the catalog, still in the ring
    }
    # Four routes over a budget of three: routes 1 and 5 share the bucket virtual:1.
    split = [
        Route(1, b"", b"a", 1),
        Route(5, b"a", b"b", 1),
        Route(2, b"b", b"c", 3, lineage_id="new"),
        Route(6, b"c", b"", 3),
    ]
    assert step(3_000, split, [5, 6]) == {
        "route:1": (b"", b"b", "", (1,)),
        "route:2": (b"b", b"c", "new", (2,)),
        "route:3": (b"c", b"", "", (3,)),
        "virtual:1": (b"", b"b", "", (1, 5)),
        "route:6": (b"c", b"", "", (6,)),
    }
    # A new route 7 after route 1: virtual:1 now holds routes 1 and 7, up to ab.
    grown = [Route(1, b"", b"a", 1), Route(7, b"a", b"ab", 1), *split[1:]]
    rows = step(4_000, grown, [1])
    assert rows["virtual:1"] == (b"", b"ab", "", (1, 7))


def test_the_matrix_is_only_materialised_when_asked_for_and_sized_to_use() -> None:
    sampler = KeyVizSampler(history_columns=1440)
    routes = _routes(range(1, 9))
    sampler.set_routes(routes)
    for step in range(3):
        sampler.observe(routes[step].route_id, 1, 1, 10)
        sampler.flush(1_000 * (step + 1), {1: 1})
    assert sampler._cache is None
    answer(sampler, (WRITES, 0, 0, 0))
    cache = sampler._cache
    assert cache is not None
    # Three buckets had traffic in three columns (of a 1440-column ring).
    assert cache.cells[("seen", 0)].shape == (3, 3)
    assert sum(c.nbytes for c in cache.cells.values()) <= 4 * 3 * 3
