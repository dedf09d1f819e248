"""A unit's strongest connections on hand-set convolutions (spec-002 §1.7, G-17, §6 A14) and the
profile layer lists (§1.2, §2.1: block outputs + logits, post-activation weighted layers)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from advlens.errors import ConfigError, ModelError
from advlens.models import AnalysedModel, load_model
from advlens.models.graph import build_graph
from advlens.models.fashion_cnn import FashionCNN
from advlens.profiles import default_profile_layers, profile_preset, strongest_connections, weighted_layers


def _hand_set_net() -> nn.Sequential:
    """conv(3→6) → BN → ReLU → depthwise conv(6, groups 6) → ReLU → max-pool → conv(6→7, 1×1) → global
    average pool → flatten → linear(7→3), with seeded weights (BN left as identity)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1, groups=6),
        nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 7, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(7, 3))
    with torch.no_grad():
        for module in net:
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.copy_(torch.randn_like(module.weight))
    return net.eval()


@pytest.fixture(scope="module")
def hand_model() -> AnalysedModel:
    return AnalysedModel(_hand_set_net(), mean=(0.5,) * 3, std=(0.25,) * 3, input_shape=(3, 8, 8),
                         class_names=("a", "b", "c"), spec="tests:connections")


def _expected(weight: torch.Tensor, pairs: list[tuple[int, np.ndarray]], top: int = 5) -> list[tuple[int, float, int]]:
    """(channel, Σ|kernel|, sign of the kernel sum) for each (channel, kernel), strongest first."""
    rows = [(c, float(np.abs(k).sum()), int(np.sign(k.sum()))) for c, k in pairs]
    return sorted(rows, key=lambda r: (-r[1], r[0]))[:top]


def _as_rows(connections) -> list[tuple[int, float, int]]:
    return [(c.channel, c.strength, c.sign) for c in connections]


def test_incoming_filters_are_the_argsort_of_summed_absolute_kernels(hand_model):
    weight = hand_model.net[6].weight.detach().double().numpy()  # (7, 6, 1, 1)
    for unit in range(7):
        found = strongest_connections(hand_model, "6", unit)
        expected = _expected(weight, [(c, weight[unit, c]) for c in range(6)])
        assert [r[0] for r in _as_rows(found.incoming)] == [r[0] for r in expected]
        np.testing.assert_allclose([r[1] for r in _as_rows(found.incoming)], [r[1] for r in expected])
        assert [r[2] for r in _as_rows(found.incoming)] == [r[2] for r in expected]
        order = np.argsort(np.abs(weight[unit]).sum(axis=(1, 2)))[::-1][:5]  # spec A14's formula
        assert [c.channel for c in found.incoming] == order.tolist()
        assert found.incoming_via == "6" and found.incoming_from == "3"  # through pool and ReLU


def test_a_depthwise_convolution_connects_channel_k_to_channel_k_only(hand_model):
    first = hand_model.net[0].weight.detach().double().numpy()
    depthwise = hand_model.net[3].weight.detach().double().numpy()  # (6, 1, 3, 3)
    for unit in range(6):
        found = strongest_connections(hand_model, "4", unit)  # the depthwise conv's ReLU
        assert found.incoming_via == "3" and found.incoming_from == "0"
        assert _as_rows(found.incoming) == [(unit, pytest.approx(float(np.abs(depthwise[unit]).sum())),
                                             int(np.sign(depthwise[unit].sum())))]
        into = strongest_connections(hand_model, "2", unit)  # the first conv's post-activation output
        assert into.outgoing_to == "3"
        assert [c.channel for c in into.outgoing] == [unit]
        assert [c.channel for c in into.incoming] == [r[0] for r in _expected(first, [(c, first[unit, c])
                                                                                     for c in range(3)])]


def test_outgoing_connections_read_the_next_weighted_layer(hand_model):
    pointwise = hand_model.net[6].weight.detach().double().numpy()  # (7, 6, 1, 1)
    for unit in range(6):
        found = strongest_connections(hand_model, "5", unit)  # the max-pool before the 1×1 conv
        expected = _expected(pointwise, [(m, pointwise[m, unit]) for m in range(7)])
        assert [c.channel for c in found.outgoing] == [r[0] for r in expected]
        assert found.outgoing_to == "6"


def test_linear_layer_after_global_pooling_connects_channel_to_feature(hand_model):
    linear = hand_model.net[9].weight.detach().double().numpy()  # (3, 7)
    found = strongest_connections(hand_model, "6", 4, top=2)
    assert found.outgoing_to == "9"
    expected = sorted(range(3), key=lambda m: -abs(linear[m, 4]))[:2]
    assert [c.channel for c in found.outgoing] == expected
    logits = strongest_connections(hand_model, "9", 1, top=3)
    assert logits.incoming_from == "6" and logits.outgoing == () and logits.outgoing_to is None
    assert [c.channel for c in logits.incoming] == sorted(range(7), key=lambda c: -abs(linear[1, c]))[:3]


def test_linear_layer_after_a_flatten_of_maps_sums_each_channels_positions():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).eval()
    # AnalysedModel wants a head on pooled maps; the connections read only the graph and the weights
    model = SimpleNamespace(net=net, graph=build_graph(net, torch.zeros(2, 1, 4, 4)))
    weight = net[3].weight.detach().double().numpy().reshape(2, 3, 16)  # torch.flatten is channel-major
    found = strongest_connections(model, "1", 2)
    expected = sorted(range(2), key=lambda m: -np.abs(weight[m, 2]).sum())
    assert [c.channel for c in found.outgoing] == expected
    np.testing.assert_allclose([c.strength for c in found.outgoing], [np.abs(weight[m, 2]).sum() for m in expected])


def test_a_resnet_block_output_passes_its_channels_through_the_residual_add():
    model = load_model("fashion-resnet")
    found = strongest_connections(model, "layer2", 5)
    assert found.incoming_via == "layer2.conv2" and found.incoming_from == "layer2.conv1"
    assert found.outgoing_to == "layer3.conv1"  # the main path, not the projection shortcut
    conv2 = model.net.layer2.conv2.weight.detach().double().numpy()
    order = np.argsort(np.abs(conv2[5]).sum(axis=(1, 2)))[::-1][:5]
    assert [c.channel for c in found.incoming] == order.tolist()


def test_bad_units_and_layers_are_refused(hand_model):
    with pytest.raises(ConfigError, match="has 6 units"):
        strongest_connections(hand_model, "4", 6)
    with pytest.raises(ModelError, match="no layer named"):
        strongest_connections(hand_model, "nope", 0)
    assert strongest_connections(hand_model, "input", 0).incoming == ()


# --------------------------------------------------------------------------------------- layer lists

def test_default_layers_of_a_resnet_are_its_block_outputs_and_the_logits():
    graph = load_model("fashion-resnet").graph
    assert default_profile_layers(graph) == ["layer1", "layer2", "layer3", "layer4", "fc"]
    weighted = weighted_layers(graph)
    assert weighted[0] == "stem" and weighted[-1] == "fc"  # stem conv → bn → ReLU ends at the ReLU
    assert "layer2.relu" in weighted and "layer2.bn2" in weighted  # conv2 ends at its BN before the add
    assert not any("shortcut" in name for name in weighted)  # off the main path
    assert graph.is_sequential(weighted)


def test_default_layers_of_the_paper_cnn_are_its_post_activation_weighted_layers():
    model = AnalysedModel(FashionCNN(), mean=(0.286,), std=(0.353,), input_shape=(1, 28, 28),
                          class_names=tuple("abcdefghij"), spec="tests:fashion-cnn")
    assert default_profile_layers(model.graph) == ["relu1", "relu2", "relu3", "relu4", "fc"]
    assert profile_preset(model.graph, "blocks") == []
    with pytest.raises(ConfigError, match="unknown profile preset"):
        profile_preset(model.graph, "all")
