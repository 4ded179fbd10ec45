// Pointer and keyboard on the Key Visualizer's canvas: hover, click to pin, double-click
// to reset the zoom, drag to zoom (server re-bucketing), shift-drag to pan, wheel to
// magnify, arrow keys. `K` is the page state; `act` the page's actions.

import { centerOf, showTooltip } from "./kv-detail.js";
import { drawOverlay } from "./kv-draw.js";
import { cellAt, cellH, cellW, clampView, fullView, isMagnified } from "./kv-layout.js";

// A click waits this long for a second one: a double-click resets the zoom and pins
// nothing (the browser's own double-click interval is not exposed; 300 ms is the usual).
export const DOUBLE_CLICK_MS = 300;

/** The cell under a point, with the identity of its row and column (stable as live shifts). */
export function cellIdentity(K, cell) {
  if (!cell) return null;
  return { ...cell, bucket: K.grid.rows[cell.r].bucket_id, t: K.grid.times[cell.c] };
}

/** Where a remembered cell is now (rows inserted, columns scrolled), or null when gone. */
export function resolveCell(K, cell) {
  if (!cell || !K.grid) return null;
  const g = K.grid;
  if (cell.bucket === undefined) return cell.r < g.R && cell.c < g.C ? cell : null;
  const r = g.index.get(cell.bucket);
  const c = g.times.indexOf(cell.t);
  return r === undefined || c < 0 ? null : { ...cell, r, c };
}

export function wireInteraction(K, act) {
  const { el } = K;
  const canvasPoint = (e) => {
    const box = el.canvas.getBoundingClientRect();
    return { x: e.clientX - box.left, y: e.clientY - box.top };
  };
  const pointCell = (pt) => cellIdentity(K, cellAt(K.grid, K.plot, K.view, pt.x, pt.y));
  let clickTimer = 0;

  function setHover(cell, anchor) {
    const same = cell && K.hover && cell.r === K.hover.r && cell.c === K.hover.c;
    K.hover = cell;
    if (!K.pinned) showTooltip(K, cell, anchor);
    if (!same) drawOverlay(K);
  }

  el.canvas.addEventListener("pointermove", (e) => {
    const pt = canvasPoint(e);
    const d = K.drag;
    if (d) {
      d.x2 = pt.x;
      d.y2 = pt.y;
      if (Math.abs(d.x2 - d.x) + Math.abs(d.y2 - d.y) > 4) d.moved = true;
      if (d.mode === "pan" && d.moved) {
        const dx = (d.x2 - d.x) / cellW(K.plot, K.view);
        const dy = (d.y2 - d.y) / cellH(K.plot, K.view);
        K.view = clampView(K.grid, { x0: d.view.x0 - dx, x1: d.view.x1 - dx, y0: d.view.y0 - dy, y1: d.view.y1 - dy });
        act.requestDraw();
      } else drawOverlay(K);
      return;
    }
    const cell = pointCell(pt);
    act.pointerOnMap(Boolean(cell));
    setHover(cell, pt);
  });

  el.canvas.addEventListener("pointerleave", () => {
    act.pointerOnMap(false);
    if (K.drag) return;
    K.hover = null;
    if (!K.pinned) el.tooltip.hidden = true;
    drawOverlay(K);
  });

  el.canvas.addEventListener("pointerdown", (e) => {
    if (e.button !== 0 || !K.grid) return;
    const pt = canvasPoint(e);
    const cell = pointCell(pt);
    if (!cell) return;
    el.canvas.setPointerCapture(e.pointerId);
    K.drag = {
      x: pt.x, y: pt.y, x2: pt.x, y2: pt.y, moved: false, cell,
      mode: e.shiftKey || e.altKey ? "pan" : "brush", view: { ...K.view },
    };
  });

  el.canvas.addEventListener("pointerup", (e) => {
    const d = K.drag;
    K.drag = null;
    if (!d) return;
    el.canvas.releasePointerCapture(e.pointerId);
    if (!d.moved) {
      clearTimeout(clickTimer);
      // The second click of a double-click: the dblclick handler resets the zoom.
      if (e.detail >= 2) return;
      // The cell pressed, by row and column identity: pinned as pressed even if a live
      // column scrolls the map before the double-click interval ends.
      const cell = d.cell;
      const anchor = { x: d.x, y: d.y };
      clickTimer = setTimeout(() => {
        const now = resolveCell(K, cell);
        if (now) act.pin(now, anchor);
      }, DOUBLE_CLICK_MS);
      return;
    }
    if (d.mode === "brush") {
      const p = K.plot;
      const clampX = (x) => Math.min(p.x + p.w - 0.01, Math.max(p.x, x));
      const clampY = (y) => Math.min(p.y + p.h - 0.01, Math.max(p.y, y));
      const a = cellAt(K.grid, p, K.view, clampX(Math.min(d.x, d.x2)), clampY(Math.min(d.y, d.y2)));
      const b = cellAt(K.grid, p, K.view, clampX(Math.max(d.x, d.x2)), clampY(Math.max(d.y, d.y2)));
      drawOverlay(K);
      if (a && b) act.zoomInto(a, b);
    }
  });

  el.canvas.addEventListener("wheel", (e) => {
    if (!K.grid) return;
    e.preventDefault();
    const pt = canvasPoint(e);
    act.magnify(Math.exp(e.deltaY * 0.0015), pt);
    setHover(pointCell(pt), pt); // the cell under the pointer in the new view
    drawOverlay(K);
  }, { passive: false });

  el.canvas.addEventListener("dblclick", (e) => {
    e.preventDefault();
    clearTimeout(clickTimer); // a double-click pins nothing
    if (!K.grid) return;
    act.resetView();
  });

  el.canvas.addEventListener("keydown", (e) => {
    const g = K.grid;
    if (!g || !g.R || !g.C) return;
    const cur = K.cursor || K.hover || { r: Math.floor(g.R / 2), c: g.C - 1 };
    const move = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] }[e.key];
    if (move && e.shiftKey) {
      // Shift+arrows pan the magnified view.
      const dx = move[1] * (K.view.x1 - K.view.x0) * 0.1;
      const dy = move[0] * (K.view.y1 - K.view.y0) * 0.1;
      K.view = clampView(g, { x0: K.view.x0 + dx, x1: K.view.x1 + dx, y0: K.view.y0 + dy, y1: K.view.y1 + dy });
      act.requestDraw();
    } else if (move) {
      const next = cellIdentity(K, {
        r: Math.min(g.R - 1, Math.max(0, cur.r + move[0])),
        c: Math.min(g.C - 1, Math.max(0, cur.c + move[1])),
      });
      K.cursor = next;
      // Keep the cursor in view.
      const v = K.view;
      if (next.c < v.x0 || next.c + 1 > v.x1 || next.r < v.y0 || next.r + 1 > v.y1) {
        const dx = next.c < v.x0 ? next.c - v.x0 : next.c + 1 > v.x1 ? next.c + 1 - v.x1 : 0;
        const dy = next.r < v.y0 ? next.r - v.y0 : next.r + 1 > v.y1 ? next.r + 1 - v.y1 : 0;
        K.view = clampView(g, { x0: v.x0 + dx, x1: v.x1 + dx, y0: v.y0 + dy, y1: v.y1 + dy });
        act.requestDraw();
      }
      if (!K.pinned) showTooltip(K, next, centerOf(K, next));
      drawOverlay(K);
    } else if (e.key === "Enter" || e.key === " ") {
      act.pin(cellIdentity(K, cur));
    } else if (e.key === "Escape") {
      if (K.pinned) act.unpin();
      else if (isMagnified(g, K.view)) act.resetView();
    } else if (e.key === "+" || e.key === "=") act.magnify(0.7, K.cursor && centerOf(K, K.cursor));
    else if (e.key === "-" || e.key === "_") act.magnify(1 / 0.7, K.cursor && centerOf(K, K.cursor));
    else if (e.key === "0") act.resetView();
    else return;
    e.preventDefault();
  });

  el.canvas.addEventListener("blur", () => {
    K.cursor = null;
    if (!K.pinned && !K.hover) el.tooltip.hidden = true;
    drawOverlay(K);
  });

  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !el.drawer.hidden && document.activeElement !== el.canvas) act.unpin();
    if (e.altKey && e.key === "ArrowLeft" && K.pushed > 0) { e.preventDefault(); history.back(); }
  });

  el.drawer.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      e.preventDefault();
      act.unpin();
      el.canvas.focus();
    }
  });
  el.drawerClose.addEventListener("click", () => {
    act.unpin();
    el.canvas.focus();
  });
}

/** The full view of the current grid (reset zoom). */
export const resetTo = (K) => fullView(K.grid);
