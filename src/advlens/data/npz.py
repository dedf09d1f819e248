"""``.npz`` archives with ``images`` and ``labels`` (and optionally ``class_names``)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from advlens.data.dataset import ImageDataset
from advlens.errors import DatasetError


def images_to_tensor(images: np.ndarray, source: str) -> torch.Tensor:
    """Convert N×H×W, N×H×W×C or N×C×H×W arrays (uint8 0..255 or float 0..1) to N×C×H×W float32.

    Shape:
        returns (N, C, H, W) float32 in [0, 1].
    """
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise DatasetError(f"{source}: images must be N×H×W, N×H×W×C or N×C×H×W, got {images.shape}")
    if images.shape[1] not in (1, 3) and images.shape[3] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    if images.dtype == np.uint8:
        array = images.astype(np.float32) / 255.0
    else:
        array = images.astype(np.float32)
        if array.size and (array.min() < 0.0 or array.max() > 1.0):
            raise DatasetError(f"{source}: float images must lie in [0, 1] (got {array.min()}..{array.max()})")
    return torch.from_numpy(np.ascontiguousarray(array))


def load_npz(path: str | Path, split: str = "all") -> ImageDataset:
    """Load an ``.npz`` with ``images`` and ``labels``; ``class_names`` is optional.

    Shape:
        images: (N, C, H, W) float32 in [0, 1]; labels: (N,) int64.
    """
    file = Path(path)
    if not file.is_file():
        raise DatasetError(f"missing .npz dataset {file}; it must hold arrays 'images' and 'labels'")
    try:
        with np.load(file, allow_pickle=False) as archive:
            missing = {"images", "labels"} - set(archive.files)
            if missing:
                raise DatasetError(f"{file} lacks array(s) {sorted(missing)}; it has {archive.files}")
            images, labels = archive["images"], archive["labels"]
            names = archive["class_names"].tolist() if "class_names" in archive.files else None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"cannot read {file}: {exc}") from exc
    labels = labels.astype(np.int64).reshape(-1)
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{file}: {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and labels.min() < 0:
        raise DatasetError(f"{file}: labels must be ≥ 0")
    class_names = tuple(str(n) for n in names) if names else tuple(
        str(i) for i in range(int(labels.max()) + 1 if labels.size else 0))
    if labels.size and labels.max() >= len(class_names):
        raise DatasetError(f"{file}: label {labels.max()} but only {len(class_names)} class names")
    return ImageDataset(images_to_tensor(images, str(file)), torch.from_numpy(labels), class_names,
                        f"npz:{file.stem}", split)
