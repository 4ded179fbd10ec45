// kv-labels.js: how a key is split for display (family label, reserved prefix tag, hex, ∞).
import assert from "node:assert/strict";
import { test } from "node:test";

import { keyParts, rowStartText } from "../../static/js/kv-labels.js";

const RESERVED = [["!txn|", "transaction records"], ["!redis|", "Redis"]];

test("a decoded family label is shown, the raw key kept for its title", () => {
  const p = keyParts("!sqs|route|jobs", false, "SQS queue jobs", RESERVED);
  assert.deepEqual(p, { kind: "label", text: "SQS queue jobs", raw: "!sqs|route|jobs" });
});

test("a reserved prefix becomes a tag and the rest stays text", () => {
  const p = keyParts("!txn|lock|k1", true, "", RESERVED);
  assert.equal(p.prefix, "!txn|");
  assert.equal(p.prefixTitle, "transaction records");
  assert.equal(p.text, "lock|k1");
});

test("a prefix the server did not mark reserved is left alone", () => {
  assert.equal(keyParts("!txn|x", false, "", RESERVED).prefix, "");
});

test("hex previews and the infinite ends are recognised", () => {
  assert.equal(keyParts("0x00ff", false, "", RESERVED).hex, true);
  assert.deepEqual(keyParts("-inf", false, "", RESERVED), { kind: "inf", text: "−∞", raw: "-inf" });
  assert.equal(rowStartText({ start_text: "-inf" }), "−∞");
  assert.equal(rowStartText({ start_text: "x", start_label: "DynamoDB table orders" }), "DynamoDB table orders");
});
