// Exports of the Key Visualizer: the matrix as CSV (values and per-cell flags; pure,
// tests/js/kv-export.test.mjs) and the view as a PNG carrying its legend, window, series
// and time zone.

import { csvCell } from "./kv-format.js";
import { fmtRange, zoneName } from "./timefmt.js";


/**
 * The matrix as CSV: one row per key range; per time column (its end, ISO UTC) the value
 * and the cell's flags ("soft|conflict|unknown"; an unknown cell's value is empty, not 0).
 */
export function matrixCsv(K) {
  const g = K.grid;
  const F = K.flags;
  const flagText = (f) => ["soft", "conflict", "unknown"].filter((n) => f & F[n]).join("|");
  const head = ["bucket_id", "start", "end", "label"];
  for (const t of g.times) {
    const iso = new Date(t).toISOString();
    head.push(iso, `${iso} flags`);
  }
  const lines = [head.map(csvCell).join(",")];
  g.rows.forEach((row, r) => {
    const cells = [];
    for (let c = 0; c < g.C; c++) {
      const i = r * g.C + c;
      // An unknown cell is empty, not 0 (and not the part the reporting nodes counted).
      cells.push(g.flags[i] & F.unknown ? "" : String(g.values[i]), flagText(g.flags[i]));
    }
    lines.push([csvCell(row.bucket_id), csvCell(row.start_text), csvCell(row.end_text), csvCell(row.start_label || row.label || ""), ...cells].join(","));
  });
  return lines.join("\n") + "\n";
}

/** The PNG export: the map as drawn, with a header (series, window, zone) and the legend. */
export function exportPng(K) {
  const { el } = K;
  const g = K.grid;
  const T = K.theme;
  const { width, height, dpr } = K.css;
  const headH = 26;
  const footH = 30;
  const out = document.createElement("canvas");
  out.width = Math.round(width * dpr);
  out.height = Math.round((height + headH + footH) * dpr);
  const ctx = out.getContext("2d");
  ctx.scale(dpr, dpr);
  ctx.fillStyle = T.bg;
  ctx.fillRect(0, 0, width, height + headH + footH);
  ctx.font = T.fontSans.replace("11px", "12px");
  ctx.textBaseline = "middle";
  ctx.fillStyle = T.ink;
  const s = K.state;
  const seconds = g && g.step < 60e3;
  const window_ = g && g.C ? fmtRange(g.window(0)[0], g.times[g.C - 1], seconds) : "no data";
  ctx.fillText(`Key Visualizer · ${s.series.replace("_", " ")} · ${window_} · rows ${g ? g.R : 0}`, 8, headH / 2);
  ctx.drawImage(el.canvas, 0, headH, width, height);
  // The legend: the colour ramp with its range and unit, and the marks.
  const y = headH + height + footH / 2;
  ctx.fillStyle = T.muted;
  ctx.fillText(el.scaleMin.textContent, 8, y);
  ctx.drawImage(el.scale, 22, y - 5, 180, 10);
  ctx.fillStyle = T.ink;
  ctx.fillText(`${el.scaleMax.textContent}${el.scaleUnit.textContent}`, 208, y);
  ctx.fillStyle = T.muted;
  ctx.textAlign = "right";
  ctx.fillText(`times in ${zoneName()} · hatched: soft / conflict / unknown · ▲ event`, width - 8, y);
  return out;
}

