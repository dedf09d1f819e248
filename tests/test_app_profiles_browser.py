"""Browser walk of the Profiles page (Playwright driving Debian's chromium) on the demo model over the first
200 Fashion-MNIST test images with the ``profiles`` stage (built here: paper 001's stages and the profiles
stage, whose background is all 200 examined images). Issue 10: pick a pair → the Flow View draws with its
diverging band → click an axis → the Layer View → a unit's detail → export → drill down (a fit job with
progress) → the drilled axes draw; no console errors. A screenshot per step goes to
``tests/artifacts/screenshots/`` (git-ignored).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from app_fixtures import SMALL_LIMIT, click_plot_point, require_fashion_mnist, served_page, shot, url_params, wait_idle

pytestmark = pytest.mark.slow  # builds a 200-image demo store with the profiles stage, fits a drill-down (minutes)

FLOW = "profiles-flow"


def profiles_store_path(tmp_path_factory):
    """The demo model on the first 200 Fashion-MNIST test images, with paper 001's stages and ``profiles``."""
    require_fashion_mnist()
    from advlens.pipeline import PrepareConfig, prepare
    from advlens.store import open_store
    from advlens.store.manifest import CORE_STAGES

    root = tmp_path_factory.getbasetemp() / "advlens-profiles-store"
    if not ((root / "manifest.json").exists() and open_store(root).has_stage("profiles")):
        prepare(PrepareConfig(limit=SMALL_LIMIT, device="cpu", seed=0), root, stages=(*CORE_STAGES, "profiles"))
    return root


def flow_layout(page) -> dict:
    """The Flow View's axis labels and diverging bands as Plotly drew them."""
    return page.evaluate(
        """(id) => {
            const gd = document.querySelector(`#${id} .js-plotly-plot`);
            if (!gd || !gd._fullLayout || !gd._fullLayout.xaxis) return {ticks: [], bands: 0};
            return {ticks: gd._fullLayout.xaxis.ticktext || [],
                    bands: (gd.layout.shapes || []).filter(s => s.type === 'rect').length};
        }""", FLOW)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from advlens.analysis import Session

    return Session(profiles_store_path(tmp_path_factory), device="cpu")


def diverging_pair(session) -> tuple[int, float]:
    """The pair (of the first 40) whose IQR-scaled gap jumps most, and a threshold τ just below that jump.

    On this store no jump reaches the default τ = 1 IQR (ten classes share each 1-D axis, so a neighbouring
    class lies a fraction of an IQR away): the walk sets τ in the URL, as a user does with the τ field.
    """
    jumps = [float(np.nanmax(session.pair_divergence(p).jumps)) for p in range(min(session.num_pairs, 40))]
    pair = int(np.argmax(jumps))
    return pair, max(0.05, round(0.9 * jumps[pair], 2))


def test_profiles_page_walk(session):
    pair, tau = diverging_pair(session)
    layers = session.profile_layers()
    segment = session.pair_divergence(pair, threshold=tau).segment
    with served_page(session, accept_downloads=True) as (server, page):
        page.goto(f"{server.url}/profiles?pair={pair}&tau={tau}")
        wait_idle(page, timeout=300)
        drawn = flow_layout(page)
        assert drawn["ticks"] == layers and drawn["bands"] == 1
        badge = page.locator(".pf-badge").inner_text()
        assert badge == f"diverges between {layers[segment[0]]} and {layers[segment[1]]}"
        shot(page, "profiles-1-flow", full_page=True)

        low, high = session.flow_data(pair, threshold=tau).value_range
        axis = segment[1]
        click_plot_point(page, FLOW, axis, (low + high) / 2)
        wait_idle(page, timeout=120)
        assert url_params(page)["layer"] == layers[axis]
        assert page.locator("#profiles-layer-caption").inner_text().startswith(layers[axis])
        shot(page, "profiles-2-layer-view", full_page=True)

        page.locator("#profiles-unit-grid").scroll_into_view_if_needed()  # clicks land inside the viewport only
        click_plot_point(page, "profiles-unit-grid", 0, 0)
        wait_idle(page, timeout=120)
        assert f"{layers[axis]} · unit 0" in page.locator("#profiles-unit-detail").inner_text()
        assert url_params(page)["unit"] == "0"

        with page.expect_download() as download:
            page.locator("#profiles-export-csv").click()
        path = download.value.path()
        with open(path, encoding="utf-8") as handle:
            assert handle.readline().startswith(f"# layer={layers[axis]} reduction=difference")
        shot(page, "profiles-3-unit-export", full_page=True)

        inner = session.drill_down(layers, segment[0])
        page.locator(f"#{FLOW}").scroll_into_view_if_needed()
        click_plot_point(page, FLOW, segment[0] + 0.5, (low + high) / 2)
        page.wait_for_selector(".job-running", timeout=30_000)
        shot(page, "profiles-4-fitting", full_page=True)
        deadline = time.monotonic() + 540
        while flow_layout(page)["ticks"] != inner and time.monotonic() < deadline:
            time.sleep(1)
        wait_idle(page, timeout=120)
        assert flow_layout(page)["ticks"] == inner
        assert url_params(page)["layers"] == ",".join(inner)
        shot(page, "profiles-5-drill-down", full_page=True)
        assert not page.problems, page.problems
