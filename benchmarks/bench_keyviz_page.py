"""The Key Visualizer page in headless Chromium: first paint, interaction, live latency.

1. First paint from the KeyViz store (the portal database the collector fills; a page
   load asks no node): the data directory's SQLite store is filled with
   benchmarks/bench_keyviz_serve.py's fill (3 nodes' merged columns, 1024 rows with
   traffic in every cell: 24 h of 60 s columns on tier 0, 7 d of 15 min columns on
   tier 1, 30 d of 1 h on tier 2, and a collector state), then the real
   `elastickv-admin serve` starts on it (its collector runs, pointed at an unreachable
   node: the page must not need the nodes). Measured: navigation start -> heatmap drawn
   for 1024 x 1440 (half the loads coming from the Overview page, half from the heatmap
   itself), split into the page's own start, the matrix request (the API's Server-Timing
   phases: store, fit, encode), the transfer and the page's decode + colour + draw; the
   same for a 7 d window (15 min tier); then the cost of hovering (per pointer event)
   and of a full redraw (pan / zoom frame).
2. Column-to-pixel latency through the collector: a node flush -> the browser has drawn
   that column, with StreamEvents (design profile: nodes push their columns) and with
   polling (upstream profile: one GetKeyVizMatrix per node per step), 1 s steps
   (`--keyvizStep 1s`, the devcluster's step), every node flushing at the same moment.

The nodes run in a child process (as real nodes run elsewhere), the store is filled in
another; the portal is the real `elastickv-admin serve` (daphne) subprocess; Chromium is
/usr/bin/chromium.

    .venv/bin/python benchmarks/bench_keyviz_page.py [--quick]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from devcluster import DevCluster, Op  # noqa: E402
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, PORTAL_SECRETS, start_portal  # noqa: E402

TOKEN = "bench-token"  # noqa: S105
MINUTE = 60_000
QUARTER = 15 * MINUTE
DAY = 24 * 60 * MINUTE
PAINT_NODES = 3  # contributors of each stored column
MAX_PAGE_COLS = 1440  # the page's column budget asked for (the 7 d window has 672)
LIVE_STEP_MS = 1000  # the devcluster's --keyvizStep in the live part, and the portal's
# Retention a little past the windows read: a fixed from/to keeps reading tier 0 (24 h)
# and tier 1 (7 d), and no stored column is pruned while the loads run.
RETENTION = {
    "ELASTICKV_ADMIN_KEYVIZ_RETENTION_FINE": "25h",
    "ELASTICKV_ADMIN_KEYVIZ_RETENTION_15M": "8d",
}
VIEWPORT = {"width": 1920, "height": 1200}


def serve_nodes(mode: str) -> None:
    """Child process: an empty cluster (`design` or `upstream` profile, 1 s step) whose
    nodes flush on command ("flush\\n" -> flushes every node now, answers the time)."""
    with DevCluster(
        nodes=3, routes=32, token=TOKEN, timers=False, profile=mode, step_ms=LIVE_STEP_MS
    ) as cluster:
        keys = [r.start + b"k" for r in cluster.routes()[::3]]
        print(json.dumps({"addresses": cluster.addresses}), flush=True)
        for line in sys.stdin:
            if line.strip() != "flush":
                break
            cluster.inject([Op("n1", "write", k, count=5 + i) for i, k in enumerate(keys)])
            at = int(time.time() * 1000)
            cluster.flush(at_ms=at)
            print(json.dumps({"flushed_ms": at}), flush=True)


def fill_store(columns: int, week_cols: int) -> None:
    """Child process, in the portal's environment (its data directory's database):
    migrate, then fill the store with bench_keyviz_serve's fill; prints what it did."""
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    # Imported here: the module sets Django up, which must see this portal's settings.
    from benchmarks.bench_keyviz_serve import fill

    now = int(time.time() * 1000)
    t = time.perf_counter()
    stored = fill(PAINT_NODES, now, columns, 30 * 24, week_cols)
    print(json.dumps({"now": now, "fill_s": time.perf_counter() - t, "stored": stored}))


def portal_env(data: Path) -> dict[str, str]:
    """The environment start_portal gives `serve` for this data directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELASTICKV_ADMIN_")}
    for name, value in PORTAL_SECRETS.items():
        env.setdefault(name, value)
    env.update(RETENTION)
    env["ELASTICKV_ADMIN_DATA_DIR"] = str(data)
    env["DJANGO_SETTINGS_MODULE"] = "elastickv_admin.settings"
    return env


class Nodes:
    def __init__(self, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.info: dict[str, Any] = self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        found: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return found

    def flush(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write("flush\n")
        self.proc.stdin.flush()
        return int(self.read()["flushed_ms"])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def portal_for(tmp: Path, addresses: list[str], name: str, step: str) -> Any:
    """`serve` on the data directory tmp/name, its collector at the nodes' step."""
    token = tmp / "token"
    token.write_text(TOKEN)
    args = ["--nodes", ",".join(addresses), "--nodeTokenFile", str(token), "--keyvizStep", step]
    return start_portal(tmp / name, args, RETENTION)


def ms(values: list[float]) -> str:
    if not values:
        return "no values"
    values = sorted(values)
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return (
        f"median {statistics.median(values):7.1f} ms   p95 {p95:7.1f} ms   max {values[-1]:7.1f} ms"
    )


PARTS = (
    "requestSent",
    "server",
    "store",
    "fit",
    "encode",
    "transfer",
    "renderMs",
    "decodeMs",
    "colourMs",
    "drawMs",
)
# The browser's own record of the matrix request, with the API's Server-Timing.
FETCHED_JS = """() => {
    const e = performance.getEntriesByType('resource')
        .filter((r) => r.name.includes('/api/keyviz/matrix')).pop();
    return {requestSent: e.requestStart, server: e.responseStart - e.requestStart,
            transfer: e.responseEnd - e.responseStart,
            phases: Object.fromEntries(e.serverTiming.map((t) => [t.name, t.duration]))};
}"""


def load_runs(
    page: Any, portal: Any, url: str, runs: int, label: str, first_note: str = ""
) -> None:
    """`runs` loads of `url`; odd ones come from the Overview page (an operator clicking
    through), even ones reload the heatmap itself (which first tears down the previous
    page). Prints first paint and its parts."""
    paints: list[float] = []
    early = 0
    parts: dict[str, list[float]] = {name: [] for name in PARTS}
    via: dict[str, list[float]] = {"from the Overview page": [], "heatmap after heatmap": []}
    size = 0
    for run in range(runs):
        if run % 2:
            page.goto(f"{portal.url}/")
            page.wait_for_load_state()
        page.goto(url)
        page.wait_for_function("() => window.keyviz && window.keyviz.ready", timeout=60_000)
        timing = page.evaluate("window.keyviz.timing")
        fetched = page.evaluate(FETCHED_JS)
        size = timing["bytes"]
        paints.append(page.evaluate("window.keyviz.firstPaintMs"))
        via["from the Overview page" if run % 2 else "heatmap after heatmap"].append(paints[-1])
        early += bool(timing["early"])
        for name in ("requestSent", "server", "transfer"):
            parts[name].append(fetched[name])
        for name in ("store", "fit", "encode"):
            parts[name].append(fetched["phases"][name])
        for name in ("renderMs", "decodeMs", "colourMs", "drawMs"):
            parts[name].append(timing[name])
    shown = page.evaluate(
        "[window.keyviz.rowIds().length, window.keyviz.columns().length,"
        " window.keyviz.columns()[1] - window.keyviz.columns()[0]]"
    )
    print(f"== first paint, {label} ({runs} loads)")
    print(
        f"  shown {shown[0]} x {shown[1]} cells, {shown[2] / 1000:.0f} s apart; "
        f"binary matrix {size / 1e6:.2f} MB"
    )
    print(f"  navigation start -> heatmap drawn (first paint)   {ms(paints)}")
    for how, values in via.items():
        print(f"    {how:46}{ms(values)}")
    print(f"    the first load alone{first_note:28}{paints[0]:7.1f} ms")
    print(f"    matrix request sent from <head> (early)         {early} of {runs} loads")
    print(f"    navigation start -> matrix request sent         {ms(parts['requestSent'])}")
    print(f"    request sent -> first byte (server)             {ms(parts['server'])}")
    print(f"      store: read the stored columns                {ms(parts['store'])}")
    print(f"      fit to rows x columns                         {ms(parts['fit'])}")
    print(f"      encode the binary body                        {ms(parts['encode'])}")
    print(f"    first byte -> last byte (transfer)              {ms(parts['transfer'])}")
    print(f"    page: bytes in -> heatmap on screen             {ms(parts['renderMs'])}")
    print(f"      decode                                        {ms(parts['decodeMs'])}")
    print(f"      log-scale bytes, lookup table, marks          {ms(parts['colourMs'])}")
    print(f"      draw (scaled map, axes, totals)               {ms(parts['drawMs'])}")


def interaction(page: Any) -> None:
    # Hover: synthetic pointer moves over the map, timed inside the page.
    hover = page.evaluate(
        """() => {
            const c = document.getElementById('kv-canvas');
            const box = c.getBoundingClientRect();
            const out = [];
            for (let i = 0; i < 300; i++) {
                const x = box.left + 220 + Math.random() * (box.width - 320);
                const y = box.top + 30 + Math.random() * (box.height - 100);
                const t = performance.now();
                c.dispatchEvent(new PointerEvent('pointermove',
                    {clientX: x, clientY: y, bubbles: true}));
                out.push(performance.now() - t);
            }
            return out;
        }"""
    )
    print(f"  hover (tooltip + overlay) per pointer event       {ms(hover)}")
    frames = page.evaluate(
        """async () => {
            const c = document.getElementById('kv-canvas');
            const box = c.getBoundingClientRect();
            const out = [];
            // Wheel-zoom in, then out again: every event redraws the whole view.
            for (let i = 0; i < 60; i++) {
                const t = performance.now();
                c.dispatchEvent(new WheelEvent('wheel', {deltaY: i < 30 ? -120 : 120,
                    clientX: box.left + box.width / 2, clientY: box.top + box.height / 2,
                    bubbles: true, cancelable: true}));
                await new Promise(requestAnimationFrame);
                out.push(performance.now() - t);
            }
            return out;
        }"""
    )
    print(f"  wheel zoom / pan: event -> next frame drawn       {ms(frames)}")


def first_paint(browser: Any, tmp: Path, columns: int, week_cols: int, runs: int) -> None:
    data = tmp / "paint"
    data.mkdir()
    filled = subprocess.run(
        [sys.executable, __file__, "--fill", str(columns), str(week_cols)],
        env=portal_env(data),
        capture_output=True,
        text=True,
        check=False,
    )
    if filled.returncode != 0:
        raise RuntimeError(f"filling the store failed:\n{filled.stderr}")
    info = json.loads(filled.stdout.splitlines()[-1])
    now = int(info["now"])
    print(
        f"store (SQLite, {data.name}/portal.sqlite3): 1024 rows x {columns} x 60 s (tier 0), "
        f"{week_cols} x 15 min (tier 1), 720 x 1 h (tier 2), {PAINT_NODES} nodes per column; "
        f"{info['stored'] / 1e6:.1f} MB of cells, filled in {info['fill_s']:.1f} s "
        f"(child process); retention {RETENTION['ELASTICKV_ADMIN_KEYVIZ_RETENTION_FINE']} / "
        f"{RETENTION['ELASTICKV_ADMIN_KEYVIZ_RETENTION_15M']} / 30d"
    )
    # The portal's collector runs (serve starts it) but reaches no node: 127.0.0.1:1.
    portal = portal_for(tmp, ["127.0.0.1:1"], data.name, f"{MINUTE // 1000}s")
    try:
        last = now // MINUTE * MINUTE
        day = (
            f"{portal.url}/keyviz/?from={last - columns * MINUTE + MINUTE // 2}"
            f"&to={last + MINUTE // 2}&rows=1024&cols={columns}&live=0"
        )
        last_q = now // QUARTER * QUARTER
        week = (
            f"{portal.url}/keyviz/?from={last_q - 7 * DAY + QUARTER // 2}"
            f"&to={last_q + QUARTER // 2}&rows=1024&cols={MAX_PAGE_COLS}&live=0"
        )
        page = browser.new_page(viewport=VIEWPORT)
        portal.login(page)  # every page needs a signed-in viewer
        load_runs(
            page,
            portal,
            day,
            runs,
            f"1024 rows x {columns} columns at 60 s (tier 0)",
            " (fresh portal)",
        )
        collector = page.get_by_test_id("kv-collector-age").inner_text().strip(" ·")
        print(f"  the page shows the portal's collector: {collector!r}")
        interaction(page)
        load_runs(page, portal, week, runs, "7 d window (15 min tier)")
        page.close()
    finally:
        portal.stop()


def live_latency(browser: Any, tmp: Path, mode: str, columns: int) -> None:
    label = "StreamEvents (design nodes)" if mode == "design" else "polling (upstream nodes)"
    nodes = Nodes(mode)
    portal = portal_for(tmp, nodes.info["addresses"], f"live-{mode}", f"{LIVE_STEP_MS}ms")
    step_s = LIVE_STEP_MS / 1000
    flushed: list[int] = []
    stop = threading.Event()

    def flush_every_step() -> None:
        # Nodes flush on a steady timer, as real ones do, from before the page opens; a
        # tenth of a step into it, so the collector's slot of a flush is its step's end
        # rounded down (align.py: the slot of the first flush is its time rounded).
        next_at = (time.time() // step_s + 1.1) * step_s
        while not stop.is_set():
            time.sleep(max(0.0, next_at - time.time()))
            next_at += step_s
            flushed.append(nodes.flush())

    flusher = threading.Thread(target=flush_every_step, daemon=True)
    flusher.start()
    try:
        time.sleep(4 * step_s)  # some history first
        page = browser.new_page(viewport=VIEWPORT)
        portal.login(page)  # every page needs a signed-in viewer
        page.goto(f"{portal.url}/keyviz/?range=15m")
        page.wait_for_function("() => window.keyviz && window.keyviz.ready", timeout=60_000)
        page.wait_for_function(
            "() => document.getElementById('kv-live-status').dataset.state === 'live'",
            timeout=30_000,
        )
        time.sleep(2 * step_s)  # settled
        first = len(flushed)
        time.sleep(columns * step_s)
        stop.set()
        flusher.join()
        measured = flushed[first : first + columns]
        time.sleep(3 * step_s)
        draws = {d["column_unix_ms"]: d for d in page.evaluate("window.keyviz.liveDraws")}
        latencies, delivery = [], []
        for at in measured:
            draw = draws.get(at // LIVE_STEP_MS * LIVE_STEP_MS)
            if draw is not None:
                latencies.append(draw["drawn_unix_ms"] - at)
                delivery.append(draw["drawn_unix_ms"] - draw["emitted_unix_ms"])
        got = f"{len(latencies)} of {len(measured)} columns"
        print(f"== column-to-pixel latency through the collector, {label}, 1 s steps ({got})")
        print(f"  node flush -> column drawn in the browser         {ms(latencies)}")
        print(f"    of which broadcast -> drawn (WebSocket + draw)  {ms(delivery)}")
        page.close()
    finally:
        stop.set()
        flusher.join()
        portal.stop()
        nodes.close()


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        serve_nodes(sys.argv[2])
        return
    if sys.argv[1:2] == ["--fill"]:
        fill_store(int(sys.argv[2]), int(sys.argv[3]))
        return
    quick = "--quick" in sys.argv
    columns, week_cols = (240, 96) if quick else (1440, 7 * 96)
    os.environ.setdefault("SECRET_KEY", "bench-secret-key-0123456789abcdef0123456789")
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            print(
                f"Chromium {browser.version}, viewport {VIEWPORT['width']}x{VIEWPORT['height']}, "
                f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
            )
            first_paint(browser, Path(tmp), columns, week_cols, 4 if quick else 12)
            for mode in ("design", "upstream"):
                live_latency(browser, Path(tmp), mode, 8 if quick else 20)
        finally:
            browser.close()


if __name__ == "__main__":
    main()
