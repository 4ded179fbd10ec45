// The Key Visualizer page: draws the merged KeyViz matrix and keeps it live.
//
// Data flow: the page fetches GET /api/keyviz/matrix?format=bin (the compact form,
// kv-matrix.js), maps every value once to a byte on a log scale, colours the bytes
// through a lookup table (kv-colour.js) into an off-screen canvas with one pixel per
// cell, and draws the visible part of that canvas scaled onto the screen (kv-draw.js).
// Hover and the brush only redraw a transparent overlay canvas (kv-interact.js).
//
// Live: one WebSocket to /api/stream (kv-stream.js), subscribed to the chosen series.
// Each merged column is appended (the window scrolls), new rows from a split are
// inserted in key order, and every drawn column is acknowledged (the server keeps at
// most a few unacknowledged columns per viewer and sends "resync" when a viewer falls
// behind). A reconnect fills the gap from the matrix API. While the pointer is on the
// map the view does not scroll: columns wait (acknowledged) until it leaves.
//
// All state that defines a view lives in the URL (keyviz-state.js) so a view can be
// shared. The page's state is the object K made by init() and passed to the modules.
// No inline scripts or handlers: everything is wired here, and text from nodes only
// ever reaches the DOM through textContent.

import { buildScale, readTheme } from "./kv-colour.js";
import { centerOf, closeDrawer, openDrawer, renderTotalsText, showTooltip } from "./kv-detail.js";
import { download, h } from "./kv-dom.js";
import {
  computeMarks, draw as drawCanvas, drawOverlay, drawScale, makePatterns, paintAll, paintColumn, paintShift,
  remapBytes, visibleTotals,
} from "./kv-draw.js";
import { describeEvent, fetchEvents, isEvent, mergeEvent } from "./kv-events.js";
import { exportPng, matrixCsv } from "./kv-export.js";
import { diagnosis, fmtDuration } from "./kv-format.js";
import { cellIdentity, resolveCell, wireInteraction } from "./kv-interact.js";
import { clampView, fullView, isMagnified, newestHidden, plotOf, viewAtNow } from "./kv-layout.js";
import { b64ToUrl, decodeMatrix, Grid } from "./kv-matrix.js";
import { LiveStream } from "./kv-stream.js";
import {
  fmtDateTime, fmtRange, fromInput, preferenceCookie, prefersLocal, toInput, useLocalTime, zoneName,
} from "./timefmt.js";

class ApiFailure extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// Live columns held while the pointer rests on the map, at most.
const MAX_HELD = 60;

/** Live applies to a window that ends now (a preset); a zoomed or custom window is fixed. */
const liveWanted = (s) => s.live && s.range !== "custom";
const zoomed = (s) => s.range === "custom" || Boolean(s.startKey || s.endKey);

/** The page's elements, looked up once the document is there. */
function elements() {
  const $ = (id) => document.getElementById(id);
  return {
    root: $("keyviz"),
    controls: $("kv-controls"),
    custom: $("kv-custom"),
    from: $("kv-from"),
    to: $("kv-to"),
    rows: $("kv-rows"),
    brightness: $("kv-brightness"),
    live: $("kv-live"),
    back: $("kv-back"),
    reset: $("kv-reset"),
    now: $("kv-now"),
    livePill: $("kv-live-status"),
    apiLink: $("kv-api-link"),
    summary: $("kv-summary"),
    zoomLabel: $("kv-zoom-label"),
    notice: $("kv-notice"),
    banner: $("kv-banner"),
    stage: $("kv-stage"),
    canvas: $("kv-canvas"),
    overlay: $("kv-overlay"),
    events: $("kv-events"),
    tooltip: $("kv-tooltip"),
    message: $("kv-message"),
    scale: $("kv-scale"),
    scaleMin: $("kv-scale-min"),
    scaleMax: $("kv-scale-max"),
    scaleUnit: $("kv-scale-unit"),
    totalsCaption: $("kv-totals-caption"),
    rowTotals: $("kv-row-totals").tBodies[0],
    colTotals: $("kv-col-totals").tBodies[0],
    drawer: $("kv-drawer"),
    drawerClose: $("kv-drawer-close"),
    tz: $("kv-tz"),
    tzLabels: document.querySelectorAll("[data-tz-name]"),
    drawerTitle: $("kv-drawer-title"),
    drawerBody: $("kv-drawer-body"),
    exportPng: $("kv-export-png"),
    exportCsv: $("kv-export-csv"),
    exportJson: $("kv-export-json"),
  };
}

/** The page state: what is shown and how, passed explicitly to the modules. */
function makeState(el, KS) {
  const config = KS.config;
  const theme = readTheme((name) => getComputedStyle(el.root).getPropertyValue(name));
  const scale = buildScale(theme);
  return {
    el,
    cfg: el.root.dataset,
    KS,
    flags: config.flags,
    reserved: config.reserved_prefixes,
    theme,
    scale,
    patterns: makePatterns(el.canvas, scale.unknownRgb),
    state: KS.readState(location.search),
    grid: null,
    vmax: 0,
    view: { x0: 0, x1: 1, y0: 0, y1: 1 }, // visible cells (canvas zoom), fractional
    plot: { x: 0, y: 0, w: 1, h: 1 },
    css: { width: 1, height: 1, dpr: 1 },
    off: document.createElement("canvas"), // one pixel per cell
    hover: null, // { r, c, bucket, t }
    pinned: null,
    cursor: null, // keyboard cell
    drag: null,
    marks: { conflict: 0, soft: 0, unknown: 0 }, // flagged cells
    masks: {
      conflict: document.createElement("canvas"),
      soft: document.createElement("canvas"),
      unknown: document.createElement("canvas"),
    },
    missing: new Map(), // column time -> nodes that did not report it (unknown cells)
    markLayer: document.createElement("canvas"),
    totals: { key: "", rows: null, cols: null, r0: 0, c0: 0 },
    events: [], // cluster events of the window, oldest first (kv-events.js)
    eventsDrawn: [],
    eventsRequest: null,
    loading: null, // AbortController of the matrix fetch
    liveStep: null,
    pendingAck: null,
    drawQueued: false,
    liveQueue: [],
    frozen: false, // the pointer is on the map: live columns wait
    filling: false,
    loadAttempt: 0, // failed loads in a row (retry backoff)
    loadRetry: 0,
    lastLiveAt: 0, // when the live stream last said something about this series
    collector: null, // the collector's status from the matrix API
    storeMessage: "",
    amended: 0,
    pushed: 0, // history entries this page pushed (for Back)
    prof: {}, // timestamps of the last load (window.keyviz.timing)
    liveDraws: [],
    firstPaintMs: null,
    drawerRequest: null,
    pins: 0, // cells pinned since load (test hook)
    subscribes: 0, // "subscribed" answers for the series shown (test hook)
  };
}

function init() {
  const el = elements();
  const KS = window.KeyvizState;
  const K = makeState(el, KS);
  // Times: UTC unless the user chose local time (timefmt.js; the choice is a cookie).
  useLocalTime(prefersLocal(document.cookie));

  // ------------------------------------------------------------ drawing

  function requestDraw() {
    if (K.drawQueued) return;
    K.drawQueued = true;
    requestAnimationFrame(() => {
      K.drawQueued = false;
      draw();
    });
  }

  let totalsTimer = 0;
  function draw() {
    const totals = drawCanvas(K);
    const g = K.grid;
    renderEventMarks();
    syncNow();
    if (!g) return;
    if (totals) {
      clearTimeout(totalsTimer);
      totalsTimer = setTimeout(() => renderTotalsText(K, totals), 250);
    }
    showMessage(g.R ? "" : K.storeMessage ? `No data: ${K.storeMessage}.` : "No traffic in this window and key range yet.");
    el.canvas.dataset.state = "ready";
    el.canvas.dataset.rows = String(g.R);
    el.canvas.dataset.cols = String(g.C);
    el.canvas.dataset.series = g.series;
    el.canvas.dataset.lastColumn = String(g.C ? g.times[g.C - 1] : 0);
    if (K.firstPaintMs === null) {
      K.firstPaintMs = performance.now();
      performance.mark("keyviz:first-paint");
    }
    if (K.pendingAck !== null) {
      const t = K.pendingAck;
      K.pendingAck = null;
      K.liveDraws.push({ column_unix_ms: t, drawn_unix_ms: Date.now(), emitted_unix_ms: K.lastEmitted });
      if (K.liveDraws.length > 100) K.liveDraws.shift();
      live.ack(t);
    }
  }

  /** The event marks as elements over the canvas: a title says what happened. */
  function renderEventMarks() {
    el.events.replaceChildren(...K.eventsDrawn.map(({ ev, x, y, rows }) => {
      const mark = h("span", {
        class: `kv-event-mark${rows ? " route" : ""}`,
        title: `${fmtDateTime(ev.unix_ms)} ${zoneName()} · ${describeEvent(ev)}`,
        dataset: { type: ev.type, unixMs: String(ev.unix_ms) },
      });
      mark.style.left = `${x - 6}px`; // CSSOM, not a style attribute (CSP-proof)
      mark.style.top = `${y - 6}px`;
      return mark;
    }));
  }

  /** "Jump to now": shown while live and the magnified view does not reach the newest column. */
  function syncNow() {
    el.now.hidden = !(K.grid && liveWanted(K.state) && newestHidden(K.grid, K.view));
  }

  function setView(view) {
    K.view = view;
    requestDraw();
  }

  // ------------------------------------------------------------ pin and zoom

  function pin(cell, anchor) {
    K.pinned = cellIdentity(K, cell);
    K.cursor = K.pinned;
    K.pins++;
    openDrawer(K, cell);
    showTooltip(K, cell, anchor || centerOf(K, cell));
    drawOverlay(K);
  }

  function unpin() {
    K.pinned = null;
    el.tooltip.hidden = true;
    closeDrawer(K);
    drawOverlay(K);
  }

  /** Canvas zoom (pixel magnification) around a point; the server is not asked. */
  function magnify(factor, pt) {
    const p = K.plot;
    const v = K.view;
    const fx = pt ? Math.min(1, Math.max(0, (pt.x - p.x) / p.w)) : 0.5;
    const fy = pt ? Math.min(1, Math.max(0, (pt.y - p.y) / p.h)) : 0.5;
    const cx = v.x0 + fx * (v.x1 - v.x0);
    const cy = v.y0 + fy * (v.y1 - v.y0);
    const w = (v.x1 - v.x0) * factor;
    const hgt = (v.y1 - v.y0) * factor;
    setView(clampView(K.grid, { x0: cx - fx * w, x1: cx + (1 - fx) * w, y0: cy - fy * hgt, y1: cy + (1 - fy) * hgt }));
  }

  /** Brush: ask the server for that time window and key range (real re-bucketing). */
  function zoomInto(a, b) {
    const g = K.grid;
    const c0 = Math.min(a.c, b.c);
    const c1 = Math.max(a.c, b.c);
    const r0 = Math.min(a.r, b.r);
    const r1 = Math.max(a.r, b.r);
    // A node column belongs to the boundary nearest to it: ask for half a step either side.
    const from = Math.max(0, g.times[c0] - Math.floor(g.step / 2));
    const to = g.times[c1] + Math.ceil(g.step / 2);
    navigate({
      ...K.state, range: "custom", from, to,
      startKey: b64ToUrl(g.rows[r0].start), endKey: b64ToUrl(g.rows[r1].end), live: false,
    }, true);
  }

  /** The pointer entered or left the map: hold live columns while it is on it. */
  function pointerOnMap(on) {
    if (on === K.frozen) return;
    K.frozen = on;
    if (on) {
      if (live.subscribed && K.grid) setLivePill("paused", "live · paused while the pointer is on the map");
      return;
    }
    const queued = K.liveQueue.splice(0);
    for (const msg of queued) applyLive(msg, false, true);
    if (live.subscribed && el.livePill.dataset.state === "paused") livePillNow(true);
  }

  wireInteraction(K, {
    requestDraw, pin, unpin, zoomInto, magnify, pointerOnMap,
    resetView: () => setView(fullView(K.grid)),
  });

  // ------------------------------------------------------------ banner and status

  function renderBanner(nodes, warnings = []) {
    const failed = nodes.filter((n) => n.ok === false || n.failed);
    const parts = [];
    if (failed.length) {
      parts.push(h("div", { class: "kv-banner-bad", dataset: { testid: "kv-node-banner" } },
        h("strong", { text: `${nodes.length - failed.length} of ${nodes.length} nodes responded.` }),
        " Cells they would have counted are marked unknown.",
        h("ul", {}, failed.map((n) => h("li", { dataset: { node: n.node, cause: n.cause || "" }, title: n.error || "" },
          h("strong", { text: n.node }),
          n.address && n.address !== n.node ? h("code", { text: ` ${n.address}` }) : null,
          `: ${diagnosis(n)}`, n.code ? h("span", { class: "code", text: n.code }) : null)))));
    }
    for (const w of warnings) parts.push(h("div", { class: "kv-banner-warn", text: w }));
    el.banner.replaceChildren(...parts);
    el.banner.hidden = parts.length === 0;
  }

  /** What the page should say about the collector (the store's writer), from the API. */
  function collectorWarnings() {
    const c = K.collector;
    if (!K.grid) return [];
    if (!c) return K.storeMessage ? [`History: ${K.storeMessage}.`] : [];
    const out = [];
    const step = c.step_ms || K.grid.step;
    if (c.age_ms !== null && c.age_ms > Math.max(3 * step, 30e3)) {
      out.push(`The collector last wrote ${fmtDuration(c.age_ms)} ago${c.holder ? ` (${c.holder})` : ""}: recent history may be missing.`);
    }
    if (c.last_error) out.push(`Collector: ${c.last_error}`);
    return out;
  }

  /** Live node status -> the banner's shape (node statuses). */
  function liveNodes(summary) {
    const failed = new Map(summary.failed.map((f) => [f.node, f]));
    const late = (summary.late || []).filter((n) => !failed.has(n));
    const list = [...failed.values()].map((f) => ({ ...f, ok: false }));
    const error = "late: its column had not arrived a step after the boundary";
    for (const n of late) list.push({ node: n, ok: false, error, code: "LATE" });
    const ok = Math.max(0, summary.total - list.length);
    return [...list, ...Array.from({ length: ok }, (_, i) => ({ node: `ok${i}`, ok: true }))];
  }

  function renderSummary() {
    const g = K.grid;
    if (!g) return;
    const s = K.state;
    const first = g.C ? g.window(0)[0] : null;
    const last = g.C ? g.times[g.C - 1] : null;
    const seconds = g.step < 60e3;
    const nodes = K.nodes || [];
    const ok = nodes.filter((n) => n.ok).length;
    el.summary.replaceChildren(
      h("strong", { text: `${g.R} × ${g.C}` }), ` cells · ${fmtDuration(g.step)} columns`,
      g.C ? ` · ${fmtRange(first, last, seconds)}` : "",
      !nodes.length && !K.collector && K.storeMessage
        ? h("span", { class: "kv-bad", text: " · no collector yet" })
        : h("span", { class: nodes.length && ok < nodes.length ? "kv-bad" : "kv-ok", text: ` · ${ok} of ${nodes.length} nodes` }),
      K.collector && K.collector.age_ms !== null
        ? h("span", { dataset: { testid: "kv-collector-age" }, text: ` · collector ${fmtDuration(Math.max(1000, Math.round((K.collector.age_ms + Date.now() - K.collectorAt) / 1000) * 1000))} ago` })
        : "",
    );
    const zoom = [];
    if (s.range === "custom") zoom.push("fixed window");
    if (s.startKey || s.endKey) {
      const r0 = g.rows[0];
      const r1 = g.rows[g.R - 1];
      zoom.push(r0 ? `keys [${r0.start_label || r0.start_text}, ${r1.end_label || r1.end_text})` : "key range");
    }
    el.zoomLabel.hidden = zoom.length === 0;
    el.zoomLabel.textContent = zoom.length ? `zoomed: ${zoom.join(" · ")}` : "";
  }

  function setLivePill(state, text) {
    el.livePill.dataset.state = state;
    el.livePill.textContent = text;
  }

  let noticeTimer = 0;
  function notice(text) {
    el.notice.textContent = text;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { el.notice.textContent = ""; }, 8000);
  }

  function showMessage(text) {
    el.message.hidden = !text;
    el.message.textContent = text || "";
  }

  // ------------------------------------------------------------ geometry

  function layout() {
    const dpr = window.devicePixelRatio || 1;
    const width = Math.max(480, el.stage.clientWidth);
    const top = el.stage.getBoundingClientRect().top + window.scrollY;
    const height = Math.max(380, Math.min(1100, window.innerHeight - top - 64));
    for (const canvas of [el.canvas, el.overlay]) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
      canvas.style.width = `${width}px`;
      canvas.style.height = `${height}px`;
    }
    el.stage.style.height = `${height}px`;
    K.css = { width, height, dpr };
    K.plot = plotOf(width, height);
    try {
      localStorage.setItem(KS.COLS_KEY, String(autoCols()));
    } catch {
      /* storage refused: the next visit asks after layout */
    }
  }

  // ------------------------------------------------------------ loading a view

  /** Columns the map is wide (one per CSS pixel) when the view does not fix them. */
  const autoCols = () => Math.max(60, Math.min(KS.MAX_COLS, Math.floor(K.plot.w)));
  const matrixParams = (s, overrides = {}) => KS.matrixParams(s, autoCols(), K.liveStep, overrides);

  async function fetchMatrix(params, signal) {
    // The request keyviz-state.js sent at page load, if it asked for this matrix.
    const first = KS.takeFirst();
    let request;
    K.prof.early = Boolean(first && KS.sameMatrix(first.params, params));
    if (K.prof.early) {
      signal?.addEventListener("abort", () => first.controller.abort());
      request = first.response;
    } else {
      first?.controller.abort();
      request = fetch(`${K.cfg.matrixUrl}?${params}`, { signal, headers: { Accept: "application/octet-stream" } });
    }
    const resp = await request;
    if (!resp.ok) {
      let message = resp.statusText;
      try { message = (await resp.json()).message || message; } catch { /* not JSON */ }
      throw new ApiFailure(resp.status, message);
    }
    const body = await resp.arrayBuffer();
    K.prof.received = performance.now();
    K.prof.bytes = body.byteLength;
    const decoded = decodeMatrix(body, K.flags);
    K.prof.decoded = performance.now();
    return decoded;
  }

  /** The cluster events of the grid's window (marks on the time axis, the drawer's list). */
  async function loadEvents() {
    const g = K.grid;
    if (K.eventsRequest) K.eventsRequest.abort();
    if (!g || !g.C || !K.cfg.eventsUrl) return;
    const request = (K.eventsRequest = new AbortController());
    try {
      const from = g.times[0] - g.step;
      const to = liveWanted(K.state) ? Date.now() + 60e3 : g.times[g.C - 1] + 1;
      K.events = await fetchEvents(K.cfg.eventsUrl, from, to, request.signal);
    } catch (err) {
      if (err.name === "AbortError") return;
      K.events = []; // events are an aid: the map stands without them
    }
    if (request === K.eventsRequest) K.eventsRequest = null;
    el.events.dataset.loaded = "true";
    requestDraw();
  }

  /** Fetch and draw the view `K.state` describes; start or stop live accordingly. */
  async function load() {
    const s = K.state;
    syncControls();
    if (K.loading) K.loading.abort();
    const controller = (K.loading = new AbortController());
    el.canvas.dataset.state = "loading";
    el.canvas.setAttribute("aria-busy", "true");
    K.liveQueue = [];
    const started = performance.now();
    let decoded;
    try {
      decoded = await fetchMatrix(matrixParams(s), controller.signal);
    } catch (err) {
      if (err.name === "AbortError") return;
      if (controller === K.loading) K.loading = null;
      el.canvas.dataset.state = "error";
      el.canvas.removeAttribute("aria-busy");
      showMessage(`The matrix could not be loaded: ${err.message}`);
      el.summary.textContent = "No data";
      renderBanner([]);
      if (liveWanted(s)) {
        // Keep trying by itself (the portal restarting, the database back): never green
        // on "No data".
        const delay = Math.min(15000, 1000 * 2 ** K.loadAttempt++) * (0.8 + 0.4 * Math.random());
        setLivePill("down", `no data · retrying in ${Math.ceil(delay / 1000)} s`);
        clearTimeout(K.loadRetry);
        K.loadRetry = setTimeout(() => { if (!K.loading) load(); }, delay);
        live.start(s.series);
      }
      return;
    }
    if (controller !== K.loading) return;
    K.loading = null;
    K.loadAttempt = 0;
    clearTimeout(K.loadRetry);
    setGrid(new Grid(decoded, s.range === "custom" ? null : KS.RANGES[s.range]));
    K.nodes = decoded.header.nodes;
    K.missing = missingMap(decoded.header.missing_nodes);
    K.collector = decoded.header.collector;
    K.storeMessage = decoded.header.message || "";
    K.collectorAt = Date.now();
    renderBanner(K.nodes, [...K.grid.warnings, ...collectorWarnings()]);
    renderSummary();
    if (K.grid.C === 0) requestDraw(); // the store's message, if any
    el.canvas.removeAttribute("aria-busy");
    const p = K.prof;
    K.timing = {
      fetchMs: p.received - started, // request sent -> every byte in
      decodeMs: p.decoded - p.received,
      colourMs: p.painted - p.decoded, // bytes, lookup table, off-screen canvas
      drawMs: p.drawn - p.painted,
      renderMs: performance.now() - p.received, // bytes in -> on screen, all of it
      bytes: p.bytes,
      early: p.early, // the request keyviz-state.js sent from <head>
    };
    loadEvents();
    // Columns that arrived while the matrix was on its way.
    for (const msg of K.liveQueue.splice(0)) applyLive(msg);
    // A coarse tier (7 d, 30 d) ends at its last compacted column: bring in the newer
    // minutes at the nodes' step, so live continues from now rather than leaving a hole.
    if (liveWanted(s) && decoded.header.tier > 0 && K.grid.C) fillGap();
    if (liveWanted(s)) live.start(s.series);
    else live.stop(s.range === "custom" ? "live off (fixed window)" : "live off");
  }

  /** {"<column ms>": [nodes]} of the matrix API -> Map. */
  function missingMap(doc) {
    return new Map(Object.entries(doc || {}).map(([t, nodes]) => [Number(t), nodes]));
  }

  function setGrid(grid) {
    K.grid = grid;
    K.vmax = grid.maxValue();
    K.view = fullView(grid);
    K.hover = K.pinned = K.cursor = null;
    el.tooltip.hidden = true;
    closeDrawer(K);
    remapAll();
    K.prof.painted = performance.now();
    K.totals.key = "";
    draw();
    K.prof.drawn = performance.now();
  }

  function remapAll() {
    remapBytes(K);
    paintAll(K);
    computeMarks(K);
    drawScale(K);
  }

  /** Put the controls in line with the state. */
  function syncControls() {
    const s = K.state;
    for (const input of el.controls.elements.series) input.checked = input.value === s.series;
    for (const input of el.controls.elements.range) input.checked = input.value === s.range;
    el.custom.hidden = s.range !== "custom";
    if (s.range === "custom") {
      el.from.value = toInput(s.from);
      el.to.value = toInput(s.to);
    }
    el.rows.value = String(s.rows);
    if (!Array.from(el.rows.options).some((o) => o.value === String(s.rows))) {
      el.rows.append(h("option", { value: String(s.rows), text: String(s.rows) }));
      el.rows.value = String(s.rows);
    }
    el.brightness.value = String(s.brightness);
    el.brightness.setAttribute("aria-valuetext", `${s.brightness.toFixed(2)}×`);
    el.live.checked = liveWanted(s);
    el.live.disabled = s.range === "custom";
    el.live.parentElement.title = s.range === "custom" ? "Live follows the latest window; pick a preset window" : "";
    el.back.disabled = K.pushed <= 0;
    el.reset.disabled = !zoomed(s);
    const api = new URLSearchParams(matrixParams(s));
    api.set("format", "json");
    el.apiLink.href = `${K.cfg.matrixUrl}?${api}`;
  }

  /** Change the view: the URL first (push for zooms, replace for settings), then load. */
  function navigate(next, push = false) {
    K.state = next;
    const url = KS.stateQuery(next, location.pathname);
    if (push) {
      history.pushState({ keyviz: true }, "", url);
      K.pushed++;
    } else history.replaceState({ keyviz: true }, "", url);
    load();
  }

  window.addEventListener("popstate", () => {
    K.pushed = Math.max(0, K.pushed - 1);
    K.state = KS.readState(location.search);
    load();
  });

  // ------------------------------------------------------------ controls

  el.controls.addEventListener("change", (e) => {
    const t = e.target;
    const s = { ...K.state };
    if (t.name === "series") navigate({ ...s, series: t.value });
    else if (t.name === "range") {
      if (t.value === "custom") {
        // Start the custom window from what is on screen. Live stops now (a fixed window
        // does not follow the clock): the pill must not say "live" while it is off.
        const g = K.grid;
        const to = g && g.C ? g.times[g.C - 1] : Date.now();
        const from = g && g.C ? g.window(0)[0] : to - KS.RANGES[KS.DEFAULT_RANGE];
        K.state = { ...s, range: "custom", from, to, live: false };
        live.stop("live off (custom window: Apply to load it)");
        syncControls();
      } else navigate({ ...s, range: t.value, from: null, to: null, live: s.live || s.range === "custom" });
    } else if (t === el.rows) navigate({ ...s, rows: Number(t.value) });
    else if (t === el.live) navigate({ ...s, live: t.checked });
    else if (t === el.tz) setZone(t.value === "local");
  });

  /** Switch between UTC and local time, remember it, and redraw every time shown. */
  function setZone(local) {
    useLocalTime(local);
    document.cookie = preferenceCookie(local);
    syncZone();
    if (K.state.range === "custom") syncControls();
    if (K.grid) {
      draw();
      renderSummary();
      renderTotalsText(K, visibleTotals(K));
    }
  }

  function syncZone() {
    el.tz.value = prefersLocal(document.cookie) ? "local" : "utc";
    el.tzLabels.forEach((n) => (n.textContent = zoneName()));
  }
  syncZone();

  el.controls.addEventListener("submit", (e) => {
    e.preventDefault();
    const from = fromInput(el.from.value);
    const to = fromInput(el.to.value);
    if (!(from < to)) {
      notice("Custom window: from must be before to.");
      return;
    }
    navigate({ ...K.state, range: "custom", from, to, live: false }, true);
  });

  el.brightness.addEventListener("input", () => {
    const b = Number(el.brightness.value);
    K.state = { ...K.state, brightness: b };
    el.brightness.setAttribute("aria-valuetext", `${b.toFixed(2)}×`);
    if (K.grid) {
      remapAll();
      requestDraw();
    }
    clearTimeout(K.brightnessTimer);
    K.brightnessTimer = setTimeout(() => history.replaceState({ keyviz: true }, "", KS.stateQuery(K.state, location.pathname)), 300);
  });

  el.back.addEventListener("click", () => { if (K.pushed > 0) history.back(); });
  el.reset.addEventListener("click", () => {
    const s = K.state;
    navigate({ ...s, range: s.range === "custom" ? KS.DEFAULT_RANGE : s.range, from: null, to: null, startKey: "", endKey: "", live: true }, true);
  });
  el.now.addEventListener("click", () => {
    if (K.grid) setView(viewAtNow(K.grid, K.view));
  });

  // ------------------------------------------------------------ export

  const exportName = (ext) => {
    const g = K.grid;
    const stamp = g && g.C ? new Date(g.times[g.C - 1]).toISOString().replace(/[:]/g, "-").replace(/\..*/, "") : "empty";
    return `keyviz-${K.state.series}-${stamp}.${ext}`;
  };

  el.exportPng.addEventListener("click", () => {
    exportPng(K).toBlob((blob) => blob && download(blob, exportName("png")), "image/png");
  });

  el.exportCsv.addEventListener("click", () => {
    if (!K.grid) return;
    download(new Blob([matrixCsv(K)], { type: "text/csv" }), exportName("csv"));
  });

  el.exportJson.addEventListener("click", () => {
    const g = K.grid;
    if (!g) return;
    const F = K.flags;
    // The same shape as GET /api/keyviz/matrix?format=json.
    const setColumns = (r, bit) => {
      const out = [];
      for (let c = 0; c < g.C; c++) if (g.flags[r * g.C + c] & bit) out.push(c);
      return out;
    };
    const doc = {
      series: g.series,
      step_ms: g.step,
      column_unix_ms: g.times,
      rows: g.rows.map((row, r) => {
        const { _start, live: _live, ...meta } = row;
        return {
          ...meta,
          // Unknown cells are null here (the API sends the reporting nodes' part and lists
          // them in "unknown"): an export must not read as zero traffic.
          values: Array.from(g.values.subarray(r * g.C, (r + 1) * g.C), (v, c) =>
            g.flags[r * g.C + c] & F.unknown ? null : v),
          soft: setColumns(r, F.soft),
          conflict: setColumns(r, F.conflict),
          degraded: setColumns(r, F.degraded),
          unknown: setColumns(r, F.unknown),
        };
      }),
      warnings: g.warnings,
      nodes: K.nodes || [],
      missing_nodes: Object.fromEntries(K.missing),
      events: K.events,
    };
    download(new Blob([JSON.stringify(doc)], { type: "application/json" }), exportName("json"));
  });

  // ------------------------------------------------------------ live

  const live = new LiveStream(K.cfg.streamUrl, {
    onMessage: onLiveMessage,
    onReady,
    setPill: setLivePill,
  });

  /** Connected: after a reconnect, fill the gap from the matrix API first. */
  async function onReady(reconnected) {
    if (reconnected && !K.grid) {
      // No matrix yet (the portal was down when the page loaded): load() subscribes.
      clearTimeout(K.loadRetry);
      if (!K.loading) load();
      return;
    }
    if (reconnected && K.grid.C) await fillGap();
    if (live.series) live.subscribe(live.series);
  }

  function onLiveMessage(msg) {
    switch (msg.type) {
      case "subscribed":
        if (msg.series !== K.state.series) return;
        K.subscribes++;
        if (msg.step_ms) {
          const misaligned = K.grid && K.grid.C && K.grid.step % msg.step_ms !== 0;
          K.liveStep = msg.step_ms;
          if (misaligned && !K.loading) {
            // The matrix was merged on a step inferred from too few columns: redo it on
            // the nodes' step, so live columns line up with it.
            load();
            return;
          }
        }
        K.lastLiveAt = Date.now();
        if (msg.nodes) K.liveStatus = msg.nodes;
        if (!K.grid) {
          // Subscribed, but the matrix could not be loaded: not live until it is.
          setLivePill("connecting", "live · waiting for data"); // load()'s retry timer runs
          return;
        }
        setLivePill("live", `live${msg.step_ms ? ` · ${fmtDuration(msg.step_ms)} steps` : ""}`);
        break;
      case "column":
      case "amend":
        if (msg.series !== K.state.series || !live.subscribed) return;
        K.lastLiveAt = Date.now();
        if (K.loading || K.filling) K.liveQueue.push(msg);
        else if (K.frozen && K.liveQueue.length < MAX_HELD) {
          // The pointer is on the map: the column waits (acknowledged, so the server
          // does not count this viewer as behind) until it leaves.
          K.liveQueue.push(msg);
          live.ack(msg.column_unix_ms);
        } else {
          // A pointer resting on the map holds at most MAX_HELD columns, then the view moves on.
          for (const held of K.liveQueue.splice(0)) applyLive(held, false, true);
          applyLive(msg);
        }
        break;
      case "status":
        if (msg.series === K.state.series) {
          K.nodes = liveNodes(msg.nodes);
          renderBanner(K.nodes);
          renderSummary();
        }
        break;
      case "event":
        // A cluster event as it is recorded (the same shape as one /api/events entry).
        if (isEvent(msg.event)) {
          K.events = mergeEvent(K.events, msg.event);
          requestDraw();
        }
        break;
      case "route_transition":
        notice(`Route ${msg.parent_route_id} → ${msg.child_route_ids.join(", ")} (${msg.child_route_ids.length > 1 ? "split" : "merge"})`);
        break;
      case "resync":
        // This tab fell behind (hidden, or too slow): refetch, then subscribe again.
        notice("Live view caught up from the matrix API after falling behind.");
        resync();
        break;
      case "error":
        notice(`Live stream: ${msg.message}`);
        break;
      default:
        break; // a message type this page does not know (a newer server): ignored
    }
  }

  async function resync() {
    if (K.grid && K.grid.C) await fillGap();
    else await load();
    if (live.series) live.subscribe(live.series);
  }

  /** Live, as the pill says it: green only while columns arrive and there is a matrix. */
  function livePillNow(force = false) {
    if (!live.subscribed) return;
    if (!K.grid) {
      setLivePill("connecting", "live · waiting for data");
      return;
    }
    if (K.frozen && !force) return; // "paused" while the pointer is on the map
    const step = K.liveStep || K.grid.step;
    const quiet = Date.now() - K.lastLiveAt;
    if (K.lastLiveAt && quiet > Math.max(10 * step, 60e3) && live.ws) {
      // A socket that says nothing for this long may be half-dead (a proxy or the network
      // dropped it silently): reconnect, which refetches the gap and subscribes again.
      K.lastLiveAt = Date.now();
      live.ws.close();
    } else if (K.lastLiveAt && quiet > Math.max(3 * step, 20e3)) {
      setLivePill("connecting", `live · no column for ${fmtDuration(Math.round(quiet / 1000) * 1000)}`);
    } else if (el.livePill.dataset.state !== "live") {
      setLivePill("live", `live${K.liveStep ? ` · ${fmtDuration(K.liveStep)} steps` : ""}`);
    }
  }
  setInterval(livePillNow, 2000);

  /** A queued or arriving live message: a new column, or an amendment of one. */
  function applyLive(msg, filled = false, acked = false) {
    if (msg.type === "amend") applyAmend(msg, acked);
    else applyLiveColumn(msg, filled, acked);
    livePillNow();
  }

  /** Remember who did not report a column (the tooltip names them on unknown cells). */
  function noteMissing(t, nodes) {
    if (nodes && nodes.length) K.missing.set(t, nodes.slice());
    else K.missing.delete(t);
  }

  /** The nodes a live message says did not report its column. */
  function liveMissing(msg) {
    if (Array.isArray(msg.missing)) return msg.missing;
    const failed = (msg.nodes && msg.nodes.failed) || [];
    return failed.map((f) => f.node);
  }

  /** Add the rows a message names that the page lacks (key order); -1: no metadata. */
  /** A live message's cells as one column of the grid's rows (values summed, flags or'd). */
  function liveCells(g, msg) {
    const vals = new Float64Array(g.R);
    const flgs = new Uint8Array(g.R);
    for (const cell of msg.rows) {
      const r = g.index.get(cell.bucket_id);
      vals[r] += cell.value;
      flgs[r] |= cell.flags || 0;
    }
    return { vals, flgs };
  }

  function insertLiveRows(g, msg) {
    const meta = new Map((msg.new_rows || []).map((r) => [r.bucket_id, r]));
    let inserted = 0;
    for (const cell of msg.rows) {
      if (g.index.has(cell.bucket_id)) continue;
      const m = meta.get(cell.bucket_id);
      if (!m) return -1;
      g.insertRow(m);
      inserted++;
    }
    return inserted;
  }

  /**
   * An amendment (late node data, a node back with its columns): it replaces the column of
   * the same time. A column made of several steps (a long window) is refetched from the
   * matrix API, since the page cannot take the old part of one step out of it.
   */
  function applyAmend(msg, acked) {
    const g = K.grid;
    if (!g) return;
    const t = msg.column_unix_ms;
    const c = g.times.indexOf(t);
    const wide = K.liveStep && g.step > K.liveStep;
    if (wide) {
      refetchTail();
      return;
    }
    if (c < 0) {
      // Newer than the page's newest column: it is simply the next column.
      if (!g.C || t > g.times[g.C - 1]) applyLiveColumn({ ...msg, type: "column" }, false, acked);
      return;
    }
    const before = viewAnchor();
    const inserted = insertLiveRows(g, msg);
    if (inserted < 0) {
      load();
      return;
    }
    const { vals, flgs } = liveCells(g, msg);
    g.hold(vals);
    const C = g.C;
    let colMax = 0;
    for (let r = 0; r < g.R; r++) {
      g.values[r * C + c] = vals[r];
      g.flags[r * C + c] = flgs[r];
      g.flagBits |= flgs[r];
      colMax = Math.max(colMax, vals[r]);
    }
    g.version++;
    noteMissing(t, liveMissing(msg));
    if (inserted || colMax > K.vmax) {
      K.vmax = g.maxValue();
      remapAll();
    } else {
      remapBytes(K, c, g.values.length, C);
      paintColumn(K, c);
      computeMarks(K);
    }
    reanchor(before);
    K.totals.key = "";
    renderSummary();
    K.amended = (K.amended || 0) + 1;
    if (!acked) K.pendingAck = g.times[C - 1];
    requestDraw();
  }

  /** Refetch the newest columns of a view whose columns span several steps (amendments). */
  let refetchTimer = 0;
  function refetchTail() {
    clearTimeout(refetchTimer);
    refetchTimer = setTimeout(() => {
      if (!K.loading) load();
    }, 2000);
  }

  /**
   * Fold one column message into the grid: rows it names that the page does not
   * have are inserted in key order with the metadata the server sent. `filled`:
   * a gap before it was already filled as far as the API could (do not ask again).
   */
  function applyLiveColumn(msg, filled = false, acked = false) {
    const g = K.grid;
    if (!g) return;
    const t = msg.column_unix_ms;
    if (msg.step_ms) K.liveStep = msg.step_ms;
    K.lastEmitted = msg.emitted_unix_ms;
    const last = g.C ? g.times[g.C - 1] : null;
    // A hole (a reconnect, a stall upstream): fill it from the matrix API first.
    if (!filled && last !== null && K.liveStep && t - last > 1.5 * Math.max(K.liveStep, g.step)) {
      K.liveQueue.push(msg);
      fillGap();
      return;
    }
    // An empty matrix (nothing stored yet) has no step of its own: take the live one.
    if (!g.C && K.liveStep) g.step = K.liveStep;
    const before = viewAnchor();
    const inserted = insertLiveRows(g, msg);
    if (inserted < 0) {
      // A row the page has no metadata for: the view is stale; start over.
      load();
      return;
    }
    noteMissing(t, liveMissing(msg));
    const { vals, flgs } = liveCells(g, msg);
    const change = g.addColumn(t, vals, flgs, K.liveStep);
    if (msg.nodes) {
      K.nodes = liveNodes(msg.nodes);
      renderBanner(K.nodes, g.warnings);
    }
    if (change === "none") {
      if (!acked) live.ack(t);
      return;
    }
    if (inserted) notice(`${inserted} new row${inserted > 1 ? "s" : ""} (a split or a new route)`);
    // New rows change the shape: recolour everything rather than one column.
    afterChange(inserted ? "grow" : change, before);
    if (!acked) K.pendingAck = t;
    requestDraw();
  }

  /** What the view shows before the grid changes: full or not, its moments, the cells. */
  function viewAnchor() {
    const g = K.grid;
    const v = K.view;
    const atEdge = g.C === 0 || v.x1 >= g.C - 0.01;
    const t0 = g.C ? g.times[Math.min(g.C - 1, Math.max(0, Math.floor(v.x0)))] : 0;
    return { full: !isMagnified(g, v), atEdge, t0, frac: v.x0 - Math.floor(v.x0) };
  }

  /**
   * After the grid changed (a column, an amendment, new rows): a full view stays full; a
   * magnified view at the newest column follows the clock, one further back keeps its
   * moments (and "Jump to now" appears). Hover, cursor and pin stay on their cells.
   */
  function reanchor(before) {
    const g = K.grid;
    if (before.full) K.view = fullView(g);
    else if (before.atEdge) K.view = viewAtNow(g, K.view);
    else {
      const c = g.times.indexOf(before.t0);
      const w = K.view.x1 - K.view.x0;
      const x0 = c >= 0 ? c + before.frac : 0;
      K.view = clampView(g, { ...K.view, x0, x1: x0 + w });
    }
    K.hover = resolveCell(K, K.hover);
    K.cursor = resolveCell(K, K.cursor);
    if (K.pinned) {
      K.pinned = resolveCell(K, K.pinned);
      if (!K.pinned) unpin(); // its column scrolled out of the window
    }
  }

  /** Recolour what changed; keep the view anchored (reanchor). */
  function afterChange(change, before) {
    const g = K.grid;
    let colMax = 0;
    const c = g.C - 1;
    for (let r = 0; r < g.R; r++) colMax = Math.max(colMax, g.values[r * g.C + c]);
    if (change === "grow" || colMax > K.vmax) {
      K.vmax = g.maxValue();
      remapAll();
    } else {
      remapBytes(K, c, g.values.length, g.C);
      if (change === "shift") paintShift(K);
      else paintColumn(K, c);
      computeMarks(K);
    }
    reanchor(before);
    renderSummary();
  }

  /**
   * Columns after the newest one the page has, from the matrix API at full
   * resolution (1024 rows, no column budget), folded in like live columns.
   */
  async function fillGap() {
    const g = K.grid;
    if (!g || K.filling) return;
    K.filling = true;
    try {
      const last = g.times[g.C - 1];
      const step = K.liveStep || g.step;
      const before = viewAnchor();
      // Ask from a few steps back, in case the newest columns were amended meanwhile.
      // Columns the page already has are skipped (or replaced by the store's copy).
      const params = matrixParams(K.state, {
        from: Math.max(0, last - 4 * step),
        to: null,
        rows: KS.MAX_ROWS,
        cols: KS.MAX_COLS,
        start_key: null,
        end_key: null,
      });
      let gap;
      try {
        gap = await fetchMatrix(params);
      } catch (err) {
        if (err.status === 400 || err.status === 503) return; // nothing new yet / nobody answered
        throw err;
      }
      const R = gap.header.n_rows;
      const C = gap.header.n_cols;
      // Map the gap's rows onto the page's; an aggregate must land in one page row.
      const target = new Int32Array(R);
      for (let i = 0; i < R; i++) {
        const row = gap.header.rows[i];
        const ids = row.member_bucket_ids && row.member_bucket_ids.length ? row.member_bucket_ids : [row.bucket_id];
        const hits = new Set(ids.map((id) => g.index.get(id)));
        if (hits.size === 1 && !hits.has(undefined)) target[i] = [...hits][0];
        else if (!row.aggregate) target[i] = -1; // new row: insert below
        else { load(); return; }
      }
      for (let i = 0; i < R; i++) {
        if (target[i] === -1) g.insertRow(gap.header.rows[i]);
      }
      for (let i = 0; i < R; i++) {
        const row = gap.header.rows[i];
        target[i] = g.index.get(row.bucket_id) ?? g.index.get(row.member_bucket_ids?.[0]);
      }
      for (const [t, nodes] of missingMap(gap.header.missing_nodes)) K.missing.set(t, nodes);
      let change = "none";
      for (let c = 0; c < C; c++) {
        const vals = new Float64Array(g.R);
        const flgs = new Uint8Array(g.R);
        for (let i = 0; i < R; i++) {
          vals[target[i]] += gap.values[i * C + c];
          flgs[target[i]] |= gap.flags[i * C + c];
        }
        const t = gap.times[c];
        // Columns of the nodes' step fold into a coarser grid (a 7 d view's 15 min columns).
        const gapStep = gap.header.step_ms;
        if (g.step % gapStep !== 0 || t > Date.now() + gapStep) continue; // not on this grid
        const did = g.addColumn(t, vals, flgs, K.liveStep || gapStep);
        if (did !== "none") change = change === "none" && did !== "grow" ? did : "grow";
      }
      if (change !== "none") {
        afterChange("grow", before);
        requestDraw();
      }
    } catch (err) {
      notice(`Could not fill the live gap: ${err.message}`);
    } finally {
      K.filling = false;
      const queued = K.liveQueue.splice(0);
      for (const msg of queued) applyLive(msg, true);
    }
  }

  // ------------------------------------------------------------ test and benchmark hooks

  /** A cell (row r, column c) by bucket and column time (the newest without t), or null. */
  function cellOf(bucketId, t) {
    const g = K.grid;
    if (!g) return null;
    const r = g.index.get(bucketId);
    const c = t === undefined ? g.C - 1 : g.times.indexOf(t);
    return r === undefined || c < 0 ? null : { r, c };
  }

  /** Read-only hooks for the browser tests and benchmarks (nothing on the page uses them). */
  window.keyviz = {
    get state() { return { ...K.state }; },
    get ready() { return el.canvas.dataset.state === "ready"; },
    get firstPaintMs() { return K.firstPaintMs; },
    get timing() { return K.timing; },
    get liveDraws() { return K.liveDraws.slice(); },
    get amended() { return K.amended; }, // amendments applied (live)
    get view() { return { ...K.view }; },
    get pinned() { return K.pinned ? { bucket: K.pinned.bucket, t: K.pinned.t } : null; },
    get events() { return K.events.slice(); },
    get frozen() { return K.frozen; },
    get pins() { return K.pins; }, // cells pinned (a double-click pins none)
    get queued() { return K.liveQueue.length; }, // live columns waiting (pointer on the map)
    rowIds: () => (K.grid ? K.grid.rows.map((r) => r.bucket_id) : []),
    columns: () => (K.grid ? K.grid.times.slice() : []),
    timeTicks: () => (K.ticks || []).slice(), // the time axis' labels, as drawn
    keyLabels: () => (K.keyLabelsDrawn || []).slice(), // [{r, y}] of the key axis, as drawn
    rowMaxLabel: () => K.rowMaxLabel,
    value: (bucketId, t) => {
      const g = K.grid;
      const r = g.index.get(bucketId);
      const c = g.times.indexOf(t);
      return r === undefined || c < 0 ? null : g.values[r * g.C + c];
    },
    flags: (bucketId, t) => {
      const g = K.grid;
      const r = g.index.get(bucketId);
      const c = g.times.indexOf(t);
      return r === undefined || c < 0 ? null : g.flags[r * g.C + c];
    },
    /** A cell's rectangle in viewport coordinates, or null. */
    cellBox: (bucketId, t) => {
      const cell = cellOf(bucketId, t);
      if (!cell) return null;
      const box = el.canvas.getBoundingClientRect();
      const rect = cellRectOf(cell.r, cell.c);
      return { x: box.left + rect.x, y: box.top + rect.y, w: rect.w, h: rect.h };
    },
    /** The centre of a cell in viewport coordinates (for mouse events), or null. */
    cellCenter: (bucketId, t) => {
      const cell = cellOf(bucketId, t);
      if (!cell) return null;
      const box = el.canvas.getBoundingClientRect();
      const pt = centerOf(K, cell);
      return { x: box.left + pt.x, y: box.top + pt.y, ...cell };
    },
    get subscribes() { return K.subscribes; },
    /** Subscribe n times at once, as a page switching series quickly would (429 tests). */
    subscribeBurst: (n) => { for (let i = 0; i < n; i++) live.subscribe(K.state.series); },
    /** Close the live socket as a network failure would (reconnect tests). */
    dropConnection: () => live.ws && live.ws.close(),
    /** [r, g, b] drawn at the centre of a cell (pixel checks). */
    pixel: (bucketId, t) => {
      const at = window.keyviz.cellCenter(bucketId, t);
      if (!at) return null;
      return window.keyviz.pixelAt(at.x, at.y);
    },
    /** [r, g, b] drawn at a viewport point of the canvas. */
    pixelAt: (vx, vy) => {
      const box = el.canvas.getBoundingClientRect();
      const dpr = K.css.dpr;
      const x = Math.floor((vx - box.left) * dpr);
      const y = Math.floor((vy - box.top) * dpr);
      const data = el.canvas.getContext("2d").getImageData(x, y, 1, 1).data;
      return [data[0], data[1], data[2]];
    },
  };
  const cellRectOf = (r, c) => {
    const p = K.plot;
    const v = K.view;
    const w = p.w / (v.x1 - v.x0);
    const hh = p.h / (v.y1 - v.y0);
    return { x: p.x + (c - v.x0) * w, y: p.y + (r - v.y0) * hh, w, h: hh };
  };

  /** The theme changed (the toggle or the system's dark mode): re-read the CSS colours. */
  function retheme() {
    const theme = readTheme((name) => getComputedStyle(el.root).getPropertyValue(name));
    if (JSON.stringify(theme) === JSON.stringify(K.theme)) return; // another class (the drawer's)
    K.theme = theme;
    K.scale = buildScale(K.theme);
    K.patterns = makePatterns(el.canvas, K.scale.unknownRgb);
    if (K.grid) remapAll();
    draw();
  }
  window.matchMedia?.("(prefers-color-scheme: dark)").addEventListener?.("change", retheme);
  // A theme toggle sets an attribute or class on <html> or <body>, whichever it uses.
  const themeWatch = new MutationObserver(retheme);
  for (const node of [document.documentElement, document.body]) {
    themeWatch.observe(node, { attributes: true, attributeFilter: ["class", "data-theme", "style"] });
  }

  // ------------------------------------------------------------ boot

  layout();
  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      layout();
      if (K.grid) draw();
    }, 120);
  });
  history.replaceState({ keyviz: true }, "", KS.stateQuery(K.state, location.pathname));
  draw();
  load();
}

init();
