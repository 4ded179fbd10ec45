// kv-format.js: numbers, sizes and durations as the heatmap prints them, and CSV fields.
import assert from "node:assert/strict";
import { test } from "node:test";

import { compact, csvCell, diagnosis, fmtCompact, fmtDuration, fmtRate, fmtValue, humanBytes, isBytes } from "../../static/js/kv-format.js";

test("byte series print binary units, count series metric suffixes", () => {
  assert.equal(isBytes("write_bytes"), true);
  assert.equal(isBytes("writes"), false);
  assert.equal(humanBytes(512), "512 B");
  assert.equal(humanBytes(1536), "1.50 KiB");
  assert.equal(humanBytes(12.5 * 1024 * 1024), "12.5 MiB");
  assert.equal(compact(999), "999");
  assert.equal(compact(12_500_000), "13M");
  assert.equal(compact(1_250), "1.3k");
  assert.equal(fmtCompact("read_bytes", 2048), "2.00 KiB");
  assert.equal(fmtCompact("reads", 2048), "2.0k");
});

test("values are exact with separators, rates keep two decimals when small", () => {
  assert.equal(fmtValue("writes", 1234567), "1,234,567");
  assert.equal(fmtRate("writes", 0.5), "0.50");
  assert.equal(fmtRate("writes", 25000), "25k");
});

test("durations pick the unit that reads best", () => {
  assert.equal(fmtDuration(500), "500 ms");
  assert.equal(fmtDuration(10_000), "10 s");
  assert.equal(fmtDuration(90_000), "1.5 min");
  assert.equal(fmtDuration(3 * 3600e3), "3 h");
});

test("a csv field with a comma, quote or line break is quoted, quotes doubled", () => {
  assert.equal(csvCell("plain"), "plain");
  assert.equal(csvCell('a,"b"'), '"a,""b"""');
  assert.equal(csvCell("two\nlines"), '"two\nlines"');
  assert.equal(csvCell(5), "5");
});

test("a failed node is worded by its diagnosis, its raw error only without one", () => {
  const diagnosed = { summary: "The node refused the connection", next_step: "Check that it runs", error: "unreachable: x" };
  assert.equal(diagnosis(diagnosed), "The node refused the connection (Check that it runs)");
  assert.equal(diagnosis({ summary: "Timed out", error: "raw" }), "Timed out");
  assert.equal(diagnosis({ error: "late column" }), "late column");
  assert.equal(diagnosis({}), "no answer");
});
