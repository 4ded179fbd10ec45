// Times as the portal shows them: UTC, like every server-rendered page, unless the
// user chose the browser's local time (a cookie, remembered for a year). The zone is
// always named next to a time, so a reader never has to guess which one it is.
// Pure functions of the chosen zone: no DOM, so node --test runs them (tests/js/).

export const COOKIE = "ekv_tz";
const YEAR_S = 365 * 86400;
const MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(" ");

let local = false;

/** Use the browser's local time (true) or UTC (false). */
export function useLocalTime(on) {
  local = Boolean(on);
}

export const isLocalTime = () => local;

/** The preference stored in `cookieHeader` (document.cookie): true for local time. */
export function prefersLocal(cookieHeader) {
  return (cookieHeader || "").split(";").some((c) => c.trim() === `${COOKIE}=local`);
}

/** The cookie that remembers the choice (assign it to document.cookie). */
export function preferenceCookie(on) {
  return `${COOKIE}=${on ? "local" : "utc"}; Path=/; Max-Age=${YEAR_S}; SameSite=Lax`;
}

/** The zone's name as shown next to times: "UTC", or the browser's zone ("Asia/Tokyo"). */
export function zoneName() {
  if (!local) return "UTC";
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
}

export const pad2 = (n) => String(n).padStart(2, "0");

function parts(t) {
  const d = new Date(t);
  return local
    ? { Y: d.getFullYear(), M: d.getMonth(), D: d.getDate(), h: d.getHours(), m: d.getMinutes(), s: d.getSeconds() }
    : { Y: d.getUTCFullYear(), M: d.getUTCMonth(), D: d.getUTCDate(), h: d.getUTCHours(), m: d.getUTCMinutes(), s: d.getUTCSeconds() };
}

/** "HH:MM" or "HH:MM:SS" in the chosen zone. */
export function fmtClock(t, seconds) {
  const p = parts(t);
  return `${pad2(p.h)}:${pad2(p.m)}${seconds ? ":" + pad2(p.s) : ""}`;
}

/** "YYYY-MM-DD HH:MM[:SS]" in the chosen zone. */
export function fmtDateTime(t, seconds = true) {
  const p = parts(t);
  return `${p.Y}-${pad2(p.M + 1)}-${pad2(p.D)} ${fmtClock(t, seconds)}`;
}

/** A window "YYYY-MM-DD HH:MM → HH:MM UTC": the zone named once, at the end. */
export function fmtRange(a, b, seconds) {
  return `${fmtDateTime(a, seconds)} → ${fmtClock(b, seconds)} ${zoneName()}`;
}

/** An axis tick: the day ("Dec 6") at midnight in the chosen zone, else the clock. */
export function fmtTick(t, seconds) {
  const p = parts(t);
  const midnight = p.h === 0 && p.m === 0 && p.s === 0;
  return { text: midnight && !seconds ? `${MONTHS[p.M]} ${p.D}` : fmtClock(t, seconds), midnight };
}

/** Milliseconds from UTC to the chosen zone's wall clock at `t` (ticks align to it). */
export function zoneOffsetMs(t) {
  return local ? -new Date(t).getTimezoneOffset() * 60e3 : 0;
}

/** A datetime-local input's value for `t`, in the chosen zone. */
export function toInput(t) {
  const p = parts(t);
  return `${p.Y}-${pad2(p.M + 1)}-${pad2(p.D)}T${fmtClock(t, true)}`;
}

/** A datetime-local input's value as unix ms, read in the chosen zone (NaN if invalid). */
export function fromInput(value) {
  if (!/^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?$/.test(value || "")) return NaN;
  return local ? new Date(value).getTime() : Date.parse(`${value}Z`);
}
