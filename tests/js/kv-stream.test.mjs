// kv-stream.js: reconnect backoff and the retry of a subscribe refused with 429.
import assert from "node:assert/strict";
import { test } from "node:test";

import { backoff, retryDelay } from "../../static/js/kv-stream.js";

test("backoff doubles up to its cap, with at most 20 % jitter", () => {
  const mid = () => 0.5;
  assert.equal(backoff(0, 500, 15000, mid), 500);
  assert.equal(backoff(3, 500, 15000, mid), 4000);
  assert.equal(backoff(10, 500, 15000, mid), 15000);
  assert.equal(backoff(0, 1000, 30e3, () => 0), 800);
  assert.equal(Math.round(backoff(0, 1000, 30e3, () => 1)), 1200);
});

test("a refused subscribe waits what the server says, else backs off", () => {
  assert.equal(retryDelay({ code: 429, retry_after_ms: 2500 }, 0), 2500);
  assert.equal(retryDelay({ code: 429, retry_after: 3 }, 0), 3000);
  assert.equal(retryDelay({ code: 429 }, 0, () => 0.5), 1000);
  assert.equal(retryDelay({ code: 429 }, 2, () => 0.5), 4000);
  assert.equal(retryDelay({ code: 429, retry_after_ms: 10 ** 9 }, 0), 60e3);
});
