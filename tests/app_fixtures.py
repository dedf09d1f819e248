"""Helpers for the web-app tests: two stores, a server thread, a Playwright browser.

- ``tiny_store_path``: the tiny seeded test model and generated images of ``tests/conftest.py`` (3 classes,
  6 neurons, 8×8 images), built in seconds and needing nothing outside the repository: the callback
  tests always run.
- ``small_store_path``: the demo model on the first 200 Fashion-MNIST test images, for the browser walk
  and ``advlens serve``. It needs the Debian packages the Makefile installs (``dataset-fashion-mnist``,
  ``chromium``): without them these tests fail, saying what to install.

Each store is built once per test session under pytest's base temporary folder and shared.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SMALL_LIMIT = 200
"""Fashion-MNIST test images examined for the small store (≈130 successful pairs, ≈30 s on 2 cores)."""


TINY_COUNT = 150
"""Generated images of the tiny store (≈ 90 successful attacks: enough for two Image Grid pages)."""
TINY_CONFIG = dict(model="tests:tiny", dataset="tiny", eps=0.2, alpha=0.07, steps=5, batch_size=64, seed=3,
                   tsne_perplexity=5.0)


def tiny_store(tmp_path_factory: pytest.TempPathFactory):
    """The tiny test model of ``tests/conftest.py`` and a complete store of it on generated images.

    Returns ``(path, model)``: the store's model spec (``tests:tiny``) cannot be rebuilt from the store,
    so a session needs the model passed in.
    """
    from conftest import tiny_dataset, trained_tiny_model

    from advlens.pipeline import PrepareConfig, prepare
    from advlens.store import open_store

    model = trained_tiny_model(tiny_dataset())
    root = tmp_path_factory.getbasetemp() / "advlens-tiny-app-store"
    if not ((root / "manifest.json").exists() and open_store(root).complete):
        prepare(PrepareConfig(**TINY_CONFIG), root, model=model, data=tiny_dataset(TINY_COUNT))
    return root, model


TINY_SWEEP = dict(sweep_eps=(0.05, 0.1, 0.2, 0.3), sweep_per_class=30, feature_steps=8)
"""A small strength sweep (4 strengths, ≤ 30 images per class) and quick feature visualisations."""


def tiny_pathways_store(tmp_path_factory: pytest.TempPathFactory):
    """The tiny model's store with the ``features`` and ``sweep`` stages (:data:`TINY_SWEEP`), for the pathways
    tests (≈ 10 s to build on 2 busy cores). Returns ``(path, model)`` as :func:`tiny_store`."""
    from conftest import tiny_dataset, trained_tiny_model

    from advlens.pipeline import PrepareConfig, prepare
    from advlens.store import open_store
    from advlens.store.manifest import CORE_STAGES

    model = trained_tiny_model(tiny_dataset())
    root = tmp_path_factory.getbasetemp() / "advlens-tiny-pathways-store"
    if not ((root / "manifest.json").exists() and open_store(root).has_stage("sweep")):
        prepare(PrepareConfig(**TINY_CONFIG, **TINY_SWEEP), root, model=model, data=tiny_dataset(TINY_COUNT),
                stages=(*CORE_STAGES, "features", "sweep"))
    return root, model


def tiny_core_store(tmp_path_factory: pytest.TempPathFactory):
    """The tiny model's store with paper 001's stages only (no sweep, no features). Returns ``(path, model)``."""
    from conftest import tiny_dataset, trained_tiny_model

    from advlens.pipeline import PrepareConfig, prepare
    from advlens.store import open_store
    from advlens.store.manifest import CORE_STAGES

    model = trained_tiny_model(tiny_dataset())
    root = tmp_path_factory.getbasetemp() / "advlens-tiny-core-store"
    if not ((root / "manifest.json").exists() and open_store(root).complete):
        prepare(PrepareConfig(**TINY_CONFIG), root, model=model, data=tiny_dataset(60), stages=CORE_STAGES)
    return root, model


DEMO_GENERATED_COUNT = 48


def demo_model_store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete store of the built-in demo model (``fashion-resnet``, shipped weights) on generated images.

    The images are smooth random blobs labelled with the model's own predictions (all true positives), so
    the store needs no dataset, yet ``advlens serve`` can rebuild its model from the store alone.
    """
    import torch

    from advlens.data import ImageDataset
    from advlens.models import load_model
    from advlens.pipeline import PrepareConfig, prepare
    from advlens.store import open_store
    from advlens.store.manifest import CORE_STAGES

    root = tmp_path_factory.getbasetemp() / "advlens-demo-generated-store"
    if (root / "manifest.json").exists() and open_store(root).complete:
        return root
    model = load_model("fashion-resnet")
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(DEMO_GENERATED_COUNT, 1, 7, 7, generator=generator)
    images = torch.nn.functional.interpolate(coarse, size=(28, 28), mode="bilinear", align_corners=False)
    with torch.no_grad():
        labels = model(images).argmax(1)
    data = ImageDataset(images, labels, tuple(model.class_names), "generated", "test")
    prepare(PrepareConfig(model="fashion-resnet", dataset="generated", batch_size=64, seed=0, tsne_perplexity=5.0),
            root, model=model, data=data, stages=CORE_STAGES)  # the serve tests need no features stage
    return root


def require_fashion_mnist() -> None:
    """Fail (not skip) without the Debian dataset: the Makefile installs it, so its absence is a setup bug."""
    if not (FASHION_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(f"Fashion-MNIST is not installed at {FASHION_DIR}: install the Debian package "
                    "dataset-fashion-mnist (`make setup` does)", pytrace=False)


def small_store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete store of the demo model on the first :data:`SMALL_LIMIT` Fashion-MNIST test images."""
    require_fashion_mnist()
    from advlens.pipeline import PrepareConfig, prepare
    from advlens.store import open_store

    root = tmp_path_factory.getbasetemp() / "advlens-app-store"
    manifest = root / "manifest.json"
    if manifest.exists() and open_store(root).complete:
        return root
    prepare(PrepareConfig(limit=SMALL_LIMIT, device="cpu", seed=0), root)  # resumes a partial store
    return root


class ServerThread:
    """A Dash app served by Werkzeug in a daemon thread on a free 127.0.0.1 port."""

    def __init__(self, app) -> None:
        from werkzeug.serving import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            def log_request(self, *args, **kwargs) -> None:
                pass

        self.server = make_server("127.0.0.1", 0, app.server, threaded=True, request_handler=QuietHandler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="advlens-test-server", daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)


PENDING_SCRIPT = """
(() => {
  window.__advlensPending = 0;
  const original = window.fetch;
  window.fetch = function (...args) {
    window.__advlensPending += 1;
    return original.apply(this, args).finally(() => { window.__advlensPending -= 1; });
  };
})();
"""
"""Counts in-flight fetches (Dash callbacks), so a test can wait until the app is idle."""


def launch_browser(playwright):
    """Debian's chromium under Playwright; fails (not skips) without it: the Makefile installs it."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM}: install the Debian package chromium (`make setup` does)",
                    pytrace=False)
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@contextmanager
def served_page(session, **context) -> Iterator[tuple[ServerThread, object]]:
    """The session's app served on a free loopback port and a :func:`recording_page` of a new browser (``context``:
    more browser-context options, e.g. ``accept_downloads=True``); both closed afterwards."""
    from playwright.sync_api import sync_playwright

    from advlens.app import create_app

    with ServerThread(create_app(session)) as server, sync_playwright() as playwright:
        browser = launch_browser(playwright)
        try:
            yield server, recording_page(browser.new_context(viewport=VIEWPORT, **context))
        finally:
            browser.close()


SCREENSHOTS = Path(__file__).resolve().parent / "artifacts" / "screenshots"
VIEWPORT = {"width": 1680, "height": 1000}


def recording_page(context):
    """A new page that counts in-flight callbacks (:data:`PENDING_SCRIPT`) and records console errors and
    page errors in ``page.problems``, so a walk can assert there were none."""
    page = context.new_page()
    page.add_init_script(PENDING_SCRIPT)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.problems = problems
    return page


def shot(page, name: str, full_page: bool = False) -> Path:
    """Save a screenshot under :data:`SCREENSHOTS` (git-ignored) and print its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    print(f"screenshot: {path}")
    return path


def walk(component):
    """Every component of a Dash component tree, and every text in it, in document order."""
    stack = [component]
    while stack:
        node = stack.pop()
        if isinstance(node, (list, tuple)):
            stack.extend(reversed(node))
            continue
        yield node
        children = None if isinstance(node, str) else getattr(node, "children", None)
        if children is not None:
            stack.append(children)


def texts(component) -> str:
    """All text of a Dash component tree, joined."""
    return " ".join(node for node in walk(component) if isinstance(node, str))


BUSY_SCRIPT = """() => (window.__advlensPending || 0)
    + (document.readyState === 'complete' ? 0 : 1)
    + document.querySelectorAll('._dash-loading, ._dash-loading-callback, [data-dash-is-loading="true"],'
                                + ' .dash-graph--pending').length"""
"""Work the page still has in flight: fetches (Dash callbacks, counted by :data:`PENDING_SCRIPT`), the document
still loading, Dash's renderer not yet mounted (``_dash-loading``), callbacks Dash has queued but not yet sent
(``_dash-loading-callback``, shown while any is pending), components marked loading, and graphs whose Plotly bundle
or drawing is still pending (``dash-graph--pending``: a graph's first draw loads plotly.js by a script tag, which
no fetch counter sees)."""


def wait_idle(page, timeout: float = 60.0, settle: float = 0.3) -> None:
    """Wait until the page has had no work in flight (:data:`BUSY_SCRIPT`) for ``settle`` seconds."""
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        if page.evaluate(BUSY_SCRIPT):
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= settle:
            return
        time.sleep(0.05)
    raise TimeoutError(f"the app stayed busy for {timeout} s")


def plot_box(page, graph_id: str) -> dict:
    """Bounding box of a graph's plotting area (the drag layer of its main subplot)."""
    box = page.locator(f"#{graph_id} .nsewdrag").first.bounding_box()
    assert box is not None, f"graph {graph_id} has no plotting area"
    return box


def click_matrix_cell(page, row: int, col: int, rows: int, cols: int, graph_id: str = "prediction-matrix") -> None:
    box = plot_box(page, graph_id)
    page.mouse.click(box["x"] + (col + 0.5) * box["width"] / cols, box["y"] + (row + 0.5) * box["height"] / rows)


def click_plot_point(page, graph_id: str, x, y, subplot: str = "xy") -> None:
    """Click the data coordinates (x, y) of a subplot (category axes take the category's position)."""
    point = page.evaluate(
        """([graphId, x, y, subplot]) => {
            const gd = document.querySelector(`#${graphId} .js-plotly-plot`);
            const match = subplot.match(/^x(\\d*)y(\\d*)$/);
            const xa = gd._fullLayout['xaxis' + match[1]], ya = gd._fullLayout['yaxis' + match[2]];
            const rect = gd.querySelector(`.nsewdrag[data-subplot="${subplot}"]`).getBoundingClientRect();
            return [rect.left + xa.l2p(x), rect.top + ya.l2p(y)];
        }""", [graph_id, x, y, subplot])
    page.mouse.move(point[0], point[1])
    page.mouse.click(point[0], point[1])


def figure_title(page, graph_id: str) -> str:
    """The title text Plotly drew for a graph ('' when none)."""
    title = page.locator(f"#{graph_id} .gtitle")
    return title.first.text_content() if title.count() else ""


def trace_count(page, graph_id: str) -> int:
    """Traces Plotly drew in a graph's cartesian subplots (SVG traces)."""
    return page.locator(f"#{graph_id} .cartesianlayer .trace").count()


def webgl_trace_count(page, graph_id: str) -> int:
    """WebGL traces a graph holds, once Plotly has drawn them into its WebGL canvas (0 before)."""
    return page.evaluate(
        """(graphId) => {
            const gd = document.querySelector(`#${graphId} .js-plotly-plot`);
            if (!gd || !gd._fullData || !gd.querySelector('canvas.gl-canvas-context')) return 0;
            return gd._fullData.filter(t => t.type === 'scattergl' && t.visible !== false).length;
        }""", graph_id)


def url_params(page) -> dict[str, str]:
    """The page URL's query parameters, the last value of each."""
    return {k: v[-1] for k, v in parse_qs(urlparse(page.url).query).items()}


def drawn_bars(page, graph_id: str) -> dict[str, np.ndarray]:
    """A what-if graph's bar series as Plotly drew them, by their first word (original … / edited)."""
    drawn = page.evaluate("""(id) => {
        const gd = document.querySelector(`#${id} .js-plotly-plot`);
        return Object.fromEntries((gd && gd.data || []).map(t => [t.name, Array.from(t.y)]));
    }""", graph_id)
    return {("edited" if name.startswith("edited") else name.split(" (")[0]): np.asarray(y, dtype=np.float64)
            for name, y in drawn.items()}
