"""A local elastickv-compatible cluster: the demo's embedded cluster and the tests' fixture.

Each simulated node is a real gRPC server on loopback serving `Admin` (all six methods)
and `Distribution.ListRoutes` as shared/CONTRACT.md says real nodes do, backed by one
simulated cluster: Raft groups with leaders and terms, a route catalog, a workload, and a
KeyViz sampler per node. No single node sees all traffic, so a cluster-wide view needs
fan-out, exactly as with real nodes.

In-process use (sync; safe beside asyncio tests, the servers run on their own threads)::

    from devcluster import DevCluster, Op

    with DevCluster(nodes=3, token="t0ken", timers=False) as cluster:
        cluster.nodes  # [NodeInfo(node_id="n1", address="127.0.0.1:PORT", up=True), ...]
        cluster.inject([Op("n2", "write", b"user:1", size=100, count=5)])
        cluster.flush(at_ms=1_000)  # close a KeyViz column on every node
        cluster.auth_metadata("n1")  # (("authorization", "Bearer t0ken"),)

`DevCluster(nodes=3, *, groups=3, routes=8, profile="upstream", step_ms=60_000,
history_columns=1440, token=None, token_files=None, insecure_no_auth=False,
max_tracked_routes=10_000, workload_rate=None, seed=0, host="127.0.0.1", base_port=0,
timers=True, events_interval_s=0.0, sample_rate=1.0, adapter_rows=False, flush_jitter=None,
flush_phases=None, keyspace=None, key_buckets_per_route=1)`

- Auth: `token` (each node gets its own token file in a temporary directory), or
  `token_files` (one path for every node, or {node_id: path}), or `insecure_no_auth`.
  With none of them a node does not register Admin (every Admin call UNIMPLEMENTED), as
  a real node started with neither flag. Distribution is never token-gated.
- `base_port=0` picks free ports; otherwise n1 listens on base_port, n2 on base_port + 1, ...
- `timers=True`: every node flushes a column every `step_ms` on its own phase (wall
  clock: its columns are stamped phase + k * step_ms, plus that flush's lateness), the
  workload (ops/s, `workload_rate`) ticks every 100 ms, and with `events_interval_s > 0`
  a random leadership transfer, split or merge happens that often. `timers=False`: nothing
  moves unless asked (`inject`, `generate`, `flush`), for deterministic tests.
- `max_tracked_routes`: past this many routes a node coarsens adjacent routes into
  `virtual:<first route id>` rows listing their members.
- `sample_rate` < 1 (design profile): the sampler keeps each op with that probability and
  scales counts up; cells with too few kept hits for a 10% error bound (95%) are soft.
- `adapter_rows`: rows per route and adapter, `route:<id>:<label>`.
- `key_buckets_per_route` > 1 (the nodes' --keyvizKeyBucketsPerRoute): each route's
  traffic is counted per sub-range of its workload keys (equal shares), as
  `route:<id>[:<label>]#<n>` rows with the sub-range's start/end.
- `keyspace`: the key space and traffic (default: workload.Keyspace). The demo preset,
  `devcluster.demo.demo_cluster_options()`, brings 300 routes in 6 groups over every
  adapter's key family and wall-clock traffic (devcluster/demo.py).

Lifecycle: `start() -> self` (well under a second; raises ClusterError if a port is taken),
`stop()`, context manager. Inspection: `nodes -> list[NodeInfo]`, `node(id)`, `addresses`,
`routes() -> tuple[Route, ...]`, `route_for_key(key) -> Route`, `groups() ->
list[GroupInfo]`, `group(id)`, `auth_metadata(node_id)`, `subscriber_count(node_id)`.

Control:
- `stop_node(id)`, `start_node(id, *, phase_ms=None)`, `restart_node(id,
  new_phase_ms=None)`: a stopped node's server goes away (open streams end) and answers
  nothing; groups it led elect the next live node (term + 1) while a majority is up, else
  have no leader. A restarted node keeps its port and, like a real reboot, starts with
  empty KeyViz history and a new flush phase (its boot time mod the step, or the phase
  given). Members lists still name stopped nodes.
- Flush timing (with timers): `set_flush_phase(id, offset_ms)` (0 <= offset < step; a
  phase near half a step is allowed), `flush_phase(id)`, `set_flush_jitter(id, max_ms=0,
  late_prob=0.0, late_ms=0)`: each flush is late (never early) by 0..max_ms, or with
  probability late_prob by max_ms..late_ms. `flush_phases={id: offset_ms}` sets phases
  from the start, `flush_jitter=FlushJitter(...)` every node's jitter; by default
  `upstream` nodes jitter like real ones (0-280 ms, one flush in 50 up to 2 s late, both
  capped within the step) and `design` nodes flush exactly on phase.
- `set_fault(id, *, delay_s=0.0, error: grpc.StatusCode | None = None, malformed: bool |
  Malformation = False, oversized: int | None = None, methods: Iterable[str] | None =
  None)`, `clear_fault(id)`. Malformed breaks KeyViz shapes (matrix, route detail,
  streamed columns): `VALUES_LENGTH` (True) or `PARTIAL_GROUP_IDS`. Oversized pads every
  response past that many bytes with an unknown field.
- `set_admin_registered(id, registered)`, `set_keyviz_enabled(id, enabled)` (without a
  sampler GetKeyVizMatrix answers UNAVAILABLE), `set_node_token(id, token)` (rewrites the
  node's token file; unlike a real node, a devcluster node re-reads it when it changes).
- `transfer_leadership(group, to_node) -> term`, `split_route(route_id, at_key) ->
  (left_id, right_id)`, `merge_routes(left_id, right_id) -> merged_id`: new route ids,
  a new catalog_version, and (design) a RouteTransition on every open stream.
- `inject(ops: Iterable[Op]) -> int` serves `Op(node, kind, key, size=0, adapter="rawkv",
  follower_local=False, latency_ns=1_000_000, count=1)` now, all or nothing.
  `generate(seconds) -> int` runs the seeded workload generator over simulated time.
- `flush(node_id=None, at_ms=None) -> {node_id: column_ms}` closes the current window.

Who records what: reads on the node that served them (the group leader, or the entry
node for follower-local reads); writes once, on the entry node (`upstream`) or on the
group leader (`design`). Cells carry the group and the node's term at flush time (0 for
empty cells and virtual rows). A bucket keeps all four counters, so a row that saw any
traffic in the window appears in every series' matrix, with 0 where that series had none.
Byte series count the ops' value sizes. Adapter statistics live on the entry node.

Profiles: `upstream` is today's real node (GetAdapterSummary, GetRouteDetail and
StreamEvents are UNIMPLEMENTED; sample_roles, lineage_id, soft_columns empty).
`design` fills everything: sample roles (the roles that fed the series in the window),
lineage ids (children inherit the parent's, a merge the left parent's), soft columns
(only on rows with a soft cell), GetAdapterSummary (per adapter and operation since
boot; quantiles over the last 512 requests), GetRouteDetail (the bucket's writes row over
the window, plus per-adapter figures of what this node recorded for its routes;
NOT_FOUND for a bucket the node never tracked), and StreamEvents (headers once
subscribed, then one KeyVizColumn per series at every flush and one RouteTransition per
split/merge parent; UNAVAILABLE when the node stops).

CLI: `python -m devcluster --help`. Pytest fixtures: `devcluster.pytest_plugin`.
"""

from devcluster.catalog import Route
from devcluster.cluster import DevCluster, FlushJitter, GroupInfo, NodeInfo
from devcluster.ops import Op
from devcluster.server import Malformation
from devcluster.simulation import ClusterError, Profile

__all__ = [
    "ClusterError",
    "DevCluster",
    "FlushJitter",
    "GroupInfo",
    "Malformation",
    "NodeInfo",
    "Op",
    "Profile",
    "Route",
]
