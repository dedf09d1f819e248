"""Patch curves (issue 13, item 1) against hand-solved toys and a plain loop of hooked forward passes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from advlens.errors import ConfigError, ModelError
from advlens.faithfulness import (feeds_head_alone, flip_k, flipped_within, grid_area, normalised, patch_auc,
                                  patch_curve, random_rankings)
from advlens.models import AnalysedModel, load_model

pytestmark = pytest.mark.usefixtures("one_thread")

BIAS_A = [2.0, 0.0, 0.0]
WEIGHT_A = [[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
"""Toy A: only channel 0 reaches the head; alone it moves class b's logit from 0 to 4 (a → b)."""

BIAS_B = [2.5, 0.0, 0.5]
WEIGHT_B = [[0.0, 0.0, 0.0], [3.0, 2.0, 1.0], [0.0, 0.5, 0.5]]
"""Toy B: every channel raises class b (3 > 2 > 1), channels 1 and 2 also class c."""

BIAS_C = [2.0, 0.0, 0.0]
WEIGHT_C = [[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 0.0, 3.0]]
"""Toy C: channel 0 alone overshoots the attack's effect on class b (share > 1), channel 2 alone turns the
prediction to c and lowers b (share < 0): the clipping to [0, 1] matters."""


def toy(weight: list[list[float]], bias: list[float]) -> AnalysedModel:
    """1×1 identity conv → ReLU → mean pool → linear (hand-set), on 3-channel 2×2 images: channel c's pooled
    value is the mean of image channel c, so benign zeros and adversarial ones give a = 0 and a = 1."""
    net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        net[0].bias.zero_()
        net[4].weight.copy_(torch.tensor(weight))
        net[4].bias.copy_(torch.tensor(bias))
    return AnalysedModel(net, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (3, 2, 2), ("a", "b", "c"))


BENIGN = torch.zeros(1, 3, 2, 2)
ADVERSARIAL = torch.ones(1, 3, 2, 2)


def hand_probs(weight: list[list[float]], bias: list[float], active: set[int]) -> list[float]:
    """Softmax by hand of the toy's logits when the channels in ``active`` are 1 and the others 0."""
    logits = [b + sum(row[c] for c in active) for row, b in zip(weight, bias)]
    exps = [math.exp(v) for v in logits]
    return [e / sum(exps) for e in exps]


def hand_auc(weight, bias, order, mode: str) -> float:
    """Mean over k = 1 … 3 of the clipped share of the attack's effect on the tracked class (module docstring
    of advlens.faithfulness.auc), from hand softmaxes."""
    everything = {0, 1, 2}
    tracked = 1 if mode == "insertion" else 0
    def active(k):  # channels holding the adversarial value (1) after patching the top k
        return set(order[:k]) if mode == "insertion" else everything - set(order[:k])
    start, end = hand_probs(weight, bias, active(0))[tracked], hand_probs(weight, bias, active(3))[tracked]
    shares = [min(max((hand_probs(weight, bias, active(k))[tracked] - start) / (end - start), 0.0), 1.0)
              for k in (1, 2, 3)]
    return sum(shares) / 3


# ------------------------------------------------------------------ toy A: one channel alone flips


@pytest.mark.parametrize("mode", ["insertion", "restoration"])
def test_the_channel_that_alone_flips_first_gives_auc_one_and_last_one_third(mode):
    model = toy(WEIGHT_A, BIAS_A)
    orders = np.array([[0, 1, 2], [1, 0, 2], [1, 2, 0]])
    curve = patch_curve(model, BENIGN.expand(3, -1, -1, -1), ADVERSARIAL.expand(3, -1, -1, -1), "1", orders, mode)
    np.testing.assert_allclose(patch_auc(curve), [1.0, 2 / 3, 1 / 3], atol=1e-6)
    for row, order in enumerate(orders):
        assert patch_auc(curve)[row] == pytest.approx(hand_auc(WEIGHT_A, BIAS_A, order.tolist(), mode), abs=1e-6)
    # the prediction flips exactly when channel 0 is patched
    np.testing.assert_array_equal(flip_k(curve), [1, 2, 3])
    np.testing.assert_array_equal(flipped_within(curve, 1), [True, False, False])


def test_toy_curve_holds_the_hand_softmax_at_every_k():
    model = toy(WEIGHT_B, BIAS_B)
    order = [2, 0, 1]
    curve = patch_curve(model, BENIGN, ADVERSARIAL, "1", order, "insertion")
    expected = [hand_probs(WEIGHT_B, BIAS_B, set(order[:k])) for k in range(4)]
    np.testing.assert_allclose(curve.probs[0].numpy(), expected, atol=1e-6)
    assert curve.tracked_class.tolist() == [1] and curve.start_class.tolist() == [0]


# ------------------------------------------------------------------ toy B: every order by hand, the oracle


@pytest.mark.parametrize("mode", ["insertion", "restoration"])
@pytest.mark.parametrize("weight, bias", [(WEIGHT_B, BIAS_B), (WEIGHT_C, BIAS_C)], ids=["graded", "overshoot"])
def test_every_order_of_a_toy_scores_its_hand_auc(mode, weight, bias):
    model = toy(weight, bias)
    orders = np.array(list(itertools.permutations(range(3))))
    curve = patch_curve(model, BENIGN.expand(6, -1, -1, -1), ADVERSARIAL.expand(6, -1, -1, -1), "1", orders, mode)
    expected = [hand_auc(weight, bias, order.tolist(), mode) for order in orders]
    np.testing.assert_allclose(patch_auc(curve), expected, atol=1e-6)


def test_a_flip_to_a_third_class_counts_as_a_flip():
    model = toy(WEIGHT_C, BIAS_C)
    curve = patch_curve(model, BENIGN, ADVERSARIAL, "1", [2, 1, 0], "insertion")
    assert curve.predictions()[0].tolist() == [0, 2, 2, 1]  # a, then c (channel 2 alone), then b
    assert flip_k(curve).tolist() == [1]


def test_oracle_order_rises_monotonically_and_scores_highest():
    """The oracle order patches channels by their weight on the adversarial class (3, 2, 1): the tracked
    probability never falls, and no other order has a larger area."""
    model = toy(WEIGHT_B, BIAS_B)
    orders = np.array(list(itertools.permutations(range(3))))
    curve = patch_curve(model, BENIGN.expand(6, -1, -1, -1), ADVERSARIAL.expand(6, -1, -1, -1), "1", orders)
    oracle = [i for i, order in enumerate(orders.tolist()) if order == [0, 1, 2]][0]
    tracked = curve.tracked()[oracle]
    assert torch.all(tracked[1:] >= tracked[:-1])
    assert np.all(np.diff(normalised(curve)[oracle]) >= 0)
    aucs = patch_auc(curve)
    assert aucs[oracle] == aucs.max() and aucs[oracle] > np.sort(aucs)[-2]


def test_grid_area_is_the_mean_over_k_of_the_interpolated_curve():
    # q(1) = 0.5, q(2) = 0.75 (interpolated), q(3) = 1
    assert grid_area(np.array([0, 1, 3]), np.array([0.0, 0.5, 1.0])) == pytest.approx(0.75)
    rng = np.random.default_rng(0)
    ks = np.array([0, 1, 2, 3, 7, 12, 30, 64])
    values = rng.random((4, len(ks)))
    full = np.arange(1, 65)
    expected = [np.mean(np.interp(full, ks, row)) for row in values]  # plain mean over k = 1 … 64
    np.testing.assert_allclose(grid_area(ks, values), expected, rtol=1e-12)
    with pytest.raises(ConfigError, match="ascending"):
        grid_area(np.array([0, 0]), np.array([0.0, 1.0]))


# ------------------------------------------------------------------ the demo model


@pytest.fixture(scope="module")
def demo():
    return load_model("fashion-resnet")


@pytest.fixture(scope="module")
def demo_pairs():
    generator = torch.Generator().manual_seed(3)
    coarse = torch.rand(3, 1, 7, 7, generator=generator)
    benign = nn.functional.interpolate(coarse, size=(28, 28), mode="bilinear", align_corners=False)
    adversarial = (benign + 0.2 * (torch.rand(3, 1, 28, 28, generator=generator) - 0.5)).clamp(0, 1)
    return benign, adversarial


@pytest.mark.parametrize("mode", ["insertion", "restoration"])
@pytest.mark.parametrize("layer", ["layer4", "layer3"])
def test_demo_layers_that_alone_feed_the_head_reproduce_both_ends(demo, demo_pairs, layer, mode):
    benign, adversarial = demo_pairs
    channels = demo.graph[layer].channels
    with torch.no_grad():
        plain_benign = torch.softmax(demo(benign), 1)
        plain_adversarial = torch.softmax(demo(adversarial), 1)
    curve = patch_curve(demo, benign, adversarial, layer, random_rankings(channels, [0, 1, 2]), mode,
                        ks=[0, 7, channels])
    start, end = (plain_benign, plain_adversarial) if mode == "insertion" else (plain_adversarial, plain_benign)
    torch.testing.assert_close(curve.probs[:, 0], start, atol=1e-6, rtol=0)
    torch.testing.assert_close(curve.probs[:, -1], end, atol=1e-6, rtol=0)
    assert feeds_head_alone(demo, layer)


def test_a_layer_inside_a_residual_block_does_not_reproduce_the_other_end(demo, demo_pairs):
    benign, adversarial = demo_pairs
    assert not feeds_head_alone(demo, "layer4.relu")
    with torch.no_grad():
        plain_adversarial = torch.softmax(demo(adversarial), 1)
    curve = patch_curve(demo, benign, adversarial, "layer4.relu", np.arange(256), ks=[0, 256])
    assert (curve.probs[:, -1] - plain_adversarial).abs().max() > 1e-4  # the skip still carries benign values


def hooked_loop(model: AnalysedModel, start: torch.Tensor, donor_image: torch.Tensor, module: nn.Module,
                order: np.ndarray, ks: list[int]) -> torch.Tensor:
    """One plain forward per k with a forward hook on ``module`` that copies the donor's top-k channels."""
    with torch.no_grad():
        kept = {}
        handle = module.register_forward_hook(lambda _m, _a, out: kept.__setitem__("donor", out.clone()))
        try:
            model.net(model.normalize(donor_image[None]))
        finally:
            handle.remove()
        rows = []
        for k in ks:
            def swap(_m, _a, out, _k=k):
                out = out.clone()
                out[:, order[:_k]] = kept["donor"][:, order[:_k]]
                return out
            handle = module.register_forward_hook(swap)
            try:
                rows.append(torch.softmax(model.net(model.normalize(start[None])), 1)[0])
            finally:
                handle.remove()
    return torch.stack(rows)


@pytest.mark.parametrize("mode", ["insertion", "restoration"])
def test_demo_curve_equals_a_plain_loop_of_hooked_forwards(demo, demo_pairs, mode):
    benign, adversarial = demo_pairs
    orders = random_rankings(128, [5, 6, 7])
    ks = [0, 1, 2, 5, 40, 128]
    curve = patch_curve(demo, benign, adversarial, "layer3", orders, mode, ks=ks, batch_size=4)  # chunks span pairs
    for p in range(3):
        start, donor = (benign[p], adversarial[p]) if mode == "insertion" else (adversarial[p], benign[p])
        expected = hooked_loop(demo, start, donor, demo.net.layer3, orders[p], ks)
        torch.testing.assert_close(curve.probs[p], expected, atol=1e-5, rtol=0)


def test_no_hook_is_left_behind(demo, demo_pairs):
    benign, adversarial = demo_pairs
    patch_curve(demo, benign[:1], adversarial[:1], "layer4.relu", np.arange(256), ks=[0, 3])
    patch_curve(demo, benign[:1], adversarial[:1], "layer3", np.arange(128), ks=[0, 3])
    for module in demo.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


# ------------------------------------------------------------------ bad input


def test_bad_input_is_refused_before_any_forward():
    model = toy(WEIGHT_A, BIAS_A)
    with pytest.raises(ConfigError, match="mode"):
        patch_curve(model, BENIGN, ADVERSARIAL, "1", [0, 1, 2], "swap")
    with pytest.raises(ConfigError, match="every channel"):
        patch_curve(model, BENIGN, ADVERSARIAL, "1", [0, 1, 1])
    with pytest.raises(ConfigError, match="every channel"):
        patch_curve(model, BENIGN, ADVERSARIAL, "1", [0, 1])
    with pytest.raises(ConfigError, match="ks"):
        patch_curve(model, BENIGN, ADVERSARIAL, "1", [0, 1, 2], ks=[0, 4])
    with pytest.raises(ConfigError, match="ks"):
        patch_curve(model, BENIGN, ADVERSARIAL, "1", [0, 1, 2], ks=[2, 1])
    with pytest.raises(ConfigError, match="differ in shape"):
        patch_curve(model, BENIGN, ADVERSARIAL.expand(2, -1, -1, -1), "1", [0, 1, 2])
    with pytest.raises(ModelError, match="no layer"):
        patch_curve(model, BENIGN, ADVERSARIAL, "nope", [0, 1, 2])
