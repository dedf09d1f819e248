"""Layer View data of the profiles system (spec-002 §1.7, §6 A3, A4, A5, A16): reductions, unit scalars,
the unit grid, the divergence ranking, the signed colour convention and the export, each checked
against NumPy or plain loops on seeded random outputs."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
import torch

from advlens.errors import ConfigError
from advlens.profiles import (
    SIGNED_COLORSCALE,
    divergence_ranking,
    layer_export,
    reduce,
    resolve_unit_scalar,
    scalar_difference,
    symmetric_range,
    top_units,
    unit_grid,
    unit_scalars,
)


@pytest.fixture
def outputs() -> np.ndarray:
    """Seven images' outputs of a conv layer with 5 units of 3×4 maps, signed."""
    return np.random.default_rng(3).normal(0, 1, (7, 5, 3, 4)).astype(np.float32)


# ------------------------------------------------------------------------------------------ A3 reductions

def test_difference_of_an_image_with_itself_is_exactly_zero(outputs):
    assert np.array_equal(reduce(outputs, "difference", 2, 2), np.zeros((5, 3, 4), np.float32))


def test_difference_is_antisymmetric_and_equals_the_subtraction(outputs):
    forward = reduce(outputs, "difference", 1, 4)
    assert np.array_equal(forward, -reduce(outputs, "difference", 4, 1))
    assert np.array_equal(forward, outputs[1] - outputs[4])


def test_mean_of_one_image_is_its_direct_output(outputs):
    assert np.array_equal(reduce(outputs[3:4], "mean"), reduce(outputs, "direct", 3))
    assert np.array_equal(reduce(outputs, "direct", 3), outputs[3])


def test_mean_and_max_match_numpy_and_max_bounds_mean(outputs):
    mean, largest = reduce(outputs, "mean"), reduce(outputs, "max")
    expected_mean = np.zeros((5, 3, 4))
    for image in outputs:  # a plain loop, not the vectorised mean
        expected_mean += image.astype(np.float64) / len(outputs)
    np.testing.assert_allclose(mean, expected_mean, atol=1e-6)
    np.testing.assert_allclose(largest, np.stack(outputs).max(axis=0), atol=1e-6)
    assert (largest >= mean - 1e-6).all()


@pytest.mark.parametrize("reduction,first,second", [("mean", None, None), ("max", None, None),
                                                    ("difference", 0, 6), ("direct", 5, None)])
def test_every_reduction_has_the_shape_of_one_output(outputs, reduction, first, second):
    assert reduce(outputs, reduction, first, second).shape == (5, 3, 4)
    vectors = outputs.reshape(7, -1)[:, :9]
    assert reduce(torch.from_numpy(vectors), reduction, first, second).shape == (9,)


def test_reductions_refuse_bad_requests(outputs):
    with pytest.raises(ConfigError, match="unknown reduction 'median'"):
        reduce(outputs, "median")
    with pytest.raises(ConfigError, match="needs second"):
        reduce(outputs, "difference", 1)
    with pytest.raises(ConfigError, match="7 images"):
        reduce(outputs, "direct", 7)
    with pytest.raises(ConfigError, match="set of outputs"):
        reduce(outputs[0, 0, 0], "mean")


# ---------------------------------------------------------------------------------------- A4 unit scalars

def test_unit_scalars_are_the_map_maximum_or_the_sum_of_absolute_values(outputs):
    data = outputs[0]
    for k in range(5):
        assert unit_scalars(data, "max")[k] == pytest.approx(float(data[k].max()))
        assert unit_scalars(data, "abs_sum")[k] == pytest.approx(float(np.abs(data[k]).sum()), rel=1e-6)


def test_auto_picks_abs_sum_exactly_when_a_value_is_negative(outputs):
    positive = np.abs(outputs[0])
    assert resolve_unit_scalar("auto", positive) == "max"
    np.testing.assert_array_equal(unit_scalars(positive, "auto"), positive.reshape(5, -1).max(axis=1))
    signed = positive.copy()
    signed[4, 2, 3] = -1e-3
    assert resolve_unit_scalar("auto", signed) == "abs_sum"
    np.testing.assert_allclose(unit_scalars(signed, "auto"), np.abs(signed).reshape(5, -1).sum(axis=1), rtol=1e-6)
    zero_floor = positive.copy()
    zero_floor[0] = 0.0  # a ReLU layer: zeros are not negative
    assert resolve_unit_scalar("auto", zero_floor) == "max"


def test_scalar_difference_subtracts_the_two_heatmaps_with_one_mode(outputs):
    a, b = np.abs(outputs[0]), outputs[1]  # b has negative values: auto → abs_sum for both
    expected = [float(np.abs(a[k]).sum() - np.abs(b[k]).sum()) for k in range(5)]
    np.testing.assert_allclose(scalar_difference(a, b, "auto"), expected, rtol=1e-5)


@pytest.mark.parametrize("units,side", [(1, 1), (4, 2), (5, 3), (9, 3), (10, 4), (992, 32)])
def test_unit_grid_has_ceil_sqrt_squared_cells_filled_in_unit_order(units, side):
    values = np.arange(units, dtype=float) + 0.5
    grid = unit_grid(values)
    assert grid.shape == (side, side) == (math.ceil(math.sqrt(units)),) * 2
    assert np.isfinite(grid).sum() == units
    for k in range(units):
        assert grid[k // side, k % side] == values[k]


def test_top_units_shows_all_small_layers_and_the_20_highest_of_large_ones():
    assert top_units(np.random.default_rng(0).normal(size=32)).tolist() == list(range(32))
    values = np.random.default_rng(1).permutation(64).astype(float)
    assert top_units(values).tolist() == sorted(range(64), key=lambda k: -values[k])[:20]


# ------------------------------------------------------------------------------------ A5 divergence ranking

def test_divergence_ranking_is_the_argsort_of_summed_absolute_change(outputs):
    a, b = outputs[0], outputs[1]
    scores = np.array([sum(abs(float(a[k, i, j]) - float(b[k, i, j])) for i in range(3) for j in range(4))
                       for k in range(5)])
    ranking = divergence_ranking(a, b, top=3)
    np.testing.assert_allclose(ranking.scores, scores, rtol=1e-6)
    assert ranking.units.tolist() == np.argsort(scores)[::-1][:3].tolist()


def test_divergence_ranking_of_identical_outputs_scores_zero(outputs):
    ranking = divergence_ranking(outputs[2], outputs[2].copy())
    assert (ranking.scores == 0).all() and len(ranking.units) == 5


def test_divergence_ranking_keeps_twenty_of_many_units():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(40, 2, 2)), rng.normal(size=(40, 2, 2))
    ranking = divergence_ranking(a, b)
    assert len(ranking.units) == 20
    assert ranking.units.tolist() == np.argsort(-np.abs(a - b).sum(axis=(1, 2)), kind="stable")[:20].tolist()


# --------------------------------------------------------------------------------------- A16 sign / colour

def _rgb(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text[4:-1].split(","))


def test_stronger_in_the_adversarial_is_positive_and_drawn_blue():
    control = np.zeros((3, 2, 2))
    adversarial = control.copy()
    adversarial[1] += 2.0  # unit 1 stronger in the adversarial
    adversarial[2] -= 1.0  # unit 2 stronger in the control
    stack = np.stack([adversarial, control])
    difference = reduce(stack, "difference", 0, 1)  # difference(adv, ctrl)
    low, high = symmetric_range(difference)
    assert (low, high) == (-2.0, 2.0)
    position = (difference[:, 0, 0] - low) / (high - low)  # where each unit sits on the colour scale
    assert position.tolist() == [0.5, 1.0, 0.25]
    top, bottom, middle = _rgb(SIGNED_COLORSCALE[-1][1]), _rgb(SIGNED_COLORSCALE[0][1]), _rgb(SIGNED_COLORSCALE[5][1])
    assert top[2] > top[0] and bottom[0] > bottom[2]  # high end blue, low end red
    assert SIGNED_COLORSCALE[5][0] == 0.5 and len(set(middle)) == 1  # zero is neutral
    assert [stop for stop, _ in SIGNED_COLORSCALE] == sorted(stop for stop, _ in SIGNED_COLORSCALE)


def test_symmetric_range_of_zero_data_is_not_degenerate():
    assert symmetric_range(np.zeros(4)) == (-1.0, 1.0)
    assert symmetric_range(np.array([-3.0, 1.0])) == (-3.0, 3.0)


# ------------------------------------------------------------------------------------------------ export

def test_export_round_trips_the_reduced_data_and_unit_statistics(outputs):
    group = np.abs(outputs)  # non-negative: auto → max
    reduced = reduce(group, "mean")
    background = np.abs(np.random.default_rng(9).normal(size=(12, 5, 3, 4)))
    export = layer_export("layer2", "mean", reduced, group, "auto", background, meta={"images": [1, 2]})
    assert export.unit_scalar == "max"
    per_image = np.array([[group[i, k].max() for k in range(5)] for i in range(7)])
    values = np.array([reduced[k].max() for k in range(5)])

    with np.load(io.BytesIO(export.to_npz())) as saved:
        np.testing.assert_array_equal(saved["reduced"], reduced)
        np.testing.assert_allclose(saved["unit_value"], values)
        np.testing.assert_allclose(saved["unit_group_max"], per_image.max(axis=0))
        np.testing.assert_allclose(saved["unit_group_std"], per_image.std(axis=0))
        scalars = np.array([[img[k].max() for k in range(5)] for img in background])
        centred = scalars - scalars.mean(axis=0)
        np.testing.assert_allclose(saved["covariance"], centred.T @ centred / (len(scalars) - 1))
        meta = json.loads(str(saved["meta"]))
    assert meta == {"layer": "layer2", "reduction": "mean", "unit_scalar": "max", "images": [1, 2]}

    lines = export.to_csv().decode().splitlines()
    assert lines[0] == "# layer=layer2 reduction=mean unit_scalar=max"
    rows = list(csv.DictReader(lines[1:]))
    assert [int(r["unit"]) for r in rows] == list(range(5))
    expected_rank = {k: r + 1 for r, k in enumerate(sorted(range(5), key=lambda k: -values[k]))}
    assert {int(r["unit"]): int(r["rank"]) for r in rows} == expected_rank
    np.testing.assert_allclose([float(r["group_min"]) for r in rows], per_image.min(axis=0))


def test_export_refuses_a_group_of_another_shape(outputs):
    with pytest.raises(ConfigError, match="do not match the reduced data"):
        layer_export("x", "mean", outputs[0], outputs[:, :4])


# ------------------------------------------------------------------------------- Fig. 7 / Fig. 9b charts

def test_class_change_compares_the_pairs_change_with_the_class_means():
    from advlens.profiles import class_change

    rng = np.random.default_rng(8)
    control, adversarial = np.abs(rng.normal(size=(8, 2, 2))), np.abs(rng.normal(size=(8, 2, 2)))
    true_class, adv_class = np.abs(rng.normal(size=(5, 8, 2, 2))), np.abs(rng.normal(size=(6, 8, 2, 2)))
    adversarial[3] += 5.0
    adv_class[:, 3] += 5.0  # unit 3: the attack moves it the way the adversarial class differs
    chart = class_change(control, adversarial, true_class, adv_class)
    assert chart.unit_scalar == "max"
    pair = [adversarial[k].max() - control[k].max() for k in range(8)]
    between = [np.mean([img[k].max() for img in adv_class]) - np.mean([img[k].max() for img in true_class])
               for k in range(8)]
    np.testing.assert_allclose(chart.pair, pair)
    np.testing.assert_allclose(chart.between_classes, between)
    expected = [abs(pair[k]) > np.percentile(np.abs(pair), 75) and abs(between[k]) > np.percentile(np.abs(between), 75)
                and np.sign(pair[k]) == np.sign(between[k]) for k in range(8)]
    assert chart.matching.tolist() == expected and chart.matching[3]


def test_diverging_strength_gives_each_images_abs_sum_on_the_top_units(outputs):
    from advlens.profiles import diverging_strength

    chart = diverging_strength(outputs[0], outputs[1], top=2)
    scores = [np.abs(outputs[0][k] - outputs[1][k]).sum() for k in range(5)]
    assert chart.units.tolist() == np.argsort(scores)[::-1][:2].tolist()
    np.testing.assert_allclose(chart.a, [np.abs(outputs[0][k]).sum() for k in chart.units], rtol=1e-6)
    np.testing.assert_allclose(chart.b, [np.abs(outputs[1][k]).sum() for k in chart.units], rtol=1e-6)
