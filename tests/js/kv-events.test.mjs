// kv-events.js: what an event mark says, events near a cell, live events merged in.
import assert from "node:assert/strict";
import { test } from "node:test";

import { describeEvent, eventsNear, isEvent, mergeEvent } from "../../static/js/kv-events.js";

const ev = (type, unix_ms, extra = {}) => ({ type, unix_ms, node_id: "", raft_group_id: 0, details: {}, ...extra });

test("each event type says what happened", () => {
  assert.equal(describeEvent(ev("route_split", 1, { raft_group_id: 3, details: { route_id: 7, into: [8, 9] } })),
    "route 7 split into 8, 9 (group 3)");
  assert.equal(describeEvent(ev("route_merged", 1, { details: { route_id: 7, from: [8, 9] } })), "routes 8, 9 merged into 7");
  assert.equal(describeEvent(ev("node_down", 1, { node_id: "n2" })), "node n2 went down");
  assert.match(describeEvent(ev("leader_changed", 1, { raft_group_id: 2, node_id: "n3" })), /^group 2: leader .* → n3/);
  assert.equal(describeEvent(ev("something_new", 1, { node_id: "n1" })), "something new on n1");
});

test("events within three steps of a cell, oldest first", () => {
  const step = 60e3;
  const all = [ev("a", 10 * step), ev("b", 5 * step), ev("c", 13 * step), ev("d", 14 * step + 1), ev("e", 6 * step)];
  // The cell (9 min, 10 min]: from 6 min (exclusive) to 13 min.
  assert.deepEqual(eventsNear(all, 10 * step, step).map((e) => e.type), ["a", "c"]);
});

test("a live event is added once, in time order; malformed ones are ignored", () => {
  let list = [ev("a", 5), ev("b", 9)];
  list = mergeEvent(list, ev("c", 7));
  assert.deepEqual(list.map((e) => e.type), ["a", "c", "b"]);
  assert.equal(mergeEvent(list, ev("c", 7)).length, 3);
  assert.equal(mergeEvent(list, { type: "x" }).length, 3);
  assert.equal(isEvent(null), false);
});
