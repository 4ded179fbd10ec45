"""The Key Visualizer page in headless Chromium: first paint, interaction, live latency.

1. First paint of a 1024 x 1440 matrix (3 nodes, 1024 routes, 24 h of 60 s columns,
   traffic on every route in every column): navigation start -> heatmap drawn, half the
   loads coming from the Overview page and half from the heatmap itself, split into the
   page's own start, the matrix request (the API's Server-Timing phases) and decoding +
   colouring + drawing; then the cost of hovering (per pointer event) and of a full
   redraw (pan / zoom frame).
2. Column-to-pixel latency: a node flush -> the browser has drawn that column, with
   StreamEvents (design profile: nodes push their columns) and with polling (upstream
   profile: one GetKeyVizMatrix per node per step), 1 s steps, every node flushing at
   the same moment, so the flush time is the moment the column became complete.

The nodes run in a child process (as real nodes run elsewhere); the portal is the real
`elastickv-admin serve` (daphne) subprocess; Chromium is /usr/bin/chromium.

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

from benchmarks.bench_keyviz_api import STEP, TOKEN  # noqa: E402
from benchmarks.bench_keyviz_api import serve_nodes as serve_filled_nodes  # noqa: E402
from devcluster import DevCluster, Op  # noqa: E402
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, start_portal  # noqa: E402

VIEWPORT = {"width": 1920, "height": 1200}


def serve_nodes(mode: str, routes: int, columns: int) -> None:
    """Child process. `full`: a filled cluster. `design` / `upstream`: an empty one whose
    nodes flush on command ("flush\\n" -> flushes every node now, answers the time)."""
    if mode == "full":
        serve_filled_nodes(3, routes, columns)
        return
    with DevCluster(nodes=3, routes=32, token=TOKEN, timers=False, profile=mode) as cluster:
        keys = [r.start + b"k" for r in cluster.routes()[::3]]
        print(json.dumps({"addresses": cluster.addresses}), flush=True)
        for line in sys.stdin:
            if line.strip() != "flush":
                break
            cluster.inject([Op("n1", "write", k, count=5 + i) for i, k in enumerate(keys)])
            at = int(time.time() * 1000)
            cluster.flush(at_ms=at)
            print(json.dumps({"flushed_ms": at}), flush=True)


class Nodes:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", *args],
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


def portal_for(tmp: Path, addresses: list[str], name: str) -> Any:
    token = tmp / "token"
    token.write_text(TOKEN)
    data = tmp / name
    data.mkdir()
    return start_portal(data, ["--nodes", ",".join(addresses), "--nodeTokenFile", str(token)])


def ms(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return (
        f"median {statistics.median(values):7.1f} ms   p95 {p95:7.1f} ms   max {values[-1]:7.1f} ms"
    )


def first_paint(browser: Any, tmp: Path, routes: int, columns: int, runs: int) -> None:
    print(f"== first paint: 3 nodes x {routes} rows x {columns} columns ({runs} loads)")
    nodes = Nodes("full", str(routes), str(columns))
    print(f"  (filled the nodes in {nodes.info['fill_s']:.1f} s, in a child process)")
    portal = portal_for(tmp, nodes.info["addresses"], "paint")
    try:
        first = nodes.info["first"]
        url = (
            f"{portal.url}/keyviz/?from={first - STEP // 2}&to={first + columns * STEP - STEP // 2}"
            f"&rows={min(routes, 1024)}&cols={columns}&live=0"
        )
        page = browser.new_page(viewport=VIEWPORT)
        portal.login(page)  # every page needs a signed-in viewer
        paints: list[float] = []
        early = 0
        parts: dict[str, list[float]] = {
            name: []
            for name in (
                "requestSent",
                "server",
                "nodes",
                "merge",
                "fit",
                "encode",
                "transfer",
                "renderMs",
                "decodeMs",
                "colourMs",
                "drawMs",
            )
        }
        size = 0
        # Odd loads come from the Overview page (an operator clicking through), even ones
        # reload the heatmap itself (which first tears down the previous 1.5M-cell page).
        via: dict[str, list[float]] = {"from the Overview page": [], "heatmap after heatmap": []}
        for run in range(runs):
            if run % 2:
                page.goto(f"{portal.url}/")
                page.wait_for_load_state()
            page.goto(url)
            page.wait_for_function("() => window.keyviz && window.keyviz.ready", timeout=60_000)
            timing = page.evaluate("window.keyviz.timing")
            # The browser's own record of the matrix request, with the API's Server-Timing.
            fetched = page.evaluate(
                """() => {
                    const e = performance.getEntriesByType('resource')
                        .filter((r) => r.name.includes('/api/keyviz/matrix')).pop();
                    return {requestSent: e.requestStart, server: e.responseStart - e.requestStart,
                            transfer: e.responseEnd - e.responseStart,
                            phases: Object.fromEntries(
                                e.serverTiming.map((t) => [t.name, t.duration]))};
                }"""
            )
            size = timing["bytes"]
            paints.append(page.evaluate("window.keyviz.firstPaintMs"))
            via["from the Overview page" if run % 2 else "heatmap after heatmap"].append(paints[-1])
            early += bool(timing["early"])
            for name in ("requestSent", "server", "transfer"):
                parts[name].append(fetched[name])
            for name in ("nodes", "merge", "fit", "encode"):
                parts[name].append(fetched["phases"][name])
            for name in ("renderMs", "decodeMs", "colourMs", "drawMs"):
                parts[name].append(timing[name])
        shown = page.evaluate("[window.keyviz.rowIds().length, window.keyviz.columns().length]")
        print(f"  shown {shown[0]} x {shown[1]} cells; binary matrix {size / 1e6:.1f} MB")
        print(f"  navigation start -> heatmap drawn (first paint)   {ms(paints)}")
        for how, values in via.items():
            print(f"    {how:46}{ms(values)}")
        print(f"    the first load alone (fresh portal and nodes)   {paints[0]:7.1f} ms")
        print(f"    matrix request sent from <head> (early)         {early} of {runs} loads")
        print(f"    navigation start -> matrix request sent         {ms(parts['requestSent'])}")
        print(f"    request sent -> first byte (server)             {ms(parts['server'])}")
        print(f"      nodes: fan-out + decode as each answers       {ms(parts['nodes'])}")
        print(f"      merge                                         {ms(parts['merge'])}")
        print(f"      fit to rows x columns                         {ms(parts['fit'])}")
        print(f"      encode the binary body                        {ms(parts['encode'])}")
        print(f"    first byte -> last byte (transfer)              {ms(parts['transfer'])}")
        print(f"    page: bytes in -> heatmap on screen             {ms(parts['renderMs'])}")
        print(f"      decode                                        {ms(parts['decodeMs'])}")
        print(f"      log-scale bytes, lookup table, marks          {ms(parts['colourMs'])}")
        print(f"      draw (scaled map, axes, totals)               {ms(parts['drawMs'])}")
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
        page.close()
    finally:
        portal.stop()
        nodes.close()


def live_latency(browser: Any, tmp: Path, mode: str, columns: int) -> None:
    label = "StreamEvents (design nodes)" if mode == "design" else "polling (upstream nodes)"
    nodes = Nodes(mode, "0", "0")
    portal = portal_for(tmp, nodes.info["addresses"], f"live-{mode}")
    step_s = 1.0
    flushed: list[int] = []
    stop = threading.Event()

    def flush_every_step() -> None:
        # Nodes flush on a steady timer, as real ones do, from before the page opens.
        next_at = time.time()
        while not stop.is_set():
            next_at += step_s
            time.sleep(max(0.0, next_at - time.time()))
            flushed.append(nodes.flush())

    flusher = threading.Thread(target=flush_every_step, daemon=True)
    flusher.start()
    try:
        time.sleep(4 * step_s)  # history, so the step is known
        page = browser.new_page(viewport=VIEWPORT)
        portal.login(page)  # every page needs a signed-in viewer
        page.goto(f"{portal.url}/keyviz/?range=15m")
        page.wait_for_function("() => window.keyviz && window.keyviz.ready")
        page.wait_for_function(
            "() => document.getElementById('kv-live-status').dataset.state === 'live'"
        )
        time.sleep(2 * step_s)  # settled
        first = len(flushed)
        time.sleep(columns * step_s)
        stop.set()
        flusher.join()
        measured = flushed[first : first + columns]
        time.sleep(2 * step_s)
        draws = {d["column_unix_ms"]: d for d in page.evaluate("window.keyviz.liveDraws")}
        latencies, delivery = [], []
        for at in measured:
            boundary = (2 * at + 1000) // 2000 * 1000
            draw = draws.get(boundary)
            if draw is not None:
                latencies.append(draw["drawn_unix_ms"] - at)
                delivery.append(draw["drawn_unix_ms"] - draw["emitted_unix_ms"])
        got = f"{len(latencies)} of {len(measured)} columns"
        print(f"== column-to-pixel latency, {label}, 1 s steps ({got})")
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
        serve_nodes(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    quick = "--quick" in sys.argv
    routes, columns = (256, 240) if quick else (1024, 1440)
    os.environ.setdefault("SECRET_KEY", "bench-secret-key-0123456789abcdef0123456789")
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            print(
                f"Chromium {browser.version}, viewport {VIEWPORT['width']}x{VIEWPORT['height']}, "
                f"{os.cpu_count()} CPUs"
            )
            first_paint(browser, Path(tmp), routes, columns, 4 if quick else 12)
            for mode in ("design", "upstream"):
                live_latency(browser, Path(tmp), mode, 8 if quick else 20)
        finally:
            browser.close()


if __name__ == "__main__":
    main()
