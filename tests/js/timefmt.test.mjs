// timefmt.js: UTC by default, local time only when chosen, the zone always named.
// Run with a non-UTC zone so local and UTC differ: TZ=Asia/Tokyo node --test tests/js
// (scripts/test.sh sets it; the tests set it themselves when run another way).
import assert from "node:assert/strict";
import { test } from "node:test";

process.env.TZ = process.env.TZ || "Asia/Tokyo";
const tf = await import("../../static/js/timefmt.js");

const T = Date.UTC(2026, 11, 6, 15, 30, 5); // 2026-12-07 00:30:05 in Tokyo

test("utc is the default and names its zone", () => {
  tf.useLocalTime(false);
  assert.equal(tf.fmtDateTime(T), "2026-12-06 15:30:05");
  assert.equal(tf.fmtRange(T, T + 60e3, false), "2026-12-06 15:30 → 15:31 UTC");
  assert.equal(tf.zoneOffsetMs(T), 0);
});

test("local time shows the browser's wall clock and names the browser's zone", () => {
  tf.useLocalTime(true);
  try {
    const offset = -new Date(T).getTimezoneOffset() * 60e3;
    assert.notEqual(offset, 0, "run these tests with a non-UTC TZ");
    const wall = new Date(T + offset);
    const hh = String(wall.getUTCHours()).padStart(2, "0");
    assert.equal(tf.fmtClock(T, false), `${hh}:30`);
    assert.equal(tf.zoneName(), Intl.DateTimeFormat().resolvedOptions().timeZone);
    assert.ok(tf.fmtRange(T, T, false).endsWith(` ${tf.zoneName()}`));
    assert.equal(tf.zoneOffsetMs(T), offset);
  } finally {
    tf.useLocalTime(false);
  }
});

test("an axis tick at the zone's midnight reads as the day", () => {
  const midnight = Date.UTC(2026, 11, 7);
  assert.deepEqual(tf.fmtTick(midnight, false), { text: "Dec 7", midnight: true });
  assert.deepEqual(tf.fmtTick(midnight + 3600e3, false), { text: "01:00", midnight: false });
  // With seconds shown, midnight stays a clock.
  assert.equal(tf.fmtTick(midnight, true).text, "00:00:00");
});

test("a custom window typed in utc reads back as the same instant", () => {
  assert.equal(tf.toInput(T), "2026-12-06T15:30:05");
  assert.equal(tf.fromInput("2026-12-06T15:30:05"), T);
  assert.equal(tf.fromInput("2026-12-06T15:30"), T - 5000);
});

test("a custom window typed in local time reads back as the same instant", () => {
  tf.useLocalTime(true);
  try {
    assert.equal(tf.fromInput(tf.toInput(T)), T);
  } finally {
    tf.useLocalTime(false);
  }
});

test("a malformed custom window is not a number, not some other instant", () => {
  for (const bad of ["", "yesterday", "2026-12-06", "2026-12-06T15:30Z", "2026-12-06T15:30+09:00"]) {
    assert.ok(Number.isNaN(tf.fromInput(bad)), bad);
  }
});

test("the preference cookie is remembered and read back exactly", () => {
  assert.equal(tf.prefersLocal(""), false);
  assert.equal(tf.prefersLocal("a=1; ekv_tz=local"), true);
  assert.equal(tf.prefersLocal("ekv_tz=utc"), false);
  assert.equal(tf.prefersLocal("xekv_tz=local"), false);
  const cookie = tf.preferenceCookie(true);
  assert.match(cookie, /^ekv_tz=local; Path=\/; Max-Age=\d+; SameSite=Lax$/);
  assert.equal(tf.prefersLocal(cookie.split(";")[0]), true);
});
