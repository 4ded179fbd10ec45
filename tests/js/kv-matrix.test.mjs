// kv-matrix.js: the binary matrix as keyviz/serialize.py writes it, and the Grid's
// live folding (scroll, update in place, rows inserted in key order).
import assert from "node:assert/strict";
import { test } from "node:test";

import { b64ToUrl, compareBytes, decodeMatrix, Grid } from "../../static/js/kv-matrix.js";

const FLAGS = { soft: 1, conflict: 2, degraded: 4, unknown: 8 };

/** A version 2 matrix, laid out like keyviz/serialize.py (preamble, JSON, pad, arrays). */
function encode({ rows, times, values, dtype = "uint32", flags = null, step = 60e3 }) {
  const counts = { soft: 0, conflict: 0, degraded: 0, unknown: 0 };
  if (flags) for (const f of flags) for (const [n, b] of Object.entries(FLAGS)) if (f & b) counts[n]++;
  const header = JSON.stringify({
    series: "writes", step_ms: step, n_rows: rows.length, n_cols: times.length, rows,
    values_dtype: dtype, flag_bits: FLAGS, flag_counts: counts,
  });
  const text = new TextEncoder().encode(header);
  const pad = (8 - ((12 + text.length) % 8)) % 8;
  const Type = { uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, uint64: BigUint64Array }[dtype];
  const width = Type.BYTES_PER_ELEMENT;
  const n = rows.length * times.length;
  const hasFlags = Object.values(counts).some(Boolean);
  const buf = new ArrayBuffer(12 + text.length + pad + 8 * times.length + width * n + (hasFlags ? n : 0));
  const dv = new DataView(buf);
  "EKVZ".split("").forEach((ch, i) => dv.setUint8(i, ch.charCodeAt(0)));
  dv.setUint16(4, 2, true);
  dv.setUint32(8, text.length, true);
  new Uint8Array(buf, 12, text.length).set(text);
  let at = 12 + text.length + pad;
  times.forEach((t, i) => dv.setBigInt64(at + 8 * i, BigInt(t), true));
  at += 8 * times.length;
  const arr = new Type(buf, at, n);
  values.forEach((v, i) => { arr[i] = dtype === "uint64" ? BigInt(v) : v; });
  at += width * n;
  if (hasFlags) new Uint8Array(buf, at, n).set(flags);
  return buf;
}

const row = (id, startB64) => ({ bucket_id: id, start: startB64, end: "", start_text: id, end_text: "+inf" });

test("a uint16 matrix decodes to its rows, times and values in row-major order", () => {
  const buf = encode({ rows: [row("a", "YQ=="), row("b", "Yg==")], times: [60e3, 120e3, 180e3], values: [1, 2, 3, 400, 500, 65535], dtype: "uint16" });
  const m = decodeMatrix(buf, FLAGS);
  assert.deepEqual(m.times, [60e3, 120e3, 180e3]);
  assert.deepEqual(Array.from(m.values), [1, 2, 3, 400, 500, 65535]);
  assert.equal(m.flagBits, 0);
  assert.deepEqual(Array.from(m.flags), [0, 0, 0, 0, 0, 0]);
});

test("uint64 values beyond 2^32 stay exact", () => {
  const big = 2 ** 40 + 7;
  const m = decodeMatrix(encode({ rows: [row("a", "")], times: [60e3], values: [big], dtype: "uint64" }), FLAGS);
  assert.equal(m.values[0], big);
});

test("the flags section is read per cell and names the flags in use", () => {
  const m = decodeMatrix(encode({ rows: [row("a", "")], times: [1, 2, 3], values: [0, 1, 2], dtype: "uint8", flags: [8, 0, 3] }), FLAGS);
  assert.deepEqual(Array.from(m.flags), [8, 0, 3]);
  assert.equal(m.flagBits, 8 | 1 | 2);
});

test("a buffer that is not a version 2 matrix is refused", () => {
  const buf = encode({ rows: [], times: [], values: [] });
  new DataView(buf).setUint16(4, 3, true);
  assert.throws(() => decodeMatrix(buf, FLAGS), /version 2/);
});

test("keys compare as bytes and convert to the API's URL-safe base64", () => {
  assert.ok(compareBytes(Uint8Array.of(1, 2), Uint8Array.of(1, 3)) < 0);
  assert.ok(compareBytes(Uint8Array.of(1), Uint8Array.of(1, 0)) < 0);
  assert.equal(b64ToUrl("+/8="), "-_8");
});

function grid(values, times, span = null) {
  return new Grid({
    header: { series: "writes", step_ms: 60e3, rows: [row("a", "YQ=="), row("c", "Yw==")] },
    times, values: Uint8Array.from(values), flags: new Uint8Array(values.length), flagBits: 0,
  }, span);
}

test("a live column scrolls a preset window by one and keeps the values aligned", () => {
  const g = grid([1, 2, 3, 4, 5, 6], [60e3, 120e3, 180e3], 180e3);
  assert.equal(g.addColumn(240e3, [7, 8], [0, 1], 60e3), "shift");
  assert.deepEqual(g.times, [120e3, 180e3, 240e3]);
  assert.deepEqual(Array.from(g.values), [2, 3, 7, 5, 6, 8]);
  assert.equal(g.flags[5], 1);
});

test("the same column again replaces it; an older one is ignored", () => {
  const g = grid([1, 2, 3, 4], [60e3, 120e3], 600e3);
  assert.equal(g.addColumn(120e3, [9, 9], [0, 0], 60e3), "update");
  assert.deepEqual(Array.from(g.values), [1, 9, 3, 9]);
  assert.equal(g.addColumn(30e3, [5, 5], [0, 0], 60e3), "none");
});

test("a value the narrow array cannot hold widens it instead of wrapping", () => {
  const g = grid([1, 2, 3, 4], [60e3, 120e3], 600e3);
  g.addColumn(180e3, [70000, 0], [0, 0], 60e3);
  assert.equal(g.values[2], 70000);
});

test("a split's new row is inserted in key order with an empty history", () => {
  const g = grid([1, 2, 3, 4], [60e3, 120e3]);
  const at = g.insertRow(row("b", "Yg=="));
  assert.equal(at, 1);
  assert.deepEqual(g.rows.map((r) => r.bucket_id), ["a", "b", "c"]);
  assert.deepEqual(Array.from(g.values), [1, 2, 0, 0, 3, 4]);
  assert.equal(g.index.get("c"), 2);
});
