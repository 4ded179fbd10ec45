// kv-export.js: the CSV export carries each cell's flags, and an unknown cell is not 0.
import assert from "node:assert/strict";
import { test } from "node:test";

import { matrixCsv } from "../../static/js/kv-export.js";

test("the csv has a value and a flags column per time column", () => {
  const K = {
    flags: { soft: 1, conflict: 2, degraded: 4, unknown: 8 },
    grid: {
      series: "writes", step: 60e3, C: 2, times: [60e3, 120e3],
      rows: [{ bucket_id: "route:1", start_text: "a,b", end_text: "+inf", start_label: "" }],
      values: Float64Array.of(5, 7), flags: Uint8Array.of(1 | 2, 8),
    },
  };
  const [head, line] = matrixCsv(K).trim().split("\n");
  assert.equal(head, "bucket_id,start,end,label,1970-01-01T00:01:00.000Z,1970-01-01T00:01:00.000Z flags," +
    "1970-01-01T00:02:00.000Z,1970-01-01T00:02:00.000Z flags");
  assert.equal(line, 'route:1,"a,b",+inf,,5,soft|conflict,,unknown');
});
