"""The portal's own knobs for talking to nodes, as one typed value.

settings.py builds it from the environment (via env.py); services read it with
``portal_config()`` so no service touches os.environ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_RPC_TIMEOUT_S = 5.0
DEFAULT_PAGE_BUDGET_S = 0.5
DEFAULT_SLOW_NODE_S = 1.0
DEFAULT_MAX_RECEIVE_BYTES = 64 * 1024 * 1024
# KeyViz history retention per tier (DESIGN.md "the portal is the cluster's memory").
DEFAULT_KEYVIZ_RETENTION_FINE_MS = 24 * 3_600_000
DEFAULT_KEYVIZ_RETENTION_15M_MS = 7 * 24 * 3_600_000
DEFAULT_KEYVIZ_RETENTION_1H_MS = 30 * 24 * 3_600_000
# How per-node write counts combine (DESIGN.md "Merge rules", rule 4): "sum" (the
# default: today's nodes count each logical write once) or "dedupe" (by Raft group
# and term, for nodes that report replicated counts); "design" is the old name of dedupe.
WRITES_MERGE_POLICIES = ("sum", "dedupe")
WRITES_MERGE_ALIASES = {"design": "dedupe"}
DEFAULT_KEYVIZ_STEP = "60s"  # the nodes' own --keyvizStep default


@dataclass(frozen=True)
class PortalConfig:
    seeds: tuple[str, ...] = ()
    node_token_file: str | None = None
    insecure_no_auth: bool = False
    refresh_interval_s: float = 15.0
    max_discovered_nodes: int = 512
    tls_ca_cert_file: str | None = None
    tls_server_name: str | None = None
    tls_insecure_skip_verify: bool = False
    rpc_timeout_s: float = DEFAULT_RPC_TIMEOUT_S
    # How long a page waits for the nodes before it renders what answered (the rest fill
    # in later), and the latency over which a node counts as slow.
    page_budget_s: float = DEFAULT_PAGE_BUDGET_S
    slow_node_s: float = DEFAULT_SLOW_NODE_S
    max_receive_bytes: int = DEFAULT_MAX_RECEIVE_BYTES
    writes_merge: str = "sum"  # one of WRITES_MERGE_POLICIES (aliases resolved)
    # The nodes' KeyViz step in ms (--keyvizStep); None: infer it from the columns.
    keyviz_step_ms: int | None = 60_000
    # KeyViz history kept per tier: the nodes' step, 15 min columns, 1 h columns.
    keyviz_retention_fine_ms: int = DEFAULT_KEYVIZ_RETENTION_FINE_MS
    keyviz_retention_15m_ms: int = DEFAULT_KEYVIZ_RETENTION_15M_MS
    keyviz_retention_1h_ms: int = DEFAULT_KEYVIZ_RETENTION_1H_MS
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca_cert_file or self.tls_server_name or self.tls_insecure_skip_verify)


def portal_config() -> PortalConfig:
    from django.conf import settings

    config: PortalConfig = settings.ELASTICKV_ADMIN
    return config
