"""The binary cell encoding of a stored column: sparse cells, narrow integers, exceptions.

A column keeps only its cells with something in them, as parallel fields (the
bucket pk, the value, the flags, ...). Layout (little-endian):

    version  u8    BLOB_VERSION
    options  u8    bit 0: the payload is zlib-compressed
    n        u32   cells
    per field:
      desc   u8    bits 0-2: base code, bits 3-5: exception width code
                   (codes: 0 none, 1 uint8, 2 uint16, 3 uint32, 4 uint64;
                   base code 5: one uint64 for every cell, 8 bytes)
      k      u32   exceptions (only when the exception code is not 0)
    payload: per field, n base items (or the constant), then k indices (uint8 / uint16 / uint32,
             the narrowest holding n - 1) and k exception values

A field's value at cell i is its base item (0 when the base is absent),
replaced by the exception value where i is an exception index. The encoder
picks the base width that makes the field smallest: values of real traffic are
mostly small with a few hot rows (one byte each plus a handful of exceptions),
flags are mostly 0 (no base, the set ones as exceptions), a field that is 0
everywhere costs nothing. The bucket pk is stored as deltas (the first is the
pk itself), one byte each for a dense column. zlib is applied only when it
saves at least ZLIB_MIN_SAVING (it costs every reader a decompression), or
ZLIB_MIN_SAVING_COLD for columns read rarely or few at a time (raw node
columns, 15 min and 1 h columns).

Stored bytes are not trusted: decoding checks every length, code, index and
the pk order and raises CellBlobError saying what is wrong (and which blob of
a batch), never an IndexError later.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

BLOB_VERSION = 1
# zlib only when it saves at least this share: inflating costs every reader (measured
# in benchmarks/bench_keyviz_store.py: it doubles the time to decode a day of columns).
# Columns read in bulk (tier 0 for a day) use this; rarely read ones pass a lower bar.
ZLIB_MIN_SAVING = 1 / 3
ZLIB_MIN_SAVING_COLD = 1 / 8
_ZLIB = 1
_HEAD = struct.Struct("<BBI")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_CONSTANT = 5  # base code: one uint64 value for every cell
_WIDTHS = (0, 1, 2, 4, 8)  # by code
_DTYPES: tuple[np.dtype[Any] | None, ...] = (
    None,
    np.dtype("<u1"),
    np.dtype("<u2"),
    np.dtype("<u4"),
    np.dtype("<u8"),
)
_INDEX_DTYPES = (np.dtype("<u1"), np.dtype("<u2"), np.dtype("<u4"))  # by cell count
_MAX_PK = 2**32 - 1
# A column never holds more cells than this (1024 rows per node, far below).
MAX_CELLS = 1 << 22

MERGED_FIELDS = ("pk", "value", "flags")
NODE_FIELDS = ("pk", "value", "soft", "group", "term")

UArray = NDArray[np.unsignedinteger[Any]]


class CellBlobError(ValueError):
    """Stored cell bytes that do not decode; `index` is the blob of a batch at fault."""

    def __init__(self, message: str, index: int = 0) -> None:
        super().__init__(message)
        self.index = index


def _code_for(top: int) -> int:
    for code in (1, 2, 3, 4):
        if top < 1 << (8 * _WIDTHS[code]):
            return code
    raise CellBlobError(f"value {top} does not fit in 64 bits")


def _index_dtype(n: int) -> np.dtype[Any]:
    return _DTYPES[_code_for(max(n - 1, 0))] or np.dtype("<u1")


def _encode_field(arr: NDArray[np.uint64]) -> tuple[int, bytes, bytes]:
    """(descriptor, exception count bytes, payload): the smallest encoding of one field."""
    n = int(arr.shape[0])
    top = int(arr.max(initial=0))
    if top == 0:
        return 0, b"", b""
    index_width = _index_dtype(n).itemsize
    best: tuple[int, int, NDArray[np.bool_] | None] | None = None  # (size, base code, exc mask)
    for code in (0, 1, 2, 3, 4):
        if code and top < 1 << (8 * _WIDTHS[code]):
            size = n * _WIDTHS[code]
            if best is None or size < best[0]:
                best = (size, code, None)
            break
        exc = arr != 0 if code == 0 else arr >= (1 << (8 * _WIDTHS[code]))
        k = int(np.count_nonzero(exc))
        size = n * _WIDTHS[code] + k * (index_width + _WIDTHS[_code_for(top)])
        if best is None or size < best[0]:
            best = (size, code, exc)
    # A constant base (8 bytes) with the other values as exceptions: the pk deltas of a
    # dense column are all 1, a column flagged everywhere has one flag value.
    values, freq = np.unique(arr, return_counts=True)
    common = int(values[int(np.argmax(freq))])
    if common:
        exc = arr != common
        k = int(np.count_nonzero(exc))
        size = 8 + k * (index_width + _WIDTHS[_code_for(top)])
        if best is None or size < best[0]:
            best = (size, _CONSTANT, exc)
    assert best is not None
    _, base_code, exc_mask = best
    base = b""
    if base_code == _CONSTANT:
        base = _U64.pack(common)
    elif base_code:
        base_dtype = _DTYPES[base_code]
        assert base_dtype is not None
        base_arr = arr if exc_mask is None else np.where(exc_mask, 0, arr)
        base = base_arr.astype(base_dtype).tobytes()
    if exc_mask is None:
        return base_code, b"", base
    idx = np.flatnonzero(exc_mask)
    exc_values = arr[idx]
    exc_code = _code_for(int(exc_values.max(initial=0)))
    exc_dtype = _DTYPES[exc_code]
    assert exc_dtype is not None
    tail = idx.astype(_index_dtype(n)).tobytes() + exc_values.astype(exc_dtype).tobytes()
    return base_code | (exc_code << 3), _U32.pack(int(idx.shape[0])), base + tail


def encode(
    fields: tuple[str, ...],
    pks: NDArray[np.integer[Any]],
    arrays: dict[str, UArray],
    *,
    min_saving: float | None = None,
) -> bytes:
    """Encode cells: `pks` (distinct bucket pks) and one array per other field, same length.

    Cells are sorted by pk here; a missing field is stored as 0 everywhere.
    """
    n = int(pks.shape[0])
    if n > MAX_CELLS:
        raise CellBlobError(f"{n} cells in one column, at most {MAX_CELLS}")
    order = np.argsort(pks, kind="stable")
    sorted_pks = pks[order].astype(np.int64)
    if n and (int(sorted_pks[0]) < 1 or int(sorted_pks[-1]) > _MAX_PK):
        raise CellBlobError("bucket pk out of range 1..2^32-1")
    deltas = np.diff(sorted_pks, prepend=0)
    if n and int(deltas.min()) <= 0:
        raise CellBlobError("a bucket appears twice in one column")
    head = bytearray(_HEAD.pack(BLOB_VERSION, 0, n))
    payload: list[bytes] = []
    for name in fields:
        if name == "pk":
            field = deltas.astype(np.uint64)
        else:
            given = arrays.get(name)
            if given is None:
                field = np.zeros(n, dtype=np.uint64)
            elif given.shape != (n,):
                raise CellBlobError(f"{name} has shape {given.shape}, expected ({n},)")
            else:
                field = given[order].astype(np.uint64, copy=False)
        desc, count, data = _encode_field(field)
        head.append(desc)
        head += count
        payload.append(data)
    body = b"".join(payload)
    if len(body) >= 64:
        packed = zlib.compress(body, 6)
        saving = ZLIB_MIN_SAVING if min_saving is None else min_saving
        if len(packed) <= len(body) * (1 - saving):
            body = packed
            head[1] = _ZLIB
    return bytes(head) + body


def decode_many(
    fields: tuple[str, ...], blobs: Sequence[bytes | memoryview]
) -> tuple[NDArray[np.int64], NDArray[np.uint32], dict[str, UArray]]:
    """Decode a batch of blobs at once: (cells per blob, pks, {field: values}), concatenated.

    Fields that are 0 in every cell of every blob are left out. The Python work
    per blob is reading its header and taking zero-copy views of its arrays;
    widening, exceptions and the pk sums run once over the whole batch.
    CellBlobError.index names the blob at fault.
    """
    n_fields = len(fields)
    ns: list[int] = []
    bases: list[list[UArray]] = [[] for _ in fields]
    any_base = [False] * n_fields
    exc_idx: list[list[UArray]] = [[] for _ in fields]
    exc_val: list[list[UArray]] = [[] for _ in fields]
    exc_owner: list[list[int]] = [[] for _ in fields]
    unpack_head, unpack_u32 = _HEAD.unpack_from, _U32.unpack_from
    zeros_u8 = np.zeros(0, dtype=np.uint8)
    for j, blob in enumerate(blobs):
        size = len(blob)
        if size < _HEAD.size + n_fields:
            raise CellBlobError(f"{size} bytes, shorter than the header", j)
        version, options, n = unpack_head(blob)
        if version != BLOB_VERSION:
            raise CellBlobError(f"unknown encoding version {version}", j)
        if options & ~_ZLIB:
            raise CellBlobError(f"unknown options {options:#x}", j)
        if n > MAX_CELLS:
            raise CellBlobError(f"{n} cells, at most {MAX_CELLS}", j)
        pos = _HEAD.size
        index_dtype = _INDEX_DTYPES[0 if n <= 256 else 1 if n <= 65_536 else 2]
        expected = 0
        layout: list[tuple[int, int, int]] = []
        for _ in range(n_fields):
            if pos >= size:
                raise CellBlobError("the header ends early", j)
            desc = blob[pos]
            pos += 1
            base_code, exc_code = desc & 7, desc >> 3
            if base_code > _CONSTANT or exc_code > 4:
                raise CellBlobError(f"unknown field type code {desc:#x}", j)
            k = 0
            if exc_code:
                if pos + 4 > size:
                    raise CellBlobError("the header ends early", j)
                (k,) = unpack_u32(blob, pos)
                pos += 4
                if k > n:
                    raise CellBlobError(f"{k} exceptions for {n} cells", j)
            layout.append((base_code, exc_code, k))
            base_size = 8 if base_code == _CONSTANT else n * _WIDTHS[base_code]
            expected += base_size + k * (index_dtype.itemsize + _WIDTHS[exc_code])
        payload: bytes | memoryview = memoryview(blob)[pos:]
        if options & _ZLIB:
            try:
                inflater = zlib.decompressobj()
                payload = inflater.decompress(payload, expected + 1)
            except zlib.error as exc:
                raise CellBlobError(f"compressed cells do not inflate: {exc}", j) from None
            if not inflater.eof:
                raise CellBlobError(f"compressed cells inflate to more than {expected} bytes", j)
        if len(payload) != expected:
            raise CellBlobError(
                f"{len(payload)} bytes of cells, expected {expected} for {n} cells", j
            )
        ns.append(n)
        offset = 0
        for f, (base_code, exc_code, k) in enumerate(layout):
            dtype = _DTYPES[base_code] if base_code != _CONSTANT else None
            if base_code == _CONSTANT:
                (common,) = _U64.unpack_from(payload, offset)
                offset += 8
                bases[f].append(np.full(n, common, dtype=_DTYPES[_code_for(common)]))
                any_base[f] = True
            elif dtype is None:
                bases[f].append(zeros_u8 if not n else np.zeros(n, dtype=np.uint8))
            else:
                bases[f].append(np.frombuffer(payload, dtype=dtype, count=n, offset=offset))
                offset += n * dtype.itemsize
                any_base[f] = True
            exc_dtype = _DTYPES[exc_code]
            if exc_dtype is not None and k:
                exc_idx[f].append(np.frombuffer(payload, dtype=index_dtype, count=k, offset=offset))
                offset += k * index_dtype.itemsize
                exc_val[f].append(np.frombuffer(payload, dtype=exc_dtype, count=k, offset=offset))
                offset += k * exc_dtype.itemsize
                exc_owner[f].append(j)
    counts = np.array(ns, dtype=np.int64)
    offsets = np.zeros(len(ns) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    out: dict[str, UArray] = {}
    pks = np.zeros(0, dtype=np.uint32)
    for f, name in enumerate(fields):
        column: UArray = (
            np.concatenate(bases[f]) if any_base[f] else np.zeros(total, dtype=np.uint8)
        )
        if exc_idx[f]:
            owners = np.array(exc_owner[f], dtype=np.int64)
            sizes = [int(i.shape[0]) for i in exc_idx[f]]
            owner = np.repeat(owners, sizes)
            local = np.concatenate(exc_idx[f]).astype(np.int64)
            vals = np.concatenate(exc_val[f])
            beyond = np.flatnonzero(local >= counts[owner])
            if beyond.shape[0]:
                j = int(owner[beyond[0]])
                raise CellBlobError(f"{name}: exception index beyond the {int(counts[j])} cells", j)
            if vals.dtype.itemsize > column.dtype.itemsize:
                column = column.astype(vals.dtype)
            elif not column.flags.writeable:
                column = column.copy()
            column[local + offsets[owner]] = vals
        if name == "pk":
            pks = _pks_from_deltas(column, offsets)
            continue
        if int(column.max(initial=0)):
            out[name] = column
    return counts, pks, out


def _first_blob(position: int, offsets: NDArray[np.int64]) -> int:
    """The blob holding flat position `position` (offsets = cumulative cell counts)."""
    return int(np.searchsorted(offsets, position, side="right")) - 1


def _pks_from_deltas(deltas: UArray, offsets: NDArray[np.int64]) -> NDArray[np.uint32]:
    total = int(offsets[-1])
    if not total:
        return np.zeros(0, dtype=np.uint32)
    zero = np.flatnonzero(deltas == 0)
    if zero.shape[0]:
        raise CellBlobError(
            "bucket pks are not strictly increasing", _first_blob(int(zero[0]), offsets)
        )
    if int(deltas.max()) > _MAX_PK:
        pos = int(np.argmax(deltas))
        raise CellBlobError("bucket pk out of range", _first_blob(pos, offsets))
    running = np.cumsum(deltas, dtype=np.uint64)
    # Each blob's deltas restart from 0: subtract the running sum before the blob.
    starts = offsets[:-1]
    nonempty = starts < offsets[1:]
    before = np.zeros(len(starts), dtype=np.uint64)
    firsts = starts[nonempty]
    before[nonempty] = running[firsts] - deltas[firsts].astype(np.uint64)
    pks = running - np.repeat(before, np.diff(offsets))
    if int(pks.max()) > _MAX_PK:
        pos = int(np.argmax(pks))
        raise CellBlobError("bucket pk out of range", _first_blob(pos, offsets))
    return pks.astype(np.uint32)


def decode(
    fields: tuple[str, ...], blob: bytes | memoryview
) -> tuple[NDArray[np.uint32], dict[str, UArray]]:
    """(pks ascending as uint32, {field: values}) of one blob; fields all 0 are left out."""
    _, pks, arrays = decode_many(fields, [blob])
    return pks, arrays
