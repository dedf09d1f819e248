"""Browser walk of the Datapaths page's what-if panel (issue 13, item 3) on the small real store (the demo model on
the first 200 Fashion-MNIST test images): open a pair whose datapaths are stored → the panel asks for a layer →
click the last gate layer's column in the river → the adversarial's critical maps restored to benign: the bars match
the session's edit → set them to adversarial in the benign pass, then edit the source's critical maps: the
probabilities change and the URL says so → a reload restores the panel; no console errors. Screenshots go to
``tests/artifacts/screenshots/dp_what_if_*.png`` (git-ignored; the paths are printed).
"""

from __future__ import annotations

import numpy as np
import pytest
from app_fixtures import click_plot_point, drawn_bars, served_page, shot, small_store_path, url_params, wait_idle

pytestmark = pytest.mark.slow  # a 200-image demo store, one pair's datapaths and a browser walk (minutes)

GRAPH, SUMMARY, MODE, SOURCE = "dp-what-if-graph", "dp-what-if-summary", "dp-what-if-mode", "dp-what-if-of"


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from advlens.analysis import Session

    return Session(small_store_path(tmp_path_factory), device="cpu")


def river_columns(page) -> tuple[list, list[str]]:
    """The river's column positions and their labels as Plotly drew them."""
    return page.evaluate("""() => {
        const gd = document.querySelector('#dp-river .js-plotly-plot');
        return [gd._fullData.filter(t => t.type === 'bar')[0].customdata.map(c => c[1]),
                gd._fullLayout.xaxis.ticktext];
    }""")


def expected(session, pair: int, layer: str, role: str, mode: str) -> np.ndarray:
    paths = session.stored_pair_datapaths(pair)
    maps = np.flatnonzero(paths.layer_critical(layer)[paths.row(role)])
    return session.edit_pair(pair, maps, mode, layer).edited.probabilities[0].numpy()


def test_the_what_if_panel_edits_the_open_layers_critical_maps(session):
    pair = int(session.datapath_examples().medium(1)[0])
    paths = session.pair_datapaths(pair)  # computed here: the page reads it from the store
    layer = paths.layers[-1]
    info = session.pair_info(pair)
    for role in ("adv", "src"):
        assert paths.layer_critical(layer)[paths.row(role)].any(), f"no {role} critical map at {layer} of pair {pair}"
    with served_page(session) as (server, page):
        page.goto(f"{server.url}/datapaths?pair={pair}")
        wait_idle(page, timeout=300)
        page.wait_for_function("(id) => document.querySelectorAll(`#${id} .scatterlayer .trace`).length >= 3",
                               arg="dp-river", timeout=60_000)
        assert "Click a layer (a column) of the river" in page.locator(f"#{GRAPH}").inner_text()

        # open the last gate layer: the panel restores the adversarial's critical maps there
        page.locator("#dp-river").scroll_into_view_if_needed()
        columns, labels = river_columns(page)
        if layer not in labels:  # inside a collapsed group (its label ends in ▸): a click expands it
            group = next(g.group for g in session.datapath_layers() if g.name == layer)
            click_plot_point(page, "dp-river", columns[labels.index(f"{group} ▸")], 0.0)
            wait_idle(page, timeout=60)
            columns, labels = river_columns(page)
        click_plot_point(page, "dp-river", columns[labels.index(layer)], 0.0)
        wait_idle(page, timeout=120)
        assert url_params(page)["layer"] == layer
        page.locator(f"#{GRAPH}").scroll_into_view_if_needed()
        page.wait_for_function("(id) => (document.querySelector(`#${id} .js-plotly-plot`).data || []).length == 3",
                               arg=GRAPH, timeout=60_000)
        shown = drawn_bars(page, GRAPH)
        np.testing.assert_allclose(shown["original benign"], info["benign_probs"], atol=1e-3)
        np.testing.assert_allclose(shown["original adversarial"], info["adv_probs"], atol=1e-3)
        np.testing.assert_allclose(shown["edited"], expected(session, pair, layer, "adv", "restore"), atol=1e-3)
        count = int(paths.layer_critical(layer)[paths.row("adv")].sum())
        assert page.locator(f"#{SUMMARY}").inner_text().startswith(
            f"the adversarial's {count} critical map{'s' if count != 1 else ''} of {layer}")
        shot(page, "dp_what_if_1_restore", full_page=True)
        restored = shown["edited"]

        # set them to adversarial in the benign pass: the probabilities change, the URL holds the edit
        page.locator(f"#{MODE} label", has_text="set to adversarial").click()
        wait_idle(page, timeout=60)
        attacked = drawn_bars(page, GRAPH)["edited"]
        assert not np.allclose(attacked, restored, atol=1e-4)
        np.testing.assert_allclose(attacked, expected(session, pair, layer, "adv", "attack"), atol=1e-3)
        assert url_params(page).get("edit") == "attack"

        # the source's critical maps instead
        page.locator(f"#{SOURCE} label", has_text="the source's").click()
        wait_idle(page, timeout=60)
        source = drawn_bars(page, GRAPH)["edited"]
        np.testing.assert_allclose(source, expected(session, pair, layer, "src", "attack"), atol=1e-3)
        assert url_params(page).get("edit_of") == "src" and "set to adversarial in the benign pass" in \
            page.locator(f"#{SUMMARY}").inner_text()
        shot(page, "dp_what_if_2_source_attack", full_page=True)

        # a reload opens the same panel
        url = page.url
        page.goto(url)
        wait_idle(page, timeout=300)
        page.wait_for_function("(id) => (document.querySelector(`#${id} .js-plotly-plot`).data || []).length == 3",
                               arg=GRAPH, timeout=60_000)
        assert page.locator(f"#{MODE} input[value=attack]").is_checked()
        assert page.locator(f"#{SOURCE} input[value=src]").is_checked()
        np.testing.assert_allclose(drawn_bars(page, GRAPH)["edited"], source, atol=1e-6)
        assert page.url == url
        page.locator(f"#{GRAPH}").scroll_into_view_if_needed()
        shot(page, "dp_what_if_3_reloaded")
        assert page.problems == [], page.problems
