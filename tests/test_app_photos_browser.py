"""Browser walk of the five pages on EfficientNet-Lite0 over the shipped photos (issue 12, item 3), Playwright
driving Debian's chromium, on the small photos store of ``tests/fixtures_photos.py`` (7 photos × 3 views, every
default stage but ``features``; about a minute to build on 2 idle cores, four on a loaded machine).

- Neurons: a 1,000-class store opens on the class subset of paper 001 §6.2.2 (the pickers show); picking a
  subset in the pickers → the Prediction Matrix shows exactly those rows and columns → a click on a cell selects
  that cell's pairs (counted here from the pair table with a plain loop) and the Image Grid shows them.
- Pathways and Datapaths: the attacks turn every photo into a class the dataset has no image of, so neither page
  has target images; each says so, naming the class.
- Profiles: the Flow View draws the profile axes for a pair over the 21 background images.
- Model: the Architecture View draws all of EfficientNet-Lite0's 145 layers and says the rest of the model is a
  sideways scroll away; the gallery says the store has no ``features`` stage and gives the command that adds it.

No console errors on any page. A screenshot per page goes to ``tests/artifacts/screenshots/`` (git-ignored).
"""

from __future__ import annotations

from collections import Counter

import pytest
from app_fixtures import VIEWPORT, ServerThread, launch_browser, recording_page, shot, wait_idle
from fixtures_photos import photos_store_path

pytestmark = pytest.mark.slow  # builds the photos store (EfficientNet-Lite0 at 224²) and walks five pages

MATRIX = "prediction-matrix"


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from advlens.analysis import Session

    return Session(photos_store_path(tmp_path_factory), device="cpu")


@pytest.fixture(scope="module")
def server(session):
    from advlens.app import create_app

    with ServerThread(create_app(session)) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    import playwright.sync_api as playwright_api

    with playwright_api.sync_playwright() as playwright:
        chromium = launch_browser(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport=VIEWPORT)
    page = recording_page(context)
    yield page
    assert not page.problems, page.problems
    context.close()


def open_page(page, url: str) -> None:
    page.goto(url, timeout=120_000)
    wait_idle(page, timeout=300)


def images_arrived(page) -> None:
    """Wait until every image of the page that has a source has loaded (the 224² photos arrive after the callbacks
    end); a broken image never loads, so the wait runs out."""
    page.wait_for_function("() => [...document.images].filter(i => i.getAttribute('src'))"
                           ".every(i => i.complete && i.naturalWidth > 0)", timeout=120_000)


def drawn(page, graph_id: str) -> None:
    """Wait until Plotly has drawn the graph ``graph_id`` (its data is on the plot's element)."""
    page.wait_for_function("(id) => { const gd = document.querySelector(`#${id} .js-plotly-plot`);"
                           " return !!(gd && gd._fullData && gd._fullLayout); }", arg=graph_id, timeout=120_000)


def matrix_axes(page) -> dict:
    """The class names on the Prediction Matrix's rows and columns as Plotly drew them."""
    drawn(page, MATRIX)
    return page.evaluate(
        """(id) => {
            const gd = document.querySelector(`#${id} .js-plotly-plot`);
            return {rows: gd._fullLayout.yaxis.ticktext || [], cols: gd._fullLayout.xaxis.ticktext || []};
        }""", MATRIX)


def pick_classes(page, picker: str, labels: list[str]) -> None:
    """Replace a class picker's choice by ``labels`` as a user does: Deselect All, then search and click each."""
    page.locator(f"#{picker}").click()
    page.locator(".dash-dropdown-action-button", has_text="Deselect All").click()
    wait_idle(page)
    for label in labels:
        page.locator(".dash-dropdown-search").fill(label.split(": ", 1)[1])
        page.locator(".dash-dropdown-option", has_text=label).click()
        wait_idle(page)
    page.keyboard.press("Escape")
    wait_idle(page)


def test_prediction_matrix_class_subsets(page, session, server):
    from advlens.app import common

    names = session.class_names
    assert len(names) == 1000 > common.MAX_FULL_CLASSES
    open_page(page, f"{server.url}/neurons")
    assert page.locator(".class-subset").is_visible()
    default = session.class_subset()
    axes = matrix_axes(page)
    assert axes["rows"] == [names[c] for c in default.benign]
    assert axes["cols"] == [names[c] for c in default.adversarial]
    shot(page, "photos-1-neurons-default-subset")

    # the subset: the two most attacked true classes and, for each, its most frequent adversarial class
    # (counted with a plain loop over the pair table, independently of the page's code)
    cells = Counter(zip(session.table["label"].tolist(), session.table["adv_pred"].tolist()))
    by_row = Counter(label for label, _ in cells.elements())
    rows = sorted(label for label, _ in by_row.most_common(2))
    cols = sorted({max((c for c in cells if c[0] == r), key=lambda c: (cells[c], -c[1]))[1] for r in rows})
    pick_classes(page, "subset-rows", [f"{r}: {names[r]}" for r in rows])
    pick_classes(page, "subset-cols", [f"{c}: {names[c]}" for c in cols])
    axes = matrix_axes(page)
    assert axes["rows"] == [names[r] for r in rows] and axes["cols"] == [names[c] for c in cols]
    legend = page.locator("#overview-legend").inner_text()
    assert all(names[c] in legend for c in rows + cols)
    shot(page, "photos-2-neurons-picked-subset")

    # a click on the fullest shown cell selects its pairs; the Image Grid shows them
    row, col = max(((r, c) for r in rows for c in cols), key=lambda rc: cells[rc])
    box = page.locator(f"#{MATRIX} .nsewdrag").first.bounding_box()
    i, j = rows.index(row), cols.index(col)
    page.mouse.click(box["x"] + (j + 0.5) * box["width"] / len(cols),
                     box["y"] + (i + 0.5) * box["height"] / len(rows))
    wait_idle(page, timeout=120)
    expected = cells[(row, col)]
    assert expected >= 1
    summary = page.locator("#overview-summary").inner_text()
    assert f"selected: {names[row]} → {names[col]} ({expected} pairs)" in summary
    labels, adversarial = session.table["label"].tolist(), session.table["adv_pred"].tolist()
    in_cell = {p for p in range(len(labels)) if (labels[p], adversarial[p]) == (row, col)}
    cards = page.locator(".pair-card").evaluate_all("cards => cards.map(c => JSON.parse(c.id).pair)")
    assert len(cards) == min(24, expected) and set(cards) <= in_cell
    images_arrived(page)
    shot(page, "photos-3-neurons-cell-selected")


def test_pathways_says_the_target_class_has_no_images(page, session, server):
    pairs = session.pathway_class_pairs("pgd")
    original, target = int(pairs.original[0]), int(pairs.target[0])
    assert pairs.sampled[target] == 0, "the photos are attacked into classes the dataset has no image of"
    open_page(page, f"{server.url}/pathways")
    assert "per class" in page.locator(".pw-sidebar").inner_text()  # the sweep's per-class sample is named
    graph = page.locator("#pathways-graph")
    assert f"({session.class_names[target]})" in graph.inner_text()
    assert "holds no image of" in graph.inner_text() and "--target-class" in graph.inner_text()
    assert session.class_names[original] in page.locator(".pw-sidebar").inner_text()
    shot(page, "photos-4-pathways")


def test_profiles_flow_view(page, session, server):
    layers = session.profile_layers()
    open_page(page, f"{server.url}/profiles?pair=0")
    drawn(page, "profiles-flow")
    ticks = page.evaluate("""() => document.querySelector('#profiles-flow .js-plotly-plot')
        ._fullLayout.xaxis.ticktext""")
    assert ticks == layers and layers[-1] == "_fc"
    background = len(session.background_labels())
    assert background == 21  # every examined image: 7 photos × 3 views
    assert f"{background} background images" in page.locator("#profiles-flow-caption").inner_text()
    images_arrived(page)
    shot(page, "photos-5-profiles", full_page=True)


def test_datapaths_says_the_target_class_has_no_images(page, session, server):
    adversarial = int(session.table["adv_pred"][0])
    open_page(page, f"{server.url}/datapaths")
    assert "Pick an adversarial example" in page.locator("#dp-summary").inner_text()
    open_page(page, f"{server.url}/datapaths?pair=0")
    page.wait_for_function("() => /failed/.test(document.querySelector('#dp-progress').innerText)", timeout=300_000)
    message = page.locator("#dp-progress").inner_text()
    assert f"class {adversarial} ({session.class_names[adversarial]})" in message and "no target images" in message
    assert "holds no image of" in message and "--target-class" in message  # what to do
    images_arrived(page)
    shot(page, "photos-6-datapaths", full_page=True)


def test_model_page(page, session, server):
    graph = session.model.graph
    open_page(page, f"{server.url}/model?layer={session.model.analysed_layer_name}")
    drawn(page, "architecture-graph")
    layers = page.evaluate("""() => document.querySelector('#architecture-graph .js-plotly-plot')
        ._fullData.find(t => t.name === 'layers').x.length""")
    assert layers == len(graph) == 145
    assert page.get_by_text("px wide: scroll sideways for the rest").count() == 1  # 145 columns do not fit
    gallery = page.locator("#gallery-body").inner_text()
    assert "no feature visualisations" in gallery and "--stages features" in gallery
    shot(page, "photos-7-model", full_page=True)


def test_profiles_warns_about_a_small_background(page, session, server):
    from advlens.profiles import RECOMMENDED_BACKGROUND

    background = len(session.background_labels())
    assert background < RECOMMENDED_BACKGROUND
    open_page(page, f"{server.url}/profiles?pair=0")
    text = page.locator("body").inner_text()
    assert f"{RECOMMENDED_BACKGROUND:,}" in text and "representative" in text
