"""ModelGraph: layer names, kinds, blocks, layer lists, paths and receptive fields.

Expected graphs are written out by hand from each model's ``forward``; receptive fields are checked
against hand arithmetic and against the support of autograd gradients on positive-weight copies
(every input pixel inside a unit's window then reaches the unit, and none outside does).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlens.errors import ModelError
from advlens.models.adapter import AnalysedModel
from advlens.models.efficientnet import efficientnet_lite0
from advlens.models.fashion_resnet import FashionResNet
from advlens.models.graph import build_graph

DEMO_LAYERS = ["stem", "layer1.relu", "layer1", "layer2.relu", "layer2", "layer3.relu", "layer3",
               "layer4.relu", "layer4"]


@pytest.fixture(scope="module")
def demo_graph():
    torch.manual_seed(0)
    return AnalysedModel(FashionResNet(), (0.286,), (0.353,), (1, 28, 28), [str(c) for c in range(10)]).graph


class UserNet(nn.Module):
    """Functional ReLUs in ``forward``, one module (``act``) called twice, a functional conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1)
        self.weight = nn.Parameter(torch.ones(2, 2, 1, 1))
        self.fc = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act(self.conv1(x))
        b = torch.relu(self.conv2(a) - 1.0)
        c = self.act(F.conv2d(b, self.weight) + a)
        return self.fc(F.adaptive_avg_pool2d(F.relu(c), 1).flatten(1))


# ------------------------------------------------------------------------------------------ demo model


def test_demo_activation_layers_and_channels(demo_graph):
    assert demo_graph.method == "fx"
    layers = demo_graph.activation_layers()
    assert layers == DEMO_LAYERS
    channels = [demo_graph[name].channels for name in layers]
    assert channels == [32, 32, 32, 64, 64, 128, 128, 256, 256] and sum(channels) == 992


def test_demo_nodes_names_kinds_blocks_inputs(demo_graph):
    by_name = {node.name: node for node in demo_graph.nodes}
    assert demo_graph.nodes[0].name == "input" and demo_graph.nodes[0].shape == (1, 28, 28)
    assert demo_graph.output == "fc"
    expected = {  # name: (op, kind, block, inputs, shape)
        "stem.0": ("Conv2d", "weighted", "stem", ("input",), (32, 28, 28)),
        "stem.1": ("BatchNorm2d", "parametric", "stem", ("stem.0",), (32, 28, 28)),
        "stem": ("ReLU", "other", "stem", ("stem.1",), (32, 28, 28)),
        "layer2.conv1": ("Conv2d", "weighted", "layer2", ("layer1",), (64, 14, 14)),
        "layer2.relu": ("relu", "other", "layer2", ("layer2.bn1",), (64, 14, 14)),
        "layer2.shortcut.0": ("Conv2d", "weighted", "layer2.shortcut", ("layer1",), (64, 14, 14)),
        "layer2.add": ("add", "other", "layer2", ("layer2.bn2", "layer2.shortcut"), (64, 14, 14)),
        "layer2": ("relu", "other", "layer2", ("layer2.add",), (64, 14, 14)),
        "layer1.add": ("add", "other", "layer1", ("layer1.bn2", "stem"), (32, 28, 28)),
        "avgpool": ("AdaptiveAvgPool2d", "other", "", ("layer4",), (256, 1, 1)),
        "flatten": ("flatten", "other", "", ("avgpool",), (256,)),
        "fc": ("Linear", "weighted", "", ("flatten",), (10,)),
    }
    for name, (op, kind, block, inputs, shape) in expected.items():
        node = by_name[name]
        assert (node.op, node.kind, node.block, node.inputs, node.shape) == (op, kind, block, inputs, shape), name
    # module names stay valid aliases of the tensors they return
    assert demo_graph.resolve("stem.2") == "stem"
    assert demo_graph.resolve("layer2.shortcut.1") == "layer2.shortcut"
    assert demo_graph.resolve("layer1.shortcut") == "stem"  # the identity shortcut returns its input
    assert len(demo_graph.names()) == len(set(demo_graph.names())) == len(demo_graph)


def test_demo_layer_lists(demo_graph):
    assert demo_graph.block_outputs() == ["layer1", "layer2", "layer3", "layer4"]
    assert demo_graph.weighted_layers() == [
        "stem.0", "layer1.conv1", "layer1.conv2", "layer2.conv1", "layer2.conv2", "layer2.shortcut.0",
        "layer3.conv1", "layer3.conv2", "layer3.shortcut.0", "layer4.conv1", "layer4.conv2", "layer4.shortcut.0",
        "fc"]
    assert set(demo_graph.blocks()) >= {"", "stem", "layer1", "layer2", "layer2.shortcut", "layer4"}
    assert demo_graph.blocks()["layer1"] == ["layer1.conv1", "layer1.bn1", "layer1.relu", "layer1.conv2",
                                             "layer1.bn2", "layer1.add", "layer1"]


def test_between_follows_the_main_path_not_the_shortcut(demo_graph):
    assert demo_graph.between("layer1", "layer2") == [
        "layer1", "layer2.conv1", "layer2.bn1", "layer2.relu", "layer2.conv2", "layer2.bn2", "layer2.add", "layer2"]
    assert demo_graph.between("layer2.shortcut.0", "layer2") == ["layer2.shortcut.0", "layer2.shortcut",
                                                                  "layer2.add", "layer2"]
    assert demo_graph.between("stem.2", "stem.2") == ["stem"]
    with pytest.raises(ModelError, match="no path leads from 'layer2' to 'layer1'"):
        demo_graph.between("layer2", "layer1")
    with pytest.raises(ModelError, match="no path leads from 'layer2.relu' to 'layer2.shortcut'"):
        demo_graph.between("layer2.relu", "layer2.shortcut")


def test_is_sequential(demo_graph):
    assert demo_graph.is_sequential(DEMO_LAYERS)
    assert demo_graph.is_sequential(["stem", "layer2.shortcut.0", "layer2"])
    assert not demo_graph.is_sequential(["layer2", "layer1"])  # wrong order
    assert not demo_graph.is_sequential(["layer2.relu", "layer2.shortcut"])  # parallel branches
    assert not demo_graph.is_sequential(["layer1", "stem.2", "layer2"]) and not demo_graph.is_sequential([])
    assert not demo_graph.is_sequential(["stem", "stem.2"])  # one layer twice (alias)
    with pytest.raises(ModelError, match="'layer2.relu' does not feed 'layer2.shortcut'"):
        demo_graph.check_sequential(["layer1", "layer2.relu", "layer2.shortcut"])
    assert demo_graph.sort(["layer3", "stem.2", "layer1.relu", "layer3"]) == ["stem", "layer1.relu", "layer3"]


def test_unknown_layer_suggests_close_names(demo_graph):
    with pytest.raises(ModelError, match=r"no layer named 'layer1.rleu'.*did you mean layer1.relu"):
        demo_graph.resolve("layer1.rleu")
    assert "layer1.relu" in demo_graph and "layer1.rleu" not in demo_graph


def test_records_are_json(demo_graph):
    records = json.loads(json.dumps(demo_graph.as_records()))
    assert [r["name"] for r in records] == demo_graph.names()
    stem = next(r for r in records if r["name"] == "stem")
    assert stem == {"name": "stem", "op": "ReLU", "kind": "other", "block": "stem", "inputs": ["stem.1"],
                    "shape": [32, 28, 28], "aliases": ["stem.2", "layer1.shortcut"], "activation": True}


# ---------------------------------------------------------------------------------------- user models


def test_user_model_functional_ops_and_reused_module():
    graph = build_graph(UserNet(), torch.rand(1, 1, 6, 6))
    rows = [(n.name, n.op, n.kind, n.inputs, n.activation) for n in graph.nodes]
    assert rows == [
        ("input", "input", "other", (), False),
        ("conv1", "Conv2d", "weighted", ("input",), False),
        ("act", "ReLU", "other", ("conv1",), True),
        ("conv2", "Conv2d", "weighted", ("act",), False),
        ("sub", "sub", "other", ("conv2",), False),
        ("relu", "relu", "other", ("sub",), True),
        ("conv2d", "conv2d", "weighted", ("relu",), False),
        ("add", "add", "other", ("conv2d", "act"), False),
        ("act:1", "ReLU", "other", ("add",), True),
        ("relu_1", "relu", "other", ("act:1",), True),
        ("adaptive_avg_pool2d", "adaptive_avg_pool2d", "other", ("relu_1",), False),
        ("flatten", "flatten", "other", ("adaptive_avg_pool2d",), False),
        ("fc", "Linear", "weighted", ("flatten",), False),
    ]
    assert graph.activation_layers() == ["act", "relu", "act:1", "relu_1"]
    assert graph["act:1"].hook == ("act", 1) and graph["relu"].hook is None
    assert graph.block_outputs() == []  # the add sits in the root's forward, not in a block
    assert graph.receptive_field("conv2d").size == (3, 3)


class Stage(nn.Module):
    """A block whose forward uses functional ops; two instances, one of them called twice."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + torch.relu(self.conv(x)))


class TwoStages(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 3, 3, padding=1), act=nn.ReLU()))
        self.a = Stage(3)
        self.b = Stage(3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.b(self.a(self.a(self.first(x))))
        return self.fc(x.mean((2, 3)))


def test_reused_block_calls_and_functional_names_are_scoped():
    graph = build_graph(TwoStages(), torch.rand(1, 1, 5, 5))
    names = graph.names()
    assert names[:3] == ["input", "first.conv", "first"]
    assert "a.relu" in names and "a.relu_1" not in names  # one torch.relu per call of a.forward
    assert ["a.conv", "a.relu", "a.add", "a", "a.conv:1", "a:1.relu", "a:1.add", "a:1"] == names[3:11]
    assert graph.block_outputs() == ["a", "a:1", "b"] and graph.block_outputs(residual_only=True) == ["a", "a:1", "b"]
    assert graph.activation_layers() == ["first", "a.relu", "a", "a:1.relu", "a:1", "b.relu", "b"]
    assert graph["a:1.relu"].block == "a:1" and graph["a.conv:1"].block == "a:1"
    assert graph.between("first", "a:1") == ["first", "a.conv", "a.relu", "a.add", "a", "a.conv:1", "a:1.relu",
                                             "a:1.add", "a:1"]


class Untraceable(nn.Module):
    """Data-dependent control flow in the model's own forward: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(2, 2, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv(x))
        if x.sum() > -1.0:
            x = x * 1.0
        x = self.act(self.conv2(x))
        return self.fc(self.pool(x).flatten(1))


def test_hook_order_fallback_when_tracing_fails(caplog):
    with caplog.at_level(logging.WARNING, logger="advlens.models.graph"):
        graph = build_graph(Untraceable(), torch.rand(1, 1, 6, 6))
    assert graph.method == "hooks" and graph.graph_module is None
    assert "falls back to the order of module hooks" in caplog.text
    assert graph.names() == ["input", "conv", "act", "conv2", "act:1", "pool", "fc"]
    assert graph["conv2"].inputs == ("act",) and graph["act:1"].shape == (2, 3, 3)
    assert graph.activation_layers() == ["act", "act:1"]
    field = graph.receptive_field("act:1")  # 3×3 p1, then 3×3 p1 stride 2: 3 + 2·1 = 5, start −1 − 1
    assert (field.size, field.jump, field.start) == ((5, 5), (2, 2), (-2, -2))


class DataDependentGate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.mean() > -1e9 else -x


class WithOpaqueBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.gate = DataDependentGate()
        self.fc = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.gate(self.conv(x))).amax((2, 3)))


def test_untraceable_submodule_becomes_one_opaque_layer():
    graph = build_graph(WithOpaqueBlock(), torch.rand(1, 1, 4, 4))
    assert graph.method == "fx" and graph.opaque == ("gate",)
    assert graph.names() == ["input", "conv", "gate", "relu", "amax", "fc"]
    assert graph["gate"].op == "DataDependentGate" and graph["relu"].inputs == ("gate",)


def test_kinds_of_functional_ops_with_parameters():
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(2, 1, 3, 3))
            self.scale = nn.Parameter(torch.ones(1, 2, 1, 1))
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            return self.fc(torch.sigmoid(F.conv2d(x, self.w) * self.scale).mean((2, 3)))

    graph = build_graph(Functional(), torch.rand(1, 1, 5, 5))
    kinds = {n.name: n.kind for n in graph.nodes}
    assert kinds == {"input": "other", "conv2d": "weighted", "mul": "parametric", "sigmoid": "other",
                     "mean": "other", "fc": "weighted"}
    assert graph.activation_layers() == ["sigmoid"]


# ------------------------------------------------------------------------------------ receptive fields


def pixel_model(net: nn.Module, shape: tuple[int, int, int], head: str = "fc") -> AnalysedModel:
    classes = [str(c) for c in range(net.get_submodule(head).out_features)]
    return AnalysedModel(net, (0.0,) * shape[0], (1.0,) * shape[0], shape, classes)


def gradient_box(net: nn.Module | AnalysedModel, layer: str, x: torch.Tensor, units: list[tuple[int, int]]):
    """Bounding box (top, bottom, left, right), half-open, of the input pixels each unit's gradient reaches."""
    model = net if isinstance(net, AnalysedModel) else pixel_model(net, tuple(x.shape[1:]))
    boxes = []
    for i, j in units:
        image = x.clone().requires_grad_(True)
        with model.tapping([layer]) as acts:
            model(image)
        (grad,) = torch.autograd.grad(acts[layer][0, :, i, j].sum(), image)
        rows, cols = torch.nonzero(grad[0].abs().sum(0) > 0, as_tuple=True)
        boxes.append((int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1))
    return model.graph, boxes


def positive(net: nn.Module, value: float = 0.05) -> nn.Module:
    """Every weight and bias a small positive constant, batch norms the identity."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.fill_(value if value else 1.0 / fan_in)
                if module.bias is not None:
                    module.bias.fill_(0.01)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
                module.running_var.fill_(1.0)
    return net.eval()


class ChainNet(nn.Module):
    """conv 3×3 p1 → relu → F.pad(left 2, top 1) → conv 3×3 dilation 2 stride 2 → avgpool 2 s2 p1 → conv 3×3 p1."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.b = nn.Conv2d(2, 2, 3, stride=2, dilation=2)
        self.pool = nn.AvgPool2d(2, stride=2, padding=1)
        self.c = nn.Conv2d(2, 2, 3, padding=1)
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        x = F.pad(torch.relu(self.a(x)), (2, 0, 1, 0))
        x = torch.relu(self.c(self.pool(self.b(x))))
        return self.fc(x.mean((2, 3)))


def test_receptive_field_hand_computed_chain():
    graph = build_graph(ChainNet(), torch.rand(1, 1, 32, 32))
    fields = {name: graph.receptive_field(name) for name in ("a", "pad", "b", "pool", "c")}
    # (size, jump, start) per axis, by hand: start' = start − pad·jump, size' = size + (k_eff − 1)·jump
    assert (fields["a"].size, fields["a"].jump, fields["a"].start) == ((3, 3), (1, 1), (-1, -1))
    assert (fields["pad"].size, fields["pad"].start) == ((3, 3), (-2, -3))
    assert (fields["b"].size, fields["b"].jump, fields["b"].start) == ((7, 7), (2, 2), (-2, -3))
    assert (fields["pool"].size, fields["pool"].jump, fields["pool"].start) == ((9, 9), (4, 4), (-4, -5))
    assert (fields["c"].size, fields["c"].jump, fields["c"].start) == ((17, 17), (4, 4), (-8, -9))
    c = fields["c"]
    assert c.window(0, 0) == (0, 9, 0, 8) and c.window(0, 0, clip=False) == (-8, 9, -9, 8)
    assert c.window(3, 5) == (4, 21, 11, 28) and c.center(3, 5) == (12.0, 19.0)
    rows, cols = c.slices(7, 7)
    assert (rows, cols) == (slice(20, 32), slice(19, 32))


def test_receptive_field_equals_gradient_support_chain():
    units = [(0, 0), (3, 5), (7, 7), (4, 0)]
    graph, boxes = gradient_box(positive(ChainNet()), "c", torch.ones(1, 1, 32, 32), units)
    field = graph.receptive_field("c")
    assert boxes == [field.window(i, j) for i, j in units]


def test_receptive_field_equals_gradient_support_demo_model():
    torch.manual_seed(0)
    net = pixel_model(positive(FashionResNet(), value=0.0), (1, 28, 28))
    for layer, units in {"stem": [(0, 0), (13, 20)], "layer1.relu": [(5, 5)], "layer2": [(0, 3), (6, 6)],
                         "layer3.relu": [(3, 3)], "layer4": [(0, 0), (3, 3)]}.items():
        graph, boxes = gradient_box(net, layer, torch.ones(1, 1, 28, 28), units)
        field = graph.receptive_field(layer)
        assert boxes == [field.window(i, j) for i, j in units], layer


def test_receptive_fields_of_the_demo_layers(demo_graph):
    sizes = [demo_graph.receptive_field(name).size[0] for name in DEMO_LAYERS]
    jumps = [demo_graph.receptive_field(name).jump[0] for name in DEMO_LAYERS]
    assert sizes == [3, 5, 7, 9, 13, 17, 25, 33, 41] and jumps == [1, 1, 1, 2, 2, 4, 4, 4, 4]
    assert demo_graph.receptive_field("avgpool").whole
    assert demo_graph.receptive_field("avgpool").window(0, 0) == (0, 28, 0, 28)
    with pytest.raises(ModelError, match="no spatial units"):
        demo_graph.receptive_field("fc")


def test_receptive_field_of_max_pool_and_upsampling():
    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 1, 2, stride=2), pool=nn.MaxPool2d(3, stride=2, padding=1,
                                                                                         dilation=2),
                                    up=nn.Upsample(scale_factor=2), flat=nn.Flatten()))
    graph = build_graph(net, torch.rand(1, 1, 16, 16))
    # pool: k_eff = 2·(3 − 1) + 1 = 5 in conv units of jump 2: size 2 + 4·2 = 10, start 0 − 1·2 = −2
    field = graph.receptive_field("pool")
    assert (field.size, field.jump, field.start) == ((10, 10), (4, 4), (-2, -2))
    with pytest.raises(ModelError, match="unknown: Upsample upsamples"):
        graph.receptive_field("up")


# ------------------------------------------------------------------------------------ EfficientNet-Lite0


@pytest.fixture(scope="module")
def efficientnet():
    """Random-weight EfficientNet-Lite0 with weights 1/fan-in and identity batch norms: activations stay
    positive and below ReLU6's ceiling, so gradients reach every pixel of a unit's window (64×64 input)."""
    net = positive(efficientnet_lite0(pretrained=False), value=0.0)
    return pixel_model(net, (3, 64, 64), head="_fc")


def test_efficientnet_graph_blocks_and_reused_relu6(efficientnet):
    graph = efficientnet.graph
    assert graph.method == "fx" and graph.opaque == () and graph.output == "_fc"
    assert graph.block_outputs() == [f"_blocks.{i}" for i in range(16)]  # 16 MBConv blocks
    assert graph.block_outputs(residual_only=True) == [f"_blocks.{i}" for i in (2, 4, 6, 7, 9, 10, 12, 13, 14)]
    expected = ["_swish", "_blocks.0._swish"]
    expected += [f"_blocks.{i}._swish{call}" for i in range(1, 16) for call in ("", ":1")] + ["_swish:1"]
    assert graph.activation_layers() == expected  # every call of the reused ReLU6 modules
    assert graph["_swish"].hook == ("_swish", 0) and graph["_swish:1"].hook == ("_swish", 1)
    assert graph["_swish:1"].shape == (1280, 2, 2) and graph["_blocks.1._swish:1"].block == "_blocks.1"
    # Conv2dStaticSamePadding (an nn.Conv2d with a ZeroPad2d child) stays one weighted layer
    assert graph["_conv_stem"].op == "Conv2dStaticSamePadding" and graph["_conv_stem"].kind == "weighted"
    assert not any("static_padding" in name for name in graph.names())
    assert len(graph.weighted_layers()) == 1 + 16 * 2 + 15 + 1 + 1  # stem, depthwise+project, expands, head, fc
    residual = graph["_blocks.2"]
    assert residual.op == "add" and residual.inputs == ("_blocks.2._bn2", "_blocks.1")
    assert graph["_blocks.1"].op == "BatchNorm2d" and "_blocks.1._bn2" in graph["_blocks.1"].aliases
    assert graph.between("_blocks.1", "_blocks.2") == [
        "_blocks.1", "_blocks.2._expand_conv", "_blocks.2._bn0", "_blocks.2._swish", "_blocks.2._depthwise_conv",
        "_blocks.2._bn1", "_blocks.2._swish:1", "_blocks.2._project_conv", "_blocks.2._bn2", "_blocks.2"]


def test_efficientnet_receptive_fields_static_same_padding(efficientnet):
    graph = efficientnet.graph
    stem = graph.receptive_field("_conv_stem")  # 3×3 stride 2, TensorFlow "same": pad 0 before, 1 after
    assert (stem.size, stem.jump, stem.start) == ((3, 3), (2, 2), (0, 0))
    # block 0 depthwise 3×3 (pad 1): 3 + 2·2 = 7, start −2; block 1 depthwise 3×3 stride 2 (pad 0): 7 + 2·2 = 11
    field = graph.receptive_field("_blocks.1._swish:1")
    assert (field.size, field.jump, field.start) == ((11, 11), (4, 4), (-2, -2))
    for layer, units in {"_blocks.1._swish:1": [(0, 0), (7, 9)], "_blocks.4": [(0, 0), (4, 3)]}.items():
        _, boxes = gradient_box(efficientnet, layer, torch.ones(1, 3, 64, 64), units)
        field = graph.receptive_field(layer)
        assert boxes == [field.window(i, j) for i, j in units], layer


class PaddedConv(nn.Conv2d):
    """A conv subclass that pads inside ``forward`` (all padding before), like EfficientNet's static "same"."""

    def __init__(self) -> None:
        super().__init__(1, 1, 3)
        self.static_padding = nn.ZeroPad2d((2, 0, 2, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.static_padding(x), self.weight, self.bias)


def test_receptive_field_reads_the_padding_a_conv_applies_itself():
    net = nn.Sequential(OrderedDict(conv=PaddedConv(), flat=nn.Flatten()))
    graph = build_graph(net, torch.rand(1, 1, 6, 6))
    assert graph.names() == ["input", "conv", "flat"]  # one layer, its pad child is not a node
    field = graph.receptive_field("conv")  # output 6×6 from 8×8: shapes alone would guess 1 before, 1 after
    assert (field.size, field.jump, field.start) == ((3, 3), (1, 1), (-2, -2))


def test_functional_names_never_collide_with_module_names():
    class Clash(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.relu = nn.ReLU()
            self.conv = nn.Conv2d(1, 1, 1)

        def forward(self, x):
            return torch.relu(self.relu(torch.relu(self.conv(x))))

    graph = build_graph(Clash(), torch.rand(1, 1, 3, 3))
    assert graph.names() == ["input", "conv", "relu_1", "relu", "relu_2"]
    assert graph["relu"].op == "ReLU" and graph["relu_1"].op == "relu" and graph["relu_1"].hook is None


class ViewByBatchSize(nn.Module):
    """``x.view(x.size(0), -1)`` and ``x.shape[0]`` read the input's metadata, not its values."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.fc(y.reshape(x.size(0), -1) + y.new_zeros(x.shape[0], 1))


def test_metadata_reads_are_not_data_inputs():
    graph = build_graph(ViewByBatchSize(), torch.rand(1, 1, 4, 4))
    inputs = {n.name: n.inputs for n in graph.nodes}
    assert inputs["reshape"] == ("relu",)  # not ("relu", "input"): no false edge from the model input
    assert "input" not in {p for name, parents in inputs.items() if name != "conv" for p in parents}
