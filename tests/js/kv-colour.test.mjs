// kv-colour.js: the log colour scale, the lookup table and the theme from CSS variables.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  buildLut, buildScale, mapBytes, pack, parseRgb, pixelOf, readTheme, STOPS, THEME_VARS, unpack, valueOfByte,
} from "../../static/js/kv-colour.js";

const FLAGS = { soft: 1, conflict: 2, degraded: 4, unknown: 8 };

test("zero stays the background byte and the maximum saturates at 255", () => {
  const values = Float64Array.of(0, 1, 10, 100, 1000);
  const bytes = new Uint8Array(5);
  mapBytes(values, bytes, 1000, 1);
  assert.equal(bytes[0], 0);
  assert.equal(bytes[4], 255);
  // Monotonic: more traffic is never darker.
  for (let i = 1; i < 5; i++) assert.ok(bytes[i] > bytes[i - 1], `byte ${i}`);
});

test("brightness saturates earlier: vmax / brightness is the top of the scale", () => {
  const values = Float64Array.of(250, 1000);
  const bytes = new Uint8Array(2);
  mapBytes(values, bytes, 1000, 4);
  assert.equal(bytes[1], 255);
  assert.ok(bytes[0] >= 254);
  assert.ok(valueOfByte(255, 1000, 4) < 1000);
});

test("the lookup-table path and the logarithm path agree for integers", () => {
  const many = Float64Array.from({ length: 4000 }, (_, i) => i % 300);
  const viaTable = new Uint8Array(many.length);
  mapBytes(many, viaTable, 299, 1); // 4000 cells > 4 * vmax: table used
  const few = Float64Array.from({ length: 300 }, (_, i) => i);
  const direct = new Uint8Array(300);
  mapBytes(few, direct, 299, 1); // no table
  for (let v = 0; v < 300; v++) assert.equal(viaTable[v], direct[v], `value ${v}`);
});

test("a partial remap (one column) touches only that column's cells", () => {
  const values = Float64Array.of(5, 6, 7, 8); // 2 rows x 2 columns
  const bytes = new Uint8Array(4).fill(9);
  mapBytes(values, bytes, 8, 1, 1, 4, 2); // column 1
  assert.equal(bytes[0], 9);
  assert.equal(bytes[2], 9);
  assert.notEqual(bytes[1], 9);
  assert.notEqual(bytes[3], 9);
});

test("the lookup table runs from the first palette stop to the last, zero is the zero colour", () => {
  const { lut } = buildLut([1, 2, 3]);
  assert.deepEqual(unpack(lut[0]), [1, 2, 3]);
  assert.deepEqual(unpack(lut[1]), STOPS[0].slice(1));
  assert.deepEqual(unpack(lut[255]), STOPS[STOPS.length - 1].slice(1));
  assert.equal(pack(1, 2, 3) >>> 24, 255); // opaque
});

test("an idle unknown cell has the unknown colour, never the idle background", () => {
  const scale = buildScale(readTheme(() => ""));
  assert.equal(pixelOf(scale, FLAGS, FLAGS.unknown, 0), scale.unknownPx);
  assert.notEqual(pixelOf(scale, FLAGS, 0, 0), scale.unknownPx);
  // A counted unknown cell keeps its palette colour (the page hatches it).
  assert.equal(pixelOf(scale, FLAGS, FLAGS.unknown, 200), scale.lut[200]);
});

test("the theme comes from the CSS variables, with fallbacks for missing ones", () => {
  const css = { "--kv-bg": " #ffffff ", "--kv-zero": "rgb(1, 2, 3)", "--kv-unknown": "#abc" };
  const theme = readTheme((name) => css[name] || "");
  assert.equal(theme.bg, "#ffffff");
  assert.equal(theme.ink, THEME_VARS.ink[1]);
  const scale = buildScale(theme);
  assert.deepEqual(unpack(scale.lut[0]), [1, 2, 3]);
  assert.deepEqual(scale.unknownRgb, [0xaa, 0xbb, 0xcc]);
  assert.equal(parseRgb("not a colour"), null);
});
