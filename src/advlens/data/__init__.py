"""Dataset loaders: Fashion-MNIST IDX, CIFAR-10 python batches, image folders and ``.npz``."""

from __future__ import annotations

from pathlib import Path

from advlens.data.cifar import load_cifar10
from advlens.data.dataset import ImageDataset
from advlens.data.idx import load_fashion_mnist
from advlens.data.image_folder import load_image_folder
from advlens.data.npz import load_npz
from advlens.errors import DatasetError

DATASETS = ("fashion-mnist", "cifar10", "folder", "npz")


def load_dataset(name: str, split: str = "test", data_dir: str | Path | None = None) -> ImageDataset:
    """Load a dataset by name: ``fashion-mnist``, ``cifar10``, ``folder`` or ``npz``.

    ``data_dir`` is the folder of the files (for ``npz`` the ``.npz`` file itself; a path ending in
    ``.npz`` given as ``name`` also works). The result unpacks as ``images, labels, class_names``.

    Shape:
        images: (N, C, H, W) float32 in [0, 1]; labels: (N,) int64.
    """
    key = name.lower()
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
           "load_npz", "DATASETS"]
