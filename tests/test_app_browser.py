"""Browser tests of the web app (Playwright driving Debian's chromium) on a small real store (the demo model on
the first 200 Fashion-MNIST test images). Without the Debian packages ``dataset-fashion-mnist`` or ``chromium``
(the Makefile installs both) these tests fail, saying what to install.

``test_case_study_walkthrough`` walks paper 001's §6.1.2 case in Fashion-MNIST terms (T-shirt/top
images attacked into Shirt, the analogue of cat → dog): click the matrix cell → the grid fills → sort
→ pick a pair → the neuron view draws → pick the top neuron → both RFs and both maps → select a
dendrogram node → union/intersection → context images. A screenshot per step goes to
``tests/artifacts/screenshots/`` (git-ignored; the path is printed).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from app_fixtures import (
    VIEWPORT,
    ServerThread,
    click_matrix_cell,
    click_plot_point,
    figure_title,
    launch_browser,
    recording_page,
    shot,
    small_store_path,
    trace_count,
    wait_idle,
    webgl_trace_count,
)

import playwright.sync_api as playwright_api

pytestmark = pytest.mark.slow  # a 200-image demo store (≈ 30–60 s) and a browser walk per test



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
def browser():
    with playwright_api.sync_playwright() as playwright:
        chromium = launch_browser(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport=VIEWPORT)
    page = recording_page(context)
    page.goto(server.url)
    wait_idle(page)
    yield page
    context.close()


def case_cell(session) -> tuple[int, int]:
    """T-shirt/top → Shirt (or Shirt → T-shirt/top) when populated, else the fullest cell."""
    matrix = session.prediction_matrix()
    names = session.class_names
    if "T-shirt/top" in names and "Shirt" in names:
        t, s = names.index("T-shirt/top"), names.index("Shirt")
        best = max([(t, s), (s, t)], key=lambda c: matrix[c])
        if matrix[best] >= 3:
            return best
    return tuple(int(i) for i in np.unravel_index(np.argmax(matrix), matrix.shape))


def card_ids(page) -> list[int]:
    return [int(re.search(r'"pair":(\d+)', i).group(1)) for i in page.locator(".pair-card").evaluate_all(
        "cards => cards.map(c => c.id)")]


def test_case_study_walkthrough(page, session):
    from advlens.app.neurons.cluster_view import geometry

    # 1. overview: both scatterplots and the matrix drawn, nothing selected yet
    assert webgl_trace_count(page, "scatter-benign") >= 2 and webgl_trace_count(page, "scatter-adversarial") >= 2
    assert page.locator("#prediction-matrix .hm").count() or trace_count(page, "prediction-matrix") == 1
    assert "Nothing selected" in page.locator("#grid-body").inner_text()
    shot(page, "01_overview")

    # 2. click the matrix cell → the grid fills with that cell's pairs
    true_label, adv_label = case_cell(session)
    cell_pairs = session.pairs_in_cell(true_label, adv_label)
    click_matrix_cell(page, true_label, adv_label, session.num_classes, session.num_classes)
    wait_idle(page)
    shown = card_ids(page)
    assert len(shown) == min(24, len(cell_pairs))
    assert set(shown) <= set(int(p) for p in cell_pairs)
    names = session.class_names
    assert f"{names[true_label]} → {names[adv_label]}" in page.locator("#overview-summary").inner_text()
    assert page.locator(".pair-img").first.evaluate("img => img.complete && img.naturalWidth > 0")
    shot(page, "02_cell_selected")

    # 3. sort by the rise of the adversarial probability
    page.locator("#grid-sort").click()
    page.locator(".dash-dropdown-option", has_text="rise of the adversarial probability").click()
    wait_idle(page)
    expected = [int(p) for p in session.sort_pairs(cell_pairs, "adversarial_rise")[:24]]
    assert card_ids(page) == expected
    shot(page, "03_sorted")

    # 4. pick the first pair → neuron view, RF view and dendrogram draw for it
    pair = expected[0]
    page.locator(".pair-card").first.click()
    wait_idle(page, timeout=120)
    assert f"pair {pair}" in figure_title(page, "neuron-graph")
    assert trace_count(page, "neuron-graph") >= 6
    assert f"pair {pair}" in figure_title(page, "dendrogram")
    assert page.locator(".pair-card.selected").count() == 1
    assert "No neuron selected" in page.locator("#rf-caption").inner_text()
    for image in ("#bmap-img", "#amap-img"):
        assert page.locator(image).get_attribute("src").startswith("data:image/png;base64,")
    shot(page, "04_pair_picked")

    # 5. pick the top neuron (leftmost in the band-gap order)
    top = int(session.neuron_ranking(pair, "band_gap")[0][0])
    click_plot_point(page, "neuron-graph", 0, 0.0)
    wait_idle(page)
    assert f"neuron {top}" in page.locator("#rf-caption").inner_text()
    for image in ("#rf-benign-img", "#rf-adversarial-img", "#bmap-img", "#amap-img"):
        src = page.locator(image).get_attribute("src")
        assert src.startswith("data:image/png;base64,") and len(src) > 200
    assert "benign RF" in page.locator("#rf-benign-title").inner_text()
    assert "adversarial RF" in page.locator("#rf-adversarial-title").inner_text()
    assert page.locator("#rf-benign-probs .bar-row").count() == session.num_classes
    shot(page, "05_top_neuron")

    # 5b. re-sort the neurons by IoU with bMap, then back to the band gap
    for label, measure in (("IoU of the benign RF with bMap", "iou_bmap"), ("band gap", "band_gap")):
        page.locator("#neuron-measure").click()
        page.locator(".dash-dropdown-option", has_text=label).click()
        wait_idle(page, timeout=120)
        assert label in figure_title(page, "neuron-graph")
        if measure == "iou_bmap":
            shot(page, "05b_sorted_by_iou_bmap")

    # 6. click the dendrogram node above the top neuron that holds at least 3 neurons
    geo = geometry(session, pair)
    node = top
    while geo.size[node] < 3 and geo.parent[node] >= 0:
        node = int(geo.parent[node])
    members = session.clustering(pair).members(node)
    click_plot_point(page, "dendrogram", float(geo.x[node]), float(geo.y[node]))
    wait_idle(page)
    assert f"{len(members)} neurons" in figure_title(page, "dendrogram")
    assert f"union of {len(members)} neurons" in page.locator("#rf-caption").inner_text()
    shot(page, "06_dendrogram_node")

    # 7. switch to the intersection
    page.locator("#combine-op label", has_text="intersection").click()
    wait_idle(page)
    assert f"intersection of {len(members)} neurons" in page.locator("#rf-caption").inner_text()
    shot(page, "07_intersection")

    # 7b. the selected subtree is in the URL: a reload opens the same nodes (their RFs' union, the default)
    assert parse_qs(urlparse(page.url).query)["nodes"] == [str(node)]
    page.reload()
    wait_idle(page, timeout=120)
    assert f"{len(members)} neurons" in figure_title(page, "dendrogram")
    assert f"union of {len(members)} neurons" in page.locator("#rf-caption").inner_text()

    # 8. back to the single neuron, then its context images (both orders)
    click_plot_point(page, "neuron-graph", 0, 0.0)
    wait_idle(page)
    if f"neuron {top}" not in page.locator("#rf-caption").inner_text():  # same neuron again: clear the nodes
        page.locator("#dendrogram-clear").click()
        wait_idle(page)
    assert f"neuron {top}" in page.locator("#rf-caption").inner_text()
    page.locator("#rf-benign-img").click()
    wait_idle(page)
    assert page.locator("#context-modal").is_visible()
    assert f"neuron {top}" in page.locator("#context-title").inner_text()
    m = min(6, len(cell_pairs))
    assert page.locator(".context-tile").count() == 2 * m
    shot(page, "08_context_activation")
    page.locator("#context-by label", has_text="confidence").click()
    wait_idle(page)
    assert "prediction confidence" in page.locator("#context-body").inner_text()
    assert page.locator(".context-tile").count() == 2 * m
    shot(page, "09_context_confidence")
    page.locator("#context-close").click()
    wait_idle(page)
    assert not page.locator("#context-modal").is_visible()

    assert page.problems == []


def test_lasso_selection_and_paging(page, session):
    """Colour by predicted label; a lasso around the whole adversarial plot selects pairs; large selections
    page 24 at a time; clearing empties the grid."""
    from advlens.app.neurons.image_grid import PAGE_SIZE

    page.locator("#overview-color-by label", has_text="predicted label").click()
    wait_idle(page)
    assert "(predicted label)" in figure_title(page, "scatter-adversarial")
    adversarial_classes = len(np.unique(session.overview()["adv_pred"]))
    assert webgl_trace_count(page, "scatter-adversarial") == adversarial_classes

    box = page.locator("#scatter-adversarial .nsewdrag").first.bounding_box()
    left, top, right, bottom = box["x"] + 4, box["y"] + 4, box["x"] + box["width"] - 4, box["y"] + box["height"] - 4
    corners = [(left, bottom), (right, bottom), (right, top), (left, top), (left, bottom - 1)]
    page.mouse.move(*corners[0])
    page.mouse.down()
    for corner in corners[1:]:
        page.mouse.move(*corner, steps=6)
    page.mouse.up()
    wait_idle(page)
    summary = page.locator("#overview-summary").inner_text()
    shot(page, "10_lasso")
    found = re.search(r"\((\d+) pairs\)", summary)
    assert found, summary
    selected = int(found.group(1))
    assert "lasso in the adversarial plot" in summary and selected > PAGE_SIZE
    assert len(card_ids(page)) == PAGE_SIZE
    page.locator("#grid-next").click()
    wait_idle(page)
    assert "page 2/" in page.locator("#grid-pager").inner_text()
    assert len(card_ids(page)) == min(PAGE_SIZE, selected - PAGE_SIZE)
    page.locator("#overview-clear").click()
    wait_idle(page)
    assert "Nothing selected" in page.locator("#grid-body").inner_text()
    shot(page, "11_after_clear")
    assert page.problems == []


def test_pages_deep_links_and_the_url(page, session, server):
    """A deep link opens its pair (on the grid page holding it) and neuron; a new pick is written into the URL
    and back/forward follow it; the navigation carries the selection to the other pages and back; an invalid
    link says what is wrong; ``/`` opens the Neurons page."""
    from advlens.app.neurons.image_grid import PAGE_SIZE

    true_label, adv_label = case_cell(session)
    ordered = [int(p) for p in session.sort_pairs(session.pairs_in_cell(true_label, adv_label), "perturbation_asc")]
    pair = ordered[PAGE_SIZE] if len(ordered) > PAGE_SIZE else ordered[-1]
    neuron = int(session.neuron_ranking(pair, "band_gap")[0][3])
    assert page.url.endswith("/neurons")  # `/` redirected
    page.goto(f"{server.url}/neurons?pair={pair}&neuron={neuron}")
    wait_idle(page, timeout=120)
    assert f"pair {pair}:" in figure_title(page, "neuron-graph")
    assert f"neuron {neuron}" in page.locator("#rf-caption").inner_text()
    assert page.locator(".pair-card.selected").count() == 1
    expected_page = ordered.index(pair) // PAGE_SIZE + 1
    assert f"page {expected_page}/" in page.locator("#grid-pager").inner_text()
    assert f"{session.class_names[true_label]} → {session.class_names[adv_label]}" in \
        page.locator("#overview-summary").inner_text()
    assert page.locator(".nav-link.active").inner_text() == "Neurons"
    shot(page, "20_deep_link")

    # a new pick is written into the URL; back returns to the linked pair
    other = card_ids(page)[0] if card_ids(page)[0] != pair else card_ids(page)[1]
    page.locator(".pair-card").nth(card_ids(page).index(other)).click()
    wait_idle(page, timeout=120)
    assert page.url.endswith(f"/neurons?pair={other}&neuron={neuron}"), page.url
    assert f"pair {other}:" in figure_title(page, "neuron-graph")
    page.go_back()
    wait_idle(page, timeout=120)
    assert page.url.endswith(f"/neurons?pair={pair}&neuron={neuron}"), page.url
    assert f"pair {pair}:" in figure_title(page, "neuron-graph")

    # the navigation carries the selection to another page; back returns to the Neurons page's selection
    profiles = page.locator(".nav-link", has_text="Profiles")
    assert profiles.get_attribute("href") == f"/profiles?pair={pair}&neuron={neuron}"
    profiles.click()
    wait_idle(page)
    assert page.url.endswith(f"/profiles?pair={pair}&neuron={neuron}")
    assert page.locator(".nav-link.active").inner_text() == "Profiles"
    text = page.locator(".page").first.inner_text()
    assert "No such page" not in text and "Unexpected error" not in text
    shot(page, "21_profiles_page")
    page.go_back()
    wait_idle(page, timeout=120)
    assert f"pair {pair}:" in figure_title(page, "neuron-graph")
    # the Neurons page links to this pair on the Profiles and Datapaths pages (they check the id themselves)
    links = page.locator("#neuron-pair-links a")
    assert [links.nth(i).get_attribute("href") for i in range(links.count())] == \
        [f"/profiles?pair={pair}", f"/datapaths?pair={pair}"]
    shot(page, "22_pair_links")

    # an invalid link says what is wrong and opens without it
    page.goto(f"{server.url}/neurons?pair={session.num_pairs + 7}&neuron=-1")
    wait_idle(page)
    problems = page.locator("#neurons-url-problems").inner_text()
    assert f"pair {session.num_pairs + 7} does not exist" in problems and "neuron -1 does not exist" in problems
    assert "Nothing selected" in page.locator("#grid-body").inner_text()
    shot(page, "23_invalid_link")
    page.goto(f"{server.url}/nowhere")
    wait_idle(page)
    assert "No such page" in page.locator(".page").inner_text()
    assert page.problems == []


def test_a_card_the_pointer_rests_on_starts_its_maps_before_the_click(page, session, server, monkeypatch):
    """Resting the pointer on an Image Grid card (``assets/pair_hover.js``) makes the server start that pair's
    vulnerability maps; the card is not selected by it."""
    from advlens.app.neurons import image_grid

    started = []
    original = image_grid.start_masks

    def recording(session_, pair, top_percent, done=None):
        started.append(pair)
        return original(session_, pair, top_percent, done=done)
    monkeypatch.setattr(image_grid, "start_masks", recording)
    true_label, adv_label = case_cell(session)
    page.goto(f"{server.url}/neurons?true={true_label}&adv={adv_label}")
    wait_idle(page, timeout=120)
    card = page.locator(".pair-card").nth(1)
    pair = int(re.search(r'"pair":(\d+)', card.get_attribute("id")).group(1))
    card.hover()
    page.wait_for_timeout(400)  # the script waits 150 ms of rest; then one request
    wait_idle(page)
    assert started == [pair]
    assert page.locator(".pair-card.selected").count() == 0
    assert page.problems == []
