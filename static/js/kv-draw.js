// Drawing the Key Visualizer: the off-screen canvas (one pixel per cell), the flag marks,
// the axes, the totals bars, the event marks and the overlay (hover, cursor, pinned cell,
// brush). Every function takes the page state `K` (heatmap.js) explicitly; canvas colours
// come from K.theme (CSS variables), the colour scale from K.scale (kv-colour.js).

import { mapBytes, pixelOf } from "./kv-colour.js";
import { fmtCompact, fmtDuration, isBytes, UNITS } from "./kv-format.js";
import { keyParts } from "./kv-labels.js";
import {
  PAD, cellH, cellRect, cellW, columnOf, keyLabels, tickInterval, timeAtCell, xOfTime,
} from "./kv-layout.js";
import { fmtTick, zoneName, zoneOffsetMs } from "./timefmt.js";

/** Map the grid's values to colour bytes with the page's vmax and brightness. */
export function remapBytes(K, from, to, step) {
  const g = K.grid;
  mapBytes(g.values, g.bytes, K.vmax, K.state.brightness, from, to, step);
}

/** Colour every cell into the off-screen canvas (one pixel per cell). */
export function paintAll(K) {
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
  const F = K.flags;
  if (g.flagBits & (F.degraded | F.unknown)) {
    for (let i = 0; i < px.length; i++) px[i] = pixelOf(K.scale, F, flags[i], bytes[i]);
  } else {
    const lut = K.scale.lut;
    for (let i = 0; i < px.length; i++) px[i] = lut[bytes[i]];
  }
  ctx.putImageData(image, 0, 0);
}

/** Scroll the off-screen canvas by one cell and colour the new last column. */
export function paintShift(K) {
  const g = K.grid;
  const { R, C } = g;
  if (!R || C < 2) return paintAll(K);
  const ctx = K.off.getContext("2d");
  ctx.drawImage(K.off, 1, 0, C - 1, R, 0, 0, C - 1, R);
  paintColumn(K, C - 1);
}

export function paintColumn(K, c) {
  const g = K.grid;
  const { R, C } = g;
  if (!R || !C) return paintAll(K);
  const ctx = K.off.getContext("2d");
  const image = ctx.createImageData(1, R);
  const px = new Uint32Array(image.data.buffer);
  for (let r = 0; r < R; r++) {
    const i = r * C + c;
    px[r] = pixelOf(K.scale, K.flags, g.flags[i], g.bytes[i]);
  }
  ctx.putImageData(image, c, 0);
}

/**
 * One-pixel-per-cell masks of the conflict, soft and unknown cells. Drawing a pattern
 * through a mask costs three blits whatever the number of flagged cells (a rectangle per
 * run of cells would cost one fill per run: seconds when every cell is marked).
 */
export function computeMarks(K) {
  const g = K.grid;
  const { R, C, flags } = g;
  K.marks = { conflict: 0, soft: 0, unknown: 0 };
  for (const name of ["conflict", "soft", "unknown"]) {
    const bit = K.flags[name];
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

/** The hatch patterns of the flag marks (need a canvas to be made). */
export function makePatterns(canvas, unknownRgb) {
  const make = (kind) => {
    const tile = document.createElement("canvas");
    tile.width = tile.height = kind === "soft" ? 4 : 6;
    const t = tile.getContext("2d");
    if (kind === "unknown") {
      // Stripes the other way round from conflict, in a light shade of the unknown colour.
      t.strokeStyle = `rgba(${unknownRgb.map((v) => Math.min(255, v + 110)).join(",")},0.8)`;
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
    return canvas.getContext("2d").createPattern(tile, "repeat");
  };
  return { conflict: make("conflict"), soft: make("soft"), unknown: make("unknown") };
}

/** The legend's colour ramp and its labels. */
export function drawScale(K) {
  const { el } = K;
  const ctx = el.scale.getContext("2d");
  const { width, height } = el.scale;
  const image = ctx.createImageData(width, height);
  const px = new Uint32Array(image.data.buffer);
  for (let x = 0; x < width; x++) {
    const c = K.scale.lut[Math.round((x / (width - 1)) * 254) + 1];
    for (let y = 0; y < height; y++) px[y * width + x] = c;
  }
  ctx.putImageData(image, 0, 0);
  const series = K.state.series;
  el.scaleMin.textContent = "0";
  el.scaleMax.textContent = K.vmax ? fmtCompact(series, K.vmax / K.state.brightness) : "—";
  el.scaleUnit.textContent = ` ${isBytes(series) ? "per cell" : UNITS[series] + " per cell"} · log scale`;
}

// ---------------------------------------------------------------- the main canvas

export function draw(K) {
  const g = K.grid;
  const T = K.theme;
  const { width, height, dpr } = K.css;
  const ctx = K.el.canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = T.bg;
  ctx.fillRect(0, 0, width, height);
  const p = K.plot;
  ctx.fillStyle = T.plotBg;
  ctx.fillRect(p.x, p.y, p.w, p.h);
  if (!g) {
    drawOverlay(K);
    return null;
  }
  let totals = null;
  if (g.R && g.C) {
    const v = K.view;
    const cw = cellW(p, v);
    const ch = cellH(p, v);
    // Magnified cells stay crisp; when there are more cells than pixels, average
    // rather than drop whole rows or columns (a dropped row could hide a hotspot).
    ctx.imageSmoothingEnabled = cw < 1 || ch < 1;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(K.off, v.x0, v.y0, v.x1 - v.x0, v.y1 - v.y0, p.x, p.y, p.w, p.h);
    drawMarks(K, ctx);
    totals = visibleTotals(K);
    drawKeyAxis(K, ctx);
    drawTimeAxis(K, ctx);
    drawTotals(K, ctx, totals);
    drawEvents(K, ctx);
  }
  ctx.strokeStyle = T.faint;
  ctx.lineWidth = 1;
  ctx.strokeRect(p.x - 0.5, p.y - 0.5, p.w + 1, p.h + 1);
  drawOverlay(K);
  return totals;
}

function drawMarks(K, ctx) {
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
    l.fillStyle = K.patterns[kind];
    l.fillRect(0, 0, w, hgt);
    // Keep the pattern only where the mask (the flagged cells, scaled like the map) is.
    l.globalCompositeOperation = "destination-in";
    l.imageSmoothingEnabled = false;
    l.drawImage(K.masks[kind], v.x0, v.y0, v.x1 - v.x0, v.y1 - v.y0, 0, 0, w, hgt);
    ctx.drawImage(layer, p.x, p.y, p.w, p.h);
  }
}

/** Draw a key: its family label, or the preview with a reserved prefix as a tag. */
export function drawKey(K, ctx, row, x, y, maxW, color) {
  const T = K.theme;
  const parts = keyParts(row.start_text, row.start_reserved, row.start_label, K.reserved);
  ctx.font = T.font;
  if (parts.kind === "inf") {
    ctx.fillStyle = T.muted;
    ctx.font = `italic ${T.font}`;
    ctx.fillText(parts.text, x, y);
    return;
  }
  if (parts.prefix) {
    const tag = parts.prefix.replace(/\|$/, "");
    const tw = ctx.measureText(tag).width + 8;
    ctx.fillStyle = T.prefixBg;
    ctx.beginPath();
    ctx.roundRect(x, y - 7, tw, 14, 3);
    ctx.fill();
    ctx.fillStyle = T.prefix;
    ctx.fillText(tag, x + 4, y);
    x += tw + 4;
    maxW -= tw + 4;
  }
  ctx.fillStyle = parts.hex ? T.hex : color || T.ink;
  ctx.fillText(fitText(ctx, parts.text, maxW), x, y);
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

function drawKeyAxis(K, ctx) {
  const g = K.grid;
  const T = K.theme;
  const p = K.plot;
  const v = K.view;
  const ch = cellH(p, v);
  const r0 = Math.max(0, Math.floor(v.y0));
  const r1 = Math.min(g.R, Math.ceil(v.y1));
  const labels = keyLabels(r0, r1, (r) => p.y + (r - v.y0) * ch, ch, p.y, p.y + p.h);
  K.keyLabelsDrawn = labels.map((l) => ({ r: l.r, y: l.y }));
  ctx.textBaseline = "middle";
  ctx.textAlign = "left";
  for (const { r, y, tick } of labels) {
    ctx.fillStyle = T.faint;
    if (tick >= p.y && tick <= p.y + p.h) ctx.fillRect(p.x - 5, Math.round(tick), 4, 1);
    drawKey(K, ctx, g.rows[r], 8, y, p.x - 18);
  }
  ctx.fillStyle = T.muted;
  ctx.font = T.fontSans;
  ctx.textBaseline = "middle";
  ctx.fillText(`start key · ${g.R} rows`, 8, PAD.top / 2 - 2);
  ctx.textAlign = "right";
  ctx.fillText(`time (${zoneName()}) · ${fmtDuration(g.step)} columns`, p.x + p.w, PAD.top / 2 - 2);
  ctx.textAlign = "left";
}

function drawTimeAxis(K, ctx) {
  const g = K.grid;
  const T = K.theme;
  const p = K.plot;
  const v = K.view;
  const t0 = timeAtCell(g, v.x0);
  const t1 = timeAtCell(g, v.x1);
  const interval = tickInterval(p.w / Math.max(1, t1 - t0));
  const seconds = interval < 60e3;
  // Align ticks to the chosen zone's wall-clock boundaries.
  const offset = zoneOffsetMs(t0);
  K.ticks = [];
  const y = p.y + p.h + PAD.colBars;
  ctx.font = T.fontSans;
  ctx.textBaseline = "top";
  ctx.textAlign = "center";
  for (let t = Math.ceil((t0 + offset) / interval) * interval - offset; t <= t1; t += interval) {
    const x = xOfTime(g, p, v, t);
    if (x < p.x || x > p.x + p.w) continue;
    ctx.fillStyle = T.grid;
    ctx.fillRect(Math.round(x), p.y, 1, p.h);
    ctx.fillStyle = T.faint;
    ctx.fillRect(Math.round(x), y, 1, 4);
    const tick = fmtTick(t, seconds);
    K.ticks.push(tick.text);
    ctx.fillStyle = tick.midnight ? T.ink : T.muted;
    ctx.fillText(tick.text, x, y + 5);
  }
  ctx.textAlign = "left";
}

/** Row totals over the visible columns and column totals over the visible rows. */
export function visibleTotals(K) {
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

function drawTotals(K, ctx, totals) {
  const T = K.theme;
  const p = K.plot;
  const v = K.view;
  const cw = cellW(p, v);
  const ch = cellH(p, v);
  const maxRow = Math.max(1, ...totals.rows);
  const maxCol = Math.max(1, ...totals.cols);
  const barsX = p.x + p.w + 8;
  const barsW = PAD.right - 14;
  ctx.save();
  ctx.beginPath();
  ctx.rect(barsX, p.y, barsW, p.h);
  ctx.clip();
  ctx.fillStyle = T.barRow;
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
  ctx.fillStyle = T.barCol;
  totals.cols.forEach((sum, i) => {
    if (!sum) return;
    const left = p.x + (totals.c0 + i - v.x0) * cw;
    const hgt = Math.max(1, (sum / maxCol) * barsH);
    ctx.fillRect(left + (cw > 3 ? 0.5 : 0), barsY + barsH - hgt, Math.max(1, cw - (cw > 3 ? 1 : 0)), hgt);
  });
  ctx.restore();
  const series = K.state.series;
  ctx.font = T.fontSans;
  ctx.fillStyle = T.muted;
  ctx.textBaseline = "middle";
  ctx.textAlign = "left";
  ctx.fillText("row totals", barsX, PAD.top / 2 - 2);
  // The row maximum under the row bars, in two lines when one does not fit the margin
  // (a byte series' "12.5 MiB" is wider than the bars).
  const maxText = fmtCompact(series, maxRow);
  const room = K.css.width - barsX - 4;
  const ry = p.y + p.h + PAD.colBars / 2;
  const oneLine = `max ${maxText}`;
  let widest;
  if (ctx.measureText(oneLine).width <= room) {
    ctx.fillText(oneLine, barsX, ry);
    widest = ctx.measureText(oneLine).width;
  } else {
    const value = fitText(ctx, maxText, room);
    ctx.fillText("max", barsX, ry - 7);
    ctx.fillText(value, barsX, ry + 7);
    widest = Math.max(ctx.measureText("max").width, ctx.measureText(value).width);
  }
  K.rowMaxLabel = { text: maxText, width: widest, room };
  ctx.textAlign = "right";
  ctx.fillText(`column totals · max ${fmtCompact(series, maxCol)}`, p.x - 8, barsY + barsH / 2);
  ctx.textAlign = "left";
}

// ---------------------------------------------------------------- event marks

/** The rows a route event touches (a split: the parent and its children), as [r0, r1). */
export function eventRows(grid, ev) {
  const ids = new Set();
  const d = ev.details || {};
  for (const k of ["route_id", "into", "from"]) [].concat(d[k] ?? []).forEach((id) => ids.add(String(id)));
  if (!ids.size) return null;
  let r0 = -1;
  let r1 = -1;
  grid.rows.forEach((row, r) => {
    if ((row.route_ids || []).some((id) => ids.has(String(id)))) {
      if (r0 < 0) r0 = r;
      r1 = r + 1;
    }
  });
  return r0 < 0 ? null : [r0, r1];
}

/** Event marks: a tick on the time axis per event, a split as a line across its rows. */
function drawEvents(K, ctx) {
  const g = K.grid;
  const T = K.theme;
  const p = K.plot;
  const v = K.view;
  const shown = [];
  if (!K.events.length || !g.C) {
    K.eventsDrawn = shown;
    return;
  }
  const t0 = timeAtCell(g, v.x0);
  const t1 = timeAtCell(g, v.x1);
  const y = p.y + p.h + PAD.colBars + PAD.axis - 2;
  const ch = cellH(p, v);
  for (const ev of K.events) {
    if (ev.unix_ms <= t0 || ev.unix_ms > t1) continue;
    const x = xOfTime(g, p, v, ev.unix_ms);
    if (x < p.x || x > p.x + p.w) continue;
    const route = ev.type.startsWith("route_") ? eventRows(g, ev) : null;
    ctx.save();
    if (route) {
      // A boundary mark across the rows the change touched.
      const top = Math.max(p.y, p.y + (route[0] - v.y0) * ch);
      const bottom = Math.min(p.y + p.h, p.y + (route[1] - v.y0) * ch);
      if (bottom > top) {
        ctx.strokeStyle = T.split;
        ctx.lineWidth = 2;
        ctx.setLineDash([3, 2]);
        ctx.beginPath();
        ctx.moveTo(Math.round(x) + 0.5, top);
        ctx.lineTo(Math.round(x) + 0.5, bottom);
        ctx.stroke();
      }
    }
    ctx.fillStyle = route ? T.split : T.event;
    ctx.beginPath();
    ctx.moveTo(x, y - 8);
    ctx.lineTo(x + 5, y);
    ctx.lineTo(x - 5, y);
    ctx.closePath();
    ctx.fill();
    ctx.restore();
    shown.push({ ev, x, y: y - 4, rows: route });
  }
  K.eventsDrawn = shown;
}

/** The column of an event (for the drawer's "events near this cell"). */
export const eventColumn = (grid, ev) => columnOf(grid, ev.unix_ms);

// ---------------------------------------------------------------- overlay

/** Hover outline, keyboard cursor, pinned cell and the brush, on the transparent layer. */
export function drawOverlay(K) {
  const { width, height, dpr } = K.css;
  const T = K.theme;
  const ctx = K.el.overlay.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  if (!K.grid || !K.grid.R) return;
  const p = K.plot;
  const v = K.view;
  if (K.hover) {
    // The hovered row in the key gutter, with its start key even when the axis skips it.
    const r = cellRect(p, v, K.hover.r, K.hover.c);
    const y = Math.max(p.y, Math.min(p.y + p.h, r.y + r.h / 2));
    ctx.fillStyle = T.hoverBg;
    ctx.fillRect(0, y - 9, p.x - 4, 18);
    ctx.fillStyle = T.accent;
    ctx.fillRect(p.x - 6, y - 9, 2, 18);
    ctx.textBaseline = "middle";
    ctx.textAlign = "left";
    drawKey(K, ctx, K.grid.rows[K.hover.r], 8, y, p.x - 18, T.hoverInk);
  }
  ctx.save();
  ctx.beginPath();
  ctx.rect(p.x, p.y, p.w, p.h);
  ctx.clip();
  const outline = (cell, color, lw) => {
    if (!cell) return;
    const r = cellRect(p, v, cell.r, cell.c);
    ctx.strokeStyle = color;
    ctx.lineWidth = lw;
    ctx.strokeRect(r.x - lw / 2, r.y - lw / 2, Math.max(2, r.w) + lw, Math.max(2, r.h) + lw);
  };
  if (K.hover) {
    const r = cellRect(p, v, K.hover.r, K.hover.c);
    ctx.fillStyle = "rgba(255,255,255,0.05)";
    ctx.fillRect(p.x, r.y, p.w, Math.max(1, r.h));
    ctx.fillRect(r.x, p.y, Math.max(1, r.w), p.h);
    outline(K.hover, "rgba(255,255,255,0.9)", 1);
  }
  outline(K.cursor, T.accent, 1.5);
  outline(K.pinned, T.pinned, 2);
  const d = K.drag;
  if (d && d.mode === "brush" && d.moved) {
    const x = Math.min(d.x, d.x2);
    const y = Math.min(d.y, d.y2);
    ctx.fillStyle = "rgba(90,162,255,0.18)";
    ctx.fillRect(x, y, Math.abs(d.x2 - d.x), Math.abs(d.y2 - d.y));
    ctx.strokeStyle = T.accent;
    ctx.setLineDash([4, 3]);
    ctx.lineWidth = 1;
    ctx.strokeRect(x + 0.5, y + 0.5, Math.abs(d.x2 - d.x), Math.abs(d.y2 - d.y));
  }
  ctx.restore();
}
