"""The river view's rule-based layout (spec-003 §4, check A10): positions from hand-set distances, the scale,
collapsed groups and the diverging/merging segments, each against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from advlens.datapaths.river import river_columns, river_layout, river_positions, trend_runs
from advlens.errors import ConfigError

LAYERS = ["stem", "l1.relu", "l1", "l2.relu", "l2"]
GROUPS = [("stem", ["stem"]), ("l1", ["l1.relu", "l1"]), ("l2", ["l2.relu", "l2"])]


def test_a10_gap_is_d1_and_adv_splits_it_d2_to_d3():
    y_src, y_adv, y_tar = river_positions(np.array([4.0]), np.array([1.0]), np.array([3.0]), scale=0.5)
    assert y_tar[0] - y_src[0] == pytest.approx(4 * 0.5)
    assert (y_adv[0] - y_src[0]) / (y_tar[0] - y_adv[0]) == pytest.approx(1 / 3)
    assert y_src[0] < y_adv[0] < y_tar[0]
    # by hand: src −1, tar +1, adv −1 + 2·1/4 = −0.5
    assert (y_src[0], y_adv[0], y_tar[0]) == pytest.approx((-1.0, -0.5, 1.0))


def test_all_on_the_axis_when_adv_equals_both():
    y_src, y_adv, y_tar = river_positions(np.array([0.0, 2.0]), np.array([0.0, 0.0]), np.array([0.0, 2.0]), 1.0)
    assert (y_src[0], y_adv[0], y_tar[0]) == (0.0, 0.0, 0.0)
    assert y_adv[1] == y_src[1] == -1.0  # adv on src: d2 = 0


def test_scale_fits_the_largest_displayed_d1_to_the_height():
    d1, d2, d3 = [1, 2, 8, 3, 4], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]
    river = river_layout(LAYERS, d1, d2, d3, height=2.0)
    assert river.scale == pytest.approx(2.0 / 8)
    assert np.max(river.y_tar - river.y_src) == pytest.approx(2.0)
    # collapsing l1 hides the 8 (l1.relu is not the group's last point): the largest shown d1 is then 4
    collapsed = river_layout(LAYERS, [1, 8, 2, 3, 4], d2, d3, groups=GROUPS, height=2.0)
    assert collapsed.scale == pytest.approx(2.0 / 4)


def test_collapsed_group_shows_its_last_gate_point():
    d1 = [1.0, 2.0, 3.0, 4.0, 5.0]
    d2 = [0.1, 0.2, 0.3, 0.4, 0.5]
    d3 = [0.9, 0.8, 0.7, 0.6, 0.5]
    river = river_layout(LAYERS, d1, d2, d3, groups=GROUPS)
    assert [c.label for c in river.columns] == ["stem", "l1", "l2"]
    assert [c.layers for c in river.columns] == [("stem",), ("l1.relu", "l1"), ("l2.relu", "l2")]
    assert river.d1.tolist() == [1.0, 3.0, 5.0] and river.d2.tolist() == [0.1, 0.3, 0.5]
    assert river.column_of("l1.relu") == 1 and river.column_of("l2") == 2
    opened = river_layout(LAYERS, d1, d2, d3, groups=GROUPS, expanded={"l1"})
    assert [c.label for c in opened.columns] == ["stem", "l1.relu", "l1", "l2"]
    assert [c.collapsed for c in opened.columns] == [False, False, False, True]
    assert opened.d3.tolist() == [0.9, 0.8, 0.7, 0.5]


def test_trend_runs_need_min_steps_strict_steps():
    values = [0, 1, 2, 2, 3, 4, 5, 4]
    assert trend_runs(values, rising=True, min_steps=2) == [(0, 2), (3, 6)]
    assert trend_runs(values, rising=True, min_steps=3) == [(3, 6)]
    assert trend_runs(values, rising=False, min_steps=1) == [(6, 7)]
    assert trend_runs(values, rising=False, min_steps=2) == []


def test_segments_diverging_where_d2_rises_merging_where_d3_falls():
    # d2 rises over columns 0→2 (two steps), d3 falls over 2→4 (two steps): a transition, Fig. 6c
    d1 = [1, 1, 1, 1, 1]
    d2 = [0.1, 0.4, 0.8, 0.8, 0.7]
    d3 = [0.9, 0.9, 0.9, 0.5, 0.2]
    river = river_layout(LAYERS, d1, d2, d3)
    assert [(s.phase, s.start, s.end) for s in river.segments] == [("diverging", 0, 2), ("merging", 2, 4)]
    assert [river.phase(i) for i in range(5)] == ["diverging", "diverging", "merging", "merging", "merging"]


def test_bad_input_is_refused_before_work():
    with pytest.raises(ConfigError, match="one value per gate point"):
        river_layout(LAYERS, [1, 2], [1, 2], [1, 2])
    with pytest.raises(ConfigError, match="non-negative"):
        river_layout(LAYERS, [1, 2, 3, 4, -1], [1] * 5, [1] * 5)
    with pytest.raises(ConfigError, match="once each"):
        river_columns(LAYERS, [("a", ["stem", "l1"]), ("b", ["l1.relu", "l2.relu", "l2"])])
    with pytest.raises(ConfigError, match="cannot expand"):
        river_columns(LAYERS, GROUPS, {"layer9"})
