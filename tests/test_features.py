"""Dataset examples, receptive-field patches and the truncated tapped forward pass.

Expected values come from hand-set toys (a single convolution whose receptive field is known by
hand) and from a plain per-image loop, never from the code under test.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from conftest import DEMO_WEIGHTS, FASHION_DIR, tiny_dataset, trained_tiny_model
from torch import nn

from advlens.errors import DatasetError, ModelError
import advlens
from advlens.features import crop_patches, dataset_examples, dataset_examples_for_layers
from advlens.features.patches import as_receptive_field
from advlens.features.taps import tapped_forward
from advlens.models import AnalysedModel
from advlens.models.receptive_field import ReceptiveField

# One convolution, kernel 3, stride 2, padding 1: unit i sees input pixels 2i − 1 … 2i + 1 (by hand),
# i.e. RF size 3, jump 2, start −1.
TOY_RF = ReceptiveField(size=(3, 3), jump=(2, 2), start=(-1, -1), input_size=(8, 8))


class Bomb(nn.Module):
    """Identity until armed; then its forward raises."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.armed:
            raise RuntimeError("boom")
        return x


def toy_model(before: nn.Module | None = None) -> AnalysedModel:
    """``conv`` has 3 hand-set channels: 0 = the centre pixel, 1 = the sum of the 3×3 window,
    2 = top-left pixel minus centre pixel. Normalization is the identity (mean 0, std 1)."""
    net = nn.Sequential(OrderedDict(
        before=before if before is not None else nn.Identity(),
        conv=nn.Conv2d(1, 3, 3, stride=2, padding=1, bias=False), after=Bomb(), relu=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(3, 2)))
    kernel = torch.zeros(3, 1, 3, 3)
    kernel[0, 0, 1, 1] = 1.0
    kernel[1] = 1.0
    kernel[2, 0, 0, 0], kernel[2, 0, 1, 1] = 1.0, -1.0
    with torch.no_grad():
        net.conv.weight.copy_(kernel)
    return AnalysedModel(net, (0.0,), (1.0,), (1, 8, 8), ("a", "b"))


def assert_no_hooks(module: nn.Module) -> None:
    for name, sub in module.named_modules():
        assert not sub._forward_hooks and not sub._forward_pre_hooks, f"hook left on {name or 'root'}"


def grid_images(count: int, seed: int = 0) -> torch.Tensor:
    """Pixels on a 1/4 grid, so every toy activation is exact in float32 and ties are exact; with duplicates."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 5, (count, 1, 8, 8), generator=generator).float() / 4
    if count > 13:
        images[7] = images[2]    # duplicates across batch boundaries (batch size 5)
        images[13] = images[2]
        images[11] = images[4]
    return images


def plain_loop_peaks(net: nn.Module, layer: str, images: torch.Tensor) -> tuple[list, list]:
    """Per image and channel: the maximal activation and its first (row-major) position, by plain loops."""
    values, positions = [], []
    module = dict(net.named_modules())[layer]
    for image in images:
        store = {}
        handle = module.register_forward_hook(lambda _m, _a, out: store.update(out=out))
        try:
            with torch.no_grad():
                net(image[None])
        finally:
            handle.remove()
        maps = store["out"][0]
        image_values, image_positions = [], []
        for channel in range(maps.shape[0]):
            best, where = None, None
            for r in range(maps.shape[1]):
                for c in range(maps.shape[2]):
                    value = float(maps[channel, r, c])
                    if best is None or value > best:
                        best, where = value, (r, c)
            image_values.append(best)
            image_positions.append(where)
        values.append(image_values)
        positions.append(image_positions)
    return values, positions


def hand_patch(image: torch.Tensor, top: int, left: int, size: int, pad_value: float) -> torch.Tensor:
    """image[:, top:top+size, left:left+size] with pad_value outside the image, by explicit indexing."""
    patch = torch.full((image.shape[0], size, size), pad_value)
    for dr in range(size):
        for dc in range(size):
            r, c = top + dr, left + dc
            if 0 <= r < image.shape[1] and 0 <= c < image.shape[2]:
                patch[:, dr, dc] = image[:, r, c]
    return patch


# ----------------------------------------------------------------------------------- receptive field


def test_patch_around_a_bright_pixel_is_the_hand_computed_window():
    model = toy_model()
    image = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8) / 128  # distinct values < 0.5
    image[0, 0, 0, 4] = 1.0  # channel 0 (the centre pixel) peaks at unit (0, 2): RF rows −1…1, cols 3…5
    examples = dataset_examples(model, "conv", image, k=1, pad_value=-1.0)  # the RF from model.graph
    assert (examples.rf.size, examples.rf.jump, examples.rf.start) == (TOY_RF.size, TOY_RF.jump, TOY_RF.start)
    assert examples.positions[0, 0].tolist() == [0, 2]
    assert examples.windows[0, 0].tolist() == [-1, 3, 2, 6]
    expected = torch.full((1, 3, 3), -1.0)
    expected[:, 1:, :] = image[0, :, 0:2, 3:6]
    assert torch.equal(examples.patches[0, 0], expected)
    assert examples.patches.shape == (3, 1, 1, 3, 3)
    # channel 1 (window sum) peaks at the bottom-right unit (3, 3): RF rows 5…7, cols 5…7, inside the image
    assert examples.positions[1, 0].tolist() == [3, 3]
    assert examples.windows[1, 0].tolist() == [5, 5, 8, 8]
    assert torch.equal(examples.patches[1, 0], image[0, :, 5:8, 5:8])


def test_rf_larger_than_the_image_gives_centred_image_sized_patches():
    # RF 11 px, jump 2, start −5: unit i covers −5 + 2i … 5 + 2i, centred on 2i; the patch (side 8, the
    # image's) covers rows 2i − 4 … 2i + 3.
    image = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8)
    rows, cols = torch.tensor([2, 0]), torch.tensor([2, 3])
    rf = as_receptive_field((11, 2, -5), (8, 8))
    patches, windows = crop_patches(image.expand(2, -1, -1, -1), rows, cols, rf, pad_value=-7)
    assert patches.shape == (2, 1, 8, 8)
    assert windows.tolist() == [[0, 0, 8, 8], [-4, 2, 4, 10]]
    assert torch.equal(patches[0], image[0])
    assert torch.equal(patches[1], hand_patch(image[0], -4, 2, 8, -7))


def test_explicit_rf_triples_override_the_graph_and_nonsense_is_refused():
    model = toy_model()
    assert as_receptive_field((3, 2, -1), (8, 8)) == TOY_RF
    assert dataset_examples(model, "conv", grid_images(16), k=2, patches=False).patches is None
    examples = dataset_examples(model, "conv", grid_images(16), k=2, rf=(5, 2, -2))
    assert examples.patches.shape == (3, 2, 1, 5, 5)
    r, c = examples.positions[0, 0].tolist()
    assert examples.windows[0, 0].tolist() == [2 * r - 2, 2 * c - 2, 2 * r + 3, 2 * c + 3]
    with pytest.raises(ModelError, match="size and jump must be ≥ 1"):
        as_receptive_field((0, 1, 0), (8, 8))
    with pytest.raises(ModelError, match="cannot read a receptive field"):
        as_receptive_field(object(), (8, 8))


# ------------------------------------------------------------------------------------ dataset examples


def test_top_k_matches_a_plain_loop_with_exact_ties_on_the_hand_set_toy():
    model = toy_model()
    images = grid_images(23)
    k = 4
    values, positions = plain_loop_peaks(model.net, "conv", images)
    seen = []
    examples = dataset_examples(model, "conv", images, k=k, batch_size=5, pad_value=-1.0, progress=seen.append)
    assert seen == [5, 10, 15, 20, 23]
    assert examples.num_images == 23 and examples.k == k and examples.num_channels == 3
    ties = 0
    for channel in range(3):
        order = sorted(range(len(images)), key=lambda i: (-values[i][channel], i))[:k]
        ties += len({values[i][channel] for i in order}) < k
        assert examples.indices[channel].tolist() == order
        assert examples.values[channel].tolist() == [values[i][channel] for i in order]
        assert examples.positions[channel].tolist() == [list(positions[i][channel]) for i in order]
        for slot, i in enumerate(order):
            r, c = positions[i][channel]
            assert torch.equal(examples.patches[channel, slot], hand_patch(images[i], 2 * r - 1, 2 * c - 1, 3, -1.0))
    assert ties >= 2, "the toy data should produce tied maxima, so tie-breaking is tested"


def test_several_layers_from_an_iterable_of_uneven_batches_match_a_plain_loop():
    data = tiny_dataset(count=45, seed=3)
    model = trained_tiny_model(tiny_dataset(), steps=20)
    batches = (data.images[a:b] for a, b in [(0, 7), (7, 8), (8, 30), (30, 45)])
    batches = ((images, torch.zeros(len(images))) for images in batches)  # (images, labels) pairs
    # the two convolutions (pre-ReLU: no dead-channel ties)
    result = dataset_examples_for_layers(model, ["0", "2"], batches, k=5)
    assert (result["0"].rf.size, result["0"].rf.jump, result["0"].rf.start) == ((3, 3), (1, 1), (-1, -1))
    assert (result["2"].rf.size, result["2"].rf.jump, result["2"].rf.start) == ((5, 5), (2, 2), (-2, -2))
    for layer, channels, size, jump, start in (("0", 4, 3, 1, -1), ("2", 6, 5, 2, -2)):
        values, positions = plain_loop_peaks(model.net, layer, model.normalize(data.images))
        examples = result[layer]
        assert examples.indices.shape == (channels, 5) and examples.num_images == 45
        for channel in range(channels):
            ranked = sorted(range(45), key=lambda i: (-values[i][channel], i))
            assert values[ranked[4]][channel] - values[ranked[5]][channel] > 1e-5, "near-tie: pick other data"
            assert examples.indices[channel].tolist() == ranked[:5]
            torch.testing.assert_close(examples.values[channel], torch.tensor([values[i][channel] for i in ranked[:5]]))
            assert examples.positions[channel].tolist() == [list(positions[i][channel]) for i in ranked[:5]]
            for slot, i in enumerate(ranked[:5]):  # patches cropped while streaming (batches are not kept)
                r, c = positions[i][channel]
                expected = hand_patch(data.images[i], start + jump * r, start + jump * c, size, 0.0)
                assert torch.equal(examples.patches[channel, slot], expected)


def test_functional_layer_of_the_demo_model_matches_a_plain_loop_and_stops_there():
    assert DEMO_WEIGHTS.is_file() and FASHION_DIR.is_dir(), "demo weights and dataset-fashion-mnist are shipped"
    model = advlens.load_model("fashion-resnet")
    images = advlens.load_dataset("fashion-mnist", split="test").images[:40]
    later_calls = []
    handle = model.net.layer2.conv1.register_forward_pre_hook(lambda *_: later_calls.append(1))
    try:
        examples = dataset_examples(model, "layer1.relu", images, k=3, batch_size=16)  # torch.relu in forward
    finally:
        handle.remove()
    assert not later_calls, "the forward pass went beyond the layer"
    assert examples.rf.size == (5, 5) and examples.patches.shape == (32, 3, 1, 5, 5)
    # plain loop: relu(bn1(conv1(stem(x)))) image by image, from the modules themselves
    net = model.net
    with torch.no_grad():
        maps = torch.cat([torch.relu(net.layer1.bn1(net.layer1.conv1(net.stem(model.normalize(x[None])))))
                          for x in images])
    peaks = maps.flatten(2).amax(dim=2)  # (N, 32)
    for channel in (0, 7, 19, 31):
        ranked = sorted(range(40), key=lambda i: (-float(peaks[i, channel]), i))[:3]
        assert examples.indices[channel].tolist() == ranked
        torch.testing.assert_close(examples.values[channel], peaks[ranked, channel])
    assert_no_hooks(model)


def test_truncated_forward_never_runs_later_layers_and_leaves_no_hook():
    model = toy_model()
    model.net.after.armed = True  # would raise if the pass went beyond "conv"
    examples = dataset_examples(model, "conv", grid_images(16), k=2)
    assert examples.values.shape == (3, 2)
    assert_no_hooks(model)
    with pytest.raises(RuntimeError, match="boom"):
        model(grid_images(1))


def test_no_hook_left_when_the_forward_pass_raises():
    bomb = Bomb()
    model = toy_model(before=bomb)
    bomb.armed = True
    with pytest.raises(RuntimeError, match="boom"):
        dataset_examples(model, "conv", grid_images(16), k=2)
    assert_no_hooks(model)
    with pytest.raises(RuntimeError, match="boom"), tapped_forward(model, ["conv"]) as run:
        run(grid_images(2))
    assert_no_hooks(model)


def test_bad_input_is_reported_before_any_work():
    model = toy_model()
    with pytest.raises(DatasetError, match="only 3 images for k=10"):
        dataset_examples(model, "conv", grid_images(16)[:3])
    with pytest.raises(DatasetError, match="N×1×H×W"):
        dataset_examples(model, "conv", torch.rand(12, 3, 8, 8), k=2)
    with pytest.raises(ModelError, match="no layer named 'nope'"):
        dataset_examples(model, "nope", grid_images(16), k=2)
    with pytest.raises(ModelError, match="need a spatial"):
        dataset_examples(model, "fc", grid_images(16), k=2)
    with pytest.raises(DatasetError, match="only 2 images for k=3"):
        dataset_examples(model, "conv", iter([grid_images(2)]), k=3)
