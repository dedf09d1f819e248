"""Browser walk of the Profiles page's what-if panel (issue 13, item 3) on the small real store (the demo model on
the first 200 Fashion-MNIST test images; its default stages include ``profiles``): open a pair → the panel asks for a
layer → click an axis of the Flow View → the top 10 diverging units restored to benign: the bars match the session's
edit → k = 3, then zeroed in the adversarial pass: the probabilities change and the URL says so → a reload restores
the panel; no console errors. Screenshots go to ``tests/artifacts/screenshots/pf_what_if_*.png`` (git-ignored).
"""

from __future__ import annotations

import numpy as np
import pytest
from app_fixtures import click_plot_point, drawn_bars, served_page, shot, small_store_path, url_params, wait_idle

pytestmark = pytest.mark.slow  # a 200-image demo store with the profiles stage and a browser walk (minutes)

GRAPH, SUMMARY, MODE, K = "pf-what-if-graph", "pf-what-if-summary", "pf-what-if-mode", "pf-what-if-k"
FLOW = "profiles-flow"


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from advlens.analysis import Session

    return Session(small_store_path(tmp_path_factory), device="cpu")


def expected(session, pair: int, layer: str, k: int, mode: str) -> np.ndarray:
    """The session's edit of the pair's k units of ``layer`` with the largest Σ|adv − benign|."""
    benign, adversarial = session.pair_outputs(pair, [layer])
    scores = np.abs(adversarial[0].astype(np.float64) - benign[0]).reshape(len(benign[0]), -1).sum(axis=1)
    units = np.lexsort((np.arange(len(scores)), -scores))[:k]
    return session.edit_pair(pair, units, mode, layer).edited.probabilities[0].numpy()


def wait_for_bars(page) -> None:
    page.wait_for_function("(id) => (document.querySelector(`#${id} .js-plotly-plot`).data || []).length == 3",
                           arg=GRAPH, timeout=60_000)


def test_the_what_if_panel_edits_the_layers_top_diverging_units(session):
    pair = 0
    layers = session.profile_layers()
    axis = len(layers) - 2  # the last block output before the logits
    layer = layers[axis]
    info = session.pair_info(pair)
    with served_page(session) as (server, page):
        page.goto(f"{server.url}/profiles?pair={pair}")
        wait_idle(page, timeout=300)
        assert "Click an axis of the Flow View" in page.locator(f"#{GRAPH}").inner_text()

        low, high = session.flow_data(pair).value_range
        page.locator(f"#{FLOW}").scroll_into_view_if_needed()
        click_plot_point(page, FLOW, axis, (low + high) / 2)
        wait_idle(page, timeout=120)
        assert url_params(page)["layer"] == layer
        page.locator(f"#{GRAPH}").scroll_into_view_if_needed()
        wait_for_bars(page)
        shown = drawn_bars(page, GRAPH)
        np.testing.assert_allclose(shown["original benign"], info["benign_probs"], atol=1e-3)
        np.testing.assert_allclose(shown["original adversarial"], info["adv_probs"], atol=1e-3)
        np.testing.assert_allclose(shown["edited"], expected(session, pair, layer, 10, "restore"), atol=1e-3)
        assert page.locator(f"#{SUMMARY}").inner_text().startswith(f"the top 10 diverging units of {layer}")
        shot(page, "pf_what_if_1_top10_restore", full_page=True)
        top10 = shown["edited"]

        box = page.locator(f"#{K}")
        box.fill("3")
        box.press("Enter")
        wait_idle(page, timeout=60)
        top3 = drawn_bars(page, GRAPH)["edited"]
        np.testing.assert_allclose(top3, expected(session, pair, layer, 3, "restore"), atol=1e-3)
        assert url_params(page).get("k") == "3"

        page.locator(f"#{MODE} label", has_text="zero (adversarial pass)").click()
        wait_idle(page, timeout=60)
        zeroed = drawn_bars(page, GRAPH)["edited"]
        np.testing.assert_allclose(zeroed, expected(session, pair, layer, 3, "zero_adversarial"), atol=1e-3)
        assert not (np.allclose(zeroed, top3, atol=1e-4) and np.allclose(top3, top10, atol=1e-4))
        assert url_params(page).get("edit") == "zero_adversarial"
        assert "zeroed in the adversarial pass" in page.locator(f"#{SUMMARY}").inner_text()
        shot(page, "pf_what_if_2_top3_zeroed", full_page=True)

        url = page.url
        page.goto(url)
        wait_idle(page, timeout=300)
        page.locator(f"#{GRAPH}").scroll_into_view_if_needed()
        wait_for_bars(page)
        assert page.locator(f"#{MODE} input[value=zero_adversarial]").is_checked()
        assert page.locator(f"#{K}").input_value() == "3"
        np.testing.assert_allclose(drawn_bars(page, GRAPH)["edited"], zeroed, atol=1e-6)
        assert page.url == url
        shot(page, "pf_what_if_3_reloaded")
        assert page.problems == [], page.problems
