"""AnalysedModel on toy networks with hand-set weights, so every expected number is exact."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from advlens.errors import ModelError
from advlens.models.adapter import AnalysedModel, find_module, recording, trace_layers
from advlens.models.fashion_resnet import FashionResNet


def toy_net() -> nn.Sequential:
    """Conv2d(1→2, k=1) → ReLU → global average pool → Flatten → Linear(2→3), weights set by hand.

    Channel 0 is relu(z), channel 1 is relu(0.5 - z); logits are (p0, p1 + 1, p0 - p1 - 0.5).
    """
    net = nn.Sequential(OrderedDict(
        conv=nn.Conv2d(1, 2, kernel_size=1),
        relu=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1),
        flat=nn.Flatten(),
        fc=nn.Linear(2, 3),
    ))
    with torch.no_grad():
        net.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        net.conv.bias.copy_(torch.tensor([0.0, 0.5]))
        net.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
        net.fc.bias.copy_(torch.tensor([0.0, 1.0, -0.5]))
    return net


def toy_model(net: nn.Module | None = None, **kwargs) -> AnalysedModel:
    return AnalysedModel(net if net is not None else toy_net(), mean=(0.5,), std=(0.25,),
                         input_shape=(1, 2, 2), class_names=("a", "b", "c"), **kwargs)


# x = [[0, .25], [.5, 1]] normalizes to z = [[-2, -1], [0, 2]]:
# channel 0: relu(z) = [[0, 0], [0, 2]] → mean 0.5; channel 1: relu(.5 - z) = [[2.5, 1.5], [.5, 0]] → mean 1.125
X = torch.tensor([[[[0.0, 0.25], [0.5, 1.0]]]])
EXPECTED_MAPS = torch.tensor([[[[0.0, 0.0], [0.0, 2.0]], [[2.5, 1.5], [0.5, 0.0]]]])
EXPECTED_POOLED = torch.tensor([[0.5, 1.125]])
EXPECTED_LOGITS = torch.tensor([[0.5, 2.125, -1.125]])


def assert_no_hooks(module: nn.Module) -> None:
    for name, sub in module.named_modules():
        assert not sub._forward_hooks, f"forward hook left on {name or 'root'}"
        assert not sub._forward_pre_hooks, f"forward pre-hook left on {name or 'root'}"


class Bomb(nn.Module):
    """Identity until armed; then its forward raises."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.armed:
            raise RuntimeError("boom")
        return x


# ------------------------------------------------------------------------------------------ normalization


def test_forward_applies_normalization_inside():
    model = toy_model()
    net = toy_net()
    logits = model(X)
    assert torch.equal(logits, EXPECTED_LOGITS)
    assert torch.equal(logits, net((X - 0.5) / 0.25))
    assert not torch.equal(logits, net(X))  # the un-normalized call differs
    assert torch.equal(model.normalize(X), (X - 0.5) / 0.25)


def test_per_channel_normalization_broadcasts_over_channels():
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3, padding=1), relu=nn.ReLU(),
                                    pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(4, 2)))
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    model = AnalysedModel(net, mean, std, (3, 5, 5), ("x", "y"))
    x = torch.rand(2, 3, 5, 5)
    reference = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(model(x), net(reference), rtol=0, atol=1e-6)
    assert torch.equal(model.mean.flatten(), torch.tensor(mean)) and torch.equal(model.std.flatten(), torch.tensor(std))


def test_normalization_length_must_match_channels():
    with pytest.raises(ModelError, match="3 channels"):
        AnalysedModel(toy_net(), (0.5,), (0.25,), (3, 2, 2), ("a", "b", "c"))


# --------------------------------------------------------------------------------------- layer detection


def test_default_layers_for_toy():
    model = toy_model()
    assert model.analysed_layer_name == "relu"  # last module with a spatial (h·w > 1) output
    assert model.dense_layer_name == "fc"
    assert model.dense is model.net.fc
    assert model.num_classes == 3 and model.class_names == ("a", "b", "c") and model.input_shape == (1, 2, 2)


class Reordered(nn.Module):
    """Registration order differs from execution order, to pin down 'last executed'."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(2, 3)        # registered first, runs last
        self.conv_b = nn.Conv2d(2, 2, 1)   # registered before conv_a, runs after it
        self.conv_a = nn.Conv2d(1, 2, 1)
        self.aux = nn.Linear(2, 3)         # registered after head, runs before it
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv_b(self.conv_a(x))).flatten(1)
        return 0.0 * self.aux(x) + self.head(x)


def test_default_layers_follow_execution_order():
    model = AnalysedModel(Reordered(), (0.0,), (1.0,), (1, 3, 3), ("a", "b", "c"))
    assert model.analysed_layer_name == "conv_b"
    assert model.dense_layer_name == "head"


def test_nested_block_is_chosen_when_it_finishes_last():
    net = nn.Sequential(OrderedDict(
        block=nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU()),
        pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(2, 3)))
    model = AnalysedModel(net, (0.0,), (1.0,), (1, 4, 4), ("a", "b", "c"))
    assert model.analysed_layer_name == "block"
    assert [name for name, _, _ in trace_layers(net, torch.zeros(1, 1, 4, 4))] == \
        ["block.0", "block.1", "block", "pool", "flat", "fc"]


def test_explicit_layers_are_used():
    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 2, kernel_size=1), relu=nn.ReLU(), drop=nn.Dropout(0.5),
                                    pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(2, 3)))
    reference = toy_net()
    net.conv.load_state_dict(reference.conv.state_dict())
    net.fc.load_state_dict(reference.fc.state_dict())
    assert toy_model(net).analysed_layer_name == "drop"  # the last layer whose pooling is the dense input
    model = toy_model(net, analysed_layer="relu")
    assert model.analysed_layer_name == "relu"
    assert torch.equal(model.activations(X).feature_maps, EXPECTED_MAPS)


def test_unknown_analysed_layer_lists_conv_layers():
    with pytest.raises(ModelError, match="no layer named 'layer9'") as info:
        toy_model(analysed_layer="layer9")
    assert "conv" in str(info.value)
    with pytest.raises(ModelError, match="convolutional layers are: conv_a"):
        find_module(nn.Sequential(OrderedDict(conv_a=nn.Conv2d(1, 1, 1))), "nope")


def test_dense_layer_must_be_linear():
    with pytest.raises(ModelError, match="not nn.Linear"):
        toy_model(dense_layer="conv")


def test_model_without_linear_or_spatial_layer():
    no_linear = nn.Sequential(nn.Conv2d(1, 3, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ModelError, match="no nn.Linear"):
        AnalysedModel(no_linear, (0.0,), (1.0,), (1, 2, 2), ("a", "b", "c"))
    no_spatial = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(ModelError, match="spatial"):
        AnalysedModel(no_spatial, (0.0,), (1.0,), (1, 2, 2), ("a", "b", "c"))


def test_class_count_mismatch_mentions_dataset():
    with pytest.raises(ModelError, match="dataset") as info:
        AnalysedModel(toy_net(), (0.5,), (0.25,), (1, 2, 2), tuple("abcdefghij"))
    assert "3 classes" in str(info.value) and "10 class names" in str(info.value)


# ------------------------------------------------------------------------------------------ activations


def test_activations_exact_values():
    model = toy_model()
    out = model.activations(X)
    assert torch.equal(out.feature_maps, EXPECTED_MAPS)
    assert torch.equal(out.pooled, EXPECTED_POOLED)
    assert torch.equal(out.logits, EXPECTED_LOGITS)
    assert torch.equal(out.pooled, out.feature_maps.mean(dim=(2, 3)))
    assert torch.equal(out.logits, model.logits_from_pooled(out.pooled))
    assert torch.equal(out.logits, out.pooled @ model.dense_weight.T + model.dense_bias)


def test_activations_batch_and_without_maps():
    model = toy_model()
    x = torch.cat([X, 1 - X, torch.zeros_like(X)])
    out = model.activations(x, feature_maps=False)
    assert out.feature_maps is None
    assert out.pooled.shape == (3, 2) and out.logits.shape == (3, 3)
    assert torch.equal(out.logits[:1], EXPECTED_LOGITS)
    assert torch.equal(out.logits, model(x))


def test_dense_weight_and_bias():
    model = toy_model()
    assert torch.equal(model.dense_weight, torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
    assert torch.equal(model.dense_bias, torch.tensor([0.0, 1.0, -0.5]))
    assert not model.dense_weight.requires_grad and not model.dense_bias.requires_grad
    net = toy_net()
    net.fc = nn.Linear(2, 3, bias=False)
    assert torch.equal(toy_model(net).dense_bias, torch.zeros(3))


def test_check_input_shapes():
    model = toy_model()
    model.check_input(torch.zeros(5, 1, 2, 2))
    for bad in (torch.zeros(1, 2, 2), torch.zeros(1, 3, 2, 2), torch.zeros(1, 1, 3, 2)):
        with pytest.raises(ModelError, match="N×1×2×2"):
            model.check_input(bad)
    with pytest.raises(ModelError, match=r"\(1, 1, 4, 4\)"):
        model.activations(torch.zeros(1, 1, 4, 4))


# ------------------------------------------------------------------------------------------------- hooks


def test_no_hook_left_after_construction_and_activations():
    model = toy_model()
    assert_no_hooks(model)
    model.activations(X)
    model.activations(X, feature_maps=False)
    assert_no_hooks(model)


def test_no_hook_left_when_forward_raises():
    net = toy_net()
    net.add_module("bomb", Bomb())  # after fc: both hooks have fired when it raises
    model = toy_model(net)
    assert model.analysed_layer_name == "relu" and model.dense_layer_name == "fc"
    net.bomb.armed = True
    with pytest.raises(RuntimeError, match="boom"):
        model.activations(X)
    assert_no_hooks(model)


def test_no_hook_left_when_forward_raises_before_hooked_layers_run():
    net = nn.Sequential(OrderedDict(bomb=Bomb(), conv=nn.Conv2d(1, 2, 1), relu=nn.ReLU(),
                                    pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(2, 3)))
    model = toy_model(net)
    net.bomb.armed = True
    with pytest.raises(RuntimeError, match="boom"):
        model.activations(X)
    assert_no_hooks(model)


def test_no_hook_left_when_tracing_raises():
    net = toy_net()
    bomb = Bomb()
    bomb.armed = True
    net.add_module("bomb", bomb)
    with pytest.raises(ModelError, match="fails on a probe batch of shape 2×1×2×2: RuntimeError: boom"):
        toy_model(net)
    assert_no_hooks(net)


def test_recording_outputs_inputs_and_cleanup():
    net = toy_net()
    z = (X - 0.5) / 0.25
    with recording({"relu": net.relu, "fc": net.fc}) as outputs, recording({"fc": net.fc}, inputs=True) as inputs:
        net(z)
    assert torch.equal(outputs["relu"], EXPECTED_MAPS)
    assert torch.equal(outputs["fc"], EXPECTED_LOGITS)
    assert torch.equal(inputs["fc"], EXPECTED_POOLED)
    assert_no_hooks(net)
    with pytest.raises(KeyError):
        with recording({"relu": net.relu}):
            raise KeyError("inside the block")
    assert_no_hooks(net)


# ------------------------------------------------------------------------------------------------- modes


def test_train_keeps_eval_mode_and_batchnorm_statistics():
    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 2, 1), bn=nn.BatchNorm2d(2), relu=nn.ReLU(),
                                    pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(2, 3)))
    net.train()
    model = toy_model(net)
    assert not any(m.training for m in model.modules())
    before = net.bn.running_mean.clone(), net.bn.running_var.clone()
    returned = model.train()
    assert returned is model
    assert not any(m.training for m in model.modules())
    model(torch.rand(4, 1, 2, 2))
    model.activations(torch.rand(4, 1, 2, 2))
    assert torch.equal(net.bn.running_mean, before[0]) and torch.equal(net.bn.running_var, before[1])
    assert int(net.bn.num_batches_tracked) == 0


# ------------------------------------------------------------- one meaning per neuron id (issue 7, item 1)


def fashion_model(**kwargs) -> AnalysedModel:
    """The demo architecture, freshly initialised: bias-free convs, identity batch norms and no
    normalization shift, so an all-zero probe would make every layer zero and pass any check; only a
    random probe tells the layers apart."""
    torch.manual_seed(0)
    return AnalysedModel(FashionResNet(), (0.0,), (1.0,), (1, 28, 28), [str(c) for c in range(10)], **kwargs)


def test_analysed_layer_of_another_width_is_refused():
    with pytest.raises(ModelError) as info:
        fashion_model(analysed_layer="layer3")
    message = str(info.value)
    assert "analysed layer 'layer3' (128 maps of 7×7)" in message
    assert "dense layer 'fc' (256 inputs)" in message
    assert message.endswith("layers that would work: layer4")


@pytest.mark.parametrize("layer", ["layer4.relu", "layer4.bn2", "layer4.conv1", "layer4.shortcut"])
def test_analysed_layer_of_equal_width_that_does_not_feed_the_pooling_is_refused(layer):
    with pytest.raises(ModelError) as info:
        fashion_model(analysed_layer=layer)
    message = str(info.value)
    assert f"analysed layer '{layer}' (256 maps of 7×7)" in message and "'fc' (256 inputs)" in message
    assert "not the global average or max pooling" in message and message.endswith("would work: layer4")


def test_default_analysed_layer_feeds_the_pooling():
    model = fashion_model()
    assert model.analysed_layer_name == "layer4" and model.pooling == "mean"
    out = model.activations(torch.rand(3, 1, 28, 28))
    torch.testing.assert_close(out.pooled, out.feature_maps.mean(dim=(2, 3)), rtol=0, atol=1e-6)
    assert fashion_model(analysed_layer="layer4").analysed_layer_name == "layer4"


class MaxPooled(nn.Module):
    """A user model whose dense layer reads global max pooling, with an unused side branch that runs last."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(4, 3)
        self.side = nn.Conv2d(4, 4, 3, padding=1)  # same width as the dense input, feeds nothing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = torch.relu(self.conv(x))
        logits = self.fc(self.pool(maps).flatten(1))
        self.side(maps)
        return logits


def test_max_pooled_user_model_and_a_side_branch_that_runs_last():
    torch.manual_seed(0)
    model = AnalysedModel(MaxPooled(), (0.5,), (0.25,), (1, 6, 6), ("a", "b", "c"))
    # the last spatial layer in execution order is 'side'; the one the dense layer reads is 'relu'
    assert model.graph.names()[-1] == "side"
    assert model.analysed_layer_name == "relu" and model.pooling == "max"
    out = model.activations(torch.rand(4, 1, 6, 6))
    assert torch.equal(out.pooled, out.feature_maps.amax(dim=(2, 3)))
    # max pooling: the conv's channel maxima are positive here, so they pass through the ReLU unchanged
    with pytest.raises(ModelError, match=r"'side' \(4 maps of 6×6\).*layers that would work: conv, relu$"):
        AnalysedModel(MaxPooled(), (0.5,), (0.25,), (1, 6, 6), ("a", "b", "c"), analysed_layer="side")


def test_no_layer_feeds_the_dense_layer():
    class Hidden(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 1)
            self.hidden = nn.Linear(2, 2)
            self.head = nn.Linear(2, 3)

        def forward(self, x):
            return self.head(torch.tanh(self.hidden(self.conv(x).mean((2, 3)))))

    with pytest.raises(ModelError, match=r"input of the dense layer 'head' \(2-d\) is not the global average or "
                                         r"max pooling of any layer's feature maps"):
        AnalysedModel(Hidden(), (0.0,), (1.0,), (1, 3, 3), ("a", "b", "c"))
    with pytest.raises(ModelError, match="'conv' .*no layer's pooled maps are the dense input"):
        AnalysedModel(Hidden(), (0.0,), (1.0,), (1, 3, 3), ("a", "b", "c"), analysed_layer="conv")


def test_analysed_layer_may_be_a_reused_module_call_or_functional_op():
    class Reused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 3, 3, padding=1)
            self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
            self.act = nn.ReLU()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(torch.relu(self.act(self.conv2(self.act(self.conv1(x))))).mean((2, 3)))

    torch.manual_seed(1)
    model = AnalysedModel(Reused(), (0.0,), (1.0,), (1, 5, 5), ("a", "b"))
    assert model.analysed_layer_name == "relu" and model.pooling == "mean"  # relu of a ReLU output: both work
    second = AnalysedModel(model.net, (0.0,), (1.0,), (1, 5, 5), ("a", "b"), analysed_layer="act:1")
    x = torch.rand(2, 1, 5, 5)
    with torch.no_grad():
        expected = torch.relu(model.net.conv2(torch.relu(model.net.conv1(x))))
    assert torch.equal(second.activations(x).feature_maps, expected)
    with pytest.raises(ModelError, match=r"'act' \(3 maps of 5×5\).*would work: act:1, relu"):
        AnalysedModel(model.net, (0.0,), (1.0,), (1, 5, 5), ("a", "b"), analysed_layer="act")
