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
    BAND_LEVELS,
    DEFAULT_BAND_KIND,
    DEFAULT_BAND_LEVEL,
    Bands,
    band_gap,
    band_regions,
    bands_of_kind,
    central_percentiles,
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


def three_class_statistics() -> tuple[dict[str, np.ndarray], list[float], list[np.ndarray]]:
    """Hand-made contributions of 3 classes × 2 neurons and their statistics as the store holds them."""
    values = [np.array([[0.0, 1.0], [1.0, 3.0], [2.0, 5.0], [3.0, 7.0], [4.0, 9.0]]),  # class 0: 5 images
              np.array([[10.0, 0.0], [20.0, 0.0], [30.0, 0.0]]),  # class 1: 3 images, neuron 1 dead
              np.array([[-1.0, 1.9], [1.0, 1.9]])]  # class 2: 2 images
    levels = [10.0, 25.0, 50.0, 75.0, 90.0]
    statistics = {
        "class_mean": np.stack([v.mean(0) for v in values]),
        "class_std": np.stack([v.std(0, ddof=1) for v in values]),
        "class_count": np.array([len(v) for v in values]),
        "class_percentiles": np.stack([np.stack([np.percentile(v, q, axis=0) for v in values]) for q in levels]),
    }
    return statistics, levels, values


def test_band_kinds_against_a_hand_computation() -> None:
    statistics, levels, values = three_class_statistics()
    assert central_percentiles(0.8) == (10.0, 90.0) and central_percentiles(0.5) == (25.0, 75.0)
    # percentile bands, 10th–90th: linear percentiles by hand. Class 0 neuron 0: 0 1 2 3 4 → 0.4 and 3.6;
    # neuron 1: 1 3 5 7 9 → 1.8 and 8.2; class 1 neuron 0: 10 20 30 → 12 and 28, neuron 1: 0 and 0;
    # class 2 neuron 0: −1 1 → −0.8 and 0.8, neuron 1: 1.9 and 1.9.
    pct = bands_of_kind(statistics, "percentile", 0.8, levels)
    np.testing.assert_allclose(pct.low.numpy(), [[0.4, 1.8], [12.0, 0.0], [-0.8, 1.9]], atol=1e-6)
    np.testing.assert_allclose(pct.high.numpy(), [[3.6, 8.2], [28.0, 0.0], [0.8, 1.9]], atol=1e-6)
    iqr = bands_of_kind(statistics, "percentile", 0.5, levels)
    np.testing.assert_allclose(iqr.low.numpy(), [[1.0, 3.0], [15.0, 0.0], [-0.5, 1.9]], atol=1e-6)
    np.testing.assert_allclose(iqr.high.numpy(), [[3.0, 7.0], [25.0, 0.0], [0.5, 1.9]], atol=1e-6)
    # CI of the mean at 0.9: mean ± t(0.95, n−1) s/√n. Class 0 neuron 0: mean 2, s = √2.5, n = 5.
    ci = bands_of_kind(statistics, "ci", 0.9, levels)
    half = stats.t.ppf(0.95, 4) * math.sqrt(2.5) / math.sqrt(5)
    assert ci.low[0, 0].item() == pytest.approx(2 - half, rel=1e-6)
    assert ci.high[0, 0].item() == pytest.approx(2 + half, rel=1e-6)
    half1 = stats.t.ppf(0.95, 2) * 10.0 / math.sqrt(3)  # class 1 neuron 0: 10 20 30, s = 10
    assert ci.low[1, 0].item() == pytest.approx(20 - half1, rel=1e-6)
    assert ci.low[1, 1].item() == ci.high[1, 1].item() == 0.0  # a dead neuron: a zero-width band at 0
    # the kinds give different band gaps for the pair benign 0 → adversarial 2 (≥ 3 classes: 2 ≠ 1 − 0):
    # neuron 0: percentile a = [−0.8, 0.8] overlaps b = [0.4, 3.6] → 0; CI a = 0 ± 6.31 overlaps too.
    # neuron 1: percentile a = [1.9, 1.9] inside b = [1.8, 8.2] → 0; CI b = 5 ± 2.132·√10/√5 = [1.985, 8.015]
    # lies above a = [1.9, 1.9] → 1.9 − 1.985 < 0.
    gap_pct = pair_band_gap(pct, 0, 2).numpy()
    gap_ci = pair_band_gap(ci, 0, 2).numpy()
    assert gap_pct.tolist() == [0.0, 0.0]
    ci_b1 = (5.0 - stats.t.ppf(0.95, 4) * math.sqrt(10.0) / math.sqrt(5), 5.0)
    assert gap_ci[0] == 0.0 and gap_ci[1] == pytest.approx(1.9 - ci_b1[0], rel=1e-5) and gap_ci[1] < 0
    # class 1 against class 0: neuron 0 far above (excited), neuron 1 at 0 below [1.8, 8.2] (inhibited)
    np.testing.assert_allclose(pair_band_gap(pct, 0, 1).numpy(), [12.0 - 3.6, 0.0 - 1.8], atol=1e-6)


def test_band_kind_and_level_are_checked_and_missing_percentiles_interpolated(caplog) -> None:
    statistics, levels, _ = three_class_statistics()
    with pytest.raises(ValueError, match="band kind"):
        bands_of_kind(statistics, "sd", 0.8, levels)
    with pytest.raises(ValueError, match="band level"):
        bands_of_kind(statistics, "ci", 95, levels)
    with caplog.at_level("WARNING"):
        interpolated = bands_of_kind(statistics, "percentile", 0.6, levels)  # 20th and 80th are not stored
    assert "interpolating" in caplog.text
    # 20th between 10th (0.4) and 25th (1.0) of class 0 neuron 0: 0.4 + (10 / 15) · 0.6 = 0.8 (= exact here)
    assert interpolated.low[0, 0].item() == pytest.approx(0.8)
    assert DEFAULT_BAND_KIND == "percentile" and BAND_LEVELS[DEFAULT_BAND_KIND] == DEFAULT_BAND_LEVEL


def test_band_regions_are_fig4_shares() -> None:
    gap = np.array([[0.5, 0.0, -1.0, 2.0], [0.0, 0.0, 0.0, -3.0]])
    np.testing.assert_allclose(band_regions(gap), [[0.5, 0.25, 0.25], [0.0, 0.75, 0.25]])
    np.testing.assert_allclose(band_regions(gap[0]), [0.5, 0.25, 0.25])


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
