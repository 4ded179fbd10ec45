// The Key Visualizer's view state <-> URL, and the first matrix request.
//
// A classic script in <head>: the first GET /api/keyviz/matrix leaves while the rest of
// the page still loads (heatmap.js, a module, runs only once the document is parsed),
// which takes the page's own loading off the time to first paint. heatmap.js takes that
// response when it asks for the same matrix, and everything below from window.KeyvizState.
//
// The constants (series, window presets, row and column limits) come from the server in
// the "kv-config" JSON script placed before this one (keyviz/views.py page_config).
// makeKeyvizState is pure: tests/js/keyviz-state.test.mjs runs it under node.
(() => {
  function makeKeyvizState(config) {
    const SERIES = config.series;
    const RANGES = config.ranges_ms;
    const MAX_ROWS = config.max_rows;
    const MAX_COLS = config.max_cols;
    const DEFAULT_ROWS = config.default_rows;
    const DEFAULT_RANGE = config.default_range;
    // The column count the page last derived from its width (heatmap.js keeps it), so a
    // visit can ask for the matrix before any layout.
    const COLS_KEY = "keyviz.cols";

    function readState(search) {
      const q = new URLSearchParams(search);
      const num = (name) => {
        const v = q.get(name);
        return v !== null && /^\d+$/.test(v) ? Number(v) : null;
      };
      const series = SERIES.includes(q.get("series")) ? q.get("series") : SERIES[0];
      const from = num("from");
      const to = num("to");
      const custom = from !== null && to !== null && from < to;
      const rows = Math.min(MAX_ROWS, Math.max(1, num("rows") || DEFAULT_ROWS));
      const cols = num("cols");
      const brightness = Math.min(4, Math.max(0.25, Number(q.get("brightness")) || 1));
      return {
        series,
        range: custom ? "custom" : (RANGES[q.get("range")] ? q.get("range") : DEFAULT_RANGE),
        from: custom ? from : null,
        to: custom ? to : null,
        startKey: q.get("start_key") || "",
        endKey: q.get("end_key") || "",
        rows,
        cols: cols ? Math.min(MAX_COLS, cols) : null,
        brightness,
        live: q.get("live") !== "0",
      };
    }

    /** The query string of view `s` (defaults left out), or `pathname` when all default. */
    function stateQuery(s, pathname) {
      const q = new URLSearchParams();
      if (s.series !== SERIES[0]) q.set("series", s.series);
      if (s.range === "custom") {
        q.set("from", String(s.from));
        q.set("to", String(s.to));
      } else if (s.range !== DEFAULT_RANGE) q.set("range", s.range);
      if (s.startKey) q.set("start_key", s.startKey);
      if (s.endKey) q.set("end_key", s.endKey);
      if (s.rows !== DEFAULT_ROWS) q.set("rows", String(s.rows));
      if (s.cols) q.set("cols", String(s.cols));
      if (s.brightness !== 1) q.set("brightness", s.brightness.toFixed(2));
      if (!s.live) q.set("live", "0");
      const text = q.toString();
      return text ? `?${text}` : pathname;
    }

    /** The query of GET /api/keyviz/matrix for view `s`, `cols` columns wide, at `now`. */
    function matrixParams(s, cols, liveStep, overrides = {}, now = Date.now()) {
      const q = new URLSearchParams({ series: s.series, rows: String(s.rows), format: "bin" });
      q.set("cols", String(s.cols || cols));
      if (s.range === "custom") {
        q.set("from", String(s.from));
        q.set("to", String(s.to));
      } else {
        q.set("from", String(Math.max(0, now - RANGES[s.range])));
      }
      if (s.startKey) q.set("start_key", s.startKey);
      if (s.endKey) q.set("end_key", s.endKey);
      // The step the live stream reported: the API need not infer it (it cannot from a
      // window holding a column or two per node).
      if (liveStep) q.set("step_ms", String(liveStep));
      for (const [k, v] of Object.entries(overrides)) {
        if (v === null) q.delete(k);
        else q.set(k, String(v));
      }
      return q;
    }

    /** Whether two matrix queries ask for the same thing; a window that ends now may
     *  start a few milliseconds apart. */
    function sameMatrix(a, b) {
      const x = new URLSearchParams(a);
      const y = new URLSearchParams(b);
      if (!x.has("to") && !y.has("to")) {
        x.delete("from");
        y.delete("from");
      }
      x.sort();
      y.sort();
      return x.toString() === y.toString();
    }

    return {
      SERIES, RANGES, MAX_ROWS, MAX_COLS, DEFAULT_ROWS, DEFAULT_RANGE, COLS_KEY,
      readState, stateQuery, matrixParams, sameMatrix,
    };
  }

  globalThis.makeKeyvizState = makeKeyvizState;
  const script = typeof document !== "undefined" ? document.currentScript : null;
  const configNode = script && document.getElementById("kv-config");
  if (!configNode) return; // not on the page (node --test loads the factory only)

  const me = script.dataset;
  const config = JSON.parse(configNode.textContent);
  const api = makeKeyvizState(config);

  function storedCols() {
    try {
      return Number(localStorage.getItem(api.COLS_KEY)) || 0;
    } catch {
      return 0; // storage refused (privacy settings): no early request
    }
  }

  let first = null;
  const state = api.readState(location.search);
  const cols = state.cols || storedCols();
  if (cols) {
    const params = api.matrixParams(state, cols, null);
    const controller = new AbortController();
    const response = fetch(`${me.matrixUrl}?${params}`, {
      signal: controller.signal,
      headers: { Accept: "application/octet-stream" },
    });
    response.catch(() => {}); // heatmap.js reports failures of the request it takes
    first = { params: params.toString(), controller, response };
  }

  window.KeyvizState = {
    ...api,
    config,
    /** The request sent at page load, once: {params, controller, response} or null. */
    takeFirst() {
      const taken = first;
      first = null;
      return taken;
    },
  };
})();
