"""Pick-a-pair latency of the web app, measured in the browser (Playwright + Debian's chromium).

Serves ``STORE`` as ``advlens serve`` does (model loaded up front), opens the app, clicks the fullest
Prediction Matrix cell (or ``--cell TRUE ADV``), selects a neuron, then clicks ``--pairs`` grid pairs
one after another (each new to the server's cache) and records, from the click event:

- ``neuron``: the Neuron Vulnerability View drew the new pair's curves (its title names the pair);
- ``dendrogram``: the Neuron Cluster View drew the new pair's dendrogram;
- ``rfs``: the Receptive Field View shows the new pair's RFs;
- ``all views``: the later of the three (the number to quote);
- ``maps``: the bMap/aMap overlays arrived too (Alg. 1 forward passes, the slow part on a CPU).

With ``--hover S`` the pointer rests on each card for S seconds before the click, as a person's does; the app
starts a pair's maps once the pointer has rested on its card for 150 ms, so part of their forward passes is done
before the click. The times are still counted from the click.

Page load is measured twice, until the page is idle: a first visit (a new browser, nothing cached: loading and
compiling plotly.js is about 1.2 s of it on 2 cores) and a reload of the same page (scripts from the cache).

With ``--trace``, the time is split three ways, each in seconds after the page was opened (or after
the click): every Dash callback request the server answered, with its start and end on the server and
the size of its response (server time, payload); when its response had arrived in the browser
(transfer and queueing); and every Plotly draw (``Plotly.react``/``newPlot``) of each graph, with the
browser's main-thread long tasks summed (drawing in the browser).

The store is served from a scratch folder of symbolic links to its stages, so the results the app
computes on demand (``derived/``, e.g. the faithfulness badges) go there and not into ``STORE``,
and every run starts with none of them.

Usage::

    python benchmarks/app_latency.py stores/fashion-mnist-pgd --pairs 5 --screenshots /tmp/advlens-shots
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from app_fixtures import (  # noqa: E402  (test helpers: server thread, browser launch, idle wait)
    BUSY_SCRIPT,
    PENDING_SCRIPT,
    ServerThread,
    click_matrix_cell,
    click_plot_point,
    launch_browser,
    wait_idle,
)

WATCH = """([pair]) => {
  const marks = {};
  window.__advlensMarks = marks;
  window.__advlensDone = false;
  let t0 = null;
  document.addEventListener('click', e => { if (t0 === null) window.__advlensClick = t0 = e.timeStamp; },
                            {capture: true, once: true});
  const title = id => ((document.querySelector(`#${id} .gtitle`) || {}).textContent || '');
  const old = {rf: document.getElementById('rf-benign-img').src, map: document.getElementById('bmap-img').src};
  const check = () => {
    if (t0 !== null) {
      const now = performance.now() - t0;
      if (!marks.neuron && title('neuron-graph').startsWith(`pair ${pair}:`)
          && document.querySelectorAll('#neuron-graph .cartesianlayer .trace').length >= 6) marks.neuron = now;
      if (!marks.dendrogram && title('dendrogram').startsWith(`pair ${pair}:`)
          && document.querySelectorAll('#dendrogram .cartesianlayer .trace').length >= 3) marks.dendrogram = now;
      const rf = document.getElementById('rf-benign-img').src;
      if (!marks.rfs && rf && rf !== old.rf) marks.rfs = now;
      const map = document.getElementById('bmap-img').src;
      if (!marks.maps && map && map !== old.map) marks.maps = now;
      if (marks.neuron && marks.dendrogram && marks.rfs && marks.maps) { window.__advlensDone = true; return; }
    }
    requestAnimationFrame(check);
  };
  requestAnimationFrame(check);
}"""


DRAW_PROBE = """
(() => {
  // every Plotly draw of a graph, [graph id, start, end] in ms (performance.now()), and the long tasks
  window.__advlensDraws = [];
  window.__advlensLongTasks = [];
  const wrap = plotly => {
    for (const name of ['react', 'newPlot']) {
      const original = plotly[name];
      if (!original || original.__advlensWrapped) continue;
      plotly[name] = function (gd, ...rest) {
        const start = performance.now();
        const id = (gd && gd.closest && (gd.closest('[id]') || {}).id) || '?';
        const done = () => window.__advlensDraws.push([id, start, performance.now()]);
        const result = original.call(this, gd, ...rest);
        if (result && result.then) result.then(done, done); else done();
        return result;
      };
      plotly[name].__advlensWrapped = true;
    }
  };
  let current;
  Object.defineProperty(window, 'Plotly', {configurable: true, get: () => current,
                                           set: value => { current = value; if (value) wrap(value); }});
  try {
    new PerformanceObserver(list => list.getEntries().forEach(
      e => window.__advlensLongTasks.push([e.startTime, e.duration]))).observe({type: 'longtask', buffered: true});
  } catch (e) { /* no long-task timing in this browser */ }
})();
"""
"""Records each Plotly draw and each long task of the page (see ``--trace``)."""


def scratch_store(store: Path) -> tempfile.TemporaryDirectory:
    """A temporary folder that links every entry of ``store`` except ``derived/``: the app reads the store's
    stages and writes what it computes on demand into the scratch folder, never into ``store``."""
    folder = tempfile.TemporaryDirectory(prefix="advlens-latency-")
    for entry in Path(store).resolve().iterdir():
        if entry.name != "derived":
            (Path(folder.name) / entry.name).symlink_to(entry)
    return folder


def wait_quiet(page, timeout: float = 180.0, settle: float = 0.3) -> float:
    """Wait until the page has had no work in flight (``BUSY_SCRIPT``) for ``settle`` seconds; returns the
    ``time.perf_counter()`` at which the work ended (the settle period not counted)."""
    deadline = time.monotonic() + timeout
    last_busy = time.perf_counter()
    while time.monotonic() < deadline:
        now = time.perf_counter()
        if page.evaluate(BUSY_SCRIPT):
            last_busy = time.perf_counter()
        elif now - last_busy >= settle:
            return last_busy
        time.sleep(0.03)
    raise TimeoutError(f"the app stayed busy for {timeout} s")


class BrowserTrace:
    """When each callback response arrived in the browser (Python's clock) and what the page drew."""

    def __init__(self, page) -> None:
        self.page = page
        self.lock = threading.Lock()
        self.arrivals: list[tuple[str, float, int]] = []
        page.on("requestfinished", self._finished)

    def _finished(self, request) -> None:
        if not request.url.endswith("_dash-update-component"):
            return
        try:
            body = json.loads(request.post_data or "{}")
        except ValueError:
            body = {}
        name = body.get("output", "?").replace("...", " ").strip(".")[:70]
        with self.lock:
            self.arrivals.append((name, time.perf_counter(), 0))

    def take(self) -> list[tuple[str, float, int]]:
        with self.lock:
            arrivals, self.arrivals = self.arrivals, []
        return arrivals

    def draws(self, since_ms: float) -> tuple[list[tuple[str, float, float]], float]:
        """Plotly draws that began after ``since_ms`` (page clock) and the long tasks' total after it (ms)."""
        draws, tasks = self.page.evaluate("() => [window.__advlensDraws || [], window.__advlensLongTasks || []]")
        busy = sum(duration for start, duration in tasks if start >= since_ms)
        return [(d[0], d[1] - since_ms, d[2] - since_ms) for d in draws if d[1] >= since_ms], busy

    def show(self, origin: float, since_ms: float) -> None:
        for name, at, _ in sorted(self.take(), key=lambda r: r[1]):
            print(f"    arrived {at - origin:6.2f} s  {name}")
        draws, busy = self.draws(since_ms)
        for graph, start, end in sorted(draws, key=lambda d: d[1]):
            print(f"    drawn   {start / 1000:6.2f} → {end / 1000:6.2f} s  ({end - start:6.0f} ms)  {graph}")
        print(f"    browser main thread in long tasks: {busy:.0f} ms")


class CallbackTrace:
    """Server-side start and end of each Dash callback request (its outputs name it)."""

    def __init__(self, server) -> None:
        from flask import g, request

        self.lock = threading.Lock()
        self.records: list[tuple[str, float, float, int]] = []

        @server.before_request
        def _start():
            g.advlens_start = time.perf_counter()

        @server.after_request
        def _end(response):
            if request.path.endswith("_dash-update-component"):
                body = request.get_json(silent=True) or {}
                name = body.get("output", "?").replace("...", " ").strip(".")[:70]
                size = response.calculate_content_length() or 0
                with self.lock:
                    self.records.append((name, g.advlens_start, time.perf_counter(), size))
            return response

    def take(self) -> list[tuple[str, float, float, int]]:
        with self.lock:
            records, self.records = self.records, []
        return records

    @staticmethod
    def show(records, origin: float) -> None:
        for name, start, end, size in sorted(records, key=lambda r: r[1]):
            print(f"    server  {start - origin:6.2f} → {end - origin:6.2f} s  ({1000 * (end - start):6.0f} ms, "
                  f"{size / 1024:6.1f} kB)  {name}")


def show_profile(profile: dict, top: int = 15) -> None:
    """Print the JavaScript functions with the most self time in a CDP ``Profiler.stop`` profile."""
    by_id = {node["id"]: node for node in profile["nodes"]}
    self_ms: dict[str, float] = {}
    for node_id, delta in zip(profile["samples"], profile["timeDeltas"]):
        frame = by_id[node_id]["callFrame"]
        name = f"{frame['functionName'] or '(anonymous)'} {frame['url'].rsplit('/', 1)[-1].split('?')[0]}"
        self_ms[name] = self_ms.get(name, 0.0) + delta / 1000
    total = sum(ms for name, ms in self_ms.items() if not name.startswith("(idle)"))
    print(f"    JavaScript profile: {total:.0f} ms busy")
    for name, ms in sorted(self_ms.items(), key=lambda item: -item[1])[:top]:
        print(f"    {ms:7.1f} ms  {name[:100]}")


def show_timeline(trace: dict, top: int = 12) -> None:
    """Sum the self time of the top-level main-thread events of a Chrome trace (scripting, style, layout, paint…)."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    main = {(e["pid"], e["tid"]) for e in events if e.get("name") == "thread_name"
            and e.get("args", {}).get("name") == "CrRendererMain"}
    totals: dict[str, float] = {}
    spans = sorted((e for e in events if e.get("ph") == "X" and (e["pid"], e["tid"]) in main and "dur" in e),
                   key=lambda e: (e["ts"], -e["dur"]))
    stack: list[tuple[float, dict]] = []  # (end, event): self time = duration minus children
    for event in spans:
        while stack and stack[-1][0] <= event["ts"]:
            stack.pop()
        if stack:
            totals[stack[-1][1]["name"]] = totals.get(stack[-1][1]["name"], 0.0) - event["dur"] / 1000
        totals[event["name"]] = totals.get(event["name"], 0.0) + event["dur"] / 1000
        stack.append((event["ts"] + event["dur"], event))
    busy = sum(v for k, v in totals.items() if k not in ("RunTask", "ThreadControllerImpl::RunTask"))
    calls: dict[str, float] = {}
    for event in spans:
        if event["name"] in ("FunctionCall", "TimerFire", "EvaluateScript", "FireAnimationFrame"):
            data = event.get("args", {}).get("data", {})
            frame = (data.get("stackTrace") or [data])[0]
            where = f"{event['name']} {frame.get('functionName', '')} {str(frame.get('url', '')).rsplit('/', 1)[-1][:40]}"
            calls[where] = calls.get(where, 0.0) + event["dur"] / 1000
    for name, ms in sorted(calls.items(), key=lambda item: -item[1])[:8]:
        print(f"    {ms:7.1f} ms  (inclusive) {name}")
    print(f"    timeline: main thread {busy:.0f} ms in events")
    for name, ms in sorted(totals.items(), key=lambda item: -item[1])[:top]:
        print(f"    {ms:7.1f} ms  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store")
    parser.add_argument("--pairs", type=int, default=5, help="pairs to pick one after another")
    parser.add_argument("--cell", type=int, nargs=2, metavar=("TRUE", "ADV"), help="matrix cell (default: fullest)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--screenshots", type=Path, help="folder for a screenshot after each pick")
    parser.add_argument("--hover", type=float, default=0.0, metavar="SECONDS",
                        help="rest the pointer on each card this long before clicking it (default 0: Playwright "
                             "moves and clicks at once; a person's pointer rests a few hundred ms)")
    parser.add_argument("--timeline", action="store_true",
                        help="record Chrome's timeline during each pick and sum the renderer's main-thread work by kind")
    parser.add_argument("--profile", action="store_true",
                        help="sample the browser's JavaScript during each pick (Chrome's profiler) and list the "
                             "functions with the most self time")
    parser.add_argument("--trace", action="store_true",
                        help="split the time: server callbacks (time, size), arrivals in the browser, Plotly draws")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from advlens.analysis import Session
    from advlens.app import create_app

    scratch = scratch_store(Path(args.store))
    session = Session(scratch.name, device=args.device)
    session.model  # as `advlens serve` does
    matrix = session.prediction_matrix()
    cell = tuple(args.cell) if args.cell else tuple(int(i) for i in np.unravel_index(np.argmax(matrix), matrix.shape))
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    results = []
    load_average = os.getloadavg()
    print(f"load average before: {load_average[0]:.2f} {load_average[1]:.2f} {load_average[2]:.2f} "
          f"({os.cpu_count()} CPUs)")
    app = create_app(session)
    if args.profile:  # readable function names in the profile: Dash's unminified bundles, no other dev tool
        app.enable_dev_tools(debug=False, dev_tools_serve_dev_bundles=True, dev_tools_ui=False,
                             dev_tools_props_check=False, dev_tools_hot_reload=False)
    trace = CallbackTrace(app.server) if args.trace else None
    with ServerThread(app) as server, sync_playwright() as playwright:
        browser = launch_browser(playwright)
        page = browser.new_page(viewport={"width": 1680, "height": 1000})
        page.add_init_script(PENDING_SCRIPT)
        page.add_init_script(DRAW_PROBE)
        browser_trace = BrowserTrace(page) if args.trace else None
        profiler = None
        if args.profile:
            profiler = page.context.new_cdp_session(page)
            profiler.send("Profiler.enable")
            profiler.send("Profiler.setSamplingInterval", {"interval": 250})
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        start = time.perf_counter()
        page.goto(server.url)
        page_load = wait_quiet(page) - start
        print(f"page load until idle: {page_load:.2f} s", flush=True)
        if trace:
            timing = page.evaluate("() => JSON.stringify(performance.getEntriesByType('navigation')[0])")
            nav = json.loads(timing)
            print(f"    DOMContentLoaded {nav['domContentLoadedEventEnd'] / 1000:.2f} s, "
                  f"load {nav['loadEventEnd'] / 1000:.2f} s")
            trace.show(trace.take(), start)
            browser_trace.show(start, 0.0)
        # the same page again, as a reload: scripts from the browser's cache (and V8's code cache for them)
        start = time.perf_counter()
        page.reload()
        warm_load = wait_quiet(page) - start
        print(f"page reload until idle (scripts cached): {warm_load:.2f} s", flush=True)
        if trace:
            trace.take()
        click_matrix_cell(page, cell[0], cell[1], session.num_classes, session.num_classes)
        wait_idle(page)
        cards = page.locator(".pair-card")
        print(f"cell {session.class_names[cell[0]]} → {session.class_names[cell[1]]}: {matrix[cell]} pairs")
        ids = [int(i.split('"pair":')[1].split(",")[0].rstrip("}")) for i in cards.evaluate_all(
            "cards => cards.map(c => c.id)")]
        # a first pick, then a neuron, so that the RF view shows RFs (not the bare images) from then on
        cards.nth(0).click()
        wait_idle(page, timeout=180)
        click_plot_point(page, "neuron-graph", 0, 0.0)
        wait_idle(page, timeout=180)
        for k in range(1, min(args.pairs, len(ids) - 1) + 1):
            page.evaluate(WATCH, [ids[k]])
            if trace:
                trace.take()
                browser_trace.take()
            if args.hover:  # a person's pointer rests on the card before the click (the server may start early)
                cards.nth(k).hover()
                time.sleep(args.hover)
            if profiler:
                profiler.send("Profiler.start")
            if args.timeline:
                browser.start_tracing(page=page, categories=["devtools.timeline", "disabled-by-default-devtools.timeline"])
            clicked = time.perf_counter()
            cards.nth(k).click()
            page.wait_for_function("() => window.__advlensDone", timeout=180_000, polling=100)
            marks = page.evaluate("() => window.__advlensMarks")
            marks["all views"] = max(marks["neuron"], marks["dendrogram"], marks["rfs"])
            marks["idle"] = 1000 * (wait_quiet(page) - clicked)  # everything, the badges too
            results.append(marks)
            if profiler:
                show_profile(profiler.send("Profiler.stop")["profile"])
            if args.timeline:
                show_timeline(json.loads(browser.stop_tracing()))
            print(f"pair {ids[k]}: " + ", ".join(f"{key} {value / 1000:.2f} s" for key, value in marks.items()),
                  flush=True)
            if trace:
                trace.show(trace.take(), clicked)
                browser_trace.show(clicked, page.evaluate("() => window.__advlensClick"))
            if args.screenshots:
                page.screenshot(path=str(args.screenshots / f"pick_{k:02d}_pair_{ids[k]}.png"))
        browser.close()
    print(f" page load: {page_load:.2f} s (a first visit), {warm_load:.2f} s (a reload, scripts cached)")
    scratch.cleanup()
    for key in ("neuron", "dendrogram", "rfs", "all views", "maps", "idle"):
        values = [r[key] / 1000 for r in results]
        print(f"{key:>10}: median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})")
    load_average = os.getloadavg()
    print(f"load average after: {load_average[0]:.2f} {load_average[1]:.2f} {load_average[2]:.2f}")
    if errors:
        print("browser console errors:", *errors, sep="\n  ")


if __name__ == "__main__":
    main()
