"""Image folders with one subfolder per class (``root/<split>/<class>/*.png`` or ``root/<class>/*``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from advlens.data.dataset import ImageDataset
from advlens.errors import DatasetError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _read_image(path: Path, mode: str | None, size: tuple[int, int] | None) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow ships with matplotlib/plotly stacks
        raise DatasetError("reading image folders needs Pillow: pip install pillow") from exc
    try:
        with Image.open(path) as img:
            img = img.convert(mode) if mode else img.convert("RGB") if img.mode not in ("L", "RGB") else img
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except OSError as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from exc
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def load_image_folder(root: str | Path, split: str | None = None,
                      size: tuple[int, int] | None = None) -> ImageDataset:
    """Load ``root[/split]/<class>/<image>``; classes are the sorted subfolder names.

    All images must share one size unless ``size=(H, W)`` resizes them; grey-scale and colour
    images are not mixed (the first image's mode is used for all).

    Shape:
        images: (N, C, H, W) float32 in [0, 1] with C = 1 or 3; labels: (N,) int64.
    """
    folder = Path(root)
    if split and (folder / split).is_dir():
        folder = folder / split
    if not folder.is_dir():
        raise DatasetError(f"image folder {folder} does not exist; pass --data-dir with one subfolder per class")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(f"image folder {folder} has no class subfolders (expected {folder}/<class>/<image>)")
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    mode: str | None = None
    for label, name in enumerate(classes):
        for path in sorted((folder / name).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            array = _read_image(path, mode, size)
            mode = mode or ("L" if array.shape[0] == 1 else "RGB")
            if arrays and array.shape != arrays[0].shape:
                raise DatasetError(
                    f"image {path} has shape {array.shape}, others {arrays[0].shape}; pass size=(H, W)"
                )
            arrays.append(array)
            labels.append(label)
    if not arrays:
        raise DatasetError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {folder}")
    images = torch.from_numpy(np.stack(arrays).astype(np.float32) / 255.0)
    return ImageDataset(images, torch.tensor(labels, dtype=torch.int64), tuple(classes),
                        f"folder:{Path(root).name}", split or "all")
