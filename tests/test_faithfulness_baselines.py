"""Baseline orders and the default k grid of the faithfulness benchmark, against plain loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advlens.errors import ConfigError
from advlens.faithfulness import default_ks, difference_ranking, order_by_score, random_rankings


def test_difference_ranking_orders_channels_by_their_largest_or_mean_change():
    rng = np.random.default_rng(1)
    benign, adversarial = rng.random((2, 5, 6, 3, 3))
    for reduce in ("max", "mean"):
        order = difference_ranking(benign, adversarial, reduce)
        for p in range(2):
            scores = []
            for c in range(6):  # plain loop over positions
                values = [abs(adversarial[p, c, i, j] - benign[p, c, i, j]) for i in range(3) for j in range(3)]
                scores.append(max(values) if reduce == "max" else sum(values) / len(values))
            assert order[p].tolist() == sorted(range(6), key=lambda c: -scores[c])


def test_vector_layers_and_ties_keep_the_lower_channel_first():
    order = difference_ranking(torch.tensor([0.0, 0.0, 1.0, 0.0]), torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert order.tolist() == [0, 2, 3, 1]
    assert order_by_score([np.nan, 2.0, 5.0]).tolist() == [2, 1, 0]  # NaN last
    scores = np.tile([1.0, 0.0, 2.0, 0.0], 50)  # ties among many channels: lower channel id first
    expected = sorted(range(200), key=lambda c: (-scores[c], c))
    assert order_by_score(scores).tolist() == expected


def test_random_rankings_are_seeded_permutations():
    orders = random_rankings(50, [0, 1, 2])
    assert orders.shape == (3, 50)
    for row in orders:
        assert sorted(row.tolist()) == list(range(50))
    np.testing.assert_array_equal(orders, random_rankings(50, [0, 1, 2]))
    assert not np.array_equal(orders[0], orders[1])
    with pytest.raises(ConfigError, match="seed"):
        random_rankings(5, [])


def test_default_ks_is_dense_up_to_twenty_then_reaches_every_channel():
    ks = default_ks(256)
    assert ks[:21].tolist() == list(range(21)) and ks[-1] == 256
    assert np.all(np.diff(ks) > 0) and len(ks) < 50
    assert default_ks(12).tolist() == list(range(13))
    with pytest.raises(ConfigError, match="reduce"):
        difference_ranking(np.zeros((2, 2)), np.zeros((2, 2)), "median")
