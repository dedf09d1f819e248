"""Browser walk of the Pathways page (Playwright driving Debian's chromium) on the small real store of
``tests/app_fixtures.py`` (the demo model on the first 200 Fashion-MNIST test images; ``prepare`` runs the
``features`` and ``sweep`` stages by default). Spec-004 §8: choose the most attacked class pair → the graph
draws 4 groups with feature-visualisation nodes → move the strength slider → highlight excited → hover a
node → detail view with examples and the strength chart → compare mode → link to the Neurons page; no
console errors. A screenshot per step goes to ``tests/artifacts/screenshots/`` (git-ignored).
"""

from __future__ import annotations

from urllib.parse import urlparse

import pytest
from app_fixtures import served_page, shot, small_store_path, url_params, wait_idle

pytestmark = pytest.mark.slow  # builds the 200-image demo store with its features and sweep stages (minutes)

GRAPH = "pathways-graph"


def node_point(page, layer: str, channel: int) -> tuple[float, float]:
    """Screen position of a node of the Graph Summary View (its hover marker carries [layer, channel])."""
    return page.evaluate(
        """([graphId, layer, channel]) => {
            const gd = document.querySelector(`#${graphId} .js-plotly-plot`);
            const trace = gd._fullData.find(t => t.name === 'neurons');
            const i = trace.customdata.findIndex(c => c[0] === layer && c[1] === channel);
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
            const rect = gd.querySelector('.nsewdrag').getBoundingClientRect();
            return [rect.left + xa.l2p(trace.x[i]), rect.top + ya.l2p(trace.y[i])];
        }""", [GRAPH, layer, channel])


def drawn_images(page) -> int:
    """Feature-visualisation images Plotly drew in the graph (layout images that loaded)."""
    return page.evaluate(
        """(graphId) => [...document.querySelectorAll(`#${graphId} .layer-above image, #${graphId} image`)]
            .filter(i => (i.getAttribute('href') || '').includes('/model-features/')).length""", GRAPH)


def set_slider(page, slider_id: str, value: int, maximum: int) -> None:
    """Click the slider's track where ``value`` lies (marks are evenly spaced from 0 to ``maximum``)."""
    track = page.locator(f"#{slider_id}").bounding_box()
    page.mouse.click(track["x"] + 8 + (track["width"] - 16) * value / maximum, track["y"] + 8)
    wait_idle(page, timeout=180)


IMAGES_ARRIVED = """(id) => {
    const hrefs = [...document.querySelectorAll(`#${id} image`)].map(i => i.getAttribute('href'));
    const done = new Set(performance.getEntriesByType('resource').map(e => new URL(e.name).pathname));
    return hrefs.length > 0 && hrefs.every(h => done.has(h));
}"""
"""Every node image of the graph has been fetched (resource timing lists a request once it completed)."""


def settle(page, timeout: float = 120) -> None:
    """Wait until no callback runs and every node's feature visualisation has arrived."""
    wait_idle(page, timeout=timeout)
    page.wait_for_function(IMAGES_ARRIVED, arg=GRAPH, timeout=timeout * 1000)
    page.wait_for_timeout(300)  # the SVG draws what arrived


def walk_pathways(page, base: str, session, name: str = "pathways") -> None:
    """The walk of spec-004 §8 against a running app at ``base`` over ``session``'s store."""
    pairs = session.pathway_class_pairs("pgd")
    original, target = int(pairs.original[0]), int(pairs.target[0])
    page.add_init_script("performance.setResourceTimingBufferSize(100000)")  # room for every node image
    page.goto(f"{base}/pathways")
    wait_idle(page, timeout=300)
    params = url_params(page)
    assert params["true"] == str(original) and params["adv"] == str(target)  # the most attacked pair
    page.wait_for_function(
        "(id) => [...document.querySelectorAll(`#${id} image`)].length > 0", arg=GRAPH, timeout=60_000)
    graph = session.pathway_graph(original, target, "pgd", max_images=64)
    assert set(graph.node_group.tolist()) == {0, 1, 2, 3}, "the four groups"
    assert drawn_images(page) == graph.num_nodes
    settle(page)
    for title in ("original only", "both classes", "target only", "attack only"):
        assert page.locator(f"#{GRAPH} .annotation-text", has_text=title).count() == 1
    shot(page, f"{name}-1-graph")

    strengths = len(session.sweep_info().eps)
    set_slider(page, "pathways-strength", 2, strengths)
    assert url_params(page)["eps"] == f"{session.sweep_info().eps[1] * 255:g}"
    page.get_by_text("most excited").click()
    settle(page)
    assert url_params(page)["mode"] == "excited"
    shot(page, f"{name}-2-excited")

    layer = graph.layers[-1]
    channel = int(graph.node_channel[graph.nodes_of(len(graph.layers) - 1)[0]])
    x, y = node_point(page, layer, channel)
    page.mouse.move(x, y)
    settle(page, 60)
    body = page.locator("#pathways-detail")
    assert f"{layer} · channel {channel}" in body.inner_text()
    assert body.locator(".example-img").count() >= 4
    assert page.locator("#pathways-strength-chart .scatterlayer .trace").count() >= 1
    shot(page, f"{name}-3-detail")

    page.get_by_text("two strengths").click()
    wait_idle(page, timeout=120)
    legend = page.locator("#pathways-legend").inner_text()
    for entry in ("weaker only", "stronger only", "both", "neither"):
        assert entry in legend
    assert url_params(page)["compare"] == "strengths"
    shot(page, f"{name}-4-compare")

    link = page.locator("#pathways-neurons-link")
    assert link.count() == 1 and layer == session.model.analysed_layer_name
    href = link.get_attribute("href")
    link.click()
    wait_idle(page, timeout=120)
    assert urlparse(page.url).path == "/neurons"
    assert url_params(page).get("neuron") == str(channel) and "pair" in url_params(page), href
    shot(page, f"{name}-5-neurons")
    assert not page.problems, page.problems


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from advlens.analysis import Session

    return Session(small_store_path(tmp_path_factory), device="cpu")


def test_pathways_page_walk(session):
    with served_page(session) as (server, page):
        walk_pathways(page, server.url, session)
