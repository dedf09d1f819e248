"""Real photos for ImageNet models: the samples installed packages ship, and folders of the user's photos.

``load_photos`` builds a dataset from the photographs that scikit-image and scikit-learn install
(nothing is downloaded), each labelled by the ImageNet class in :data:`PHOTOS`. The table keeps only
photos with a fitting ImageNet class that pretrained EfficientNet-Lite0 predicts on the centre crop
(checked by ``tests/test_photos.py``); scikit-image's astronaut, horse, clock and coins were left
out: no ImageNet class fits them or the model does not recognise them. A photo is one image; class-level
pages (pathways, profiles) need sets, so ``augment=N`` gives N views of each photo: the centre crop
and N − 1 seeded random-resized crops (scale 0.5–1, aspect 3/4–4/3), half of them mirrored, with
mild colour jitter (brightness, contrast, saturation each ×0.8–1.2), as in ImageNet training.

``load_imagenet_folder`` reads ``root/<class>/<image>`` where each folder is named by an ImageNet
WordNet id (``n02123159``) or class name (``tiger cat``), for the user's own photos.

Shape: images (N, 3, size, size) float32 in [0, 1]; labels (N,) int64 ImageNet class indices.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from advlens.data.dataset import ImageDataset
from advlens.data.image_folder import IMAGE_SUFFIXES
from advlens.data.imagenet import imagenet_class, imagenet_classes
from advlens.errors import DatasetError

IMAGE_SIZE = 224
RESIZE = 256
"""The centre view: the shorter side resized to 256, then the central 224 × 224 (ImageNet evaluation)."""
SCALE = (0.5, 1.0)
RATIO = (3 / 4, 4 / 3)
JITTER = 0.2


@dataclass(frozen=True)
class Photo:
    """One shipped photo: where it comes from and its ImageNet class (by name)."""

    key: str
    source: str
    imagenet_name: str
    load: Callable[[], np.ndarray]


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        image = getattr(data, name)()
        return image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)
    return load


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)
    return load


PHOTOS: tuple[Photo, ...] = (
    Photo("chelsea", "scikit-image data.chelsea()", "tiger cat", _skimage("chelsea")),
    Photo("coffee", "scikit-image data.coffee()", "espresso", _skimage("coffee")),
    Photo("rocket", "scikit-image data.rocket()", "missile", _skimage("rocket")),
    Photo("motorcycle", "scikit-image data.stereo_motorcycle()[0]", "moped", _skimage("stereo_motorcycle")),
    Photo("camera", "scikit-image data.camera()", "tripod", _skimage("camera")),
    Photo("china", "scikit-learn load_sample_image('china.jpg')", "palace", _sklearn("china.jpg")),
    Photo("flower", "scikit-learn load_sample_image('flower.jpg')", "daisy", _sklearn("flower.jpg")),
)
"""The shipped photos and their ImageNet classes."""


def _pil(array: np.ndarray):
    from PIL import Image

    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise DatasetError(f"expected an 8-bit photo, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return Image.fromarray(array[..., :3]).convert("RGB")


def _to_tensor(image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def centre_view(image, size: int = IMAGE_SIZE) -> torch.Tensor:
    """The ImageNet evaluation view of a PIL image: shorter side to ``size·256/224``, central square.

    Shape: (3, size, size) float32 in [0, 1].
    """
    from PIL import Image

    width, height = image.size
    scale = round(size * RESIZE / IMAGE_SIZE) / min(width, height)
    image = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BICUBIC)
    width, height = image.size
    left, top = (width - size) // 2, (height - size) // 2
    return _to_tensor(image.crop((left, top, left + size, top + size)))


def random_view(image, rng: np.random.Generator, size: int = IMAGE_SIZE) -> torch.Tensor:
    """A random-resized crop (area share in :data:`SCALE`, aspect in :data:`RATIO`), mirrored with
    probability ½, with brightness, contrast and saturation each scaled by a factor in 1 ± :data:`JITTER`.

    Shape: (3, size, size) float32 in [0, 1].
    """
    from PIL import Image

    width, height = image.size
    box = None
    for _ in range(10):
        area = width * height * rng.uniform(*SCALE)
        aspect = math.exp(rng.uniform(math.log(RATIO[0]), math.log(RATIO[1])))
        crop_w, crop_h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            left = int(rng.integers(0, width - crop_w + 1))
            top = int(rng.integers(0, height - crop_h + 1))
            box = (left, top, left + crop_w, top + crop_h)
            break
    if box is None:  # a very elongated photo: the central square
        side = min(width, height)
        box = ((width - side) // 2, (height - side) // 2, (width - side) // 2 + side, (height - side) // 2 + side)
    view = image.crop(box).resize((size, size), Image.BICUBIC)
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = _to_tensor(view)
    brightness, contrast, saturation = rng.uniform(1 - JITTER, 1 + JITTER, size=3)
    pixels = pixels * brightness
    pixels = (pixels - pixels.mean()) * contrast + pixels.mean()
    grey = (pixels * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
    pixels = grey + (pixels - grey) * saturation
    return pixels.clamp(0.0, 1.0)


def views(image, count: int, rng: np.random.Generator, size: int = IMAGE_SIZE) -> torch.Tensor:
    """``count`` views of a photo: the centre view, then ``count − 1`` random views.

    Shape: (count, 3, size, size) float32 in [0, 1].
    """
    return torch.stack([centre_view(image, size)] + [random_view(image, rng, size) for _ in range(count - 1)])


def _check(augment: int, size: int, split: str) -> int:
    if augment < 0:
        raise DatasetError(f"--augment must be 0 or more views per photo, got {augment}")
    if size < 32:
        raise DatasetError(f"the photo size must be at least 32 pixels, got {size}")
    if split not in ("test", "all"):
        raise DatasetError(f"photo datasets have one split: use --split test (got {split!r})")
    return max(1, augment)


def load_photos(split: str = "test", *, augment: int = 0, seed: int = 0, size: int = IMAGE_SIZE) -> ImageDataset:
    """The shipped photos (:data:`PHOTOS`) as an ImageNet-labelled dataset, ``max(1, augment)`` views each.

    Raises:
        DatasetError: scikit-image or scikit-learn is missing (the ``imagenet`` extra installs them), or a
            bad ``augment``/``size``/``split``.
    """
    count = _check(augment, size, split)
    try:
        import skimage  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as exc:
        raise DatasetError("the photos dataset needs scikit-image and scikit-learn: pip install "
                           "'advlens[imagenet]'") from exc
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for photo in PHOTOS:
        images.append(views(_pil(photo.load()), count, rng, size))
        labels += [imagenet_class(photo.imagenet_name)] * count
    return ImageDataset(torch.cat(images), torch.tensor(labels, dtype=torch.int64), imagenet_classes(),
                        "photos", split)


def load_imagenet_folder(root: str | Path, split: str = "test", *, augment: int = 0, seed: int = 0,
                         size: int = IMAGE_SIZE) -> ImageDataset:
    """Photos in ``root[/split]/<class>/<image>``, each folder an ImageNet WordNet id or class name.

    Photos of any size are brought to ``size`` like :func:`load_photos` (centre view, plus random views
    with ``augment``).

    Raises:
        DatasetError: a missing folder, a folder that names no ImageNet class, no images, an unreadable image.
    """
    from PIL import Image

    count = _check(augment, size, "test")
    folder = Path(root)
    if (folder / split).is_dir():
        folder = folder / split
    if not folder.is_dir():
        raise DatasetError(f"image folder {folder} does not exist; pass --data-dir with one subfolder per "
                           "ImageNet class (named by WordNet id or class name)")
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(f"image folder {folder} has no class subfolders (expected {folder}/<class>/<image>)")
    indices = {path: imagenet_class(path.name) for path in classes}  # every folder checked before any image is read
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for path in classes:
        for file in sorted(path.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as opened:
                    image = opened.convert("RGB")
            except OSError as exc:
                raise DatasetError(f"cannot read image {file}: {exc}") from exc
            images.append(views(image, count, rng, size))
            labels += [indices[path]] * count
    if not images:
        raise DatasetError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {folder}")
    return ImageDataset(torch.cat(images), torch.tensor(labels, dtype=torch.int64), imagenet_classes(),
                        f"imagenet-folder:{Path(root).name}", split)


__all__ = ["PHOTOS", "Photo", "load_photos", "load_imagenet_folder", "centre_view", "random_view", "views",
           "IMAGE_SIZE"]
