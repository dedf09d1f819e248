"""Toy networks with hand-set weights whose datapaths and contributions are known exactly (spec-003 §6)."""

from __future__ import annotations

import torch
from torch import nn

from advlens.models import AnalysedModel


def _set(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    with torch.no_grad():
        module.weight.copy_(weight)
        if module.bias is not None:
            module.bias.copy_(torch.zeros_like(module.bias) if bias is None else bias)


def exact_path_model() -> AnalysedModel:
    """A1: conv1 (4 maps) → ReLU ("1") → conv2 (4 maps) → ReLU ("3") → GAP → linear head (3 classes).

    conv1 map 0 copies the input, maps 1–3 are active copies (×0.5, ×0.8, ×1.2) that conv2 never reads;
    conv2 map 2 = ReLU(conv1 map 0), its other maps have zero weights; the head reads only conv2 map 2
    (logits 4g, 0, −4g). The exact datapath is {"1": 0, "3": 2}.
    """
    conv1, conv2, head = nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.Conv2d(4, 4, 3, padding=1, bias=False), \
        nn.Linear(4, 3)
    w1 = torch.zeros(4, 1, 3, 3)
    for k, scale in enumerate((1.0, 0.5, 0.8, 1.2)):
        w1[k, 0, 1, 1] = scale
    w2 = torch.zeros(4, 4, 3, 3)
    w2[2, 0, 1, 1] = 1.0
    wh = torch.zeros(3, 4)
    wh[0, 2], wh[2, 2] = 4.0, -4.0
    _set(conv1, w1)
    _set(conv2, w2)
    _set(head, wh)
    net = nn.Sequential(conv1, nn.ReLU(), conv2, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    return AnalysedModel(net, mean=(0.0,), std=(1.0,), input_shape=(1, 6, 6), class_names=("a", "b", "c"))


def twin_maps_model() -> AnalysedModel:
    """A6: 1×1 identity conv → ReLU ("1", maps a, b, junk) → GAP → logit₀ = 0, logit₁ = GAP(a) + GAP(b).

    Inputs are normalised with std 0.5, so a pixel value v gives a map value 2v.
    """
    conv, head = nn.Conv2d(3, 3, 1, bias=False), nn.Linear(3, 2)
    _set(conv, torch.eye(3).view(3, 3, 1, 1))
    _set(head, torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))
    net = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    return AnalysedModel(net, mean=(0.0, 0.0, 0.0), std=(0.5, 0.5, 0.5), input_shape=(3, 4, 4),
                         class_names=("zero", "one"))


def twin_images(first: tuple[float, float, float], second: tuple[float, float, float]) -> torch.Tensor:
    """Constant images whose maps (a, b, junk) take the given values. Shape: (2, 3, 4, 4)."""
    values = torch.tensor([first, second]) / 2  # undo the std of 0.5
    return values.view(2, 3, 1, 1).expand(2, 3, 4, 4).clone()


def aoi_model() -> AnalysedModel:
    """A12: 1×1 identity conv → ReLU ("1": m0, m1, m2) → t = ReLU(m0 + m1 + m2) ("3") → GAP → head."""
    conv1, conv2, head = nn.Conv2d(3, 3, 1, bias=False), nn.Conv2d(3, 1, 1, bias=False), nn.Linear(1, 2)
    _set(conv1, torch.eye(3).view(3, 3, 1, 1))
    _set(conv2, torch.ones(1, 3, 1, 1))
    _set(head, torch.tensor([[1.0], [-1.0]]))
    net = nn.Sequential(conv1, nn.ReLU(), conv2, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    return AnalysedModel(net, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), input_shape=(3, 6, 6),
                         class_names=("on", "off"))


def aoi_image(outside: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """m0 = m1 = 1 inside the top-left 3×3 AOI, m2 = ``outside`` elsewhere. Shapes: (1, 3, 6, 6), AOI (6, 6)."""
    aoi = torch.zeros(6, 6, dtype=torch.bool)
    aoi[:3, :3] = True
    image = torch.zeros(1, 3, 6, 6)
    image[0, 0][aoi] = 1.0
    image[0, 1][aoi] = 1.0
    image[0, 2][~aoi] = outside
    return image, aoi


# ------------------------------------------------------------------------------------------------- tests

import pytest  # noqa: E402

from advlens.datapaths import contribution, critical_set, extract_datapaths  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_exact_datapath_of_a_hand_set_network():
    """A1: the 6 unused gates end ≤ 0.05, the 2 used ones are the two largest; D = {1: 0, 3: 2}, label kept."""
    model = exact_path_model()
    images = 0.5 + 0.4 * torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    paths = extract_datapaths(model, images, ["1", "3"], lam=0.1, steps=200)
    used = torch.zeros(8, dtype=torch.bool)
    used[0] = used[4 + 2] = True
    assert paths.z[:, ~used].max() <= 0.05
    assert paths.z[:, used].min(dim=1).values.gt(paths.z[:, ~used].max(dim=1).values).all()
    assert (paths.labels == 0).all()  # 4·g > 0 for the bright images: class "a"
    sets = critical_set(paths, 0.5, model=model, images=images)
    assert sets.indices(0, "1") == [0] and sets.indices(0, "3") == [2]
    assert sets.mask.eq(used).all() and sets.label_kept.all()


def _junk_free(z: torch.Tensor) -> bool:
    return bool(z[:, 2].max() <= 0.05)


def test_chain_removes_the_randomness_of_equivalent_maps():
    """A6: independently ex. 1 keeps a and ex. 2 keeps b; chained after ex. 1 (γ̃ = 0.1) ex. 2 keeps a too."""
    model = twin_maps_model()
    images = twin_images((1.5, 1.0, 0.7), (1.0, 1.5, 0.7))
    alone = extract_datapaths(model, images, ["1"], lam=0.3, gamma=0.0, steps=1000)
    d_alone = critical_set(alone, 0.5).mask
    assert d_alone.tolist() == [[True, False, False], [False, True, False]]
    first = alone.take([0])
    chained = extract_datapaths(model, images[1:], ["1"], references=[first], lam=0.3, gamma=0.1, steps=1000)
    assert critical_set(chained, 0.5).mask.tolist() == [[True, False, False]]
    assert _junk_free(alone.z) and _junk_free(chained.z)


def test_chain_with_sgd_solver_agrees():
    """A6 with plain SGD (lr 1.0, momentum 0.9): the same critical sets."""
    model = twin_maps_model()
    images = twin_images((1.5, 1.0, 0.7), (1.0, 1.5, 0.7))
    options = dict(lam=0.3, steps=1000, lr=1.0, optimizer="sgd")
    alone = extract_datapaths(model, images, ["1"], gamma=0.0, **options)
    chained = extract_datapaths(model, images[1:], ["1"], references=[alone.take([0])], gamma=0.1, **options)
    assert critical_set(alone, 0.5).mask.tolist() == [[True, False, False], [False, True, False]]
    assert critical_set(chained, 0.5).mask.tolist() == [[True, False, False]]


LAM = 0.1




@pytest.mark.parametrize("method", ["sgd", "fast"])
def test_area_of_interest_beats_the_whole_map(method):
    """A12 with hand-solved optima (n' = 3, so the sparsity weight per gate is λ̃/3; ReLU(t) > 0 where it matters,
    so f is linear in z). AOI: f = m0 z0 + m1 z1 at 9 cells (m2 = 0 there), ‖f‖² = 36, minimise
    9(2 − z0 − z1)²/36 + (λ̃/3)Σz → z0 = z1 = 1 − (λ̃/3)·36/18/2, z2 = 0. Whole map: ‖f‖² = 9·4 + 27·4 = 144,
    minimise [9(2 − z0 − z1)² + 27·4(1 − z2)²]/144 + (λ̃/3)Σz → z0 = z1 = 1 − (λ̃/3)·144/18/2,
    z2 = 1 − (λ̃/3)·144/216: m2 first."""
    model = aoi_model()
    image, aoi = aoi_image(outside=2.0)
    # whole map: d/dz0 [9(2 − z0 − z1)² + 27·4(1 − z2)²]/144 + λ̃/3 = 0
    whole_z01 = 1 - (LAM / 3) * 144 / (2 * 9) / 2
    whole_z2 = 1 - (LAM / 3) * 144 / (2 * 27 * 4)
    local_z01 = 1 - (LAM / 3) * 36 / (2 * 9) / 2
    whole = contribution(model, image, "3", 0, "1", method=method, lam=LAM, steps=300)
    local = contribution(model, image, "3", 0, "1", aoi, method=method, lam=LAM, steps=300)
    assert whole.ranking(0)[0] == 2  # m2 drives the whole map most
    assert whole.z[0].tolist() == pytest.approx([whole_z01, whole_z01, whole_z2], abs=0.01)
    assert set(local.ranking(0)[:2]) == {0, 1}
    assert local.z[0, 2] <= 0.05
    assert local.z[0, :2].tolist() == pytest.approx([local_z01, local_z01], abs=0.01)
    assert local.region.equal(aoi)  # same grid: the corresponding region is the AOI itself


def test_silent_area_of_interest_has_nothing_to_explain():
    """An example whose AOI is inactive gets z = 0 (spec-003 §2), the other one is analysed as usual."""
    model = aoi_model()
    image, aoi = aoi_image()
    dark = torch.zeros_like(image)
    result = contribution(model, torch.cat([image, dark]), "3", 0, "1", aoi, lam=LAM, steps=100)
    assert result.silent.tolist() == [False, True]
    assert result.z[1].abs().max() == 0
    assert result.default_example == 0
    assert set(result.ranking(0)[:2]) == {0, 1}
