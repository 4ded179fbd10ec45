// Geometry of the Key Visualizer: the plot inside the canvas, the visible part of the
// matrix (a fractional window of cells), cells <-> pixels, time <-> x, tick intervals and
// where the cell drawer goes. Pure functions of (grid, plot, view): tests/js/kv-layout.test.mjs.

/** Margins of the plot inside the canvas, in CSS pixels. */
export const PAD = { left: 208, right: 74, top: 26, colBars: 34, axis: 24, events: 10 };

export function plotOf(width, height) {
  return {
    x: PAD.left,
    y: PAD.top,
    w: width - PAD.left - PAD.right,
    h: height - PAD.top - PAD.colBars - PAD.axis - PAD.events,
  };
}

export const cellW = (plot, view) => plot.w / (view.x1 - view.x0);
export const cellH = (plot, view) => plot.h / (view.y1 - view.y0);

/** The cell under a point of the canvas (CSS pixels), or null outside the map. */
export function cellAt(grid, plot, view, x, y) {
  if (!grid || x < plot.x || y < plot.y || x >= plot.x + plot.w || y >= plot.y + plot.h) return null;
  const c = Math.floor(view.x0 + (x - plot.x) / cellW(plot, view));
  const r = Math.floor(view.y0 + (y - plot.y) / cellH(plot, view));
  if (c < 0 || r < 0 || c >= grid.C || r >= grid.R) return null;
  return { r, c };
}

export function cellRect(plot, view, r, c) {
  const w = cellW(plot, view);
  const h = cellH(plot, view);
  return { x: plot.x + (c - view.x0) * w, y: plot.y + (r - view.y0) * h, w, h };
}

/** The column index holding moment t (a column c covers (times[c] - step, times[c]]). */
export function columnOf(grid, t) {
  const times = grid.times;
  let lo = 0;
  let hi = grid.C - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (times[mid] < t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** x (CSS px) of a moment, through the columns' windows. */
export function xOfTime(grid, plot, view, t) {
  const lo = columnOf(grid, t);
  const f = Math.min(1, Math.max(0, (t - (grid.times[lo] - grid.step)) / grid.step));
  return plot.x + (lo + f - view.x0) * cellW(plot, view);
}

/** The moment at a fractional column position x. */
export function timeAtCell(grid, x) {
  const c = Math.min(grid.C - 1, Math.max(0, Math.floor(x)));
  return grid.times[c] - grid.step + (x - c) * grid.step;
}

/** A view inside the matrix, at least 2 cells (or all of them) each way. */
export function clampView(grid, v) {
  const fit = (a, b, max, min) => {
    const span = Math.min(max, Math.max(min, b - a));
    a = Math.max(0, Math.min(a, max - span));
    return [a, a + span];
  };
  const [x0, x1] = fit(v.x0, v.x1, Math.max(1, grid.C), Math.min(2, grid.C || 1));
  const [y0, y1] = fit(v.y0, v.y1, Math.max(1, grid.R), Math.min(2, grid.R || 1));
  return { x0, x1, y0, y1 };
}

export const fullView = (grid) => ({ x0: 0, x1: Math.max(1, grid.C), y0: 0, y1: Math.max(1, grid.R) });

export function isMagnified(grid, view) {
  const f = fullView(grid);
  return view.x0 > 0 || view.y0 > 0 || view.x1 < f.x1 || view.y1 < f.y1;
}

/** Whether the newest column is off screen (a magnified view that does not reach it). */
export const newestHidden = (grid, view) => grid.C > 0 && view.x1 < grid.C - 0.01;

/** The view moved right so that its right edge is the newest column, same width. */
export function viewAtNow(grid, view) {
  const w = view.x1 - view.x0;
  return clampView(grid, { ...view, x0: grid.C - w, x1: grid.C });
}

/**
 * The view after the grid scrolled by `dropped` columns (live): a magnified view keeps
 * showing the same moments (the columns move left under it), so the cell under the
 * pointer stays the one hovered.
 */
export function followShift(grid, view, dropped) {
  return clampView(grid, { ...view, x0: view.x0 - dropped, x1: view.x1 - dropped });
}

const TICKS = [1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3,
  7200e3, 10800e3, 21600e3, 43200e3, 86400e3];

/** The tick interval (ms) that puts ticks at least `minPx` apart. */
export function tickInterval(pxPerMs, minPx = 84) {
  return TICKS.find((i) => i * pxPerMs >= minPx) || TICKS[TICKS.length - 1];
}

/**
 * Which rows get a key label: every `stride`-th, so labels `lineH` tall never overlap.
 * Rows at least lineH tall get one each, centred; otherwise labels sit on row boundaries.
 */
export function labelStride(rowH, lineH = 16) {
  return Math.max(1, Math.ceil(lineH / Math.max(rowH, 1e-6)));
}

/**
 * Label positions on the key axis: [{r, y}] for rows r0..r1 (exclusive) of height rowH
 * starting at y = top(r). Labels never come closer than lineH (a zoomed view whose first
 * visible row is cut keeps its label inside the plot and drops a neighbour that would
 * overlap).
 */
export function keyLabels(r0, r1, rowTop, rowH, plotTop, plotBottom, lineH = 16) {
  const stride = labelStride(rowH, lineH);
  const out = [];
  let last = -Infinity;
  for (let r = r0; r < r1; r++) {
    if (r % stride) continue;
    const top = rowTop(r);
    let y = stride === 1 ? top + rowH / 2 : top;
    if (stride === 1) {
      // A partly visible row: its label in the visible part of it.
      const a = Math.max(top, plotTop);
      const b = Math.min(top + rowH, plotBottom);
      if (b - a < lineH * 0.6) continue;
      y = (a + b) / 2;
    }
    if (y < plotTop - 1 || y > plotBottom + 1) continue;
    if (y - last < lineH) continue;
    out.push({ r, y, tick: stride === 1 ? top : y });
    last = y;
  }
  return out;
}

/**
 * Where the cell drawer goes so it does not cover the pinned cell and its tooltip:
 * "right" (the default, docked at the right of the window) unless the cell, plus `margin`
 * for its tooltip, reaches under it; then "left". `cell` is in viewport pixels.
 */
export function drawerSide(cell, viewportW, drawerW, margin = 260) {
  const right = viewportW - drawerW;
  if (cell.x + cell.w + margin <= right) return "right";
  if (cell.x - margin >= drawerW) return "left";
  // Neither side leaves room for the tooltip: the side leaving the cell itself visible.
  return cell.x + cell.w <= right ? "right" : "left";
}
