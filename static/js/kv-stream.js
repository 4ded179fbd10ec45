// The live stream client: one WebSocket to /api/stream, subscribe, acknowledge, reconnect
// with backoff, and retry a subscribe the server refused as too frequent (429). It only
// keeps the connection; what a message means is the page's business (`onMessage`).

/** Backoff with jitter: base * 2^attempt, at most `max`, ±20 % so tabs do not act in step. */
export function backoff(attempt, base, max, random = Math.random) {
  return Math.min(max, base * 2 ** attempt) * (0.8 + 0.4 * random());
}

/**
 * How long to wait before subscribing again after a refusal: the server's retry_after_ms
 * (or retry_after, seconds) when it says, else the backoff of this attempt.
 */
export function retryDelay(msg, attempt, random = Math.random) {
  const ms = Number(msg.retry_after_ms);
  if (Number.isFinite(ms) && ms > 0) return Math.min(60e3, ms);
  const s = Number(msg.retry_after);
  if (Number.isFinite(s) && s > 0) return Math.min(60e3, s * 1000);
  return backoff(attempt, 1000, 30e3, random);
}

export class LiveStream {
  /**
   * url: the stream path; hooks: {onMessage(msg), onReady(reconnected), setPill(state, text),
   * onRefused(delayMs)}.
   */
  constructor(url, hooks) {
    this.url = url;
    this.hooks = hooks;
    this.ws = null;
    this.series = null; // wanted
    this.subscribed = null;
    this.attempt = 0;
    this.refusals = 0; // subscribes refused in a row (429)
    this.retryTimer = 0;
    this.subscribeTimer = 0;
    this.everOpened = false;
  }

  start(series) {
    this.series = series;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.hooks.onReady(false);
    else if (!this.ws || this.ws.readyState > WebSocket.OPEN) this.open();
  }

  stop(label = "live off") {
    this.series = null;
    clearTimeout(this.retryTimer);
    clearTimeout(this.subscribeTimer);
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.subscribed) this.send({ type: "unsubscribe" });
    this.subscribed = null;
    this.hooks.setPill("off", label);
  }

  open() {
    clearTimeout(this.retryTimer);
    this.hooks.setPill("connecting", this.everOpened ? "reconnecting…" : "connecting…");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = (this.ws = new WebSocket(`${scheme}//${location.host}${this.url}`));
    ws.addEventListener("open", () => {
      const again = this.everOpened;
      this.everOpened = true;
      this.attempt = 0;
      if (this.series) this.hooks.onReady(again);
    });
    ws.addEventListener("message", (e) => {
      let msg;
      try { msg = JSON.parse(e.data); } catch { return; }
      if (!msg || typeof msg !== "object") return;
      if (msg.type === "error" && Number(msg.code) === 429) {
        this.refused(msg);
        return;
      }
      if (msg.type === "subscribed") this.refusals = 0;
      this.hooks.onMessage(msg);
    });
    ws.addEventListener("close", () => {
      if (this.ws !== ws) return;
      this.subscribed = null;
      clearTimeout(this.subscribeTimer);
      if (!this.series) return;
      // Backoff: 0.5 s, 1 s, 2 s ... 15 s.
      const delay = backoff(this.attempt, 500, 15000);
      this.attempt++;
      this.hooks.setPill("down", `reconnecting in ${Math.ceil(delay / 1000)} s`);
      this.retryTimer = setTimeout(() => this.open(), delay);
    });
  }

  /** The server refused a subscribe as too frequent: subscribe again later, not never. */
  refused(msg) {
    const wanted = this.subscribed || this.series;
    this.subscribed = null;
    if (!wanted) return;
    const delay = retryDelay(msg, this.refusals++);
    this.hooks.setPill("connecting", `live · rate-limited, retrying in ${Math.ceil(delay / 1000)} s`);
    this.hooks.onRefused?.(delay);
    clearTimeout(this.subscribeTimer);
    this.subscribeTimer = setTimeout(() => {
      if (this.series) this.subscribe(this.series);
    }, delay);
  }

  subscribe(series) {
    this.subscribed = series;
    this.send({ type: "subscribe", series, format: "json" });
  }

  ack(t) {
    if (this.subscribed) this.send({ type: "ack", column_unix_ms: t });
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }
}
