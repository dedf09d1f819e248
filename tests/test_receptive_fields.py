"""Receptive fields (paper 001, §3.2) on a toy model whose feature maps are known exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advlens.measures import (
    DEFAULT_RF_LEVEL,
    apply_receptive_field,
    feature_map_quantiles,
    neuron_thresholds,
    receptive_fields,
    rf_masks,
)
from advlens.models import AnalysedModel

# 1-D bilinear (align_corners=False) profile of one hot cell upsampled ×2, worked out by hand:
# pixel y reads source coordinate y/2 − 1/4, clamped at 0 and 3.
# hot cell 1 of 4 → 8 pixels; hot cell 2 of 4 → 8 pixels.
PROFILE_CELL1 = np.array([0, 0.25, 0.75, 0.75, 0.25, 0, 0, 0])
PROFILE_CELL2 = np.array([0, 0, 0, 0.25, 0.75, 0.75, 0.25, 0])


class PoolNet(nn.Module):
    """Three neurons: 1×, 2× and 0× the 2×2 average pool of a 1×8×8 image; linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Conv2d(1, 3, 1, bias=False)
        self.pool = nn.AvgPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.scale.weight.copy_(torch.tensor([1.0, 2.0, 0.0]).view(3, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.gap(self.pool(self.scale(x))), 1))


@pytest.fixture(scope="module")
def toy() -> AnalysedModel:
    return AnalysedModel(PoolNet(), mean=(0.0,), std=(1.0,), input_shape=(1, 8, 8), class_names=("a", "b"))


def block_image(value: float = 1.0) -> torch.Tensor:
    image = torch.zeros(1, 8, 8)
    image[0, 2:4, 4:6] = value  # exactly pool cell (1, 2)
    return image


def test_toy_analysed_layer_is_the_pool(toy: AnalysedModel) -> None:
    assert toy.analysed_layer_name == "pool"


def test_rf_matches_hand_computed_bilinear_upsampling(toy: AnalysedModel) -> None:
    upsampled = np.outer(PROFILE_CELL1, PROFILE_CELL2)  # neuron 0's upsampled map
    for threshold in (0.5, 0.1, 0.0):
        masks = receptive_fields(toy, block_image(), threshold)
        assert masks.shape == (3, 8, 8) and masks.dtype == torch.bool
        np.testing.assert_array_equal(masks[0].numpy(), upsampled > threshold)
        np.testing.assert_array_equal(masks[1].numpy(), 2 * upsampled > threshold)
        assert not masks[2].any()  # a dead neuron never has an RF (strictly greater)
    # threshold 0.5 on neuron 0 recovers exactly the bright block
    expected = np.zeros((8, 8), bool)
    expected[2:4, 4:6] = True
    np.testing.assert_array_equal(receptive_fields(toy, block_image(), 0.5)[0].numpy(), expected)


def test_per_neuron_thresholds_and_rf_size(toy: AnalysedModel) -> None:
    masks = receptive_fields(toy, block_image(), torch.tensor([0.5, 1.2, 0.0]))
    upsampled = np.outer(PROFILE_CELL1, PROFILE_CELL2)
    np.testing.assert_array_equal(masks[0].numpy(), upsampled > 0.5)
    np.testing.assert_array_equal(masks[1].numpy(), 2 * upsampled > 1.2)
    # RF size 4: no upsampling (the maps are 4×4): the mask is the thresholded map itself
    small = receptive_fields(toy, block_image(), 0.5, size=4)
    assert small.shape == (3, 4, 4)
    assert small[0].nonzero().tolist() == [[1, 2]]


def test_pair_shares_threshold_so_a_weaker_neuron_shrinks(toy: AnalysedModel) -> None:
    pair = torch.stack([block_image(1.0), block_image(0.5)])
    masks = receptive_fields(toy, pair, 0.3)
    assert masks.shape == (2, 3, 8, 8)
    assert masks[0, 0].sum() == 4  # 0.5625 > 0.3 on the block only
    assert masks[1, 0].sum() == 0  # 0.28 < 0.3: the weakened neuron lost its RF
    # one batched call equals two single calls
    for n in range(2):
        torch.testing.assert_close(masks[n], receptive_fields(toy, pair[n], 0.3))


def test_rf_masks_chunking_does_not_change_the_result() -> None:
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 5, 3, 3, generator=generator)
    thresholds = torch.rand(5, generator=generator)
    full = rf_masks(maps, thresholds, (9, 12))
    for limit in (1, 108, 200):
        torch.testing.assert_close(rf_masks(maps, thresholds, (9, 12), max_elements=limit), full)
    reference = torch.nn.functional.interpolate(maps, size=(9, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(full, reference > thresholds.view(1, 5, 1, 1))


def test_feature_map_quantiles_and_thresholds() -> None:
    generator = torch.Generator().manual_seed(1)
    maps = torch.rand(6, 4, 3, 3, generator=generator)
    levels = [0.5, 0.9, 0.99]
    table = feature_map_quantiles(maps, levels)
    assert table.shape == (3, 4)
    for k in range(4):
        np.testing.assert_allclose(table[:, k].numpy(), np.quantile(maps[:, k].numpy().ravel(), levels), rtol=1e-6)
    # a stored level is returned as stored (also when the level was stored as float32)
    torch.testing.assert_close(neuron_thresholds(table, np.float32(levels), 0.9), table[1])
    torch.testing.assert_close(neuron_thresholds(table, levels), table[levels.index(DEFAULT_RF_LEVEL)])
    # between stored levels: linear interpolation
    torch.testing.assert_close(neuron_thresholds(table, levels, 0.7), 0.5 * (table[0] + table[1]))
    with pytest.raises(ValueError, match="outside"):
        neuron_thresholds(table, levels, 0.3)
    # absolute overrides
    torch.testing.assert_close(neuron_thresholds(table, levels, value=0.25), torch.full((4,), 0.25))
    torch.testing.assert_close(neuron_thresholds(value=[1.0, 2.0]), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError):
        neuron_thresholds(value=0.5)


def test_apply_receptive_field_masks_and_overlays() -> None:
    image = torch.full((3, 4, 4), 0.8)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[1:3, 1:3] = True
    masked = apply_receptive_field(image, mask)
    assert masked.shape == (3, 4, 4)
    torch.testing.assert_close(masked, image * mask)
    overlay = apply_receptive_field(image, mask, mode="overlay", dim=0.25)
    torch.testing.assert_close(overlay[:, 1, 1], torch.full((3,), 0.8))
    torch.testing.assert_close(overlay[:, 0, 0], torch.full((3,), 0.2))
    # many masks at once, and an RF size other than the image's: the image is resized first
    stacked = apply_receptive_field(image, torch.ones(5, 8, 8, dtype=torch.bool))
    assert stacked.shape == (5, 3, 8, 8)
    torch.testing.assert_close(stacked, torch.full((5, 3, 8, 8), 0.8))


def test_no_hook_left_behind(toy: AnalysedModel) -> None:
    receptive_fields(toy, block_image(), 0.5)
    for module in toy.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
