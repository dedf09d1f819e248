"""Dataset loaders: Fashion-MNIST IDX, CIFAR-10 python batches, image folders, ``.npz``, and real photos for
ImageNet models (the shipped samples, or folders named by ImageNet class)."""

from __future__ import annotations

from pathlib import Path

from advlens.data.cifar import load_cifar10
from advlens.data.dataset import ImageDataset
from advlens.data.idx import load_fashion_mnist
from advlens.data.image_folder import load_image_folder
from advlens.data.npz import load_npz
from advlens.data.photos import load_imagenet_folder, load_photos
from advlens.errors import DatasetError

DATASETS = ("fashion-mnist", "cifar10", "folder", "npz", "photos", "imagenet-folder")
AUGMENTED = ("photos", "imagenet-folder")
"""The datasets that take ``augment`` (views per photo)."""


def load_dataset(name: str, split: str = "test", data_dir: str | Path | None = None, *, augment: int = 0,
                 seed: int = 0) -> ImageDataset:
    """Load a dataset by name: ``fashion-mnist``, ``cifar10``, ``folder``, ``npz``, ``photos`` or ``imagenet-folder``.

    ``photos`` are the real photos scikit-image and scikit-learn ship, ``imagenet-folder`` the user's photos in
    folders named by ImageNet class; both are brought to 224 × 224 and take ``augment`` (views per photo,
    seeded by ``seed``; :mod:`advlens.data.photos`).

    ``data_dir`` is the folder of the files (for ``npz`` the ``.npz`` file itself; a path ending in
    ``.npz`` given as ``name`` also works). The result unpacks as ``images, labels, class_names``.

    Shape:
        images: (N, C, H, W) float32 in [0, 1]; labels: (N,) int64.
    """
    key = name.lower()
    if augment and key not in AUGMENTED:
        raise DatasetError(f"--augment applies to the {' and '.join(AUGMENTED)} datasets, not {name!r}")
    if key == "photos":
        return load_photos(split, augment=augment, seed=seed)
    if key == "imagenet-folder":
        if data_dir is None:
            raise DatasetError("dataset 'imagenet-folder' needs --data-dir pointing at <root>/<ImageNet class>/<image> "
                               "files (folders named by WordNet id or class name)")
        return load_imagenet_folder(data_dir, split, augment=augment, seed=seed)
    if key.endswith(".npz"):
        return load_npz(name, split)
    if key in ("fashion-mnist", "fashion_mnist", "fmnist"):
        return load_fashion_mnist(split, data_dir)
    if key in ("cifar10", "cifar-10"):
        return load_cifar10(split, data_dir)
    if key in ("folder", "imagefolder", "image-folder"):
        if data_dir is None:
            raise DatasetError("dataset 'folder' needs --data-dir pointing at <root>/<class>/<image> files")
        return load_image_folder(data_dir, split)
    if key == "npz":
        if data_dir is None:
            raise DatasetError("dataset 'npz' needs --data-dir pointing at the .npz file")
        return load_npz(data_dir, split)
    raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} or a path to a .npz")


__all__ = ["ImageDataset", "load_dataset", "load_fashion_mnist", "load_cifar10", "load_image_folder",
           "load_npz", "load_photos", "load_imagenet_folder", "DATASETS", "AUGMENTED"]
