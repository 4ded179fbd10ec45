"""elastickv's key families (CONTRACT.md "Key families"), as readable names.

One table, used by keys.key_preview for the heatmap rows and the Routes page,
so a key reads the same everywhere: `!ddb|route|table|orders` is
"DynamoDB table orders". Keys outside these families (Redis keys route by
the user's key itself) have no family and keep their plain preview.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# How the part after the prefix is shown: as a key, as a path ("|" -> "/",
# e.g. S3 bucket|object), or not at all (binary or meaningless to operators).
RestMode = Literal["key", "path", "none"]


@dataclass(frozen=True, slots=True)
class Family:
    prefix: bytes
    family: str  # the adapter or subsystem: "redis", "dynamodb", "s3", "sqs", ...
    name: str  # readable name, the start of the label
    rest: RestMode = "key"


def _redis_collections() -> list[Family]:
    out: list[Family] = []
    for tag, kind, parts in (
        ("hs", "hash", (("fld", "field"),)),
        ("st", "set", (("mem", "member"),)),
        ("zs", "sorted set", (("mem", "member"), ("scr", "score"))),
        ("lst", "list", (("itm", "item"), ("claim", "claim"))),
        ("stream", "stream", (("entry", "entry"),)),
    ):
        # "|d|" after meta: the metadata deltas.
        out.append(Family(f"!{tag}|meta|d|".encode(), "redis", f"Redis {kind} metadata delta"))
        out.append(Family(f"!{tag}|meta|".encode(), "redis", f"Redis {kind} metadata"))
        out += [Family(f"!{tag}|{p}|".encode(), "redis", f"Redis {kind} {n}") for p, n in parts]
    return out


FAMILIES: tuple[Family, ...] = (
    Family(b"!redis|str|", "redis", "Redis string"),
    Family(b"!redis|hash|", "redis", "Redis hash"),
    Family(b"!redis|set|", "redis", "Redis set"),
    Family(b"!redis|zset|", "redis", "Redis sorted set"),
    Family(b"!redis|hll|", "redis", "Redis HyperLogLog"),
    Family(b"!redis|stream|", "redis", "Redis stream"),
    Family(b"!redis|ttl|", "redis", "Redis TTL"),
    Family(b"!redis|route|", "redis", "Redis route"),
    *_redis_collections(),
    Family(b"!ddb|route|table|", "dynamodb", "DynamoDB table"),
    Family(b"!ddb|meta|table|", "dynamodb", "DynamoDB table metadata"),
    Family(b"!ddb|meta|gen|", "dynamodb", "DynamoDB table generation"),
    Family(b"!ddb|item|", "dynamodb", "DynamoDB item"),
    Family(b"!ddb|gsi|", "dynamodb", "DynamoDB global secondary index"),
    Family(b"!s3|bucket|meta|", "s3", "S3 bucket"),
    Family(b"!s3|bucket|gen|", "s3", "S3 bucket generation"),
    Family(b"!s3|obj|head|", "s3", "S3 object", "path"),
    Family(b"!s3|upload|meta|", "s3", "S3 multipart upload", "path"),
    Family(b"!s3|upload|part|", "s3", "S3 multipart upload part", "path"),
    Family(b"!s3|blob|", "s3", "S3 blob", "path"),
    Family(b"!s3|chunkref|", "s3", "S3 chunk reference", "path"),
    Family(b"!sqs|route|", "sqs", "SQS queue"),
    Family(b"!sqs|queue|meta|", "sqs", "SQS queue metadata"),
    Family(b"!sqs|queue|gen|", "sqs", "SQS queue generation"),
    Family(b"!sqs|queue|seq|", "sqs", "SQS queue sequence"),
    Family(b"!sqs|queue|tombstone|", "sqs", "SQS queue tombstone"),
    Family(b"!sqs|msg|data|", "sqs", "SQS message"),
    Family(b"!sqs|msg|vis|", "sqs", "SQS message visibility index"),
    Family(b"!sqs|msg|dedup|", "sqs", "SQS message deduplication index"),
    Family(b"!sqs|msg|group|", "sqs", "SQS message group index"),
    Family(b"!sqs|msg|byage|", "sqs", "SQS message age index"),
    Family(b"!txn|", "txn", "transaction records", "none"),
    Family(b"!dist|", "dist", "distribution catalog", "none"),
    Family(b"!admin|", "admin", "admin metadata", "none"),
    Family(b"!fs|", "fs", "file-system adapter internals", "none"),
)

# Longest prefix first, so "!hs|meta|d|" wins over "!hs|meta|".
_BY_LENGTH = sorted(FAMILIES, key=lambda f: len(f.prefix), reverse=True)


def match_family(key: bytes) -> tuple[Family, bytes] | None:
    """The family of `key` and the bytes after its prefix, or None."""
    if not key.startswith(b"!"):
        return None
    for fam in _BY_LENGTH:
        if key.startswith(fam.prefix):
            return fam, key[len(fam.prefix) :]
    return None
