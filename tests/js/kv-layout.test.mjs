// kv-layout.js: cells <-> pixels, the view, key label spacing and the drawer's side.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  cellAt, cellRect, clampView, drawerSide, followShift, fullView, isMagnified, keyLabels, labelStride,
  newestHidden, tickInterval, timeAtCell, viewAtNow, xOfTime,
} from "../../static/js/kv-layout.js";

const grid = { R: 10, C: 20, step: 60e3, times: Array.from({ length: 20 }, (_, i) => (i + 1) * 60e3) };
const plot = { x: 100, y: 20, w: 200, h: 100 };

test("a point maps to the cell drawn there and back", () => {
  const view = fullView(grid);
  const cell = cellAt(grid, plot, view, 100 + 10 * 3 + 5, 20 + 10 * 7 + 5);
  assert.deepEqual(cell, { r: 7, c: 3 });
  assert.deepEqual(cellRect(plot, view, 7, 3), { x: 130, y: 90, w: 10, h: 10 });
  assert.equal(cellAt(grid, plot, view, 99, 50), null);
});

test("a moment maps to its column's place on the axis", () => {
  const view = fullView(grid);
  assert.equal(xOfTime(grid, plot, view, 60e3), 110); // end of column 0
  assert.equal(xOfTime(grid, plot, view, 90e3), 115); // middle of column 1
  assert.equal(timeAtCell(grid, 1.5), 90e3);
});

test("the view stays inside the matrix and at least two cells wide", () => {
  assert.deepEqual(clampView(grid, { x0: -5, x1: 3, y0: 8, y1: 12 }), { x0: 0, x1: 8, y0: 6, y1: 10 });
  assert.deepEqual(clampView(grid, { x0: 4, x1: 4.5, y0: 0, y1: 10 }), { x0: 4, x1: 6, y0: 0, y1: 10 });
  assert.equal(isMagnified(grid, fullView(grid)), false);
  assert.equal(isMagnified(grid, { x0: 0, x1: 10, y0: 0, y1: 10 }), true);
});

test("a magnified view away from the newest column offers now and jumps there", () => {
  const v = { x0: 2, x1: 8, y0: 0, y1: 10 };
  assert.equal(newestHidden(grid, v), true);
  assert.deepEqual(viewAtNow(grid, v), { x0: 14, x1: 20, y0: 0, y1: 10 });
  assert.equal(newestHidden(grid, viewAtNow(grid, v)), false);
  assert.deepEqual(followShift(grid, v, 1), { x0: 1, x1: 7, y0: 0, y1: 10 });
});

test("ticks are at least 84 px apart", () => {
  assert.equal(tickInterval(84 / 60e3), 60e3);
  assert.equal(tickInterval(1 / 60e3), 7200e3);
});

test("key labels never come closer than a line, however the view is zoomed", () => {
  for (const rowH of [0.7, 3, 9, 15.9, 16, 17, 40, 333.3]) {
    const plotTop = 20;
    const plotBottom = 620;
    const y0 = 0.37; // a zoomed view starts mid-row
    const labels = keyLabels(0, Math.ceil(600 / rowH + 1), (r) => plotTop + (r - y0) * rowH, rowH, plotTop, plotBottom);
    assert.ok(labels.length > 0, `rowH ${rowH}`);
    for (let i = 1; i < labels.length; i++) {
      assert.ok(labels[i].y - labels[i - 1].y >= 16, `rowH ${rowH}: ${labels[i - 1].y} then ${labels[i].y}`);
    }
    for (const l of labels) assert.ok(l.y >= plotTop - 1 && l.y <= plotBottom + 1);
  }
  assert.equal(labelStride(4), 4);
  assert.equal(labelStride(20), 1);
});

test("the drawer docks on the side away from the pinned cell and its tooltip", () => {
  // 1440 px window, 480 px drawer: a cell on the right sends it left, one on the left keeps it right.
  assert.equal(drawerSide({ x: 1200, w: 4 }, 1440, 480), "left");
  assert.equal(drawerSide({ x: 300, w: 4 }, 1440, 480), "right");
  // 1024 px: a cell in the middle goes where the cell itself stays uncovered.
  const side = drawerSide({ x: 520, w: 4 }, 1024, 480);
  const covered = side === "right" ? 520 + 4 > 1024 - 480 : 520 < 480;
  assert.equal(covered, false);
});
