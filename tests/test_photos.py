"""Real photos for ImageNet models: the ImageNet class table, the shipped photos and their views, user folders,
and the EfficientNet-Lite0 built-in spec classifying the photos as their table says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advlens.data import load_dataset
from advlens.data.imagenet import imagenet_class, imagenet_classes, imagenet_wnids
from advlens.data.photos import PHOTOS, centre_view, load_photos, random_view
from advlens.errors import DatasetError


def test_the_imagenet_table_has_1000_unique_classes_in_the_usual_order():
    names, wnids = imagenet_classes(), imagenet_wnids()
    assert len(names) == len(set(names)) == 1000 and len(set(wnids)) == 1000
    # spot checks against the ILSVRC-2012 index every pretrained torchvision/Keras model uses
    assert (names[0], wnids[0]) == ("tench", "n01440764")
    assert (names[281], names[282], names[285]) == ("tabby", "tiger cat", "Egyptian cat")
    assert (names[967], wnids[999]) == ("espresso", "n15075141")
    assert imagenet_class("n02123159") == imagenet_class("Tiger_Cat") == 282
    with pytest.raises(DatasetError, match="not an ImageNet class"):
        imagenet_class("unicorn")


def test_the_centre_view_is_the_central_square_of_the_resized_photo():
    from PIL import Image

    pixels = np.zeros((100, 400, 3), np.uint8)
    pixels[:, 190:210] = 255  # a white band a little left of the centre of a wide photo
    view = centre_view(Image.fromarray(pixels), size=64)  # shorter side 100 → 73 (64·256/224), width → 292
    assert view.shape == (3, 64, 64) and view.dtype == torch.float32
    band = view[0, 32]
    # x in [190, 210) of 400 → [138.7, 153.3) of 292 → [24.7, 39.3) of the central 64 (from 114)
    assert band[:21].max() < 0.1 and band[27:37].min() > 0.9 and band[43:].max() < 0.1


def test_random_views_are_seeded_in_range_and_differ():
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8))
    first = random_view(image, np.random.default_rng(5), size=48)
    again = random_view(image, np.random.default_rng(5), size=48)
    other = random_view(image, np.random.default_rng(6), size=48)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.shape == (3, 48, 48) and 0.0 <= float(first.min()) and float(first.max()) <= 1.0


def test_the_photos_dataset_labels_each_photo_with_its_imagenet_class():
    data = load_photos(augment=3, seed=0, size=64)
    assert data.images.shape == (3 * len(PHOTOS), 3, 64, 64)
    assert data.class_names == imagenet_classes()
    expected = np.repeat([imagenet_classes().index(p.imagenet_name) for p in PHOTOS], 3)
    assert np.array_equal(data.labels.numpy(), expected)
    again = load_dataset("photos", augment=3, seed=0)  # the same views through load_dataset (at 224)
    assert again.images.shape[0] == data.images.shape[0] and torch.equal(again.labels, data.labels)
    assert not torch.equal(again.images[0], again.images[1])  # centre view, then a random view


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="photos", augment=-1), "--augment"),
    (dict(name="photos", split="train"), "one split"),
    (dict(name="fashion-mnist", augment=4), "--augment applies to"),
    (dict(name="imagenet-folder"), "needs --data-dir"),
])
def test_bad_photo_options_are_refused(kwargs, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(**kwargs)


def test_an_imagenet_folder_is_labelled_by_wordnet_id_or_class_name(tmp_path):
    from PIL import Image

    for folder, colour in (("n02123159", 40), ("espresso", 200)):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.full((90, 120, 3), colour, np.uint8)).save(tmp_path / folder / "a.png")
    data = load_dataset("imagenet-folder", data_dir=tmp_path, augment=2)
    assert data.images.shape == (4, 3, 224, 224)
    assert data.labels.tolist() == [967, 967, 282, 282]  # folders in sorted order: "espresso" < "n02123159"
    assert abs(float(data.images[0].mean()) - 200 / 255) < 0.01  # the centre view of the uniform espresso photo
    (tmp_path / "not a class").mkdir()
    with pytest.raises(DatasetError, match="'not a class' is not an ImageNet class"):
        load_dataset("imagenet-folder", data_dir=tmp_path)


@pytest.fixture(scope="module")
def lite0():
    from advlens.models.registry import load_model

    return load_model("efficientnet-lite0")


def test_efficientnet_lite0_is_built_in_with_imagenet_classes_and_the_head_as_analysed_layer(lite0):
    assert lite0.num_classes == 1000 and lite0.class_names[282] == "tiger cat"
    assert lite0.input_shape == (3, 224, 224)
    assert lite0.analysed_layer_name == "_swish:1" and lite0.graph["_swish:1"].channels == 1280
    # the adapter normalises inside: (x·255 − 127) / 128 fed to the raw network
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(lite0(x), lite0.net((x * 255 - 127) / 128), atol=1e-4)


def test_efficientnet_lite0_classifies_each_shipped_photo_as_its_table_says(lite0):
    data = load_photos()
    with torch.no_grad():
        probs = lite0(data.images).softmax(1)
    top1 = probs.argmax(1)
    names = [p.key for p in PHOTOS]
    wrong = [(n, lite0.class_names[int(t)]) for n, t, y in zip(names, top1, data.labels) if t != y]
    assert not wrong, f"photos whose centre view is not classified as their table's class: {wrong}"
    cats = {imagenet_class(c) for c in ("tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat")}
    assert int(top1[names.index("chelsea")]) in cats
