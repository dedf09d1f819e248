"""Browser walk of the what-if panel (issue 13, item 3) on the small real store (the demo model on the first 200
Fashion-MNIST test images): select a pair and a neuron → the panel shows → zero the neuron, then restore the top k
to benign → the probabilities change → the URL holds the edit → a reload restores it → the sort-by menu shows each
measure's faithfulness badge; no console errors.
Screenshots go to ``tests/artifacts/screenshots/what_if_*.png`` (git-ignored; the paths are printed).

Without the Debian packages ``dataset-fashion-mnist`` or ``chromium`` (the Makefile installs both) it fails,
saying what to install.
"""

from __future__ import annotations

import numpy as np
import pytest

from app_fixtures import (
    VIEWPORT,
    ServerThread,
    click_matrix_cell,
    click_plot_point,
    launch_browser,
    recording_page,
    shot,
    small_store_path,
    wait_idle,
)

import playwright.sync_api as playwright_api

pytestmark = pytest.mark.slow  # a 200-image demo store (≈ 30–60 s) and a browser walk


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from advlens.analysis import Session

    return Session(small_store_path(tmp_path_factory), device="cpu")


@pytest.fixture(scope="module")
def server(session):
    from advlens.app import create_app

    with ServerThread(create_app(session)) as running:
        yield running


@pytest.fixture
def page(server):
    with playwright_api.sync_playwright() as playwright:
        browser = launch_browser(playwright)
        context = browser.new_context(viewport=VIEWPORT)
        page = recording_page(context)
        page.goto(server.url)
        wait_idle(page)
        yield page
        context.close()
        browser.close()


def edited_bars(page) -> dict[str, list[float]]:
    """The what-if graph's bar series as Plotly drew them (name → heights)."""
    return page.evaluate("""() => {
        const gd = document.querySelector('#what-if-graph .js-plotly-plot');
        return Object.fromEntries((gd && gd.data || []).map(t => [t.name, Array.from(t.y)]));
    }""")


def series(bars: dict, prefix: str) -> np.ndarray:
    return np.asarray(next(v for k, v in bars.items() if k.startswith(prefix)))


def test_the_what_if_panel_edits_the_selected_neurons(page, session, server):
    names = session.class_names
    matrix = session.prediction_matrix()
    true_label, adv_label = (int(i) for i in np.unravel_index(np.argmax(matrix), matrix.shape))
    # the panel asks for a pair first
    assert "Pick a pair in the Image Grid" in page.locator("#what-if-graph").inner_text()

    # select a pair (the fullest cell's first card) and its top neuron by band gap
    click_matrix_cell(page, true_label, adv_label, session.num_classes, session.num_classes)
    wait_idle(page)
    page.locator(".pair-card").first.click()
    wait_idle(page, timeout=180)
    pair = int(session.sort_pairs(session.pairs_in_cell(true_label, adv_label), "perturbation_asc")[0])
    info = session.pair_info(pair)
    assert "Select a neuron" in page.locator("#what-if-graph").inner_text()
    top = int(session.neuron_ranking(pair, "band_gap")[0][0])
    click_plot_point(page, "neuron-graph", 0, 0.0)
    wait_idle(page)

    # the panel shows: the original benign and adversarial bars and the edited ones, for every class
    bars = edited_bars(page)
    assert len(bars) == 3
    np.testing.assert_allclose(series(bars, "original benign"), info["benign_probs"], atol=1e-3)
    np.testing.assert_allclose(series(bars, "original adversarial"), info["adv_probs"], atol=1e-3)
    summary = page.locator("#what-if-summary").inner_text()
    assert summary.startswith(f"neuron {top}: 1 neuron (#{top}) restored to benign in the adversarial pass")
    shot(page, "what_if_1_neuron")
    one_restored = series(bars, "edited")

    # zero it in the adversarial pass: the edited probabilities change, the URL says so
    page.locator("#what-if-mode label", has_text="zero (adversarial pass)").click()
    wait_idle(page)
    zeroed = series(edited_bars(page), "edited")
    assert not np.allclose(zeroed, one_restored, atol=1e-4)
    assert "zeroed in the adversarial pass" in page.locator("#what-if-summary").inner_text()
    assert "edit=zero_adversarial" in page.url

    # restore the top k = every neuron to benign: the benign prediction comes back (the layer feeds the head)
    page.locator("#what-if-mode label", has_text="restore to benign").click()
    page.locator("#what-if-source label", has_text="the top").click()
    wait_idle(page)
    box = page.locator("#what-if-k")
    box.fill(str(session.num_neurons))
    box.press("Enter")
    wait_idle(page)
    restored = series(edited_bars(page), "edited")
    np.testing.assert_allclose(restored, info["benign_probs"], atol=2e-3)
    summary = page.locator("#what-if-summary").inner_text()
    assert f"the top {session.num_neurons} by band gap" in summary and "the attack is undone" in summary
    assert f"predicts {names[info['label']]}" in summary
    shot(page, "what_if_2_top_k_restored")

    # the URL holds the state; a reload opens the same panel
    url = page.url
    assert f"pair={pair}" in url and f"neuron={top}" in url and "edit_of=top" in url
    assert f"k={session.num_neurons}" in url and "edit=" not in url  # restore is the default edit
    page.goto(url)
    wait_idle(page, timeout=180)
    assert page.locator("#what-if-source input[value=top]").is_checked()
    assert page.locator("#what-if-mode input[value=restore]").is_checked()
    assert page.locator("#what-if-k").input_value() == str(session.num_neurons)
    np.testing.assert_allclose(series(edited_bars(page), "edited"), restored, atol=1e-6)
    assert page.url == url
    shot(page, "what_if_3_reloaded")

    # the sort-by menu carries each measure's insertion AUC on this pair, the highest marked
    aucs = session.measure_faithfulness(pair, mode="insertion")  # the store keeps them: read back, not recomputed
    page.locator("#neuron-measure").click()
    labels = page.locator(".dash-dropdown-option").all_inner_texts()
    best = max(aucs, key=aucs.get)
    from advlens.app.neurons.neuron_view import MEASURE_LABELS

    assert [" ".join(label.split()) for label in labels] == [
        f"{MEASURE_LABELS[m]} · AUC {aucs[m]:.2f}" + (" (best)" if m == best else "") for m in MEASURE_LABELS]
    shot(page, "what_if_4_badges")
    page.keyboard.press("Escape")

    # the links to the pair on the other pages
    links = page.locator("#neuron-pair-links a")
    assert [links.nth(i).get_attribute("href") for i in range(links.count())] == \
        [f"/profiles?pair={pair}", f"/datapaths?pair={pair}"]
    assert page.problems == []
