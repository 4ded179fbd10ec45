// keyviz-state.js: the view in the URL, and the matrix query, from the server's constants.
import assert from "node:assert/strict";
import { test } from "node:test";

await import("../../static/js/keyviz-state.js");
const config = {
  series: ["writes", "reads", "write_bytes", "read_bytes"],
  ranges_ms: { "15m": 900e3, "1h": 3600e3, "30d": 30 * 86400e3 },
  default_range: "1h", max_rows: 1024, max_cols: 10000, default_rows: 256,
  flags: { soft: 1, conflict: 2, degraded: 4, unknown: 8 }, reserved_prefixes: [],
};
const KS = globalThis.makeKeyvizState(config);

test("an empty query is the default view, and the default view is no query", () => {
  const s = KS.readState("");
  assert.deepEqual(s, {
    series: "writes", range: "1h", from: null, to: null, startKey: "", endKey: "", rows: 256, cols: null,
    brightness: 1, live: true,
  });
  assert.equal(KS.stateQuery(s, "/keyviz/"), "/keyviz/");
});

test("a view survives the round trip through its URL", () => {
  const s = {
    series: "read_bytes", range: "custom", from: 1000, to: 5000, startKey: "YQ", endKey: "Yg", rows: 64,
    cols: 300, brightness: 2.5, live: false,
  };
  assert.deepEqual(KS.readState(KS.stateQuery(s, "/")), s);
});

test("bad values fall back to the defaults or the limits, never through", () => {
  const s = KS.readState("?series=drop&range=99y&rows=99999&cols=123456&brightness=-3&from=9&to=3");
  assert.equal(s.series, "writes");
  assert.equal(s.range, "1h");
  assert.equal(s.rows, 1024);
  assert.equal(s.cols, 10000);
  assert.equal(s.brightness, 0.25);
  assert.equal(s.from, null); // from >= to: not a custom window
});

test("the matrix query of a preset starts its length before now; a custom one is fixed", () => {
  const q = KS.matrixParams(KS.readState("?range=15m"), 700, 1000, {}, 1_000_000_000);
  assert.equal(q.get("from"), String(1_000_000_000 - 900e3));
  assert.equal(q.get("cols"), "700");
  assert.equal(q.get("step_ms"), "1000");
  assert.equal(q.get("format"), "bin");
  const c = KS.matrixParams(KS.readState("?from=5&to=9"), 700, null, { rows: null });
  assert.equal(c.get("to"), "9");
  assert.equal(c.has("rows"), false);
});

test("two queries for a window ending now match whatever their start", () => {
  assert.equal(KS.sameMatrix("series=writes&from=1000&cols=5", "cols=5&from=1003&series=writes"), true);
  assert.equal(KS.sameMatrix("series=writes&from=1&to=9", "series=writes&from=2&to=9"), false);
});
