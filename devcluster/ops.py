"""Client operations: the public `Op` for injected workloads and the columnar `OpBatch`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class Op:
    """One client request (or `count` identical ones) entering the cluster at `node`.

    Reads are served by the leader of the key's group, or by the entry node itself when
    `follower_local`. `size` is the value's byte size (read bytes or write bytes).
    """

    node: str
    kind: Literal["read", "write"]
    key: bytes
    size: int = 0
    adapter: str = "rawkv"
    follower_local: bool = False
    latency_ns: int = 1_000_000
    count: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("read", "write"):
            raise ValueError(f"op kind must be 'read' or 'write', not {self.kind!r}")
        if self.count < 1 or self.size < 0 or self.latency_ns < 0:
            raise ValueError("op count must be >= 1; size and latency_ns >= 0")


@dataclass(frozen=True, slots=True)
class OpBatch:
    """Operations as parallel arrays, so a tick of traffic is handled with numpy."""

    route_pos: NDArray[np.int64]  # position in the catalog's route tuple
    is_write: NDArray[np.bool_]
    nbytes: NDArray[np.int64]
    entry: NDArray[np.int64]  # index of the node the client hit
    follower_local: NDArray[np.bool_]
    adapter: NDArray[np.int64]  # index into adapters.ADAPTERS
    latency_ns: NDArray[np.int64]
    # The op's key as an index into the workload's key space (generated traffic), or its
    # sub-range of the route (injected traffic); both only matter with sub-range buckets.
    key_index: NDArray[np.int64] | None = None
    sub: NDArray[np.int64] | None = None

    @property
    def size(self) -> int:
        return int(self.route_pos.size)

    def take(self, mask: NDArray[np.bool_]) -> OpBatch:
        return OpBatch(
            route_pos=self.route_pos[mask],
            is_write=self.is_write[mask],
            nbytes=self.nbytes[mask],
            entry=self.entry[mask],
            follower_local=self.follower_local[mask],
            adapter=self.adapter[mask],
            latency_ns=self.latency_ns[mask],
            key_index=None if self.key_index is None else self.key_index[mask],
            sub=None if self.sub is None else self.sub[mask],
        )
