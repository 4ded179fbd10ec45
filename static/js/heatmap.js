// The Key Visualizer page: draws the merged KeyViz matrix and keeps it live.
//
// Data flow: the page fetches GET /api/keyviz/matrix?format=bin (the compact
// form), maps every value once to a byte on a log scale, colours the bytes
// through a lookup table into an off-screen canvas with one pixel per cell,
// and draws the visible part of that canvas scaled onto the screen. Hover and
// the brush only redraw a transparent overlay canvas, so moving the mouse over
// 1024 x 1440 cells costs nothing but a few rectangles.
//
// Live: one WebSocket to /api/stream, subscribed to the chosen series. Each
// merged column is appended (the window scrolls), new rows from a split are
// inserted in key order, and every drawn column is acknowledged (the server
// keeps at most a few unacknowledged columns per viewer and sends "resync"
// when a viewer falls behind). A reconnect fills the gap from the matrix API.
//
// All state that defines a view lives in the URL (series, window, zoom, row
// budget, brightness, live) so a view can be shared. No inline scripts or
// handlers: everything is wired here, and text from nodes only ever reaches
// the DOM through textContent.

import {
  fmtClock, fmtDateTime, fmtRange, fmtTick, fromInput, preferenceCookie, prefersLocal, toInput,
  useLocalTime, zoneName, zoneOffsetMs,
} from "./timefmt.js";

const root = document.getElementById("keyviz");
const cfg = root.dataset;
const RESERVED = JSON.parse(document.getElementById("kv-reserved").textContent); // [[prefix, label]]

const $ = (id) => document.getElementById(id);
const el = {
  controls: $("kv-controls"),
  custom: $("kv-custom"),
  from: $("kv-from"),
  to: $("kv-to"),
  rows: $("kv-rows"),
  brightness: $("kv-brightness"),
  live: $("kv-live"),
  back: $("kv-back"),
  reset: $("kv-reset"),
  livePill: $("kv-live-status"),
  apiLink: $("kv-api-link"),
  summary: $("kv-summary"),
  zoomLabel: $("kv-zoom-label"),
  notice: $("kv-notice"),
  banner: $("kv-banner"),
  stage: $("kv-stage"),
  canvas: $("kv-canvas"),
  overlay: $("kv-overlay"),
  tooltip: $("kv-tooltip"),
  message: $("kv-message"),
  scale: $("kv-scale"),
  scaleMin: $("kv-scale-min"),
  scaleMax: $("kv-scale-max"),
  scaleUnit: $("kv-scale-unit"),
  totalsCaption: $("kv-totals-caption"),
  rowTotals: $("kv-row-totals").tBodies[0],
  colTotals: $("kv-col-totals").tBodies[0],
  drawer: $("kv-drawer"),
  tz: $("kv-tz"),
  tzLabels: document.querySelectorAll("[data-tz-name]"),
  drawerTitle: $("kv-drawer-title"),
  drawerBody: $("kv-drawer-body"),
};

// ---------------------------------------------------------------- constants

// View state <-> URL and the request sent from <head> (static/js/keyviz-state.js).
const { SERIES, RANGES, MAX_ROWS, MAX_COLS, COLS_KEY, readState, stateQuery, sameMatrix } = window.KeyvizState;
const FLAG = { soft: 1, conflict: 2, degraded: 4, unknown: 8 };

// Layout of the main canvas, in CSS pixels.
const PAD = { left: 208, right: 74, top: 26, colBars: 34, axis: 24 };

// The heatmap palette: zero is the background; 1..255 run from deep indigo
// through magenta and orange to pale yellow (perceptually ordered, like magma).
const ZERO_RGB = [10, 12, 20];
const STOPS = [
  [0.0, 36, 18, 84],
  [0.15, 70, 16, 120],
  [0.3, 114, 31, 129],
  [0.45, 158, 47, 127],
  [0.6, 205, 64, 113],
  [0.72, 241, 96, 93],
  [0.84, 253, 150, 104],
  [0.93, 254, 202, 141],
  [1.0, 252, 253, 191],
];
const THEME = {
  bg: "#0b0e15",
  plotBg: "#0a0c14",
  ink: "#d9e0ec",
  muted: "#8a97ad",
  faint: "#3a4559",
  grid: "rgba(255,255,255,0.06)",
  accent: "#5aa2ff",
  hex: "#c4a7ff",
  prefix: "#b58cff",
  prefixBg: "rgba(139,92,246,0.22)",
  barRow: "#4f8fe6",
  barCol: "#e0a24d",
  font: '11px ui-monospace, "DejaVu Sans Mono", Menlo, monospace',
  fontSans: '11px system-ui, "DejaVu Sans", sans-serif',
};

// Little-endian RGBA packed into a uint32 for ImageData's Uint32Array view.
const pack = (r, g, b) => ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;

function buildLut() {
  const lut = new Uint32Array(256);
  const grey = new Uint32Array(256);
  lut[0] = pack(...ZERO_RGB);
  grey[0] = pack(22, 24, 30);
  for (let i = 1; i < 256; i++) {
    const t = (i - 1) / 254;
    let k = 1;
    while (k < STOPS.length - 1 && STOPS[k][0] < t) k++;
    const [t0, r0, g0, b0] = STOPS[k - 1];
    const [t1, r1, g1, b1] = STOPS[k];
    const f = (t - t0) / (t1 - t0 || 1);
    lut[i] = pack(
      Math.round(r0 + f * (r1 - r0)),
      Math.round(g0 + f * (g1 - g0)),
      Math.round(b0 + f * (b1 - b0)),
    );
    // Degraded cells keep their brightness but lose their colour.
    const g = Math.round(48 + 150 * t);
    grey[i] = pack(g, g, g + 6);
  }
  return { lut, grey };
}
const { lut: LUT, grey: GREY } = buildLut();

/** An "#rrggbb" CSS variable of the page as [r, g, b], or the fallback. */
function cssRgb(name, fallback) {
  const text = getComputedStyle(root).getPropertyValue(name).trim();
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(text);
  return m ? [1, 2, 3].map((i) => parseInt(m[i], 16)) : fallback;
}
// Unknown cells (a node that would have counted them did not report, DESIGN rule 6):
// their own colour and hatch, never the idle background, so a gap is not read as "no
// traffic". A cell the reporting nodes did count something in keeps its colour, hatched.
const UNKNOWN_RGB = cssRgb("--kv-unknown", [31, 104, 124]);
const UNKNOWN_PX = pack(...UNKNOWN_RGB);

/** The pixel of one cell: unknown-and-idle, degraded (grey) or the palette. */
function cellPixel(flag, byte) {
  if (flag & FLAG.unknown && byte === 0) return UNKNOWN_PX;
  return flag & FLAG.degraded ? GREY[byte] : LUT[byte];
}

// ---------------------------------------------------------------- small helpers

/** Create an element; children may be strings (text nodes) or elements. */
function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const nf = new Intl.NumberFormat("en-US");
const isBytes = (series) => series.endsWith("_bytes");
const UNITS = { writes: "writes", reads: "reads", write_bytes: "bytes written", read_bytes: "bytes read" };

function humanBytes(v) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i ? v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0) : Math.round(v)} ${units[i]}`;
}

function compact(v) {
  if (v < 1000) return nf.format(Math.round(v));
  const units = ["k", "M", "G", "T", "P"];
  let i = -1;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return `${v.toFixed(v < 10 ? 1 : 0)}${units[i]}`;
}

const fmtRate = (series, v) => (isBytes(series) ? humanBytes(v) : v < 10 ? v.toFixed(2) : compact(v));
const fmtValue = (series, v) => (isBytes(series) ? humanBytes(v) : nf.format(v));
const fmtCompact = (series, v) => (isBytes(series) ? humanBytes(v) : compact(v));

function fmtDuration(ms) {
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60e3) return `${+(ms / 1000).toFixed(1)} s`;
  if (ms < 3600e3) return `${+(ms / 60e3).toFixed(1)} min`;
  return `${+(ms / 3600e3).toFixed(1)} h`;
}

// Times: UTC unless the user chose local time (timefmt.js; the choice is a cookie).
useLocalTime(prefersLocal(document.cookie));

function b64ToBytes(b64) {
  const bin = atob(b64 || "");
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
const b64ToUrl = (b64) => (b64 || "").replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/** Row order on the wire: by start key, then bucket id. */
function rowStart(row) {
  if (!row._start) row._start = b64ToBytes(row.start);
  return row._start;
}
function compareRows(a, b) {
  return compareBytes(rowStart(a), rowStart(b)) || (a.bucket_id < b.bucket_id ? -1 : a.bucket_id > b.bucket_id ? 1 : 0);
}

class ApiFailure extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Live applies to a window that ends now (a preset); a zoomed or custom window is fixed. */
const liveWanted = (s) => s.live && s.range !== "custom";
const zoomed = (s) => s.range === "custom" || Boolean(s.startKey || s.endKey);

// ---------------------------------------------------------------- the binary matrix

/** Decode GET /api/keyviz/matrix?format=bin (see keyviz/serialize.py). */
function decodeMatrix(buffer) {
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
  let flagBits = 0; // the flags some cell has
  for (const [name, bit] of Object.entries(FLAG)) if (header.flag_counts[name]) flagBits |= bit;
  const flags = flagBits ? new Uint8Array(buffer.slice(at, at + R * C)) : new Uint8Array(R * C);
  return { header, times, values, flags, flagBits };
}

// ---------------------------------------------------------------- the matrix on the page

/**
 * The matrix as the page holds it: rows in key order, columns in time order,
 * values / flags / colour bytes row-major (cell r, c at r * C + c).
 */
class Grid {
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

// ---------------------------------------------------------------- page state

const K = {
  state: readState(location.search),
  grid: null,
  vmax: 0,
  view: { x0: 0, x1: 1, y0: 0, y1: 1 }, // visible cells (canvas zoom), fractional
  plot: { x: 0, y: 0, w: 1, h: 1 },
  off: document.createElement("canvas"), // one pixel per cell
  hover: null, // { r, c }
  pinned: null,
  cursor: null, // keyboard cell
  drag: null,
  marks: { conflict: 0, soft: 0, unknown: 0 }, // flagged cells
  masks: {
    conflict: document.createElement("canvas"),
    soft: document.createElement("canvas"),
    unknown: document.createElement("canvas"),
  },
  missing: new Map(), // column time -> nodes that did not report it (unknown cells)
  markLayer: document.createElement("canvas"),
  totals: { key: "", rows: null, cols: null, r0: 0, c0: 0 },
  loading: null, // AbortController of the matrix fetch
  liveStep: null,
  pendingAck: null,
  drawQueued: false,
  liveQueue: [],
  filling: false,
  loadAttempt: 0, // failed loads in a row (retry backoff)
  loadRetry: 0,
  lastLiveAt: 0, // when the live stream last said something about this series
  collector: null, // the collector's status from the matrix API
  storeMessage: "",
  amended: 0,
  pushed: 0, // history entries this page pushed (for Back)
  prof: {}, // timestamps of the last load (window.keyviz.timing)
  liveDraws: [],
  firstPaintMs: null,
};

// ---------------------------------------------------------------- colour mapping

/** Map values to colour bytes on a log scale: 0 stays 0, vmax / brightness saturates. */
function mapBytes(grid, from = 0, to = grid.values.length, step = 1) {
  const k = (254 * K.state.brightness) / Math.log1p(Math.max(1, K.vmax));
  const byteOf = (v) => {
    const b = 1 + Math.floor(k * Math.log1p(v));
    return b > 255 ? 255 : b;
  };
  const { values, bytes } = grid;
  // Counts are mostly small integers: one logarithm per distinct value, then a lookup.
  const table = K.vmax < 1 << 16 && (to - from) / step > 4 * K.vmax ? new Uint8Array(K.vmax + 1) : null;
  if (table) for (let v = 1; v <= K.vmax; v++) table[v] = byteOf(v);
  for (let i = from; i < to; i += step) {
    const v = values[i];
    if (v <= 0) bytes[i] = 0;
    else if (table && v === (v | 0) && v <= K.vmax) bytes[i] = table[v];
    else bytes[i] = byteOf(v);
  }
}

/** Colour every cell into the off-screen canvas (one pixel per cell). */
function paintAll() {
  const g = K.grid;
  const { R, C } = g;
  const off = K.off;
  if (off.width !== C || off.height !== R) {
    off.width = Math.max(1, C);
    off.height = Math.max(1, R);
  }
  if (!R || !C) return;
  const ctx = off.getContext("2d");
  const image = ctx.createImageData(C, R);
  const px = new Uint32Array(image.data.buffer);
  const { bytes, flags } = g;
  if (g.flagBits & (FLAG.degraded | FLAG.unknown)) {
    for (let i = 0; i < px.length; i++) px[i] = cellPixel(flags[i], bytes[i]);
  } else {
    for (let i = 0; i < px.length; i++) px[i] = LUT[bytes[i]];
  }
  ctx.putImageData(image, 0, 0);
}

/** Scroll the off-screen canvas by one cell and colour the new last column. */
function paintShift() {
  const g = K.grid;
  const { R, C } = g;
  if (!R || C < 2) return paintAll();
  const ctx = K.off.getContext("2d");
  ctx.drawImage(K.off, 1, 0, C - 1, R, 0, 0, C - 1, R);
  paintColumn(C - 1);
}

function paintColumn(c) {
  const g = K.grid;
  const { R, C } = g;
  if (!R || !C) return paintAll();
  const ctx = K.off.getContext("2d");
  const image = ctx.createImageData(1, R);
  const px = new Uint32Array(image.data.buffer);
  for (let r = 0; r < R; r++) {
    const i = r * C + c;
    px[r] = cellPixel(g.flags[i], g.bytes[i]);
  }
  ctx.putImageData(image, c, 0);
}

/**
 * One-pixel-per-cell masks of the conflict and soft cells. Drawing a pattern through
 * a mask costs three blits whatever the number of flagged cells (a rectangle per run
 * of cells would cost one fill per run: seconds when every cell is marked).
 */
function computeMarks() {
  const g = K.grid;
  const { R, C, flags } = g;
  K.marks = { conflict: 0, soft: 0, unknown: 0 };
  for (const name of ["conflict", "soft", "unknown"]) {
    const bit = FLAG[name];
    if (!(g.flagBits & bit)) continue; // no cell has it: no mask, no pass
    const mask = K.masks[name];
    const image = mask.getContext("2d").createImageData(C, R);
    const px = new Int32Array(image.data.buffer);
    const shift = Math.log2(bit);
    let count = 0;
    // Branch-free: -1 (every byte 0xff) where the flag is set, 0 elsewhere.
    for (let i = 0; i < flags.length; i++) {
      const on = (flags[i] >> shift) & 1;
      px[i] = -on;
      count += on;
    }
    K.marks[name] = count;
    mask.width = C;
    mask.height = R;
    mask.getContext("2d").putImageData(image, 0, 0);
  }
}

function makePattern(kind) {
  const tile = document.createElement("canvas");
  tile.width = tile.height = kind === "soft" ? 4 : 6;
  const t = tile.getContext("2d");
  if (kind === "unknown") {
    // Stripes the other way round from conflict, in a light shade of the unknown colour.
    t.strokeStyle = `rgba(${UNKNOWN_RGB.map((v) => Math.min(255, v + 110)).join(",")},0.8)`;
    t.lineWidth = 1.5;
    t.beginPath();
    t.moveTo(0, 0);
    t.lineTo(6, 6);
    t.moveTo(-1, 5);
    t.lineTo(1, 7);
    t.moveTo(5, -1);
    t.lineTo(7, 1);
    t.stroke();
  } else if (kind === "conflict") {
    t.strokeStyle = "rgba(255,255,255,0.55)";
    t.lineWidth = 1;
    t.beginPath();
    t.moveTo(0, 6);
    t.lineTo(6, 0);
    t.moveTo(-1, 1);
    t.lineTo(1, -1);
    t.moveTo(5, 7);
    t.lineTo(7, 5);
    t.stroke();
  } else {
    t.fillStyle = "rgba(255,255,255,0.75)";
    t.fillRect(1, 1, 1.5, 1.5);
  }
  return el.canvas.getContext("2d").createPattern(tile, "repeat");
}
const PATTERNS = { conflict: makePattern("conflict"), soft: makePattern("soft"), unknown: makePattern("unknown") };

function drawScale() {
  const ctx = el.scale.getContext("2d");
  const { width, height } = el.scale;
  const image = ctx.createImageData(width, height);
  const px = new Uint32Array(image.data.buffer);
  for (let x = 0; x < width; x++) {
    const c = LUT[Math.round((x / (width - 1)) * 254) + 1];
    for (let y = 0; y < height; y++) px[y * width + x] = c;
  }
  ctx.putImageData(image, 0, 0);
  const series = K.state.series;
  el.scaleMin.textContent = "0";
  el.scaleMax.textContent = K.vmax ? fmtCompact(series, K.vmax / K.state.brightness) : "—";
  el.scaleUnit.textContent = ` ${isBytes(series) ? "per cell" : UNITS[series] + " per cell"} · log scale`;
}

// ---------------------------------------------------------------- geometry

function layout() {
  const dpr = window.devicePixelRatio || 1;
  const width = Math.max(480, el.stage.clientWidth);
  const top = el.stage.getBoundingClientRect().top + window.scrollY;
  const height = Math.max(380, Math.min(1100, window.innerHeight - top - 64));
  for (const canvas of [el.canvas, el.overlay]) {
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
  }
  el.stage.style.height = `${height}px`;
  K.css = { width, height, dpr };
  K.plot = {
    x: PAD.left,
    y: PAD.top,
    w: width - PAD.left - PAD.right,
    h: height - PAD.top - PAD.colBars - PAD.axis,
  };
  try {
    localStorage.setItem(COLS_KEY, String(autoCols()));
  } catch {
    /* storage refused: the next visit asks after layout */
  }
}

const cellW = () => K.plot.w / (K.view.x1 - K.view.x0);
const cellH = () => K.plot.h / (K.view.y1 - K.view.y0);

/** The cell under a point of the canvas (CSS pixels), or null outside the map. */
function cellAt(x, y) {
  const g = K.grid;
  const p = K.plot;
  if (!g || x < p.x || y < p.y || x >= p.x + p.w || y >= p.y + p.h) return null;
  const c = Math.floor(K.view.x0 + (x - p.x) / cellW());
  const r = Math.floor(K.view.y0 + (y - p.y) / cellH());
  if (c < 0 || r < 0 || c >= g.C || r >= g.R) return null;
  return { r, c };
}

function cellRect(r, c) {
  const w = cellW();
  const hgt = cellH();
  return { x: K.plot.x + (c - K.view.x0) * w, y: K.plot.y + (r - K.view.y0) * hgt, w, h: hgt };
}

/** x (CSS px) of a moment, through the columns' windows. */
function xOfTime(t) {
  const g = K.grid;
  const times = g.times;
  let lo = 0;
  let hi = g.C - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (times[mid] < t) lo = mid + 1;
    else hi = mid;
  }
  const f = Math.min(1, Math.max(0, (t - (times[lo] - g.step)) / g.step));
  return K.plot.x + (lo + f - K.view.x0) * cellW();
}

function timeAtCell(x) {
  const g = K.grid;
  const c = Math.min(g.C - 1, Math.max(0, Math.floor(x)));
  return g.times[c] - g.step + (x - c) * g.step;
}

function clampView(v) {
  const g = K.grid;
  const fit = (a, b, max, min) => {
    let span = Math.min(max, Math.max(min, b - a));
    a = Math.max(0, Math.min(a, max - span));
    return [a, a + span];
  };
  const [x0, x1] = fit(v.x0, v.x1, Math.max(1, g.C), Math.min(2, g.C || 1));
  const [y0, y1] = fit(v.y0, v.y1, Math.max(1, g.R), Math.min(2, g.R || 1));
  return { x0, x1, y0, y1 };
}

const fullView = () => ({ x0: 0, x1: Math.max(1, K.grid.C), y0: 0, y1: Math.max(1, K.grid.R) });
const magnified = () => {
  const f = fullView();
  return K.view.x0 > 0 || K.view.y0 > 0 || K.view.x1 < f.x1 || K.view.y1 < f.y1;
};

// ---------------------------------------------------------------- drawing

function requestDraw() {
  if (K.drawQueued) return;
  K.drawQueued = true;
  requestAnimationFrame(() => {
    K.drawQueued = false;
    draw();
  });
}

function draw() {
  const g = K.grid;
  const { width, height, dpr } = K.css;
  const ctx = el.canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = THEME.bg;
  ctx.fillRect(0, 0, width, height);
  const p = K.plot;
  ctx.fillStyle = THEME.plotBg;
  ctx.fillRect(p.x, p.y, p.w, p.h);
  if (!g) {
    drawOverlay();
    return;
  }
  if (g.R && g.C) {
    const v = K.view;
    const cw = cellW();
    const ch = cellH();
    // Magnified cells stay crisp; when there are more cells than pixels, average
    // rather than drop whole rows or columns (a dropped row could hide a hotspot).
    ctx.imageSmoothingEnabled = cw < 1 || ch < 1;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(K.off, v.x0, v.y0, v.x1 - v.x0, v.y1 - v.y0, p.x, p.y, p.w, p.h);
    drawMarks(ctx);
    const totals = visibleTotals();
    drawKeyAxis(ctx);
    drawTimeAxis(ctx);
    drawTotals(ctx, totals);
    scheduleTotalsText(totals);
  }
  ctx.strokeStyle = THEME.faint;
  ctx.lineWidth = 1;
  ctx.strokeRect(p.x - 0.5, p.y - 0.5, p.w + 1, p.h + 1);
  drawOverlay();
  showMessage(g.R ? "" : K.storeMessage ? `No data: ${K.storeMessage}.` : "No traffic in this window and key range yet.");
  el.canvas.dataset.state = "ready";
  el.canvas.dataset.rows = String(g.R);
  el.canvas.dataset.cols = String(g.C);
  el.canvas.dataset.series = g.series;
  el.canvas.dataset.lastColumn = String(g.C ? g.times[g.C - 1] : 0);
  if (K.firstPaintMs === null) {
    K.firstPaintMs = performance.now();
    performance.mark("keyviz:first-paint");
  }
  if (K.pendingAck !== null) {
    const t = K.pendingAck;
    K.pendingAck = null;
    K.liveDraws.push({ column_unix_ms: t, drawn_unix_ms: Date.now(), emitted_unix_ms: K.lastEmitted });
    if (K.liveDraws.length > 100) K.liveDraws.shift();
    live.ack(t);
  }
}

function drawMarks(ctx) {
  const p = K.plot;
  const v = K.view;
  const { dpr } = K.css;
  const layer = K.markLayer;
  const w = Math.round(p.w * dpr);
  const hgt = Math.round(p.h * dpr);
  for (const kind of ["soft", "conflict", "unknown"]) {
    if (!K.marks[kind]) continue;
    if (layer.width !== w || layer.height !== hgt) {
      layer.width = w;
      layer.height = hgt;
    }
    const l = layer.getContext("2d");
    l.globalCompositeOperation = "source-over";
    l.clearRect(0, 0, w, hgt);
    l.fillStyle = PATTERNS[kind];
    l.fillRect(0, 0, w, hgt);
    // Keep the pattern only where the mask (the flagged cells, scaled like the map) is.
    l.globalCompositeOperation = "destination-in";
    l.imageSmoothingEnabled = false;
    l.drawImage(K.masks[kind], v.x0, v.y0, v.x1 - v.x0, v.y1 - v.y0, 0, 0, w, hgt);
    ctx.drawImage(layer, p.x, p.y, p.w, p.h);
  }
}

/** Draw a key preview: reserved prefixes as a tag, hex in its own colour, ±inf in italics. */
function drawKey(ctx, text, reservedLabel, x, y, maxW, color = THEME.ink) {
  ctx.font = THEME.font;
  if (text === "-inf" || text === "+inf") {
    ctx.fillStyle = THEME.muted;
    ctx.font = `italic ${THEME.font}`;
    ctx.fillText(text === "-inf" ? "−∞" : "+∞", x, y);
    return;
  }
  let rest = text;
  if (reservedLabel) {
    const hit = RESERVED.find(([prefix]) => text.startsWith(prefix));
    if (hit) {
      const tag = hit[0].replace(/\|$/, "");
      const tw = ctx.measureText(tag).width + 8;
      ctx.fillStyle = THEME.prefixBg;
      ctx.beginPath();
      ctx.roundRect(x, y - 7, tw, 14, 3);
      ctx.fill();
      ctx.fillStyle = THEME.prefix;
      ctx.fillText(tag, x + 4, y);
      x += tw + 4;
      maxW -= tw + 4;
      rest = text.slice(hit[0].length);
    }
  }
  ctx.fillStyle = rest.startsWith("0x") ? THEME.hex : color;
  ctx.fillText(fitText(ctx, rest, maxW), x, y);
}

function fitText(ctx, text, maxW) {
  if (maxW <= 8) return "";
  if (ctx.measureText(text).width <= maxW) return text;
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (ctx.measureText(text.slice(0, mid) + "…").width <= maxW) lo = mid;
    else hi = mid - 1;
  }
  return text.slice(0, lo) + "…";
}

function drawKeyAxis(ctx) {
  const g = K.grid;
  const p = K.plot;
  const v = K.view;
  const ch = cellH();
  const r0 = Math.max(0, Math.floor(v.y0));
  const r1 = Math.min(g.R, Math.ceil(v.y1));
  // One label per row when rows are tall enough, else every k-th row boundary.
  const stride = Math.max(1, Math.ceil(16 / ch));
  ctx.textBaseline = "middle";
  ctx.textAlign = "left";
  for (let r = r0; r < r1; r++) {
    if (r % stride) continue;
    const row = g.rows[r];
    const top = p.y + (r - v.y0) * ch;
    const y = stride === 1 ? top + ch / 2 : top;
    if (y < p.y - 1 || y > p.y + p.h + 1) continue;
    ctx.fillStyle = THEME.faint;
    ctx.fillRect(p.x - 5, Math.round(stride === 1 ? top : y), 4, 1);
    drawKey(ctx, row.start_label || row.start_text, row.start_label ? null : row.start_reserved, 8, y, p.x - 18);
  }
  ctx.fillStyle = THEME.muted;
  ctx.font = THEME.fontSans;
  ctx.textBaseline = "middle";
  ctx.fillText(`start key · ${g.R} rows`, 8, PAD.top / 2 - 2);
  ctx.textAlign = "right";
  ctx.fillText(`time (${zoneName()}) · ${fmtDuration(g.step)} columns`, p.x + p.w, PAD.top / 2 - 2);
  ctx.textAlign = "left";
}

const TICKS = [1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3,
  7200e3, 10800e3, 21600e3, 43200e3, 86400e3];

function drawTimeAxis(ctx) {
  const g = K.grid;
  const p = K.plot;
  const v = K.view;
  const t0 = timeAtCell(v.x0);
  const t1 = timeAtCell(v.x1);
  const pxPerMs = p.w / Math.max(1, t1 - t0);
  const interval = TICKS.find((i) => i * pxPerMs >= 84) || TICKS[TICKS.length - 1];
  const seconds = interval < 60e3;
  // Align ticks to the chosen zone's wall-clock boundaries.
  const offset = zoneOffsetMs(t0);
  K.ticks = [];
  const y = p.y + p.h + PAD.colBars;
  ctx.font = THEME.fontSans;
  ctx.textBaseline = "top";
  ctx.textAlign = "center";
  for (let t = Math.ceil((t0 + offset) / interval) * interval - offset; t <= t1; t += interval) {
    const x = xOfTime(t);
    if (x < p.x || x > p.x + p.w) continue;
    ctx.fillStyle = THEME.grid;
    ctx.fillRect(Math.round(x), p.y, 1, p.h);
    ctx.fillStyle = THEME.faint;
    ctx.fillRect(Math.round(x), y, 1, 4);
    const tick = fmtTick(t, seconds);
    K.ticks.push(tick.text);
    ctx.fillStyle = tick.midnight ? THEME.ink : THEME.muted;
    ctx.fillText(tick.text, x, y + 5);
  }
  ctx.textAlign = "left";
}

/** Row totals over the visible columns and column totals over the visible rows. */
function visibleTotals() {
  const g = K.grid;
  const v = K.view;
  const r0 = Math.max(0, Math.floor(v.y0));
  const r1 = Math.min(g.R, Math.ceil(v.y1));
  const c0 = Math.max(0, Math.floor(v.x0));
  const c1 = Math.min(g.C, Math.ceil(v.x1));
  const key = `${g.version}|${r0}|${r1}|${c0}|${c1}`;
  if (K.totals.key === key) return K.totals;
  const rows = new Float64Array(r1 - r0);
  const cols = new Float64Array(c1 - c0);
  const { values } = g;
  const C = g.C;
  for (let r = r0; r < r1; r++) {
    let sum = 0;
    const base = r * C;
    for (let c = c0; c < c1; c++) {
      const x = values[base + c];
      sum += x;
      cols[c - c0] += x;
    }
    rows[r - r0] = sum;
  }
  K.totals = { key, rows, cols, r0, c0 };
  return K.totals;
}

function drawTotals(ctx, totals) {
  const p = K.plot;
  const v = K.view;
  const cw = cellW();
  const ch = cellH();
  const maxRow = Math.max(1, ...totals.rows);
  const maxCol = Math.max(1, ...totals.cols);
  const barsX = p.x + p.w + 8;
  const barsW = PAD.right - 14;
  ctx.save();
  ctx.beginPath();
  ctx.rect(barsX, p.y, barsW, p.h);
  ctx.clip();
  ctx.fillStyle = THEME.barRow;
  totals.rows.forEach((sum, i) => {
    if (!sum) return;
    const top = p.y + (totals.r0 + i - v.y0) * ch;
    ctx.fillRect(barsX, top + (ch > 3 ? 0.5 : 0), Math.max(1, (sum / maxRow) * barsW), Math.max(1, ch - (ch > 3 ? 1 : 0)));
  });
  ctx.restore();
  const barsY = p.y + p.h + 4;
  const barsH = PAD.colBars - 8;
  ctx.save();
  ctx.beginPath();
  ctx.rect(p.x, barsY, p.w, barsH);
  ctx.clip();
  ctx.fillStyle = THEME.barCol;
  totals.cols.forEach((sum, i) => {
    if (!sum) return;
    const left = p.x + (totals.c0 + i - v.x0) * cw;
    const hgt = Math.max(1, (sum / maxCol) * barsH);
    ctx.fillRect(left + (cw > 3 ? 0.5 : 0), barsY + barsH - hgt, Math.max(1, cw - (cw > 3 ? 1 : 0)), hgt);
  });
  ctx.restore();
  const series = K.state.series;
  ctx.font = THEME.fontSans;
  ctx.fillStyle = THEME.muted;
  ctx.textBaseline = "middle";
  ctx.textAlign = "left";
  ctx.fillText("row totals", barsX, PAD.top / 2 - 2);
  ctx.fillText(`max ${fmtCompact(series, maxRow)}`, barsX, p.y + p.h + PAD.colBars / 2);
  ctx.textAlign = "right";
  ctx.fillText(`column totals · max ${fmtCompact(series, maxCol)}`, p.x - 8, barsY + barsH / 2);
  ctx.textAlign = "left";
}

/** Hover outline, keyboard cursor, pinned cell and the brush, on the transparent layer. */
function drawOverlay() {
  const { width, height, dpr } = K.css;
  const ctx = el.overlay.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  if (!K.grid || !K.grid.R) return;
  const p = K.plot;
  if (K.hover) {
    // The hovered row in the key gutter, with its start key even when the axis skips it.
    const r = cellRect(K.hover.r, K.hover.c);
    const y = Math.max(p.y, Math.min(p.y + p.h, r.y + r.h / 2));
    ctx.fillStyle = "rgba(17,22,33,0.96)";
    ctx.fillRect(0, y - 9, p.x - 4, 18);
    ctx.fillStyle = THEME.accent;
    ctx.fillRect(p.x - 6, y - 9, 2, 18);
    const row = K.grid.rows[K.hover.r];
    ctx.textBaseline = "middle";
    ctx.textAlign = "left";
    drawKey(ctx, row.start_label || row.start_text, row.start_label ? null : row.start_reserved, 8, y, p.x - 18, "#ffffff");
  }
  ctx.save();
  ctx.beginPath();
  ctx.rect(p.x, p.y, p.w, p.h);
  ctx.clip();
  const outline = (cell, color, lw) => {
    if (!cell) return;
    const r = cellRect(cell.r, cell.c);
    ctx.strokeStyle = color;
    ctx.lineWidth = lw;
    ctx.strokeRect(r.x - lw / 2, r.y - lw / 2, Math.max(2, r.w) + lw, Math.max(2, r.h) + lw);
  };
  if (K.hover) {
    const r = cellRect(K.hover.r, K.hover.c);
    ctx.fillStyle = "rgba(255,255,255,0.05)";
    ctx.fillRect(p.x, r.y, p.w, Math.max(1, r.h));
    ctx.fillRect(r.x, p.y, Math.max(1, r.w), p.h);
    outline(K.hover, "rgba(255,255,255,0.9)", 1);
  }
  outline(K.cursor, THEME.accent, 1.5);
  outline(K.pinned, "#ffd166", 2);
  const d = K.drag;
  if (d && d.mode === "brush" && d.moved) {
    const x = Math.min(d.x, d.x2);
    const y = Math.min(d.y, d.y2);
    ctx.fillStyle = "rgba(90,162,255,0.18)";
    ctx.fillRect(x, y, Math.abs(d.x2 - d.x), Math.abs(d.y2 - d.y));
    ctx.strokeStyle = THEME.accent;
    ctx.setLineDash([4, 3]);
    ctx.lineWidth = 1;
    ctx.strokeRect(x + 0.5, y + 0.5, Math.abs(d.x2 - d.x), Math.abs(d.y2 - d.y));
  }
  ctx.restore();
}

// ---------------------------------------------------------------- totals as text

let totalsTimer = 0;
function scheduleTotalsText(totals) {
  clearTimeout(totalsTimer);
  totalsTimer = setTimeout(() => renderTotalsText(totals), 250);
}

function renderTotalsText(totals) {
  const g = K.grid;
  if (!g) return;
  const series = K.state.series;
  const grand = totals.rows.reduce((a, b) => a + b, 0);
  el.totalsCaption.textContent = `— ${fmtValue(series, grand)} ${UNITS[series]} in view`;
  el.canvas.setAttribute(
    "aria-label",
    `Heatmap of ${UNITS[series]}: ${g.R} key ranges × ${g.C} columns of ${fmtDuration(g.step)}, ` +
      `${fmtValue(series, grand)} in view. Totals as text follow the map.`,
  );
  const top = (arr, n) => Array.from(arr.keys()).filter((i) => arr[i] > 0).sort((a, b) => arr[b] - arr[a]).slice(0, n);
  el.rowTotals.replaceChildren(
    ...top(totals.rows, 20).map((i) => {
      const row = g.rows[totals.r0 + i];
      return h("tr", {}, h("td", {}, keyRange(row)),
        h("td", { class: "mono", text: row.bucket_id }), h("td", { class: "num", text: fmtValue(series, totals.rows[i]) }));
    }),
  );
  el.colTotals.replaceChildren(
    ...top(totals.cols, 20).map((i) => {
      const [a, b] = g.window(totals.c0 + i);
      return h("tr", {}, h("td", { text: fmtRange(a, b, true) }),
        h("td", { class: "num", text: fmtValue(series, totals.cols[i]) }));
    }),
  );
}

// ---------------------------------------------------------------- tooltip

/** Who did not report column c (unknown cells), as text. */
function missingText(c) {
  const nodes = c === undefined || !K.grid ? [] : K.missing.get(K.grid.times[c]) || [];
  return nodes.length ? nodes.join(", ") : "a node";
}

function flagNames(f, c) {
  const out = [];
  if (f & FLAG.unknown) out.push(["unknown", `unknown: ${missingText(c)} did not report this column`]);
  if (f & FLAG.conflict) out.push(["conflict", "conflict (writes deduplicated by group and term): nodes reported different counts; the larger is shown"]);
  if (f & FLAG.soft) out.push(["soft", "soft estimate: sampled, outside the accuracy bound"]);
  if (f & FLAG.degraded) out.push(["degraded", "degraded: a node that leads this range did not answer"]);
  return out;
}

function flagPills(flags, c) {
  return flagNames(flags, c).map(([name, title]) => h("span", { class: `kv-flag ${name}`, title, text: name }));
}

function keyRange(row) {
  return h("span", { class: "mono" },
    "[", keyNode(row.start_text, row.start_reserved, row.start_label), ", ",
    keyNode(row.end_text, row.end_reserved, row.end_label), ")");
}

function routeList(row) {
  if (!row.route_ids || !row.route_ids.length) return "—";
  return `${row.route_ids.join(", ")}${row.route_ids_truncated ? " … (truncated)" : ""}`;
}

/** A table head; `numeric` lists the columns aligned right. */
function tableHead(titles, numeric = []) {
  return h("thead", {}, h("tr", {}, titles.map((t, i) => h("th", { class: numeric.includes(i) ? "num" : null, text: t }))));
}

function cellSummary(r, c) {
  const g = K.grid;
  const row = g.rows[r];
  const i = r * g.C + c;
  const [a, b] = g.window(c);
  return { row, value: g.values[i], flags: g.flags[i], start: a, end: b };
}

function showTooltip(cell, anchor) {
  if (!cell) {
    el.tooltip.hidden = true;
    return;
  }
  const series = K.state.series;
  const s = cellSummary(cell.r, cell.c);
  const seconds = K.grid.step < 60e3;
  const rate = s.value / (K.grid.step / 1000);
  const members = s.row.member_bucket_ids || [];
  fill(el.tooltip,
    h("div", { class: "kv-tt-time" }, fmtRange(s.start, s.end, seconds),
      h("span", { class: "dim", text: ` · ${fmtDuration(K.grid.step)}` })),
    h("div", { class: "kv-tt-key" }, keyRange(s.row)),
    h("div", { class: "kv-tt-bucket mono" }, s.row.bucket_id,
      s.row.label ? h("span", { class: "kv-tag", text: s.row.label }) : null,
      members.length ? h("span", { class: "dim", text: ` · ${members.length} rows joined` }) : null),
    s.flags & FLAG.unknown
      ? h("div", { class: "kv-tt-value" }, h("strong", { text: "unknown" }),
        h("span", { class: "dim", text: s.value ? ` · at least ${fmtValue(series, s.value)} ${isBytes(series) ? "" : UNITS[series]}` : "" }))
      : h("div", { class: "kv-tt-value" }, h("strong", { text: fmtValue(series, s.value) }), ` ${isBytes(series) ? "" : UNITS[series]}`,
        h("span", { class: "dim", text: ` · ${fmtRate(series, rate)}/s` })),
    s.flags & FLAG.unknown
      ? h("div", { class: "kv-tt-unknown", text: `unknown: ${missingText(cell.c)} did not report this column` })
      : null,
    flagNames(s.flags, cell.c).length
      ? h("div", { class: "kv-tt-flags" }, flagPills(s.flags, cell.c))
      : null,
    h("div", { class: "kv-tt-hint", text: K.pinned ? "pinned · Esc to release" : "click for node detail" }),
  );
  el.tooltip.hidden = false;
  el.tooltip.dataset.bucket = s.row.bucket_id;
  el.tooltip.dataset.column = String(K.grid.times[cell.c]);
  el.tooltip.dataset.value = String(s.value);
  el.tooltip.dataset.unknown = String(Boolean(s.flags & FLAG.unknown));
  // Keep it inside the stage, on the side away from the pointer.
  const box = el.tooltip.getBoundingClientRect();
  const W = K.css.width;
  let x = anchor.x + 16;
  let y = anchor.y + 14;
  if (x + box.width > W - 4) x = anchor.x - box.width - 16;
  if (y + box.height > K.css.height - 4) y = Math.max(4, anchor.y - box.height - 14);
  el.tooltip.style.left = `${Math.max(4, x)}px`;
  el.tooltip.style.top = `${y}px`;
}

/** A key: its family's label ("SQS queue jobs") with the raw key as title, else the preview. */
function keyNode(text, reservedLabel, label) {
  if (text === "-inf" || text === "+inf") return h("span", { class: "key inf", text: text === "-inf" ? "−∞" : "+∞" });
  if (label) return h("span", { class: "key label", title: text, text: label });
  const hit = reservedLabel && RESERVED.find(([prefix]) => text.startsWith(prefix));
  const rest = hit ? text.slice(hit[0].length) : text;
  return h("span", { class: "key" },
    hit ? h("span", { class: "prefix", title: hit[1], text: hit[0] }) : null,
    h("span", { class: rest.startsWith("0x") ? "key hex" : "key", text: rest }));
}

// ---------------------------------------------------------------- interaction

function canvasPoint(e) {
  const box = el.canvas.getBoundingClientRect();
  return { x: e.clientX - box.left, y: e.clientY - box.top };
}

function setHover(cell, anchor) {
  const same = cell && K.hover && cell.r === K.hover.r && cell.c === K.hover.c;
  K.hover = cell;
  if (!K.pinned) showTooltip(cell, anchor);
  if (!same) drawOverlay();
}

el.canvas.addEventListener("pointermove", (e) => {
  const pt = canvasPoint(e);
  const d = K.drag;
  if (d) {
    d.x2 = pt.x;
    d.y2 = pt.y;
    if (Math.abs(d.x2 - d.x) + Math.abs(d.y2 - d.y) > 4) d.moved = true;
    if (d.mode === "pan" && d.moved) {
      const dx = (d.x2 - d.x) / cellW();
      const dy = (d.y2 - d.y) / cellH();
      K.view = clampView({ x0: d.view.x0 - dx, x1: d.view.x1 - dx, y0: d.view.y0 - dy, y1: d.view.y1 - dy });
      requestDraw();
    } else drawOverlay();
    return;
  }
  setHover(cellAt(pt.x, pt.y), pt);
});

el.canvas.addEventListener("pointerleave", () => {
  if (K.drag) return;
  K.hover = null;
  if (!K.pinned) el.tooltip.hidden = true;
  drawOverlay();
});

el.canvas.addEventListener("pointerdown", (e) => {
  if (e.button !== 0 || !K.grid) return;
  const pt = canvasPoint(e);
  if (!cellAt(pt.x, pt.y)) return;
  el.canvas.setPointerCapture(e.pointerId);
  K.drag = { x: pt.x, y: pt.y, x2: pt.x, y2: pt.y, moved: false, mode: e.shiftKey || e.altKey ? "pan" : "brush", view: { ...K.view } };
});

el.canvas.addEventListener("pointerup", (e) => {
  const d = K.drag;
  K.drag = null;
  if (!d) return;
  el.canvas.releasePointerCapture(e.pointerId);
  if (!d.moved) {
    const cell = cellAt(d.x, d.y);
    if (cell) pin(cell, { x: d.x, y: d.y });
    return;
  }
  if (d.mode === "brush") {
    const p = K.plot;
    const clampX = (x) => Math.min(p.x + p.w - 0.01, Math.max(p.x, x));
    const clampY = (y) => Math.min(p.y + p.h - 0.01, Math.max(p.y, y));
    const a = cellAt(clampX(Math.min(d.x, d.x2)), clampY(Math.min(d.y, d.y2)));
    const b = cellAt(clampX(Math.max(d.x, d.x2)), clampY(Math.max(d.y, d.y2)));
    drawOverlay();
    if (a && b) zoomInto(a, b);
  }
});

el.canvas.addEventListener("wheel", (e) => {
  if (!K.grid) return;
  e.preventDefault();
  const pt = canvasPoint(e);
  magnify(Math.exp(e.deltaY * 0.0015), pt);
}, { passive: false });

el.canvas.addEventListener("dblclick", () => {
  K.view = fullView();
  requestDraw();
});

/** Canvas zoom (pixel magnification) around a point; the server is not asked. */
function magnify(factor, pt) {
  const p = K.plot;
  const v = K.view;
  const fx = pt ? Math.min(1, Math.max(0, (pt.x - p.x) / p.w)) : 0.5;
  const fy = pt ? Math.min(1, Math.max(0, (pt.y - p.y) / p.h)) : 0.5;
  const cx = v.x0 + fx * (v.x1 - v.x0);
  const cy = v.y0 + fy * (v.y1 - v.y0);
  const w = (v.x1 - v.x0) * factor;
  const hgt = (v.y1 - v.y0) * factor;
  K.view = clampView({ x0: cx - fx * w, x1: cx + (1 - fx) * w, y0: cy - fy * hgt, y1: cy + (1 - fy) * hgt });
  requestDraw();
}

/** Brush: ask the server for that time window and key range (real re-bucketing). */
function zoomInto(a, b) {
  const g = K.grid;
  const c0 = Math.min(a.c, b.c);
  const c1 = Math.max(a.c, b.c);
  const r0 = Math.min(a.r, b.r);
  const r1 = Math.max(a.r, b.r);
  // A node column belongs to the boundary nearest to it: ask for half a step either side.
  const from = Math.max(0, g.times[c0] - Math.floor(g.step / 2));
  const to = g.times[c1] + Math.ceil(g.step / 2);
  const next = {
    ...K.state,
    range: "custom",
    from,
    to,
    startKey: b64ToUrl(g.rows[r0].start),
    endKey: b64ToUrl(g.rows[r1].end),
    live: false,
  };
  navigate(next, true);
}

function pin(cell, anchor) {
  K.pinned = cell;
  K.cursor = cell;
  showTooltip(cell, anchor || centerOf(cell));
  drawOverlay();
  openDrawer(cell);
}

function unpin() {
  K.pinned = null;
  el.tooltip.hidden = true;
  closeDrawer();
  drawOverlay();
}

const centerOf = (cell) => {
  const r = cellRect(cell.r, cell.c);
  return { x: r.x + r.w / 2, y: r.y + r.h / 2 };
};

el.canvas.addEventListener("keydown", (e) => {
  const g = K.grid;
  if (!g || !g.R || !g.C) return;
  const cur = K.cursor || K.hover || { r: Math.floor(g.R / 2), c: g.C - 1 };
  const move = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] }[e.key];
  if (move && e.shiftKey) {
    // Shift+arrows pan the magnified view.
    const dx = move[1] * (K.view.x1 - K.view.x0) * 0.1;
    const dy = move[0] * (K.view.y1 - K.view.y0) * 0.1;
    K.view = clampView({ x0: K.view.x0 + dx, x1: K.view.x1 + dx, y0: K.view.y0 + dy, y1: K.view.y1 + dy });
    requestDraw();
  } else if (move) {
    const next = { r: Math.min(g.R - 1, Math.max(0, cur.r + move[0])), c: Math.min(g.C - 1, Math.max(0, cur.c + move[1])) };
    K.cursor = next;
    // Keep the cursor in view.
    const v = K.view;
    if (next.c < v.x0 || next.c + 1 > v.x1 || next.r < v.y0 || next.r + 1 > v.y1) {
      const dx = next.c < v.x0 ? next.c - v.x0 : next.c + 1 > v.x1 ? next.c + 1 - v.x1 : 0;
      const dy = next.r < v.y0 ? next.r - v.y0 : next.r + 1 > v.y1 ? next.r + 1 - v.y1 : 0;
      K.view = clampView({ x0: v.x0 + dx, x1: v.x1 + dx, y0: v.y0 + dy, y1: v.y1 + dy });
      requestDraw();
    }
    if (!K.pinned) showTooltip(next, centerOf(next));
    drawOverlay();
  } else if (e.key === "Enter" || e.key === " ") {
    pin(cur);
  } else if (e.key === "Escape") {
    if (K.pinned) unpin();
    else if (magnified()) { K.view = fullView(); requestDraw(); }
  } else if (e.key === "+" || e.key === "=") magnify(0.7, K.cursor && centerOf(K.cursor));
  else if (e.key === "-" || e.key === "_") magnify(1 / 0.7, K.cursor && centerOf(K.cursor));
  else if (e.key === "0") { K.view = fullView(); requestDraw(); }
  else return;
  e.preventDefault();
});

el.canvas.addEventListener("blur", () => {
  K.cursor = null;
  if (!K.pinned && !K.hover) el.tooltip.hidden = true;
  drawOverlay();
});

document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && !el.drawer.hidden && document.activeElement !== el.canvas) unpin();
  if (e.altKey && e.key === "ArrowLeft" && K.pushed > 0) { e.preventDefault(); history.back(); }
});

// ---------------------------------------------------------------- cell detail drawer

let drawerRequest = null;

function closeDrawer() {
  if (drawerRequest) drawerRequest.abort();
  el.drawer.hidden = true;
  document.body.classList.remove("kv-drawer-open");
}

function section(title, ...content) {
  return h("section", { class: "kv-section" }, h("h3", { text: title }), ...content);
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", {}, v)]));
}

function openDrawer(cell) {
  const g = K.grid;
  const s = cellSummary(cell.r, cell.c);
  const series = K.state.series;
  const row = s.row;
  const members = row.member_bucket_ids || [];
  el.drawer.hidden = false;
  document.body.classList.add("kv-drawer-open");
  el.drawerTitle.textContent = row.bucket_id;
  const seconds = g.step < 60e3;
  const head = [
    section("Cell",
      facts([
        ["Window", `${fmtRange(s.start, s.end, seconds)} (${fmtDuration(g.step)})`],
        ["Value", h("span", {}, h("strong", { text: fmtValue(series, s.value) }), ` ${isBytes(series) ? "" : UNITS[series]}`)],
        ["Flags", s.flags ? h("span", {}, flagPills(s.flags, cell.c)) : "none"],
        ["Key range", keyRange(row)],
        ["Adapter", row.label || "—"],
      ])),
    section("Routes behind this row",
      facts([
        ["Routes", routeList(row)],
        ["Route count", String(row.route_count || members.length || 1)],
        ...(row.lineage_id ? [["Lineage", row.lineage_id]] : []),
      ]),
      members.length
        ? h("div", { class: "kv-members" },
          h("p", {
            class: "caption",
            text: `An aggregate of ${members.length} rows joined by the row budget; pick one for its detail:`,
          }),
          h("ul", {}, members.map((m) =>
            h("li", {}, h("button", { type: "button", class: "kv-link", text: m, onclick: () => loadBucket(m, cell) })))))
        : null),
  ];
  const detail = h("div", { id: "kv-bucket-detail" });
  el.drawerBody.replaceChildren(...head.filter(Boolean), detail);
  el.drawer.focus({ preventScroll: true });
  if (members.length) {
    detail.replaceChildren(section("This row over the window", sparkline(rowSeries(cell.r), cell.c)));
  } else {
    loadBucket(row.bucket_id, cell);
  }
}

function rowSeries(r) {
  const g = K.grid;
  return { times: g.times, values: Array.from(g.values.subarray(r * g.C, (r + 1) * g.C)) };
}

async function loadBucket(bucketId, cell) {
  const g = K.grid;
  const detail = $("kv-bucket-detail");
  detail.replaceChildren(h("p", { class: "kv-loading", text: `Loading ${bucketId} from the history…` }));
  if (drawerRequest) drawerRequest.abort();
  drawerRequest = new AbortController();
  const q = new URLSearchParams({
    series: K.state.series,
    from: String(Math.max(0, g.times[0] - g.step)),
    to: String(g.times[g.C - 1] + 1),
  });
  let doc;
  try {
    const resp = await fetch(`${cfg.bucketUrl}${encodeURIComponent(bucketId)}?${q}`, { signal: drawerRequest.signal });
    doc = await resp.json();
    if (!resp.ok) throw new ApiFailure(resp.status, doc.message || resp.statusText);
  } catch (err) {
    if (err.name === "AbortError") return;
    detail.replaceChildren(h("p", { class: "banner bad", text: `Cell detail unavailable: ${err.message}` }));
    return;
  }
  const [start, end] = g.window(cell.c);
  const mine = doc.contributions.filter((c) => c.column_unix_ms > start && c.column_unix_ms <= end);
  const series = K.state.series;
  const prefix = doc.bucket.start_text === "-inf" ? "" : doc.bucket.start_text;
  const routes = h("span", {}, (doc.bucket.route_ids || []).map((id, i) => [i ? ", " : "",
    h("a", { href: `${cfg.routesUrl}?prefix=${encodeURIComponent(prefix)}`, text: String(id) })]));
  const groups = (doc.groups || []).map((gr) => h("tr", { dataset: { group: String(gr.raft_group_id) } },
    h("td", { class: "num", text: String(gr.raft_group_id) }),
    h("td", {}, gr.leader_node_id ? h("span", { text: gr.leader_node_id }) : h("span", { class: "pill bad", text: "no leader" })),
    h("td", { class: "num", text: String(gr.leader_term) }),
    h("td", {}, h("a", { href: `${cfg.routesUrl}?group=${gr.raft_group_id}`, text: "routes" }), " · ",
      h("a", { href: cfg.raftUrl, text: "Raft" }))));
  const failed = (doc.nodes || []).filter((n) => !n.ok);
  fill(detail,
    section("Raft group and leader",
      groups.length
        ? h("table", { class: "data", id: "kv-detail-groups" },
          tableHead(["Group", "Leader now", "Term", "Pages"], [0, 2]), h("tbody", {}, groups))
        : h("p", { class: "caption", text: "No node stamped a Raft group on this row's cells (aggregates and empty cells carry none)." }),
      h("p", { class: "caption" }, "Routes: ", routes)),
    section(`Each node's contribution to this cell (${mine.length})`,
      mine.length
        ? h("table", { class: "data", id: "kv-contributions" },
          tableHead(["Node", "Value", "Group", "Term", "Node's column"], [1, 2, 3]),
          h("tbody", {}, mine.map((c) => h("tr", { dataset: { node: c.node } },
            h("td", {}, c.node, c.soft ? h("span", { class: "kv-flag soft", text: "soft" }) : null),
            h("td", { class: "num", text: fmtValue(series, c.value) }),
            h("td", { class: "num", text: c.raft_group_id ? String(c.raft_group_id) : "—" }),
            h("td", { class: "num", text: c.leader_term ? String(c.leader_term) : "—" }),
            h("td", { text: `${fmtClock(c.node_column_unix_ms, true)} ${zoneName()}` })))))
        : h("p", {
          class: "caption",
          text: doc.per_node === false
            ? "Each node's figures are kept at the nodes' step only (the finest tier); this window shows merged values."
            : "No node reported anything for this cell.",
        })),
    section("This row over the window", sparkline({ times: doc.column_unix_ms, values: doc.bucket.values }, null, end)),
    Object.keys(doc.per_adapter || {}).length
      ? section("Per adapter (nodes that serve GetRouteDetail)", h("table", { class: "data" },
        h("thead", {}, h("tr", {}, ["Node", "Adapter", "Operation", "Requests", "p99"].map((t) => h("th", { text: t })))),
        h("tbody", {}, Object.entries(doc.per_adapter).flatMap(([node, list]) => list.map((a) => h("tr", {},
          h("td", { text: node }), h("td", { text: a.adapter }), h("td", { text: a.operation }),
          h("td", { class: "num", text: nf.format(a.requests) }), h("td", { class: "num", text: `${(a.p99_ns / 1e6).toFixed(2)} ms` })))))))
      : null,
    failed.length
      ? h("p", {
        class: "banner bad compact",
        text: `The collector reaches ${doc.nodes.length - failed.length} of ${doc.nodes.length} nodes: ` +
          failed.map((n) => `${n.node}: ${diagnosis(n)}`).join("; "),
      })
      : null,
  );
}

/** replaceChildren without the null placeholders of optional parts. */
function fill(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

/** A small bar chart of one row over time; the pinned column highlighted. */
function sparkline({ times, values }, markIndex, markTime) {
  const width = 400;
  const height = 90;
  const canvas = h("canvas", { width: width * 2, height: height * 2, class: "kv-spark", role: "img" });
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const series = K.state.series;
  const max = Math.max(1, ...values);
  const total = values.reduce((a, b) => a + b, 0);
  canvas.setAttribute("aria-label", `${values.length} columns, total ${fmtValue(series, total)}, peak ${fmtValue(series, max)}`);
  const ctx = canvas.getContext("2d");
  ctx.scale(2, 2);
  ctx.fillStyle = "#f4f6fa";
  ctx.fillRect(0, 0, width, height);
  const n = Math.max(1, values.length);
  const bw = (width - 2) / n;
  values.forEach((v, i) => {
    const hit = markIndex === i || (markTime !== undefined && times[i] === markTime);
    ctx.fillStyle = hit ? "#e8590c" : "#5b7fd6";
    const bh = (v / max) * (height - 16);
    ctx.fillRect(1 + i * bw, height - 2 - bh, Math.max(1, bw - (bw > 3 ? 1 : 0)), bh);
  });
  ctx.fillStyle = "#5b6777";
  ctx.font = '10px system-ui, "DejaVu Sans", sans-serif';
  ctx.fillText(`peak ${fmtCompact(series, max)}`, 4, 10);
  return h("div", { class: "kv-spark-wrap" }, canvas,
    h("p", { class: "caption", text: `${values.length} columns · total ${fmtValue(series, total)} · peak ${fmtValue(series, max)}` }));
}

el.drawer.addEventListener("keydown", (e) => {
  if (e.key === "Escape") {
    e.preventDefault();
    unpin();
    el.canvas.focus();
  }
});
$("kv-drawer-close").addEventListener("click", () => {
  unpin();
  el.canvas.focus();
});

// ---------------------------------------------------------------- banner and status

function renderBanner(nodes, warnings = []) {
  const failed = nodes.filter((n) => n.ok === false || n.failed);
  const parts = [];
  if (failed.length) {
    parts.push(h("div", { class: "kv-banner-bad", dataset: { testid: "kv-node-banner" } },
      h("strong", { text: `${nodes.length - failed.length} of ${nodes.length} nodes responded.` }),
      " Cells they would have counted are marked unknown.",
      h("ul", {}, failed.map((n) => h("li", { dataset: { node: n.node, cause: n.cause || "" }, title: n.error || "" },
        h("strong", { text: n.node }),
        n.address && n.address !== n.node ? h("code", { text: ` ${n.address}` }) : null,
        `: ${diagnosis(n)}`, n.code ? h("span", { class: "code", text: n.code }) : null)))));
  }
  for (const w of warnings) parts.push(h("div", { class: "kv-banner-warn", text: w }));
  el.banner.replaceChildren(...parts);
  el.banner.hidden = parts.length === 0;
}

/** A failed node as the cluster pages word it (cluster/diagnose.py: cause and next step);
 * the node's raw error text only where there is no diagnosis (a late column). */
function diagnosis(n) {
  if (n.summary) return n.next_step ? `${n.summary} (${n.next_step})` : n.summary;
  return n.error || "no answer";
}

/** What the page should say about the collector (the store's writer), from the API. */
function collectorWarnings() {
  const c = K.collector;
  if (!K.grid) return [];
  if (!c) return K.storeMessage ? [`History: ${K.storeMessage}.`] : [];
  const out = [];
  const step = c.step_ms || K.grid.step;
  if (c.age_ms !== null && c.age_ms > Math.max(3 * step, 30e3)) {
    out.push(`The collector last wrote ${fmtDuration(c.age_ms)} ago${c.holder ? ` (${c.holder})` : ""}: recent history may be missing.`);
  }
  if (c.last_error) out.push(`Collector: ${c.last_error}`);
  return out;
}

/** Live node status -> the banner's shape (node statuses). */
function liveNodes(summary) {
  const failed = new Map(summary.failed.map((f) => [f.node, f]));
  const late = (summary.late || []).filter((n) => !failed.has(n));
  const list = [...failed.values()].map((f) => ({ ...f, ok: false }));
  const error = "late: its column had not arrived a step after the boundary";
  for (const n of late) list.push({ node: n, ok: false, error, code: "LATE" });
  const ok = Math.max(0, summary.total - list.length);
  return [...list, ...Array.from({ length: ok }, (_, i) => ({ node: `ok${i}`, ok: true }))];
}

function renderSummary() {
  const g = K.grid;
  if (!g) return;
  const s = K.state;
  const first = g.C ? g.window(0)[0] : null;
  const last = g.C ? g.times[g.C - 1] : null;
  const seconds = g.step < 60e3;
  const nodes = K.nodes || [];
  const ok = nodes.filter((n) => n.ok).length;
  el.summary.replaceChildren(
    h("strong", { text: `${g.R} × ${g.C}` }), ` cells · ${fmtDuration(g.step)} columns`,
    g.C ? ` · ${fmtRange(first, last, seconds)}` : "",
    !nodes.length && !K.collector && K.storeMessage
      ? h("span", { class: "kv-bad", text: " · no collector yet" })
      : h("span", { class: nodes.length && ok < nodes.length ? "kv-bad" : "kv-ok", text: ` · ${ok} of ${nodes.length} nodes` }),
    K.collector && K.collector.age_ms !== null
      ? h("span", { dataset: { testid: "kv-collector-age" }, text: ` · collector ${fmtDuration(Math.max(1000, Math.round((K.collector.age_ms + Date.now() - K.collectorAt) / 1000) * 1000))} ago` })
      : "",
  );
  const zoom = [];
  if (s.range === "custom") zoom.push("fixed window");
  if (s.startKey || s.endKey) {
    const r0 = g.rows[0];
    const r1 = g.rows[g.R - 1];
    zoom.push(r0 ? `keys [${r0.start_text}, ${r1.end_text})` : "key range");
  }
  el.zoomLabel.hidden = zoom.length === 0;
  el.zoomLabel.textContent = zoom.length ? `zoomed: ${zoom.join(" · ")}` : "";
}

function setLivePill(state, text) {
  el.livePill.dataset.state = state;
  el.livePill.textContent = text;
}

let noticeTimer = 0;
function notice(text) {
  el.notice.textContent = text;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { el.notice.textContent = ""; }, 8000);
}

function showMessage(text) {
  el.message.hidden = !text;
  el.message.textContent = text || "";
}

// ---------------------------------------------------------------- loading a view

/** Columns the map is wide (one per CSS pixel) when the view does not fix them. */
const autoCols = () => Math.max(60, Math.min(MAX_COLS, Math.floor(K.plot.w)));

const matrixParams = (s, overrides = {}) => window.KeyvizState.matrixParams(s, autoCols(), K.liveStep, overrides);

async function fetchMatrix(params, signal) {
  // The request keyviz-state.js sent at page load, if it asked for this matrix.
  const first = window.KeyvizState.takeFirst();
  let request;
  K.prof.early = Boolean(first && sameMatrix(first.params, params));
  if (K.prof.early) {
    signal?.addEventListener("abort", () => first.controller.abort());
    request = first.response;
  } else {
    first?.controller.abort();
    request = fetch(`${cfg.matrixUrl}?${params}`, { signal, headers: { Accept: "application/octet-stream" } });
  }
  const resp = await request;
  if (!resp.ok) {
    let message = resp.statusText;
    try { message = (await resp.json()).message || message; } catch { /* not JSON */ }
    throw new ApiFailure(resp.status, message);
  }
  const body = await resp.arrayBuffer();
  K.prof.received = performance.now();
  K.prof.bytes = body.byteLength;
  const decoded = decodeMatrix(body);
  K.prof.decoded = performance.now();
  return decoded;
}

/** Fetch and draw the view `K.state` describes; start or stop live accordingly. */
async function load() {
  const s = K.state;
  syncControls();
  if (K.loading) K.loading.abort();
  const controller = (K.loading = new AbortController());
  el.canvas.dataset.state = "loading";
  el.canvas.setAttribute("aria-busy", "true");
  K.liveQueue = [];
  const started = performance.now();
  let decoded;
  try {
    decoded = await fetchMatrix(matrixParams(s), controller.signal);
  } catch (err) {
    if (err.name === "AbortError") return;
    if (controller === K.loading) K.loading = null;
    el.canvas.dataset.state = "error";
    el.canvas.removeAttribute("aria-busy");
    showMessage(`The matrix could not be loaded: ${err.message}`);
    el.summary.textContent = "No data";
    renderBanner([]);
    if (liveWanted(s)) {
      // Keep trying by itself (the portal restarting, the database back): never green
      // on "No data".
      const delay = Math.min(15000, 1000 * 2 ** K.loadAttempt++) * (0.8 + 0.4 * Math.random());
      setLivePill("down", `no data · retrying in ${Math.ceil(delay / 1000)} s`);
      clearTimeout(K.loadRetry);
      K.loadRetry = setTimeout(() => { if (!K.loading) load(); }, delay);
      live.start(s.series);
    }
    return;
  }
  if (controller !== K.loading) return;
  K.loading = null;
  K.loadAttempt = 0;
  clearTimeout(K.loadRetry);
  const fetched = performance.now();
  setGrid(new Grid(decoded, s.range === "custom" ? null : RANGES[s.range]));
  K.nodes = decoded.header.nodes;
  K.missing = missingMap(decoded.header.missing_nodes);
  K.collector = decoded.header.collector;
  K.storeMessage = decoded.header.message || "";
  K.collectorAt = Date.now();
  renderBanner(K.nodes, [...K.grid.warnings, ...collectorWarnings()]);
  renderSummary();
  if (K.grid.C === 0) requestDraw(); // the store's message, if any
  el.canvas.removeAttribute("aria-busy");
  const p = K.prof;
  K.timing = {
    fetchMs: p.received - started, // request sent -> every byte in
    decodeMs: p.decoded - p.received,
    colourMs: p.painted - p.decoded, // bytes, lookup table, off-screen canvas
    drawMs: p.drawn - p.painted,
    renderMs: performance.now() - p.received, // bytes in -> on screen, all of it
    bytes: p.bytes,
    early: p.early, // the request keyviz-state.js sent from <head>
  };
  // Columns that arrived while the matrix was on its way.
  for (const msg of K.liveQueue.splice(0)) applyLive(msg);
  // A coarse tier (7 d, 30 d) ends at its last compacted column: bring in the newer
  // minutes at the nodes' step, so live continues from now rather than leaving a hole.
  if (liveWanted(s) && decoded.header.tier > 0 && K.grid.C) fillGap();
  if (liveWanted(s)) live.start(s.series);
  else live.stop(s.range === "custom" ? "live off (fixed window)" : "live off");
}

/** {"<column ms>": [nodes]} of the matrix API -> Map. */
function missingMap(doc) {
  return new Map(Object.entries(doc || {}).map(([t, nodes]) => [Number(t), nodes]));
}

function setGrid(grid) {
  K.grid = grid;
  K.vmax = grid.maxValue();
  K.view = fullView();
  K.hover = K.pinned = K.cursor = null;
  el.tooltip.hidden = true;
  closeDrawer();
  remapAll();
  K.prof.painted = performance.now();
  K.totals.key = "";
  draw();
  K.prof.drawn = performance.now();
}

function remapAll() {
  mapBytes(K.grid);
  paintAll();
  computeMarks();
  drawScale();
}

/** Put the controls in line with the state. */
function syncControls() {
  const s = K.state;
  for (const input of el.controls.elements.series) input.checked = input.value === s.series;
  for (const input of el.controls.elements.range) input.checked = input.value === s.range;
  el.custom.hidden = s.range !== "custom";
  if (s.range === "custom") {
    el.from.value = toInput(s.from);
    el.to.value = toInput(s.to);
  }
  el.rows.value = String(s.rows);
  if (!Array.from(el.rows.options).some((o) => o.value === String(s.rows))) {
    el.rows.append(h("option", { value: String(s.rows), text: String(s.rows) }));
    el.rows.value = String(s.rows);
  }
  el.brightness.value = String(s.brightness);
  el.brightness.setAttribute("aria-valuetext", `${s.brightness.toFixed(2)}×`);
  el.live.checked = liveWanted(s);
  el.live.disabled = s.range === "custom";
  el.live.parentElement.title = s.range === "custom" ? "Live follows the latest window; pick a preset window" : "";
  el.back.disabled = K.pushed <= 0;
  el.reset.disabled = !zoomed(s);
  const api = new URLSearchParams(matrixParams(s));
  api.set("format", "json");
  el.apiLink.href = `${cfg.matrixUrl}?${api}`;
}

/** Change the view: the URL first (push for zooms, replace for settings), then load. */
function navigate(next, push = false) {
  K.state = next;
  const url = stateQuery(next);
  if (push) {
    history.pushState({ keyviz: true }, "", url);
    K.pushed++;
  } else history.replaceState({ keyviz: true }, "", url);
  load();
}

window.addEventListener("popstate", () => {
  K.pushed = Math.max(0, K.pushed - 1);
  K.state = readState(location.search);
  load();
});

// ---------------------------------------------------------------- controls

el.controls.addEventListener("change", (e) => {
  const t = e.target;
  const s = { ...K.state };
  if (t.name === "series") navigate({ ...s, series: t.value });
  else if (t.name === "range") {
    if (t.value === "custom") {
      // Start the custom window from what is on screen.
      const g = K.grid;
      const to = g && g.C ? g.times[g.C - 1] : Date.now();
      const from = g && g.C ? g.window(0)[0] : to - RANGES["1h"];
      K.state = { ...s, range: "custom", from, to, live: false };
      syncControls();
    } else navigate({ ...s, range: t.value, from: null, to: null, live: s.live || s.range === "custom" });
  } else if (t === el.rows) navigate({ ...s, rows: Number(t.value) });
  else if (t === el.live) navigate({ ...s, live: t.checked });
  else if (t === el.tz) setZone(t.value === "local");
});

/** Switch between UTC and local time, remember it, and redraw every time shown. */
function setZone(local) {
  useLocalTime(local);
  document.cookie = preferenceCookie(local);
  syncZone();
  if (K.state.range === "custom") syncControls();
  if (K.grid) {
    draw();
    renderSummary();
    renderTotalsText(visibleTotals());
  }
}

function syncZone() {
  el.tz.value = prefersLocal(document.cookie) ? "local" : "utc";
  el.tzLabels.forEach((n) => (n.textContent = zoneName()));
}
syncZone();

el.controls.addEventListener("submit", (e) => {
  e.preventDefault();
  const from = fromInput(el.from.value);
  const to = fromInput(el.to.value);
  if (!(from < to)) {
    notice("Custom window: from must be before to.");
    return;
  }
  navigate({ ...K.state, range: "custom", from, to, live: false }, true);
});

el.brightness.addEventListener("input", () => {
  const b = Number(el.brightness.value);
  K.state = { ...K.state, brightness: b };
  el.brightness.setAttribute("aria-valuetext", `${b.toFixed(2)}×`);
  if (K.grid) {
    remapAll();
    requestDraw();
  }
  clearTimeout(K.brightnessTimer);
  K.brightnessTimer = setTimeout(() => history.replaceState({ keyviz: true }, "", stateQuery(K.state)), 300);
});

el.back.addEventListener("click", () => { if (K.pushed > 0) history.back(); });
el.reset.addEventListener("click", () => {
  const s = K.state;
  navigate({ ...s, range: s.range === "custom" ? "1h" : s.range, from: null, to: null, startKey: "", endKey: "", live: true }, true);
});

// ---------------------------------------------------------------- export

function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

const exportName = (ext) => {
  const g = K.grid;
  const stamp = g && g.C ? new Date(g.times[g.C - 1]).toISOString().replace(/[:]/g, "-").replace(/\..*/, "") : "empty";
  return `keyviz-${K.state.series}-${stamp}.${ext}`;
};

$("kv-export-png").addEventListener("click", () => {
  el.canvas.toBlob((blob) => blob && download(blob, exportName("png")), "image/png");
});

function csvCell(text) {
  return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

$("kv-export-csv").addEventListener("click", () => {
  const g = K.grid;
  if (!g) return;
  const lines = [["bucket_id", "start", "end", "label", ...g.times.map((t) => new Date(t).toISOString())].join(",")];
  g.rows.forEach((row, r) => {
    // An unknown cell is empty, not 0 (and not the part the reporting nodes counted).
    const cells = Array.from(g.values.subarray(r * g.C, (r + 1) * g.C), (v, c) =>
      g.flags[r * g.C + c] & FLAG.unknown ? "" : String(v));
    lines.push([csvCell(row.bucket_id), csvCell(row.start_text), csvCell(row.end_text), csvCell(row.label || ""), ...cells].join(","));
  });
  download(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }), exportName("csv"));
});

$("kv-export-json").addEventListener("click", () => {
  const g = K.grid;
  if (!g) return;
  // The same shape as GET /api/keyviz/matrix?format=json.
  const setColumns = (r, bit) => {
    const out = [];
    for (let c = 0; c < g.C; c++) if (g.flags[r * g.C + c] & bit) out.push(c);
    return out;
  };
  const doc = {
    series: g.series,
    step_ms: g.step,
    column_unix_ms: g.times,
    rows: g.rows.map((row, r) => {
      const { _start, live: _live, ...meta } = row;
      return {
        ...meta,
        // Unknown cells are null here (the API sends the reporting nodes' part and lists
        // them in "unknown"): an export must not read as zero traffic.
        values: Array.from(g.values.subarray(r * g.C, (r + 1) * g.C), (v, c) =>
          g.flags[r * g.C + c] & FLAG.unknown ? null : v),
        soft: setColumns(r, FLAG.soft),
        conflict: setColumns(r, FLAG.conflict),
        degraded: setColumns(r, FLAG.degraded),
        unknown: setColumns(r, FLAG.unknown),
      };
    }),
    warnings: g.warnings,
    nodes: K.nodes || [],
    missing_nodes: Object.fromEntries(K.missing),
  };
  download(new Blob([JSON.stringify(doc)], { type: "application/json" }), exportName("json"));
});

// ---------------------------------------------------------------- live

/**
 * The WebSocket to /api/stream: subscribe, acknowledge, reconnect with backoff.
 * Handlers are page functions; this class only keeps the connection.
 */
class LiveStream {
  constructor(url) {
    this.url = url;
    this.ws = null;
    this.series = null; // wanted
    this.subscribed = null;
    this.attempt = 0;
    this.retryTimer = 0;
    this.everOpened = false;
  }

  start(series) {
    this.series = series;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.onReady(false);
    else if (!this.ws || this.ws.readyState > WebSocket.OPEN) this.open();
  }

  stop(label = "live off") {
    this.series = null;
    clearTimeout(this.retryTimer);
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.subscribed) this.send({ type: "unsubscribe" });
    this.subscribed = null;
    setLivePill("off", label);
  }

  open() {
    clearTimeout(this.retryTimer);
    setLivePill("connecting", this.everOpened ? "reconnecting…" : "connecting…");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = (this.ws = new WebSocket(`${scheme}//${location.host}${this.url}`));
    ws.addEventListener("open", () => {
      const again = this.everOpened;
      this.everOpened = true;
      this.attempt = 0;
      if (this.series) this.onReady(again);
    });
    ws.addEventListener("message", (e) => {
      let msg;
      try { msg = JSON.parse(e.data); } catch { return; }
      onLiveMessage(msg);
    });
    ws.addEventListener("close", () => {
      if (this.ws !== ws) return;
      this.subscribed = null;
      if (!this.series) return;
      // Backoff: 0.5 s, 1 s, 2 s ... 15 s, with jitter so tabs do not reconnect in step.
      const delay = Math.min(15000, 500 * 2 ** this.attempt) * (0.8 + 0.4 * Math.random());
      this.attempt++;
      setLivePill("down", `reconnecting in ${Math.ceil(delay / 1000)} s`);
      this.retryTimer = setTimeout(() => this.open(), delay);
    });
  }

  /** Connected: after a reconnect, fill the gap from the matrix API first. */
  async onReady(reconnected) {
    if (reconnected && !K.grid) {
      // No matrix yet (the portal was down when the page loaded): load() subscribes.
      clearTimeout(K.loadRetry);
      if (!K.loading) load();
      return;
    }
    if (reconnected && K.grid.C) await fillGap();
    if (this.series) this.subscribe(this.series);
  }

  subscribe(series) {
    this.subscribed = series;
    this.send({ type: "subscribe", series, format: "json" });
  }

  ack(t) {
    if (this.subscribed) this.send({ type: "ack", column_unix_ms: t });
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }
}

const live = new LiveStream(cfg.streamUrl);

function onLiveMessage(msg) {
  switch (msg.type) {
    case "subscribed":
      if (msg.series !== K.state.series) return;
      if (msg.step_ms) {
        const misaligned = K.grid && K.grid.C && K.grid.step % msg.step_ms !== 0;
        K.liveStep = msg.step_ms;
        if (misaligned && !K.loading) {
          // The matrix was merged on a step inferred from too few columns: redo it on
          // the nodes' step, so live columns line up with it.
          load();
          return;
        }
      }
      K.lastLiveAt = Date.now();
      if (msg.nodes) K.liveStatus = msg.nodes;
      if (!K.grid) {
        // Subscribed, but the matrix could not be loaded: not live until it is.
        setLivePill("connecting", "live · waiting for data"); // load()'s retry timer runs
        return;
      }
      setLivePill("live", `live${msg.step_ms ? ` · ${fmtDuration(msg.step_ms)} steps` : ""}`);
      break;
    case "column":
    case "amend":
      if (msg.series !== K.state.series || !live.subscribed) return;
      K.lastLiveAt = Date.now();
      if (K.loading || K.filling) K.liveQueue.push(msg);
      else applyLive(msg);
      break;
    case "status":
      if (msg.series === K.state.series) {
        K.nodes = liveNodes(msg.nodes);
        renderBanner(K.nodes);
        renderSummary();
      }
      break;
    case "route_transition":
      notice(`Route ${msg.parent_route_id} → ${msg.child_route_ids.join(", ")} (${msg.child_route_ids.length > 1 ? "split" : "merge"})`);
      break;
    case "resync":
      // This tab fell behind (hidden, or too slow): refetch, then subscribe again.
      notice("Live view caught up from the matrix API after falling behind.");
      resync();
      break;
    case "error":
      notice(`Live stream: ${msg.message}`);
      break;
    default:
      break;
  }
}

async function resync() {
  if (K.grid && K.grid.C) await fillGap();
  else await load();
  if (live.series) live.subscribe(live.series);
}

/** Live, as the pill says it: green only while columns arrive and there is a matrix. */
function livePillNow() {
  if (!live.subscribed) return;
  if (!K.grid) {
    setLivePill("connecting", "live · waiting for data");
    return;
  }
  const step = K.liveStep || K.grid.step;
  const quiet = Date.now() - K.lastLiveAt;
  if (K.lastLiveAt && quiet > Math.max(10 * step, 60e3) && live.ws) {
    // A socket that says nothing for this long may be half-dead (a proxy or the network
    // dropped it silently): reconnect, which refetches the gap and subscribes again.
    K.lastLiveAt = Date.now();
    live.ws.close();
  } else if (K.lastLiveAt && quiet > Math.max(3 * step, 20e3)) {
    setLivePill("connecting", `live · no column for ${fmtDuration(Math.round(quiet / 1000) * 1000)}`);
  } else if (el.livePill.dataset.state !== "live") {
    setLivePill("live", `live${K.liveStep ? ` · ${fmtDuration(K.liveStep)} steps` : ""}`);
  }
}
setInterval(livePillNow, 2000);

/** A queued or arriving live message: a new column, or an amendment of one. */
function applyLive(msg, filled = false) {
  if (msg.type === "amend") applyAmend(msg);
  else applyLiveColumn(msg, filled);
  livePillNow();
}

/** Remember who did not report a column (the tooltip names them on unknown cells). */
function noteMissing(t, nodes) {
  if (nodes && nodes.length) K.missing.set(t, nodes.slice());
  else K.missing.delete(t);
}

/** The nodes a live message says did not report its column. */
function liveMissing(msg) {
  if (Array.isArray(msg.missing)) return msg.missing;
  const failed = (msg.nodes && msg.nodes.failed) || [];
  return failed.map((f) => f.node);
}

/** Add the rows a message names that the page lacks (key order); false: no metadata. */
function insertLiveRows(g, msg) {
  const meta = new Map((msg.new_rows || []).map((r) => [r.bucket_id, r]));
  let inserted = 0;
  for (const cell of msg.rows) {
    if (g.index.has(cell.bucket_id)) continue;
    const m = meta.get(cell.bucket_id);
    if (!m) return -1;
    g.insertRow(m);
    inserted++;
  }
  return inserted;
}

/**
 * An amendment (late node data, a node back with its columns): it replaces the column of
 * the same time. A column made of several steps (a long window) is refetched from the
 * matrix API, since the page cannot take the old part of one step out of it.
 */
function applyAmend(msg) {
  const g = K.grid;
  if (!g) return;
  const t = msg.column_unix_ms;
  const c = g.times.indexOf(t);
  const wide = K.liveStep && g.step > K.liveStep;
  if (wide) {
    refetchTail();
    return;
  }
  if (c < 0) {
    // Newer than the page's newest column: it is simply the next column.
    if (!g.C || t > g.times[g.C - 1]) applyLiveColumn({ ...msg, type: "column" });
    return;
  }
  const wasFull = !magnified();
  const inserted = insertLiveRows(g, msg);
  if (inserted < 0) {
    load();
    return;
  }
  const vals = new Float64Array(g.R);
  const flgs = new Uint8Array(g.R);
  for (const cell of msg.rows) {
    const r = g.index.get(cell.bucket_id);
    vals[r] += cell.value;
    flgs[r] |= cell.flags || 0;
  }
  g.hold(vals);
  const C = g.C;
  let colMax = 0;
  for (let r = 0; r < g.R; r++) {
    g.values[r * C + c] = vals[r];
    g.flags[r * C + c] = flgs[r];
    g.flagBits |= flgs[r];
    colMax = Math.max(colMax, vals[r]);
  }
  g.version++;
  noteMissing(t, liveMissing(msg));
  if (inserted || colMax > K.vmax) {
    K.vmax = g.maxValue();
    remapAll();
  } else {
    mapBytes(g, c, g.values.length, C);
    paintColumn(c);
    computeMarks();
  }
  K.view = wasFull ? fullView() : clampView(K.view);
  K.totals.key = "";
  renderSummary();
  K.amended = (K.amended || 0) + 1;
  K.pendingAck = g.times[C - 1];
  requestDraw();
}

/** Refetch the newest columns of a view whose columns span several steps (amendments). */
let refetchTimer = 0;
function refetchTail() {
  clearTimeout(refetchTimer);
  refetchTimer = setTimeout(() => {
    if (!K.loading) load();
  }, 2000);
}

/**
 * Fold one column message into the grid: rows it names that the page does not
 * have are inserted in key order with the metadata the server sent. `filled`:
 * a gap before it was already filled as far as the API could (do not ask again).
 */
function applyLiveColumn(msg, filled = false) {
  const g = K.grid;
  if (!g) return;
  const t = msg.column_unix_ms;
  if (msg.step_ms) K.liveStep = msg.step_ms;
  K.lastEmitted = msg.emitted_unix_ms;
  const last = g.C ? g.times[g.C - 1] : null;
  // A hole (a reconnect, a stall upstream): fill it from the matrix API first.
  if (!filled && last !== null && K.liveStep && t - last > 1.5 * Math.max(K.liveStep, g.step)) {
    K.liveQueue.push(msg);
    fillGap();
    return;
  }
  // An empty matrix (nothing stored yet) has no step of its own: take the live one.
  if (!g.C && K.liveStep) g.step = K.liveStep;
  const wasFull = !magnified();
  const inserted = insertLiveRows(g, msg);
  if (inserted < 0) {
    // A row the page has no metadata for: the view is stale; start over.
    load();
    return;
  }
  noteMissing(t, liveMissing(msg));
  const vals = new Float64Array(g.R);
  const flgs = new Uint8Array(g.R);
  for (const cell of msg.rows) {
    const r = g.index.get(cell.bucket_id);
    vals[r] += cell.value;
    flgs[r] |= cell.flags || 0;
  }
  const change = g.addColumn(t, vals, flgs, K.liveStep);
  if (msg.nodes) {
    K.nodes = liveNodes(msg.nodes);
    renderBanner(K.nodes, g.warnings);
  }
  if (change === "none") {
    live.ack(t);
    return;
  }
  if (inserted) notice(`${inserted} new row${inserted > 1 ? "s" : ""} (a split or a new route)`);
  // New rows change the shape: recolour everything rather than one column.
  afterChange(inserted ? "grow" : change, wasFull);
  K.pendingAck = t;
  requestDraw();
}

/** Recolour what changed; a magnified view keeps its zoom, a full one stays full. */
function afterChange(change, wasFull) {
  const g = K.grid;
  let colMax = 0;
  const c = g.C - 1;
  for (let r = 0; r < g.R; r++) colMax = Math.max(colMax, g.values[r * g.C + c]);
  if (change === "grow" || colMax > K.vmax) {
    if (colMax > K.vmax || change === "grow") K.vmax = g.maxValue();
    remapAll();
  } else {
    mapBytes(g, c, g.values.length, g.C);
    if (change === "shift") paintShift();
    else paintColumn(c);
    computeMarks();
  }
  if (wasFull) K.view = fullView();
  else K.view = clampView(K.view);
  renderSummary();
}

/**
 * Columns after the newest one the page has, from the matrix API at full
 * resolution (1024 rows, no column budget), folded in like live columns.
 */
async function fillGap() {
  const g = K.grid;
  if (!g || K.filling) return;
  K.filling = true;
  try {
    const last = g.times[g.C - 1];
    const step = K.liveStep || g.step;
    const wasFull = !magnified();
    // Ask from a few steps back, in case the newest columns were amended meanwhile.
    // Columns the page already has are skipped (or replaced by the store's copy).
    const params = matrixParams(K.state, {
      from: Math.max(0, last - 4 * step),
      to: null,
      rows: MAX_ROWS,
      cols: MAX_COLS,
      start_key: null,
      end_key: null,
    });
    let gap;
    try {
      gap = await fetchMatrix(params);
    } catch (err) {
      if (err.status === 400 || err.status === 503) return; // nothing new yet / nobody answered
      throw err;
    }
    const R = gap.header.n_rows;
    const C = gap.header.n_cols;
    // Map the gap's rows onto the page's; an aggregate must land in one page row.
    const target = new Int32Array(R);
    for (let i = 0; i < R; i++) {
      const row = gap.header.rows[i];
      const ids = row.member_bucket_ids && row.member_bucket_ids.length ? row.member_bucket_ids : [row.bucket_id];
      const hits = new Set(ids.map((id) => g.index.get(id)));
      if (hits.size === 1 && !hits.has(undefined)) target[i] = [...hits][0];
      else if (!row.aggregate) target[i] = -1; // new row: insert below
      else { load(); return; }
    }
    for (let i = 0; i < R; i++) {
      if (target[i] === -1) g.insertRow(gap.header.rows[i]);
    }
    for (let i = 0; i < R; i++) {
      const row = gap.header.rows[i];
      target[i] = g.index.get(row.bucket_id) ?? g.index.get(row.member_bucket_ids?.[0]);
    }
    for (const [t, nodes] of missingMap(gap.header.missing_nodes)) K.missing.set(t, nodes);
    let change = "none";
    for (let c = 0; c < C; c++) {
      const vals = new Float64Array(g.R);
      const flgs = new Uint8Array(g.R);
      for (let i = 0; i < R; i++) {
        vals[target[i]] += gap.values[i * C + c];
        flgs[target[i]] |= gap.flags[i * C + c];
      }
      const t = gap.times[c];
      // Columns of the nodes' step fold into a coarser grid (a 7 d view's 15 min columns).
      const gapStep = gap.header.step_ms;
      if (g.step % gapStep !== 0 || t > Date.now() + gapStep) continue; // not on this grid
      const did = g.addColumn(t, vals, flgs, K.liveStep || gapStep);
      if (did !== "none") change = change === "none" && did !== "grow" ? did : "grow";
    }
    if (change !== "none") {
      afterChange("grow", wasFull);
      requestDraw();
    }
  } catch (err) {
    notice(`Could not fill the live gap: ${err.message}`);
  } finally {
    K.filling = false;
    const queued = K.liveQueue.splice(0);
    for (const msg of queued) applyLive(msg, true);
  }
}

// ---------------------------------------------------------------- test and benchmark hooks

/** Read-only hooks for the browser tests and benchmarks (nothing on the page uses them). */
window.keyviz = {
  get state() { return { ...K.state }; },
  get ready() { return el.canvas.dataset.state === "ready"; },
  get firstPaintMs() { return K.firstPaintMs; },
  get timing() { return K.timing; },
  get liveDraws() { return K.liveDraws.slice(); },
  get amended() { return K.amended; }, // amendments applied (live)
  rowIds: () => (K.grid ? K.grid.rows.map((r) => r.bucket_id) : []),
  columns: () => (K.grid ? K.grid.times.slice() : []),
  timeTicks: () => (K.ticks || []).slice(), // the time axis' labels, as drawn
  value: (bucketId, t) => {
    const g = K.grid;
    const r = g.index.get(bucketId);
    const c = g.times.indexOf(t);
    return r === undefined || c < 0 ? null : g.values[r * g.C + c];
  },
  flags: (bucketId, t) => {
    const g = K.grid;
    const r = g.index.get(bucketId);
    const c = g.times.indexOf(t);
    return r === undefined || c < 0 ? null : g.flags[r * g.C + c];
  },
  /** The centre of a cell in viewport coordinates (for mouse events), or null. */
  cellCenter: (bucketId, t) => {
    const g = K.grid;
    if (!g) return null;
    const r = g.index.get(bucketId);
    const c = t === undefined ? g.C - 1 : g.times.indexOf(t);
    if (r === undefined || c < 0) return null;
    const box = el.canvas.getBoundingClientRect();
    const pt = centerOf({ r, c });
    return { x: box.left + pt.x, y: box.top + pt.y, r, c };
  },
  /** Close the live socket as a network failure would (reconnect tests). */
  dropConnection: () => live.ws && live.ws.close(),
  /** [r, g, b] drawn at the centre of a cell (pixel checks). */
  pixel: (bucketId, t) => {
    const at = window.keyviz.cellCenter(bucketId, t);
    if (!at) return null;
    const box = el.canvas.getBoundingClientRect();
    const dpr = K.css.dpr;
    const x = Math.floor((at.x - box.left) * dpr);
    const y = Math.floor((at.y - box.top) * dpr);
    const data = el.canvas.getContext("2d").getImageData(x, y, 1, 1).data;
    return [data[0], data[1], data[2]];
  },
};

// ---------------------------------------------------------------- boot

layout();
let resizeTimer = 0;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    layout();
    if (K.grid) draw();
  }, 120);
});
history.replaceState({ keyviz: true }, "", stateQuery(K.state));
draw();
load();
