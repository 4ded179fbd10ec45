"""The binary cell encoding of a stored column: sparse arrays, narrowest types, maybe zlib.

Layout (little-endian):

    version  u8   (BLOB_VERSION)
    options  u8   (bit 0: payload is zlib-compressed)
    n        u32  (cells)
    codes    u8 x len(fields)   per field: 0 absent, 1 uint8, 2 uint16, 3 uint32, 4 uint64
    payload       the present fields' arrays, n items each, in field order

The first field is always the bucket pk, sorted ascending and stored as deltas
(the first delta is the pk itself): a dense column's deltas are all 1, one
byte each. A field that is zero in every cell is absent. zlib is applied only
when it saves at least 1/8 of the payload (values of real traffic are noisy;
pk deltas and flags compress well).

Stored bytes are not trusted: `decode` checks every length, code and the pk
order and raises CellBlobError naming what is wrong, never an IndexError later.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np
from numpy.typing import NDArray

BLOB_VERSION = 1
_ZLIB = 1
_HEAD = struct.Struct("<BBI")
_DTYPES: tuple[np.dtype[Any], ...] = (
    np.dtype("<u1"),
    np.dtype("<u2"),
    np.dtype("<u4"),
    np.dtype("<u8"),
)
_MAX_PK = 2**32 - 1
# A column never holds more cells than this (1024 rows per node, well below).
MAX_CELLS = 1 << 22

MERGED_FIELDS = ("pk", "value", "flags")
NODE_FIELDS = ("pk", "value", "soft", "group", "term")

UArray = NDArray[np.unsignedinteger[Any]]


class CellBlobError(ValueError):
    """Stored cell bytes that do not decode; the message says why."""


def _narrowest(top: int) -> int:
    """Index into _DTYPES of the narrowest type holding `top`."""
    for i, dt in enumerate(_DTYPES):
        if top <= np.iinfo(dt).max:
            return i
    raise CellBlobError(f"value {top} does not fit in 64 bits")


def encode(
    fields: tuple[str, ...], pks: NDArray[np.integer[Any]], arrays: dict[str, UArray]
) -> bytes:
    """Encode cells: `pks` (unique bucket pks) and one array per other field, same length.

    Cells are sorted by pk here; absent or all-zero fields are left out.
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
    codes = bytearray()
    parts: list[bytes] = []
    for name in fields:
        arr = deltas if name == "pk" else arrays.get(name)
        if arr is None or arr.shape != (n,):
            if arr is not None:
                raise CellBlobError(f"{name} has shape {arr.shape}, expected ({n},)")
            codes.append(0)
            continue
        top = int(arr.max(initial=0))
        if name != "pk" and top == 0:
            codes.append(0)
            continue
        code = _narrowest(top)
        codes.append(code + 1)
        data = arr if name == "pk" else arr[order]
        parts.append(data.astype(_DTYPES[code], copy=False).tobytes())
    payload = b"".join(parts)
    options = 0
    if len(payload) >= 64:
        packed = zlib.compress(payload, 6)
        if len(packed) * 8 <= len(payload) * 7:
            payload, options = packed, _ZLIB
    return _HEAD.pack(BLOB_VERSION, options, n) + bytes(codes) + payload


def decode(
    fields: tuple[str, ...], blob: bytes | memoryview
) -> tuple[NDArray[np.uint32], dict[str, UArray]]:
    """(pks ascending as uint32, {field: array}) for the present fields; CellBlobError if bad."""
    head = _HEAD.size + len(fields)
    if len(blob) < head:
        raise CellBlobError(f"{len(blob)} bytes, shorter than the {head}-byte header")
    version, options, n = _HEAD.unpack_from(blob)
    if version != BLOB_VERSION:
        raise CellBlobError(f"unknown encoding version {version}")
    if options & ~_ZLIB:
        raise CellBlobError(f"unknown options {options:#x}")
    if n > MAX_CELLS:
        raise CellBlobError(f"{n} cells, at most {MAX_CELLS}")
    codes = blob[_HEAD.size : head]
    if codes[0] == 0 and n:
        raise CellBlobError("the bucket pks are missing")
    if any(c > len(_DTYPES) for c in codes):
        raise CellBlobError(f"unknown field type code in {list(codes)}")
    payload: bytes | memoryview = memoryview(blob)[head:]
    expected = sum(n * _DTYPES[c - 1].itemsize for c in codes if c)
    if options & _ZLIB:
        try:
            d = zlib.decompressobj()
            payload = d.decompress(payload, expected + 1)
        except zlib.error as exc:
            raise CellBlobError(f"compressed cells do not inflate: {exc}") from None
        if not d.eof:
            raise CellBlobError(f"compressed cells inflate to more than {expected} bytes")
    if len(payload) != expected:
        raise CellBlobError(f"{len(payload)} bytes of cells, expected {expected} for {n} cells")
    out: dict[str, UArray] = {}
    offset = 0
    pks = np.zeros(0, dtype=np.uint32)
    for name, code in zip(fields, codes, strict=True):
        if not code:
            continue
        dt = _DTYPES[code - 1]
        arr: UArray = np.frombuffer(payload, dtype=dt, count=n, offset=offset)
        offset += n * dt.itemsize
        if name == "pk":
            if n and int(arr.min()) == 0:
                raise CellBlobError("bucket pks are not strictly increasing")
            if n and int(arr.max()) > _MAX_PK:
                raise CellBlobError("bucket pk out of range")
            total = np.cumsum(arr, dtype=np.uint64)
            if n and int(total[-1]) > _MAX_PK:
                raise CellBlobError("bucket pk out of range")
            pks = total.astype(np.uint32)
        else:
            out[name] = arr
    return pks, out
