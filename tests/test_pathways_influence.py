"""Connection influence (spec-004 §5, §8): Bluff's kernel estimator and gradient × activation, against
plain loops over positions and hand-written forwards that do not use the model's tap machinery;
invariance to batch composition; no hook left behind."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlens.errors import ModelError
from advlens.models import AnalysedModel
from advlens.models.registry import load_model
from advlens.pathways import grad_x_act_influence, kernel_influence, median_over
from test_model_adapter import Bomb, assert_no_hooks


def loop_slice_conv(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int, dilation: int,
                    oh: int, ow: int) -> float:
    """One output value of a single-channel convolution (no bias) by a plain loop over the kernel.

    Shape: x (H, W), weight (kh, kw), tensors or nested lists."""
    x = x.tolist() if isinstance(x, torch.Tensor) else x
    weight = weight.tolist() if isinstance(weight, torch.Tensor) else weight
    total = 0.0
    for a in range(len(weight)):
        for b in range(len(weight[0])):
            h, w = oh * stride - padding + a * dilation, ow * stride - padding + b * dilation
            if 0 <= h < len(x) and 0 <= w < len(x[0]):  # zero padding
                total += x[h][w] * weight[a][b]
    return total


def loop_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def loop_kernel_influence(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """max over output positions of source i ⋆ W[j, i] for every (j, i); 0 where groups do not connect."""
    n_images, c_in, height, width = x.shape
    (kh, kw), (s, _), (p, _), (d, _) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    per_in, per_out = c_in // conv.groups, conv.out_channels // conv.groups
    out = torch.zeros(n_images, conv.out_channels, c_in)
    for n in range(n_images):
        for j in range(conv.out_channels):
            for i in range(c_in):
                if j // per_out != i // per_in:
                    continue
                kernel, source = conv.weight[j, i % per_in].tolist(), x[n, i].tolist()
                values = [loop_slice_conv(source, kernel, s, p, d, oh, ow)
                          for oh in range(loop_output_size(height, kh, s, p, d))
                          for ow in range(loop_output_size(width, kw, s, p, d))]
                out[n, j, i] = max(values)
    return out


# ----------------------------------------------------------------------------------- kernel estimator


@pytest.mark.parametrize("groups,dilation", [(1, 1), (2, 1), (2, 2)], ids=["dense", "grouped", "grouped-dilated"])
def test_kernel_influence_equals_plain_loops_stride_2_padding_1(groups, dilation):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=dilation, groups=groups, bias=True)
    nn.init.uniform_(conv.bias, 5.0, 6.0)  # a bias must not enter the influence
    x = torch.rand(2, 4, 7, 7) - 0.3
    expected = loop_kernel_influence(x, conv)
    got = kernel_influence(x, conv)
    assert got.shape == (2, 6, 4)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    if groups == 2:  # unconnected pairs: output 0–2 read inputs 0–1 only
        assert torch.all(got[:, :3, 2:] == 0) and torch.all(got[:, 3:, :2] == 0)
    # a subset of targets and sources, in the order asked, chunked to a few pairs per call
    sub = kernel_influence(x, conv, targets=[5, 0, 3], source_channels=[3, 1], max_elements=40)
    torch.testing.assert_close(sub, expected[:, [5, 0, 3]][:, :, [3, 1]], atol=1e-5, rtol=1e-5)


def test_kernel_influence_per_image_and_checks():
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 2, 3, padding=1)
    x = torch.rand(5, 3, 6, 6)
    whole = kernel_influence(x, conv)
    torch.testing.assert_close(kernel_influence(x[[3, 1]], conv), whole[[3, 1]])
    torch.testing.assert_close(kernel_influence(x, conv, max_elements=1), whole)
    torch.testing.assert_close(torch.as_tensor(median_over(whole)).float(), whole.median(dim=0).values)
    with pytest.raises(ModelError, match=r"\(N, 3, H, W\)"):
        kernel_influence(torch.rand(2, 4, 6, 6), conv)
    with pytest.raises(ModelError, match="nn.Conv2d"):
        kernel_influence(x, nn.Linear(3, 2))
    with pytest.raises(ModelError, match="targets"):
        kernel_influence(x, conv, targets=[2])


# ------------------------------------------------------------------------------- grad × act: one conv


def single_conv_model(seed: int = 0, bomb: bool = False) -> AnalysedModel:
    """conv0 (2→3, bias) → ReLU → conv1 (3→4, 3×3, stride 2, padding 1, no bias) → ReLU → pool → fc
    (with ``bomb``: a Bomb, identity until armed, between conv1 and its ReLU)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False), *([Bomb()] if bomb else []), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    nn.init.uniform_(net[2].weight, -0.2, 0.5)  # mostly positive: every peak of conv1 is > 0
    return AnalysedModel(net, mean=(0.0, 0.0), std=(1.0, 1.0), input_shape=(2, 8, 8), class_names=("a", "b", "c"))


def test_grad_x_act_equals_the_kernel_slice_at_the_peak_for_one_bias_free_conv():
    model = single_conv_model()
    net = model.net
    x = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():  # a hand-written forward: the modules called one by one, no taps
        source = torch.relu(net[0](x))
        output = net[2](source)
    targets, sources = [3, 0, 2], [2, 0, 1]
    got = grad_x_act_influence(model, x, "1", "2", targets=targets, source_channels=sources)
    assert got.shape == (3, 3, 3)
    weight = net[2].weight.detach()
    for n in range(3):
        for t, j in enumerate(targets):
            peak = int(output[n, j].flatten().argmax())
            oh, ow = divmod(peak, output.shape[-1])
            for s, i in enumerate(sources):
                expected = loop_slice_conv(source[n, i], weight[j, i], 2, 1, 1, oh, ow)
                assert float(got[n, t, s]) == pytest.approx(expected, abs=1e-5)
                # and the sources of a target's peak add up to the peak itself (no bias)
            assert float(grad_x_act_influence(model, x[n:n + 1], "1", "2", [j])[0, 0].sum()) == \
                pytest.approx(float(output[n, j].max()), abs=1e-5)
    # through the ReLU after it: the same where the peak is positive (it is, for these images)
    assert torch.all(output[:, targets].flatten(2).amax(-1) > 0)
    torch.testing.assert_close(grad_x_act_influence(model, x, "1", "3", targets, sources), got)


# ------------------------------------------------------------------------------ grad × act: residual


class OpaqueBomb(Bomb):
    """A Bomb torch.fx cannot trace into (data-dependent branch), so the traced copy calls it as one layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() == x.sum()):
            return super().forward(x)
        return x


class ResidualToy(nn.Module):
    """s = relu(conv_a(x)); r = relu(conv_b(s) + s); t = maxpool2(r); logits from t's mean."""

    def __init__(self, bomb: bool = False) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(1, 3, 3, padding=1)
        self.bomb = OpaqueBomb() if bomb else nn.Identity()
        self.conv_b = nn.Conv2d(3, 3, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.conv_a(x))
        r = torch.relu(self.bomb(self.conv_b(s)) + s)
        return self.fc(self.pool(r).mean(dim=(2, 3)))


def residual_model(bomb: bool = False) -> AnalysedModel:
    torch.manual_seed(2)
    net = ResidualToy(bomb)
    with torch.no_grad():
        net.conv_b.bias.copy_(torch.tensor([0.3, -0.2, 0.5]))
    return AnalysedModel(net, mean=(0.0,), std=(1.0,), input_shape=(1, 6, 6), class_names=("a", "b", "c"))


def test_grad_x_act_through_a_residual_add_and_pooling_equals_a_hand_computation():
    model = residual_model()
    net = model.net
    x = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        s = torch.relu(net.conv_a(x))
        r = torch.relu(net.conv_b(s) + s)
    got = grad_x_act_influence(model, x, "relu", "pool", targets=[0, 1, 2])
    # by hand: max pool(r_j) = r_j at its (unique) peak p; d r_j[p] / d s_i = W_b[j, i] around p, plus the
    # skip (i == j) at p; so infl(i → j) = [(s_i ⋆ W_b[j, i])[p] + δ_ij s_i[p]] · 1[r_j[p] > 0]
    weight = net.conv_b.weight.detach()
    for n in range(4):
        for j in range(3):
            oh, ow = divmod(int(r[n, j].flatten().argmax()), 6)
            for i in range(3):
                expected = loop_slice_conv(s[n, i], weight[j, i], 1, 1, 1, oh, ow)
                expected += float(s[n, i, oh, ow]) if i == j else 0.0
                expected *= float(r[n, j, oh, ow] > 0)
                assert float(got[n, j, i]) == pytest.approx(expected, abs=1e-5)


# ---------------------------------------------------------------------------------- on the demo model


@pytest.fixture(scope="module")
def demo():
    return load_model("fashion-resnet")


@pytest.fixture(scope="module")
def images():
    return torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(7))


def hand_block_influence(demo: AnalysedModel, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
    """layer1.relu → layer1 by a hand-written forward of the block and one autograd call per image and target."""
    net = demo.net
    with torch.no_grad():
        stem = net.stem(demo.normalize(x))
    result = torch.zeros(len(x), len(targets), 32)
    for n in range(len(x)):
        inner = torch.relu(net.layer1.bn1(net.layer1.conv1(stem[n:n + 1]))).detach().requires_grad_(True)
        out = torch.relu(net.layer1.bn2(net.layer1.conv2(inner)) + stem[n:n + 1])
        for t, j in enumerate(targets):
            (grad,) = torch.autograd.grad(out[0, j].max(), inner, retain_graph=True)
            result[n, t] = (grad * inner).sum(dim=(2, 3))[0].detach()
    return result


def test_grad_x_act_on_the_demo_residual_block_and_batch_invariance(demo, images):
    targets = [5, 17, 0, 31]
    expected = hand_block_influence(demo, images, targets)
    got = grad_x_act_influence(demo, images, "layer1.relu", "layer1", targets, batch_size=4)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # invariant to batch composition: other batch sizes, another order, an image alone, targets chunked
    order = [4, 0, 5, 2, 1, 3]
    for kwargs in ({"batch_size": 1}, {"batch_size": 64}, {"max_elements": 1}):
        torch.testing.assert_close(grad_x_act_influence(demo, images, "layer1.relu", "layer1", targets, **kwargs),
                                   got, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grad_x_act_influence(demo, images[order], "layer1.relu", "layer1", targets,
                                                    batch_size=3), got[order], atol=1e-6, rtol=1e-5)
    sub = grad_x_act_influence(demo, images, "layer1.relu", "layer1", [17], source_channels=[30, 2])
    torch.testing.assert_close(sub, got[:, 1:2, [30, 2]], atol=1e-6, rtol=1e-5)


def test_grad_x_act_across_several_layers_of_the_demo_model(demo, images):
    # stem → layer2.relu: a whole residual block and a strided convolution; hand-written forward
    net = demo.net
    targets = [3, 40]
    got = grad_x_act_influence(demo, images[:3], "stem", "layer2.relu", targets)
    for n in range(3):
        with torch.no_grad():
            stem = net.stem(demo.normalize(images[n:n + 1]))
        stem.requires_grad_(True)
        block = net.layer1(stem)
        out = torch.relu(net.layer2.bn1(net.layer2.conv1(block)))
        for t, j in enumerate(targets):
            (grad,) = torch.autograd.grad(out[0, j].max(), stem, retain_graph=True)
            torch.testing.assert_close(got[n, t], (grad * stem).sum(dim=(2, 3))[0].detach(), atol=1e-5, rtol=1e-4)


def test_grad_x_act_from_an_output_that_an_in_place_relu_overwrites(demo, images):
    # stem.1 (batch norm) is overwritten by the stem's ReLU(inplace=True); the source must keep its values
    net = demo.net
    got = grad_x_act_influence(demo, images[:2], "stem.1", "layer1.relu", [7])
    for n in range(2):
        with torch.no_grad():
            normed = net.stem[1](net.stem[0](demo.normalize(images[n:n + 1])))
        normed.requires_grad_(True)
        out = torch.relu(net.layer1.bn1(net.layer1.conv1(torch.relu(normed))))
        (grad,) = torch.autograd.grad(out[0, 7].max(), normed)
        torch.testing.assert_close(got[n, 0], (grad * normed).sum(dim=(2, 3))[0].detach(), atol=1e-5, rtol=1e-4)


def test_no_hook_left_and_grad_mode_restored(demo, images):
    grad_x_act_influence(demo, images[:2], "stem", "layer1.relu", [0, 1])
    assert_no_hooks(demo.net)
    assert not demo._taps.active
    assert torch.is_grad_enabled()
    with torch.no_grad():
        grad_x_act_influence(demo, images[:2], "layer3", "layer4", [0])
        assert not torch.is_grad_enabled()
    assert_no_hooks(demo.net)


@pytest.mark.parametrize("path", ["hooks", "fx-copy"])
def test_no_hook_left_when_the_forward_raises(path):
    if path == "hooks":  # every tapped layer is a module output: forward hooks on the network
        model = single_conv_model(bomb=True)
        source, target, bomb, x = "1", "4", model.net[3], torch.rand(2, 2, 8, 8)
    else:  # a functional relu is tapped: the torch.fx copy runs
        model = residual_model(bomb=True)
        source, target, bomb, x = "relu", "pool", model.net.bomb, torch.rand(2, 1, 6, 6)
    bomb.armed = True  # raises between the source and the target
    for enabled in (True, False):
        with torch.set_grad_enabled(enabled), pytest.raises(RuntimeError, match="boom"):
            grad_x_act_influence(model, x, source, target, [0])
        assert_no_hooks(model.net)
        assert not model._taps.active
        assert torch.is_grad_enabled()
    bomb.armed = False
    grad_x_act_influence(model, x, source, target, [0])
    assert_no_hooks(model.net)


def test_bad_arguments_are_refused_before_any_forward(demo, images):
    calls = []
    handle = demo.net.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        for args, message in [(("layer2", "layer1", [0]), "no path"),
                              (("layer1", "layer1", [0]), "no path"),
                              (("layer1", "layer2.relu", [64]), "targets"),
                              (("layer1", "layer2.relu", []), "targets"),
                              (("nope", "layer2.relu", [0]), "no layer named")]:
            with pytest.raises(ModelError, match=message):
                grad_x_act_influence(demo, images, *args)
        with pytest.raises(ModelError, match="source_channels"):
            grad_x_act_influence(demo, images, "layer1", "layer2.relu", [0], source_channels=[32])
        with pytest.raises(ModelError, match="N×1×28×28"):
            grad_x_act_influence(demo, images[:, :, :20], "layer1", "layer2.relu", [0])
        with pytest.raises(ModelError, match="batch_size"):
            grad_x_act_influence(demo, images, "layer1", "layer2.relu", [0], batch_size=0)
    finally:
        handle.remove()
    assert calls == []
