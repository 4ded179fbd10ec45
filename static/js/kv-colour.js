// The colour scale of the Key Visualizer: values -> bytes on a log scale, bytes -> pixels
// through a lookup table, and the canvas theme read from CSS variables. Pure (the theme
// reader takes a lookup function, not the DOM), unit-tested in tests/js/kv-colour.test.mjs.

// The palette: zero is the background; 1..255 run from deep indigo through magenta and
// orange to pale yellow (perceptually ordered, like magma). The data scale, not a theme
// colour: it reads the same in a light and a dark page.
export const STOPS = [
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

/** Little-endian RGBA packed into a uint32 for ImageData's Uint32Array view. */
export const pack = (r, g, b) => ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;
export const unpack = (px) => [px & 255, (px >>> 8) & 255, (px >>> 16) & 255];

/** The 256-entry lookup tables: the palette (0 = `zero`) and its grey (degraded cells). */
export function buildLut(zero, stops = STOPS) {
  const lut = new Uint32Array(256);
  const grey = new Uint32Array(256);
  lut[0] = pack(...zero);
  grey[0] = pack(22, 24, 30);
  for (let i = 1; i < 256; i++) {
    const t = (i - 1) / 254;
    let k = 1;
    while (k < stops.length - 1 && stops[k][0] < t) k++;
    const [t0, r0, g0, b0] = stops[k - 1];
    const [t1, r1, g1, b1] = stops[k];
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

/**
 * Map values[from..to) (every `step`-th) to colour bytes on a log scale: 0 stays 0,
 * vmax / brightness saturates (255).
 */
export function mapBytes(values, bytes, vmax, brightness, from = 0, to = values.length, step = 1) {
  const k = (254 * brightness) / Math.log1p(Math.max(1, vmax));
  const byteOf = (v) => {
    const b = 1 + Math.floor(k * Math.log1p(v));
    return b > 255 ? 255 : b;
  };
  // Counts are mostly small integers: one logarithm per distinct value, then a lookup.
  const table = vmax < 1 << 16 && (to - from) / step > 4 * vmax ? new Uint8Array(vmax + 1) : null;
  if (table) for (let v = 1; v <= vmax; v++) table[v] = byteOf(v);
  for (let i = from; i < to; i += step) {
    const v = values[i];
    if (v <= 0) bytes[i] = 0;
    else if (table && v === (v | 0) && v <= vmax) bytes[i] = table[v];
    else bytes[i] = byteOf(v);
  }
}

/** The value a colour byte starts at (the inverse of mapBytes; legend and tests). */
export function valueOfByte(byte, vmax, brightness) {
  if (byte <= 0) return 0;
  const k = (254 * brightness) / Math.log1p(Math.max(1, vmax));
  return Math.expm1((byte - 1) / k);
}

/** The pixel of one cell: unknown-and-idle, degraded (grey) or the palette. */
export function pixelOf(scale, flags, flag, byte) {
  if (flag & flags.unknown && byte === 0) return scale.unknownPx;
  return flag & flags.degraded ? scale.grey[byte] : scale.lut[byte];
}

/** "#rgb", "#rrggbb" or "rgb(r, g, b[, a])" as [r, g, b], else null. */
export function parseRgb(text) {
  const s = (text || "").trim();
  let m = /^#([0-9a-f])([0-9a-f])([0-9a-f])$/i.exec(s);
  if (m) return [1, 2, 3].map((i) => parseInt(m[i] + m[i], 16));
  m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(s);
  if (m) return [1, 2, 3].map((i) => parseInt(m[i], 16));
  m = /^rgba?\(\s*(\d+)[\s,]+(\d+)[\s,]+(\d+)/i.exec(s);
  return m ? [1, 2, 3].map((i) => Math.min(255, Number(m[i]))) : null;
}

// The canvas colours: CSS variable -> fallback (static/css/portal.css defines them under
// "heatmap", light and dark; the fallbacks only keep a page without the stylesheet drawable).
export const THEME_VARS = {
  bg: ["--kv-bg", "#0b0e15"],
  plotBg: ["--kv-plot-bg", "#0a0c14"],
  zero: ["--kv-zero", "#0a0c14"],
  ink: ["--kv-ink", "#d9e0ec"],
  muted: ["--kv-muted", "#8a97ad"],
  faint: ["--kv-faint", "#3a4559"],
  grid: ["--kv-grid", "rgba(255,255,255,0.06)"],
  accent: ["--kv-accent", "#5aa2ff"],
  hex: ["--kv-hex", "#c4a7ff"],
  prefix: ["--kv-prefix", "#b58cff"],
  prefixBg: ["--kv-prefix-bg", "rgba(139,92,246,0.22)"],
  barRow: ["--kv-bar-row", "#4f8fe6"],
  barCol: ["--kv-bar-col", "#e0a24d"],
  pinned: ["--kv-pinned", "#ffd166"],
  hoverBg: ["--kv-hover-bg", "rgba(17,22,33,0.96)"],
  hoverInk: ["--kv-hover-ink", "#ffffff"],
  unknown: ["--kv-unknown", "#1f687c"],
  event: ["--kv-event", "#38d9a9"],
  split: ["--kv-split", "#ff8787"],
  sparkBg: ["--kv-spark-bg", "#f4f6fa"],
  sparkBar: ["--kv-spark-bar", "#5b7fd6"],
  sparkMark: ["--kv-spark-mark", "#e8590c"],
  sparkInk: ["--kv-spark-ink", "#5b6777"],
};

/** The canvas theme: `lookup(name)` is a CSS variable's value (getComputedStyle). */
export function readTheme(lookup) {
  const theme = {
    font: '11px ui-monospace, "DejaVu Sans Mono", Menlo, monospace',
    fontSans: '11px system-ui, "DejaVu Sans", sans-serif',
  };
  for (const [key, [name, fallback]] of Object.entries(THEME_VARS)) {
    const v = (lookup(name) || "").trim();
    theme[key] = v || fallback;
  }
  return theme;
}

/** The lookup tables and special pixels of a theme. */
export function buildScale(theme) {
  const zero = parseRgb(theme.zero) || [10, 12, 20];
  const unknownRgb = parseRgb(theme.unknown) || [31, 104, 124];
  const { lut, grey } = buildLut(zero);
  return { lut, grey, unknownRgb, unknownPx: pack(...unknownRgb) };
}
