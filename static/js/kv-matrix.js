// The KeyViz matrix on the page: the binary decoder of GET /api/keyviz/matrix?format=bin
// (keyviz/serialize.py) and the Grid the page draws and keeps live. Pure: no DOM, so
// node --test runs it (tests/js/kv-matrix.test.mjs).

export function b64ToBytes(b64) {
  const bin = atob(b64 || "");
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Standard base64 -> the URL-safe unpadded form the matrix API takes for start_key/end_key. */
export const b64ToUrl = (b64) => (b64 || "").replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

export function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/** Row order on the wire: by start key, then bucket id. */
function rowStart(row) {
  if (!row._start) row._start = b64ToBytes(row.start);
  return row._start;
}
export function compareRows(a, b) {
  return compareBytes(rowStart(a), rowStart(b)) || (a.bucket_id < b.bucket_id ? -1 : a.bucket_id > b.bucket_id ? 1 : 0);
}

/**
 * Decode GET /api/keyviz/matrix?format=bin (see keyviz/serialize.py). `flagBits` maps
 * flag names to their bits (the server's keyviz/messages.py FLAG_BITS, from the page).
 */
export function decodeMatrix(buffer, flagBits) {
  const dv = new DataView(buffer);
  const magic = String.fromCharCode(dv.getUint8(0), dv.getUint8(1), dv.getUint8(2), dv.getUint8(3));
  if (magic !== "EKVZ" || dv.getUint16(4, true) !== 2) throw new Error("not a version 2 KeyViz matrix");
  const length = dv.getUint32(8, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 12, length)));
  let at = 12 + length;
  at += (8 - (at % 8)) % 8;
  const R = header.n_rows;
  const C = header.n_cols;
  const stamps = new BigInt64Array(buffer, at, C);
  const times = Array.from(stamps, Number);
  at += 8 * C;
  let values;
  const Narrow = { uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, float64: Float64Array }[header.values_dtype];
  if (Narrow) {
    // The narrowest type every value fits in (keyviz/serialize.py), viewed in place: no
    // copy (the grid widens it before storing a value it cannot hold).
    values = new Narrow(buffer, at, R * C);
    at += Narrow.BYTES_PER_ELEMENT * R * C;
  } else {
    // uint64 as two uint32 halves: exact up to 2^53, no BigInt per cell.
    values = new Float64Array(R * C);
    const halves = new Uint32Array(buffer, at, 2 * R * C);
    for (let i = 0, j = 0; i < values.length; i++, j += 2) {
      values[i] = halves[j] + halves[j + 1] * 4294967296;
    }
    at += 8 * R * C;
  }
  // No flags section when no cell has a flag.
  let some = 0; // the flags some cell has
  for (const [name, bit] of Object.entries(flagBits)) if (header.flag_counts?.[name]) some |= bit;
  const flags = some ? new Uint8Array(buffer.slice(at, at + R * C)) : new Uint8Array(R * C);
  return { header, times, values, flags, flagBits: some };
}

/**
 * The matrix as the page holds it: rows in key order, columns in time order,
 * values / flags / colour bytes row-major (cell r, c at r * C + c).
 */
export class Grid {
  constructor({ header, times, values, flags, flagBits }, spanMs) {
    this.series = header.series;
    this.step = header.step_ms;
    this.rows = header.rows;
    this.nodes = header.nodes || [];
    this.warnings = header.warnings || [];
    this.times = times;
    this.values = values;
    this.flags = flags;
    this.flagBits = flagBits; // the flags some cell may have: painting and marks skip the others
    this.bytes = new Uint8Array(values.length);
    this.spanMs = spanMs; // live window length (presets), null for a fixed window
    this.version = 0;
    this.reindex();
  }

  get R() { return this.rows.length; }
  get C() { return this.times.length; }

  /** bucket id -> row; members of an aggregate row point at it. */
  reindex() {
    this.index = new Map();
    this.rows.forEach((row, i) => {
      this.index.set(row.bucket_id, i);
      for (const member of row.member_bucket_ids || []) this.index.set(member, i);
    });
    this.version++;
  }

  /** Widen the values to float64 before storing numbers the current array cannot hold. */
  hold(numbers) {
    if (this.values instanceof Float64Array) return;
    const max = 2 ** (8 * this.values.BYTES_PER_ELEMENT) - 1;
    for (const v of numbers) {
      if (!(Number.isInteger(v) && v >= 0 && v <= max)) {
        this.values = Float64Array.from(this.values);
        return;
      }
    }
  }

  maxValue() {
    let m = 0;
    for (let i = 0; i < this.values.length; i++) if (this.values[i] > m) m = this.values[i];
    return m;
  }

  /** Insert a row (a split's new route) in key order; returns its index. */
  insertRow(meta) {
    let at = 0;
    while (at < this.R && compareRows(this.rows[at], meta) < 0) at++;
    const C = this.C;
    const grow = (src, Type) => {
      const out = new Type(src.length + C);
      out.set(src.subarray(0, at * C), 0);
      out.set(src.subarray(at * C), (at + 1) * C);
      return out;
    };
    this.values = grow(this.values, this.values.constructor);
    this.flags = grow(this.flags, Uint8Array);
    this.bytes = grow(this.bytes, Uint8Array);
    this.rows.splice(at, 0, { ...meta, member_bucket_ids: meta.member_bucket_ids || [], live: true });
    this.reindex();
    return at;
  }

  /**
   * Take in one merged column (values and flags per row). Returns "none" when it
   * is older than what the page has, "update" when it folded into the newest
   * column, "shift" when the window scrolled by exactly one column, "grow" otherwise.
   */
  addColumn(t, vals, flgs, liveStep) {
    for (let r = 0; r < flgs.length; r++) this.flagBits |= flgs[r];
    this.hold(vals);
    const R = this.R;
    const C = this.C;
    const last = C ? this.times[C - 1] : -Infinity;
    // A column budget may have joined w base columns into one of width step;
    // wide columns end on multiples of the step, so ceil(t / step) names one.
    const wide = liveStep && this.step > liveStep;
    const slot = (x) => Math.ceil(x / this.step);
    if (C && (slot(t) < slot(last) || (wide && t <= last))) return "none";
    if (C && slot(t) === slot(last)) {
      if (wide) this.hold(Array.from(vals, (v, r) => this.values[r * C + C - 1] + v));
      for (let r = 0; r < R; r++) {
        const i = r * C + C - 1;
        // The same column again (final now, the API's copy may have lacked a node): replace.
        this.values[i] = wide ? this.values[i] + vals[r] : vals[r];
        this.flags[i] = wide ? this.flags[i] | flgs[r] : flgs[r];
      }
      this.times[C - 1] = t;
      this.version++;
      return "update";
    }
    let drop = 0;
    if (this.spanMs) while (drop < C && this.times[drop] <= t - this.spanMs) drop++;
    if (drop === 1) {
      // Scroll in place: every row moves left by one cell.
      for (let r = 0; r < R; r++) {
        const a = r * C;
        this.values.copyWithin(a, a + 1, a + C);
        this.flags.copyWithin(a, a + 1, a + C);
        this.bytes.copyWithin(a, a + 1, a + C);
        this.values[a + C - 1] = vals[r];
        this.flags[a + C - 1] = flgs[r];
      }
      this.times.shift();
      this.times.push(t);
      this.version++;
      return "shift";
    }
    const C2 = C - drop + 1;
    const values = new this.values.constructor(R * C2);
    const flags = new Uint8Array(R * C2);
    const bytes = new Uint8Array(R * C2);
    for (let r = 0; r < R; r++) {
      values.set(this.values.subarray(r * C + drop, (r + 1) * C), r * C2);
      flags.set(this.flags.subarray(r * C + drop, (r + 1) * C), r * C2);
      bytes.set(this.bytes.subarray(r * C + drop, (r + 1) * C), r * C2);
      values[r * C2 + C2 - 1] = vals[r];
      flags[r * C2 + C2 - 1] = flgs[r];
    }
    Object.assign(this, { values, flags, bytes });
    this.times = this.times.slice(drop);
    this.times.push(t);
    this.version++;
    return "grow";
  }

  /** The window of column c: (start, end]. */
  window(c) {
    const end = this.times[c];
    return [end - this.step, end];
  }
}
