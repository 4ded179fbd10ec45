// The cell tooltip, the cell detail drawer and the totals as text. DOM rendering of what
// the page state `K` holds; node data only ever as text.

import { describeEvent, eventsNear } from "./kv-events.js";
import { facts, fill, h, section, tableHead } from "./kv-dom.js";
import { diagnosis, fmtCompact, fmtDuration, fmtRate, fmtValue, formatInt, isBytes, UNITS } from "./kv-format.js";
import { keyParts } from "./kv-labels.js";
import { cellRect, drawerSide } from "./kv-layout.js";
import { fmtClock, fmtDateTime, fmtRange, zoneName } from "./timefmt.js";

class ApiFailure extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** A key: its family's label ("SQS queue jobs") with the raw key as title, else the preview. */
export function keyNode(K, text, reservedLabel, label) {
  const p = keyParts(text, reservedLabel, label, K.reserved);
  if (p.kind === "inf") return h("span", { class: "key inf", text: p.text });
  if (p.kind === "label") return h("span", { class: "key label", title: text, text: p.text });
  return h("span", { class: "key" },
    p.prefix ? h("span", { class: "prefix", title: p.prefixTitle, text: p.prefix }) : null,
    h("span", { class: p.hex ? "key hex" : "key", text: p.text }));
}

export function keyRange(K, row) {
  return h("span", { class: "mono" },
    "[", keyNode(K, row.start_text, row.start_reserved, row.start_label), ", ",
    keyNode(K, row.end_text, row.end_reserved, row.end_label), ")");
}

/** Who did not report column c (unknown cells), as text. */
function missingText(K, c) {
  const nodes = c === undefined || !K.grid ? [] : K.missing.get(K.grid.times[c]) || [];
  return nodes.length ? nodes.join(", ") : "a node";
}

function flagNames(K, f, c) {
  const F = K.flags;
  const out = [];
  if (f & F.unknown) out.push(["unknown", `unknown: ${missingText(K, c)} did not report this column`]);
  if (f & F.conflict) out.push(["conflict", "conflict (writes deduplicated by group and term): nodes reported different counts; the larger is shown"]);
  if (f & F.soft) out.push(["soft", "soft estimate: sampled, outside the accuracy bound"]);
  return out;
}

function flagPills(K, flags, c) {
  return flagNames(K, flags, c).map(([name, title]) => h("span", { class: `kv-flag ${name}`, title, text: name }));
}

function routeList(row) {
  if (!row.route_ids || !row.route_ids.length) return "—";
  return `${row.route_ids.join(", ")}${row.route_ids_truncated ? " … (truncated)" : ""}`;
}

export function cellSummary(K, r, c) {
  const g = K.grid;
  const row = g.rows[r];
  const i = r * g.C + c;
  const [a, b] = g.window(c);
  return { row, value: g.values[i], flags: g.flags[i], start: a, end: b };
}

export const centerOf = (K, cell) => {
  const r = cellRect(K.plot, K.view, cell.r, cell.c);
  return { x: r.x + r.w / 2, y: r.y + r.h / 2 };
};

export function showTooltip(K, cell, anchor) {
  const { el } = K;
  if (!cell) {
    el.tooltip.hidden = true;
    return;
  }
  const series = K.state.series;
  const s = cellSummary(K, cell.r, cell.c);
  const seconds = K.grid.step < 60e3;
  const rate = s.value / (K.grid.step / 1000);
  const members = s.row.member_bucket_ids || [];
  const unknown = s.flags & K.flags.unknown;
  fill(el.tooltip,
    h("div", { class: "kv-tt-time" }, fmtRange(s.start, s.end, seconds),
      h("span", { class: "dim", text: ` · ${fmtDuration(K.grid.step)}` })),
    h("div", { class: "kv-tt-key" }, keyRange(K, s.row)),
    h("div", { class: "kv-tt-bucket mono" }, s.row.bucket_id,
      s.row.label ? h("span", { class: "kv-tag", text: s.row.label }) : null,
      members.length ? h("span", { class: "dim", text: ` · ${members.length} rows joined` }) : null),
    unknown
      ? h("div", { class: "kv-tt-value" }, h("strong", { text: "unknown" }),
        h("span", { class: "dim", text: s.value ? ` · at least ${fmtValue(series, s.value)} ${isBytes(series) ? "" : UNITS[series]}` : "" }))
      : h("div", { class: "kv-tt-value" }, h("strong", { text: fmtValue(series, s.value) }), ` ${isBytes(series) ? "" : UNITS[series]}`,
        h("span", { class: "dim", text: ` · ${fmtRate(series, rate)}/s` })),
    unknown ? h("div", { class: "kv-tt-unknown", text: `unknown: ${missingText(K, cell.c)} did not report this column` }) : null,
    flagNames(K, s.flags, cell.c).length ? h("div", { class: "kv-tt-flags" }, flagPills(K, s.flags, cell.c)) : null,
    h("div", { class: "kv-tt-hint", text: K.pinned ? "pinned · Esc to release" : "click for node detail" }),
  );
  el.tooltip.hidden = false;
  el.tooltip.dataset.bucket = s.row.bucket_id;
  el.tooltip.dataset.column = String(K.grid.times[cell.c]);
  el.tooltip.dataset.value = String(s.value);
  el.tooltip.dataset.unknown = String(Boolean(unknown));
  placeTooltip(K, anchor);
}

/**
 * Keep the tooltip inside the stage, on the side away from the pointer, and out from
 * under the open drawer (the drawer covers the window's edge, over the stage).
 */
function placeTooltip(K, anchor) {
  const { el } = K;
  const box = el.tooltip.getBoundingClientRect();
  const stage = el.stage.getBoundingClientRect();
  let left = 4;
  let right = K.css.width - 4;
  if (!el.drawer.hidden) {
    const d = el.drawer.getBoundingClientRect();
    if (el.drawer.dataset.side === "left") left = Math.max(left, d.right - stage.left + 4);
    else right = Math.min(right, d.left - stage.left - 4);
  }
  let x = anchor.x + 16;
  let y = anchor.y + 14;
  if (x + box.width > right) x = anchor.x - box.width - 16;
  if (x < left) x = Math.min(right - box.width, Math.max(left, anchor.x + 16));
  if (y + box.height > K.css.height - 4) y = Math.max(4, anchor.y - box.height - 14);
  el.tooltip.style.left = `${Math.max(4, x)}px`;
  el.tooltip.style.top = `${y}px`;
}

// ---------------------------------------------------------------- totals as text

export function renderTotalsText(K, totals) {
  const { el } = K;
  const g = K.grid;
  if (!g || !totals) return;
  const series = K.state.series;
  const grand = totals.rows.reduce((a, b) => a + b, 0);
  el.totalsCaption.textContent = `— ${fmtValue(series, grand)} ${UNITS[series]} in view`;
  el.canvas.setAttribute(
    "aria-label",
    `Heatmap of ${UNITS[series]}: ${g.R} key ranges × ${g.C} columns of ${fmtDuration(g.step)}, ` +
      `${fmtValue(series, grand)} in view. Totals as text follow the map.`,
  );
  const top = (arr, n) => Array.from(arr.keys()).filter((i) => arr[i] > 0).sort((a, b) => arr[b] - arr[a]).slice(0, n);
  el.rowTotals.replaceChildren(
    ...top(totals.rows, 20).map((i) => {
      const row = g.rows[totals.r0 + i];
      return h("tr", {}, h("td", { class: "kv-key-cell" }, keyRange(K, row)),
        h("td", { class: "mono", text: row.bucket_id }), h("td", { class: "num", text: fmtValue(series, totals.rows[i]) }));
    }),
  );
  el.colTotals.replaceChildren(
    ...top(totals.cols, 20).map((i) => {
      const [a, b] = g.window(totals.c0 + i);
      return h("tr", {}, h("td", { text: fmtRange(a, b, true) }),
        h("td", { class: "num", text: fmtValue(series, totals.cols[i]) }));
    }),
  );
}

// ---------------------------------------------------------------- cell detail drawer

export function closeDrawer(K) {
  if (K.drawerRequest) K.drawerRequest.abort();
  K.el.drawer.hidden = true;
  document.body.classList.remove("kv-drawer-open");
}

/** Dock the drawer on the side of the window away from the pinned cell (and its tooltip). */
export function placeDrawer(K, cell) {
  const { el } = K;
  const canvasBox = el.canvas.getBoundingClientRect();
  const r = cellRect(K.plot, K.view, cell.r, cell.c);
  const viewport = { x: canvasBox.left + r.x, w: Math.max(1, r.w) };
  const width = el.drawer.getBoundingClientRect().width || Math.min(480, window.innerWidth);
  const side = drawerSide(viewport, window.innerWidth, width);
  el.drawer.dataset.side = side;
}

export function openDrawer(K, cell, hooks) {
  const { el } = K;
  const g = K.grid;
  const s = cellSummary(K, cell.r, cell.c);
  const series = K.state.series;
  const row = s.row;
  const members = row.member_bucket_ids || [];
  el.drawer.hidden = false;
  document.body.classList.add("kv-drawer-open");
  placeDrawer(K, cell);
  el.drawerTitle.textContent = row.bucket_id;
  const seconds = g.step < 60e3;
  const near = eventsNear(K.events, s.end, g.step);
  const head = [
    section("Cell",
      facts([
        ["Window", `${fmtRange(s.start, s.end, seconds)} (${fmtDuration(g.step)})`],
        ["Value", h("span", {}, h("strong", { text: fmtValue(series, s.value) }), ` ${isBytes(series) ? "" : UNITS[series]}`)],
        ["Flags", s.flags ? h("span", {}, flagPills(K, s.flags, cell.c)) : "none"],
        ["Key range", keyRange(K, row)],
        ["Adapter", row.label || "—"],
      ])),
    section(`Cluster events within 3 steps (${near.length})`,
      near.length
        ? h("ul", { class: "kv-events-list", id: "kv-cell-events" }, near.map((ev) =>
          h("li", { dataset: { type: ev.type } },
            h("span", { class: "mono dim", text: `${fmtDateTime(ev.unix_ms)} ${zoneName()}` }), " ",
            describeEvent(ev))))
        : h("p", { class: "caption", id: "kv-cell-events", text: "No leader change, route change or node event near this cell." })),
    section("Routes behind this row",
      facts([
        ["Routes", routeList(row)],
        ["Route count", String(row.route_count || members.length || 1)],
        ...(row.lineage_id ? [["Lineage", row.lineage_id]] : []),
      ]),
      members.length
        ? h("div", { class: "kv-members" },
          h("p", {
            class: "caption",
            text: `An aggregate of ${members.length} rows joined by the row budget; pick one for its detail:`,
          }),
          h("ul", {}, members.map((m) =>
            h("li", {}, h("button", { type: "button", class: "kv-link", text: m, onclick: () => loadBucket(K, m, cell) })))))
        : null),
  ];
  const detail = h("div", { id: "kv-bucket-detail" });
  el.drawerBody.replaceChildren(...head.filter(Boolean), detail);
  el.drawer.focus({ preventScroll: true });
  hooks?.opened?.();
  if (members.length) {
    detail.replaceChildren(section("This row over the window", sparkline(K, rowSeries(K, cell.r), cell.c)));
  } else {
    loadBucket(K, row.bucket_id, cell);
  }
}

function rowSeries(K, r) {
  const g = K.grid;
  return { times: g.times, values: Array.from(g.values.subarray(r * g.C, (r + 1) * g.C)) };
}

async function loadBucket(K, bucketId, cell) {
  const { cfg } = K;
  const g = K.grid;
  const detail = document.getElementById("kv-bucket-detail");
  detail.replaceChildren(h("p", { class: "kv-loading", text: `Loading ${bucketId} from the history…` }));
  if (K.drawerRequest) K.drawerRequest.abort();
  const request = (K.drawerRequest = new AbortController());
  const q = new URLSearchParams({
    series: K.state.series,
    from: String(Math.max(0, g.times[0] - g.step)),
    to: String(g.times[g.C - 1] + 1),
  });
  let doc;
  try {
    const resp = await fetch(`${cfg.bucketUrl}${encodeURIComponent(bucketId)}?${q}`, { signal: request.signal });
    doc = await resp.json();
    if (!resp.ok) throw new ApiFailure(resp.status, doc.message || resp.statusText);
  } catch (err) {
    if (err.name === "AbortError") return;
    detail.replaceChildren(h("p", { class: "banner bad", text: `Cell detail unavailable: ${err.message}` }));
    return;
  }
  const [start, end] = g.window(cell.c);
  const mine = doc.contributions.filter((c) => c.column_unix_ms > start && c.column_unix_ms <= end);
  const series = K.state.series;
  const prefix = doc.bucket.start_text === "-inf" ? "" : doc.bucket.start_text;
  const routes = h("span", {}, (doc.bucket.route_ids || []).map((id, i) => [i ? ", " : "",
    h("a", { href: `${cfg.routesUrl}?prefix=${encodeURIComponent(prefix)}`, text: String(id) })]));
  const groups = (doc.groups || []).map((gr) => h("tr", { dataset: { group: String(gr.raft_group_id) } },
    h("td", { class: "num", text: String(gr.raft_group_id) }),
    h("td", {}, gr.leader_node_id ? h("span", { text: gr.leader_node_id }) : h("span", { class: "pill bad", text: "no leader" })),
    h("td", { class: "num", text: String(gr.leader_term) }),
    h("td", {}, h("a", { href: `${cfg.routesUrl}?group=${gr.raft_group_id}`, text: "routes" }), " · ",
      h("a", { href: cfg.raftUrl, text: "Raft" }))));
  const failed = (doc.nodes || []).filter((n) => !n.ok);
  fill(detail,
    section("Raft group and leader",
      groups.length
        ? h("table", { class: "data", id: "kv-detail-groups" },
          tableHead(["Group", "Leader now", "Term", "Pages"], [0, 2]), h("tbody", {}, groups))
        : h("p", { class: "caption", text: "No node stamped a Raft group on this row's cells (aggregates and empty cells carry none)." }),
      h("p", { class: "caption" }, "Routes: ", routes)),
    section(`Each node's contribution to this cell (${mine.length})`,
      mine.length
        ? h("table", { class: "data", id: "kv-contributions" },
          tableHead(["Node", "Value", "Group", "Term", "Node's column"], [1, 2, 3]),
          h("tbody", {}, mine.map((c) => h("tr", { dataset: { node: c.node } },
            h("td", {}, c.node, c.soft ? h("span", { class: "kv-flag soft", text: "soft" }) : null),
            h("td", { class: "num", text: fmtValue(series, c.value) }),
            h("td", { class: "num", text: c.raft_group_id ? String(c.raft_group_id) : "—" }),
            h("td", { class: "num", text: c.leader_term ? String(c.leader_term) : "—" }),
            h("td", { text: `${fmtClock(c.node_column_unix_ms, true)} ${zoneName()}` })))))
        : h("p", {
          class: "caption",
          text: doc.per_node === false
            ? "Each node's figures are kept at the nodes' step only (the finest tier); this window shows merged values."
            : "No node reported anything for this cell.",
        })),
    section("This row over the window", sparkline(K, { times: doc.column_unix_ms, values: doc.bucket.values }, null, end)),
    Object.keys(doc.per_adapter || {}).length
      ? section("Per adapter (nodes that serve GetRouteDetail)", h("table", { class: "data" },
        h("thead", {}, h("tr", {}, ["Node", "Adapter", "Operation", "Requests", "p99"].map((t) => h("th", { text: t })))),
        h("tbody", {}, Object.entries(doc.per_adapter).flatMap(([node, list]) => list.map((a) => h("tr", {},
          h("td", { text: node }), h("td", { text: a.adapter }), h("td", { text: a.operation }),
          h("td", { class: "num", text: formatInt(a.requests) }), h("td", { class: "num", text: `${(a.p99_ns / 1e6).toFixed(2)} ms` })))))))
      : null,
    failed.length
      ? h("p", {
        class: "banner bad compact",
        text: `The collector reaches ${doc.nodes.length - failed.length} of ${doc.nodes.length} nodes: ` +
          failed.map((n) => `${n.node}: ${diagnosis(n)}`).join("; "),
      })
      : null,
  );
}

/** A small bar chart of one row over time; the pinned column highlighted. */
function sparkline(K, { times, values }, markIndex, markTime) {
  const T = K.theme;
  const width = 400;
  const height = 90;
  const canvas = h("canvas", { width: width * 2, height: height * 2, class: "kv-spark", role: "img" });
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const series = K.state.series;
  const max = Math.max(1, ...values);
  const total = values.reduce((a, b) => a + b, 0);
  canvas.setAttribute("aria-label", `${values.length} columns, total ${fmtValue(series, total)}, peak ${fmtValue(series, max)}`);
  const ctx = canvas.getContext("2d");
  ctx.scale(2, 2);
  ctx.fillStyle = T.sparkBg;
  ctx.fillRect(0, 0, width, height);
  const n = Math.max(1, values.length);
  const bw = (width - 2) / n;
  values.forEach((v, i) => {
    const hit = markIndex === i || (markTime !== undefined && times[i] === markTime);
    ctx.fillStyle = hit ? T.sparkMark : T.sparkBar;
    const bh = (v / max) * (height - 16);
    ctx.fillRect(1 + i * bw, height - 2 - bh, Math.max(1, bw - (bw > 3 ? 1 : 0)), bh);
  });
  ctx.fillStyle = T.sparkInk;
  ctx.font = '10px system-ui, "DejaVu Sans", sans-serif';
  ctx.fillText(`peak ${fmtCompact(series, max)}`, 4, 10);
  return h("div", { class: "kv-spark-wrap" }, canvas,
    h("p", { class: "caption", text: `${values.length} columns · total ${fmtValue(series, total)} · peak ${fmtValue(series, max)}` }));
}
