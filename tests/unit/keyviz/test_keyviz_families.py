"""Key families: elastickv's internal keys read as operators name them (CONTRACT.md)."""

from __future__ import annotations

import pytest

from cluster.templatetags.cluster_format import key_html
from keyviz.families import FAMILIES, match_family
from keyviz.keys import key_preview
from keyviz.matrix import RowMeta
from keyviz.serialize import row_metadata


@pytest.mark.parametrize(
    ("key", "label", "family"),
    [
        # Route keys: DynamoDB tables and SQS queues route by these.
        (b"!ddb|route|table|orders", "DynamoDB table orders", "dynamodb"),
        (b"!sqs|route|jobs", "SQS queue jobs", "sqs"),
        # Redis data keys and collection internals.
        (b"!redis|str|k", "Redis string k", "redis"),
        (b"!redis|zset|board", "Redis sorted set board", "redis"),
        (b"!hs|meta|cart:9", "Redis hash metadata cart:9", "redis"),
        (b"!hs|fld|cart:9", "Redis hash field cart:9", "redis"),
        (b"!zs|scr|board", "Redis sorted set score board", "redis"),
        (b"!lst|itm|q", "Redis list item q", "redis"),
        (b"!stream|entry|ev", "Redis stream entry ev", "redis"),
        # DynamoDB internals.
        (b"!ddb|meta|table|orders", "DynamoDB table metadata orders", "dynamodb"),
        (b"!ddb|gsi|orders", "DynamoDB global secondary index orders", "dynamodb"),
        # S3: bucket and object read as a path.
        (b"!s3|obj|head|photos|2024/cat.jpg", "S3 object photos/2024/cat.jpg", "s3"),
        (b"!s3|bucket|meta|photos", "S3 bucket photos", "s3"),
        # SQS internals.
        (b"!sqs|msg|data|jobs", "SQS message jobs", "sqs"),
        (b"!sqs|queue|meta|jobs", "SQS queue metadata jobs", "sqs"),
        # Internal records whose rest means nothing to an operator: the family only.
        (b"!txn|lock|\x00\x01", "transaction records", "txn"),
        (b"!txn|", "transaction records", "txn"),
        (b"!dist|route|7", "distribution catalog", "dist"),
        (b"!admin|x", "admin metadata", "admin"),
        (b"!fs|inode|1", "file-system adapter internals", "fs"),
    ],
)
def test_family_key_reads_as_its_family(key: bytes, label: str, family: str) -> None:
    p = key_preview(key)
    assert (p.label, p.family) == (label, family)


def test_meta_delta_is_told_apart_from_metadata_by_the_longest_prefix() -> None:
    assert key_preview(b"!hs|meta|d|cart:9").label == "Redis hash metadata delta cart:9"
    assert key_preview(b"!zs|meta|board").label == "Redis sorted set metadata board"


@pytest.mark.parametrize("key", [b"user:1", b"!zz|a", b"!ddb|route|x", b"!redis|", b"\x80\x00"])
def test_unknown_prefix_keeps_the_plain_preview(key: bytes) -> None:
    p = key_preview(key)
    assert (p.label, p.family) == (None, None)


def test_family_label_shows_a_binary_rest_as_hex() -> None:
    assert key_preview(b"!redis|str|\x00\xff").label == "Redis string 0x00ff"


def test_family_label_of_a_long_key_is_cut_with_an_ellipsis() -> None:
    p = key_preview(b"!redis|str|" + b"a" * 100, max_bytes=10)
    assert p.label == "Redis string " + "a" * 10 + "…"


def test_s3_object_key_keeps_its_own_bars_after_the_bucket() -> None:
    assert key_preview(b"!s3|obj|head|b|x|y").label == "S3 object b/x|y"


def test_every_family_prefix_is_an_internal_key_and_unique() -> None:
    prefixes = [f.prefix for f in FAMILIES]
    assert len(prefixes) == len(set(prefixes))
    assert all(p.startswith(b"!") and p.endswith(b"|") for p in prefixes)
    assert all(match_family(p) == (f, b"") for p, f in zip(prefixes, FAMILIES, strict=True))


def test_matrix_rows_carry_the_labels_and_the_start_family() -> None:
    meta = row_metadata(
        RowMeta(bucket_id="route:1", start=b"!ddb|route|table|orders", end=b"!sqs|route|jobs")
    )
    assert (meta["start_label"], meta["end_label"], meta["family"]) == (
        "DynamoDB table orders",
        "SQS queue jobs",
        "dynamodb",
    )
    assert meta["start_text"] == "!ddb|route|table|orders"


def test_routes_page_shows_the_label_with_the_raw_key_in_the_title() -> None:
    html = key_html(key_preview(b"!sqs|route|<jobs>"))
    assert html == (
        '<span class="key label" title="!sqs|route|&lt;jobs&gt;" data-family="sqs">'
        "SQS queue &lt;jobs&gt;</span>"
    )
