"""Browser walk of the Datapaths page (Playwright driving Debian's chromium) on the small real store of
``tests/app_fixtures.py`` (the demo model on the first 200 Fashion-MNIST test images), spec-003 §6 A16, the
diverging case: pick a pair → the river draws → click the layer with the largest source–adversarial divergence →
treemap (activation difference) → click its top map → neuron level → draw an AOI box → trace its contributions
to an earlier layer → treemap in contribution mode (dotted fill, top-10 list) → click the top contributor → the
breadcrumb shows the chain; then a pair whose datapaths are not stored shows the job's progress bar, and its
river once the job ends (so no job is left running when the test ends). No console errors. The pair walked is computed in the fixture through the analysis API, so the walk is not dominated by the
extraction. A screenshot per step goes to ``tests/artifacts/screenshots/`` (git-ignored).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from app_fixtures import click_plot_point, served_page, shot, small_store_path, url_params, wait_idle

pytestmark = pytest.mark.slow  # the 200-image demo store and one pair's datapaths (minutes on 2 cores)

RIVER, TREEMAP, MAPS = "dp-river", "dp-treemap", "dp-maps"


def figure_data(page, graph_id: str) -> list[dict]:
    """The traces Plotly holds for a graph (name, x, y, customdata)."""
    return page.evaluate(
        """(graphId) => document.querySelector(`#${graphId} .js-plotly-plot`)._fullData.map(
            t => ({name: t.name, type: t.type, x: t.x, y: t.y, customdata: t.customdata || null,
                   fillpattern: t.fillpattern ? t.fillpattern.shape : null}))""", graph_id)


def river_columns(page) -> list:
    bars = next(t for t in figure_data(page, RIVER) if t["type"] == "bar")
    return [c[1] for c in bars["customdata"]]


def drag_box(page, graph_id: str, x0: float, y0: float, x1: float, y1: float) -> None:
    """Drag a selection box between data points of the first subplot."""
    page.locator(f"#{graph_id}").scroll_into_view_if_needed()
    corners = page.evaluate(
        """([graphId, pts]) => {
            const gd = document.querySelector(`#${graphId} .js-plotly-plot`);
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
            const rect = gd.querySelector('.nsewdrag[data-subplot="xy"]').getBoundingClientRect();
            return pts.map(([x, y]) => [rect.left + xa.l2p(x), rect.top + ya.l2p(y)]);
        }""", [graph_id, [[x0, y0], [x1, y1]]])
    page.mouse.move(*corners[0])
    page.mouse.down()
    page.mouse.move((corners[0][0] + corners[1][0]) / 2, (corners[0][1] + corners[1][1]) / 2, steps=4)
    page.mouse.move(*corners[1], steps=4)
    page.mouse.up()


def click_map(page, map_id: int) -> None:
    """Click a feature map's cell in the treemap."""
    cells = next(t for t in figure_data(page, TREEMAP) if t["name"] == "maps")
    i = [c[1] for c in cells["customdata"]].index(map_id)
    page.locator(f"#{TREEMAP}").scroll_into_view_if_needed()
    click_plot_point(page, TREEMAP, cells["x"][i], cells["y"][i])


def walk_datapaths(page, base: str, session, pair: int, other: int, name: str = "datapaths") -> dict:
    """The walk against a running app at ``base``; returns measured latencies (s)."""
    paths = session.stored_pair_datapaths(pair)
    page.goto(f"{base}/datapaths")
    wait_idle(page, timeout=120)
    assert "Pick an adversarial example" in page.locator("#dp-summary").inner_text()
    page.goto(f"{base}/datapaths?pair={pair}")
    wait_idle(page, timeout=300)
    page.wait_for_function("(id) => document.querySelectorAll(`#${id} .scatterlayer .trace`).length >= 3",
                           arg=RIVER, timeout=60_000)
    shot(page, f"{name}-1-river", full_page=True)

    # the layer with the largest source–adversarial divergence d2; expand its group when it is collapsed
    layer = paths.layers[int(np.argmax(paths.d2_rms))]
    columns = river_columns(page)
    labels = page.evaluate(f"document.querySelector('#{RIVER} .js-plotly-plot')._fullLayout.xaxis.ticktext")
    group = next(g.group for g in session.datapath_layers() if g.name == layer)
    if layer not in labels:  # inside a collapsed group (whose label ends in ▸): a click expands it
        click_plot_point(page, RIVER, labels.index(f"{group} ▸"), 0.0)
        wait_idle(page, timeout=60)
        columns = river_columns(page)
        labels = page.evaluate(f"document.querySelector('#{RIVER} .js-plotly-plot')._fullLayout.xaxis.ticktext")
    click_plot_point(page, RIVER, columns[labels.index(layer)], 0.0)
    wait_idle(page, timeout=120)
    assert url_params(page)["layer"] == layer
    page.wait_for_function("(id) => document.querySelectorAll(`#${id} .scatterlayer .trace`).length >= 2",
                           arg=TREEMAP, timeout=60_000)
    assert "activation difference" in page.locator("#dp-treemap-caption").inner_text()
    shot(page, f"{name}-2-treemap", full_page=True)

    # the map with the largest activation difference among the drawn (critical) maps
    cells = next(t for t in figure_data(page, TREEMAP) if t["name"] == "maps")
    drawn = [c[1] for c in cells["customdata"]]
    acti = paths.layer_acti(layer)
    a, b = ("adv", "tar") if "acti(adv) − acti(tar)" in page.locator("#dp-treemap-caption").inner_text() else \
        ("src", "adv")
    diff = acti[paths.row(a)] - acti[paths.row(b)]
    top = max(drawn, key=lambda m: (diff[m], -m))
    started = time.perf_counter()
    click_map(page, top)
    wait_idle(page, timeout=120)
    latency = time.perf_counter() - started
    assert url_params(page)["map"] == str(top)
    assert page.locator(f"#{MAPS} .hm, #{MAPS} .heatmaplayer image, #{MAPS} image").count() >= 3
    assert page.locator(".dp-example-img").count() >= 4
    shot(page, f"{name}-3-neuron", full_page=True)

    h, w = next(g.grid for g in session.datapath_layers() if g.name == layer)
    page.wait_for_timeout(500)  # Plotly has drawn the maps
    drag_box(page, MAPS, w * 0.25 - 0.5, h * 0.25 - 0.5, w * 0.75 - 0.5, h * 0.75 - 0.5)
    page.wait_for_function("() => /AOI: \\d+ neurons/.test(document.querySelector('#dp-neuron-caption').innerText)",
                           timeout=60_000)
    wait_idle(page, timeout=60)
    caption = page.locator("#dp-neuron-caption").inner_text()
    assert "AOI:" in caption and "whole map" not in caption, caption
    source = page.locator("#dp-source").inner_text().strip()
    assert source, "an earlier layer is offered"
    page.locator("#dp-trace-run").click()
    wait_idle(page, timeout=600)
    assert url_params(page)["layer"] == source and url_params(page).get("encoding") == "contribution"
    page.wait_for_function("(id) => document.querySelectorAll(`#${id} .scatterlayer .trace`).length >= 2",
                           arg=TREEMAP, timeout=60_000)
    assert any(t["fillpattern"] == "." for t in figure_data(page, TREEMAP)), "dotted fill"
    assert page.locator(".dp-top-button").count() == 10
    shot(page, f"{name}-4-contribution", full_page=True)

    first = page.locator(".dp-top-button").first
    contributor = int(json.loads(first.get_attribute("id"))["map"])
    first.click()
    wait_idle(page, timeout=120)
    assert url_params(page)["map"] == str(contributor)
    chain = page.locator("#dp-crumbs").inner_text()
    assert f"{layer} · map {top} (AOI)" in chain and f"{source} · map {contributor}" in chain, chain
    assert "AOI:" in page.locator("#dp-neuron-caption").inner_text()  # the AOI is kept on the earlier layer
    shot(page, f"{name}-5-chain", full_page=True)

    page.goto(f"{base}/datapaths?pair={other}")
    page.wait_for_selector(".job-running", timeout=60_000)
    assert f"datapaths of pair {other}" in page.locator("#dp-progress").inner_text()
    shot(page, f"{name}-6-job")
    # the job ends (≈ 8 s on an idle machine) and the river draws without a reload
    page.wait_for_function("(id) => document.querySelectorAll(`#${id} .scatterlayer .trace`).length >= 3",
                           arg=RIVER, timeout=1_800_000)
    assert page.locator(".job-running").count() == 0 and session.stored_pair_datapaths(other) is not None
    shot(page, f"{name}-7-job-done")
    assert not page.problems, page.problems
    return {"map click → neuron view (s)": latency}


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from advlens.analysis import Session

    return Session(small_store_path(tmp_path_factory), device="cpu")


def test_datapaths_page_walk(session):
    examples = session.datapath_examples()
    pair, other = (int(p) for p in examples.medium(2))
    session.pair_datapaths(pair)  # computed here: the walk then reads it from the store
    if session.stored_pair_datapaths(other) is not None:
        pytest.fail(f"pair {other} should not be stored yet: the walk checks the job path on it")
    with served_page(session) as (server, page):
        latencies = walk_datapaths(page, server.url, session, pair, other)
        print(latencies)
