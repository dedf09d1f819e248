"""Fashion-MNIST (and MNIST-style) IDX files, gzip-compressed or plain."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from advlens.data.dataset import ImageDataset
from advlens.errors import DatasetError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_INSTALL_HINT = (
    "install the Debian package 'dataset-fashion-mnist' (sudo apt-get install dataset-fashion-mnist) "
    "or pass --data-dir / data_dir= pointing at a folder with the four IDX files"
)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (``.gz`` or plain) into an array; corrupt files raise DatasetError."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"cannot read IDX file {path}: {exc}; {_INSTALL_HINT}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path} is not an IDX file (bad magic number); {_INSTALL_HINT}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DatasetError(
            f"{path} is truncated or corrupt: {len(raw)} bytes, expected {expected} for shape {shape}; "
            f"{_INSTALL_HINT}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find(data_dir: Path, stem: str) -> Path:
    for candidate in (data_dir / f"{stem}.gz", data_dir / stem):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"missing Fashion-MNIST file {data_dir / (stem + '.gz')}; {_INSTALL_HINT}")


def load_fashion_mnist(split: str = "test", data_dir: str | Path | None = None) -> ImageDataset:
    """Load Fashion-MNIST from IDX files (default: the Debian package's folder).

    Shape:
        images: (N, 1, 28, 28) float32 in [0, 1]; labels: (N,) int64.
    """
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise DatasetError(f"unknown split {split!r} for fashion-mnist; use 'train' or 'test'")
    folder = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
    images = read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"Fashion-MNIST files in {folder} disagree: images {images.shape}, labels {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(FASHION_MNIST_CLASSES)):
        raise DatasetError(f"labels in {folder} outside 0..9: corrupt file; {_INSTALL_HINT}")
    tensor = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return ImageDataset(tensor, torch.from_numpy(labels.astype(np.int64)),
                        FASHION_MNIST_CLASSES, "fashion-mnist", split)
