"""ProfilesAnalysis (spec-002 §1.3–§1.7) on the tiny store with a hand-made background fit
(tests/fixtures_profiles.py), each result checked against an independent computation: placement by hand
with ``profiles.place`` on activations captured here, plain loops over IQR-scaled gaps, per-unit maxima,
class means and covariances computed image by image."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
from app_fixtures import tiny_core_store, tiny_store
from fixtures_profiles import BACKGROUND, PARAMS, profiles_session

from advlens.analysis import Session
from advlens.analysis.core import SelectionError
from advlens.errors import StoreError
from advlens.profiles import PlacementParams, diverging_point, place

pytestmark = pytest.mark.usefixtures("one_thread")
LAYERS = ("1", "3", "6")
"""The tiny net's default profile layers: both post-ReLU convs and the logits."""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tiny_store(tmp_path_factory)


@pytest.fixture(scope="module")
def session(store):
    return profiles_session(*store)


def captured(session, images: np.ndarray, layer: str) -> np.ndarray:
    """A layer's outputs captured here with the model's own hooks (not the session's cached capture).

    One batch, as the session captures: a placement amplifies the last-bit differences between a conv
    computed in a batch and alone (the SGD follows the neighbours' weights), so the reference must match
    to the bit for positions to match closely.
    """
    return session.model.capture(torch.from_numpy(np.ascontiguousarray(images)), [layer])[layer].numpy()


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A session over a store without the profiles stage (its model trained on one thread, as the other modules
    of this suite train it under ``one_thread``: the store checks the weights' fingerprint)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path, model = tiny_core_store(tmp_path_factory)
    finally:
        torch.set_num_threads(threads)
    return Session(path, model=model)


def test_a_store_without_the_stage_says_how_to_add_it(plain):
    assert not plain.has_profiles()
    assert "--stages profiles" in plain.profiles_command()
    with pytest.raises(StoreError, match="profiles"):
        plain.profile_layers()


def test_the_pairs_positions_are_placements_on_the_background_by_hand(session):
    background = session.profiles_background()
    benign, adversarial = session.store.pair_images([3])
    profiles = session.profiles_of_pair(3)
    assert profiles.layers == LAYERS
    params = PlacementParams(n_neighbors=PARAMS["n_neighbors"], min_dist=PARAMS["min_dist"])
    for axis, layer in enumerate(LAYERS):
        reference = captured(session, background.images, layer).reshape(BACKGROUND, -1)
        new = captured(session, np.concatenate([benign, adversarial]), layer).reshape(2, -1)
        expected = place(new, reference, background.embeddings[:, axis], params)
        np.testing.assert_allclose([profiles.benign[axis], profiles.adversarial[axis]], expected, atol=1e-5)


def test_the_diverging_segment_is_the_largest_jump_of_iqr_scaled_gaps(session):
    background = session.profiles_background().embeddings
    for pair in range(6):
        flow = session.flow_data(pair)
        gaps = []
        for axis in range(len(LAYERS)):  # plain loop: the pair's gap over the axis' interquartile range
            column = sorted(background[:, axis].tolist())
            q1, q3 = np.percentile(column, 25), np.percentile(column, 75)
            gaps.append(abs(float(flow.benign[axis]) - float(flow.adversarial[axis])) / (q3 - q1))
        jumps = [gaps[i + 1] - gaps[i] for i in range(len(gaps) - 1)]
        best = max(range(len(jumps)), key=lambda i: jumps[i])
        expected = (best, best + 1) if jumps[best] >= 1.0 else None
        assert flow.divergence.segment == expected
        np.testing.assert_allclose(flow.divergence.gaps, gaps, rtol=1e-5)


def test_the_raw_space_check_agrees_with_the_librarys_from_scratch_computation(session):
    background = session.profiles_background()
    for pair in (0, 7):
        fast = session.pair_divergence(pair)
        benign, adversarial = session.store.pair_images([pair])
        raw_a = [captured(session, benign, layer)[0] for layer in LAYERS]
        raw_b = [captured(session, adversarial, layer)[0] for layer in LAYERS]
        raw_background = [captured(session, background.images, layer) for layer in LAYERS]
        profiles = session.profiles_of_pair(pair)
        peer = diverging_point(profiles.benign, profiles.adversarial, background.embeddings, labels=background.preds,
                               raw_a=raw_a, raw_b=raw_b, raw_background=raw_background)  # every pair of 60 images
        assert fast.raw_affinity_a.tolist() == peer.raw_affinity_a.tolist()
        assert fast.raw_affinity_b.tolist() == peer.raw_affinity_b.tolist()
        np.testing.assert_allclose(fast.raw_distance, peer.raw_distance, rtol=1e-4)
        np.testing.assert_allclose(fast.cosine_distance, peer.cosine_distance, rtol=1e-3, atol=1e-6)


def test_identical_images_give_identical_profiles_and_no_diverging_point(store):
    twin = profiles_session(*store)
    original = twin.pair_images
    twin.pair_images = lambda pairs: (original(pairs)[0], original(pairs)[0])  # adversarial := benign
    profiles = twin.profiles_of_pair(2)
    assert np.array_equal(profiles.benign, profiles.adversarial)
    divergence = twin.pair_divergence(2)
    assert divergence.segment is None and np.all(divergence.gaps == 0)
    view = twin.layer_view(2, "3", "difference")
    assert np.all(view.values == 0) and np.all(view.ranking.scores == 0)


def test_flow_histograms_count_each_class_and_fingerprints_are_shares(session):
    background = session.profiles_background()
    assert (background.preds != background.labels).sum() >= 5  # the two colourings differ
    for colour_by, labels in (("pred", background.preds), ("true", background.labels)):
        flow = session.flow_data(0, colour_by=colour_by, mode="histograms")
        assert flow.lines is None and np.array_equal(flow.labels, labels)
        for k, label in enumerate(flow.classes):
            size = sum(1 for value in labels if value == label)
            assert flow.histograms.counts[k].sum(axis=1).tolist() == [size] * len(LAYERS)
            np.testing.assert_allclose(flow.fingerprints[k].sum(axis=0), 1.0)
    low, high = session.flow_data(0).value_range
    assert low <= float(np.nanmin(background.embeddings)) and high >= float(np.nanmax(background.embeddings))


def test_bundled_lines_hold_every_background_image_once(session):
    flow = session.flow_data(0, mode="lines")
    assert flow.lines.images.sum() == BACKGROUND
    for x, count in zip(flow.lines.x, flow.lines.images):
        assert int(np.isnan(x).sum()) == count  # one NaN separator ends each image's curve


def test_difference_heatmap_is_the_adversarials_unit_maximum_minus_the_benigns(session):
    benign, adversarial = session.store.pair_images([5])
    b, a = captured(session, benign, "1")[0], captured(session, adversarial, "1")[0]
    view = session.layer_view(5, "1", "difference", unit_scalar="max")
    expected = [float(a[k].max()) - float(b[k].max()) for k in range(len(a))]
    np.testing.assert_allclose(view.values, expected, atol=1e-5)
    assert view.signed and view.unit_scalar == "max"
    np.testing.assert_allclose(view.reduced, a - b, atol=1e-6)  # blue (> 0) where the adversarial is stronger
    assert view.grid.shape == (2, 2)  # 4 units on a ceil(√4)² grid
    assert view.maps.shape == (4, *a.shape[1:]) and np.array_equal(view.units, np.arange(4))


def test_class_set_mean_is_the_mean_over_background_images_predicted_that_class(session):
    background = session.profiles_background()
    outputs = captured(session, background.images, "3")
    label = int(np.bincount(background.preds).argmax())
    view = session.layer_view(0, "3", "mean", image_set=f"class:{label}", unit_scalar="max")
    chosen = [outputs[i] for i in range(BACKGROUND) if background.preds[i] == label]
    np.testing.assert_allclose(view.reduced, sum(chosen) / len(chosen), atol=1e-5)
    assert view.set_size == len(chosen)


def test_brushed_group_is_the_background_inside_the_interval_and_a_layer_view_set(session):
    column = session.profiles_background().embeddings[:, 1]
    low, high = float(np.percentile(column, 20)), float(np.percentile(column, 60))
    group = session.brushed_group("3", low, high)
    assert group.tolist() == [i for i in range(BACKGROUND) if low <= column[i] <= high]
    outputs = captured(session, session.profiles_background().images[group], "3")
    view = session.layer_view(0, "3", "max", image_set="group", unit_scalar="max", group=group.tolist())
    np.testing.assert_allclose(view.reduced, np.max(outputs, axis=0), atol=1e-6)


def test_drill_down_opens_the_main_path_between_two_axes(session):
    assert session.drill_down(None, 0) == ["1", "2", "3"]
    assert session.drill_down(None, 1) == ["3", "4", "5", "6"]
    with pytest.raises(SelectionError, match="axis gap"):
        session.drill_down(None, 2)


def test_unit_detail_lists_the_strongest_kernels_and_the_units_visualisation(session):
    detail = session.unit_detail(1, "3", 4)
    weight = session.model.net[2].weight.detach().numpy()  # conv 4 → 6 feeding ReLU "3"
    strengths = [float(np.abs(weight[4, c]).sum()) for c in range(4)]
    expected = sorted(range(4), key=lambda c: -strengths[c])
    assert [c.channel for c in detail.connections.incoming] == expected
    assert detail.visualization is not None
    np.testing.assert_array_equal(detail.visualization, session.features.visualization("3", 4))
    outgoing = session.model.net[6].weight.detach().numpy()[:, 4]  # the linear layer reads channel 4
    assert [c.channel for c in detail.connections.outgoing] == sorted(range(3), key=lambda m: -abs(outgoing[m]))


def test_export_csv_and_npz_hold_the_table_and_the_background_covariance(session):
    table = list(csv.reader(io.StringIO(session.layer_export(0, "3", "mean", "pair", "max", "csv").decode())))
    assert table[0][0].startswith("# layer=3 reduction=mean")
    assert table[1][:2] == ["unit", "rank"] and len(table) == 2 + 6
    archive = np.load(io.BytesIO(session.layer_export(0, "3", "max", "pair", "max", "npz")))
    outputs = captured(session, session.profiles_background().images, "3")
    per_image = np.array([[float(o[k].max()) for k in range(6)] for o in outputs])
    np.testing.assert_allclose(archive["covariance"], np.cov(per_image, rowvar=False), rtol=1e-4, atol=1e-6)
    assert json.loads(str(archive["meta"]))["pair"] == 0


@pytest.mark.parametrize("call, message", [
    (lambda s: s.layer_view(0, "3", "difference", image_set="class:0"), "pair set"),
    (lambda s: s.layer_view(0, "nope"), "not a layer"),
    (lambda s: s.layer_view(10**6, "3"), "pair id"),
    (lambda s: s.layer_view(0, "3", "median"), "reduction"),
    (lambda s: s.layer_view(0, "3", "mean", image_set="class:9"), "image set"),
    (lambda s: s.layer_view(0, "3", "mean", image_set="group"), "brush"),
    (lambda s: s.flow_data(0, colour_by="both"), "colour by"),
    (lambda s: s.flow_data(0, layers=["3"]), "at least two"),
    (lambda s: s.flow_data(0, layers=["3", "3"]), "twice"),
    (lambda s: s.unit_detail(0, "3", 6), "unit"),
    (lambda s: s.brushed_group("2", 0, 1), "not an axis"),
])
def test_bad_choices_are_refused_with_a_message(session, call, message):
    with pytest.raises(SelectionError, match=message):
        call(session)
