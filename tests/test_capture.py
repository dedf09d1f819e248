"""Multi-layer capture, tapping and patching.

Expected values come from a toy network with hand-set weights (every number worked out below), from
forward passes written out module by module, or from independent hooks/recordings, never from the
capture code itself.
"""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlens.errors import ModelError
from advlens.models import load_model
from advlens.models.adapter import AnalysedModel
from advlens.models.efficientnet import IMAGENET_MEAN, IMAGENET_STD, efficientnet_lite0
from test_graph import DEMO_LAYERS, Untraceable
from test_model_adapter import assert_no_hooks


class HandNet(nn.Module):
    """A user model with functional ReLUs and one ReLU module called twice, weights set by hand.

    With z = normalized input: a = act(conv1 z) = (relu(z), relu(0.5 − z)); conv2 gives (a0 + a1, a0 − a1);
    b = relu(conv2 a − 1); c = act(b + a); logits = (mean c0, mean c1, mean c0 − mean c1).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(2, 2, 1, bias=False)
        self.fc = nn.Linear(2, 3, bias=False)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.conv1.bias.copy_(torch.tensor([0.0, 0.5]))
            self.conv2.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]).view(2, 2, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act(self.conv1(x))
        b = torch.relu(self.conv2(a) - 1.0)
        c = self.act(b + a)
        return self.fc(F.adaptive_avg_pool2d(c, 1).flatten(1))


def hand_model() -> AnalysedModel:
    return AnalysedModel(HandNet(), (0.5,), (0.25,), (1, 2, 2), ("a", "b", "c"))


# x = [[0, .25], [.5, 1]] normalizes to z = [[-2, -1], [0, 2]]
X = torch.tensor([[[[0.0, 0.25], [0.5, 1.0]]]])
T = torch.tensor
EXPECTED = {
    "act": T([[[[0.0, 0.0], [0.0, 2.0]], [[2.5, 1.5], [0.5, 0.0]]]]),
    "conv2": T([[[[2.5, 1.5], [0.5, 2.0]], [[-2.5, -1.5], [-0.5, 2.0]]]]),
    "sub": T([[[[1.5, 0.5], [-0.5, 1.0]], [[-3.5, -2.5], [-1.5, 1.0]]]]),
    "relu": T([[[[1.5, 0.5], [0.0, 1.0]], [[0.0, 0.0], [0.0, 1.0]]]]),
    "add": T([[[[1.5, 0.5], [0.0, 3.0]], [[2.5, 1.5], [0.5, 1.0]]]]),
    "act:1": T([[[[1.5, 0.5], [0.0, 3.0]], [[2.5, 1.5], [0.5, 1.0]]]]),
    "fc": T([[1.25, 1.375, -0.125]]),
}


@pytest.fixture(scope="module")
def demo():
    return load_model("fashion-resnet")


@pytest.fixture(scope="module")
def images():
    return torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(3))


# ----------------------------------------------------------------------------------- capture: values


def test_capture_hand_computed_values_functional_and_reused():
    model = hand_model()
    out = model.capture(X, list(EXPECTED))
    assert list(out) == list(EXPECTED)
    for name, expected in EXPECTED.items():
        assert out[name].device.type == "cpu" and out[name].dtype == torch.float32
        assert torch.equal(out[name], expected), name


def test_capture_reductions_hand_computed():
    model = hand_model()
    assert torch.equal(model.capture(X, ["sub"], reduce="max")["sub"], T([[1.5, 1.0]]))
    assert torch.equal(model.capture(X, ["sub"], reduce="mean")["sub"], T([[0.625, -1.625]]))
    assert torch.equal(model.capture(X, ["sub"], reduce="abs_sum")["sub"], T([[3.5, 8.5]]))  # not the plain sum
    assert torch.equal(model.capture(X, ["act:1"], reduce="abs_sum")["act:1"], T([[5.0, 5.5]]))
    # vector layers pass through every reduction
    for reduce in ("none", "max", "mean", "abs_sum"):
        assert torch.equal(model.capture(X, ["fc"], reduce=reduce)["fc"], EXPECTED["fc"])


def test_capture_batches_and_aliases(demo, images):
    one = demo.capture(images, DEMO_LAYERS, reduce="none", batch_size=3)
    full = demo.capture(images, DEMO_LAYERS, reduce="none")
    channels = {"stem": 32, "layer1.relu": 32, "layer1": 32, "layer2.relu": 64, "layer2": 64,
                "layer3.relu": 128, "layer3": 128, "layer4.relu": 256, "layer4": 256}
    sizes = {"stem": 28, "layer1.relu": 28, "layer1": 28, "layer2.relu": 14, "layer2": 14}
    for name in DEMO_LAYERS:
        assert one[name].shape == (10, channels[name], sizes.get(name, 7), sizes.get(name, 7))
        torch.testing.assert_close(one[name], full[name], rtol=0, atol=1e-5)
    maxima = demo.capture(images, ["stem.2", "layer4"], reduce="max", batch_size=4)
    assert list(maxima) == ["stem.2", "layer4"]
    torch.testing.assert_close(maxima["stem.2"], full["stem"].amax(dim=(2, 3)), rtol=0, atol=1e-5)
    torch.testing.assert_close(maxima["layer4"], full["layer4"].amax(dim=(2, 3)), rtol=0, atol=1e-5)
    # the analysed layer's mean pooling is the dense input, recorded by an independent pre-hook
    recorded = []
    handle = demo.net.fc.register_forward_pre_hook(lambda _m, args: recorded.append(args[0]))
    try:
        with torch.no_grad():
            demo(images)
    finally:
        handle.remove()
    means = demo.capture(images, ["layer4"], reduce="mean")["layer4"]
    torch.testing.assert_close(means, recorded[0], rtol=0, atol=1e-5)


def test_capture_of_an_empty_batch(demo):
    out = demo.capture(torch.zeros(0, 1, 28, 28), ["layer2", "fc"], reduce="max")
    assert out["layer2"].shape == (0, 64) and out["fc"].shape == (0, 10)
    assert demo.capture(torch.zeros(0, 1, 28, 28), ["layer2"])["layer2"].shape == (0, 64, 14, 14)


def test_logits_bit_identical_with_capture_on_and_off(demo, images):
    plain = demo.net(demo.normalize(images))
    out = demo.capture(images, [*DEMO_LAYERS, "fc"], batch_size=len(images))  # functional layers: fx copy
    assert torch.equal(out["fc"], plain.detach())
    with demo.tapping(DEMO_LAYERS) as acts:
        tapped = demo(images)
    assert torch.equal(tapped, plain) and len(acts) == 9
    with demo.tapping(["stem", "layer4"]):  # module outputs only: hooks on the network itself
        assert torch.equal(demo(images), plain)
    model = hand_model()
    assert torch.equal(model.capture(X, ["relu", "fc"])["fc"], model.net(model.normalize(X)).detach())


def test_hook_path_and_fx_path_agree(demo, images):
    by_hooks = demo.capture(images, ["layer3", "layer2.shortcut"])
    by_fx = demo.capture(images, ["layer3", "layer2.shortcut", "layer3.relu"])
    assert torch.equal(by_hooks["layer3"], by_fx["layer3"])
    assert torch.equal(by_hooks["layer2.shortcut"], by_fx["layer2.shortcut"])


# --------------------------------------------------------------------------------------- hooks left


def raiser(_value: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("boom")


@pytest.mark.parametrize("patched,captured", [("act", ["act:1"]), ("relu", ["act", "relu"])],
                         ids=["hooks", "fx-copy"])
def test_no_hook_left_when_the_forward_raises(patched, captured):
    model = hand_model()
    with pytest.raises(RuntimeError, match="boom"):
        with model.patching(patched, raiser):
            model.capture(X, captured)
    assert_no_hooks(model)
    assert not model._taps.active  # nothing registered: the next forward is the plain network
    assert torch.equal(model(X), EXPECTED["fc"])
    with pytest.raises(RuntimeError, match="boom"):
        with model.tapping(captured, replace={patched: raiser}):
            model(X)
    assert_no_hooks(model)
    assert not model._taps.active
    model.capture(X, captured)
    assert_no_hooks(model)


def test_no_hook_left_after_capture_and_tapping(demo, images):
    demo.capture(images[:2], DEMO_LAYERS, reduce="max")
    with demo.tapping(["stem", "layer4"], replace={"layer2": lambda a: a}):
        demo(images[:2])
    assert_no_hooks(demo)
    assert not demo._taps.active


# ----------------------------------------------------------------------------------------- tapping


def test_tapping_keeps_the_graph_for_gradients():
    model = hand_model()
    with model.tapping(["relu", "act"]) as acts:
        logits = model(X)
    assert torch.equal(acts["relu"], EXPECTED["relu"]) and acts["relu"].requires_grad
    # logit 2 = mean c0 − mean c1 and c = relu(b + a) > 0 wherever b + a > 0: ∂/∂b = ±1/4 there, 0 at c0[1, 0] = 0
    (grad,) = torch.autograd.grad(logits[0, 2], acts["relu"])
    expected = T([[[[0.25, 0.25], [0.0, 0.25]], [[-0.25, -0.25], [-0.25, -0.25]]]])
    assert torch.equal(grad, expected)
    assert float((grad * acts["relu"]).sum().detach()) == pytest.approx(0.25 * 3.0 - 0.25 * 1.0)  # gradient × activation


def test_tapping_does_not_change_input_gradients(demo, images):
    x = images[:3].clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(demo(x)[:, 4].sum(), x)
    with demo.tapping(DEMO_LAYERS) as acts:
        logits = demo(x)
    (tapped,) = torch.autograd.grad(logits[:, 4].sum(), x)
    assert torch.equal(plain, tapped) and acts["layer2.relu"].grad_fn is not None


def test_patching_replaces_outputs_per_call():
    model = hand_model()
    with model.patching("relu", torch.zeros_like):
        assert torch.equal(model(X), T([[0.5, 1.125, -0.625]]))  # c = a: means (0.5, 1.125)
    with model.patching("act:1", lambda c: 2 * c):
        assert torch.equal(model(X), 2 * EXPECTED["fc"])
    with model.tapping(["act", "act:1"], replace={"act": torch.zeros_like}) as acts:
        logits = model(X)
    # only the first call is replaced; relu(0·w − 1) = 0, so every later value is 0
    assert torch.equal(acts["act"], torch.zeros(1, 2, 2, 2)) and torch.equal(acts["act:1"], torch.zeros(1, 2, 2, 2))
    assert torch.equal(logits, torch.zeros(1, 3))
    assert torch.equal(model(X), EXPECTED["fc"])  # restored


def test_patching_gates_feature_maps_like_a_manual_forward(demo, images):
    net = demo.net
    gate = torch.ones(1, 64, 1, 1)
    gate[0, 5] = 0.0
    gate[0, 17] = 0.5
    z = demo.normalize(images)
    with torch.no_grad():
        x = net.layer2(net.layer1(net.stem(z))) * gate
        manual = net.fc(torch.flatten(net.avgpool(net.layer4(net.layer3(x))), 1))
        with demo.patching("layer2", lambda a: a * gate):
            patched = demo(images)
    torch.testing.assert_close(patched, manual, rtol=0, atol=1e-5)
    # a functional layer inside a block: the inner ReLU of layer3, written out by hand
    block = net.layer3
    with torch.no_grad():
        x = net.layer2(net.layer1(net.stem(z)))
        inner = torch.relu(block.bn1(block.conv1(x))) * 0.0
        x = torch.relu(block.bn2(block.conv2(inner)) + block.shortcut(x))
        manual = net.fc(torch.flatten(net.avgpool(net.layer4(x)), 1))
        with demo.patching("layer3.relu", lambda a: a * 0.0):
            patched = demo(images)
    torch.testing.assert_close(patched, manual, rtol=0, atol=1e-5)


def test_replacement_must_keep_the_shape():
    model = hand_model()
    with pytest.raises(ModelError, match=r"replacement for layer 'relu' must be a tensor of shape \(1, 2, 2, 2\)"):
        with model.patching("relu", lambda a: a[:, :1]):
            model(X)
    with pytest.raises(ModelError, match="must be a function"):
        with model.tapping((), replace={"relu": 3.0}):
            pass


# ---------------------------------------------------------------------------------------- in place


class InPlaceNet(nn.Module):
    """conv → x += 0.5 → bn → ReLU in place: the module ``nn.ReLU(inplace=True)`` or the method ``clamp_``."""

    def __init__(self, method: bool = False) -> None:
        super().__init__()
        self.method = method
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        x = self.conv(x)
        x += 0.5  # in place, functional
        x = self.bn(x)
        x = x.clamp_(min=0.0) if self.method else self.relu(x)
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("method", [False, True], ids=["module", "method"])
def test_outputs_overwritten_in_place_later_are_captured_before(method):
    torch.manual_seed(0)
    net = InPlaceNet(method).eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
    model = AnalysedModel(net, (0.0,), (1.0,), (1, 5, 5), ("a", "b"))
    x = torch.rand(2, 1, 5, 5)
    with torch.no_grad():
        conv = net.conv(x)
        bn = net.bn(conv + 0.5)
        logits = net.fc(torch.relu(bn).mean((2, 3)))
    assert (bn < 0).any()
    assert model.graph.names() == ["input", "conv", "add", "bn", "clamp_" if method else "relu", "mean", "fc"]
    for layers in (["conv", "bn"], ["conv", "bn", "add"]):  # hooks, then the fx copy (it reads += as +)
        out = model.capture(x, layers)
        assert torch.equal(out["conv"], conv) and torch.equal(out["bn"], bn)
        with model.tapping(layers) as acts:
            tapped = model(x)
        assert torch.equal(acts["conv"], conv) and torch.equal(acts["bn"], bn) and torch.equal(tapped, logits)
        assert torch.equal(model.activations(x).feature_maps, torch.relu(bn))


# -------------------------------------------------------------------------------------- validation


def test_bad_arguments_are_refused_before_any_forward():
    model = hand_model()
    calls = []
    handle = model.net.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        with pytest.raises(ModelError, match=r"no layer named 'act:2'.*did you mean"):
            model.capture(X, ["act", "act:2"])
        with pytest.raises(ModelError, match="unknown reduce 'sum'; use one of none, max, mean, abs_sum"):
            model.capture(X, ["act"], reduce="sum")
        with pytest.raises(ModelError, match="batch_size must be a positive integer"):
            model.capture(X, ["act"], batch_size=0)
        with pytest.raises(ModelError, match="at least one layer"):
            model.capture(X, [])
        with pytest.raises(ModelError, match=r"N×1×2×2"):
            model.capture(torch.zeros(1, 1, 3, 3), ["act"])
        with pytest.raises(ModelError, match="no layer named 'nope'"):
            with model.tapping(["act"], replace={"nope": torch.zeros_like}):
                pass
    finally:
        handle.remove()
    assert calls == []
    assert model.capture(X, "act")["act"].shape == (1, 2, 2, 2)  # one name as a string


# ----------------------------------------------------------------------------------- other models


def test_capture_on_the_hook_fallback_graph():
    torch.manual_seed(0)
    net = Untraceable().eval()
    model = AnalysedModel(net, (0.0,), (1.0,), (1, 6, 6), ("a", "b", "c"))
    assert model.graph.method == "hooks" and model.analysed_layer_name == "act:1"
    x = torch.rand(3, 1, 6, 6)
    with torch.no_grad():
        first = torch.relu(net.conv(x))
        second = torch.relu(net.conv2(first))
        logits = net.fc(second.mean((2, 3)))
    out = model.capture(x, ["act", "act:1", "fc"])
    assert torch.equal(out["act"], first) and torch.equal(out["act:1"], second) and torch.equal(out["fc"], logits)
    assert torch.equal(model.activations(x).feature_maps, second)
    with pytest.raises(ModelError, match="no layer named 'relu'"):
        model.capture(x, ["relu"])


@pytest.fixture(scope="module")
def efficientnet():
    # 64×64 keeps the forward cheap; the static "same" padding of the 224 model still fits (pad 0/1)
    return AnalysedModel(efficientnet_lite0(), IMAGENET_MEAN, IMAGENET_STD, (3, 64, 64),
                         [str(c) for c in range(1000)])


def test_efficientnet_reused_relu6_captured_per_call(efficientnet):
    model, net = efficientnet, efficientnet.net
    assert model.analysed_layer_name == "_swish:1" and model.pooling == "mean"
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    layers = ["_swish", "_blocks.0", "_blocks.1._swish", "_blocks.1._swish:1", "_swish:1", "_fc"]
    out = model.capture(x, layers)
    z = model.normalize(x)
    block = net._blocks[1]
    recorded = []
    handle = net._fc.register_forward_pre_hook(lambda _m, args: recorded.append(args[0]))
    try:
        with torch.no_grad():
            stem = F.relu6(net._bn0(net._conv_stem(z)))
            expand = F.relu6(block._bn0(block._expand_conv(out["_blocks.0"])))
            depthwise = F.relu6(block._bn1(block._depthwise_conv(expand)))
            logits = net(z)
    finally:
        handle.remove()
    assert torch.equal(out["_swish"], stem)
    assert torch.equal(out["_blocks.1._swish"], expand) and torch.equal(out["_blocks.1._swish:1"], depthwise)
    assert out["_swish:1"].shape == (1, 1280, 2, 2)
    torch.testing.assert_close(out["_swish:1"].mean(dim=(2, 3)), recorded[0], rtol=0, atol=1e-5)
    assert torch.equal(out["_fc"], logits)


def test_efficientnet_all_activation_layers_logits_bit_identical(efficientnet):
    layers = efficientnet.graph.activation_layers()
    assert len(layers) == 33
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), efficientnet.tapping(layers) as acts:
        tapped = efficientnet(x)
    plain = efficientnet.net(efficientnet.normalize(x))
    assert torch.equal(tapped, plain) and len(acts) == 33
    assert acts["_blocks.15._swish:1"].shape == (1, 1152, 2, 2)
    assert_no_hooks(efficientnet)


# ------------------------------------------------------------------------------------------- threads


@pytest.mark.parametrize("layers", [["act", "act:1"], ["act", "act:1", "relu"]], ids=["hooks", "fx-copy"])
def test_taps_belong_to_the_thread_that_opened_them(layers):
    """A web server answers requests in threads: one request's patch must not leak into another's
    forward pass, and another thread's forward must not shift the call count of a reused module."""
    model = hand_model()
    inside, done = threading.Event(), threading.Event()
    other: dict[str, torch.Tensor] = {}

    def pause(value: torch.Tensor) -> torch.Tensor:  # replaces 'act' by 2·act, after the other thread ran
        inside.set()
        assert done.wait(timeout=30)
        return 2 * value

    def run_other() -> None:
        assert inside.wait(timeout=30)
        other["logits"] = model(X)
        other["pooled"] = model.activations(X).pooled
        done.set()

    thread = threading.Thread(target=run_other)
    thread.start()
    with model.tapping(layers, replace={"act": pause}) as acts:
        model(X)
    thread.join(timeout=30)
    assert torch.equal(other["logits"], EXPECTED["fc"])  # the other thread saw no patch
    assert torch.equal(other["pooled"], T([[1.25, 1.375]]))
    assert torch.equal(acts["act"], 2 * EXPECTED["act"]) and "act:1" in acts  # counting undisturbed
