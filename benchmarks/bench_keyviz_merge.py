"""KeyViz merge benchmark: printed figures, not a timed test.

    .venv/bin/python benchmarks/bench_keyviz_merge.py [--repeat N] [--seed S]

For 3 nodes x 1024 rows x 1440 columns and 5 nodes x 1024 x 4096 it builds
one serialized GetKeyVizMatrixResponse per node, shaped like real nodes send
them (flush timers offset by up to a step, a few ms of jitter, row sets that
differ per node, group ids and terms filled, a term change that some nodes see
one column late), and times each stage of the merge. Every figure is printed
next to the numpy baseline over the same data: one `np.add.reduce` over the
stacked per-node value arrays, i.e. the cost of merely adding the matrices.

Decoding is timed both ways: protobuf's parser then numpy (the path for
parsed messages), and proto/wire.py straight from the bytes (the API's path).

Figures are the best of --repeat runs (default 3) of each stage.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from keyviz.budgets import apply_column_budget, apply_row_budget, fit_to_display
from keyviz.matrix import node_matrix_from_bytes, node_matrix_from_response
from keyviz.merge import align_nodes, merge_aligned_values, merge_nodes
from keyviz.serialize import matrix_to_binary, matrix_to_json
from proto import admin_pb2

STEP_MS = 60_000
TARGET_RATIO = 5.0
T = TypeVar("T")


@dataclass(frozen=True)
class Scenario:
    nodes: int
    rows: int
    cols: int


SCENARIOS = (Scenario(3, 1024, 1440), Scenario(5, 1024, 4096))


def build_responses(sc: Scenario, rng: np.random.Generator) -> dict[str, bytes]:
    """Serialized responses, one per node, with realistic structure."""
    universe = sc.rows + sc.rows // 16  # each node lacks a few buckets
    rate = rng.lognormal(mean=1.0, sigma=1.5, size=universe)  # hot and cold rows
    group = (np.arange(universe) % 16 + 1).astype(np.uint64)
    change_col = sc.cols // 2  # groups 1-4 elect a new leader mid-window
    t0 = 1_700_000_000_000 - (1_700_000_000_000 % STEP_MS)
    out: dict[str, bytes] = {}
    for n in range(sc.nodes):
        offset = int(rng.integers(0, STEP_MS))
        jitter = rng.integers(-3, 4, size=sc.cols)
        cols = t0 + offset + STEP_MS * np.arange(1, sc.cols + 1) + jitter
        keep = np.sort(rng.choice(universe, size=sc.rows, replace=False))
        lam = rate[keep][:, None] * rng.random((sc.rows, sc.cols))
        values = rng.poisson(lam).astype(np.uint64)
        live = values > 0
        groups = np.where(live, group[keep][:, None], np.uint64(0))
        late = 1 if n % 2 else 0  # odd nodes see the new term one column late
        term = np.where(np.arange(sc.cols) >= change_col + late, 8, 7).astype(np.uint64)
        terms = np.where(live & (group[keep][:, None] <= 4), term[None, :], np.uint64(7))
        terms = np.where(live, terms, np.uint64(0))
        resp = admin_pb2.GetKeyVizMatrixResponse(column_unix_ms=cols.tolist())
        for i, b in enumerate(keep.tolist()):
            resp.rows.add(
                bucket_id=f"route:{b}",
                start=b.to_bytes(4, "big"),
                end=(b + 1).to_bytes(4, "big"),
                label="redis",
                route_ids=[b],
                route_count=1,
                values=values[i].tolist(),
                raft_group_ids=groups[i].tolist(),
                leader_terms=terms[i].tolist(),
            )
        out[f"n{n + 1}"] = resp.SerializeToString()
    return out


def best(fn: Callable[[], T], repeat: int) -> tuple[float, T]:
    times = []
    result: T | None = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    assert result is not None
    return min(times) * 1000.0, result


def run(sc: Scenario, repeat: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    wire = build_responses(sc, rng)
    built = time.perf_counter() - t
    print(
        f"\n== {sc.nodes} nodes x {sc.rows} rows x {sc.cols} columns "
        f"({sum(len(b) for b in wire.values()) / 1e6:.1f} MB of protobuf, "
        f"built in {built:.1f} s)"
    )

    def parse() -> dict[str, admin_pb2.GetKeyVizMatrixResponse]:
        out = {}
        for node, data in wire.items():
            msg = admin_pb2.GetKeyVizMatrixResponse()
            msg.ParseFromString(data)
            out[node] = msg
        return out

    ms_parse, parsed = best(parse, repeat)
    ms_arrays, _ = best(
        lambda: [node_matrix_from_response(n, r) for n, r in parsed.items()], repeat
    )
    ms_wire, nodes = best(
        lambda: [node_matrix_from_bytes(n, data) for n, data in wire.items()], repeat
    )
    stacked = np.stack([n.values for n in nodes])
    ms_base, _ = best(lambda: np.add.reduce(stacked, axis=0), max(repeat, 5))

    series_w = admin_pb2.KEYVIZ_SERIES_WRITES
    series_r = admin_pb2.KEYVIZ_SERIES_READS
    ms_align, alignment = best(lambda: align_nodes(nodes), repeat)
    ms_sum, _ = best(lambda: merge_aligned_values(alignment, series=series_r), repeat)
    ms_writes, _ = best(lambda: merge_aligned_values(alignment, series=series_w), repeat)
    ms_merge_w, merged_w = best(lambda: merge_nodes(nodes, series=series_w), repeat)
    ms_merge_r, _ = best(lambda: merge_nodes(nodes, series=series_r), repeat)
    ms_rows, by_rows = best(lambda: apply_row_budget(merged_w, 256), repeat)
    ms_cols, _ = best(lambda: apply_column_budget(by_rows, 1000), repeat)
    ms_full_w, shown = best(lambda: fit_to_display(merge_nodes(nodes, series=series_w)), repeat)
    ms_full_r, _ = best(lambda: fit_to_display(merge_nodes(nodes, series=series_r)), repeat)
    ms_json, _ = best(lambda: matrix_to_json(shown), repeat)
    ms_bin, _ = best(lambda: matrix_to_binary(shown), repeat)

    conflicts = int(merged_w.conflict.sum())
    print(
        f"merged grid {merged_w.shape[0]} rows x {merged_w.shape[1]} columns; "
        f"write conflicts in {conflicts} cells; shown {shown.shape[0]} x {shown.shape[1]}"
    )
    print(f"{'stage':48s} {'ms':>9s} {'x baseline':>11s}")
    rows = [
        ("baseline: np.add.reduce over stacked values", ms_base),
        ("protobuf decode: ParseFromString", ms_parse),
        ("protobuf decode: to numpy + validation", ms_arrays),
        ("protobuf decode: both of the above", ms_parse + ms_arrays),
        ("wire decode: bytes to numpy + validation", ms_wire),
        ("alignment (steps 1-2)", ms_align),
        ("read merge: sum (step 3)", ms_sum),
        ("write merge: design rule (step 4)", ms_writes),
        ("row budget 256 (step 7)", ms_rows),
        ("column budget 1000 (step 8)", ms_cols),
        ("merge_nodes, reads (steps 1-6)", ms_merge_r),
        ("merge_nodes, writes (steps 1-6)", ms_merge_w),
        ("FULL MERGE reads: steps 1-8", ms_full_r),
        ("FULL MERGE writes: steps 1-8", ms_full_w),
        ("serialize shown matrix: json dict", ms_json),
        ("serialize shown matrix: binary", ms_bin),
    ]
    for name, ms in rows:
        print(f"{name:48s} {ms:9.1f} {ms / ms_base:10.1f}x")
    for label, ms in (("reads", ms_full_r), ("writes", ms_full_w)):
        ratio = ms / ms_base
        verdict = "within" if ratio <= TARGET_RATIO else "OVER"
        print(f"target: full merge ({label}) {ratio:.1f}x baseline, {verdict} {TARGET_RATIO:g}x")
    print(f"wire decode is {(ms_parse + ms_arrays) / ms_wire:.1f}x faster than protobuf + numpy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(
        f"KeyViz merge benchmark: python {platform.python_version()}, numpy {np.__version__}, "
        f"{platform.machine()}; best of {args.repeat}"
    )
    for sc in SCENARIOS:
        run(sc, args.repeat, args.seed)


if __name__ == "__main__":
    main()
