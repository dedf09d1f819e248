"""Eq. 9, Eq. 10 and the top-K score (spec-003 §3, checks A7, A8) against hand-worked cases and plain loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from advlens.datapaths import (GateLayout, default_r, diff_curve, layer_distances, pattern_detected,
                               top_k_score)
from advlens.errors import ConfigError


def test_pattern_rule_unit_cases():
    """A7 with r = 8."""
    rising = [0.0] * 5 + list(range(1, 9))
    assert pattern_detected(rising, 8)
    flat_step = [0.0] * 5 + [1, 2, 3, 3, 5, 6, 7, 8]  # one equal step among the last 8
    assert not pattern_detected(flat_step, 8)
    earlier_peak = [0.0] * 4 + [20.0, 0.0] + list(range(1, 9))  # rising last 8, but a larger diff earlier
    assert not pattern_detected(earlier_peak, 8)
    assert not pattern_detected(list(range(8)), 8)  # m ≤ r: never detected
    assert pattern_detected(list(range(9)), 8)  # m = r + 1 is enough
    assert not pattern_detected([1.0, 2.0, 3.0, 2.5], 1)  # last step falls
    assert pattern_detected([1.0, 2.0, 3.0, 2.5, 4.0], 1) is True


def test_pattern_needs_the_strict_rise_only_over_the_last_r_steps():
    diff = [5.0, 1.0, 0.0, 2.0, 3.0, 6.0]  # falls early, rises over the last 3 to the maximum
    assert pattern_detected(diff, 3)
    assert not pattern_detected(diff, 4)  # step 1.0 → 0.0 is inside the last 4


def test_top_k_scores_hand_computed():
    """A8: 4 adversarials × 5 targets; targets ranked by ascending distance, patterns counted in the first K."""
    distances = np.array([
        [0.5, 0.1, 0.9, 0.3, 0.7],   # order 1, 3, 0, 4, 2
        [1.0, 2.0, 3.0, 4.0, 5.0],   # order 0, 1, 2, 3, 4
        [5.0, 4.0, 3.0, 2.0, 1.0],   # order 4, 3, 2, 1, 0
        [2.0, 2.0, 1.0, 3.0, 0.5],   # order 4, 2, 0, 1, 3 (tie 0/1 by position)
    ])
    detected = np.array([
        [False, True, True, False, False],
        [False, False, False, False, True],
        [True, True, False, True, False],
        [False, True, False, False, True],
    ])
    expected = {1: [1, 0, 0, 1], 3: [1, 0, 1, 1], 5: [2, 1, 3, 2]}
    for k, scores in expected.items():
        assert top_k_score(distances, detected, k).tolist() == scores
    means = [top_k_score(distances, detected, k).mean() for k in (1, 2, 3, 4, 5)]
    assert means == sorted(means) and all(0 <= m <= k for m, k in zip(means, (1, 2, 3, 4, 5)))


def test_layer_distances_and_eq9_against_a_plain_loop():
    layout = GateLayout(("a", "b", "c"), (2, 3, 4))
    gen = torch.Generator().manual_seed(3)
    adv, src, tar = (torch.rand(5, 9, generator=gen) for _ in range(3))
    bounds = [(0, 2), (2, 5), (5, 9)]
    expected_raw = [[math.dist(adv[i, s:e].tolist(), src[i, s:e].tolist()) - math.dist(adv[i, s:e].tolist(),
                    tar[i, s:e].tolist()) for s, e in bounds] for i in range(5)]
    np.testing.assert_allclose(diff_curve(adv, src, tar, layout).numpy(), expected_raw, atol=1e-6)
    rms = layer_distances(adv, src, layout, distance="rms")
    expected_rms = [[math.dist(adv[i, s:e].tolist(), src[i, s:e].tolist()) / math.sqrt(e - s) for s, e in bounds]
                    for i in range(5)]
    np.testing.assert_allclose(rms.numpy(), expected_rms, atol=1e-6)
    np.testing.assert_allclose(layer_distances(adv, src, layout, ["c"]).numpy()[:, 0],
                               [math.dist(adv[i, 5:].tolist(), src[i, 5:].tolist()) for i in range(5)], atol=1e-6)


def test_default_r_follows_the_spec():
    assert [default_r(m) for m in (9, 10, 29, 30, 34)] == [3, 4, 10, 8, 8]


def test_bad_input_is_refused():
    with pytest.raises(ConfigError, match="r must"):
        pattern_detected([1, 2, 3], 0)
    with pytest.raises(ConfigError, match="both"):
        top_k_score(np.zeros((2, 3)), np.zeros((2, 4), dtype=bool), 1)
    with pytest.raises(ConfigError, match="K must"):
        top_k_score(np.zeros((2, 3)), np.zeros((2, 3), dtype=bool), 0)
    with pytest.raises(ConfigError, match="distance"):
        layer_distances(torch.zeros(1, 2), torch.zeros(1, 2), GateLayout(("a",), (2,)), distance="cosine")
