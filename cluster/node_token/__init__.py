"""The node bearer token: stored encrypted, rotated without losing sight of the cluster.

Real nodes hold exactly one token and need a restart to change it (CONTRACT.md
"Authentication"), so a rotation is rolling: the portal holds the current and the next
token while operators move the nodes one by one, probes each node with both to show which
one it accepts, and finishes (next becomes current, the old one is deleted) once every node
accepts next. DESIGN.md "Access, tokens, audit"; README "Node token rotation".

- Storage: NodeTokenRecord rows hold only Fernet ciphertext (elastickv_admin.lib.crypto); people see
  fingerprints. On first start, --nodeTokenFile seeds the table (``ensure_node_token``, run
  once at startup by `serve` and by a process's token store on its first read, never by a
  view); afterwards the database is the source of truth.
- Changes: ``do_start_rotation``, ``do_finish_rotation``, ``do_cancel_rotation`` and
  ``do_bootstrap_node_token``, each under the lock of the NodeTokenHead row and audited in
  the same transaction. A refused step is audited too (outcome ``failure``).
- Who gets the next token: membership comes from the nodes (untrusted), so a node address
  that appears during a rotation could be anyone's, and a node that answers UNAUTHENTICATED
  would otherwise be handed the next token by the fallback. The rotation row records the
  addresses known when it started (seeds + membership then); only those and the seeds are
  ever sent next, by node calls and by probes (``next_token_recipients``).
- Every portal process follows the database: ``DatabaseTokenStore.sync()`` runs before each
  node call and, at most once per SYNC_INTERVAL_S, reads the token rows' ciphertexts (one
  small query); when they changed it decrypts them. So a change committed by any process is
  used by every other process from its first node call after at most SYNC_INTERVAL_S (plus
  that query), and by the process that made it at once.

The package, by concern: ``records`` (the stored rows: read, lock, bump), ``bootstrap``
(seeding from --nodeTokenFile), ``store`` (the node client's token store), ``views_model``
(what admins see), ``probe`` (which token each node accepts) and ``actions`` (the audited
rotation steps). This module re-exports their public names.
"""

from __future__ import annotations

from cluster.node_token.actions import (
    FinishedRotation,
    NodeTokenRefused,
    StartedRotation,
    do_cancel_rotation,
    do_finish_rotation,
    do_start_rotation,
)
from cluster.node_token.bootstrap import do_bootstrap_node_token, ensure_node_token
from cluster.node_token.probe import (
    INSECURE_DETAIL,
    NOT_SENT_NEXT,
    PROBE_DEADLINE_S,
    PROBE_METHOD,
    Answer,
    known_node_addresses,
    node_state,
    probe_nodes,
    record_probe,
)
from cluster.node_token.records import (
    ACCEPTS_NEXT,
    SYNC_INTERVAL_S,
    TARGET,
    VERIFIED_WRITE_S,
    State,
    StoredTokens,
    load_tokens,
    next_token_recipients,
)
from cluster.node_token.store import DatabaseTokenStore
from cluster.node_token.views_model import (
    NodeCheckRow,
    ProbeReport,
    TokenInfo,
    TokenStatus,
    token_status,
)

__all__ = [
    "ACCEPTS_NEXT",
    "INSECURE_DETAIL",
    "NOT_SENT_NEXT",
    "PROBE_DEADLINE_S",
    "PROBE_METHOD",
    "SYNC_INTERVAL_S",
    "TARGET",
    "VERIFIED_WRITE_S",
    "Answer",
    "DatabaseTokenStore",
    "FinishedRotation",
    "NodeCheckRow",
    "NodeTokenRefused",
    "ProbeReport",
    "StartedRotation",
    "State",
    "StoredTokens",
    "TokenInfo",
    "TokenStatus",
    "do_bootstrap_node_token",
    "do_cancel_rotation",
    "do_finish_rotation",
    "do_start_rotation",
    "ensure_node_token",
    "known_node_addresses",
    "load_tokens",
    "next_token_recipients",
    "node_state",
    "probe_nodes",
    "record_probe",
    "token_status",
]
