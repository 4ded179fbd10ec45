"""GetKeyVizMatrixResponse straight between wire bytes and numpy arrays.

A KeyViz matrix is megabytes of packed varints (values, raft group ids, leader
terms: one per cell) wrapped in a few small fields per row. protobuf's parser
builds a container per row and numpy then copies every cell out of it again;
here the message structure is walked in Python (a dozen fields per row) and
the cell varints of all rows are decoded together with numpy. The encoder is
the inverse, for the devcluster's simulated nodes.

Decoding accepts exactly what protobuf's upb parser accepts for this message
(proto3): packed and unpacked repeated scalars, fields in any order or
repeated (scalars: the last one wins; lists: concatenated), unknown fields of
every wire type (groups nested up to upb's depth limit), and 10-byte varints
whose bits past 64 are dropped. Whatever upb rejects raises `WireDecodeError`
naming the byte offset and the reason; every loop advances at least one byte,
and every length is checked against its enclosing message before use.

Encoding writes what upb's serializer writes for the same message, byte for
byte: fields in number order, repeated scalars packed, proto3 defaults left
out.

Nothing here knows what the fields mean; keyviz/matrix.py checks the shapes.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from numpy.typing import NDArray

U8 = NDArray[np.uint8]
U64 = NDArray[np.uint64]
I64 = NDArray[np.int64]
# Decoded lists: uint8 when every varint was one byte (values below 128, the
# usual case for group ids and terms), which saves a pass; else uint64.
Cells = NDArray[np.unsignedinteger[Any]]

# Field numbers (CONTRACT.md). Response: 1 column_unix_ms, 2 rows.
_COLUMNS, _ROWS = 1, 2
# KeyVizRow.
_BUCKET_ID, _START, _END, _LABEL, _AGGREGATE = 1, 2, 3, 4, 5
_ROUTE_IDS, _ROUTE_IDS_TRUNCATED, _ROUTE_COUNT, _SAMPLE_ROLES, _LINEAGE_ID = 6, 7, 8, 9, 10
_VALUES, _SOFT_COLUMNS, _RAFT_GROUP_IDS, _LEADER_TERMS = 11, 12, 13, 14
# Repeated varint fields of a row, decoded with numpy.
_ROW_LISTS = (_ROUTE_IDS, _SAMPLE_ROLES, _VALUES, _SOFT_COLUMNS, _RAFT_GROUP_IDS, _LEADER_TERMS)
_FIELD_NAMES = {
    _ROUTE_IDS: "route_ids",
    _SAMPLE_ROLES: "sample_roles",
    _VALUES: "values",
    _SOFT_COLUMNS: "soft_columns",
    _RAFT_GROUP_IDS: "raft_group_ids",
    _LEADER_TERMS: "leader_terms",
}

_VARINT, _FIXED64, _DELIMITED, _START_GROUP, _END_GROUP, _FIXED32 = 0, 1, 2, 3, 4, 5
_MASK64 = (1 << 64) - 1
# upb's default nesting budget: the top message may hold 100 nested groups, a row 99.
_DEPTH_LIMIT = 100
# upb refuses lengths at or above INT32_MAX.
_MAX_LENGTH = 2**31 - 1


class WireDecodeError(DecodeError):
    """The bytes are not a GetKeyVizMatrixResponse protobuf would accept; `reason` says why.

    A DecodeError, so code written for protobuf's parser catches it unchanged.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RowHeader:
    """A KeyVizRow's fields other than the per-cell lists."""

    bucket_id: str = ""
    start: bytes = b""
    end: bytes = b""
    label: str = ""
    aggregate: bool = False
    route_ids: tuple[int, ...] = ()
    route_ids_truncated: bool = False
    route_count: int = 0
    sample_roles: tuple[int, ...] = ()  # int32 enum values, unknown ones kept (proto3)
    lineage_id: str = ""


@dataclass(frozen=True, eq=False)
class Ragged:
    """One repeated uint64 field of every row: row i holds flat[offsets[i]:offsets[i + 1]].

    `flat` is uint64, or uint8 when every entry is below 128 (see Cells).
    """

    flat: Cells
    counts: I64
    offsets: I64 = field(init=False)

    def __post_init__(self) -> None:
        offsets = np.zeros(self.counts.shape[0] + 1, dtype=np.int64)
        np.cumsum(self.counts, out=offsets[1:])
        if int(offsets[-1]) != self.flat.shape[0]:
            raise ValueError(f"counts add up to {int(offsets[-1])}, flat has {self.flat.shape[0]}")
        object.__setattr__(self, "offsets", offsets)

    @classmethod
    def dense(cls, cells: NDArray[np.generic]) -> Ragged:
        """Every row of a 2-D array, all the same length."""
        rows, cols = cells.shape
        flat = np.ascontiguousarray(cells, dtype=np.uint64).reshape(-1)
        return cls(flat, np.full(rows, cols, dtype=np.int64))

    @classmethod
    def empty(cls, rows: int) -> Ragged:
        return cls(np.zeros(0, dtype=np.uint64), np.zeros(rows, dtype=np.int64))

    def row(self, i: int) -> Cells:
        return self.flat[int(self.offsets[i]) : int(self.offsets[i + 1])]


@dataclass(frozen=True, eq=False)
class KeyVizMatrixWire:
    """A GetKeyVizMatrixResponse as arrays: per-cell lists are Ragged over the rows."""

    column_unix_ms: I64
    rows: tuple[RowHeader, ...]
    values: Ragged
    soft_columns: Ragged
    raft_group_ids: Ragged
    leader_terms: Ragged


# ---------------------------------------------------------------- decoding


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value mod 2^64, next offset) of the varint at pos, which must end before `end`."""
    result = 0
    shift = 0
    at = pos
    while at < end:
        b = buf[at]
        at += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & _MASK64, at
        shift += 7
        if shift == 70:
            raise WireDecodeError(f"varint at byte {pos} is longer than 10 bytes")
    raise WireDecodeError(f"varint at byte {pos} runs past the end of its message")


def _tag(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """A field tag: a varint of at most 5 bytes that fits in 32 bits (as upb requires)."""
    tag, at = _varint(buf, pos, end)
    if at - pos > 5 or tag > 0xFFFFFFFF:
        raise WireDecodeError(f"malformed field tag at byte {pos}")
    return tag, at


def _length(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """A length prefix: (first byte of the payload, end of the payload), checked to fit."""
    b = buf[pos] if pos < end else 0x80
    if b < 0x80:
        n, at = b, pos + 1
    else:
        n, at = _varint(buf, pos, end)
        if n >= _MAX_LENGTH:
            raise WireDecodeError(f"length {n} at byte {pos} is too large")
    if at + n > end:
        raise WireDecodeError(
            f"length {n} at byte {pos} runs past the end of its message ({end - at} bytes left)"
        )
    return at, at + n


def _skip(buf: bytes, pos: int, end: int, tag: int, depth: int) -> int:
    """Skip an unknown field's value (tag already read); returns the offset after it."""
    wire_type = tag & 7
    if wire_type == _VARINT:
        return _varint(buf, pos, end)[1]
    if wire_type == _DELIMITED:
        return _length(buf, pos, end)[1]
    if wire_type in (_FIXED64, _FIXED32):
        stop = pos + (8 if wire_type == _FIXED64 else 4)
        if stop > end:
            raise WireDecodeError(f"fixed-width field at byte {pos} runs past the end")
        return stop
    if wire_type == _START_GROUP:
        return _skip_group(buf, pos, end, tag, depth)
    if wire_type == _END_GROUP:
        raise WireDecodeError(f"end-group tag without a matching start at byte {pos}")
    raise WireDecodeError(f"invalid wire type {wire_type} before byte {pos}")


def _skip_group(buf: bytes, pos: int, end: int, tag: int, depth: int) -> int:
    """Skip an unknown group up to its end tag; like upb, field numbers are not checked."""
    depth -= 1
    if depth < 0:
        raise WireDecodeError(f"groups nested more than {_DEPTH_LIMIT} deep at byte {pos}")
    end_tag = (tag & ~7) | _END_GROUP
    while pos < end:
        inner, pos = _tag(buf, pos, end)
        if inner == end_tag:
            return pos
        pos = _skip(buf, pos, end, inner, depth)
    raise WireDecodeError(f"group (field {tag >> 3}) is not closed before byte {end}")


def _utf8(buf: bytes, start: int, stop: int, name: str) -> str:
    try:
        return buf[start:stop].decode("utf-8")
    except UnicodeDecodeError:
        raise WireDecodeError(f"{name} at byte {start} is not valid UTF-8") from None


# Byte ranges holding whole varints of one repeated field, in wire order: (start, stop, row).
_Chunks = list[tuple[int, int, int]]
# One row's scalar fields while its lists are still undecoded.
_Head = tuple[str, bytes, bytes, str, bool, bool, int, str]


def _parse_row(buf: bytes, pos: int, end: int, row: int, lists: dict[int, _Chunks]) -> _Head:
    bucket_id = label = lineage_id = ""
    start = stop_key = b""
    aggregate = truncated = False
    route_count = 0
    while pos < end:
        b = buf[pos]
        if b < 0x80:
            tag, pos = b, pos + 1
        else:
            tag, pos = _tag(buf, pos, end)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise WireDecodeError(f"field number 0 before byte {pos}")
        if wire_type == _DELIMITED and number <= _LEADER_TERMS:
            # Lengths of one or two bytes inline (a row's lists are up to 16 KiB);
            # _length takes the rest and raises the errors.
            b = buf[pos] if pos < end else 0x80
            if b < 0x80:
                at = pos + 1
                stop = at + b
            elif pos + 1 < end and buf[pos + 1] < 0x80:
                at = pos + 2
                stop = at + ((b & 0x7F) | buf[pos + 1] << 7)
            else:
                at = stop = end + 1
            if stop > end:
                at, stop = _length(buf, pos, end)
            pos = stop
            if number >= _VALUES or number in (_ROUTE_IDS, _SAMPLE_ROLES):
                if at < stop:
                    lists[number].append((at, stop, row))
            elif number == _BUCKET_ID:
                bucket_id = _utf8(buf, at, stop, "bucket_id")
            elif number == _START:
                start = buf[at:stop]
            elif number == _END:
                stop_key = buf[at:stop]
            elif number == _LABEL:
                label = _utf8(buf, at, stop, "label")
            elif number == _LINEAGE_ID:
                lineage_id = _utf8(buf, at, stop, "lineage_id")
            # A delimited bool or uint64 (5, 7, 8) is an unknown field to upb: skipped.
        elif wire_type == _VARINT and number in _SCALAR_OR_LIST:
            at = pos
            value, pos = _varint(buf, pos, end)
            if number == _AGGREGATE:
                aggregate = value != 0
            elif number == _ROUTE_IDS_TRUNCATED:
                truncated = value != 0
            elif number == _ROUTE_COUNT:
                route_count = value
            else:  # one unpacked element of a list
                lists[number].append((at, pos, row))
        else:
            pos = _skip(buf, pos, end, tag, _DEPTH_LIMIT - 1)
    return (bucket_id, start, stop_key, label, aggregate, truncated, route_count, lineage_id)


_SCALAR_OR_LIST = frozenset({_AGGREGATE, _ROUTE_IDS_TRUNCATED, _ROUTE_COUNT, *_ROW_LISTS})


def decode_varints(stream: U8) -> tuple[Cells, I64]:
    """Decode a byte stream of whole varints; also the offsets of its continuation bytes.

    Values are taken modulo 2^64 (bits past 64 of a 10-byte varint are dropped,
    as protobuf does). The stream must end with a varint's last byte. When every
    varint is one byte, the values are the stream itself (uint8, no copy).
    """
    more = stream >= 0x80
    if not more.any():
        return stream, np.zeros(0, dtype=np.int64)
    if more[-1]:
        raise WireDecodeError("packed list ends inside a varint")
    cont = np.flatnonzero(more)
    # Every varint's last byte (< 0x80) holds its top seven bits; most varints are
    # that byte alone, so the work below runs over continuation bytes only.
    values = stream[~more].astype(np.uint64)
    breaks = np.flatnonzero(np.diff(cont) != 1)
    run_last = np.append(breaks, cont.shape[0] - 1)
    run_len = run_last - np.insert(breaks + 1, 0, 0) + 1
    longest = int(run_len.max())
    if longest > 9:
        raise WireDecodeError("a varint in a packed list is longer than 10 bytes")
    last = cont[run_last] + 1
    # A varint's index is its last byte's offset minus the continuation bytes before it.
    index = last - (run_last + 1)
    acc = values[index]
    # Fold the lower bytes in from the top; shifting in uint64 drops bits past 64.
    for p in range(1, longest + 1):
        if p > 1:
            keep = np.flatnonzero(run_len >= p)
            if keep.shape[0] != index.shape[0]:
                values[index] = acc
                index, last, run_len, acc = index[keep], last[keep], run_len[keep], acc[keep]
        acc <<= np.uint64(7)
        acc |= (stream[last - p] & 0x7F).astype(np.uint64)
    values[index] = acc
    return values, cont


def _decode_lists(buf: bytes, chunks: _Chunks, n_rows: int, name: str) -> Ragged:
    """All chunks of one repeated varint field, decoded at once, counted per row."""
    if not chunks:
        return Ragged.empty(n_rows)
    view = memoryview(buf)
    stream = np.frombuffer(b"".join([view[a:b] for a, b, _ in chunks]), dtype=np.uint8)
    where = np.array(chunks, dtype=np.int64).reshape(-1, 3)
    bounds = np.cumsum(where[:, 1] - where[:, 0])
    # A packed payload must end on a varint boundary (unpacked ones always do).
    torn = np.flatnonzero(stream[bounds - 1] >= 0x80)
    if torn.shape[0]:
        raise WireDecodeError(f"packed {name} at byte {where[torn[0], 0]} ends inside a varint")
    try:
        values, cont = decode_varints(stream)
    except WireDecodeError as exc:
        raise WireDecodeError(f"{name}: {exc.reason}") from None
    # Varints per chunk: its bytes minus its continuation bytes.
    per_chunk = np.diff(bounds - np.searchsorted(cont, bounds), prepend=0)
    counts = np.zeros(n_rows, dtype=np.int64)
    np.add.at(counts, where[:, 2], per_chunk)
    return Ragged(values, counts)


def _split(items: list[int], counts: I64) -> list[tuple[int, ...]]:
    """A small per-row list field as one tuple per row."""
    if not items:
        return [()] * counts.shape[0]
    at = [0, *np.cumsum(counts).tolist()]
    return [tuple(items[a:b]) for a, b in itertools.pairwise(at)]


def decode_keyviz_matrix(data: bytes | bytearray | memoryview) -> KeyVizMatrixWire:
    """Decode a serialized GetKeyVizMatrixResponse; WireDecodeError when protobuf would fail."""
    buf = data if isinstance(data, bytes) else bytes(data)
    end = len(buf)
    columns: _Chunks = []
    lists: dict[int, _Chunks] = {number: [] for number in _ROW_LISTS}
    heads: list[_Head] = []
    pos = 0
    while pos < end:
        b = buf[pos]
        if b < 0x80:
            tag, pos = b, pos + 1
        else:
            tag, pos = _tag(buf, pos, end)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise WireDecodeError(f"field number 0 before byte {pos}")
        if number == _ROWS and wire_type == _DELIMITED:
            at, pos = _length(buf, pos, end)
            heads.append(_parse_row(buf, at, pos, len(heads), lists))
        elif number == _COLUMNS and wire_type == _DELIMITED:
            at, pos = _length(buf, pos, end)
            if at < pos:
                columns.append((at, pos, 0))
        elif number == _COLUMNS and wire_type == _VARINT:
            at = pos
            pos = _varint(buf, pos, end)[1]
            columns.append((at, pos, 0))
        else:
            pos = _skip(buf, pos, end, tag, _DEPTH_LIMIT)
    n_rows = len(heads)
    cols = _decode_lists(buf, columns, 1, "column_unix_ms").flat.astype(np.uint64).view(np.int64)
    decoded = {n: _decode_lists(buf, lists[n], n_rows, _FIELD_NAMES[n]) for n in _ROW_LISTS}
    route_ids = _split(decoded[_ROUTE_IDS].flat.tolist(), decoded[_ROUTE_IDS].counts)
    # Enums are int32: upb keeps the low 32 bits, signed.
    roles = decoded[_SAMPLE_ROLES]
    sample_roles = _split(roles.flat.astype(np.uint32).view(np.int32).tolist(), roles.counts)
    rows = tuple(
        RowHeader(
            bucket_id=h[0],
            start=h[1],
            end=h[2],
            label=h[3],
            aggregate=h[4],
            route_ids=route_ids[i],
            route_ids_truncated=h[5],
            route_count=h[6],
            sample_roles=sample_roles[i],
            lineage_id=h[7],
        )
        for i, h in enumerate(heads)
    )
    return KeyVizMatrixWire(
        column_unix_ms=cols,
        rows=rows,
        values=decoded[_VALUES],
        soft_columns=decoded[_SOFT_COLUMNS],
        raft_group_ids=decoded[_RAFT_GROUP_IDS],
        leader_terms=decoded[_LEADER_TERMS],
    )


# ---------------------------------------------------------------- encoding

_SMALL = [bytes([i]) for i in range(128)]


def varint(n: int) -> bytes:
    """One varint; negative numbers as their 64-bit two's complement (10 bytes)."""
    if 0 <= n < 128:
        return _SMALL[n]
    n &= _MASK64
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_varints(cells: Cells) -> tuple[U8, I64 | None]:
    """Varint bytes of every value, back to back; also each value's size when any exceeds 1."""
    if not cells.shape[0] or int(cells.max()) < 0x80:
        return cells.astype(np.uint8), None
    values = cells.astype(np.uint64, copy=False)
    n = values.shape[0]
    groups = (int(values.max()).bit_length() + 6) // 7
    # Row i: value i's bytes of seven bits each. Byte k exists when the value has a bit
    # at 7k or above, and then byte k - 1 carries the "more" flag. The rows' bytes that
    # exist, read in row-major order, are the varints back to back (uint8 throughout:
    # a few times faster than placing each byte by index).
    table = np.empty((n, groups), dtype=np.uint8)
    keep = np.empty((n, groups), dtype=np.bool_)
    keep[:, 0] = True
    sizes = np.ones(n, dtype=np.int64)
    for k in range(groups):
        # Assigning to uint8 keeps the low 8 bits.
        table[:, k] = (values >> np.uint64(7 * k)) if k else values
        if k:
            np.greater_equal(values, np.uint64(1 << (7 * k)), out=keep[:, k])
            sizes += keep[:, k]
    table &= 0x7F
    table[:, :-1] |= keep[:, 1:].view(np.uint8) << 7
    return table[keep], sizes


def _encoded_rows(r: Ragged) -> tuple[memoryview, list[int]]:
    """A per-cell field's varint bytes and each row's byte range in them."""
    data, sizes = encode_varints(r.flat)
    if sizes is None:
        offsets = r.offsets
    else:
        total = np.zeros(sizes.shape[0] + 1, dtype=np.int64)
        np.cumsum(sizes, out=total[1:])
        offsets = total[r.offsets]
    return memoryview(data.tobytes()), offsets.tolist()


def _delimited(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | _DELIMITED) + varint(len(payload)) + payload


def _packed(number: int, items: Sequence[int]) -> bytes:
    return _delimited(number, b"".join(varint(i) for i in items))


# A devcluster node keeps its RowHeader objects from one matrix to the next, so its
# row heads are encoded once; a miss costs a RowHeader hash more than before.
@functools.lru_cache(maxsize=8192)
def _row_head(h: RowHeader) -> bytes:
    """Fields 1-10 of a row, as upb writes them."""
    out = bytearray()
    if h.bucket_id:
        out += _delimited(_BUCKET_ID, h.bucket_id.encode())
    if h.start:
        out += _delimited(_START, h.start)
    if h.end:
        out += _delimited(_END, h.end)
    if h.label:
        out += _delimited(_LABEL, h.label.encode())
    if h.aggregate:
        out += b"\x28\x01"
    if h.route_ids:
        out += _packed(_ROUTE_IDS, h.route_ids)
    if h.route_ids_truncated:
        out += b"\x38\x01"
    if h.route_count:
        out += b"\x40" + varint(h.route_count)
    if h.sample_roles:
        out += _packed(_SAMPLE_ROLES, h.sample_roles)
    if h.lineage_id:
        out += _delimited(_LINEAGE_ID, h.lineage_id.encode())
    return bytes(out)


def encode_keyviz_matrix(m: KeyVizMatrixWire) -> bytes:
    """Serialize like GetKeyVizMatrixResponse.SerializeToString() would."""
    parts: list[bytes | memoryview] = []
    if m.column_unix_ms.shape[0]:
        cols, _ = encode_varints(m.column_unix_ms.view(np.uint64))
        parts += [b"\x0a", varint(cols.shape[0]), cols.tobytes()]
    cells = [
        (varint(number << 3 | _DELIMITED), *_encoded_rows(r))
        for number, r in (
            (_VALUES, m.values),
            (_SOFT_COLUMNS, m.soft_columns),
            (_RAFT_GROUP_IDS, m.raft_group_ids),
            (_LEADER_TERMS, m.leader_terms),
        )
    ]
    for i, h in enumerate(m.rows):
        body: list[bytes | memoryview] = [_row_head(h)]
        size = len(body[0])
        for tag, data, at in cells:
            a, b = at[i], at[i + 1]
            if b > a:
                length = varint(b - a)
                body += [tag, length, data[a:b]]
                size += len(tag) + len(length) + b - a
        parts += [b"\x12", varint(size), *body]
    return b"".join(parts)
