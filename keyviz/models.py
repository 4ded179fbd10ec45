"""The KeyViz history: buckets, merged columns per tier, raw node columns, collector state.

Cells are stored as one compact binary blob per column (keyviz/cellblob.py):
only the rows with a value or a flag, referring to Bucket rows by primary key.
Times are Unix milliseconds; a column's time is the END of its window.
"""

from __future__ import annotations

from django.db import models

TIER_FINE = 0  # the nodes' step
TIER_15M = 1
TIER_1H = 2
TIERS = (TIER_FINE, TIER_15M, TIER_1H)


class Bucket(models.Model):
    """A KeyViz row, by bucket_id, kept while any retained column refers to it.

    A bucket retired by a split keeps its row (and so its history) until its
    last column leaves the retention. `meta_node` is the node whose metadata is
    shown (the first in node id order that reported the row; "" = taken from a
    merged column). `divergence` is set once when two nodes disagree on start/end.
    """

    bucket_id = models.CharField(max_length=255, unique=True)
    start = models.BinaryField(default=b"")
    end = models.BinaryField(default=b"")
    label = models.TextField(default="", blank=True)
    aggregate = models.BooleanField(default=False)
    route_ids = models.JSONField(default=list, blank=True)
    route_ids_truncated = models.BooleanField(default=False)
    route_count = models.BigIntegerField(default=0)
    lineage_id = models.CharField(max_length=255, default="", blank=True)
    # uint64 on the wire; a decimal holds all of it on SQLite and PostgreSQL. 0 = unknown.
    raft_group_id = models.DecimalField(max_digits=20, decimal_places=0, default=0)
    meta_node = models.CharField(max_length=255, default="", blank=True)
    divergence = models.TextField(default="", blank=True)
    first_seen_ms = models.BigIntegerField()
    last_seen_ms = models.BigIntegerField(db_index=True)

    def __str__(self) -> str:
        return self.bucket_id


class StoredColumn(models.Model):
    """One merged column of one series on one tier.

    `dirty`: a finer column in this window changed after it was compacted, so
    the next compaction rebuilds it.
    """

    tier = models.SmallIntegerField()
    series = models.SmallIntegerField()
    column_ms = models.BigIntegerField()
    step_ms = models.BigIntegerField()
    # Small fields first, the node -> time map last: SQLite reads a row's columns in
    # order, so a read that skips the map (the matrix API) never walks through it.
    missing = models.JSONField(default=list, blank=True)
    unknown_all = models.BooleanField(default=False)
    dirty = models.BooleanField(default=False)
    updated_ms = models.BigIntegerField()
    cells = models.BinaryField()
    contributors = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = (
            models.UniqueConstraint(
                fields=("tier", "series", "column_ms"), name="keyviz_column_unique"
            ),
        )

    def __str__(self) -> str:
        return f"tier {self.tier} series {self.series} @ {self.column_ms}"


class StoredNodeColumn(models.Model):
    """One node's raw column at its own flush time, assigned to the merged column `slot_ms`."""

    series = models.SmallIntegerField()
    node = models.CharField(max_length=255)
    slot_ms = models.BigIntegerField()
    node_column_ms = models.BigIntegerField()
    cells = models.BinaryField()
    updated_ms = models.BigIntegerField()

    class Meta:
        constraints = (
            models.UniqueConstraint(
                fields=("series", "node", "node_column_ms"), name="keyviz_node_column_unique"
            ),
        )
        indexes = (models.Index(fields=("series", "slot_ms"), name="keyviz_node_column_slot"),)

    def __str__(self) -> str:
        return f"{self.node} series {self.series} @ {self.node_column_ms}"


class CollectorState(models.Model):
    """The collector's persisted state, one JSON document per key (e.g. "collector")."""

    key = models.CharField(max_length=64, primary_key=True)
    doc = models.JSONField(default=dict)
    updated_ms = models.BigIntegerField()

    def __str__(self) -> str:
        return self.key


class Event(models.Model):
    """A cluster timeline entry the collector observed (keyviz/events.py): a leader change,
    a node joining, leaving, going down or coming back. `unix_ms` is when it was seen."""

    type = models.CharField(max_length=32, db_index=True)
    unix_ms = models.BigIntegerField(db_index=True)
    node_id = models.CharField(max_length=255, default="", blank=True)
    raft_group_id = models.DecimalField(max_digits=20, decimal_places=0, default=0)
    details = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"{self.type} @ {self.unix_ms}"
