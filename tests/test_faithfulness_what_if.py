"""What-if edits (issue 13, item 3): ``what_if`` and ``edit_pair`` against hand-solved toys and a manual forward pass
with the test's own hooks (a plain loop), on a toy with hand-set weights and on the demo model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import manual_pair_edit

from advlens.errors import ConfigError, ModelError
from advlens.faithfulness.what_if import EDIT_MODES, edit_pair, record_pair, what_if
from advlens.models import AnalysedModel, load_model

pytestmark = pytest.mark.usefixtures("one_thread")


class Boom(nn.Module):
    """Passes its input through, or raises when armed (a forward pass that fails after the edited layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.armed:
            raise RuntimeError("boom")
        return x


def toy_model() -> AnalysedModel:
    """1×2×2 images → 1×1 conv with weights (1, −1, 2) (layer "0") → ReLU (layer "1") → mean → identity head.

    Each logit is the mean of one ReLU map, so every edit's outcome can be solved by hand.
    """
    net = nn.Sequential(nn.Conv2d(1, 3, 1, bias=False), nn.ReLU(), Boom(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(3, 3))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -1.0, 2.0]).view(3, 1, 1, 1))
        net[5].weight.copy_(torch.eye(3))
        net[5].bias.zero_()
    return AnalysedModel(net, mean=(0.0,), std=(1.0,), input_shape=(1, 2, 2), class_names=("a", "b", "c"))


BENIGN = torch.full((1, 2, 2), 0.5)  # ReLU maps 0.5, 0, 1.0 → logits (0.5, 0, 1.0)
ADVERSARIAL = torch.tensor([[[0.1, 0.9], [0.3, 0.3]]])  # ReLU maps a, 0, 2a → logits (0.4, 0, 0.8)


def softmax(logits) -> list[float]:
    exps = [math.exp(v) for v in logits]
    return [e / sum(exps) for e in exps]


def assert_output(result, expected_logits, atol=1e-6):
    expected = np.atleast_2d(np.asarray(expected_logits, dtype=np.float64))
    np.testing.assert_allclose(result.logits.numpy(), expected, atol=atol)
    np.testing.assert_allclose(result.probabilities.numpy(), [softmax(row) for row in expected], atol=atol)


# ------------------------------------------------------------------------------------------------ hand-solved toy
def test_the_toy_edits_give_the_hand_solved_outputs():
    model = toy_model()
    assert model.analysed_layer_name == "1"
    assert_output(what_if(model, BENIGN, "1", [], 5.0), [0.5, 0.0, 1.0])  # no channel: no edit
    assert_output(what_if(model, BENIGN, "1", [1], 2.0), [0.5, 2.0, 1.0])
    assert_output(what_if(model, BENIGN, "1", [1], torch.tensor([[[0.0, 4.0], [0.0, 0.0]]])), [0.5, 1.0, 1.0])
    # an edit before the ReLU goes through it: −1 → 0, and the other positions stay 1
    assert_output(what_if(model, BENIGN, "0", [0], torch.tensor([[[-1.0, 1.0], [1.0, 1.0]]])), [0.75, 0.0, 1.0])
    assert_output(what_if(model, BENIGN, "0", [2, 1], -3.0), [0.5, 0.0, 0.0])
    # a batch, one map per image, channels in the given order
    maps = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]],
                         [[[2.0, 0.0], [0.0, 0.0]], [[3.0, 3.0], [3.0, 3.0]]]])
    both = torch.stack([BENIGN, ADVERSARIAL])
    assert_output(what_if(model, both, "1", [2, 0], maps), [[0.0, 0.0, 1.0], [3.0, 0.0, 0.5]])
    assert_output(what_if(model, both, "1", [2, 0], maps, batch_size=1), [[0.0, 0.0, 1.0], [3.0, 0.0, 0.5]])


@pytest.mark.parametrize("mode, channels, expected", [
    ("restore", [2], [0.4, 0.0, 1.0]),  # the adversarial pass, channel 2 back to its benign map (mean 1.0)
    ("attack", [2], [0.5, 0.0, 0.8]),  # the benign pass, channel 2 set to its adversarial map (mean 0.8)
    ("zero_adversarial", [0], [0.0, 0.0, 0.8]),
    ("zero_benign", [2, 0], [0.0, 0.0, 0.0]),
    ("restore", [0, 1, 2], [0.5, 0.0, 1.0]),  # every channel restored: the benign output
    ("attack", [], [0.5, 0.0, 1.0]),  # no channel: the benign pass as it is
])
def test_pair_edits_of_the_toy(mode, channels, expected):
    model = toy_model()
    edit = edit_pair(model, BENIGN, ADVERSARIAL, "1", channels, mode)
    assert_output(edit.benign, [0.5, 0.0, 1.0])
    assert_output(edit.adversarial, [0.4, 0.0, 0.8])
    assert_output(edit.edited, expected)
    assert edit.side == ("adversarial" if mode in ("restore", "zero_adversarial") else "benign")
    record = record_pair(model, BENIGN, ADVERSARIAL, "1")
    assert_output(edit_pair(model, BENIGN, ADVERSARIAL, "1", channels, mode, record=record).edited, expected)


def test_no_hook_is_left_behind_when_the_forward_pass_raises():
    model = toy_model()
    model.net[2].armed = True
    with pytest.raises(RuntimeError, match="boom"):
        what_if(model, BENIGN, "1", [1], 2.0)
    with pytest.raises(RuntimeError, match="boom"):
        edit_pair(model, BENIGN, ADVERSARIAL, "1", [1], "restore")
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks, module
    assert not model._taps.active
    model.net[2].armed = False
    with torch.no_grad():
        np.testing.assert_allclose(model(BENIGN[None]).numpy(), [[0.5, 0.0, 1.0]], atol=1e-6)  # no edit stuck
    assert_output(what_if(model, BENIGN, "1", [1], 2.0), [0.5, 2.0, 1.0])


@pytest.mark.parametrize("call, error, words", [
    (lambda m: what_if(m, BENIGN, "relu", [0], 0.0), ModelError, "no layer named 'relu'"),
    (lambda m: what_if(m, BENIGN, "1", [3], 0.0), ConfigError, "channel 3 does not exist: layer '1' has channels 0–2"),
    (lambda m: what_if(m, BENIGN, "1", [-1], 0.0), ConfigError, "channel -1 does not exist"),
    (lambda m: what_if(m, BENIGN, "1", [1, 1], 0.0), ConfigError, "channel 1 of layer '1' is named twice"),
    (lambda m: what_if(m, BENIGN, "1", [0.5], 0.0), ConfigError, "whole channel ids"),
    (lambda m: what_if(m, BENIGN, "1", [1], torch.zeros(2, 2, 2)), ConfigError, "must have shape (1, 2, 2)"),
    (lambda m: what_if(m, BENIGN, "1", [1], float("nan")), ConfigError, "must be finite"),
    (lambda m: what_if(m, BENIGN, "1", [1], "zero"), ConfigError, "a number or a tensor"),
    (lambda m: what_if(m, torch.zeros(1, 3, 3), "1", [1], 0.0), ModelError, "expects images of shape"),
    (lambda m: what_if(m, BENIGN, "1", [1], 0.0, batch_size=0), ConfigError, "batch_size"),
    (lambda m: edit_pair(m, BENIGN, ADVERSARIAL, "1", [1], "restore_all"), ConfigError, "edit mode 'restore_all'"),
    (lambda m: edit_pair(m, BENIGN, torch.stack([ADVERSARIAL] * 2), "1", [1], "zero_benign"), ConfigError,
     "must pair up"),
    (lambda m: edit_pair(m, BENIGN, ADVERSARIAL, "1", [1], "restore", record=record_pair(m, BENIGN, ADVERSARIAL, "0")),
     ConfigError, "record is of layer '0'"),
])
def test_bad_input_is_named_before_any_edited_forward_pass(call, error, words):
    model = toy_model()
    record_first = "record is of" in words
    edited_passes = []
    handle = model.net[2].register_forward_hook(lambda *a: edited_passes.append(1))
    try:
        with pytest.raises(error, match=None) as caught:
            call(model)
    finally:
        handle.remove()
    assert words in str(caught.value)
    assert len(edited_passes) == (1 if record_first else 0)  # the record's own pass only


# ------------------------------------------------------------------------------------------------ demo model
@pytest.fixture(scope="module")
def demo():
    """The demo model and three pairs: smooth generated images and their PGD adversarials (ε = 8/255)."""
    from advlens.attacks import PGD

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = load_model("fashion-resnet")
        generator = torch.Generator().manual_seed(0)
        coarse = torch.rand(3, 1, 7, 7, generator=generator)
        benign = nn.functional.interpolate(coarse, size=(28, 28), mode="bilinear", align_corners=False)
        with torch.no_grad():
            labels = model(benign).argmax(1)
        adversarial = PGD(model, eps=8 / 255, alpha=2 / 255, steps=7)(benign, labels)
    finally:
        torch.set_num_threads(threads)
    return model, benign, adversarial


@pytest.mark.parametrize("mode", EDIT_MODES)
def test_pair_edits_of_the_demo_model_agree_with_a_manual_forward_pass(demo, mode):
    model, benign, adversarial = demo
    channels = [200, 3, 17, 64, 128]
    edit = edit_pair(model, benign, adversarial, "layer4", channels, mode)
    expected = manual_pair_edit(model, benign, adversarial, "layer4", channels, mode)
    np.testing.assert_allclose(edit.edited.logits.numpy(), expected.numpy(), atol=1e-4)
    np.testing.assert_allclose(edit.edited.probabilities.numpy(), expected.softmax(1).numpy(), atol=1e-5)
    unedited = (benign if edit.side == "benign" else adversarial)
    assert not torch.allclose(edit.edited.logits, model(unedited).detach(), atol=1e-3)  # the edit changed something


def test_the_demo_models_identities_at_no_channel_and_at_every_channel(demo):
    model, benign, adversarial = demo
    with torch.no_grad():
        benign_logits, adversarial_logits = model(benign), model(adversarial)
    assert (benign_logits.argmax(1) != adversarial_logits.argmax(1)).any()  # the attack changed a prediction
    every = list(range(model.graph["layer4"].channels))  # layer4 alone feeds the head
    restored = edit_pair(model, benign, adversarial, "layer4", every, "restore")
    attacked = edit_pair(model, benign, adversarial, "layer4", every, "attack")
    np.testing.assert_allclose(restored.edited.logits.numpy(), benign_logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(attacked.edited.logits.numpy(), adversarial_logits.numpy(), atol=1e-4)
    for mode in EDIT_MODES:
        edit = edit_pair(model, benign, adversarial, "layer4", [], mode)
        np.testing.assert_allclose(edit.benign.logits.numpy(), benign_logits.numpy(), atol=1e-4)
        np.testing.assert_allclose(edit.adversarial.logits.numpy(), adversarial_logits.numpy(), atol=1e-4)
    zeroed = what_if(model, adversarial, "layer4", every, 0.0)  # every map zero: the head's bias alone
    np.testing.assert_allclose(zeroed.logits.numpy(), model.dense_bias.expand(3, -1).numpy(), atol=1e-5)


def test_a_functional_layer_is_edited_like_the_block_computes_it(demo):
    """``layer4.relu`` is ``torch.relu`` inside the block's forward (the adapter's torch.fx path): zeroing its
    channels equals the block recomputed by hand from layer3's output with those channels zeroed."""
    model, benign, adversarial = demo
    channels = [5, 50, 250]
    net = model.net
    kept = {}
    handle = net.layer3.register_forward_hook(lambda m, i, o: kept.__setitem__("x", o.detach().clone()))
    try:
        with torch.no_grad():
            net((adversarial - model.mean) / model.std)
    finally:
        handle.remove()
    block = net.layer4
    with torch.no_grad():
        inner = torch.relu(block.bn1(block.conv1(kept["x"])))
        for c in channels:
            inner[:, c] = 0.0
        out = torch.relu(block.bn2(block.conv2(inner)) + block.shortcut(kept["x"]))
        expected = net.fc(torch.flatten(net.avgpool(out), 1))
    result = what_if(model, adversarial, "layer4.relu", channels, 0.0)
    np.testing.assert_allclose(result.logits.numpy(), expected.numpy(), atol=1e-4)
    assert not model._taps.active
