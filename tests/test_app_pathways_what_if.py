"""The Pathways page's what-if panel (issue 13, item 3, pinned pathway nodes) on the tiny model's sweep store: the
bars are the mean probabilities of a plain loop over the attacked images, edited with the test's own hooks; the
summary counts the images; the empty states say what to do; bad values from the browser or the URL are refused
with the page's messages; the URL holds the pinned neurons and the edit."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
from app_fixtures import texts, tiny_pathways_store, walk
from test_pathways_what_if import ORIGINAL, TARGET, hooked_probabilities, plain_images, stored  # noqa: F401

from advlens.analysis import Session
from advlens.app import pathways as page
from advlens.app.common import ERROR_COLOR
from advlens.app.pathways import what_if_view
from advlens.app.pathways.state import PROBLEMS, state_from_query

pytestmark = pytest.mark.usefixtures("one_thread")

PINNED = [["3", 4], ["1", 0]]
STRENGTH = 2
"""Strength index 2 = eps[1] = 0.1: 21 of the 30 sampled a images go to c (30 at the next strength)."""


@pytest.fixture(scope="module")
def store_and_model(tmp_path_factory):
    return tiny_pathways_store(tmp_path_factory)


@pytest.fixture(scope="module")
def session(store_and_model):
    path, model = store_and_model
    return Session(path, model=model)


def annotation(figure) -> str:
    return figure["layout"]["annotations"][0]["text"].replace("<br>", " ")


@pytest.mark.parametrize("mode", ["restore", "zero_benign"])
def test_the_bars_are_the_mean_probabilities_of_the_edited_images(session, store_and_model, stored, mode):
    figure, text = what_if_view.draw(session, f"{ORIGINAL}-{TARGET}", "pgd", STRENGTH, PINNED, mode)
    go.Figure(figure)
    rows, benign, adversarial = plain_images(stored, 0, STRENGTH - 1)
    assert len(rows) == 21 <= what_if_view.PAGE_MAX_IMAGES
    b, a, e = hooked_probabilities(store_and_model[1], benign, adversarial, mode, [tuple(p) for p in PINNED])
    names = session.class_names
    bars = {trace["name"].split(" (")[0]: trace["y"] for trace in figure["data"]}
    assert list(bars) == ["benign", "adversarial", "edited"]
    labels = figure["data"][0]["x"]
    assert all(trace["x"] == labels for trace in figure["data"])
    assert labels[:2] == [names[ORIGINAL], names[TARGET]]  # the pair's classes first, then any that matter
    means = np.stack([b.mean(0), a.mean(0), e.mean(0)])
    named = [names.index(label) for label in labels if label != "other classes"]
    for c in set(range(len(names))) - set(named):
        assert means[:, c].max() < 0.02, "a class left out of the bars has a small probability"
    for name, row in zip(bars, means):
        expected = [row[c] for c in named] + ([row[[c for c in range(len(names)) if c not in named]].sum()]
                                              if len(named) < len(names) else [])
        np.testing.assert_allclose(bars[name], expected, atol=1e-4)
    if mode == "restore":
        returned = int(np.sum(e.argmax(1) == ORIGINAL))
        assert f"{returned} of 21 ({returned / 21:.0%}) predict {names[ORIGINAL]} again" in text
        assert text.startswith("Restored to benign in the adversarial pass: 2 neurons at 2 layers (3:4, 1:0), in the "
                               "21 a images PGD at 25.5/255 sends to c.")
    else:
        flipped = int(np.sum(e.argmax(1) == TARGET))
        assert f"{flipped} of 21 ({flipped / 21:.0%}) now predict {names[TARGET]}" in text
        assert text.startswith("Zeroed in the benign pass: 2 neurons")


def test_the_empty_states_say_what_to_do(session):
    pair = f"{ORIGINAL}-{TARGET}"
    figure, text = what_if_view.draw(session, pair, "pgd", STRENGTH, [], "restore")
    assert annotation(figure).startswith("Pin neurons in the graph: click a node to pin it") and text == ""
    figure, _ = what_if_view.draw(session, pair, "pgd", 0, PINNED, "restore")
    assert "Move the strength slider above 0" in annotation(figure)
    figure, _ = what_if_view.draw(session, pair, "pgd", 1, PINNED, "restore")  # no a image goes to c at 0.05
    assert "nothing to edit" in annotation(figure)


@pytest.mark.parametrize("pinned, mode, message", [
    ([["nope", 1]], "restore", "not a pathway layer"),
    ([["3", 6]], "restore", "channel"),
    ("3:4", "restore", "not a list"),
    (PINNED, "flip", "edit 'flip' is not one of"),
])
def test_bad_values_from_the_browser_are_refused(session, pinned, mode, message):
    figure, text = what_if_view.draw(session, f"{ORIGINAL}-{TARGET}", "pgd", STRENGTH, pinned, mode)
    assert message in annotation(figure) and text == ""
    assert figure["layout"]["annotations"][0]["font"]["color"] == ERROR_COLOR


def test_the_url_holds_the_pinned_neurons_and_the_edit(session):
    query, _ = page.url_query(session, f"{ORIGINAL}-{TARGET}", "pgd", STRENGTH, "activated", 20, "all", "none", 0,
                              PINNED, "attack", "")
    assert "pinned=3%3A4%2C1%3A0" in query and "edit=attack" in query
    state = state_from_query(session, query)
    assert (state.pinned, state.edit, state.strength, state.problems) == (PINNED, "attack", STRENGTH, [])
    tree = page.layout(session, query)
    radio = next(n for n in walk(tree) if getattr(n, "id", None) == what_if_view.IDS.mode)
    assert radio.value == "attack"
    # the default edit is not written
    assert "edit=" not in page.url_query(session, f"{ORIGINAL}-{TARGET}", "pgd", STRENGTH, "activated", 20, "all",
                                         "none", 0, PINNED, "restore", "")[0]


def test_a_bad_pinned_id_or_edit_in_the_url_is_refused_with_the_pages_message(session):
    tree = page.layout(session, f"?true={ORIGINAL}&adv={TARGET}&pinned=3:4,3:99&edit=flip")
    problems = texts(next(n for n in walk(tree) if getattr(n, "id", None) == PROBLEMS))
    assert "URL parameter pinned='3:4,3:99'" in problems and "99" in problems
    assert "URL parameter edit='flip'" in problems
    state = state_from_query(session, f"?true={ORIGINAL}&adv={TARGET}&pinned=3:4,3:99&edit=flip")
    assert state.pinned == [] and state.edit == "restore"
    radio = next(n for n in walk(tree) if getattr(n, "id", None) == what_if_view.IDS.mode)
    assert radio.value == "restore"
