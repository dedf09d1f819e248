"""Datapath extraction, critical sets and the chain on the tiny seeded CNN (spec-003 §1, checks A3, A5, A15)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlens.datapaths import critical_set, datapath_chain, extract_datapaths, gate_layout
from advlens.errors import AdvlensError, ConfigError, ModelError
from advlens.models import AnalysedModel

LAYERS = ["1", "3"]  # the tiny net's two ReLU outputs: 4 + 6 gates


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def hooks_left(net: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules())


def test_default_gate_points_of_the_demo_model():
    from advlens.models import load_model
    layout = gate_layout(load_model("fashion-resnet"))
    assert layout.layers == ("stem", "layer1.relu", "layer1", "layer2.relu", "layer2", "layer3.relu", "layer3",
                             "layer4.relu", "layer4")
    assert layout.total == 992
    from advlens.datapaths import default_r, evaluation_layers
    model = load_model("fashion-resnet")
    assert evaluation_layers(model, layout.layers) == list(layout.layers)  # widths 32 … 256 never decrease
    assert default_r(len(layout.layers)) == 3


def test_gates_multiply_whole_feature_maps(tiny_model, tiny_data):
    """z = 1 is the unpruned network; a zero gate on every map of the last ReLU leaves only the head's bias."""
    images = tiny_data.images[:4]
    layout = gate_layout(tiny_model, LAYERS)
    with torch.no_grad():
        plain = tiny_model(images)
        paths = extract_datapaths(tiny_model, images, LAYERS, steps=0)
        assert torch.equal(paths.z, torch.ones(4, 10))
        assert torch.allclose(paths.gated_probs, torch.softmax(plain, 1), atol=1e-6)
    from advlens.datapaths import gated
    z = torch.ones(4, layout.total)
    z[:, 4:] = 0
    with torch.no_grad(), gated(tiny_model, layout, z):
        logits = tiny_model(images)
    assert torch.allclose(logits, tiny_model.dense_bias.expand(4, -1), atol=1e-6)


def test_an_image_does_not_depend_on_its_batch(tiny_model, tiny_data):
    """Each image with its own reference: together, in chunks of 4 and alone give the same gates."""
    images = tiny_data.images[:6]
    refs = torch.rand(6, 1, 10, generator=torch.Generator().manual_seed(2))
    options = dict(steps=60, gamma=0.5, references=refs)
    together = extract_datapaths(tiny_model, images, LAYERS, **options)
    chunks = extract_datapaths(tiny_model, images, LAYERS, batch_size=4, **options)
    alone = torch.cat([extract_datapaths(tiny_model, images[i:i + 1], LAYERS, steps=60, gamma=0.5,
                                         references=refs[i:i + 1]).z for i in range(6)])
    assert torch.allclose(together.z, alone, atol=1e-5)
    assert torch.allclose(together.z, chunks.z, atol=1e-5)
    assert not torch.allclose(together.z, extract_datapaths(tiny_model, images, LAYERS, steps=60).z, atol=1e-3)


def test_region_gate_multiplies_only_the_region():
    """a ← a·(1 + R(z − 1)): inside R the map is scaled by its gate, outside it keeps its values."""
    from advlens.datapaths.gates import gate_function
    value = torch.arange(32, dtype=torch.float32).view(1, 2, 4, 4)
    region = torch.zeros(4, 4)
    region[1:3, 0:2] = 1
    out = gate_function(torch.tensor([[0.0, 0.5]]), region)(value)
    expected = value.clone()
    expected[0, 0, 1:3, 0:2] = 0.0
    expected[0, 1, 1:3, 0:2] *= 0.5
    assert torch.equal(out, expected)


def test_sparsity_falls_as_lambda_rises(tiny_model, tiny_data):
    """A3 (tiny net): the mean kept fraction strictly decreases over λ̃ ∈ {0.003, 0.01, 0.03, 0.1} (the tiny
    net's softmax is saturated, so its grid is lower than the spec's; the demo-model check is in the slow tests)."""
    images = tiny_data.images[:12]
    kept = [extract_datapaths(tiny_model, images, LAYERS, lam=lam, steps=150).kept_fraction().mean().item()
            for lam in (0.003, 0.01, 0.03, 0.1)]
    assert all(a > b for a, b in zip(kept, kept[1:])), kept


def test_continuous_datapaths_keep_the_prediction(tiny_model, tiny_data):
    images = tiny_data.images[:12]
    paths = extract_datapaths(tiny_model, images, LAYERS, lam=0.1, steps=150)
    assert torch.equal(paths.labels, tiny_model(images).argmax(1))
    assert paths.label_kept.all()
    assert (paths.z >= 0).all() and (paths.z <= 1).all()
    assert paths.kept_fraction().mean() < 1  # something was pruned


def masked_labels(model: AnalysedModel, images: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
    """Predictions with gates = masks, one image at a time, multiplying the maps by hand."""
    labels = []
    for image, mask in zip(images, masks):
        first, second = mask[:4].float().view(1, 4, 1, 1), mask[4:].float().view(1, 6, 1, 1)
        with torch.no_grad(), model.tapping((), {"1": lambda a, m=first: a * m, "3": lambda a, m=second: a * m}):
            labels.append(int(model(image[None]).argmax()))
    return torch.tensor(labels)


def test_label_guard_against_a_plain_loop(tiny_model, tiny_data):
    """Random gates make many labels flip at τ = .5; the guard's τ_i is the first of .5, .45, … ≥ .05 that keeps it."""
    images = tiny_data.images[:10]
    paths = extract_datapaths(tiny_model, images, LAYERS, steps=0)
    from dataclasses import replace
    random_z = torch.rand(10, 10, generator=torch.Generator().manual_seed(5))
    paths = replace(paths, z=random_z)
    guarded = critical_set(paths, 0.5, model=tiny_model, images=images)
    plain = critical_set(paths, 0.5)
    assert torch.equal(plain.mask, random_z >= 0.5) and plain.label_kept is None
    for i in range(10):
        expected, found = 0.5, False
        for step in range(10):
            tau = round(0.5 - 0.05 * step, 10)
            if masked_labels(tiny_model, images[i:i + 1], [random_z[i] >= tau])[0] == paths.labels[i]:
                expected, found = tau, True
                break
        assert guarded.tau[i].item() == pytest.approx(expected)
        assert bool(guarded.label_kept[i]) == found and bool(guarded.flagged[i]) == (not found)
        assert torch.equal(guarded.mask[i], random_z[i] >= guarded.tau[i])
    assert (guarded.tau < 0.5).any()  # the guard did lower some τ
    kept = masked_labels(tiny_model, images, list(guarded.mask))
    assert torch.equal(kept[guarded.label_kept], paths.labels[guarded.label_kept])


def test_chain_semantics(tiny_model, tiny_data):
    """A5 (tiny net): adv's z does not depend on γ̃; γ̃ = 0 is independent extraction bit for bit;
    the mean distances src–adv and tar–adv fall as γ̃ rises."""
    images = tiny_data.images
    adversarial, source = images[0:4], images[1:5]
    targets = images[5:17].view(4, 3, 1, 8, 8)
    options = dict(steps=100, lam=0.1)
    chains = {g: datapath_chain(tiny_model, adversarial, source, targets, LAYERS, gamma=g, **options)
              for g in (0.0, 0.1, 0.3, 1.0)}
    assert all(torch.equal(chains[0.0].adv.z, c.adv.z) for c in chains.values())
    assert torch.equal(chains[0.0].src.z, extract_datapaths(tiny_model, source, LAYERS, gamma=0.0, **options).z)
    assert torch.equal(chains[0.0].tar.z, extract_datapaths(tiny_model, targets.reshape(12, 1, 8, 8), LAYERS,
                                                            **options).z)
    src_dist = [torch.linalg.vector_norm(c.src.z - c.adv.z, dim=1).mean().item() for c in chains.values()]
    tar_dist = [c.target_distances().mean().item() for c in chains.values()]
    assert all(a > b for a, b in zip(src_dist, src_dist[1:])), src_dist
    assert all(a > b for a, b in zip(tar_dist, tar_dist[1:])), tar_dist
    chain = chains[0.1]
    assert chain.target_distances().shape == (4, 3)
    manual = torch.stack([torch.linalg.vector_norm(chain.tar.z[a * 3:(a + 1) * 3] - chain.adv.z[a], dim=1)
                          for a in range(4)])
    assert torch.equal(chain.representative(), manual.argmin(dim=1))
    for sets in (chain.adv_set, chain.src_set, chain.tar_set):
        assert sets.label_kept[~sets.flagged].all()


class Bomb(nn.Module):
    """Identity that raises on its n-th call once armed."""

    def __init__(self) -> None:
        super().__init__()
        self.armed, self.calls = False, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.armed:
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("boom")
        return x


def test_no_hook_is_left_behind_even_when_a_forward_raises(tiny_model, tiny_data):
    """A15: no hooks, no tap registrations, the network's output bit-identical after extraction; the same
    after a forward pass that raises mid-optimisation."""
    images = tiny_data.images[:5]
    before = tiny_model(images).detach()
    weights = [p.detach().clone() for p in tiny_model.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in tiny_model.parameters()]
    extract_datapaths(tiny_model, images, LAYERS, steps=5)
    critical_set(extract_datapaths(tiny_model, images, LAYERS, steps=5), model=tiny_model, images=images)
    assert hooks_left(tiny_model.net) == 0 and not tiny_model._taps.active
    assert torch.equal(tiny_model(images), before)
    for p, w, g in zip(tiny_model.parameters(), weights, grads):  # frozen: weights and their grads untouched
        assert torch.equal(p, w) and (p.grad is g is None or torch.equal(p.grad, g))

    bomb = Bomb()
    net = nn.Sequential(*list(tiny_model.net)[:2], bomb, *list(tiny_model.net)[2:])
    model = AnalysedModel(net, mean=(0.5,), std=(0.25,), input_shape=(1, 8, 8), class_names=("a", "b", "c"))
    bomb.armed = True
    with pytest.raises(RuntimeError, match="boom"):
        extract_datapaths(model, images, ["1", "4"], steps=10)
    assert hooks_left(model.net) == 0 and not model._taps.active
    bomb.armed = False
    assert torch.equal(model(images), before)


def test_hygiene_on_the_traced_path_of_the_demo_model():
    """The demo model's inner ReLUs are functional ops (the torch.fx copy runs): same guarantees."""
    from advlens.models import load_model
    model = load_model("fashion-resnet")
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    before = model(images).detach()
    extract_datapaths(model, images, steps=2)
    assert hooks_left(model.net) == 0 and not model._taps.active
    handle = model.net.layer3.conv1.register_forward_hook(lambda *_: (_ for _ in ()).throw(RuntimeError("boom")))
    try:
        with pytest.raises(RuntimeError, match="boom"):
            extract_datapaths(model, images, steps=2)
    finally:
        handle.remove()
    assert hooks_left(model.net) == 0 and not model._taps.active
    assert torch.equal(model(images), before)


def test_bad_input_is_refused_before_any_work(tiny_model, tiny_data):
    images = tiny_data.images[:2]
    cases = [
        (dict(lam=-1), ConfigError, "lam"),
        (dict(gamma="x"), ConfigError, "gamma"),
        (dict(steps=-3), ConfigError, "steps"),
        (dict(lr=0), ConfigError, "lr"),
        (dict(optimizer="lbfgs"), ConfigError, "optimizer"),
        (dict(batch_size=0), ConfigError, "batch_size"),
        (dict(references=torch.zeros(2, 1, 7)), ConfigError, "references"),
    ]
    for kwargs, error, word in cases:
        with pytest.raises(error, match=word):
            extract_datapaths(tiny_model, images, LAYERS, **kwargs)
    with pytest.raises(ModelError, match="expects images"):
        extract_datapaths(tiny_model, torch.zeros(2, 3, 8, 8), LAYERS)
    with pytest.raises(ModelError):
        extract_datapaths(tiny_model, images, ["nope"])
    with pytest.raises(ModelError, match="twice"):
        extract_datapaths(tiny_model, images, ["1", "1"])
    with pytest.raises(ConfigError, match="at least one image"):
        extract_datapaths(tiny_model, images[:0], LAYERS)
    other = extract_datapaths(tiny_model, images, ["1"], steps=0)
    with pytest.raises(ConfigError, match="same layers"):
        extract_datapaths(tiny_model, images, LAYERS, references=[other])
    with pytest.raises(ConfigError, match="tau"):
        critical_set(other, 1.5)
    with pytest.raises(ConfigError, match="both"):
        critical_set(other, model=tiny_model)
    with pytest.raises(ConfigError, match="targets"):
        datapath_chain(tiny_model, images, images, images, LAYERS)
    assert issubclass(ConfigError, AdvlensError)
