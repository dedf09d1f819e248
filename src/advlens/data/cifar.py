"""CIFAR-10 in its python-pickle batch format (``cifar-10-batches-py``).

The batches are pickles of plain dicts of bytes and NumPy arrays; they are read with a
restricted unpickler that only rebuilds NumPy arrays, never arbitrary objects.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from advlens.data.dataset import ImageDataset
from advlens.errors import DatasetError

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
_HINT = "point --data-dir at your copy of 'cifar-10-batches-py' (data_batch_1..5, test_batch)"
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DatasetError(f"missing CIFAR-10 batch {path}; {_HINT}")
    try:
        with open(path, "rb") as handle:
            entry = _ArrayOnlyUnpickler(handle, encoding="bytes").load()
        data = np.asarray(entry[b"data"], dtype=np.uint8)
        labels = np.asarray(entry[b"labels"], dtype=np.int64)
    except Exception as exc:  # any decoding failure means a corrupt or foreign file
        raise DatasetError(f"cannot read CIFAR-10 batch {path}: {exc}; {_HINT}") from exc
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise DatasetError(f"CIFAR-10 batch {path} has data {data.shape}, labels {labels.shape}")
    return data, labels


def load_cifar10(split: str = "test", data_dir: str | Path | None = None) -> ImageDataset:
    """Load CIFAR-10 python batches from ``data_dir``.

    Shape:
        images: (N, 3, 32, 32) float32 in [0, 1]; labels: (N,) int64.
    """
    if data_dir is None:
        raise DatasetError(f"CIFAR-10 is not shipped with advlens; {_HINT}")
    folder = Path(data_dir)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    names = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}.get(split)
    if names is None:
        raise DatasetError(f"unknown split {split!r} for cifar10; use 'train' or 'test'")
    parts = [_read_batch(folder / name) for name in names]
    data = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([p[1] for p in parts])
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"CIFAR-10 labels in {folder} outside 0..9")
    class_names = CIFAR10_CLASSES
    meta = folder / "batches.meta"
    if meta.is_file():
        try:
            with open(meta, "rb") as handle:
                entry = _ArrayOnlyUnpickler(handle, encoding="bytes").load()
            class_names = tuple(n.decode() for n in entry[b"label_names"])
        except Exception as exc:
            raise DatasetError(f"cannot read {meta}: {exc}; {_HINT}") from exc
    images = torch.from_numpy(data.astype(np.float32) / 255.0)
    return ImageDataset(images, torch.from_numpy(labels), class_names, "cifar10", split)
