"""Browser test of the Model page (Playwright driving Debian's chromium) on the small real store of
``tests/app_fixtures.py`` (the demo model on the first 200 Fashion-MNIST test images, with the ``features``
stage, which ``prepare`` runs by default). Issue 8, item 9: navigate all pages, open a deep link, draw the
Architecture View of the demo model, open a layer's gallery and a channel's examples, use the layer
selection; no console errors. A screenshot per step goes to ``tests/artifacts/screenshots/`` (git-ignored).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest

from app_fixtures import (
    VIEWPORT,
    ServerThread,
    click_plot_point,
    launch_browser,
    recording_page,
    small_store_path,
    url_params,
    wait_idle,
)
from app_fixtures import shot as app_shot
from advlens.app.urls import SHARED_KEYS

import playwright.sync_api as playwright_api

pytestmark = pytest.mark.slow  # builds the 200-image demo store with its features stage (minutes on 2 cores)

PAGES = ("Neurons", "Model", "Pathways", "Profiles", "Datapaths")


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from advlens.analysis import Session

    return Session(small_store_path(tmp_path_factory), device="cpu")


@pytest.fixture(scope="module")
def server(session):
    from advlens.app import create_app

    with ServerThread(create_app(session)) as running:
        yield running


@pytest.fixture(scope="module")
def page(session, server):
    with playwright_api.sync_playwright() as playwright:
        browser = launch_browser(playwright)
        yield recording_page(browser.new_context(viewport=VIEWPORT))
        browser.close()


def shot(page, name: str) -> Path:
    return app_shot(page, name, full_page=True)  # the Model page scrolls: keep all of it


def images_loaded(page, selector: str, timeout_ms: int = 30_000) -> list[bool]:
    """Whether each image matching ``selector`` has loaded, once all have finished (a broken image never loads:
    the wait runs out and the list says which)."""
    script = f"() => [...document.querySelectorAll({selector!r})].every(i => i.complete && i.naturalWidth > 0)"
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(script, timeout=timeout_ms)
    except PlaywrightTimeout:  # some image never loaded: the list below says which
        pass
    return page.locator(selector).evaluate_all("imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")


def click_layer(page, session, name: str) -> None:
    from advlens.app.model.graph_layout import layout_graph

    x, y = layout_graph(session.model.graph).position[name]
    click_plot_point(page, "architecture-graph", x, y)
    wait_idle(page, timeout=120)


def test_model_page_walk(page, session, server):
    graph = session.model.graph
    library = session.features
    analysed = session.model.analysed_layer_name

    # 1. every page opens from the navigation; the Model page draws the Architecture View of the demo model
    page.goto(server.url)
    wait_idle(page, timeout=120)
    for title in PAGES:
        page.locator(".nav-link", has_text=title).click()
        wait_idle(page, timeout=120)
        assert page.locator(".nav-link.active").inner_text() == title
        assert not page.locator(".message-error").count(), page.locator(".message-error").first.inner_text()
    page.locator(".nav-link", has_text="Model").click()
    wait_idle(page, timeout=120)
    drawn = page.evaluate("""() => {
        const gd = document.querySelector('#architecture-graph .js-plotly-plot');
        const layers = gd._fullData.find(t => t.name === 'layers');
        return {layers: layers.x.length, symbols: layers.marker.symbol, names: layers.customdata,
                boxes: gd.querySelectorAll('.shapelayer path').length,
                shortcuts: gd._fullData.find(t => t.name === 'shortcuts').x.filter(v => v === null).length};
    }""")
    assert drawn["layers"] == len(graph) == 41
    assert drawn["boxes"] == 8  # stem, layer1–4 and the three projection shortcuts
    assert drawn["shortcuts"] == 7  # layer1's identity arc and two edges per projection shortcut
    circles = [n for n, s in zip(drawn["names"], drawn["symbols"]) if s == "circle"]
    assert circles == ["input", "fc"]
    assert "Click a layer" in page.locator("#gallery-body").inner_text()
    shot(page, "30_model_architecture")

    # 2. a click on a layer opens its channel gallery, a click on a tile its dataset examples and statistics
    layer = "layer2.relu"
    click_layer(page, session, layer)
    channels = library.num_channels(layer)
    assert page.locator(".channel-tile").count() == min(64, channels) == 64
    assert layer in page.locator("#gallery-caption").inner_text()
    assert all(images_loaded(page, ".tile-img"))
    # the navigation carried the other pages' selection every page understands (the Pathways page's class pair, the
    # Profiles and Datapaths pages' pair) and nothing else: the query is the Model page's layer plus those keys
    carried = {k: v for k, v in url_params(page).items() if k in SHARED_KEYS}
    assert url_params(page) == {"layer": layer, **carried}
    page.locator(".channel-tile", has_text="12").first.click()
    wait_idle(page, timeout=120)
    assert page.locator(".channel-tile.selected .tile-label").inner_text() == "12"
    assert f"{layer} · channel 12" in page.locator("#channel-body h3").inner_text()
    examples = library.examples(layer, 12)
    assert page.locator(".example-tile").count() == len(examples.indices) >= 4
    assert all(images_loaded(page, ".example-img")) and all(images_loaded(page, ".channel-vis"))
    values = page.locator(".example-value").all_inner_texts()
    assert [float(v) for v in values] == pytest.approx(examples.values.tolist(), rel=1e-2)
    assert page.locator(".stats-table tbody tr").count() == 2
    assert url_params(page) == {"layer": layer, "channel": "12", **carried}
    shot(page, "31_gallery_and_examples")

    # 3. a deep link opens the analysed layer's channel on its gallery page, with the selection; the channel
    # links to its neuron on the Neurons page
    link = f"{server.url}/model?layers=layer1,layer2,layer3&layer={analysed}&channel=130"
    page.goto(link)
    wait_idle(page, timeout=120)
    assert page.locator(".selection-chip").all_inner_texts() == ["1 layer1", "2 layer2", "3 layer3"]
    assert "page 3/4" in page.locator("#gallery-pager").inner_text()
    assert page.locator(".channel-tile.selected .tile-label").inner_text() == "130"
    assert f"{analysed} · channel 130" in page.locator("#channel-body h3").inner_text()
    neuron_link = page.locator(".neuron-link")
    assert neuron_link.get_attribute("href") == "/neurons?neuron=130"
    page.locator("#gallery-next").click()
    wait_idle(page, timeout=120)
    assert "page 4/4" in page.locator("#gallery-pager").inner_text()
    assert page.locator(".channel-tile .tile-label").first.inner_text() == "192"
    shot(page, "32_deep_link_analysed_layer")
    neuron_link.click()
    wait_idle(page, timeout=120)
    assert urlparse(page.url).path == "/neurons" and url_params(page)["neuron"] == "130"
    assert page.locator(".nav-link", has_text="Model").get_attribute("href") == "/model?neuron=130"
    page.locator(".nav-link", has_text="Model").click()  # the neuron comes back as the analysed layer's channel
    wait_idle(page, timeout=120)
    assert f"{analysed} · channel 130" in page.locator("#channel-body h3").inner_text()

    # 4. the layer selection: clicks toggle, a non-sequential choice is refused, presets fill it
    page.goto(f"{server.url}/model")
    wait_idle(page, timeout=120)
    page.locator("#architecture-click-mode input[value='select']").check()
    click_layer(page, session, "layer2.conv1")
    click_layer(page, session, "layer2.shortcut.0")
    refusal = page.locator("#model-selection-message").inner_text()
    assert "layer2.shortcut.0 not added" in refusal and "not sequential" in refusal
    assert page.locator(".selection-chip").all_inner_texts() == ["1 layer2.conv1"]
    shot(page, "33_non_sequential_refused")
    click_layer(page, session, "layer3")
    assert url_params(page)["layers"] == "layer2.conv1,layer3"
    page.wait_for_timeout(400)  # not a double click (Plotly's threshold is 300 ms)
    click_layer(page, session, "layer3")  # a second click removes it
    assert url_params(page)["layers"] == "layer2.conv1"
    page.locator("button", has_text="block outputs").click()
    wait_idle(page, timeout=120)
    assert page.locator(".selection-chip").count() == len(graph.block_outputs()) == 4
    halos = page.evaluate("""() => document.querySelector('#architecture-graph .js-plotly-plot')._fullData
        .find(t => t.name === 'selected').x.length""")
    assert halos == 4
    page.locator("button", has_text="activation layers").click()
    wait_idle(page, timeout=120)
    assert page.locator(".selection-chip").count() == len(graph.activation_layers()) == 9
    assert url_params(page)["layers"] == ",".join(graph.activation_layers())
    shot(page, "34_activation_layers_selected")

    # 5. an invalid link says what is wrong and opens without it
    page.goto(f"{server.url}/model?layers=layer2.conv1,layer2.shortcut.0&layer=nope&channel=3")
    wait_idle(page, timeout=120)
    problems = page.locator("#model-url-problems").inner_text()
    assert "not sequential" in problems and "'nope' is not a layer" in problems
    assert page.locator(".selection-chip").count() == 0
    shot(page, "35_invalid_link")
    assert page.problems == []
