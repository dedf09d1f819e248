"""Browser walk of the Pathways page's what-if panel (issue 13, item 3, pinned pathway nodes) on the small real store
(the demo model on the first 200 Fashion-MNIST test images, with the features and sweep stages): the empty panel
says how to pin → pin two nodes at two layers by clicking them → the panel shows the class-level restore → set to
adversarial → the probabilities change → the URL holds the pins and the edit → a reload restores both → back to
restore; no console errors. Screenshots go to ``tests/artifacts/screenshots/pathways_what_if_*.png`` (git-ignored).
"""

from __future__ import annotations

import numpy as np
import pytest
from app_fixtures import served_page, shot, small_store_path, url_params, wait_idle
from test_app_pathways_browser import node_point

from advlens.analysis.pathways_what_if import edit_pathway

pytestmark = pytest.mark.slow  # builds the 200-image demo store with its features and sweep stages (minutes)

GRAPH = "pathways-graph"
PANEL = "pathways-what-if-graph"
SUMMARY = "pathways-what-if-summary"
MAX_IMAGES = 64
"""The page's image sample (``what_if_view.PAGE_MAX_IMAGES``)."""

BARS = """(id) => {
    const gd = document.querySelector(`#${id} .js-plotly-plot`);
    return gd && gd._fullData ? gd._fullData.filter(t => t.type === 'bar').map(t => [Array.from(t.x), Array.from(t.y)])
                              : [];
}"""


def bars(page) -> tuple[list[str], np.ndarray]:
    """The panel's bar labels and its (benign, adversarial, edited) values as drawn. Shape: (3, bars)."""
    drawn = page.evaluate(BARS, PANEL)
    assert len(drawn) == 3 and all(x == drawn[0][0] for x, _ in drawn)
    return drawn[0][0], np.asarray([y for _, y in drawn], dtype=np.float64)


def grouped(probabilities: np.ndarray, labels: list[str], names: list[str]) -> np.ndarray:
    """Mean probabilities (3, classes) per bar label: a class's own, or the sum of the classes not named."""
    named = [names.index(label) for label in labels if label != "other classes"]
    rest = [c for c in range(len(names)) if c not in named]
    return np.stack([probabilities[:, names.index(label)] if label != "other classes"
                     else probabilities[:, rest].sum(1) for label in labels], axis=1)


def two_nodes(session, original: int, target: int, eps: float) -> list[tuple[str, int]]:
    """A drawn node of the last layer and one of the block before (among the first four of each, attack-only nodes
    first: the neurons the attack excites) whose joint restore raises the original class's mean probability most."""
    graph = session.pathway_graph(original, target, "pgd", max_images=MAX_IMAGES)
    last, before = len(graph.layers) - 1, len(graph.layers) - 3  # layer4 and layer3 (block outputs)
    order = np.argsort(-graph.node_group, kind="stable")  # attack-only (3) first
    best, gain = None, 1e-3
    for a in [n for n in order if graph.node_layer[n] == last][:4]:
        for b in [n for n in order if graph.node_layer[n] == before][:4]:
            nodes = [(graph.layers[last], int(graph.node_channel[a])),
                     (graph.layers[before], int(graph.node_channel[b]))]
            probabilities = expected(session, original, target, eps, nodes, "restore")
            if probabilities[2, original] - probabilities[1, original] > gain:
                best, gain = nodes, probabilities[2, original] - probabilities[1, original]
    assert best is not None, "no pair of drawn nodes moves the probabilities"
    return best


def expected(session, original, target, eps, nodes, mode) -> np.ndarray:
    """The analysis' (benign, adversarial, edited) means (checked against a plain loop in test_pathways_what_if)."""
    edit = edit_pathway(session, original, target, "pgd", eps, nodes, mode, MAX_IMAGES)
    return np.stack([edit.mean_benign, edit.mean_adversarial, edit.mean_edited])


def walk_what_if(page, base: str, session) -> None:
    pairs = session.pathway_class_pairs("pgd")
    original, target = int(pairs.original[0]), int(pairs.target[0])
    eps = session.sweep_info().eps
    strength = int(np.argmin(np.abs(eps * 255 - 8)))  # 8/255 (the default strengths'): a medium attack
    page.goto(f"{base}/pathways?true={original}&adv={target}&attack=pgd&eps={eps[strength] * 255:g}")
    wait_idle(page, timeout=300)
    page.wait_for_function("(id) => document.querySelectorAll(`#${id} .js-plotly-plot`).length > 0", arg=GRAPH,
                           timeout=60_000)
    panel = page.locator("#pathways-what-if-graph")
    squeezed = "".join(panel.inner_text().split())  # the message's lines are SVG tspans, joined without spaces
    assert "Pinneuronsinthegraph:clickanodetopinit" in squeezed
    shot(page, "pathways_what_if_1_empty")

    nodes = two_nodes(session, original, target, float(eps[strength]))
    for layer, channel in nodes:
        x, y = node_point(page, layer, channel)
        page.mouse.move(x, y)
        page.mouse.click(x, y)
        wait_idle(page, timeout=120)
    pinned = ",".join(f"{layer}:{channel}" for layer, channel in nodes)
    page.wait_for_function("([id, n]) => { const gd = document.querySelector(`#${id} .js-plotly-plot`);"
                           " return gd && gd._fullData && gd._fullData.filter(t => t.type === 'bar').length === n; }",
                           arg=[PANEL, 3], timeout=60_000)
    wait_idle(page, timeout=60)
    assert url_params(page)["pinned"] == pinned
    names = session.class_names
    labels, restored = bars(page)
    assert labels[:2] == [names[original], names[target]]
    truth = expected(session, original, target, float(eps[strength]), nodes, "restore")
    np.testing.assert_allclose(restored, grouped(truth, labels, names), atol=1e-4)
    assert np.abs(restored[2] - restored[1]).max() > 1e-3, "the restore moves the probabilities"
    summary = page.locator(f"#{SUMMARY}").inner_text()
    assert summary.startswith("Restored to benign in the adversarial pass: 2 neurons at 2 layers"), summary
    shot(page, "pathways_what_if_2_restore")

    page.locator("#pathways-what-if-mode").get_by_text("set to adversarial").click()
    wait_idle(page, timeout=120)
    page.wait_for_function("(id) => document.querySelector(`#${id}`).innerText.startsWith('Set to adversarial')",
                           arg=SUMMARY, timeout=60_000)
    labels, attacked = bars(page)
    truth = expected(session, original, target, float(eps[strength]), nodes, "attack")
    np.testing.assert_allclose(attacked, grouped(truth, labels, names), atol=1e-4)
    assert np.abs(truth[2] - truth[0]).max() > 1e-3, "setting to adversarial moves the benign probabilities"
    assert url_params(page)["edit"] == "attack" and url_params(page)["pinned"] == pinned
    shot(page, "pathways_what_if_3_attack")

    page.reload()
    wait_idle(page, timeout=300)
    page.wait_for_function("(id) => document.querySelector(`#${id}`).innerText.startsWith('Set to adversarial')",
                           arg=SUMMARY, timeout=60_000)
    wait_idle(page, timeout=60)
    assert url_params(page)["edit"] == "attack" and url_params(page)["pinned"] == pinned
    assert page.locator("#pathways-what-if-mode input[value='attack']").is_checked()
    np.testing.assert_allclose(bars(page)[1], attacked, atol=1e-6)
    for layer, channel in nodes:
        assert page.locator(".pw-pins .selection-chip", has_text=f"{layer}:{channel}").count() == 1
    shot(page, "pathways_what_if_4_reloaded")

    page.locator("#pathways-what-if-mode").get_by_text("restore to benign").click()
    wait_idle(page, timeout=120)
    page.wait_for_function("(id) => document.querySelector(`#${id}`).innerText.startsWith('Restored to benign')",
                           arg=SUMMARY, timeout=60_000)
    np.testing.assert_allclose(bars(page)[1], restored, atol=1e-6)
    assert "edit" not in url_params(page)
    assert not page.problems, page.problems


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from advlens.analysis import Session

    return Session(small_store_path(tmp_path_factory), device="cpu")


def test_pathways_what_if_walk(session):
    with served_page(session) as (server, page):
        walk_what_if(page, server.url, session)
