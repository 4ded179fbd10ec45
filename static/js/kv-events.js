// Cluster events on the heatmap (GET /api/events, and "event" messages on the live
// stream): what each one says, which ones fall near a cell, and merging new ones in.
// Pure apart from fetchEvents: tests/js/kv-events.test.mjs.

const list = (v) => [].concat(v ?? []).map(String).join(", ");

/** One line saying what happened (the mark's tooltip, the drawer's list). */
export function describeEvent(ev) {
  const d = ev.details || {};
  const group = ev.raft_group_id ? `group ${ev.raft_group_id}` : "";
  switch (ev.type) {
    case "leader_changed":
      return `${group || "a group"}: leader ${d.from || d.previous_leader || "?"} → ${d.to || d.leader || ev.node_id || "?"}` +
        (d.term ? ` (term ${d.term})` : "");
    case "route_split":
      return `route ${d.route_id ?? "?"} split into ${list(d.into) || "?"}${group ? ` (${group})` : ""}`;
    case "route_merged":
      return `routes ${list(d.from) || "?"} merged into ${d.route_id ?? "?"}${group ? ` (${group})` : ""}`;
    case "route_moved":
      return `route ${d.route_id ?? "?"} moved from group ${d.from_group ?? "?"} to group ${d.to_group ?? "?"}`;
    case "node_down":
      return `node ${ev.node_id || "?"} went down`;
    case "node_up":
      return `node ${ev.node_id || "?"} came back`;
    case "node_joined":
      return `node ${ev.node_id || "?"} joined`;
    case "node_left":
      return `node ${ev.node_id || "?"} left`;
    case "keyviz_disabled":
      return `KeyViz disabled on ${ev.node_id || "a node"}`;
    case "node_token_rotation":
      return `node token rotation ${d.action || ""}${d.actor ? ` by ${d.actor}` : ""}`.trim();
    default:
      return `${String(ev.type || "event").replace(/_/g, " ")}${ev.node_id ? ` on ${ev.node_id}` : ""}`;
  }
}

/** Whether a value is an event as /api/events gives it (node-controlled: checked). */
export function isEvent(ev) {
  return Boolean(ev) && typeof ev === "object" && typeof ev.type === "string" && Number.isFinite(ev.unix_ms);
}

/** Events within `steps` columns of the column (end - step, end], oldest first. */
export function eventsNear(events, end, step, steps = 3) {
  const from = end - step - steps * step;
  const to = end + steps * step;
  return events.filter((e) => e.unix_ms > from && e.unix_ms <= to).sort((a, b) => a.unix_ms - b.unix_ms);
}

/** Add one event (a live message) unless the list has it already; keeps time order. */
export function mergeEvent(events, ev) {
  const same = (e) => e.type === ev.type && e.unix_ms === ev.unix_ms && e.node_id === ev.node_id &&
    e.raft_group_id === ev.raft_group_id;
  if (!isEvent(ev) || events.some(same)) return events;
  return [...events, ev].sort((a, b) => a.unix_ms - b.unix_ms);
}

/** GET /api/events for the window [from, to): the events oldest first, [] if unavailable. */
export async function fetchEvents(url, from, to, signal) {
  const q = new URLSearchParams({ from: String(Math.max(0, Math.floor(from))), to: String(Math.ceil(to)) });
  const resp = await fetch(`${url}?${q}`, { signal, headers: { Accept: "application/json" } });
  if (!resp.ok) return [];
  const doc = await resp.json();
  return (doc.events || []).filter(isEvent).sort((a, b) => a.unix_ms - b.unix_ms);
}
