"""Image- and neuron-perturbation measures (paper 001, §5.2.1): IoU, curves, bands, band gaps,
direct neuron substitution and rankings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from advlens.measures import (
    Bands,
    band_gap,
    class_bands,
    contribution_curves,
    contributions,
    image_perturbation_scores,
    iou,
    neuron_substitution,
    pair_band_gap,
    percentile_bands,
    rank_band_gap,
    rank_descending,
)

# --- IoU / image-perturbation measure -------------------------------------------------------------


def test_iou_values_and_edge_cases() -> None:
    a = torch.zeros(4, 4, dtype=torch.bool)
    b = torch.zeros(4, 4, dtype=torch.bool)
    assert iou(a, b).item() == 0.0  # empty union → 0, not NaN
    a[0, 0:2] = True
    assert iou(a, b).item() == 0.0  # one empty mask
    assert iou(a, a).item() == 1.0
    b[0, 1:4] = True
    assert iou(a, b).item() == pytest.approx(1 / 4)  # ∩ = {(0,1)}, ∪ = 4 pixels
    b2 = torch.zeros(4, 4, dtype=torch.bool)
    b2[3, 3] = True
    assert iou(a, b2).item() == 0.0  # disjoint


def test_image_perturbation_scores_use_benign_rf_with_bmap_and_adversarial_rf_with_amap() -> None:
    k, size = 4, 6
    benign_rf = torch.zeros(k, size, size, dtype=torch.bool)
    adversarial_rf = torch.zeros(k, size, size, dtype=torch.bool)
    bmap = torch.zeros(size, size, dtype=torch.bool)
    amap = torch.zeros(size, size, dtype=torch.bool)
    bmap[:2, :2] = True  # 4 pixels
    amap[4:, 4:] = True
    benign_rf[0, :2, :2] = True  # IoU 1 with bmap
    benign_rf[1, :2, :1] = True  # 2 / 4
    benign_rf[2, 4:, 4:] = True  # 0 with bmap (it matches amap, but that is the other side)
    adversarial_rf[3, 4:, 4:] = True  # 1 with amap
    adversarial_rf[0, :2, :2] = True  # 0 with amap
    scores = image_perturbation_scores(benign_rf, adversarial_rf, bmap, amap)
    torch.testing.assert_close(scores.benign_iou, torch.tensor([1.0, 0.5, 0.0, 0.0]))
    torch.testing.assert_close(scores.adversarial_iou, torch.tensor([0.0, 0.0, 0.0, 1.0]))
    assert scores.benign_ranking.tolist() == [0, 1, 2, 3]  # ties (2, 3) by index
    assert scores.adversarial_ranking.tolist() == [3, 0, 1, 2]
    assert not torch.isnan(scores.benign_iou).any()


def test_rank_descending_ties_tiebreak_and_nan() -> None:
    assert rank_descending([1.0, 3.0, 3.0, 2.0]).tolist() == [1, 2, 3, 0]
    assert rank_descending([1.0, 3.0, 3.0, 2.0], tiebreak=[0, 1, 5, 0]).tolist() == [2, 1, 3, 0]
    assert rank_descending([np.nan, 1.0, -np.inf]).tolist() == [1, 2, 0]


# --- curves and bands -------------------------------------------------------------------------------


def test_contribution_curves_use_each_side_class_weights() -> None:
    weight = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]])
    benign, adversarial = torch.tensor([1.0, 1.0, 2.0]), torch.tensor([4.0, 2.0, 0.0])
    curves = contribution_curves(benign, adversarial, weight, benign_class=0, adversarial_class=1)
    torch.testing.assert_close(curves.benign, torch.tensor([1.0, 2.0, 6.0]))
    torch.testing.assert_close(curves.adversarial, torch.tensor([-4.0, 1.0, 0.0]))
    batch = contributions(torch.stack([benign, adversarial]), weight, torch.tensor([0, 1]))
    torch.testing.assert_close(batch, torch.stack([curves.benign, curves.adversarial]))


def test_class_bands_are_student_t_intervals() -> None:
    generator = np.random.default_rng(0)
    mean = generator.normal(size=(3, 5)).astype(np.float32)
    std = generator.uniform(0.1, 2.0, size=(3, 5)).astype(np.float32)
    count = np.array([10, 2, 500])
    for level in (0.9, 0.95, 0.99):
        bands = class_bands(mean, std, count, level)
        assert bands.low.shape == (3, 5)
        for c in range(3):
            low, high = stats.t.interval(level, count[c] - 1, loc=mean[c], scale=std[c] / math.sqrt(count[c]))
            np.testing.assert_allclose(bands.low[c].numpy(), low, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(bands.high[c].numpy(), high, rtol=1e-5, atol=1e-6)
    # a higher confidence level gives a wider band
    assert torch.all(class_bands(mean, std, count, 0.99).high >= class_bands(mean, std, count, 0.9).high)


def test_class_bands_without_enough_images_are_unbounded() -> None:
    bands = class_bands(np.ones((2, 3)), np.ones((2, 3)), np.array([1, 0]))
    assert torch.all(torch.isinf(bands.low)) and torch.all(bands.low < 0)
    assert torch.all(torch.isinf(bands.high)) and torch.all(bands.high > 0)
    assert torch.all(pair_band_gap(bands, 0, 1) == 0)


def test_percentile_bands() -> None:
    table = np.stack([np.full((2, 3), v, dtype=np.float32) for v in (1.0, 2.0, 4.0)])  # levels 5, 50, 95
    levels = [5.0, 50.0, 95.0]
    bands = percentile_bands(table, levels)
    assert torch.all(bands.low == 1.0) and torch.all(bands.high == 4.0)
    bands = percentile_bands(table, levels, low=50.0, high=72.5)
    assert torch.all(bands.low == 2.0) and torch.allclose(bands.high, torch.full((2, 3), 3.0))
    with pytest.raises(ValueError):
        percentile_bands(table, levels, low=1.0)


# --- band gap ----------------------------------------------------------------------------------------


def test_band_gap_every_branch() -> None:
    # adversarial band below the benign one (CL_b > CU_a): CU_a − CL_b < 0, inhibited
    assert band_gap(1.0, 2.0, 5.0, 6.0).item() == pytest.approx(2.0 - 5.0)
    # adversarial band above (CL_a > CU_b): CL_a − CU_b > 0, excited
    assert band_gap(7.0, 9.0, 1.0, 3.0).item() == pytest.approx(7.0 - 3.0)
    # overlapping, nested, touching: 0
    assert band_gap(1.0, 4.0, 3.0, 6.0).item() == 0.0
    assert band_gap(0.0, 10.0, 3.0, 6.0).item() == 0.0
    assert band_gap(1.0, 3.0, 3.0, 6.0).item() == 0.0
    assert band_gap(6.0, 8.0, 3.0, 6.0).item() == 0.0
    # elementwise on vectors, all three branches at once
    gap = band_gap(np.array([1.0, 7.0, 1.0]), np.array([2.0, 9.0, 4.0]),
                   np.array([5.0, 1.0, 3.0]), np.array([6.0, 3.0, 6.0]))
    torch.testing.assert_close(gap, torch.tensor([-3.0, 4.0, 0.0]))


def test_pair_band_gap_takes_the_adversarial_class_band_as_a() -> None:
    bands = Bands(torch.tensor([[0.0, 5.0], [3.0, 0.0]]), torch.tensor([[1.0, 6.0], [4.0, 1.0]]))
    # benign class 0, adversarial class 1: neuron 0: a = [3, 4] above b = [0, 1] → 3 − 1 = 2
    # neuron 1: a = [0, 1] below b = [5, 6] → 1 − 5 = −4
    torch.testing.assert_close(pair_band_gap(bands, 0, 1), torch.tensor([2.0, -4.0]))
    torch.testing.assert_close(pair_band_gap(bands, 1, 0), torch.tensor([-2.0, 4.0]))


def test_rank_band_gap() -> None:
    gap = np.array([0.0, 2.0, -3.0, 0.0, 1.0])
    assert rank_band_gap(gap).tolist() == [1, 4, 0, 3, 2]  # excited first, inhibited last (Fig. 4)
    assert rank_band_gap(gap, by="magnitude").tolist() == [2, 1, 4, 0, 3]
    assert rank_band_gap(gap, tiebreak=np.array([0, 0, 0, 1, 0])).tolist() == [1, 4, 3, 0, 2]


# --- direct neuron substitution ------------------------------------------------------------------


class Head(nn.Module):
    def __init__(self, dims: int = 9, classes: int = 4) -> None:
        super().__init__()
        self.fc = nn.Linear(dims, classes)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(classes, dims, generator=generator))
            self.fc.bias.copy_(torch.randn(classes, generator=generator))

    def logits_from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(pooled)


def test_neuron_substitution_agrees_with_manual_forward_passes() -> None:
    head = Head()
    generator = torch.Generator().manual_seed(1)
    benign, adversarial = torch.rand(9, generator=generator), torch.rand(9, generator=generator) * 3
    adversarial[4] = benign[4]  # an unchanged neuron changes nothing
    benign_class, adversarial_class = 2, 0
    for max_batch in (1, 4, 1024):
        result = neuron_substitution(head, benign, adversarial, benign_class, adversarial_class, max_batch=max_batch)
        with torch.no_grad():
            y = torch.softmax(head.fc(benign), 0)
            for d in range(9):
                vector = benign.clone()
                vector[d] = adversarial[d]
                y_sub = torch.softmax(head.fc(vector), 0)
                assert result.benign_drop[d].item() == pytest.approx((y[benign_class] - y_sub[benign_class]).item(),
                                                                     abs=1e-6)
                assert result.adversarial_rise[d].item() == pytest.approx(
                    (y_sub[adversarial_class] - y[adversarial_class]).item(), abs=1e-6)
        assert abs(result.benign_drop[4]) < 1e-6 and abs(result.adversarial_rise[4]) < 1e-6
    # a plain callable works too
    plain = neuron_substitution(head.fc, benign.numpy(), adversarial.numpy(), benign_class, adversarial_class)
    torch.testing.assert_close(plain.benign_drop, result.benign_drop)
