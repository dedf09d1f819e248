"""The Profiles page's callbacks as plain functions on the tiny store with a hand-made profiles background
(tests/fixtures_profiles.py): the empty state, the Flow View (foreground styling, the diverging band and its
badge, histograms), axis clicks, drill-down as a job, brushing, the Layer View (colour convention, sets,
unit detail), the export, the Architecture View's sequential rule, the URL state and the refusal of bad ids."""

from __future__ import annotations

import base64
import time

import numpy as np
import plotly.graph_objects as go
import pytest
from app_fixtures import texts, tiny_core_store, tiny_store, walk
from dash.exceptions import PreventUpdate
from fixtures_profiles import profiles_session, with_selection_fits

from advlens.analysis import Session
from advlens.app import profiles as page
from advlens.app.jobs import JobRunner
from advlens.app.profiles import controls, flow, layer_view
from advlens.app.profiles.flow_figure import BAND_COLOR
from advlens.app.profiles.state import PROBLEMS, state_from_query
from advlens.app.validate import InvalidSelection
from advlens.profiles import SIGNED_COLORSCALE

pytestmark = pytest.mark.usefixtures("one_thread")
LAYERS = ["1", "3", "6"]


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    found = profiles_session(*tiny_store(tmp_path_factory))
    with_selection_fits(found)
    return found


@pytest.fixture
def runner():
    jobs = JobRunner()
    yield jobs
    jobs.shutdown()


def draw_flow(session, runner, pair=0, layers=LAYERS, colour="pred", mode="lines", group=None, tau=1.0):
    out = flow.draw(session, runner, pair, layers, colour, mode, 0.8, group, tau)
    go.Figure(out[0])  # a valid Plotly figure
    return out


def traces(figure, name):
    return [t for t in figure["data"] if t.get("name", "").startswith(name)]


def test_without_the_stage_the_page_names_the_command(tmp_path_factory):
    path, model = tiny_core_store(tmp_path_factory)
    plain = Session(path, model=model)
    assert "--stages profiles" in texts(page.layout(plain, "?pair=0"))


def test_the_pair_is_drawn_black_benign_solid_adversarial_dashed(session, runner):
    figure = draw_flow(session, runner, pair=4)[0]
    benign, adversarial = traces(figure, "benign")[0], traces(figure, "adversarial")[0]
    profiles = session.profiles_of_pair(4)
    assert benign["line"]["dash"] == "solid" and adversarial["line"]["dash"] == "dash"
    assert benign["line"]["color"] == adversarial["line"]["color"] == "#111111"
    np.testing.assert_allclose(benign["y"], profiles.benign, rtol=1e-6)
    np.testing.assert_allclose(adversarial["y"], profiles.adversarial, rtol=1e-6)
    assert figure["layout"]["xaxis"]["ticktext"] == LAYERS and not figure["layout"]["yaxis"]["showticklabels"]


def test_the_diverging_band_and_badge_follow_the_divergence(session, runner, monkeypatch):
    figure, caption = draw_flow(session, runner, pair=1)[:2]
    assert session.pair_divergence(1).segment is None  # the hand-made axes barely separate this pair
    assert not [s for s in figure["layout"]["shapes"] if s.get("fillcolor") == BAND_COLOR]
    assert "no clear divergence" in texts(caption)
    divergence = session.pair_divergence(1, threshold=0.0)  # every largest jump ≥ 0 is reported
    monkeypatch.setattr(session, "pair_divergence", lambda *args, **kwargs: divergence)
    figure, caption = draw_flow(session, runner, pair=1)[:2]
    band = [s for s in figure["layout"]["shapes"] if s.get("fillcolor") == BAND_COLOR]
    first, second = divergence.segment
    assert [(b["x0"], b["x1"]) for b in band] == [(first, second)]
    assert f"diverges between {LAYERS[first]} and {LAYERS[second]}" in texts(caption)


def test_a_background_below_the_recommended_size_is_warned_about(session, runner, monkeypatch):
    """Spec-002 (G-26): below 1,000 background images the Flow View's caption says the class context is weak."""
    background = len(session.background_labels())
    assert background < 1000
    caption = texts(draw_flow(session, runner, pair=1)[1])
    assert f"a background of {background} images is below the 1,000" in caption and "--profiles-background" in caption
    monkeypatch.setattr(flow, "RECOMMENDED_BACKGROUND", background)
    assert "is below the" not in texts(draw_flow(session, runner, pair=1)[1])


def test_histogram_mode_stacks_one_bar_trace_per_class(session, runner):
    figure = draw_flow(session, runner, mode="histograms", colour="true")[0]
    bars = [t for t in figure["data"] if t["type"] == "bar"]
    assert len(bars) == len(np.unique(session.profiles_background().labels))
    assert not [t for t in figure["data"] if t["type"] == "scattergl"]
    prints = [t for t in figure["data"] if t["type"] == "heatmap"]
    assert len(prints) == len(bars) and all(t["xaxis"] == "x2" and t["yaxis"] == "y" for t in prints)


@pytest.mark.parametrize("crowded", [0, 99])
def test_histogram_headers_name_each_class_whole_on_hover_and_slant_when_crowded(session, runner, monkeypatch,
                                                                                  crowded):
    from advlens.app.profiles import flow_figure

    monkeypatch.setattr(flow_figure, "SLANTED_HEADERS", crowded)
    long_names = [f"a rather long class name {c}" if c % 2 else f"c{c}" for c in range(len(session.class_names))]
    monkeypatch.setattr(type(session), "class_names", property(lambda self: long_names))
    figure = draw_flow(session, runner, mode="histograms", colour="true")[0]
    classes = np.unique(session.profiles_background().labels)
    names = [long_names[c] for c in classes]
    headers = [a for a in figure["layout"]["annotations"] if a.get("xref") == "x2"]
    assert [a["hovertext"] for a in headers] == names
    for header, name in zip(headers, names):  # cut to 12 characters, a cut marked by an ellipsis
        assert header["text"] == (name if len(name) <= 12 else name[:11] + "…")
    slanted = len(classes) > crowded
    assert all(a["textangle"] == (-60 if slanted else 0) for a in headers)
    assert figure["layout"]["margin"]["t"] == (80 if slanted else 34)


def test_clicking_an_axis_opens_its_layer_and_a_gap_drills_down_as_a_job(session, runner):
    layers, axis, unit, _, _ = flow.clicked(session, runner, {"points": [{"customdata": ["axis", 1]}]}, LAYERS)
    assert axis == "3" and unit is None
    inner, _, _, progress, poll_disabled = flow.clicked(session, runner, {"points": [{"customdata": ["gap", 1]}]},
                                                        LAYERS)
    assert inner == ["3", "4", "5", "6"] and poll_disabled is False
    deadline = time.monotonic() + 20
    while runner.state(flow.job_key(session, inner)).running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runner.state(flow.job_key(session, inner)).status == "done"
    figure, caption, _, poll_disabled, fit_style = draw_flow(session, runner, layers=inner)
    assert figure["layout"]["xaxis"]["ticktext"] == inner and poll_disabled and fit_style == {"display": "none"}


def test_an_unfitted_selection_offers_the_fit_instead_of_a_figure(session, runner):
    figure, caption, _, poll_disabled, fit_style = draw_flow(session, runner, layers=["1", "2", "6"])
    assert "no fitted profiles yet" in texts(caption) and fit_style == {} and poll_disabled
    assert "No fit" in figure["layout"]["annotations"][0]["text"]


def test_a_box_over_an_axis_brushes_the_background_inside(session):
    group = flow.brushed(session, {"range": {"x": [1.7, 2.2], "y": [-3.0, 2.0]}}, LAYERS)
    assert group == {"layers": LAYERS, "layer": "6", "low": -3.0, "high": 2.0}
    column = session.profiles_background().embeddings[:, 2]
    expected = [i for i, v in enumerate(column) if -3.0 <= v <= 2.0]
    assert flow.check_group(session, group, LAYERS).tolist() == expected
    assert flow.check_group(session, group, ["1", "3"]) is None  # brushed on other axes: no group


def test_layer_view_difference_uses_rdbu_symmetric_with_blue_for_the_adversarial(session):
    out = layer_view.draw(session, 2, "1", "difference", "pair", "max", "adversarial", None, LAYERS)
    grid = out[1]["data"][0]
    view = session.layer_view(2, "1", "difference", "pair", "max")
    assert grid["colorscale"] == SIGNED_COLORSCALE and SIGNED_COLORSCALE[-1][1] == "rgb(5,48,97)"  # top = blue
    assert grid["zmin"] == -grid["zmax"] == -float(np.abs(view.values).max())
    cells = [v for row in grid["z"] for v in row if v is not None]
    np.testing.assert_allclose(cells, view.values)
    for figure in out[1:6]:
        if figure:
            go.Figure(figure)


def test_set_options_list_background_classes_and_the_group_once_brushed(session):
    group = flow.brushed(session, {"range": {"x": [-0.2, 0.2], "y": [-1e3, 1e3]}}, LAYERS)
    out = layer_view.draw(session, 0, "3", "mean", "group", "auto", "adversarial", group, LAYERS)
    options = {o["value"]: o for o in out[6]}
    assert options["group"]["label"] == f"brushed group ({session.profiles_background().size} images)"
    assert not options["group"]["disabled"] and "class:0" in options
    assert "mean over 60 images" in texts(out[0])


def test_a_clicked_unit_opens_its_detail_with_connections(session):
    unit = layer_view.picked_unit(session, {"points": [{"customdata": 5}]}, "3")
    body = layer_view.detail(session, 0, "3", unit, "auto")
    text = texts(body)
    assert "3 · unit 5" in text and "in: from 0 via 2" in text and "out: to 6" in text
    with pytest.raises(PreventUpdate):
        layer_view.picked_unit(session, {"points": [{"customdata": -1}]}, "3")  # a gap between maps


def test_export_downloads_the_table(session):
    sent = layer_view.export(session, layer_view.EXPORT_CSV, 0, "3", "mean", "pair", "max", "adversarial", None,
                             LAYERS)
    content = base64.b64decode(sent["content"]).decode()
    assert sent["filename"].endswith(".csv") and content.startswith("# layer=3 reduction=mean unit_scalar=max")
    assert content == session.layer_export(0, "3", "mean", "pair", "max", "csv").decode()


def test_architecture_clicks_keep_the_axes_sequential(session):
    added, _ = controls.select(session, controls.ARCH, {"points": [{"customdata": "2"}]}, LAYERS)
    assert added == ["1", "2", "3", "6"]
    removed, _ = controls.select(session, controls.ARCH, {"points": [{"customdata": "3"}]}, LAYERS)
    assert removed == ["1", "6"]
    preset, _ = controls.select(session, {"type": controls.PRESET, "preset": "weighted"}, None, ["1", "6"])
    assert preset == LAYERS


def test_the_url_carries_the_selection_and_bad_values_are_reported(session):
    query = page.url_query(session, 3, ["1", "6"], "3", 2, "true", "histograms", "max", "class:1", "abs_sum",
                           "adversarial", 0.25, "?neuron=1")[0]
    state = state_from_query(session, query)
    assert state.tau == 0.25
    assert (state.pair, state.layers, state.layer, state.unit, state.colour, state.view) == (
        3, ["1", "6"], "3", 2, "true", "histograms")
    assert (state.reduction, state.image_set, state.scalar) == ("max", "class:1", "abs_sum")
    assert "neuron=1" in query
    tree = page.layout(session, "?pair=9999&layers=3&colour=blue&tau=9")
    problems = next(node for node in walk(tree) if getattr(node, "id", None) == PROBLEMS)
    text = texts(problems)
    assert "pair=" in text and "layers=" in text and "colour=" in text and "tau=" in text


def test_bad_ids_from_the_browser_are_refused(session, runner):
    with pytest.raises(InvalidSelection, match="pair 10000"):
        flow.draw(session, runner, 10000, LAYERS, "pred", "lines", 0.8, None)
    with pytest.raises(InvalidSelection, match="threshold"):
        flow.draw(session, runner, 0, LAYERS, "pred", "lines", 0.8, None, -1)
    with pytest.raises(InvalidSelection, match="axis 7"):
        flow.clicked(session, runner, {"points": [{"customdata": ["axis", 7]}]}, LAYERS)
    with pytest.raises(InvalidSelection):
        layer_view.draw(session, 0, "nope", "mean", "pair", "auto", "adversarial", None, LAYERS)
    with pytest.raises(InvalidSelection, match="channel 6"):
        layer_view.picked_unit(session, {"points": [{"customdata": 6}]}, "3")
