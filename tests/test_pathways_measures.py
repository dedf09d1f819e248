"""The pure pathway measures (spec-004 §2–§4, §8): importance, rank percentile, neuron groups,
excitation, highlight modes, aggregation, and the default layers / joining convolution of the demo
model. Expected values come from hand-solved toys and plain loops, never from the functions tested."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import torch
from torch import nn

from advlens.models import AnalysedModel
from advlens.models.registry import load_model
from advlens.pathways import (GROUP_COLORS, GROUPS, HIGHLIGHT_MODES, default_pathway_layers, excitation, highlight,
                              joining_convolution, median_over, neuron_importance, rank_percentile, select_neurons)

# ------------------------------------------------------------------------------ a hand-set toy network

# 1×1 convolution of 3 input channels into 4 channels, then ReLU:
#   ch0 = x0, ch1 = 2·x1, ch2 = x0 − x1 + 0.2, ch3 = x2 − 0.5
WEIGHT = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, -1.0, 0.0], [0.0, 0.0, 1.0]]
BIAS = [0.0, 0.0, 0.2, -0.5]


def toy_model() -> AnalysedModel:
    conv = nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(WEIGHT).view(4, 3, 1, 1))
        conv.bias.copy_(torch.tensor(BIAS))
    net = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    return AnalysedModel(net, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), input_shape=(3, 1, 2),
                         class_names=("a", "b", "c"))


def image(x0, x1, x2) -> list:
    """One 3×1×2 image from its channels' two pixels."""
    return [[x0], [x1], [x2]]


SETS = {  # each image: (x0 pixels, x1 pixels, x2 pixels)
    "original": [image([0.2, 0.9], [0.1, 0.3], [0.5, 0.6]),
                 image([0.8, 0.4], [0.5, 0.0], [0.0, 0.2]),
                 image([0.1, 0.7], [0.2, 0.2], [0.9, 0.1])],
    "target": [image([0.0, 0.1], [0.4, 0.1], [0.3, 0.3]),
               image([0.3, 0.0], [0.15, 0.0], [1.0, 0.0])],
    "weak": [image([0.5, 0.5], [0.3, 0.3], [0.0, 0.0])],
    "strong": [image([0.3, 0.3], [0.0, 0.0], [0.0, 0.0]),
               image([0.2, 0.2], [0.0, 0.0], [0.9, 0.9])],
}
# by hand: per image the max over the two positions of relu(ch), then the median over the set
HAND_IMPORTANCE = {
    # ch0: .9 .8 .7 → .8 · ch1: .6 1 .4 → .6 · ch2: max(.3,.8)=.8, max(.5,.6)=.6, max(.1,.7)=.7 → .7
    # ch3: max(0,.1)=.1, max(0,0)=0, max(.4,0)=.4 → .1
    "original": [0.8, 0.6, 0.7, 0.1],
    # ch0: .1 .3 → .2 · ch1: .8 .3 → .55 · ch2: max(0,.2)=.2, max(.35,.2)=.35 → .275 · ch3: 0 .5 → .25
    "target": [0.2, 0.55, 0.275, 0.25],
    # ch0 .5 · ch1 .6 · ch2 .4 · ch3 0
    "weak": [0.5, 0.6, 0.4, 0.0],
    # ch0: .3 .2 → .25 · ch1: 0 0 → 0 · ch2: .5 .4 → .45 · ch3: 0 .4 → .2
    "strong": [0.25, 0.0, 0.45, 0.2],
}


def loop_importance(images: list) -> list[float]:
    """The median over images of each channel's maximum, by plain loops over positions."""
    result = []
    for d in range(4):
        maxima = []
        for img in images:
            values = []
            for p in range(2):
                z = BIAS[d] + sum(WEIGHT[d][c] * img[c][0][p] for c in range(3))
                values.append(max(z, 0.0))
            maxima.append(max(values))
        result.append(statistics.median(maxima))
    return result


@pytest.fixture(scope="module")
def toy_importance() -> dict[str, np.ndarray]:
    model = toy_model()
    return {name: neuron_importance(model.capture(torch.tensor(images), ["1"], reduce="max")["1"])
            for name, images in SETS.items()}


def test_importance_is_the_median_of_spatial_maxima(toy_importance):
    for name, images in SETS.items():
        np.testing.assert_allclose(toy_importance[name], HAND_IMPORTANCE[name], atol=1e-6)
        np.testing.assert_allclose(toy_importance[name], loop_importance(images), atol=1e-6)
        assert toy_importance[name].dtype == np.float64


def test_groups_of_the_toy_network(toy_importance):
    # k_benign 2: original top {0 (.8), 2 (.7)}; target top {1 (.55), 2 (.275)}
    # k_attack 1: weak → 1 (.6, in target top), strong → 2 (.45, in both) → no attack-only
    groups = select_neurons(toy_importance["original"], toy_importance["target"],
                            {1: toy_importance["weak"], 8: toy_importance["strong"]}, k_benign=2, k_attack=1)
    assert groups.original_only.tolist() == [0]
    assert groups.both.tolist() == [2]
    assert groups.target_only.tolist() == [1]
    assert groups.attack_only.tolist() == []
    groups = select_neurons(toy_importance["original"], toy_importance["target"],
                            {1: toy_importance["weak"], 8: toy_importance["strong"]}, k_benign=1, k_attack=2)
    # k_benign 1: original {0}, target {1}; k_attack 2: weak {1 (.6), 0 (.5)}, strong {2 (.45), 0 (.25)}
    # → attack-only {2}
    assert (groups.original_only.tolist(), groups.both.tolist(), groups.target_only.tolist(),
            groups.attack_only.tolist()) == ([0], [], [1], [2])
    assert groups.attacked_top[1].tolist() == [0, 1] and groups.attacked_top[8].tolist() == [0, 2]


def test_importance_refuses_an_empty_set_and_bad_shapes():
    with pytest.raises(ValueError, match="at least one image"):
        neuron_importance(np.zeros((0, 5)))
    with pytest.raises(ValueError, match="2 dimension"):
        neuron_importance(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        neuron_importance(np.array([[1.0, np.nan]]))
    # torch input works the same as numpy (even count: mean of the two middle values)
    np.testing.assert_allclose(neuron_importance(torch.tensor([[1.0, 4.0], [3.0, 0.0]])), [2.0, 2.0])


# ------------------------------------------------------------------------------------ rank percentile


def test_rank_percentile_best_is_one_and_ties_share_the_higher_rank():
    # ascending ranks: 0.1 → 1, 0.5/0.5 → both 3 (ranks 2 and 3, the higher), 0.9 → 4 ; C = 4
    np.testing.assert_allclose(rank_percentile([0.5, 0.1, 0.9, 0.5]), [0.75, 0.25, 1.0, 0.75])
    np.testing.assert_allclose(rank_percentile(np.array([2.0, 2.0])), [1.0, 1.0])
    with pytest.raises(ValueError):
        rank_percentile([])


# ------------------------------------------------------------------------------- top-k rules and groups


def crafted_tables():
    """12 channels; ties on purpose. Expected tops worked out by hand in the test below."""
    original = np.array([9, 8, 8, 7, 1, 1, 1, 0, 0, 0, 0, 0], dtype=float)
    target = np.array([0, 8, 0, 7, 7, 6, 0, 0, 0, 0, 0, 0], dtype=float)
    attacked = {
        0.1: np.array([0, 0, 0, 0, 0, 0, 5, 5, 5, 0, 0, 0], dtype=float),  # tie 6, 7, 8 at 5
        0.3: np.array([0, 9, 0, 0, 0, 0, 0, 0, 3, 3, 4, 0], dtype=float),
        0.5: np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2], dtype=float),  # 11, then ties from 0
    }
    return original, target, attacked


def test_top_k_rules_ties_union_and_disjointness():
    original, target, attacked = crafted_tables()
    groups = select_neurons(original, target, attacked, k_benign=3, k_attack=2)
    # original top-3: 0 (9), then 1 and 2 tied at 8 → both fit: {0, 1, 2}
    # target top-3: 1 (8), then 3 and 4 tied at 7 → both fit: {1, 3, 4}
    # attacked top-2: 0.1 → 6, 7 (lower ids of the 5-tie); 0.3 → 1, 10; 0.5 → 11, 0
    assert groups.original_only.tolist() == [0, 2]
    assert groups.both.tolist() == [1]
    assert groups.target_only.tolist() == [3, 4]
    assert groups.attack_only.tolist() == [6, 7, 10, 11]
    assert {s: t.tolist() for s, t in groups.attacked_top.items()} == {0.1: [6, 7], 0.3: [1, 10], 0.5: [0, 11]}
    assert groups.drawn.tolist() == [0, 1, 2, 3, 4, 6, 7, 10, 11]
    seen = [set(groups.members(g).tolist()) for g in GROUPS]
    assert sum(map(len, seen)) == len(set().union(*seen)) == len(groups)
    assert [groups.group_of(c) for c in (0, 1, 3, 7, 5)] == ["original", "both", "target", "attack", None]

    # the tie at the cut: top-2 of the original takes 0 and then 1 (8) before 2 (8)
    groups = select_neurons(original, target, attacked, k_benign=2, k_attack=1)
    # original {0, 1}; target {1, 3} (3 before 4 at 7); attacked top-1: 6, 1, 11
    assert (groups.original_only.tolist(), groups.both.tolist(), groups.target_only.tolist(),
            groups.attack_only.tolist()) == ([0], [1], [3], [6, 11])


def test_default_k_is_10_10_5_and_k_beyond_c_takes_all():
    rng = np.random.default_rng(0)
    original, target = rng.random(40), rng.random(40)
    attacked = {s: rng.random(40) for s in (1, 2, 4)}
    groups = select_neurons(original, target, attacked)
    top = lambda v, k: set(sorted(range(40), key=lambda c: (-v[c], c))[:k])  # noqa: E731 - plain reference
    o, t = top(original, 10), top(target, 10)
    a = set().union(*(top(v, 5) for v in attacked.values()))
    assert set(groups.original_only) == o - t and set(groups.both) == o & t and set(groups.target_only) == t - o
    assert set(groups.attack_only) == a - o - t
    small = select_neurons([3.0, 1.0, 2.0], [0.0, 1.0, 0.0], {}, k_benign=10, k_attack=5)
    assert small.original_only.tolist() == [] and small.both.tolist() == [0, 1, 2]
    assert small.attack_only.tolist() == []


def test_select_neurons_refuses_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        select_neurons([1.0, np.nan], [1.0, 2.0], {})
    with pytest.raises(ValueError, match="channels"):
        select_neurons([1.0, 2.0], [1.0, 2.0, 3.0], {})
    with pytest.raises(ValueError, match="strength 4"):
        select_neurons([1.0, 2.0], [1.0, 2.0], {4: [1.0]})
    with pytest.raises(ValueError, match="k_attack"):
        select_neurons([1.0, 2.0], [1.0, 2.0], {}, k_attack=-1)


def test_group_constants():
    assert GROUPS == ("original", "both", "target", "attack")
    assert GROUP_COLORS == {"original": "#abdda4", "both": "#fdae61", "target": "#2b83ba", "attack": "#d7191c"}


# -------------------------------------------------------------------------------- excitation, highlight


def test_excitation_sign_of_an_attack_that_scales_a_channel():
    model = toy_model()
    benign = torch.tensor(SETS["original"])
    attacked = benign.clone()
    attacked[:, 1] *= 1.5   # input channel 1 up: ch1 = 2·x1 up, ch2 = x0 − x1 + .2 down
    benign_importance = neuron_importance(model.capture(benign, "1", reduce="max")["1"])
    attacked_importance = neuron_importance(model.capture(attacked, "1", reduce="max")["1"])
    change = excitation(attacked_importance, benign_importance)
    # ch1 by hand: maxima 2·1.5·(.3, .5, .2) = .9, 1.5, .6 → median .9; benign .6 → +.3
    assert change[1] == pytest.approx(0.3, abs=1e-6)
    # ch2 by hand: x1 × 1.5 → maxima max(.25,.75)=.75, max(.25,.6)=.6, max(0,.6)=.6 → .6; benign .7 → −.1
    assert change[2] == pytest.approx(-0.1, abs=1e-6)
    assert change[0] == pytest.approx(0.0, abs=1e-7) and change[3] == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="shape"):
        excitation([1.0, 2.0], [1.0])


# 10 channels; excitation has 3 positive, 4 negative, 3 zero values
IMPORTANCE = np.array([5.0, 1.0, 9.0, 3.0, 9.0, 0.0, 2.0, 7.0, 4.0, 6.0])
EXCITATION = np.array([0.5, -2.0, 0.0, 3.0, -0.1, 0.0, -3.0, 0.0, 3.0, -1.0])


@pytest.mark.parametrize("mode,fraction,expected", [
    # ceil(.2·10) = 2: importance 9 (2) and 9 (4) tie → both
    ("activated", 0.2, [2, 4]),
    # ceil(.3·10) = 3 (not 4): 9, 9, 7
    ("activated", 0.3, [2, 4, 7]),
    # ceil(.7·10) = 7
    ("activated", 0.7, [0, 2, 3, 4, 7, 8, 9]),
    # |excitation|: 3 (3), 3 (6), 3 (8) tie → lowest ids first, 2 of them: 3, 6
    ("changed", 0.2, [3, 6]),
    ("changed", 0.5, [1, 3, 6, 8, 9]),
    # only the 7 channels whose excitation is not 0 ever count as changed
    ("changed", 1.0, [0, 1, 3, 4, 6, 8, 9]),
    # positive only: 3 (3), 3 (8); then 0.5 (0); never a zero or negative channel
    ("excited", 0.2, [3, 8]),
    ("excited", 1.0, [0, 3, 8]),
    # most negative: −3 (6), −2 (1); with 100% only the four negative ones
    ("inhibited", 0.2, [1, 6]),
    ("inhibited", 1.0, [1, 4, 6, 9]),
    # ceil(.01·10) would be 1: at least one when x > 0; none at 0
    ("excited", 0.01, [3]),
    ("activated", 0.0, []),
])
def test_highlight_modes(mode, fraction, expected):
    mask = highlight({"importance": IMPORTANCE, "excitation": EXCITATION}, mode, fraction)
    assert mask.dtype == bool and mask.shape == (10,)
    assert np.flatnonzero(mask).tolist() == expected


def test_highlight_count_is_ceil_without_floating_point_overshoot():
    # .07 × 100 is 7.000000000000001 and .14 × 50 is 7.000000000000001 in floating point: still 7 channels
    assert highlight({"importance": np.arange(100.0)}, "activated", 0.07).sum() == 7
    assert np.flatnonzero(highlight({"importance": np.arange(50.0)}, "activated", 0.14)).tolist() == list(range(43, 50))
    assert highlight({"importance": np.arange(10.0)}, "activated", 0.21).sum() == 3  # ceil(2.1)


def test_highlight_refuses_bad_input():
    assert HIGHLIGHT_MODES == ("activated", "changed", "excited", "inhibited")
    with pytest.raises(ValueError, match="mode"):
        highlight({"importance": IMPORTANCE}, "brightest")
    with pytest.raises(ValueError, match="excitation"):
        highlight({"importance": IMPORTANCE}, "excited")
    with pytest.raises(ValueError, match="top_fraction"):
        highlight({"importance": IMPORTANCE}, "activated", 1.5)
    # a mode needs only its own key
    assert highlight({"importance": IMPORTANCE}, "activated", 0.1).sum() == 1


def test_median_over_images():
    influence = np.array([[[1.0, 5.0]], [[3.0, -1.0]], [[2.0, 0.0]]])  # (3, 1, 2)
    np.testing.assert_allclose(median_over(influence), [[2.0, 0.0]])
    np.testing.assert_allclose(median_over(torch.tensor([[1.0], [4.0]])), [2.5])
    with pytest.raises(ValueError, match="at least one image"):
        median_over(np.zeros((0, 3)))


# ---------------------------------------------------------------------------------- the demo model


@pytest.fixture(scope="module")
def demo():
    return load_model("fashion-resnet")


def test_default_pathway_layers_of_the_demo_model(demo):
    expected = ["stem", "layer1.relu", "layer1", "layer2.relu", "layer2", "layer3.relu", "layer3", "layer4.relu",
                "layer4"]
    assert default_pathway_layers(demo.graph) == expected == demo.graph.activation_layers()
    assert sum(demo.graph[name].channels for name in expected) == 992


def test_joining_convolution_of_the_demo_model(demo):
    graph = demo.graph
    assert joining_convolution(graph, "stem", "layer1.relu") == "layer1.conv1"
    assert joining_convolution(graph, "layer1", "layer2.relu") == "layer2.conv1"
    assert joining_convolution(graph, "layer3", "layer4.relu") == "layer4.conv1"
    assert joining_convolution(graph, "layer1.relu", "layer1") is None       # the skip connection adds
    assert joining_convolution(graph, "layer2.relu", "layer2") is None
    assert joining_convolution(graph, "stem", "layer2.relu") is None         # two convolutions and an add
    assert joining_convolution(graph, "stem", "layer1.bn1") == "layer1.conv1"  # norm after the conv is fine
    assert isinstance(demo.net.get_submodule("layer1.conv1"), nn.Conv2d)


def test_joining_convolution_needs_one_conv_reading_the_source():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2),
                        nn.ReLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
    graph = AnalysedModel(net, mean=(0.0,), std=(1.0,), input_shape=(1, 4, 4), class_names=("a", "b", "c")).graph
    assert joining_convolution(graph, "1", "4") == "2"    # conv, norm, ReLU
    assert joining_convolution(graph, "1", "3") == "2"
    assert joining_convolution(graph, "1", "5") is None   # max pooling after the conv
    assert joining_convolution(graph, "0", "4") is None   # the conv reads ReLU(source), not the source
    assert joining_convolution(graph, "2", "4") is None   # no convolution at all (norm, ReLU)
    assert default_pathway_layers(graph) == ["1", "4"]     # plain chain: the spatial activation layers


def test_plain_chain_and_non_resnet_defaults():
    chain = toy_model()
    assert default_pathway_layers(chain.graph) == ["1"]
