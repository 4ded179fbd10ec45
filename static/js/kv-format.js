// Number, size, duration and CSV formatting of the Key Visualizer: pure functions (no DOM),
// unit-tested by node --test (tests/js/kv-format.test.mjs).

const nf = new Intl.NumberFormat("en-US");

export const formatInt = (v) => nf.format(v);
export const isBytes = (series) => series.endsWith("_bytes");
/** What one cell counts, per series (the byte series print their unit with the number). */
export const UNITS = { writes: "writes", reads: "reads", write_bytes: "bytes written", read_bytes: "bytes read" };

export function humanBytes(v) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i ? v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0) : Math.round(v)} ${units[i]}`;
}

export function compact(v) {
  if (v < 1000) return nf.format(Math.round(v));
  const units = ["k", "M", "G", "T", "P"];
  let i = -1;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return `${v.toFixed(v < 10 ? 1 : 0)}${units[i]}`;
}

export const fmtRate = (series, v) => (isBytes(series) ? humanBytes(v) : v < 10 ? v.toFixed(2) : compact(v));
export const fmtValue = (series, v) => (isBytes(series) ? humanBytes(v) : nf.format(v));
export const fmtCompact = (series, v) => (isBytes(series) ? humanBytes(v) : compact(v));

/** A failed node as the cluster pages word it (cluster/diagnose.py: cause and next step);
 * the node's raw error text only where there is no diagnosis (a late column). */
export function diagnosis(n) {
  if (n.summary) return n.next_step ? `${n.summary} (${n.next_step})` : n.summary;
  return n.error || "no answer";
}

export function fmtDuration(ms) {
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60e3) return `${+(ms / 1000).toFixed(1)} s`;
  if (ms < 3600e3) return `${+(ms / 60e3).toFixed(1)} min`;
  return `${+(ms / 3600e3).toFixed(1)} h`;
}

/** One CSV field: quoted when it holds a quote, comma or line break. */
export function csvCell(text) {
  const s = String(text);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}
