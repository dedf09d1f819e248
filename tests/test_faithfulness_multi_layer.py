"""Multi-layer what-if edits (issue 13, item 3, pinned pathway nodes): ``what_if_layers`` and ``edit_layers`` against
a hand-solved two-layer toy and, on the demo model, a forward pass with the test's own hooks at several layers
(module hooks, and a functional ReLU edited through the batch norm that feeds it)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from advlens.errors import ConfigError, ModelError
from advlens.faithfulness.multi_layer import edit_layers, record_layers, what_if_layers
from advlens.faithfulness.what_if import EDIT_MODES, edit_pair
from advlens.models import AnalysedModel, load_model

pytestmark = pytest.mark.usefixtures("one_thread")


class Boom(nn.Module):
    """Passes its input through, or raises when armed."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.armed:
            raise RuntimeError("boom")
        return x


def toy_model() -> AnalysedModel:
    """Constant 2×2 images x → conv (weights 1, −1; biases 0, 1; layer "0") → ReLU h = (x, 1 − x) (layer "1") → conv
    with W = [[2, 0], [0, 2], [1, 2]] (layer "2") → ReLU z (layer "3") → spatial mean → identity head: the logits
    are z (every map is constant).

    Benign x = 0.2: h = (0.2, 0.8), z = (0.4, 1.6, 1.8). Adversarial x = 0.9: h = (0.9, 0.1), z = (1.8, 0.2, 1.1).
    """
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.Conv2d(2, 3, 1, bias=False), nn.ReLU(), Boom(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        net[0].bias.copy_(torch.tensor([0.0, 1.0]))
        net[2].weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 2.0]]).view(3, 2, 1, 1))
        net[7].weight.copy_(torch.eye(3))
        net[7].bias.zero_()
    return AnalysedModel(net, mean=(0.0,), std=(1.0,), input_shape=(1, 2, 2), class_names=("a", "b", "c"))


BENIGN = torch.full((1, 1, 2, 2), 0.2)
ADVERSARIAL = torch.full((1, 1, 2, 2), 0.9)


def softmax(logits) -> list[float]:
    exps = [math.exp(v) for v in logits]
    return [e / sum(exps) for e in exps]


def assert_output(result, expected_logits, atol=1e-6):
    expected = np.atleast_2d(np.asarray(expected_logits, dtype=np.float64))
    np.testing.assert_allclose(result.logits.numpy(), expected, atol=atol)
    np.testing.assert_allclose(result.probabilities.numpy(), [softmax(row) for row in expected], atol=atol)


# ------------------------------------------------------------------------------------------------ hand-solved toy
def test_the_toy_multi_layer_edits_give_the_hand_solved_outputs():
    model = toy_model()
    pinned = {"1": [0], "3": [2]}
    # restore: h0 ← 0.2 (benign) in the adversarial pass, so z = (0.4, 0.2, ·); z2 is held at its benign 1.8 (not
    # the 0.2 + 0.2 = 0.4 the edited h would give)
    restore = edit_layers(model, BENIGN, ADVERSARIAL, pinned, "restore")
    assert restore.side == "adversarial"
    assert_output(restore.edited, [0.4, 0.2, 1.8])
    assert_output(restore.benign, [0.4, 1.6, 1.8])
    assert_output(restore.adversarial, [1.8, 0.2, 1.1])
    # attack: h0 ← 0.9 in the benign pass: z = (1.8, 1.6, held adversarial 1.1)
    assert_output(edit_layers(model, BENIGN, ADVERSARIAL, pinned, "attack").edited, [1.8, 1.6, 1.1])
    # zero: h1 and z0 zeroed
    zeroed = {"3": [0], "1": [1]}
    assert_output(edit_layers(model, BENIGN, ADVERSARIAL, zeroed, "zero_adversarial").edited, [0.0, 0.0, 0.9])
    assert_output(edit_layers(model, BENIGN, ADVERSARIAL, zeroed, "zero_benign").edited, [0.0, 0.0, 0.2])
    # one layer only: the downstream layer sees the edit
    assert_output(edit_layers(model, BENIGN, ADVERSARIAL, {"1": [0]}, "restore").edited, [0.4, 0.2, 0.4])
    # nothing pinned: the unedited pass
    assert_output(edit_layers(model, BENIGN, ADVERSARIAL, {}, "restore").edited, [1.8, 0.2, 1.1])


def test_the_toy_general_edit_at_two_layers_goes_through_the_relu():
    model = toy_model()
    # conv "0" channel 1 ← −5 (ReLU gives 0), conv "2" channel 0 ← 3: h = (0.2, 0), z = (3, 0, 0.2)
    assert_output(what_if_layers(model, BENIGN, {"0": ([1], -5.0), "2": ([0], 3.0)}), [3.0, 0.0, 0.2])
    # per-image maps for two images, in batches of one
    both = torch.cat([BENIGN, ADVERSARIAL])
    maps = torch.tensor([[5.0, 6.0], [7.0, 8.0]])[:, :, None, None].expand(2, 2, 2, 2)
    edits = {"3": ([1, 0], maps), "1": ([1], 0.0)}
    expected = [[6.0, 5.0, 0.2], [8.0, 7.0, 0.9]]
    assert_output(what_if_layers(model, both, edits), expected)
    assert_output(what_if_layers(model, both, edits, batch_size=1), expected)


def test_a_record_is_reused_and_checked():
    model = toy_model()
    record = record_layers(model, BENIGN, ADVERSARIAL, ["3", "1"])
    assert record.layers == ("3", "1")
    np.testing.assert_allclose(record.benign_maps["1"][0, :, 0, 0].numpy(), [0.2, 0.8], atol=1e-6)
    np.testing.assert_allclose(record.adversarial_maps["3"][0, :, 1, 1].numpy(), [1.8, 0.2, 1.1], atol=1e-6)
    assert_output(edit_layers(model, BENIGN, ADVERSARIAL, {"1": [0], "3": [2]}, "restore", record=record).edited,
                  [0.4, 0.2, 1.8])
    with pytest.raises(ConfigError, match="record_layers first"):
        edit_layers(model, BENIGN, ADVERSARIAL, {"0": [0]}, "restore", record=record)


def test_one_layer_agrees_with_the_single_layer_edit():
    model = toy_model()
    for mode in EDIT_MODES:
        multi = edit_layers(model, BENIGN, ADVERSARIAL, {"1": [1, 0]}, mode).edited
        single = edit_pair(model, BENIGN, ADVERSARIAL, "1", [1, 0], mode).edited
        torch.testing.assert_close(multi.logits, single.logits)


def test_bad_edits_are_refused_before_any_work():
    model = toy_model()
    with pytest.raises(ConfigError, match="edit mode"):
        edit_layers(model, BENIGN, ADVERSARIAL, {"1": [0]}, "flip")
    with pytest.raises(ConfigError, match="channel 2 does not exist"):
        edit_layers(model, BENIGN, ADVERSARIAL, {"1": [2]}, "restore")
    with pytest.raises(ModelError):
        edit_layers(model, BENIGN, ADVERSARIAL, {"nope": [0]}, "restore")
    with pytest.raises(ConfigError, match="mapping"):
        edit_layers(model, BENIGN, ADVERSARIAL, [("1", [0])], "restore")
    with pytest.raises(ConfigError, match=r"\(channels, values\)"):
        what_if_layers(model, BENIGN, {"1": [0]})
    with pytest.raises(ConfigError, match="shape"):
        what_if_layers(model, BENIGN, {"1": ([0], torch.zeros(2, 1, 1, 1))})


def test_no_hook_is_left_behind_when_the_pass_raises():
    model = toy_model()
    model.net[4].armed = True
    with pytest.raises(RuntimeError, match="boom"):
        what_if_layers(model, BENIGN, {"1": ([0], 7.0), "3": ([1], 7.0)})
    model.net[4].armed = False
    with torch.no_grad():
        np.testing.assert_allclose(model(BENIGN).numpy(), [[0.4, 1.6, 1.8]], atol=1e-6)


# ------------------------------------------------------------------------------------------------ the demo model
def manual_multi_layer_edit(model: AnalysedModel, benign, adversarial, mode: str, pinned: dict) -> torch.Tensor:
    """The edit with the test's own forward hooks on the raw demo network.

    ``pinned`` maps module names (``layer1``, ``layer4``: the block outputs) or ``"layer2.relu"`` (the functional
    ReLU after ``layer2.bn1``, edited by a hook on the batch norm: the recorded and zero values are ≥ 0, which the
    ReLU passes unchanged) to channel lists.
    """
    net = model.net
    module_of = {layer: layer.replace(".relu", ".bn1") for layer in pinned}
    post = {layer: (torch.relu if layer.endswith(".relu") else (lambda t: t)) for layer in pinned}
    normal = {"benign": (benign - model.mean) / model.std, "adversarial": (adversarial - model.mean) / model.std}
    recorded: dict[str, dict[str, torch.Tensor]] = {"benign": {}, "adversarial": {}}
    for side in recorded:
        handles = [net.get_submodule(module_of[layer]).register_forward_hook(
            lambda m, i, o, _l=layer, _s=side: recorded[_s].__setitem__(_l, post[_l](o).detach().clone()))
            for layer in pinned]
        try:
            with torch.no_grad():
                net(normal[side])
        finally:
            for handle in handles:
                handle.remove()
    source, target = {"restore": ("benign", "adversarial"), "attack": ("adversarial", "benign"),
                      "zero_adversarial": (None, "adversarial"), "zero_benign": (None, "benign")}[mode]

    def replacer(layer):
        def replace(_m, _i, output):
            output = output.clone()
            for c in pinned[layer]:
                output[:, c] = 0.0 if source is None else recorded[source][layer][:, c]
            return output
        return replace

    handles = [net.get_submodule(module_of[layer]).register_forward_hook(replacer(layer)) for layer in pinned]
    try:
        with torch.no_grad():
            return net(normal[target])
    finally:
        for handle in handles:
            handle.remove()


@pytest.fixture(scope="module")
def demo():
    model = load_model("fashion-resnet")
    generator = torch.Generator().manual_seed(5)
    coarse = torch.rand(3, 1, 7, 7, generator=generator)
    benign = torch.nn.functional.interpolate(coarse, size=(28, 28), mode="bilinear", align_corners=False)
    adversarial = (benign + 0.15 * torch.randn(benign.shape, generator=generator)).clamp(0, 1)
    return model, benign, adversarial


@pytest.mark.parametrize("mode", EDIT_MODES)
def test_the_demo_model_edit_equals_a_hand_hooked_forward_at_three_layers(demo, mode):
    model, benign, adversarial = demo
    pinned = {"layer1": [3, 17], "layer2.relu": [0, 5, 40], "layer4": [1, 100, 255]}
    expected = manual_multi_layer_edit(model, benign, adversarial, mode, pinned)
    edit = edit_layers(model, benign, adversarial, pinned, mode)
    torch.testing.assert_close(edit.edited.logits, expected, atol=1e-4, rtol=1e-4)
    unedited = edit.adversarial if edit.side == "adversarial" else edit.benign
    assert not torch.allclose(edit.edited.logits, unedited.logits, atol=1e-3), "the edit changes the output"


def test_aliases_of_one_layer_are_refused(demo):
    model, benign, adversarial = demo
    assert model.graph.resolve("layer1.shortcut") == "stem"
    with pytest.raises(ConfigError, match="named twice"):
        edit_layers(model, benign, adversarial, {"stem": [0], "layer1.shortcut": [1]}, "restore")
